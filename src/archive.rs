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

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records(file TEXT NOT NULL, location TEXT NOT NULL, hash TEXT,
    PRIMARY KEY(file, location)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agreed(file TEXT PRIMARY KEY, hash TEXT, entities INTEGER,
    conversations INTEGER, updated TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scan_cache(location TEXT NOT NULL, file TEXT NOT NULL,
    signature TEXT NOT NULL, scanned_ns INTEGER NOT NULL, hash TEXT NOT NULL, kind TEXT NOT NULL,
    extra TEXT NOT NULL, PRIMARY KEY(location, file)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conflicts(file TEXT PRIMARY KEY, detected TEXT NOT NULL,
    reason TEXT NOT NULL, candidates TEXT NOT NULL, rows TEXT NOT NULL DEFAULT '[]');
CREATE TABLE IF NOT EXISTS row_conflicts(id INTEGER PRIMARY KEY AUTOINCREMENT, settled TEXT NOT NULL,
    conflict TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS location_ids(location TEXT PRIMARY KEY, id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs(id INTEGER PRIMARY KEY AUTOINCREMENT, command TEXT NOT NULL,
    started TEXT NOT NULL, finished TEXT NOT NULL, result TEXT NOT NULL, written INTEGER NOT NULL,
    summary TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS steady(id INTEGER PRIMARY KEY CHECK (id = 1), key TEXT NOT NULL,
    body BLOB NOT NULL);
";

/// The tables whose every change drops the steady state (crate::steady): what a run's
/// decisions read from the archive. Triggers do it, so no writer can forget to.
const STEADY_DEPENDS_ON: [&str; 5] = [
    "records",
    "agreed",
    "scan_cache",
    "conflicts",
    "location_ids",
];

/// The whole schema: the tables, and the triggers that keep the steady state honest.
fn schema() -> String {
    let mut sql = SCHEMA.to_string();
    for table in STEADY_DEPENDS_ON {
        for event in ["INSERT", "UPDATE", "DELETE"] {
            sql.push_str(&format!(
                "CREATE TRIGGER IF NOT EXISTS steady_after_{table}_{event} AFTER {event} ON {table} \
                 BEGIN DELETE FROM steady; END;\n",
            ));
        }
    }
    sql
}

/// Version 1 keeps `records` and `scan_cache` as WITHOUT ROWID tables, clustered by their
/// keys: reading a location's scan cache is one range of one b-tree, not an index walk
/// plus a row lookup per file. Version 2 adds the steady state and its triggers.
const SCHEMA_VERSION: i64 = 2;

/// Brings an archive made by an older Metasync to [`SCHEMA_VERSION`], keeping every row.
const MIGRATE_TO_1: &str = "
CREATE TABLE records_v1(file TEXT NOT NULL, location TEXT NOT NULL, hash TEXT,
    PRIMARY KEY(file, location)) WITHOUT ROWID;
INSERT INTO records_v1 SELECT file, location, hash FROM records;
DROP TABLE records;
ALTER TABLE records_v1 RENAME TO records;
CREATE TABLE scan_cache_v1(location TEXT NOT NULL, file TEXT NOT NULL,
    signature TEXT NOT NULL, scanned_ns INTEGER NOT NULL, hash TEXT NOT NULL, kind TEXT NOT NULL,
    extra TEXT NOT NULL, PRIMARY KEY(location, file)) WITHOUT ROWID;
INSERT INTO scan_cache_v1
    SELECT location, file, signature, scanned_ns, hash, kind, extra FROM scan_cache;
DROP TABLE scan_cache;
ALTER TABLE scan_cache_v1 RENAME TO scan_cache;
";

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

    /// Creates the tables of a new archive, or brings an old one up to date, in one
    /// transaction: an interrupted upgrade leaves the old archive as it was.
    fn migrate(&self) -> Result<()> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.err("read archive version", e))?;
        if version >= SCHEMA_VERSION {
            return Ok(());
        }
        let had_tables: bool = self
            .conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM sqlite_schema WHERE name = 'scan_cache')",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err("read archive version", e))?;
        // Version 1 → 2 only adds tables and triggers, which the schema creates when missing.
        let steps = if had_tables && version < 1 {
            format!("{MIGRATE_TO_1}{}", schema())
        } else {
            schema()
        };
        self.conn
            .execute_batch(&format!(
                "BEGIN IMMEDIATE; {steps} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(|e| {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.err("upgrade archive", e)
            })
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

    /// Every file → (location, recorded version) for each location it is recorded in.
    pub fn records(&self) -> Result<FileMap<Vec<(String, Recorded)>>> {
        // In key order, a file's rows come together: each file is hashed into the map once.
        let mut stmt = self
            .conn
            .prepare("SELECT file, location, hash FROM records ORDER BY file, location")
            .map_err(|e| self.err("read records", e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err("read records", e))?;
        let mut out: FileMap<Vec<(String, Recorded)>> = FileMap::default();
        let mut current: Option<(String, Vec<(String, Recorded)>)> = None;
        while let Some(r) = rows.next().map_err(|e| self.err("read records", e))? {
            let read = || -> rusqlite::Result<(&str, String, Recorded)> {
                Ok((
                    r.get_ref(0)?.as_str()?,
                    r.get(1)?,
                    recorded_from_column(r.get(2)?),
                ))
            };
            let (file, location, rec) = read().map_err(|e| self.err("read records", e))?;
            match &mut current {
                Some((f, list)) if f == file => list.push((location, rec)),
                _ => {
                    if let Some((f, list)) = current.take() {
                        out.insert(f, list);
                    }
                    current = Some((file.to_string(), vec![(location, rec)]));
                }
            }
        }
        if let Some((f, list)) = current {
            out.insert(f, list);
        }
        Ok(out)
    }

    /// Every file this archive knows (recorded anywhere or agreed).
    pub fn known_files(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT file FROM records UNION SELECT file FROM agreed")
            .map_err(|e| self.err("read known files", e))?;
        let rows = stmt
            .query_map([], |r| r.get(0))
            .map_err(|e| self.err("read known files", e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err("read known files", e))
    }

    /// Every file → last agreed version.
    pub fn agreed(&self) -> Result<FileMap<Agreed>> {
        let mut stmt = self
            .conn
            .prepare("SELECT file, hash, entities, conversations FROM agreed")
            .map_err(|e| self.err("read agreed versions", e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Agreed {
                        version: recorded_from_column(r.get(1)?),
                        entities: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                        conversations: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                    },
                ))
            })
            .map_err(|e| self.err("read agreed versions", e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err("read agreed versions", e))
    }

    /// The scan cache of one location.
    pub fn cache(&self, location: &str) -> Result<FileMap<CacheEntry>> {
        let mut stmt = self
            .conn
            .prepare("SELECT file, signature, scanned_ns, hash, kind, extra FROM scan_cache WHERE location = ?1")
            .map_err(|e| self.err("read scan cache", e))?;
        let rows = stmt
            .query_map([location], |r| {
                Ok((r.get::<_, String>(0)?, cache_entry_at(r, 1)?))
            })
            .map_err(|e| self.err("read scan cache", e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err("read scan cache", e))
    }

    /// [`Archive::records`], [`Archive::agreed`] and [`Archive::cache`] of every location, for
    /// `files` only: one indexed lookup per file, for a run that plans a few files of many.
    pub fn known_of(&self, files: &[String], locations: &[&str]) -> Result<KnownOf> {
        let err = |e| self.err("read what the archive knows of the changed files", e);
        let mut records: FileMap<Vec<(String, Recorded)>> = FileMap::default();
        let mut agreed: FileMap<Agreed> = FileMap::default();
        let mut caches: Vec<FileMap<CacheEntry>> = vec![FileMap::default(); locations.len()];
        let mut rec = self
            .conn
            .prepare_cached("SELECT location, hash FROM records WHERE file = ?1 ORDER BY location")
            .map_err(err)?;
        let mut agr = self
            .conn
            .prepare_cached("SELECT hash, entities, conversations FROM agreed WHERE file = ?1")
            .map_err(err)?;
        let mut cac = self
            .conn
            .prepare_cached(
                "SELECT signature, scanned_ns, hash, kind, extra FROM scan_cache
                 WHERE location = ?1 AND file = ?2",
            )
            .map_err(err)?;
        for file in files {
            let list: Vec<(String, Recorded)> = rec
                .query_map([file], |r| Ok((r.get(0)?, recorded_from_column(r.get(1)?))))
                .map_err(err)?
                .collect::<rusqlite::Result<_>>()
                .map_err(err)?;
            if !list.is_empty() {
                records.insert(file.clone(), list);
            }
            if let Some(a) = agr
                .query_row([file], |r| {
                    Ok(Agreed {
                        version: recorded_from_column(r.get(0)?),
                        entities: r.get::<_, Option<i64>>(1)?.map(|v| v as u64),
                        conversations: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                    })
                })
                .optional()
                .map_err(err)?
            {
                agreed.insert(file.clone(), a);
            }
            for (location, cache) in locations.iter().zip(caches.iter_mut()) {
                if let Some(e) = cac
                    .query_row(params![location, file], |r| cache_entry_at(r, 0))
                    .optional()
                    .map_err(err)?
                {
                    cache.insert(file.clone(), e);
                }
            }
        }
        Ok((records, agreed, caches))
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

    /// The stored steady state: its key and body (see crate::steady), if any.
    pub fn steady(&self) -> Result<Option<(String, Vec<u8>)>> {
        self.conn
            .query_row("SELECT key, body FROM steady WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(|e| self.err("read steady state", e))
    }

    /// Known location ids (from their markers).
    pub fn location_ids(&self) -> Result<HashMap<String, String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT location, id FROM location_ids")
            .map_err(|e| self.err("read location ids", e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err("read location ids", e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err("read location ids", e))
    }

    /// Unresolved conflicts, by file.
    pub fn conflicts(&self) -> Result<Vec<ConflictReport>> {
        let mut stmt = self
            .conn
            .prepare("SELECT file, detected, reason, candidates, rows FROM conflicts ORDER BY file")
            .map_err(|e| self.err("read conflicts", e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(|e| self.err("read conflicts", e))?;
        let mut out = Vec::new();
        for row in rows {
            let (file, detected, reason, candidates, row_list) =
                row.map_err(|e| self.err("read conflicts", e))?;
            let candidates = serde_json::from_str(&candidates).unwrap_or_default();
            let rows = serde_json::from_str(&row_list).unwrap_or_default();
            out.push(ConflictReport {
                file,
                detected,
                reason,
                candidates,
                rows,
            });
        }
        Ok(out)
    }

    /// The most recent row conflicts settled by a strategy, newest first.
    pub fn row_conflicts(&self, limit: usize) -> Result<Vec<crate::merge::RowConflict>> {
        let mut stmt = self
            .conn
            .prepare("SELECT conflict FROM row_conflicts ORDER BY id DESC LIMIT ?1")
            .map_err(|e| self.err("read row conflicts", e))?;
        let rows = stmt
            .query_map([limit as i64], |r| r.get::<_, String>(0))
            .map_err(|e| self.err("read row conflicts", e))?;
        let mut out = Vec::new();
        for row in rows {
            let text = row.map_err(|e| self.err("read row conflicts", e))?;
            if let Ok(rc) = serde_json::from_str(&text) {
                out.push(rc);
            }
        }
        Ok(out)
    }

    /// The most recent runs, newest first.
    pub fn history(&self, limit: usize) -> Result<Vec<RunSummary>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, command, started, finished, result, written, summary FROM runs
                 ORDER BY id DESC LIMIT ?1",
            )
            .map_err(|e| self.err("read history", e))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(RunSummary {
                    id: r.get(0)?,
                    command: r.get(1)?,
                    started: r.get(2)?,
                    finished: r.get(3)?,
                    result: r
                        .get::<_, String>(4)?
                        .parse()
                        .unwrap_or(crate::model::RunResult::Failed),
                    written: r.get::<_, i64>(5)? as u64,
                    summary: r.get(6)?,
                })
            })
            .map_err(|e| self.err("read history", e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err("read history", e))
    }

    /// Applies a batch of changes in one transaction.
    pub fn commit(&mut self, changes: &Changes) -> Result<()> {
        let path = self.path.clone();
        let err = |e| Error::sqlite("write archive", &path, e);
        let tx = self.conn.transaction().map_err(err)?;
        commit_versions(&tx, changes).map_err(err)?;
        commit_locations(&tx, changes).map_err(err)?;
        commit_conflicts(&tx, changes).map_err(err)?;
        commit_run(&tx, changes).map_err(err)?;
        tx.commit().map_err(err)?;
        self.trim_wal();
        Ok(())
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

/// A scan cache entry from a row whose columns, from `first` on, are signature, scanned_ns,
/// hash, kind and extra.
fn cache_entry_at(r: &rusqlite::Row, first: usize) -> rusqlite::Result<CacheEntry> {
    // Most entries are plain files without facts: no string is made for those.
    let extra = r.get_ref(first + 4)?.as_str()?;
    Ok(CacheEntry {
        signature: r.get(first)?,
        scanned_ns: r.get(first + 1)?,
        hash: r.get(first + 2)?,
        kind: crate::model::Kind::parse(r.get_ref(first + 3)?.as_str()?),
        extra: if extra == "{}" {
            String::new()
        } else {
            extra.to_string()
        },
    })
}

/// Changes to write to the archive at the end of a run, all at once.
#[derive(Debug, Default)]
pub struct Changes {
    /// RFC 3339 time of the commit.
    pub now: String,
    /// (file, location) → version now recorded.
    pub records: Vec<((String, String), Recorded)>,
    /// file → new agreed version.
    pub agreed: Vec<(String, Agreed)>,
    /// (location, file) → new cache entry, or `None` to drop it.
    pub cache: Vec<((String, String), Option<CacheEntry>)>,
    /// location → id now known, or `None` to forget it.
    pub location_ids: Vec<(String, Option<String>)>,
    /// Locations whose records and cache are forgotten (relink).
    pub forget_location: Vec<String>,
    /// file → conflict to record, or `None` to drop it.
    pub conflicts: Vec<(String, Option<ConflictReport>)>,
    /// Row conflicts settled by a strategy, to keep on record.
    pub row_conflicts: Vec<crate::merge::RowConflict>,
    /// The run to add to history.
    pub run: Option<RunSummary>,
    /// The steady state this run leaves (key, stored form; see crate::steady), written last.
    pub steady: Option<(String, Vec<u8>)>,
}

/// Executes through the connection's statement cache: a commit runs the same few statements
/// once per file, and parsing each again was most of a no-op run's archive time.
/// Records, agreed versions and the scan cache of one commit.
fn commit_versions(tx: &rusqlite::Transaction<'_>, changes: &Changes) -> rusqlite::Result<()> {
    for ((file, location), rec) in &changes.records {
        exec(
            tx,
            "INSERT OR REPLACE INTO records(file, location, hash) VALUES (?1, ?2, ?3)",
            params![file, location, rec.hash()],
        )?;
    }
    for (file, agreed) in &changes.agreed {
        exec(
            tx,
            "INSERT OR REPLACE INTO agreed(file, hash, entities, conversations, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                file,
                agreed.version.hash(),
                agreed.entities.map(|v| v as i64),
                agreed.conversations.map(|v| v as i64),
                changes.now
            ],
        )?;
    }
    for ((location, file), entry) in &changes.cache {
        match entry {
                Some(e) => exec(tx,
                    "INSERT OR REPLACE INTO scan_cache(location, file, signature, scanned_ns, hash, kind, extra)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![location, file, e.signature, e.scanned_ns, e.hash, e.kind.as_str(), e.extra],
                ),
                None => exec(tx, "DELETE FROM scan_cache WHERE location = ?1 AND file = ?2", params![location, file]),
            }
            ?;
    }
    Ok(())
}

/// Location identities learned or forgotten in one commit.
fn commit_locations(tx: &rusqlite::Transaction<'_>, changes: &Changes) -> rusqlite::Result<()> {
    for (location, id) in &changes.location_ids {
        match id {
            Some(id) => exec(
                tx,
                "INSERT OR REPLACE INTO location_ids(location, id) VALUES (?1, ?2)",
                params![location, id],
            ),
            None => exec(
                tx,
                "DELETE FROM location_ids WHERE location = ?1",
                params![location],
            ),
        }?;
    }
    for location in &changes.forget_location {
        exec(
            tx,
            "DELETE FROM records WHERE location = ?1",
            params![location],
        )?;
        exec(
            tx,
            "DELETE FROM scan_cache WHERE location = ?1",
            params![location],
        )?;
    }
    Ok(())
}

/// Conflicts set or cleared, and row conflicts settled, in one commit.
fn commit_conflicts(tx: &rusqlite::Transaction<'_>, changes: &Changes) -> rusqlite::Result<()> {
    for (file, conflict) in &changes.conflicts {
        match conflict {
                Some(c) => exec(tx,
                    "INSERT INTO conflicts(file, detected, reason, candidates, rows) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(file) DO UPDATE SET reason = excluded.reason,
                         candidates = excluded.candidates, rows = excluded.rows",
                    params![
                        file,
                        c.detected,
                        c.reason,
                        serde_json::to_string(&c.candidates).unwrap_or_default(),
                        serde_json::to_string(&c.rows).unwrap_or_default()
                    ],
                ),
                None => exec(tx, "DELETE FROM conflicts WHERE file = ?1", params![file]),
            }
            ?;
    }
    for rc in &changes.row_conflicts {
        tx.execute(
            "INSERT INTO row_conflicts(settled, conflict) VALUES (?1, ?2)",
            params![changes.now, serde_json::to_string(rc).unwrap_or_default()],
        )?;
    }
    tx.execute(
        "DELETE FROM row_conflicts WHERE id <= (SELECT MAX(id) FROM row_conflicts) - 1000",
        [],
    )?;
    Ok(())
}

/// The run's history entry, then the steady state (last: every write above has dropped the
/// old one through the triggers).
fn commit_run(tx: &rusqlite::Transaction<'_>, changes: &Changes) -> rusqlite::Result<()> {
    if let Some(run) = &changes.run {
        exec(tx,
                "INSERT INTO runs(command, started, finished, result, written, summary) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![run.command, run.started, run.finished, run.result.as_str(), run.written as i64, run.summary],
            )
            ?;
        exec(
            tx,
            "DELETE FROM runs WHERE id <= (SELECT MAX(id) FROM runs) - 1000",
            [],
        )?;
    }
    // Last: every write above has dropped the old one (the triggers).
    if let Some((key, body)) = &changes.steady {
        exec(
            tx,
            "INSERT OR REPLACE INTO steady(id, key, body) VALUES (1, ?1, ?2)",
            params![key, body],
        )?;
    }
    Ok(())
}

fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
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
        assert_eq!(version, SCHEMA_VERSION);
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
