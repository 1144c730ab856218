//! Propagation (SPEC §5): backups first, then temp file in the target's folder, fsync, hash
//! check, rename. Makes no decisions: it carries out one step and says whether it worked.

pub mod atomic;
pub mod batch;
mod pool;

use crate::error::{Error, IoContext, Result};
use crate::model::Kind;
use crate::names;
pub use atomic::Temp;
use chrono::NaiveDateTime;
use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// How a backup is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupMethod {
    /// A hard link (the file is then replaced by rename, so the backup keeps the old inode);
    /// falls back to a copy where links are not supported.
    LinkOrCopy,
    /// A full copy (the file is then written in place).
    Copy,
    /// A consistent SQLite snapshot (a live database is then written in place); a byte copy
    /// when the database is too damaged to snapshot.
    Snapshot,
}

/// Keeps the current content of `path` as `<name>.backup-<at>[-N]` beside it; returns its path.
/// A snapshot waits for the database's lock as `sqlite` says (the configured busy timeout).
pub fn backup(
    path: &Path,
    at: NaiveDateTime,
    method: BackupMethod,
    sqlite: &crate::sqlite::SqliteOptions,
) -> Result<PathBuf> {
    let name = file_name(path)?;
    for n in 0..10_000 {
        let target = path.with_file_name(names::backup_name(name, at, n));
        if method == BackupMethod::Snapshot && target.symlink_metadata().is_err() {
            match crate::sqlite::snapshot(path, &target, sqlite) {
                Ok(_) => return Ok(target),
                Err(e) if !crate::sqlite::is_corruption(&e) => return Err(e),
                Err(_) => {} // too damaged to snapshot: keep its bytes instead
            }
        }
        let linked = match method {
            BackupMethod::LinkOrCopy => std::fs::hard_link(path, &target),
            BackupMethod::Copy | BackupMethod::Snapshot => {
                Err(std::io::Error::other("copy requested"))
            }
        };
        match linked {
            Ok(()) => return Ok(target),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(_) => match copy_new(path, &target) {
                Ok(()) => return Ok(target),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("back up", path, e)),
            },
        }
    }
    Err(Error::Refused(format!(
        "too many backups of {} in one second",
        path.display()
    )))
}

fn copy_new(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut src = File::open(from)?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)?;
    let result = std::io::copy(&mut src, &mut dst).and_then(|_| dst.sync_all());
    if result.is_err() {
        let _ = std::fs::remove_file(to);
    }
    let mtime = std::fs::metadata(from)?.modified()?;
    dst.set_modified(mtime)?;
    result
}

fn file_name(path: &Path) -> Result<&str> {
    path.file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Usage(format!("not a usable file name: {}", path.display())))
}

/// Writes the content of `src` to `dest` through a temp file beside it: streamed with the hash
/// computed on the way, fsynced, checked against `expected`, given `mtime`, renamed into place,
/// and the folder fsynced.
pub fn copy_file(
    src: &Path,
    dest: &Path,
    expected: &str,
    mtime: std::time::SystemTime,
    machine: &str,
) -> Result<()> {
    let mut copier = Copier::default();
    copier.copy(src, dest, expected, mtime, machine)?;
    copier.sync_folders();
    Ok(())
}

/// The copies of plain files of one run: one buffer for all of them, and the folders whose
/// new names still need their fsync, done once per folder by [`Copier::sync_folders`] before
/// the run records anything as written (SPEC §5: until then a crash or a power loss may only
/// lose a copy the archive does not know of, and the next run writes it again).
#[derive(Default)]
pub struct Copier {
    buf: Vec<u8>,
    /// Folders copied into since the last [`Copier::sync_folders`].
    folders: BTreeSet<PathBuf>,
    /// Folders made or found this run (not created again for each file).
    made: HashSet<PathBuf>,
    /// New small files waiting to be made durable and put in place together.
    batch: batch::Batch,
}

