//! One run at a time per home: an exclusive lock on `<home>/.metasync/lock`, shared by the
//! CLI and the app. A second run waits a bounded time, then says who holds it.

use crate::error::{Error, IoContext, Result};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct RunLock {
    file: File,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// The lock file of a home.
pub fn lock_path(home: &Path) -> PathBuf {
    home.join(crate::names::STATE_DIR).join("lock")
}

/// Takes the lock, waiting up to `wait`. `holder` says who we are, for whoever waits on us.
pub fn acquire(home: &Path, holder: &str, wait: Duration) -> Result<RunLock> {
    let path = lock_path(home);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ctx("create folder", dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .ctx("open lock file", &path)?;
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                if start.elapsed() >= wait {
                    let mut who = String::new();
                    let _ = file.read_to_string(&mut who);
                    let who = if who.trim().is_empty() {
                        "unknown holder".to_string()
                    } else {
                        who.trim().to_string()
                    };
                    return Err(Error::Locked {
                        path,
                        holder: who,
                        waited_secs: start.elapsed().as_secs(),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
        }
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "pid {} ({holder})", std::process::id());
    let _ = file.flush();
    Ok(RunLock { file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_waits_then_names_the_first() {
        let d = tempfile::tempdir().unwrap();
        let first = acquire(d.path(), "metasync sync", Duration::from_secs(1)).unwrap();
        let err = acquire(d.path(), "metasync push", Duration::from_millis(200)).unwrap_err();
        assert!(err.to_string().contains("metasync sync"), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        acquire(d.path(), "metasync push", Duration::from_millis(200)).unwrap();
    }
}
