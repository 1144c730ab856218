//! The one way a file is put in place (SPEC §5): a temp file in the target's own folder,
//! written, fsynced and verified by the caller, given its modification time, renamed over the
//! target, and the folder fsynced (a run's copies of plain files: once per folder, before the
//! archive commit records any of them, [`crate::apply::Copier`]). A reader sees the old file or
//! the new one, never a torn
//! one; a crash at any point leaves one of them (and at worst a temp file, which the next run
//! removes). Every whole-file write of Metasync goes through here: copies of plain files,
//! databases put into remotes, row-merge bases, location markers.

use crate::error::{Error, IoContext, Result};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A temp file beside its target that removes itself unless it is put in place.
pub struct Temp {
    path: PathBuf,
    kept: bool,
}

impl Temp {
    /// A new temp name for `dest` (in its folder, created if missing), written by `machine`.
    pub fn beside(dest: &Path, machine: &str) -> Result<Temp> {
        let dir = folder_of(dest)?;
        std::fs::create_dir_all(dir).ctx("create folder", dir)?;
        Temp::in_folder(dest, machine)
    }

    /// [`Temp::beside`] where the folder of `dest` is known to exist.
    pub fn in_folder(dest: &Path, machine: &str) -> Result<Temp> {
        let dir = folder_of(dest)?;
        let name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::Usage(format!("not a usable file name: {}", dest.display())))?;
        Ok(Temp {
            path: dir.join(crate::names::temp_name(
                name,
                machine,
                &crate::ids::random_hex(8),
            )),
            kept: false,
        })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates it, empty (it must not exist).
    pub fn create(&self) -> Result<File> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.path)
            .ctx("create temp file", &self.path)
    }

    /// [`Temp::create`] in its folder held open as `folder` (the name looked up there, not
    /// along the whole path).
    pub fn create_in(&self, folder: &Folder) -> Result<File> {
        folder
            .create_new(self.name())
            .ctx("create temp file", &self.path)
    }

    /// Its name in its folder.
    fn name(&self) -> &std::ffi::OsStr {
        self.path.file_name().unwrap_or_default()
    }

    /// Renames the temp file (written, fsynced and verified by the caller) over the synced
    /// file `dest`, after giving it `mtime`, and makes the rename durable. The crash tests'
    /// failpoints `before_rename` and `after_rename` are here.
    pub fn put_in_place(self, dest: &Path, mtime: Option<std::time::SystemTime>) -> Result<()> {
        self.rename(dest, mtime, true, true)
    }

    /// [`Temp::put_in_place`] without the folder's fsync: the caller fsyncs the folder
    /// (once for all the files it put there, [`crate::apply::Copier::sync_folders`]) before
    /// anything records the file as written.
    pub fn put_in_place_unsynced(
        self,
        dest: &Path,
        mtime: Option<std::time::SystemTime>,
    ) -> Result<()> {
        self.rename(dest, mtime, true, false)
    }

    /// Puts the temp file (written, made durable and verified by the caller, with its
    /// modification time) in place as the new file `dest`, never over a file that appeared
    /// there since the scan (that is a race: synced next run). The folder is not fsynced: the
    /// caller does ([`crate::apply::batch`]). The failpoints `before_rename` and
    /// `after_rename` are here too.
    pub fn put_in_place_new(self, dest: &Path) -> Result<()> {
        self.place_new(dest, None)
    }

    /// [`Temp::put_in_place_new`] with the folder of `dest` (and of the temp) held open as
    /// `folder`: both names are looked up there.
    pub fn put_in_place_new_in(self, folder: &Folder, dest: &Path) -> Result<()> {
        self.place_new(dest, Some(folder))
    }

    fn place_new(mut self, dest: &Path, folder: Option<&Folder>) -> Result<()> {
        crate::failpoint::hit("before_rename");
        let renamed = match (folder, dest.file_name()) {
            (Some(f), Some(name)) => f.rename_new(self.name(), name),
            _ => rename_new(&self.path, dest),
        };
        match renamed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Changed(format!(
                    "{} appeared while being synced; it will be synced next run",
                    dest.display()
                )))
            }
            Err(e) => return Err(Error::io("rename into place", dest, e)),
        }
        self.kept = true;
        crate::failpoint::hit("after_rename");
        Ok(())
    }

    /// [`Temp::put_in_place`] for Metasync's own files (markers, row-merge bases), without
    /// the synced files' failpoints.
    pub fn put_own_file_in_place(self, dest: &Path) -> Result<()> {
        self.rename(dest, None, false, true)
    }

    fn rename(
        mut self,
        dest: &Path,
        mtime: Option<std::time::SystemTime>,
        failpoints: bool,
        sync: bool,
    ) -> Result<()> {
        let hit = |name| {
            if failpoints {
                crate::failpoint::hit(name)
            }
        };
        if let Some(t) = mtime {
            File::options()
                .write(true)
                .open(&self.path)
                .and_then(|f| f.set_modified(t))
                .ctx("set modification time", &self.path)?;
        }
        hit("before_rename");
        std::fs::rename(&self.path, dest).ctx("rename into place", dest)?;
        self.kept = true;
        hit("after_rename");
        if sync {
            sync_folder(dest);
        }
        Ok(())
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A folder held open while files are made and renamed in it: each name is looked up in the
/// folder, not along its whole path again.
pub struct Folder {
    path: PathBuf,
    #[cfg(target_os = "linux")]
    fd: std::os::fd::OwnedFd,
}

impl Folder {
    /// Opens the folder `path`.
    pub fn open(path: &Path) -> Result<Folder> {
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::{openat, Mode, OFlags, CWD};
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            let fd = openat(CWD, path, flags, Mode::empty())
                .map_err(std::io::Error::from)
                .ctx("open folder", path)?;
            Ok(Folder {
                path: path.to_path_buf(),
                fd,
            })
        }
        #[cfg(not(target_os = "linux"))]
        Ok(Folder {
            path: path.to_path_buf(),
        })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the new file `name` in it, empty, for writing (it must not exist).
    fn create_new(&self, name: &std::ffi::OsStr) -> std::io::Result<File> {
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::{openat, Mode, OFlags};
            let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
            let fd = openat(&self.fd, name, flags, Mode::from_raw_mode(0o666))?;
            Ok(File::from(fd))
        }
        #[cfg(not(target_os = "linux"))]
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.path.join(name))
    }

    /// Renames `from` to `to`, both in it, unless `to` exists.
    fn rename_new(&self, from: &std::ffi::OsStr, to: &std::ffi::OsStr) -> std::io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::{renameat_with, RenameFlags};
            renameat_with(&self.fd, from, &self.fd, to, RenameFlags::NOREPLACE)
                .map_err(std::io::Error::from)
        }
        #[cfg(not(target_os = "linux"))]
        rename_new(&self.path.join(from), &self.path.join(to))
    }
}

