//! The per-file "kind" seam: how a version is read, hashed and written. Plain files are
//! bytes; SQLite databases are read through snapshots and hashed logically.

use crate::error::{IoContext, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

pub use crate::model::{Content, Facts, Kind};

/// Where the base copy of the run snapshot `snapshot` is, when one was made (see
/// [`crate::sqlite::scratch_snapshot`]): an independent, fsynced byte copy of it, for the
/// row-merge base when the snapshot itself is moved into a remote.
pub fn base_copy_of(snapshot: &Path) -> std::path::PathBuf {
    snapshot.with_extension("base.db")
}

/// The file a row-merge base is kept from for the run snapshot `snapshot`: its base copy
/// when one was made (the snapshot itself may have been moved into a remote), else the
/// snapshot; `None` when neither is there.
pub fn base_source(snapshot: &Path) -> Option<std::path::PathBuf> {
    let copy = base_copy_of(snapshot);
    if copy.is_file() {
        Some(copy)
    } else {
        snapshot.is_file().then(|| snapshot.to_path_buf())
    }
}

/// Whether a row-merge base of the database at `path` (under `home`) is kept: then its next
/// base is rewritten from that one after the writes ([`crate::merge::patch_base`]), and its
/// run snapshot needs no base copy.
fn has_base(home: &Path, path: &Path) -> bool {
    let Some(file) = path.strip_prefix(home).ok().and_then(|p| p.to_str()) else {
        return false;
    };
    std::fs::read_dir(crate::merge::base_dir(home, file)).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(".db") && !n.starts_with('.'))
        })
    })
}

/// Streams a file through SHA-256 in constant memory.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).ctx("open for hashing", path)?;
    with_buffer(|buf| hash_rest(&mut f, Sha256::new(), buf, path))
}

/// Runs `f` with this thread's hashing buffer (kept: a first sync hashes thousands of small
/// files, and a fresh zeroed megabyte for each was a tenth of its time).
fn with_buffer<T>(f: impl FnOnce(&mut [u8]) -> T) -> T {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| match b.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.is_empty() {
                buf.resize(HASH_BUFFER, 0);
            }
            f(&mut buf)
        }
        Err(_) => f(&mut vec![0u8; HASH_BUFFER]),
    })
}

/// The hashing buffer's size.
const HASH_BUFFER: usize = 256 << 10;

/// Feeds the rest of `f` (the file `path`) to `h`: the hex digest.
fn hash_rest(f: &mut std::fs::File, mut h: Sha256, buf: &mut [u8], path: &Path) -> Result<String> {
    loop {
        let n = f.read(buf).ctx("read for hashing", path)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(crate::ids::hex_lower(&h.finalize()))
}

/// The hash of the file at `path` when it is plain: no SQLite header and no database name
/// (see [`should_be_database`]); `None` for a database. One open: the header is checked on the
/// first bytes read for the hash.
fn hash_if_plain(path: &Path) -> Result<Option<String>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ["db", "sqlite", "sqlite3"]
        .iter()
        .any(|d| ext.eq_ignore_ascii_case(d))
    {
        return Ok(None);
    }
    let mut f = std::fs::File::open(path).ctx("open for hashing", path)?;
    with_buffer(|buf| {
        let header = crate::sqlite::SQLITE_HEADER.len();
        let mut n = 0;
        while n < header {
            match f.read(&mut buf[n..]).ctx("read for hashing", path)? {
                0 => break,
                got => n += got,
            }
        }
        if n >= header && buf[..header] == crate::sqlite::SQLITE_HEADER[..] {
            return Ok(None);
        }
        let mut h = Sha256::new();
        h.update(&buf[..n]);
        hash_rest(&mut f, h, buf, path).map(Some)
    })
}

/// What reading a version needs: SQLite settings and a scratch folder for snapshots.
#[derive(Debug, Clone)]
pub struct ReadCtx {
    /// SQLite handling.
    pub sqlite: crate::sqlite::SqliteOptions,
    /// Where snapshots taken only for hashing go (inside home's state folder).
    pub scratch: std::path::PathBuf,
    /// When set, snapshots are kept in this folder (a run's own) and named in [`Content`].
    pub keep_snapshots: Option<std::path::PathBuf>,
}

impl ReadCtx {
    /// The context for a home and config.
    pub fn new(home: &Path, config: &crate::config::Config) -> ReadCtx {
        let mut sqlite = crate::sqlite::SqliteOptions::from(&config.sqlite);
        // A new local version of a database goes to the remotes and becomes the row-merge base:
        // two files that must not share an inode, so its run snapshot gets a second copy
        // while it is checked (see `read_content`).
        sqlite.base_copy_under = config.any_row_merge().then(|| home.to_path_buf());
        ReadCtx {
            sqlite,
            scratch: home.join(crate::names::STATE_DIR).join("tmp"),
            keep_snapshots: None,
        }
    }
}

