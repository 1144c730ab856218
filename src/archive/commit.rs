//! One commit per run: everything a run learned, in one transaction.

use super::*;

impl Archive {
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
pub(super) fn commit_versions(
    tx: &rusqlite::Transaction<'_>,
    changes: &Changes,
) -> rusqlite::Result<()> {
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
pub(super) fn commit_locations(
    tx: &rusqlite::Transaction<'_>,
    changes: &Changes,
) -> rusqlite::Result<()> {
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
pub(super) fn commit_conflicts(
    tx: &rusqlite::Transaction<'_>,
    changes: &Changes,
) -> rusqlite::Result<()> {
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
                        stored::encode(&c.candidates),
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
pub(super) fn commit_run(
    tx: &rusqlite::Transaction<'_>,
    changes: &Changes,
) -> rusqlite::Result<()> {
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

pub(super) fn exec(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}
