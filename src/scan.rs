//! Update detection (SPEC §4.1): stat every synced file, trust the scan cache when size,
//! mtime, inode and ctime all match and the entry is not "racy", hash otherwise.

use crate::archive::CacheEntry;
use crate::kind::{self, Content, Facts, Kind, ReadCtx};
use crate::model::{Skip, SkipKind};
use crate::names;
use crate::times;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// An entry recorded while the file's mtime or ctime was this close to the scan is re-hashed.
pub const RACY_NS: i64 = 2_000_000_000;

/// The stat facts that decide whether a cached hash still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch (any time a file can carry: see
    /// [`crate::times`]).
    pub mtime_ns: i128,
    /// Change time, ns since the epoch.
    pub ctime_ns: i128,
    /// Inode number.
    pub ino: u64,
    /// Size and mtime of a SQLite `-wal` beside it, which holds committed rows too.
    pub side: Option<(u64, i128)>,
}

impl Stat {
    /// Stats a regular file (and its `-wal`); `None` when absent.
    pub fn of(path: &Path) -> std::io::Result<Option<(Stat, std::fs::Metadata)>> {
        Stat::of_kind(path, true)
    }

    /// Stats a file, and its `-wal` only when `database` (a plain file's has no meaning).
    pub fn of_kind(
        path: &Path,
        database: bool,
    ) -> std::io::Result<Option<(Stat, std::fs::Metadata)>> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let side = if database { wal_of(path) } else { None };
        let stat = Stat {
            size: meta.size(),
            mtime_ns: times::ns_of(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: times::ns_of(meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
            side,
        };
        Ok(Some((stat, meta)))
    }

    /// The cache key form.
    pub fn signature(&self) -> String {
        let side = self
            .side
            .map(|(s, m)| format!("{s}/{m}"))
            .unwrap_or_else(|| "-".into());
        format!(
            "{}:{}:{}:{}:{side}",
            self.size, self.mtime_ns, self.ino, self.ctime_ns
        )
    }
}

/// A file's stat as a trusted scan cache entry vouched for it, and when that entry was
/// recorded: what [`signature_holds`] checks, kept as numbers. A database's stat set also
/// holds the files beside it that carry or may carry its rows ([`Beside`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i128,
    /// Inode number.
    pub ino: u64,
    /// Change time, ns since the epoch.
    pub ctime_ns: i128,
    /// When the entry was recorded, ns since the epoch.
    pub scanned_ns: i64,
    /// For a database: its `-wal` and `-journal` as they were (`None`: a plain file).
    pub database: Option<Beside>,
}

/// What is beside a database: its `-wal` (size and mtime of a non-empty one, as
/// [`Stat::side`]) and its `-journal` (size and mtime, even an empty one); `None`: absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beside {
    /// The `-wal`, which holds committed rows the file does not yet.
    pub wal: Option<(u64, i128)>,
    /// The `-journal` of a rollback-mode writer.
    pub journal: Option<(u64, i128)>,
}

impl Beside {
    /// Whether the `-journal` was last written more than [`RACY_NS`] before `now_ns` (or is
    /// absent): only then may its stat vouch that it is as it was.
    pub fn journal_settled(&self, now_ns: i64) -> bool {
        self.journal
            .is_none_or(|(_, mtime)| not_racy(mtime, now_ns))
    }
}

impl Held {
    /// What a plain file's entry recorded at `scanned_ns` for `stat` holds.
    pub fn of(stat: &Stat, scanned_ns: i64) -> Held {
        Held {
            size: stat.size,
            mtime_ns: stat.mtime_ns,
            ino: stat.ino,
            ctime_ns: stat.ctime_ns,
            scanned_ns,
            database: None,
        }
    }

    /// What a database's entry recorded at `scanned_ns` for `stat` (with its `-wal`) holds,
    /// with the `-journal` beside it at `path` as it is now.
    pub fn of_database(stat: &Stat, scanned_ns: i64, path: &Path) -> Held {
        Held {
            database: Some(Beside {
                wal: stat.side,
                journal: journal_of(path),
            }),
            ..Held::of(stat, scanned_ns)
        }
    }

