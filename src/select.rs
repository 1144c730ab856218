//! Which files in a location are synced files: the config's glob patterns, minus the names
//! that never are (backups, temp and side files, placeholders, the marker, home's own state).

use crate::names;
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Checks one pattern: relative, no `..`, valid glob syntax.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("an empty pattern matches nothing".into());
    }
    if pattern.starts_with('/') {
        return Err(format!(
            "pattern `{pattern}` must be relative to the location's root"
        ));
    }
    if pattern.split('/').any(|c| c == ".." || c == ".") {
        return Err(format!(
            "pattern `{pattern}` must not contain `.` or `..` components"
        ));
    }
    build_glob(pattern)
        .map(|_| ())
        .map_err(|e| format!("pattern `{pattern}`: {e}"))
}

fn build_glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

fn is_literal(pattern: &str) -> bool {
    !pattern
        .chars()
        .any(|c| matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\'))
}

/// The compiled `files` patterns.
#[derive(Debug, Clone)]
pub struct Selector {
    literals: Vec<String>,
    globs: Option<GlobSet>,
    /// A pattern selects every path (`**` or `**/*`): no glob is run per file.
    all: bool,
}

impl Selector {
    /// Compiles patterns already checked by [`check_pattern`].
    pub fn new(patterns: &[String]) -> Result<Selector, String> {
        let mut literals = Vec::new();
        let mut builder = GlobSetBuilder::new();
        let mut any_glob = false;
        for p in patterns {
            if is_literal(p) {
                literals.push(p.clone());
            } else {
                builder.add(build_glob(p).map_err(|e| format!("pattern `{p}`: {e}"))?);
                any_glob = true;
            }
        }
        let globs = if any_glob {
            Some(builder.build().map_err(|e| e.to_string())?)
        } else {
            None
        };
        let all = patterns.iter().any(|p| p == "**" || p == "**/*");
        Ok(Selector {
            literals,
            globs,
            all,
        })
    }

    /// Whether a relative path is a synced file.
    pub fn matches(&self, rel: &str) -> bool {
        if !is_eligible(rel) {
            return false;
        }
        self.all
            || self.literals.iter().any(|l| l == rel)
            || self.globs.as_ref().is_some_and(|g| g.is_match(rel))
    }

    /// The synced files present under `root` (regular files only; symlinks are not followed).
    /// Literal patterns cost one `stat` each; glob patterns walk the tree.
    pub fn find(&self, root: &Path) -> BTreeSet<String> {
        self.list(root).files.into_iter().collect()
    }

    /// One look at a location: the synced files (sorted), and the folders holding backups and
    /// the temp files seen beside them. Each folder is read once; glob patterns walk the tree
    /// (not following symbolic links), literal patterns read only their own folders.
    pub fn list(&self, root: &Path) -> Listing {
        let mut listing = Listing::default();
        if self.globs.is_some() {
            self.walk(root, &mut listing);
        } else {
            self.read_literal_folders(root, &mut listing);
        }
        listing.backup_folders.sort_unstable();
        listing.backup_folders.dedup();
        listing
    }

    /// Glob patterns: the whole tree, not following symbolic links.
    fn walk(&self, root: &Path, listing: &mut Listing) {
        #[cfg(target_os = "linux")]
        self.walk_by_fd(root, listing);
        #[cfg(not(target_os = "linux"))]
        self.walk_by_path(root, listing);
        // A literal the walk cannot reach (under a linked folder) is still looked at.
        for l in &self.literals {
            if is_eligible(l)
                && !listing.files.contains(l)
                && std::fs::symlink_metadata(root.join(l)).is_ok_and(|m| m.is_file())
            {
                listing.files.push(l.clone());
            }
        }
    }

    /// [`Selector::walk`] through `walkdir`: every entry's path is built and matched.
    #[cfg(not(target_os = "linux"))]
    fn walk_by_path(&self, root: &Path, listing: &mut Listing) {
        let walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| {
                e.depth() == 0
                    || !(e.file_type().is_dir()
                        && e.depth() == 1
                        && is_home_state_dir(e.file_name()))
            });
        // Every entry's path starts with `root` and a separator: cut it off as bytes
        // (Path::strip_prefix compares component by component, per entry).
        let cut =
            root.as_os_str().len() + usize::from(!root.as_os_str().as_bytes().ends_with(b"/"));
        for entry in walker.flatten() {
            if entry.depth() == 0 || entry.file_type().is_dir() {
                continue;
            }
            let Some(bytes) = entry.path().as_os_str().as_bytes().get(cut..) else {
                continue;
            };
            let is_file = entry.file_type().is_file();
            match std::str::from_utf8(bytes) {
                Ok(rel) => self.note(listing, rel, root, is_file),
                Err(_) => self.note_unreadable(listing, bytes, is_file),
            }
        }
    }

    /// [`Selector::walk`] on Linux: each folder opened once (relative to the root, not
    /// following a link at its end) and read with `getdents` into one reused buffer; each
    /// entry's relative path is built in one reused buffer too, so a walked file costs no
    /// allocation unless it is listed. A folder that cannot be opened or read is skipped, as
    /// `walkdir` skips it.
    #[cfg(target_os = "linux")]
    fn walk_by_fd(&self, root: &Path, listing: &mut Listing) {
        use rustix::fs::{open, openat, Mode, OFlags};
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let Ok(root_fd) = open(root, flags, Mode::empty()) else {
            return;
        };
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut rel: Vec<u8> = Vec::with_capacity(256);
        // Folders still to read, relative to the root ("" is the root).
        let mut pending: Vec<Vec<u8>> = vec![Vec::new()];
        while let Some(folder) = pending.pop() {
            let opened = if folder.is_empty() {
                None
            } else {
                let at = std::ffi::OsStr::from_bytes(&folder);
                match openat(&root_fd, at, flags | OFlags::NOFOLLOW, Mode::empty()) {
                    Ok(fd) => Some(fd),
                    Err(_) => continue,
                }
            };
            let fd = opened.as_ref().unwrap_or(&root_fd);
            let mut dir = rustix::fs::RawDir::new(fd, buf.spare_capacity_mut());
            while let Some(Ok(entry)) = dir.next() {
                let name = entry.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                rel.clear();
                rel.extend_from_slice(&folder);
                if !folder.is_empty() {
                    rel.push(b'/');
                }
                rel.extend_from_slice(name);
                let Some(kind) = entry_type(fd, entry.file_name(), entry.file_type()) else {
                    continue;
                };
                if kind == rustix::fs::FileType::Directory {
                    let state =
                        folder.is_empty() && is_home_state_dir(std::ffi::OsStr::from_bytes(name));
                    if !state {
                        pending.push(rel.clone());
                    }
                    continue;
                }
                let is_file = kind == rustix::fs::FileType::RegularFile;
                match std::str::from_utf8(&rel) {
                    Ok(r) => self.note(listing, r, root, is_file),
                    Err(_) => self.note_unreadable(listing, &rel, is_file),
                }
            }
        }
    }

    /// Literal patterns only: just their folders (usually the root).
    fn read_literal_folders(&self, root: &Path, listing: &mut Listing) {
        // Only the folders of the literal files: usually just the root.
        let folders: BTreeSet<&str> = self
            .literals
            .iter()
            .map(|l| l.rsplit_once('/').map_or("", |(d, _)| d))
            .collect();
        for folder in folders {
            let dir = root.join(folder);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let is_file = e.file_type().is_ok_and(|t| t.is_file());
                let Some(name) = e.file_name().to_str().map(String::from) else {
                    let mut rel = folder.as_bytes().to_vec();
                    if !rel.is_empty() {
                        rel.push(b'/');
                    }
                    rel.extend_from_slice(e.file_name().as_bytes());
                    self.note_unreadable(listing, &rel, is_file);
                    continue;
                };
                let rel = if folder.is_empty() {
                    name
                } else {
                    format!("{folder}/{name}")
                };
                self.note(listing, &rel, root, is_file);
            }
        }
    }

    /// One entry of a listing (`rel` in the location at `root`): a temp file, a backup's
    /// folder, or a synced file.
    fn note(&self, listing: &mut Listing, rel: &str, root: &Path, is_file: bool) {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        if names::temp_machine(name).is_some() {
            listing.temps.push(root.join(rel));
        } else if is_file && names::is_backup_name(name) {
            let path = root.join(rel);
            if let Some(dir) = path.parent() {
                if listing.backup_folders.last().map(PathBuf::as_path) != Some(dir) {
                    listing.backup_folders.push(dir.to_path_buf());
                }
            }
        } else if is_file && self.matches(rel) {
            listing.files.push(rel.to_string());
        }
    }

    /// A name that is not UTF-8 cannot be a synced file (names are text in the archive, the
    /// reports and other machines): one the patterns would select is reported.
    fn note_unreadable(&self, listing: &mut Listing, rel: &[u8], is_file: bool) {
        let lossy = String::from_utf8_lossy(rel);
        let name = lossy.rsplit('/').next().unwrap_or(&lossy);
        if is_file
            && names::temp_machine(name).is_none()
            && !names::is_backup_name(name)
            && self.matches(&lossy)
        {
            listing.skipped.push(SkippedFile {
                reason: format!(
                    "skipped: its name is not valid UTF-8 (`{}`)",
                    rel.escape_ascii()
                ),
                name: lossy.into_owned(),
            });
        }
    }
}