/// Writes `bytes` as the new content of Metasync's own file `dest`, atomically and durably.
pub fn write_bytes(dest: &Path, bytes: &[u8], machine: &str) -> Result<()> {
    let temp = Temp::beside(dest, machine)?;
    let mut f = temp.create()?;
    f.write_all(bytes).ctx("write temp file", temp.path())?;
    f.sync_all().ctx("fsync temp file", temp.path())?;
    drop(f);
    temp.put_own_file_in_place(dest)
}

/// Fsyncs the folder holding `path`, so that a rename or a new name in it is durable; a
/// folder that cannot be synced is not worth failing the write for.
pub fn sync_folder(path: &Path) {
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
}

/// Fsyncs the folder `dir` (see [`sync_folder`]).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Renames `from` to `to` unless `to` exists.
#[cfg(target_os = "linux")]
fn rename_new(from: &Path, to: &Path) -> std::io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE).map_err(std::io::Error::from)
}

/// Renames `from` to `to` unless `to` exists (a link then an unlink where there is no
/// `RENAME_NOREPLACE`; batches are taken on Linux only).
#[cfg(not(target_os = "linux"))]
fn rename_new(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

fn folder_of(dest: &Path) -> Result<&Path> {
    dest.parent()
        .ok_or_else(|| Error::Usage(format!("no folder for {}", dest.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temp_that_is_not_put_in_place_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("sub/f.txt");
        {
            let t = Temp::beside(&dest, "m1").unwrap();
            t.create().unwrap().write_all(b"x").unwrap();
            assert!(t.path().exists());
        }
        assert_eq!(std::fs::read_dir(d.path().join("sub")).unwrap().count(), 0);
        write_bytes(&dest, b"new", "m1").unwrap();
        write_bytes(&dest, b"newer", "m1").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"newer");
        assert_eq!(std::fs::read_dir(d.path().join("sub")).unwrap().count(), 1);
    }
}