    /// [`signature_holds`] by numbers: the same size, mtime, inode and ctime (and for a
    /// database the same `-wal`), and not racy. A database's `-journal` is [`still`]'s.
    pub fn holds(&self, stat: &Stat) -> bool {
        let same_wal = self.database.is_none_or(|b| b.wal == stat.side);
        let beside = stat.side.filter(|_| self.database.is_some());
        let beside = beside.map_or(i128::MIN, |(_, mtime)| mtime);
        self.size == stat.size
            && self.mtime_ns == stat.mtime_ns
            && self.ino == stat.ino
            && self.ctime_ns == stat.ctime_ns
            && same_wal
            && not_racy(
                stat.mtime_ns.max(stat.ctime_ns).max(beside),
                self.scanned_ns,
            )
    }
}

/// Size and mtime of the `-journal` beside `path`, whatever its size.
fn journal_of(path: &Path) -> Option<(u64, i128)> {
    let mut journal = path.as_os_str().to_owned();
    journal.push("-journal");
    std::fs::symlink_metadata(PathBuf::from(journal))
        .ok()
        .map(|j| (j.size(), times::ns_of(j.mtime(), j.mtime_nsec())))
}

/// Size and mtime of a non-empty `-wal` beside `path`. An empty one holds no rows (and opening
/// the database may create one): it is no change.
fn wal_of(path: &Path) -> Option<(u64, i128)> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(PathBuf::from(wal))
        .ok()
        .filter(|w| w.size() > 0)
        .map(|w| (w.size(), times::ns_of(w.mtime(), w.mtime_nsec())))
}

/// What scanning one file in one location found.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// A regular file, with its version.
    Present {
        /// Its stat.
        stat: Stat,
        /// Its version.
        content: Content,
        /// Whether its content was read this time (false: from the cache).
        hashed: bool,
    },
    /// Nothing there.
    Absent,
    /// Cannot be used this run; the reason says why.
    Skipped(Skip),
}

/// Whether a cached entry may be trusted for `stat` (the racy-clean rule).
pub fn cache_holds(entry: &CacheEntry, stat: &Stat) -> bool {
    signature_holds(&entry.signature, entry.scanned_ns, entry.kind, stat)
}

/// [`cache_holds`] for an entry's parts: its stored `signature` matches `stat` (a plain file's
/// vouches for the file alone, a database's for its `-wal` too), and it was recorded more
/// than [`RACY_NS`] after the file's last change.
pub fn signature_holds(signature: &str, scanned_ns: i64, kind: Kind, stat: &Stat) -> bool {
    let newest = stat
        .mtime_ns
        .max(stat.ctime_ns)
        .max(stat.side.map(|s| s.1).unwrap_or(i128::MIN));
    signature_matches(signature, stat, kind != Kind::Plain) && not_racy(newest, scanned_ns)
}

/// Whether a file last changed at `newest` was recorded long enough after (more than
/// [`RACY_NS`]) at `scanned_ns` for its stat to vouch for its content. A file time at or
/// beyond 2262 (past any `scanned_ns`) is always racy: such a file is read again each run.
fn not_racy(newest: i128, scanned_ns: i64) -> bool {
    newest.saturating_add(i128::from(RACY_NS)) < i128::from(scanned_ns)
}

/// Whether a signature in the form [`Stat::signature`] writes (`size:mtime:ino:ctime:side`)
/// describes `stat`, compared as numbers (no string is made per file); the `-wal` part only
/// `with_side`.
fn signature_matches(signature: &str, stat: &Stat, with_side: bool) -> bool {
    let mut fields = signature.as_bytes().splitn(5, |&b| b == b':');
    let mut field = || fields.next().and_then(number);
    let main = field() == Some(i128::from(stat.size))
        && field() == Some(stat.mtime_ns)
        && field() == Some(i128::from(stat.ino))
        && field() == Some(stat.ctime_ns);
    if !main || !with_side {
        return main;
    }
    let side = fields.next().unwrap_or_default();
    match (stat.side, side.iter().position(|&b| b == b'/')) {
        (None, _) => side == b"-",
        (Some((size, mtime)), Some(slash)) => {
            number(&side[..slash]) == Some(i128::from(size))
                && number(&side[slash + 1..]) == Some(mtime)
        }
        (Some(_), None) => false,
    }
}