/// What one look at a location's folders found (see [`Selector::list`]).
#[derive(Debug, Default, Clone)]
pub struct Listing {
    /// The synced files present, relative to the root, in the order the folders were read.
    pub files: Vec<String>,
    /// The folders (absolute) holding at least one backup when they were read.
    pub backup_folders: Vec<PathBuf>,
    /// Temp files (absolute) left by interrupted writes, any owner.
    pub temps: Vec<PathBuf>,
    /// Files the patterns would select that cannot be synced, with the reason.
    pub skipped: Vec<SkippedFile>,
}

/// A walked entry's type: the one `getdents` gave, or, on a file system that gives none, its
/// `lstat`'s (`None`: it cannot be stated, so it is skipped).
#[cfg(target_os = "linux")]
fn entry_type(
    dir: &rustix::fd::OwnedFd,
    name: &std::ffi::CStr,
    given: rustix::fs::FileType,
) -> Option<rustix::fs::FileType> {
    use rustix::fs::{statat, AtFlags, FileType};
    if given != FileType::Unknown {
        return Some(given);
    }
    let st = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
    Some(FileType::from_raw_mode(st.st_mode))
}

fn is_home_state_dir(name: &std::ffi::OsStr) -> bool {
    name == names::STATE_DIR || name == names::LOGS_DIR
}

