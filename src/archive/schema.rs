//! The archive's schema, its version, and the migration of an archive made by an older
//! Metasync (every row kept).

use super::*;

pub(super) const SCHEMA: &str = "
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
pub(super) const STEADY_DEPENDS_ON: [&str; 5] = [
    "records",
    "agreed",
    "scan_cache",
    "conflicts",
    "location_ids",
];

/// The whole schema: the tables, and the triggers that keep the steady state honest.
pub(super) fn schema() -> String {
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
pub(super) const SCHEMA_VERSION: i64 = 2;

/// Brings an archive made by an older Metasync to [`SCHEMA_VERSION`], keeping every row.
pub(super) const MIGRATE_TO_1: &str = "
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

impl Archive {
    /// Creates the tables of a new archive, or brings an old one up to date, in one
    /// transaction: an interrupted upgrade leaves the old archive as it was.
    pub(super) fn migrate(&self) -> Result<()> {
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
}