/// A decimal integer, optionally negative, as the signature writes it; `None` for anything
/// else. (By hand: `str::parse` cost most of a steady run's compare time.)
fn number(digits: &[u8]) -> Option<i128> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    // 38 digits always fit an i128: a u64 size or inode, any i64 seconds as ns.
    if digits.is_empty() || digits.len() > 38 {
        return None;
    }
    let mut n: i128 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i128::from(d - b'0');
    }
    Some(if negative { -n } else { n })
}

/// The cache entry to store for a version just read at `now_ns`.
pub fn cache_entry(stat: &Stat, content: &Content, now_ns: i64) -> CacheEntry {
    CacheEntry {
        signature: stat.signature(),
        scanned_ns: now_ns,
        hash: content.hash.clone(),
        kind: content.kind,
        extra: serde_json::to_string(&content.facts).unwrap_or_default(),
    }
}

/// Why a file that is not there is not absent either: an iCloud placeholder beside it.
fn evicted_reason(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let placeholder = path.with_file_name(names::placeholder_name(name));
    if placeholder.exists() {
        request_download(path);
        return Some(
            "evicted by iCloud (placeholder present); download requested, skipped this run".into(),
        );
    }
    None
}

#[cfg(target_os = "macos")]
fn is_dataless(meta: &std::fs::Metadata) -> bool {
    use std::os::macos::fs::MetadataExt as _;
    const SF_DATALESS: u32 = 0x4000_0000;
    meta.st_flags() & SF_DATALESS != 0
}

#[cfg(not(target_os = "macos"))]
fn is_dataless(_meta: &std::fs::Metadata) -> bool {
    false
}

#[cfg(target_os = "macos")]
fn request_download(path: &Path) {
    // `/usr/bin/brctl download`, at most once per file per interval; the run never waits for
    // it and a thread reaps the child (no zombie per scan).
    crate::download::request(path);
}

#[cfg(not(target_os = "macos"))]
fn request_download(_path: &Path) {}

/// What a path's stat alone says, before any content is read.
enum Look {
    /// Nothing there (and no iCloud placeholder beside it).
    Absent,
    /// Cannot be used this run; the reason says why.
    Skipped(Skip),
    /// Evicted by iCloud: only a download brings its content back.
    Dataless,
    /// A regular file, with its stat.
    File(Stat),
}

/// Stats `path` (and its `-wal` when it `maybe_database`) and says what is there.
fn look(path: &Path, maybe_database: bool) -> Look {
    let (stat, meta) = match Stat::of_kind(path, maybe_database) {
        Ok(Some(s)) => s,
        Ok(None) => {
            return evicted_reason(path)
                .map(|r| Look::Skipped(Skip::new(SkipKind::Evicted, r)))
                .unwrap_or(Look::Absent)
        }
        Err(e) => {
            return Look::Skipped(Skip::new(SkipKind::Unreadable, format!("cannot stat: {e}")))
        }
    };
    if meta.file_type().is_symlink() {
        Look::Skipped(Skip::new(
            SkipKind::Unreadable,
            "is a symbolic link; Metasync does not follow links",
        ))
    } else if !meta.is_file() {
        Look::Skipped(Skip::new(SkipKind::Unreadable, "is not a regular file"))
    } else if is_dataless(&meta) {
        Look::Dataless
    } else {
        Look::File(stat)
    }
}