/// Whether a relative path may be a synced file at all.
pub fn is_eligible(rel: &str) -> bool {
    if rel == names::CONFIG_FILE {
        return false;
    }
    // One pass over the components: none empty or `..`, the first not home's own state.
    let mut name = "";
    for (i, c) in rel.split('/').enumerate() {
        let state = i == 0 && (c == names::STATE_DIR || c == names::LOGS_DIR);
        if c.is_empty() || c == ".." || state {
            return false;
        }
        name = c;
    }
    !names::is_never_synced(name)
}

/// A file the patterns select that is left alone, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SkippedFile {
    /// Its path relative to the location's root, invalid bytes shown as U+FFFD.
    pub name: String,
    /// Why it is left alone.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(p: &[&str]) -> Selector {
        Selector::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn star_does_not_cross_folders_double_star_does() {
        let s = sel(&["*.yaml", "notes/**/*.md"]);
        assert!(s.matches("a.yaml"));
        assert!(!s.matches("sub/a.yaml"));
        assert!(s.matches("notes/x.md"));
        assert!(s.matches("notes/a/b/x.md"));
        assert!(!s.matches("x.md"));
    }

    #[test]
    fn never_synced_names_are_excluded_even_when_matched() {
        let s = sel(&["**/*"]);
        for rel in [
            "metastore.db.backup-20261201-090507",
            "metastore.db-wal",
            ".metastore.db.icloud",
            ".metasync-location",
            ".metasync/state.db",
            "logs/metasync.log",
            "metasync.toml",
            ".a.metasync-tmp-ab-1",
        ] {
            assert!(!s.matches(rel), "{rel}");
        }
        assert!(s.matches("metastore.db"));
        assert!(s.matches("deep/er/file.txt"));
    }

    #[test]
    fn selected_names_that_are_not_utf8_are_listed_as_skipped() {
        use std::ffi::OsStr;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("t")).unwrap();
        for name in [
            &b"t/caf\xe9.txt"[..],
            b"t/ok.txt",
            b"x\xff.md",
            b"t/.a\xff.metasync-tmp-ab-1",
        ] {
            std::fs::write(root.join(OsStr::from_bytes(name)), "x").unwrap();
        }
        let listing = sel(&["t/*.txt"]).list(root);
        assert_eq!(listing.files, vec!["t/ok.txt"]);
        let skipped: Vec<&str> = listing.skipped.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(skipped, vec!["t/caf\u{FFFD}.txt"]);
        assert!(
            listing.skipped[0].reason.contains(r"caf\xe9.txt"),
            "{:?}",
            listing.skipped
        );
        // A root-level literal pattern never equals a name that is not UTF-8, glob or not.
        let listing = sel(&["x.md"]).list(root);
        assert!(listing.files.is_empty() && listing.skipped.is_empty());
        let listing = sel(&["x*.md"]).list(root);
        assert_eq!(listing.skipped.len(), 1, "{:?}", listing.skipped);
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(check_pattern("/etc/passwd").is_err());
        assert!(check_pattern("../x").is_err());
        assert!(check_pattern("a/[b").is_err());
        assert!(check_pattern("").is_err());
        assert!(check_pattern("**/*.db").is_ok());
    }

    #[test]
    fn find_uses_the_tree() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("sub/deeper")).unwrap();
        for f in [
            "a.yaml",
            "sub/b.yaml",
            "sub/deeper/c.yaml",
            "sub/x.txt",
            "a.yaml.backup-20261201-090507",
        ] {
            std::fs::write(d.path().join(f), "x").unwrap();
        }
        let s = sel(&["*.yaml", "sub/**/*.yaml", "metastore.db"]);
        let got: Vec<_> = s.find(d.path()).into_iter().collect();
        assert_eq!(got, vec!["a.yaml", "sub/b.yaml", "sub/deeper/c.yaml"]);
    }

    fn listing_tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let stamp = chrono::NaiveDate::from_ymd_opt(2026, 12, 1)
            .unwrap()
            .and_hms_opt(9, 30, 0)
            .unwrap();
        std::fs::create_dir_all(d.path().join("notes/deep")).unwrap();
        std::fs::create_dir_all(d.path().join(names::STATE_DIR)).unwrap();
        for f in [
            "metastore.db".to_string(),
            "notes/a.md".to_string(),
            "notes/deep/b.md".to_string(),
            format!("notes/{}", names::backup_name("a.md", stamp, 0)),
            format!("notes/deep/{}", names::temp_name("b.md", "m1", "x1")),
            names::temp_name("metastore.db", "m2", "x2"),
            format!("{}/state.db", names::STATE_DIR),
        ] {
            std::fs::write(d.path().join(f), "x").unwrap();
        }
        d
    }

    #[test]
    fn one_listing_finds_files_backup_folders_and_temps() {
        let d = listing_tree();
        let mut l = sel(&["**/*"]).list(d.path());
        l.files.sort();
        assert_eq!(
            l.files,
            vec!["metastore.db", "notes/a.md", "notes/deep/b.md"]
        );
        assert_eq!(l.backup_folders, vec![d.path().join("notes")]);
        let mut temps = l.temps.clone();
        temps.sort();
        assert_eq!(temps.len(), 2, "{temps:?}");
        assert!(temps
            .iter()
            .any(|t| t.starts_with(d.path().join("notes/deep"))));
    }

    #[test]
    fn the_walk_skips_home_state_and_links_but_not_deeper_namesakes() {
        let d = listing_tree();
        let root = d.path();
        std::fs::create_dir_all(root.join(names::LOGS_DIR)).unwrap();
        std::fs::create_dir_all(root.join("sub/logs/.metasync")).unwrap();
        std::fs::create_dir_all(root.join("elsewhere")).unwrap();
        for f in [
            "logs/metasync.log",
            "sub/logs/kept.txt",
            "sub/logs/.metasync/kept.db",
            "elsewhere/outside.txt",
        ] {
            std::fs::write(root.join(f), "x").unwrap();
        }
        std::os::unix::fs::symlink(root.join("elsewhere"), root.join("sub/linked")).unwrap();
        std::os::unix::fs::symlink(root.join("notes/a.md"), root.join("sub/link.md")).unwrap();
        let want = [
            "elsewhere/outside.txt",
            "metastore.db",
            "notes/a.md",
            "notes/deep/b.md",
            "sub/logs/.metasync/kept.db",
            "sub/logs/kept.txt",
        ];
        // Every pattern (the match-all short cut) and a glob that selects the same files.
        for patterns in [
            &["**/*"][..],
            &["**"],
            &["*", "*/**"],
            &["**/*.{md,db,txt}"],
        ] {
            let mut l = sel(patterns).list(root);
            l.files.sort();
            assert_eq!(l.files, want, "{patterns:?}");
            assert_eq!(l.temps.len(), 2, "{patterns:?}: {:?}", l.temps);
        }
        let mut l = sel(&["sub/**/*.txt"]).list(root);
        l.files.sort();
        assert_eq!(l.files, ["sub/logs/kept.txt"]);
    }

    #[test]
    fn literal_patterns_list_only_their_own_folders() {
        let d = listing_tree();
        let mut l = sel(&["metastore.db", "notes/a.md", "missing.yaml"]).list(d.path());
        l.files.sort();
        assert_eq!(l.files, vec!["metastore.db", "notes/a.md"]);
        assert_eq!(l.backup_folders, vec![d.path().join("notes")]);
        // The root's temp is seen; notes/deep is not a folder of any literal.
        assert_eq!(l.temps.len(), 1, "{:?}", l.temps);
        assert_eq!(sel(&["metastore.db"]).find(d.path()).len(), 1);
    }
}