/// Whether a file is, or must be, a SQLite database: it has the header, or its name says
/// it is one (`.db`, `.sqlite`, `.sqlite3`) — then a file without the header is a corrupt database,
/// never a plain file that could overwrite a healthy one.
pub fn should_be_database(path: &Path) -> Result<bool> {
    if crate::sqlite::is_sqlite(path)? {
        return Ok(true);
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    Ok(matches!(ext.as_str(), "db" | "sqlite" | "sqlite3"))
}

/// Reads the version at `path`: detects its kind and hashes it (databases through a
/// consistent snapshot, with their integrity and counts).
pub fn read_content(path: &Path, ctx: &ReadCtx) -> Result<Content> {
    if let Some(hash) = hash_if_plain(path)? {
        return Ok(Content {
            hash,
            kind: Kind::Plain,
            facts: Facts::default(),
            snapshot: None,
        });
    }
    if !crate::sqlite::is_sqlite(path)? {
        return Ok(Content {
            hash: sha256_file(path)?,
            kind: Kind::Sqlite,
            facts: Facts {
                integrity: vec!["not a SQLite database (no SQLite header)".into()],
                ..Facts::default()
            },
            snapshot: None,
        });
    }
    let dir = ctx.keep_snapshots.as_ref().unwrap_or(&ctx.scratch);
    std::fs::create_dir_all(dir).ctx("create folder", dir)?;
    let snap = dir.join(format!("scan-{}.db", crate::ids::random_hex(12)));
    // Hashed and checked here (and fsynced meanwhile); later copied durably where it lands,
    // or, when nothing else needs it, hard-linked there (see `write_version`). A kept
    // snapshot of a database under home also gets its base copy, made meanwhile.
    let base_copy = (ctx.keep_snapshots.is_some()
        && ctx
            .sqlite
            .base_copy_under
            .as_deref()
            .is_some_and(|home| path.starts_with(home) && !has_base(home, path)))
    .then(|| base_copy_of(&snap));
    let result = crate::sqlite::scratch_snapshot(path, &snap, &ctx.sqlite, base_copy.as_deref());
    let keep = ctx.keep_snapshots.is_some() && result.is_ok();
    if !keep {
        let _ = std::fs::remove_file(&snap);
        if let Some(copy) = &base_copy {
            let _ = std::fs::remove_file(copy);
        }
    }
    match result {
        Ok(info) => Ok(Content {
            hash: info.logical_hash,
            kind: Kind::Sqlite,
            facts: Facts {
                integrity: if info.integrity.ok {
                    Vec::new()
                } else {
                    info.integrity.messages.clone()
                },
                entities: info.counts.entities(),
                conversations: info.counts.conversations(),
            },
            snapshot: keep.then_some(snap),
        }),
        Err(e) if crate::sqlite::is_corruption(&e) => Ok(Content {
            hash: format!("corrupt-{}", &sha256_file(path)?[..56]),
            kind: Kind::Sqlite,
            facts: Facts {
                integrity: vec![e.to_string()],
                ..Facts::default()
            },
            snapshot: None,
        }),
        Err(e) => Err(e),
    }
}

/// The shrink guard (SPEC §6): why a version must wait for the user, when its `entities` or
/// `conversations` count fell by more than `max_percent` against the last agreed version.
pub fn shrink_reason(
    agreed: &crate::model::Agreed,
    facts: &Facts,
    max_percent: u32,
) -> Option<String> {
    let counts = |e: Option<u64>, c: Option<u64>| {
        let mut v = Vec::new();
        v.extend(e.map(|n| ("entities".to_string(), n)));
        v.extend(c.map(|n| ("conversations".to_string(), n)));
        crate::sqlite::TableCounts(v)
    };
    crate::sqlite::shrink_reason(
        &counts(agreed.entities, agreed.conversations),
        &counts(facts.entities, facts.conversations),
        max_percent,
    )
    .map(|why| format!("{why}; confirm with `metasync resolve`"))
}

/// Writes the version at `src` to `dest` the way its kind needs, checking it is `expected`.
/// Plain files: temp + fsync + hash + rename. Databases: a one-step snapshot of `src` into a
/// temp file beside `dest`, integrity-checked and hash-checked; then renamed into a remote,
/// or, for the local home (which another program may hold open), written in through the
/// backup API under SQLite's locking.
///
/// With the run's own `snapshot` of `src` (already checked and hashed as `expected`), the temp
/// file is a durable copy of it — or, when `snapshot` is [`SnapshotUse::Move`] and `dest` is
/// a remote, the snapshot itself, hard-linked to the temp name and unlinked from the scratch
/// folder (no copy; its data was fsynced when it was taken), falling back to the copy when
/// the link fails (another file system, no hard links).
pub fn write_version(
    version: &Source<'_>,
    dest: &Path,
    dest_is_local: bool,
    machine: &str,
    ctx: &ReadCtx,
) -> Result<()> {
    let Source {
        kind,
        path: src,
        hash: expected,
        mtime,
        snapshot,
    } = *version;
    if kind == Kind::Plain {
        return crate::apply::copy_file(src, dest, expected, mtime, machine);
    }
    let temp = crate::apply::Temp::beside(dest, machine)?;
    if let Some((snap, usage)) = snapshot {
        // The run's own snapshot of `src`, already integrity-checked and hashed as `expected`
        // when it was scanned: a live writer at the source cannot make it move.
        let moved =
            usage == SnapshotUse::Move && !dest_is_local && move_durably(snap, temp.path())?;
        if !moved {
            copy_durably(snap, temp.path())?;
        }
        return install_database(temp, dest, dest_is_local, mtime, ctx);
    }
    let info = crate::sqlite::snapshot(src, temp.path(), &ctx.sqlite)?;
    if !info.integrity.ok {
        return Err(crate::Error::Refused(format!(
            "{} fails its integrity check ({}); not propagated",
            src.display(),
            info.integrity.summary()
        )));
    }
    if info.logical_hash != expected {
        return Err(crate::Error::Changed(format!(
            "{} changed while being copied; it will be synced next run",
            src.display()
        )));
    }
    install_database(temp, dest, dest_is_local, mtime, ctx)
}

/// A version to write: where it is read from, and what it must be.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// How it is handled.
    pub kind: Kind,
    /// The file it is read from.
    pub path: &'a Path,
    /// Its version hash, checked before it is put in place.
    pub hash: &'a str,
    /// The modification time the written copy gets.
    pub mtime: std::time::SystemTime,
    /// The run's snapshot of it, and how it may be used.
    pub snapshot: Option<(&'a Path, SnapshotUse)>,
}

/// How [`write_version`] may use the run's snapshot of the version it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotUse {
    /// Copy it: it is needed again later in the run.
    Copy,
    /// Nothing reads it after this write: it may become the written file itself.
    Move,
}

