//! The per-machine sync state in `<home>/.metasync/state.db`: for every (file, location) the
//! version this machine last saw there after a successful sync, the last agreed version of
//! every file, the scan cache, unresolved conflicts, location identities and run history.

use crate::error::{Error, Result};
use crate::report::{ConflictReport, RunSummary};
use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use crate::model::{Agreed, Recorded};

fn recorded_from_column(hash: Option<String>) -> Recorded {
    hash.map(Recorded::Present).unwrap_or(Recorded::Absent)
}

/// What the scan cache knows of one file in one location.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheEntry {
    /// The stat signature the hash was computed for.
    pub signature: String,
    /// When the entry was recorded (ns since the epoch); the racy-clean rule compares against it.
    pub scanned_ns: i64,
    /// The version hash.
    pub hash: String,
    /// What kind of file it was.
    pub kind: crate::model::Kind,
    /// Kind-specific facts as JSON (database counts and integrity).
    pub extra: String,
}

mod commit;
mod read;
mod schema;
mod stored;

pub use commit::Changes;

/// What the archive knows per file, keyed by the file's relative path. The keys are the
/// user's own file names read from the archive, not input an attacker picks: a fast hash
/// (FxHash) is safe here and about five times cheaper than SipHash per lookup.
pub type FileMap<V> = HashMap<String, V, rustc_hash::FxBuildHasher>;

/// What [`Archive::known_of`] reads: records, agreed versions, and a scan cache per location.
pub type KnownOf = (
    FileMap<Vec<(String, Recorded)>>,
    FileMap<Agreed>,
    Vec<FileMap<CacheEntry>>,
);

/// WAL size above which a commit checkpoints the archive and truncates its WAL (64 pages).
///
/// Every run is a new process, and the first connection of a process rebuilds the WAL index
/// by reading and checksumming every frame in the WAL. SQLite's automatic checkpoint does
/// not bound that here: the WAL restarts from its start only when a later write of the same
/// connection finds it fully checkpointed, and a run writes once. So the WAL of a pair
/// synced every 5 minutes grew by ~2 pages a run, without end (4 MB after a benchmark: 2 ms
/// of a 5 ms no-op). A no-op now pays a checkpoint (3 fsyncs) about one run in 30.
const WAL_TRIM_BYTES: u64 = 64 * 4096;

/// How long a statement waits for another connection's lock before it fails.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// An open archive.
pub struct Archive {
    conn: Connection,
    path: PathBuf,
}

