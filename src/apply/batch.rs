//! Batched durability for many small new files (Linux): the files of a batch wait until it is
//! full, or until the archive commit; then a bounded pool of threads writes and checks their
//! temp files ([`super::pool`], not fsynced one by one), one `syncfs(2)` per file system makes
//! every temp of the batch durable, the temps are renamed into place (never over a file that
//! appeared meanwhile: `RENAME_NOREPLACE`, each name looked up in its folder held open), and one
//! more `syncfs(2)` makes the renames durable. Only then may the archive record them (SPEC §5):
//! a crash at any point leaves each target absent or complete, and at worst a temp file that
//! the next run removes. A failed sync fails the whole batch (nothing of it is recorded; the
//! next run writes those files again); a file whose temp could not be written or whose source
//! changed since its scan fails alone.
//!
//! The `syncfs` descriptor of a file system is opened when the first file of a batch joins it,
//! before any temp is written there, so that a write-back error of any of them is reported by
//! its `syncfs`. Batching applies to new plain files up to [`BATCH_FILE_MAX`]; everything else
//! (bigger files, replacements of existing files, databases, other systems) takes the per-file
//! path.

use super::atomic::Folder;
use super::Temp;
use crate::error::{Error, IoContext, Result};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// The largest file a batch takes: bigger ones are fsynced on their own.
pub const BATCH_FILE_MAX: u64 = 4 << 20;
/// A batch is settled when it holds this many files ...
const BATCH_FILES: usize = 4096;
/// ... or this many bytes.
const BATCH_BYTES: u64 = 256 << 20;

/// What the caller wants back with a settled file.
pub struct Tag {
    /// The location written.
    pub location: String,
    /// The synced file.
    pub file: String,
    /// The version written (its scan cache entry is made once it is in place).
    pub content: crate::model::Content,
}

/// A new file to copy in a batch: where from, and what it must be.
pub struct NewCopy {
    /// The source.
    pub src: PathBuf,
    /// The hash the written temp must have (the source's at its scan).
    pub expected: String,
    /// The modification time the copy gets.
    pub mtime: std::time::SystemTime,
    /// Its size at the scan (for the batch's limit).
    pub size: u64,
    /// What the caller wants back with it.
    pub tag: Tag,
}

/// A file waiting for its batch: its temp is named (not yet written) beside `dest`.
pub(super) struct Pending {
    pub(super) temp: Temp,
    pub(super) dest: PathBuf,
    pub(super) copy: NewCopy,
}

/// How one file of a batch went.
pub struct Settled {
    /// What the caller gave with it.
    pub tag: Tag,
    /// Its target.
    pub dest: PathBuf,
    /// In place and durable, or why not.
    pub result: Result<()>,
}

/// The files waiting to be made durable and put in place together.
#[derive(Default)]
pub struct Batch {
    pending: Vec<Pending>,
    bytes: u64,
    /// Each folder's file system (a stat per folder, not per file).
    folder_dev: HashMap<PathBuf, u64>,
    /// One open folder per file system written this batch, for its `syncfs`.
    syncers: HashMap<u64, (PathBuf, File)>,
    /// The pool's buffers, kept from batch to batch.
    buffers: Vec<Vec<u8>>,
}

impl Batch {
    /// Whether a file of `size` bytes may wait for a batch on this system.
    pub fn takes(size: u64) -> bool {
        cfg!(target_os = "linux") && size <= BATCH_FILE_MAX
    }

    /// Notes that a temp is about to be written in `dir` (opens its file system's syncer).
    pub fn note_folder(&mut self, dir: &Path) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let dev = match self.folder_dev.get(dir) {
            Some(d) => *d,
            None => {
                let d = std::fs::metadata(dir).ctx("stat folder", dir)?.dev();
                self.folder_dev.insert(dir.to_path_buf(), d);
                d
            }
        };
        if let std::collections::hash_map::Entry::Vacant(v) = self.syncers.entry(dev) {
            let f = File::open(dir).ctx("open folder", dir)?;
            v.insert((dir.to_path_buf(), f));
        }
        Ok(())
    }

    /// Adds a file to copy into `dest` through `temp` (named, not yet written).
    pub fn push(&mut self, temp: Temp, dest: &Path, copy: NewCopy) {
        self.bytes += copy.size;
        self.pending.push(Pending {
            temp,
            dest: dest.to_path_buf(),
            copy,
        });
    }

    /// Whether the batch should be settled now.
    pub fn is_full(&self) -> bool {
        self.pending.len() >= BATCH_FILES || self.bytes >= BATCH_BYTES
    }

    /// Writes the temps, makes them durable, puts them in place, and makes that durable
    /// (module doc). The failpoint `temps_durable` is between the second and third steps.
    pub fn settle(&mut self) -> Vec<Settled> {
        let pending = std::mem::take(&mut self.pending);
        self.bytes = 0;
        if pending.is_empty() {
            return Vec::new();
        }
        let syncers = std::mem::take(&mut self.syncers);
        let written = super::pool::write_temps(&pending, &mut self.buffers);
        if written.iter().any(Result::is_ok) {
            if let Err(e) = sync_all(&syncers) {
                let failed = pending.into_iter().zip(written);
                return failed
                    .map(|(p, w)| settled(p, w.and(Err(copy_error(&e)))))
                    .collect();
            }
            crate::failpoint::hit("temps_durable");
        }
        let mut placed = put_in_place(pending, written);
        if placed.iter().any(|s| s.result.is_ok()) {
            if let Err(e) = sync_all(&syncers) {
                for s in placed.iter_mut().filter(|s| s.result.is_ok()) {
                    s.result = Err(copy_error(&e));
                }
            }
        }
        placed
    }
}

/// Renames each written temp into place, in order, each folder held open while its files are.
fn put_in_place(pending: Vec<Pending>, written: Vec<Result<()>>) -> Vec<Settled> {
    let mut folder: Option<Folder> = None;
    let mut place = |temp: Temp, dest: &Path| -> Result<()> {
        let dir = dest.parent().unwrap_or(dest);
        let held = match folder.take() {
            Some(f) if f.path() == dir => f,
            _ => Folder::open(dir)?,
        };
        temp.put_in_place_new_in(folder.insert(held), dest)
    };
    let mut placed = Vec::with_capacity(pending.len());
    for (p, w) in pending.into_iter().zip(written) {
        let Pending { temp, dest, copy } = p;
        let result = w.and_then(|()| place(temp, &dest));
        placed.push(Settled {
            tag: copy.tag,
            dest,
            result,
        });
    }
    placed
}

fn settled(p: Pending, result: Result<()>) -> Settled {
    Settled {
        tag: p.copy.tag,
        dest: p.dest,
        result,
    }
}

/// The same failure again, for each file it concerns.
fn copy_error(e: &Error) -> Error {
    match e {
        Error::Io { op, path, source } => Error::Io {
            op,
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        other => Error::Refused(other.to_string()),
    }
}

/// One `syncfs` per file system of the batch.
fn sync_all(syncers: &HashMap<u64, (PathBuf, File)>) -> Result<()> {
    for (dir, f) in syncers.values() {
        sync_filesystem(f).ctx("sync the file system of", dir)?;
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn sync_filesystem(f: &File) -> std::io::Result<()> {
    rustix::fs::syncfs(f).map_err(std::io::Error::from)
}

/// Batches are taken on Linux only ([`Batch::takes`]).
#[cfg(not(target_os = "linux"))]
fn sync_filesystem(_: &File) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "no syncfs on this system",
    ))
}