/// Whether `path` is, by its stat alone, what a scan found there before: absent (`expected`
/// is `None`), or a file its cache entry still vouches for (a database with the same `-wal`
/// and `-journal` beside it, or the same absence of them). A scan of it would then find the
/// same without reading a byte. Never reads contents.
pub fn still(path: &Path, expected: Option<&Held>) -> bool {
    let database = expected.and_then(|h| h.database);
    match (look(path, database.is_some()), expected) {
        (Look::Absent, None) => true,
        (Look::File(stat), Some(held)) => {
            held.holds(&stat) && database.is_none_or(|b| journal_of(path) == b.journal)
        }
        _ => false,
    }
}

/// Scans one file: stat, cache, hash. Never fails: problems become `Skipped`.
pub fn scan_file(path: &Path, cached: Option<&CacheEntry>, ctx: &ReadCtx) -> Found {
    // The -wal is looked at only for what may be a database: one stat per plain file.
    let maybe_database = cached.is_none_or(|e| e.kind != Kind::Plain);
    let mut stat = match look(path, maybe_database) {
        Look::File(stat) => stat,
        Look::Absent => return Found::Absent,
        Look::Skipped(skip) => return Found::Skipped(skip),
        Look::Dataless => {
            request_download(path);
            return Found::Skipped(Skip::new(
                SkipKind::Evicted,
                "evicted by iCloud (dataless); download requested, skipped this run",
            ));
        }
    };
    if let Some(entry) = cached {
        if cache_holds(entry, &stat) {
            let facts: Facts = if entry.extra.is_empty() || entry.extra == "{}" {
                Facts::default()
            } else {
                serde_json::from_str(&entry.extra).unwrap_or_default()
            };
            let content = Content {
                hash: entry.hash.clone(),
                kind: entry.kind,
                facts,
                snapshot: None,
            };
            return Found::Present {
                stat,
                content,
                hashed: false,
            };
        }
    }
    if !maybe_database {
        // A plain file that changed may have become a database: look at its -wal too.
        stat.side = wal_of(path);
    }
    let content = match kind::read_content(path, ctx) {
        Ok(c) => c,
        Err(e) => {
            return Found::Skipped(Skip::new(SkipKind::Unreadable, format!("cannot read: {e}")))
        }
    };
    if content.kind == Kind::Sqlite {
        // A database is read through a consistent snapshot, so a writer during the read is
        // harmless; the stat from before the read is what the cache may vouch for.
        return Found::Present {
            stat,
            content,
            hashed: true,
        };
    }
    // Plain files carry no -wal part: their stat is the file's alone, everywhere.
    stat.side = None;
    match Stat::of_kind(path, false) {
        Ok(Some((after, _))) if after == stat => Found::Present {
            stat,
            content,
            hashed: true,
        },
        _ => Found::Skipped(Skip::new(
            SkipKind::Changing,
            "changed while being read; it will be synced next run",
        )),
    }
}

/// Scans every file of one location; what was found for `files[i]` is at `i`.
pub fn scan_location(
    root: &Path,
    files: &[String],
    cache: &crate::archive::FileMap<CacheEntry>,
    ctx: &ReadCtx,
) -> Vec<Found> {
    let mut folders = LinkedFolders::new(root);
    files
        .iter()
        .map(|f| match folders.of(f) {
            Some(link) => Found::Skipped(Skip::new(
                SkipKind::Unreadable,
                format!("its folder {link} is a symbolic link; Metasync does not follow links"),
            )),
            None => scan_file(&root.join(f), cache.get(f), ctx),
        })
        .collect()
}

/// [`still`] for files of one location, by their paths relative to its root: under no linked
/// folder and, by their stat, as a scan found them before.
pub struct StillIn {
    folders: LinkedFolders,
    /// The root and a separator, then the file being looked at: one buffer for every path.
    path: Vec<u8>,
    root_len: usize,
    /// The root folder, open: a plain file is stated relative to it (Linux).
    #[cfg(target_os = "linux")]
    dir: Option<std::fs::File>,
}

impl StillIn {
    /// For the location at `root`.
    pub fn new(root: &Path) -> StillIn {
        let mut path = root.as_os_str().as_bytes().to_vec();
        if !path.ends_with(b"/") {
            path.push(b'/');
        }
        StillIn {
            folders: LinkedFolders::new(root),
            root_len: path.len(),
            path,
            #[cfg(target_os = "linux")]
            dir: std::fs::File::open(root).ok(),
        }
    }