/// Gives the file `from` the new name `to` (which must not exist) and removes the name
/// `from`: a hard link, then an unlink, so an existing `to` is never replaced. Then fsyncs
/// it. `Ok(false)`, with nothing changed, when the link cannot be made (another file system,
/// no hard links, …): the caller copies instead.
fn move_durably(from: &Path, to: &Path) -> Result<bool> {
    match std::fs::hard_link(from, to) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(crate::Error::io("create temp file", to, e))
        }
        Err(e) => {
            tracing::debug!(
                "cannot hard-link {} to {}: {e}; copying",
                from.display(),
                to.display()
            );
            return Ok(false);
        }
    }
    // The file now has one name only, so nothing else can reach (or write) what is put in
    // place, and removing the run's scratch folder later cannot touch it (or its ctime).
    std::fs::remove_file(from).ctx("remove snapshot", from)?;
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .ctx("fsync temp file", to)?;
    Ok(true)
}

fn copy_durably(from: &Path, to: &Path) -> Result<()> {
    let mut src = std::fs::File::open(from).ctx("open snapshot", from)?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .ctx("create temp file", to)?;
    std::io::copy(&mut src, &mut out).ctx("write temp file", to)?;
    out.sync_all().ctx("fsync temp file", to)
}

/// Puts a checked database temp file in place: written in through the backup API for a live
/// local database, renamed into place otherwise.
fn install_database(
    temp: crate::apply::Temp,
    dest: &Path,
    dest_is_local: bool,
    mtime: std::time::SystemTime,
    ctx: &ReadCtx,
) -> Result<()> {
    crate::failpoint::hit("after_temp_write");
    let live = dest_is_local && crate::sqlite::is_sqlite(dest)?;
    let written_live = live && {
        crate::failpoint::hit("before_rename");
        match crate::sqlite::write_live(temp.path(), dest, &ctx.sqlite) {
            Ok(()) => true,
            // A damaged local database cannot be written into: it was kept as a backup
            // before this write, so it is replaced whole, like a remote copy.
            Err(e) if crate::sqlite::is_corruption(&e) => false,
            Err(e) => return Err(e),
        }
    };
    if !written_live {
        set_aside_side_files(dest)?;
        return temp.put_in_place(dest, Some(mtime));
    }
    crate::failpoint::hit("after_rename");
    std::fs::File::options()
        .write(true)
        .open(dest)
        .and_then(|f| f.set_modified(mtime))
        .ctx("set modification time", dest)
}

