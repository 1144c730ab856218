//! Batched durability for many small new files (Linux): each temp file is written and checked
//! as usual but not fsynced on its own; when the batch is full, or before the archive commit,
//! one `syncfs(2)` per file system makes every temp of the batch durable, the temps are renamed
//! into place (never over a file that appeared meanwhile: `RENAME_NOREPLACE`), and one more
//! `syncfs(2)` makes the renames durable. Only then may the archive record them (SPEC §5): a
//! crash at any point leaves each target absent or complete, and at worst a temp file that the
//! next run removes. A failed sync fails the whole batch (nothing of it is recorded; the next
//! run writes those files again).
//!
//! The `syncfs` descriptor of a file system is opened before the first temp of a batch is
//! written there, so that a write-back error of any of them is reported by its `syncfs`.
//! Batching applies to new plain files up to [`BATCH_FILE_MAX`]; everything else (bigger files,
//! replacements of existing files, databases, other systems) takes the per-file path.

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

/// A temp file written and checked, waiting for its batch.
struct Pending {
    temp: Temp,
    dest: PathBuf,
    tag: Tag,
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

    /// Adds a written and checked temp of `size` bytes for `dest`.
    pub fn push(&mut self, temp: Temp, dest: &Path, size: u64, tag: Tag) {
        self.bytes += size;
        self.pending.push(Pending {
            temp,
            dest: dest.to_path_buf(),
            tag,
        });
    }

    /// Whether the batch should be settled now.
    pub fn is_full(&self) -> bool {
        self.pending.len() >= BATCH_FILES || self.bytes >= BATCH_BYTES
    }

    /// Makes the temps durable, puts them in place, and makes that durable (module doc).
    /// The failpoint `temps_durable` is between the first two.
    pub fn settle(&mut self) -> Vec<Settled> {
        let pending = std::mem::take(&mut self.pending);
        self.bytes = 0;
        if pending.is_empty() {
            return Vec::new();
        }
        let syncers = std::mem::take(&mut self.syncers);
        if let Err(e) = sync_all(&syncers) {
            return pending.into_iter().map(|p| failed(p, &e)).collect();
        }
        crate::failpoint::hit("temps_durable");
        let mut placed = Vec::with_capacity(pending.len());
        for p in pending {
            let result = p.temp.put_in_place_new(&p.dest);
            placed.push(Settled {
                tag: p.tag,
                dest: p.dest,
                result,
            });
        }
        if let Err(e) = sync_all(&syncers) {
            for s in placed.iter_mut().filter(|s| s.result.is_ok()) {
                s.result = Err(copy_error(&e));
            }
        }
        placed
    }
}

fn failed(p: Pending, e: &Error) -> Settled {
    Settled {
        tag: p.tag,
        dest: p.dest,
        result: Err(copy_error(e)),
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
