//! The engine's one error type: every I/O error names the path and the operation.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done ("read", "rename", "create folder", ...).
        op: &'static str,
        /// The file or folder it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is unusable; the message names file, line and key.
    #[error("{0}")]
    Config(String),
    /// A command was used wrongly (unknown location, unknown file, ...).
    #[error("{0}")]
    Usage(String),
    /// A SQLite operation failed.
    #[error("sqlite: cannot {op} {}: {source}", path.display())]
    Sqlite {
        /// What was being done.
        op: &'static str,
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// Another run holds the lock and did not release it in time.
    #[error("another run holds the lock {} ({holder}); waited {waited_secs} s", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as the holder wrote it.
        holder: String,
        /// How long this run waited.
        waited_secs: u64,
    },
    /// A request was refused to keep data safe (bad restore path, corrupt backup, ...).
    #[error("refused: {0}")]
    Refused(String),
    /// A file changed while it was being copied or written: nothing was replaced, and the
    /// next run syncs it (a warning, not a failure).
    #[error("refused: {0}")]
    Changed(String),
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path` while doing `op`.
    pub fn io(op: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A SQLite error on the database at `path` while doing `op`.
    pub fn sqlite(op: &'static str, path: impl AsRef<Path>, source: rusqlite::Error) -> Self {
        Error::Sqlite {
            op,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// The CLI exit code for this error (SPEC §3): 2 for usage and configuration, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Attaches a path and an operation to an `io::Result`.
pub trait IoContext<T> {
    /// Maps the error to [`Error::Io`] naming `op` and `path`.
    fn ctx(self, op: &'static str, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}
