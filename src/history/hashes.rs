//! The version hashes of a location's plain backups, kept between listings.
//!
//! `backups` and `history` (the panel's timeline) show every plain backup's version hash; a
//! backup is a file at rest, so its hash is read once and kept here, with the stat it was
//! read at. The next listing takes it only while the backup's stat is still that one (size,
//! mtime, inode and ctime, compared by the scan cache's own rule, which also refuses an entry
//! recorded within [`crate::scan::RACY_NS`] of the file's last change), and reads the file
//! again otherwise.
//!
//! One file per location in the home's state folder (`.metasync/backup-hashes/`): inodes are
//! a machine's own, so a location shared by several machines keeps no such file; and a
//! listing, which writes it, never touches a location. It is a cache: lost, torn or from
//! another version, it is ignored and rebuilt.

use crate::archive::CacheEntry;
use crate::error::{IoContext, Result};
use crate::model::Kind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What is kept of one backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Kept {
    /// The synced file it is a backup of.
    file: String,
    /// The stat it was read at ([`crate::scan::Stat::signature`]).
    signature: String,
    /// When it was read (ns since the epoch).
    scanned_ns: i64,
    /// Its version hash.
    hash: String,
    /// `plain` or `sqlite`.
    kind: String,
    /// Its facts (a database's counts and integrity), as JSON.
    extra: String,
}

/// The kept hashes of one location's plain backups, by relative path.
#[derive(Debug)]
pub struct PlainHashes {
    path: PathBuf,
    kept: BTreeMap<String, Kept>,
    changed: bool,
}

impl PlainHashes {
    /// The hashes kept in `home` for the location named `location` (none when there is no
    /// readable file).
    pub fn load(home: &Path, location: &str) -> PlainHashes {
        let name = crate::ids::sha256_hex(location.as_bytes());
        let path = home
            .join(crate::names::STATE_DIR)
            .join("backup-hashes")
            .join(format!("{}.json", &name[..32]));
        let kept = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        PlainHashes {
            path,
            kept,
            changed: false,
        }
    }

    /// The entry kept for the backup at `rel`, to be checked against its stat.
    pub fn get(&self, rel: &str) -> Option<CacheEntry> {
        self.kept.get(rel).map(|k| CacheEntry {
            signature: k.signature.clone(),
            scanned_ns: k.scanned_ns,
            hash: k.hash.clone(),
            kind: Kind::parse(&k.kind),
            extra: k.extra.clone(),
        })
    }

    /// Keeps `entry`, just read, for the backup at `rel` of the synced file `file`.
    pub fn put(&mut self, rel: &str, file: &str, entry: CacheEntry) {
        let kept = Kept {
            file: file.to_string(),
            signature: entry.signature,
            scanned_ns: entry.scanned_ns,
            hash: entry.hash,
            kind: entry.kind.as_str().to_string(),
            extra: entry.extra,
        };
        if self.kept.get(rel) != Some(&kept) {
            self.kept.insert(rel.to_string(), kept);
            self.changed = true;
        }
    }

    /// Forgets the backups no longer there: of the files a listing looked at (`file`, or
    /// every file when `None`), those not in `listed`.
    pub fn forget_unlisted(&mut self, file: Option<&str>, listed: &[&str]) {
        let before = self.kept.len();
        self.kept
            .retain(|rel, k| file.is_some_and(|f| f != k.file) || listed.contains(&rel.as_str()));
        self.changed |= self.kept.len() != before;
    }

    /// Writes the hashes back when they changed (atomically: a torn file is never read).
    pub fn save(&self) -> Result<()> {
        if !self.changed {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&self.kept).unwrap_or_default();
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).ctx("create folder", dir)?;
        }
        crate::apply::atomic::write_bytes(&self.path, &bytes, "backup-hashes")
    }
}