impl Copier {
    /// [`copy_file`] but for the folder's fsync, which waits for [`Copier::sync_folders`].
    pub fn copy(
        &mut self,
        src: &Path,
        dest: &Path,
        expected: &str,
        mtime: std::time::SystemTime,
        machine: &str,
    ) -> Result<()> {
        let temp = self.write_temp(src, dest, expected, mtime, machine)?;
        temp.put_in_place_unsynced(dest, None)?;
        if let Some(dir) = dest.parent() {
            self.folders.insert(dir.to_path_buf());
        }
        Ok(())
    }

    /// Whether a new file of `size` bytes may wait for a batch ([`batch`]).
    pub fn batches(size: u64) -> bool {
        batch::Batch::takes(size)
    }

    /// [`Copier::copy`] of a new file into a batch: written, checked, made durable and put
    /// in place by [`Copier::settle`] (never over a file that appeared meanwhile).
    pub fn copy_later(&mut self, dest: &Path, machine: &str, copy: batch::NewCopy) -> Result<()> {
        let temp = self.temp_for(dest, machine)?;
        if let Some(dir) = dest.parent() {
            self.batch.note_folder(dir)?;
        }
        self.batch.push(temp, dest, copy);
        Ok(())
    }

    /// Whether the batch should be settled before more files join it.
    pub fn batch_full(&self) -> bool {
        self.batch.is_full()
    }

    /// Settles the batch ([`batch::Batch::settle`]): how each of its files went.
    pub fn settle(&mut self) -> Vec<batch::Settled> {
        self.batch.settle()
    }

    /// A temp file for `dest` with the content of `src`, its hash checked against `expected`
    /// and its modification time `mtime`, fsynced.
    fn write_temp(
        &mut self,
        src: &Path,
        dest: &Path,
        expected: &str,
        mtime: std::time::SystemTime,
        machine: &str,
    ) -> Result<Temp> {
        let temp = self.temp_for(dest, machine)?;
        let mut input = File::open(src).ctx("open source", src)?;
        let mut out = temp.create()?;
        if self.buf.is_empty() {
            self.buf = vec![0u8; 1 << 20];
        }
        let (got, _) = stream(&mut input, &mut out, &mut self.buf, src, temp.path())?;
        // The mtime is given before the fsync (one open, and durable with the content).
        out.set_modified(mtime)
            .ctx("set modification time", temp.path())?;
        out.sync_all().ctx("fsync temp file", temp.path())?;
        drop(out);
        check_hash(src, expected, &got)?;
        crate::failpoint::hit("after_temp_write");
        Ok(temp)
    }

    /// A temp name beside `dest`, its folder made the first time this run writes there.
    fn temp_for(&mut self, dest: &Path, machine: &str) -> Result<Temp> {
        match dest.parent() {
            Some(dir) if !self.made.contains(dir) => {
                let t = Temp::beside(dest, machine)?;
                self.made.insert(dir.to_path_buf());
                Ok(t)
            }
            _ => Temp::in_folder(dest, machine),
        }
    }

    /// Fsyncs each folder a copy was put into since the last call, once.
    pub fn sync_folders(&mut self) {
        for dir in std::mem::take(&mut self.folders) {
            atomic::sync_dir(&dir);
        }
    }
}

/// Streams `input` (the file `src`) into `out` (the temp file `temp`) through `buf`, hashing on
/// the way: the content's hash and size.
fn stream(
    input: &mut File,
    out: &mut File,
    buf: &mut [u8],
    src: &Path,
    temp: &Path,
) -> Result<(String, u64)> {
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut size = 0u64;
    loop {
        let n = input.read(buf).ctx("read", src)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        sha2::Digest::update(&mut hasher, &buf[..n]);
        out.write_all(&buf[..n]).ctx("write temp file", temp)?;
    }
    Ok((crate::ids::hex_lower(&sha2::Digest::finalize(hasher)), size))
}

/// A copy whose content hashes to `got` instead of `expected`: its source `src` changed since
/// its scan.
fn check_hash(src: &Path, expected: &str, got: &str) -> Result<()> {
    if got == expected {
        return Ok(());
    }
    Err(Error::Changed(format!(
        "{} changed while being copied (expected {}, read {}); it will be synced next run",
        src.display(),
        &expected[..12.min(expected.len())],
        &got[..12]
    )))
}