    /// Whether `rel` is still as expected (see [`still`]).
    pub fn still(&mut self, rel: &str, expected: Option<&Held>) -> bool {
        if self.folders.of(rel).is_some() {
            return false;
        }
        #[cfg(target_os = "linux")]
        if let (Some(dir), Some(held)) = (&self.dir, expected) {
            if held.database.is_none() {
                return still_plain_at(dir, rel, held);
            }
        }
        self.path.truncate(self.root_len);
        self.path.extend_from_slice(rel.as_bytes());
        still(Path::new(OsStr::from_bytes(&self.path)), expected)
    }
}

/// [`still`] for a plain file expected present, stated relative to its location's open
/// folder `dir`: the kernel walks `rel`'s one or two components, not the whole path (on the
/// steady path that walk was most of a no-op's time). Anything but the same regular file,
/// not racy, is a change, as [`still`] says: absent (an iCloud placeholder or not), a link,
/// not a regular file, or not stated at all.
#[cfg(target_os = "linux")]
fn still_plain_at(dir: &std::fs::File, rel: &str, held: &Held) -> bool {
    use rustix::fs::{statat, AtFlags, FileType};
    let Ok(st) = statat(dir, rel, AtFlags::SYMLINK_NOFOLLOW) else {
        return false;
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return false;
    }
    const NS: i128 = 1_000_000_000;
    let stat = Stat {
        size: u64::try_from(st.st_size).unwrap_or(u64::MAX),
        mtime_ns: i128::from(st.st_mtime) * NS + i128::from(st.st_mtime_nsec),
        ctime_ns: i128::from(st.st_ctime) * NS + i128::from(st.st_ctime_nsec),
        ino: st.st_ino,
        side: None,
    };
    held.holds(&stat)
}

/// The linked folder above each file of a location, looked up once per folder (files share
/// folders).
struct LinkedFolders {
    root: PathBuf,
    seen: HashMap<String, Option<String>, rustc_hash::FxBuildHasher>,
    /// The folder asked about last and its answer: a listing gives a folder's files one
    /// after another, so most files need no lookup at all.
    last: Option<(String, Option<String>)>,
}

impl LinkedFolders {
    fn new(root: &Path) -> Self {
        LinkedFolders {
            root: root.to_path_buf(),
            seen: HashMap::default(),
            last: None,
        }
    }

    /// The first folder above `file` that is a symbolic link, if any.
    fn of(&mut self, file: &str) -> Option<String> {
        let dir = file.rsplit_once('/').map_or("", |(d, _)| d);
        if dir.is_empty() {
            return None;
        }
        if let Some((last, link)) = &self.last {
            if last == dir {
                return link.clone();
            }
        }
        let link = match self.seen.get(dir) {
            Some(known) => known.clone(),
            None => {
                let link = linked_folder(&self.root, file);
                self.seen.insert(dir.to_string(), link.clone());
                link
            }
        };
        self.last = Some((dir.to_string(), link.clone()));
        link
    }
}

