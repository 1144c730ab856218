//! What a run or a person reads from the archive.

use super::*;

impl Archive {
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
            let candidates = stored::decode(&candidates);
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
}

/// A scan cache entry from a row whose columns, from `first` on, are signature, scanned_ns,
/// hash, kind and extra.
pub(super) fn cache_entry_at(r: &rusqlite::Row, first: usize) -> rusqlite::Result<CacheEntry> {
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