/// Before a database is renamed over `dest`: a `-wal` left beside it would be replayed into
/// the new file, so it is kept aside (renamed, never deleted) and the derived `-shm` removed.
fn set_aside_side_files(dest: &Path) -> Result<()> {
    let side = |suffix: &str| {
        let mut s = dest.as_os_str().to_owned();
        s.push(suffix);
        std::path::PathBuf::from(s)
    };
    for suffix in ["-wal", "-journal"] {
        let p = side(suffix);
        if p.exists() {
            let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S");
            let mut aside = p.as_os_str().to_owned();
            aside.push(format!(".set-aside-{stamp}-{}", crate::ids::random_hex(4)));
            std::fs::rename(&p, std::path::PathBuf::from(aside)).ctx("set aside", &p)?;
        }
    }
    let shm = side("-shm");
    if shm.exists() {
        std::fs::remove_file(&shm).ctx("remove", &shm)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Agreed, Recorded};

    fn agreed(e: Option<u64>, c: Option<u64>) -> Agreed {
        Agreed {
            version: Recorded::Present("h".into()),
            entities: e,
            conversations: c,
        }
    }

    fn facts(e: Option<u64>, c: Option<u64>) -> Facts {
        Facts {
            integrity: vec![],
            entities: e,
            conversations: c,
        }
    }

    #[test]
    fn a_kept_snapshot_of_a_home_database_gets_a_base_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        let remote = dir.path().join("remote");
        let run = dir.path().join("run");
        for d in [&home, &remote, &run] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let ours = home.join("metastore.db");
        let theirs = remote.join("metastore.db");
        crate::sample::create_knowledge_graph(&ours, 50, 1).expect("create");
        crate::sample::create_knowledge_graph(&theirs, 50, 1).expect("create");
        let mut config = crate::config::Config::default();
        let mut ctx = ReadCtx::new(&home, &config);
        assert_eq!(ctx.sqlite.base_copy_under.as_deref(), Some(home.as_path()));

        // Not kept (a read outside a run): nothing is left, no copy made.
        let c = read_content(&ours, &ctx).expect("read");
        assert!(c.snapshot.is_none());
        assert_eq!(std::fs::read_dir(&ctx.scratch).expect("scratch").count(), 0);

        ctx.keep_snapshots = Some(run.clone());
        let c = read_content(&ours, &ctx).expect("read");
        let snap = c.snapshot.expect("kept");
        let copy = base_copy_of(&snap);
        assert!(copy.is_file());
        assert_eq!(
            crate::sqlite::logical_hash(&copy, &ctx.sqlite).expect("hash"),
            c.hash
        );
        // A remote's database: the snapshot only.
        let r = read_content(&theirs, &ctx).expect("read");
        assert!(!base_copy_of(&r.snapshot.expect("kept")).exists());

        // No row merges configured: no copies.
        config.merge = crate::config::MergeMode::File;
        let mut ctx = ReadCtx::new(&home, &config);
        assert!(ctx.sqlite.base_copy_under.is_none());
        ctx.keep_snapshots = Some(run);
        let c = read_content(&ours, &ctx).expect("read");
        assert!(!base_copy_of(&c.snapshot.expect("kept")).exists());
    }

    #[test]
    fn shrink_guard_cases() {
        let cases = [
            (
                agreed(Some(92), Some(1)),
                facts(Some(92), Some(1)),
                50,
                false,
            ),
            (
                agreed(Some(92), Some(1)),
                facts(Some(46), Some(1)),
                50,
                false,
            ),
            (
                agreed(Some(92), Some(1)),
                facts(Some(45), Some(1)),
                50,
                true,
            ),
            (
                agreed(Some(92), Some(1)),
                facts(Some(92), Some(0)),
                50,
                true,
            ),
            (
                agreed(Some(92), Some(2)),
                facts(Some(92), Some(1)),
                50,
                false,
            ),
            (agreed(Some(0), None), facts(Some(0), None), 50, false),
            (agreed(None, None), facts(Some(1), None), 50, false),
            (agreed(Some(92), None), facts(None, None), 50, true),
            (agreed(Some(100), None), facts(Some(1), None), 100, false),
        ];
        for (i, (a, f, pct, held)) in cases.iter().enumerate() {
            assert_eq!(shrink_reason(a, f, *pct).is_some(), *held, "case {i}");
        }
        assert!(shrink_reason(&cases[2].0, &cases[2].1, 50)
            .unwrap()
            .contains("entities fell from 92 to 45"));
    }
}