impl Archive {
    /// Opens (creating if needed) `<home>/.metasync/state.db`.
    pub fn open(home: &Path) -> Result<Archive> {
        let dir = home.join(crate::names::STATE_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create folder", &dir, e))?;
        let path = dir.join("state.db");
        let conn = Connection::open(&path).map_err(|e| Error::sqlite("open archive", &path, e))?;
        let a = Archive { conn, path };
        a.conn
            .busy_timeout(BUSY_TIMEOUT)
            .and_then(|_| a.conn.pragma_update(None, "journal_mode", "WAL"))
            .and_then(|_| a.conn.pragma_update(None, "synchronous", "NORMAL"))
            // No checkpoint when a run closes the archive: a no-op run then writes its small
            // history row to the WAL without any fsync, and the WAL is checkpointed when it
            // grows (SQLite's automatic checkpoint). A commit lost to a power cut only makes
            // the next run compare against the run before: what the files hold decides.
            .and_then(|_| {
                a.conn
                    .set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
                    .map(|_| ())
            })
            .map_err(|e| a.err("initialise archive", e))?;
        a.migrate()?;
        Ok(a)
    }

    /// Opens an existing archive read-only; `None` when there is none yet.
    pub fn open_existing(home: &Path) -> Result<Option<Archive>> {
        let path = home.join(crate::names::STATE_DIR).join("state.db");
        if !path.exists() {
            return Ok(None);
        }
        Archive::open(home).map(Some)
    }

    fn err(&self, op: &'static str, e: rusqlite::Error) -> Error {
        Error::sqlite(op, &self.path, e)
    }

    /// This machine's id (made once, random), used in temp-file names.
    pub fn machine_id(&self) -> Result<String> {
        if let Some(id) = self.meta("machine_id")? {
            return Ok(id);
        }
        let id = crate::ids::random_hex(8);
        self.set_meta("machine_id", &id)?;
        Ok(id)
    }

    fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err("read archive meta", e))
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)",
                [key, value],
            )
            .map(|_| ())
            .map_err(|e| self.err("write archive meta", e))
    }

    /// A second, read-only connection to the same archive, for reading on another thread
    /// while this one is busy (the archive is in WAL mode: readers never wait for it).
    pub fn reader(&self) -> Result<Archive> {
        let conn = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| self.err("open archive for reading", e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| self.err("open archive for reading", e))?;
        Ok(Archive {
            conn,
            path: self.path.clone(),
        })
    }

    /// Checkpoints the archive and empties its WAL once it is above [`WAL_TRIM_BYTES`].
    /// Never waits: when another connection is reading, it is left for a later commit. A
    /// failure here loses nothing (the WAL stays as it was), so it is only logged.
    fn trim_wal(&self) {
        let wal = self.wal_path();
        match std::fs::metadata(&wal) {
            Ok(m) if m.len() > WAL_TRIM_BYTES => {}
            _ => return,
        }
        let checkpoint = || -> rusqlite::Result<i64> {
            self.conn.busy_timeout(std::time::Duration::ZERO)?;
            let busy = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0));
            self.conn.busy_timeout(BUSY_TIMEOUT)?;
            busy
        };
        match checkpoint() {
            Ok(0) => {}
            Ok(_) => {
                tracing::debug!(target: "metasync", "{}: checkpoint deferred: the archive is being read", wal.display())
            }
            Err(e) => {
                tracing::warn!(target: "metasync", "{}: checkpoint failed: {e}", wal.display())
            }
        }
    }

    /// The archive's write-ahead log, beside it.
    fn wal_path(&self) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push("-wal");
        PathBuf::from(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables as Metasync made them before schema version 1.
    const OLD_SCHEMA: &str = "
        CREATE TABLE records(file TEXT NOT NULL, location TEXT NOT NULL, hash TEXT,
            PRIMARY KEY(file, location));
        CREATE TABLE scan_cache(location TEXT NOT NULL, file TEXT NOT NULL,
            signature TEXT NOT NULL, scanned_ns INTEGER NOT NULL, hash TEXT NOT NULL,
            kind TEXT NOT NULL, extra TEXT NOT NULL, PRIMARY KEY(location, file));
        CREATE TABLE agreed(file TEXT PRIMARY KEY, hash TEXT, entities INTEGER,
            conversations INTEGER, updated TEXT NOT NULL);
        INSERT INTO records VALUES ('a.yaml', 'local', 'h1'), ('a.yaml', 'icloud', NULL);
        INSERT INTO scan_cache VALUES ('local', 'a.yaml', '1:2:3:4:-', 5, 'h1', 'plain', '{}'),
            ('icloud', 'db', '9:9:9:9:-', 6, 'h2', 'sqlite', '{\"entities\":3}');
        INSERT INTO agreed VALUES ('a.yaml', 'h1', NULL, NULL, 'now');
    ";

    fn old_archive() -> tempfile::TempDir {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join(crate::names::STATE_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        let c = Connection::open(dir.join("state.db")).unwrap();
        c.execute_batch(OLD_SCHEMA).unwrap();
        home
    }

    #[test]
    fn an_old_archive_is_upgraded_with_every_row_kept() {
        let home = old_archive();
        let a = Archive::open(home.path()).unwrap();
        let version: i64 = a
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, schema::SCHEMA_VERSION);
        for table in ["records", "scan_cache"] {
            let sql: String = a
                .conn
                .query_row(
                    "SELECT sql FROM sqlite_schema WHERE name = ?1",
                    [table],
                    |r| r.get(0),
                )
                .unwrap();
            assert!(sql.ends_with("WITHOUT ROWID"), "{table}: {sql}");
        }
        let records = a.records().unwrap();
        let mut got = records["a.yaml"].clone();
        got.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            got,
            vec![
                ("icloud".to_string(), Recorded::Absent),
                ("local".to_string(), Recorded::Present("h1".into())),
            ]
        );
        let local = a.cache("local").unwrap();
        assert_eq!(local["a.yaml"].hash, "h1");
        assert_eq!(local["a.yaml"].kind, crate::model::Kind::Plain);
        assert_eq!(
            local["a.yaml"].extra, "",
            "no facts string for a plain file"
        );
        let icloud = a.cache("icloud").unwrap();
        assert_eq!(icloud["db"].kind, crate::model::Kind::Sqlite);
        assert_eq!(icloud["db"].extra, "{\"entities\":3}");
        assert_eq!(
            a.agreed().unwrap()["a.yaml"].version,
            Recorded::Present("h1".into())
        );
        drop(a);
        // Opening again changes nothing.
        let again = Archive::open(home.path()).unwrap();
        assert_eq!(again.records().unwrap().len(), 1);
        assert_eq!(again.cache("local").unwrap().len(), 1);
    }

    #[test]
    fn a_reader_sees_what_the_writer_committed() {
        let home = tempfile::tempdir().unwrap();
        let a = Archive::open(home.path()).unwrap();
        let id = a.machine_id().unwrap();
        let r = a.reader().unwrap();
        assert_eq!(r.meta("machine_id").unwrap(), Some(id));
        assert!(r.set_meta("x", "y").is_err(), "a reader cannot write");
    }

    fn run_only(n: usize) -> Changes {
        Changes {
            run: Some(RunSummary {
                id: 0,
                command: "sync".into(),
                started: format!("s{n}"),
                finished: "f".into(),
                result: crate::model::RunResult::Ok,
                written: 0,
                summary: "x".repeat(200),
            }),
            ..Changes::default()
        }
    }

    /// Each run opens the archive anew and writes once: the WAL is still checkpointed and
    /// emptied as it grows (SQLite alone let it grow without end in that pattern), and a
    /// reader holding a snapshot open only defers that.
    #[test]
    fn the_write_ahead_log_stays_small_across_runs_that_write_once() {
        let home = tempfile::tempdir().unwrap();
        let wal = home.path().join(".metasync/state.db-wal");
        let mut most = 0;
        for n in 0..300 {
            Archive::open(home.path())
                .unwrap()
                .commit(&run_only(n))
                .unwrap();
            most = most.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
        let a = Archive::open(home.path()).unwrap();
        assert_eq!(a.history(1000).unwrap().len(), 300, "every run kept");
        assert!(
            most <= WAL_TRIM_BYTES + 16 * 4096,
            "the WAL grew to {most} bytes"
        );

        // A reader in a read transaction: the checkpoint is deferred, the commit succeeds.
        let mut w = Archive::open(home.path()).unwrap();
        let r = w.reader().unwrap();
        r.conn
            .execute_batch("BEGIN; SELECT count(*) FROM runs;")
            .unwrap();
        let before = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        let mut n = 300;
        while std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) <= WAL_TRIM_BYTES {
            w.commit(&run_only(n)).unwrap();
            n += 1;
        }
        w.commit(&run_only(n)).unwrap();
        assert!(std::fs::metadata(&wal).unwrap().len() > before.max(WAL_TRIM_BYTES));
        r.conn.execute_batch("COMMIT").unwrap();
        w.commit(&run_only(n + 1)).unwrap();
        assert_eq!(
            std::fs::metadata(&wal).unwrap().len(),
            0,
            "emptied once free"
        );
        assert_eq!(w.history(2000).unwrap().len(), n + 2);
    }

    fn steady_changes() -> Changes {
        Changes {
            steady: Some(("k".into(), vec![1, 2, 3])),
            ..Changes::default()
        }
    }

    #[test]
    fn any_write_to_what_runs_read_drops_the_steady_state() {
        let home = tempfile::tempdir().unwrap();
        let mut a = Archive::open(home.path()).unwrap();
        a.commit(&steady_changes()).unwrap();
        assert_eq!(a.steady().unwrap(), Some(("k".into(), vec![1, 2, 3])));
        // A commit of only a run's history keeps it.
        a.commit(&run_only(0)).unwrap();
        assert!(a.steady().unwrap().is_some());
        // Every insert, update and delete, by any writer (plain SQL here, as an older
        // Metasync without the steady state would write), drops it.
        let writes = [
            "INSERT INTO records(file, location, hash) VALUES ('f', 'local', 'h')",
            "UPDATE records SET hash = 'h2'",
            "DELETE FROM records",
            "INSERT INTO agreed(file, hash, updated) VALUES ('f', 'h', 'now')",
            "UPDATE agreed SET hash = 'h2'",
            "DELETE FROM agreed",
            "INSERT INTO scan_cache VALUES ('local', 'f', 's', 1, 'h', 'plain', '')",
            "UPDATE scan_cache SET scanned_ns = 2",
            "DELETE FROM scan_cache",
            "INSERT INTO conflicts(file, detected, reason, candidates) VALUES ('f', 'd', 'r', '[]')",
            "UPDATE conflicts SET reason = 'r2'",
            "DELETE FROM conflicts",
            "INSERT INTO location_ids VALUES ('r', 'id')",
            "UPDATE location_ids SET id = 'id2'",
            "DELETE FROM location_ids",
        ];
        for sql in writes {
            a.commit(&steady_changes()).unwrap();
            a.conn.execute_batch(sql).unwrap();
            assert_eq!(a.steady().unwrap(), None, "{sql}");
        }
        // Written in the same commit as other changes, it survives them (it is written last).
        let mut both = steady_changes();
        both.records
            .push((("f".into(), "local".into()), Recorded::Present("h".into())));
        a.commit(&both).unwrap();
        assert!(a.steady().unwrap().is_some());
    }

    #[test]
    fn a_version_1_archive_gains_the_steady_state_and_keeps_its_rows() {
        let home = tempfile::tempdir().unwrap();
        let mut a = Archive::open(home.path()).unwrap();
        let mut c = Changes::default();
        c.records
            .push((("f".into(), "local".into()), Recorded::Present("h".into())));
        a.commit(&c).unwrap();
        a.conn
            .execute_batch(
                "DROP TABLE steady; PRAGMA user_version = 1;
                 DROP TRIGGER steady_after_records_INSERT;",
            )
            .unwrap();
        drop(a);
        let mut a = Archive::open(home.path()).unwrap();
        assert_eq!(a.records().unwrap().len(), 1);
        a.commit(&steady_changes()).unwrap();
        a.conn
            .execute_batch("INSERT INTO records VALUES ('g', 'local', 'h')")
            .unwrap();
        assert_eq!(a.steady().unwrap(), None, "the trigger is back");
    }
}