/// The first folder between `root` and the file `rel` that is a symbolic link, if any: the
/// file would be read and written outside the location through it.
fn linked_folder(root: &Path, rel: &str) -> Option<String> {
    let mut dir = PathBuf::from(root);
    let mut shown = String::new();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        dir.push(part);
        if !shown.is_empty() {
            shown.push('/');
        }
        shown.push_str(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => return Some(shown),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ReadCtx {
        ReadCtx {
            sqlite: Default::default(),
            scratch: std::env::temp_dir(),
            keep_snapshots: None,
        }
    }

    fn now_ns() -> i64 {
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
    }

    #[test]
    fn cache_is_trusted_only_when_not_racy_and_unchanged() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, "one").unwrap();
        let Found::Present {
            stat,
            content,
            hashed,
        } = scan_file(&p, None, &ctx())
        else {
            panic!()
        };
        assert!(hashed);
        // Recorded right now: the file's mtime is within the racy window, so not trusted.
        let racy = cache_entry(&stat, &content, now_ns());
        assert!(!cache_holds(&racy, &stat));
        // Recorded well after the file's last change: trusted.
        let clean = cache_entry(
            &stat,
            &content,
            i64::try_from(stat.ctime_ns).unwrap() + RACY_NS + 1,
        );
        assert!(cache_holds(&clean, &stat));
        let Found::Present { hashed, .. } = scan_file(&p, Some(&clean), &ctx()) else {
            panic!()
        };
        assert!(!hashed);
        // Same size, new content: the signature moves (mtime/ctime), so it is hashed again.
        std::fs::write(&p, "two").unwrap();
        let Found::Present {
            content: c2,
            hashed,
            ..
        } = scan_file(&p, Some(&clean), &ctx())
        else {
            panic!()
        };
        assert!(hashed);
        assert_ne!(c2.hash, content.hash);
    }

    #[test]
    fn signatures_compare_field_by_field() {
        let stat = Stat {
            size: 42,
            mtime_ns: 1_700_000_000_123_456_789,
            ctime_ns: 1_700_000_001_000_000_001,
            ino: 987_654,
            side: Some((4_096, 1_700_000_002_000_000_000)),
        };
        assert!(signature_matches(&stat.signature(), &stat, true));
        let plain = Stat {
            side: None,
            ..stat.clone()
        };
        assert!(signature_matches(&plain.signature(), &plain, true));
        // A plain file's entry ignores the -wal part; a database's does not.
        assert!(signature_matches(&plain.signature(), &stat, false));
        assert!(!signature_matches(&plain.signature(), &stat, true));
        assert!(!signature_matches(&stat.signature(), &plain, true));
        let changed = [
            Stat {
                size: 43,
                ..stat.clone()
            },
            Stat {
                mtime_ns: stat.mtime_ns + 1,
                ..stat.clone()
            },
            Stat {
                ctime_ns: stat.ctime_ns - 1,
                ..stat.clone()
            },
            Stat {
                ino: 987_655,
                ..stat.clone()
            },
            Stat {
                side: Some((4_097, 1_700_000_002_000_000_000)),
                ..stat.clone()
            },
        ];
        for (i, other) in changed.iter().enumerate() {
            assert!(
                !signature_matches(&stat.signature(), other, true),
                "field {i}"
            );
        }
        let before_1970 = Stat {
            mtime_ns: -5,
            ..plain.clone()
        };
        assert!(signature_matches(
            &before_1970.signature(),
            &before_1970,
            true
        ));
        assert!(!signature_matches(&before_1970.signature(), &plain, true));
        for broken in [
            "",
            "42",
            "42:x:987654:1:-",
            "42:1:2:3",
            "+42:1:2:3:-",
            "42::2:3:-",
        ] {
            assert!(!signature_matches(broken, &plain, false), "{broken:?}");
        }
    }

    #[test]
    fn still_vouches_by_stat_alone() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        assert!(still(&p, None));
        std::fs::write(&p, "one").unwrap();
        assert!(!still(&p, None));
        let Found::Present { stat, .. } = scan_file(&p, None, &ctx()) else {
            panic!()
        };
        let clean = Held::of(&stat, i64::try_from(stat.ctime_ns).unwrap() + RACY_NS + 1);
        assert!(still(&p, Some(&clean)));
        // Recorded too soon after the change: racy, not vouched.
        assert!(!still(
            &p,
            Some(&Held::of(&stat, i64::try_from(stat.ctime_ns).unwrap() + 1))
        ));
        // The numbers decide as the text signature does.
        for (at, trusted) in [
            (i64::try_from(stat.ctime_ns).unwrap() + RACY_NS + 1, true),
            (i64::try_from(stat.ctime_ns).unwrap() + 1, false),
        ] {
            assert_eq!(Held::of(&stat, at).holds(&stat), trusted);
            assert_eq!(
                signature_holds(&stat.signature(), at, Kind::Plain, &stat),
                trusted
            );
        }
        std::fs::write(&p, "two").unwrap();
        assert!(!still(
            &p,
            Some(&Held {
                scanned_ns: i64::MAX,
                ..clean
            })
        ));
        // A folder that became a symbolic link vouches for nothing under it.
        std::fs::create_dir(d.path().join("real")).unwrap();
        std::fs::write(d.path().join("real/g"), "g").unwrap();
        std::os::unix::fs::symlink(d.path().join("real"), d.path().join("link")).unwrap();
        let Found::Present { stat: g, .. } = scan_file(&d.path().join("real/g"), None, &ctx())
        else {
            panic!()
        };
        let g = Held::of(&g, i64::try_from(g.ctime_ns).unwrap() + RACY_NS + 1);
        let mut here = StillIn::new(d.path());
        assert!(here.still("real/g", Some(&g)));
        assert!(!here.still("link/g", Some(&g)));
        assert!(here.still("real/none", None));
        assert!(!here.still("real/g", None));
    }

    /// Stated relative to the location's folder (Linux) or by whole path, a file that was
    /// replaced, in every way, is no longer what it was.
    #[test]
    fn still_in_sees_every_replacement_of_a_plain_file() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir(root.join("sub")).unwrap();
        let held_of = |rel: &str| {
            let (stat, _) = Stat::of_kind(&root.join(rel), false).unwrap().unwrap();
            Held::of(&stat, i64::try_from(stat.ctime_ns).unwrap() + RACY_NS + 1)
        };
        type Replace = fn(&Path);
        let replacements: [(&str, Replace); 6] = [
            ("removed", |p| std::fs::remove_file(p).unwrap()),
            ("rewritten, same size", |p| {
                std::fs::write(p, "TEXT").unwrap()
            }),
            ("appended to", |p| {
                std::fs::write(p, "text, longer").unwrap()
            }),
            ("a folder", |p| {
                std::fs::remove_file(p).unwrap();
                std::fs::create_dir(p).unwrap();
            }),
            ("a link to itself", |p| {
                let kept = p.with_extension("kept");
                std::fs::rename(p, &kept).unwrap();
                std::os::unix::fs::symlink(&kept, p).unwrap();
            }),
            ("an iCloud placeholder", |p| {
                let name = p.file_name().unwrap().to_str().unwrap();
                std::fs::write(p.with_file_name(names::placeholder_name(name)), "x").unwrap();
                std::fs::remove_file(p).unwrap();
            }),
        ];
        for (i, (what, replace)) in replacements.iter().enumerate() {
            let rel = format!("sub/f{i}.txt");
            std::fs::write(root.join(&rel), "text").unwrap();
            let held = held_of(&rel);
            let mut here = StillIn::new(root);
            assert!(here.still(&rel, Some(&held)), "{what}: before");
            replace(&root.join(&rel));
            assert!(!here.still(&rel, Some(&held)), "{what}: after");
            assert!(!still(&root.join(&rel), Some(&held)), "{what}: by path");
        }
    }

    #[test]
    fn placeholder_is_skipped_not_absent() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            scan_file(&d.path().join("metastore.db"), None, &ctx()),
            Found::Absent
        );
        std::fs::write(d.path().join(".metastore.db.icloud"), "plist").unwrap();
        assert!(
            matches!(scan_file(&d.path().join("metastore.db"), None, &ctx()), Found::Skipped(r) if r.kind == SkipKind::Evicted)
        );
    }

    #[test]
    fn symlinks_are_not_followed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("outside"), "secret").unwrap();
        std::os::unix::fs::symlink(d.path().join("outside"), d.path().join("f")).unwrap();
        assert!(
            matches!(scan_file(&d.path().join("f"), None, &ctx()), Found::Skipped(r) if r.reason.contains("symbolic link"))
        );
    }

    #[test]
    fn sha256_matches_known_vector() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("abc");
        std::fs::write(&p, "abc").unwrap();
        assert_eq!(
            kind::sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