/// Deletes a synced file by moving it to a backup name; returns the backup's path.
pub fn delete_to_backup(path: &Path, at: NaiveDateTime) -> Result<PathBuf> {
    let name = file_name(path)?;
    for n in 0..10_000 {
        let target = path.with_file_name(names::backup_name(name, at, n));
        if target.exists() {
            continue;
        }
        std::fs::rename(path, &target).ctx("move to backup", path)?;
        return Ok(target);
    }
    Err(Error::Refused(format!(
        "too many backups of {} in one second",
        path.display()
    )))
}

/// Removes `path` when it is a temp file of an interrupted write: this machine's (no run of
/// ours is going on: the caller holds the lock), or another machine's untouched for an hour.
pub fn remove_if_stale(path: &Path, machine: &str) -> bool {
    let Some(owner) = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(names::temp_machine)
    else {
        return false;
    };
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let stale = owner == machine
        || std::fs::symlink_metadata(path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < hour_ago);
    stale && std::fs::remove_file(path).is_ok()
}

/// The kind-appropriate backup method for overwriting a file of `kind` in a location.
pub fn backup_method(kind: Kind, local: bool) -> BackupMethod {
    match (kind, local) {
        (Kind::Sqlite, true) => BackupMethod::Snapshot,
        _ => BackupMethod::LinkOrCopy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at() -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 12, 1)
            .unwrap()
            .and_hms_opt(10, 0, 0)
            .unwrap()
    }

    #[test]
    fn backups_never_collide() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.yaml");
        std::fs::write(&p, "v1").unwrap();
        let b0 = backup(&p, at(), BackupMethod::LinkOrCopy, &Default::default()).unwrap();
        let b1 = backup(&p, at(), BackupMethod::Copy, &Default::default()).unwrap();
        assert_eq!(b0.file_name().unwrap(), "f.yaml.backup-20261201-100000");
        assert_eq!(b1.file_name().unwrap(), "f.yaml.backup-20261201-100000-1");
        assert_eq!(std::fs::read_to_string(b1).unwrap(), "v1");
    }

    #[test]
    fn copy_checks_the_hash_and_leaves_no_temp_behind() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::write(&src, "hello").unwrap();
        let good = crate::ids::hex_lower(&<sha2::Sha256 as sha2::Digest>::digest(
            std::fs::read(&src).unwrap(),
        ));
        let dest = d.path().join("sub/dest");
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        copy_file(&src, &dest, &good, t, "m1").unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "hello");
        assert_eq!(std::fs::metadata(&dest).unwrap().modified().unwrap(), t);
        let err = copy_file(&src, &d.path().join("other"), "00", t, "m1").unwrap_err();
        assert!(
            err.to_string().contains("changed while being copied"),
            "{err}"
        );
        assert!(!d.path().join("other").exists());
        let leftovers: Vec<_> = std::fs::read_dir(d.path().join("sub"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("dest")]);
    }

    #[test]
    fn a_batch_puts_new_files_in_place_but_never_over_one_that_appeared() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::write(&src, "new content").unwrap();
        let content = crate::model::Content {
            hash: crate::ids::hex_lower(&<sha2::Sha256 as sha2::Digest>::digest(b"new content")),
            kind: Kind::Plain,
            facts: Default::default(),
            snapshot: None,
        };
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(2_000_000);
        let (fresh, taken) = (d.path().join("a/fresh"), d.path().join("a/taken"));
        let mut copier = Copier::default();
        for dest in [&fresh, &taken] {
            let tag = batch::Tag {
                location: "remote".into(),
                file: dest.file_name().unwrap().to_string_lossy().into(),
                content: content.clone(),
            };
            let copy = batch::NewCopy {
                src: src.clone(),
                expected: content.hash.clone(),
                mtime: t,
                size: 11,
                tag,
            };
            copier.copy_later(dest, "m1", copy).unwrap();
        }
        assert!(
            !fresh.exists(),
            "nothing is in place before the batch settles"
        );
        std::fs::write(&taken, "the user's own").unwrap();
        let settled = copier.settle();
        assert_eq!(settled.len(), 2);
        assert!(settled[0].result.is_ok());
        let err = settled[1].result.as_ref().unwrap_err();
        assert!(matches!(err, Error::Changed(_)), "{err}");
        assert_eq!(std::fs::read_to_string(&fresh).unwrap(), "new content");
        assert_eq!(std::fs::metadata(&fresh).unwrap().modified().unwrap(), t);
        assert_eq!(std::fs::read_to_string(&taken).unwrap(), "the user's own");
        let mut left: Vec<_> = std::fs::read_dir(d.path().join("a"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        assert_eq!(left, ["fresh", "taken"]);
        assert!(copier.settle().is_empty());
    }

    /// The batch's temps are written by its pool when it settles (more files than one
    /// thread's run, in several folders), each checked against the hash of its scan: a source
    /// that changed since fails alone, and leaves neither its file nor a temp.
    #[test]
    fn a_batch_writes_its_files_when_it_settles_and_a_changed_source_fails_alone() {
        let d = tempfile::tempdir().unwrap();
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(3_000_000);
        let mut copier = Copier::default();
        let mut files = Vec::new();
        for i in 0..100 {
            let (rel, text) = (
                format!("d{}/f{i}", i % 3),
                format!("file {i} ").repeat(i + 1),
            );
            let src = d.path().join("src").join(&rel);
            std::fs::create_dir_all(src.parent().unwrap()).unwrap();
            std::fs::write(&src, &text).unwrap();
            let hash = crate::ids::hex_lower(&<sha2::Sha256 as sha2::Digest>::digest(&text));
            let content = crate::model::Content {
                hash: hash.clone(),
                kind: Kind::Plain,
                facts: Default::default(),
                snapshot: None,
            };
            let tag = batch::Tag {
                location: "remote".into(),
                file: rel.clone(),
                content,
            };
            let size = text.len() as u64;
            let (expected, mtime) = (hash, t);
            let copy = batch::NewCopy {
                src: src.clone(),
                expected,
                mtime,
                size,
                tag,
            };
            let dest = d.path().join("dst").join(&rel);
            copier.copy_later(&dest, "m1", copy).unwrap();
            files.push((src, dest, text));
        }
        let listed = |dir: &str| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(d.path().join("dst").join(dir))
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect();
            names.sort();
            names
        };
        assert!(
            (0..3).all(|i| listed(&format!("d{i}")).is_empty()),
            "nothing is written before the batch settles"
        );
        std::fs::write(&files[41].0, "edited after its scan").unwrap();
        let settled = copier.settle();
        assert_eq!(settled.len(), files.len());
        for (s, (_, dest, text)) in settled.iter().zip(&files) {
            assert_eq!(&s.dest, dest);
            if dest.ends_with("d2/f41") {
                let err = s.result.as_ref().unwrap_err();
                assert!(
                    err.to_string().contains("changed while being copied"),
                    "{err}"
                );
                assert!(!dest.exists());
                continue;
            }
            assert!(s.result.is_ok(), "{}: {:?}", dest.display(), s.result);
            assert_eq!(&std::fs::read_to_string(dest).unwrap(), text);
            assert_eq!(std::fs::metadata(dest).unwrap().modified().unwrap(), t);
        }
        let all: Vec<String> = (0..3).flat_map(|i| listed(&format!("d{i}"))).collect();
        assert_eq!(all.len(), files.len() - 1, "no temp left: {all:?}");
    }

    #[test]
    fn stale_temps_of_this_machine_are_removed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(names::temp_name("a", "m1", "x")), "").unwrap();
        std::fs::write(d.path().join(names::temp_name("a", "m2", "x")), "").unwrap();
        std::fs::write(d.path().join("a"), "").unwrap();
        let removed = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .filter(|e| remove_if_stale(&e.path(), "m1"))
            .count();
        assert_eq!(removed, 1);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
    }
}
