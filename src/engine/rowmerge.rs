//! A row merge attempt of a database conflict, and the bases later merges diff against.

use super::run::{FileRun, Scene};
use super::*;

/// A remote location this run wrote a database version into, with the stat signature of the
/// file as written and verified (its scan cache entry's).
pub(super) struct Written<'a> {
    pub(super) location: &'a str,
    pub(super) signature: &'a str,
}

impl Engine {
    /// Tries a row merge of the versions at `candidates` against the base snapshot of the
    /// agreed version. `Err` says why the file-level strategy applies instead.
    pub(super) fn try_merge(
        &self,
        fr: &FileRun,
        candidates: &[String],
        base_hash: &str,
        direction: &Direction,
        sc: &Scene<'_>,
    ) -> std::result::Result<MergeResult, String> {
        let (file, input, scans) = (fr.file.as_str(), &fr.input, &sc.scans);
        let run_dir = sc.run_dir.0.as_path();
        let agreed = sc.loaded.agreed.get(file);
        let agreed = agreed.ok_or("no agreed version")?;
        let base = crate::merge::base_of(&self.home, file, base_hash).ok_or(
            if Some(base_hash) == agreed.version.hash() {
                "no base snapshot of the last agreed version is kept yet"
            } else {
                "no base snapshot of the older version it changed is kept"
            },
        )?;
        let strategy = direction.strategy();
        let opts = crate::sqlite::SqliteOptions::from(&self.config.sqlite);
        let mut sides = Vec::new();
        for loc in candidates {
            let Some(Found::Present { stat, content, .. }) = scans.get(file, loc) else {
                return Err(format!("{loc}'s version cannot be read"));
            };
            let path = match &content.snapshot {
                Some(p) => p.clone(),
                None => {
                    let root = self
                        .root_of(loc)
                        .ok_or_else(|| format!("no location {loc}"))?;
                    let p = run_dir.join(format!("side-{}.db", crate::ids::random_hex(8)));
                    let info = crate::sqlite::snapshot(&root.join(file), &p, &opts)
                        .map_err(|e| e.to_string())?;
                    if info.logical_hash != content.hash {
                        return Err(format!("{loc}'s version changed while being read"));
                    }
                    p
                }
            };
            let local = input.sides.iter().any(|s| &s.location == loc && s.local);
            sides.push(crate::merge::MergeSide {
                location: loc.clone(),
                local,
                mtime_ns: stat.mtime_ns,
                path,
            });
        }
        let out = run_dir.join(format!("merged-{}.db", crate::ids::random_hex(8)));
        let outcome =
            crate::merge::merge_files(&base, &sides, strategy, &out).map_err(|e| e.to_string())?;
        match outcome {
            crate::merge::MergeOutcome::Merged {
                path,
                mut row_conflicts,
                rows_changed,
            } => {
                for rc in &mut row_conflicts {
                    rc.file = file.to_string();
                }
                self.merged_version(agreed, path, row_conflicts, rows_changed)
            }
            crate::merge::MergeOutcome::Held(mut rows) => {
                for rc in &mut rows {
                    rc.file = file.to_string();
                }
                Ok(MergeResult::Held(rows))
            }
            crate::merge::MergeOutcome::Fallback(why) => Err(why),
        }
    }

    /// After a database's version was agreed: keep its snapshot as the base of a later row
    /// merge (only the newest agreed version's base is kept).
    /// After a database's version was agreed: keep its snapshot as the base of a later row
    /// merge, with the bases of the `older` versions some location still holds; a warning
    /// when no base can be kept.
    pub(super) fn keep_base(
        &self,
        fr: &FileRun,
        winner: &Recorded,
        older: &[&str],
        sc: &Scene<'_>,
        written: Option<&Written<'_>>,
    ) -> Option<String> {
        let (file, input, scans) = (fr.file.as_str(), &fr.input, &sc.scans);
        let (merged, run_dir) = (fr.merged.as_ref(), sc.run_dir.0.as_path());
        if self.config.merge_mode_for(file) != MergeMode::Rows {
            return None;
        }
        let Recorded::Present(hash) = winner else {
            crate::merge::drop_bases_except(&self.home, file, older);
            return None;
        };
        let mut keep = older.to_vec();
        keep.push(hash);
        let found_db = |loc: &str| match scans.get(file, loc) {
            Some(Found::Present { content, .. }) if content.kind == Kind::Sqlite => Some(content),
            _ => None,
        };
        if merged.is_none() && !input.sides.iter().any(|s| found_db(&s.location).is_some()) {
            return None;
        }
        if crate::merge::base_of(&self.home, file, hash).is_some() {
            crate::merge::drop_bases_except(&self.home, file, &keep);
            return None;
        }
        // The merged file, unless it became a remote's file (then the base is rewritten from
        // that remote below).
        let mut source = merged
            .filter(|m| &m.hash == hash && m.path.is_file())
            .map(|m| m.path.clone());
        if source.is_none() {
            source = input.sides.iter().find_map(|s| {
                found_db(&s.location)
                    .filter(|c| &c.hash == hash)
                    .and_then(|c| c.snapshot.as_deref())
                    .and_then(crate::kind::base_source)
            });
        }
        if source.is_none() {
            if let Some(w) = written {
                match self.patch_base(fr, hash, older, w, sc) {
                    Ok(true) => {
                        crate::merge::drop_bases_except(&self.home, file, &keep);
                        return None;
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!("{file}: the base could not be rewritten: {e}"),
                }
            }
        }
        if source.is_none() {
            // Remotes first: they have no live writer.
            let opts = crate::sqlite::SqliteOptions::from(&self.config.sqlite);
            let mut order: Vec<&Side> = input.sides.iter().filter(|s| !s.local).collect();
            order.extend(input.sides.iter().filter(|s| s.local));
            for side in order {
                let Some(root) = self.root_of(&side.location) else {
                    continue;
                };
                let p = run_dir.join(format!("base-{}.db", crate::ids::random_hex(8)));
                match crate::sqlite::snapshot(&root.join(file), &p, &opts) {
                    Ok(info) if &info.logical_hash == hash => {
                        source = Some(p);
                        break;
                    }
                    _ => {
                        let _ = std::fs::remove_file(&p);
                    }
                }
            }
        }
        match source {
            Some(snap) => {
                // Every source here is this run's own file (a snapshot or the merged version),
                // read by nothing after this: it may become the base itself.
                match crate::merge::keep_base(&self.home, file, hash, &snap, true) {
                    Ok(()) => {
                        crate::merge::drop_bases_except(&self.home, file, &keep);
                        None
                    }
                    Err(e) => Some(format!("{file}: cannot keep the base for row merges: {e}")),
                }
            }
            None => Some(format!(
                "{file}: no copy of the agreed version to keep as the base for row merges"
            )),
        }
    }

    /// The base of version `hash` kept by rewriting the previous agreed version's base from
    /// the remote file this run wrote with `hash` (`written`), when no version some location
    /// still holds needs that old base ([`crate::merge::patch_base`]): no second full copy of
    /// a database for each change. The remote file must still match the stat signature
    /// recorded when it was written and verified, before and after it is read.
    fn patch_base(
        &self,
        fr: &FileRun,
        hash: &str,
        older: &[&str],
        w: &Written<'_>,
        sc: &Scene<'_>,
    ) -> Result<bool> {
        let file = fr.file.as_str();
        let agreed = sc.loaded.agreed.get(file).and_then(|a| a.version.hash());
        let (Some(old), Some(root)) = (agreed, self.root_of(w.location)) else {
            return Ok(false);
        };
        if older.contains(&old) || sc.agreed_offline.contains(file) {
            return Ok(false);
        }
        let path = root.join(file);
        let holds = || {
            crate::scan::Stat::of_kind(&path, true)
                .ok()
                .flatten()
                .is_some_and(|(stat, _)| stat.signature() == w.signature)
        };
        crate::merge::patch_base(&self.home, file, (old, hash), &path, &holds)
    }

    /// A merged database version: its hash, counts and the scan the writes read it by; held
    /// back when the shrink guard says so.
    fn merged_version(
        &self,
        agreed: &Agreed,
        path: PathBuf,
        row_conflicts: Vec<crate::merge::RowConflict>,
        rows_changed: usize,
    ) -> std::result::Result<MergeResult, String> {
        let opts = crate::sqlite::SqliteOptions::from(&self.config.sqlite);
        let (hash, counts) =
            crate::sqlite::logical_hash_and_counts(&path, &opts).map_err(|e| e.to_string())?;
        let facts = crate::kind::Facts {
            integrity: Vec::new(),
            entities: counts.entities(),
            conversations: counts.conversations(),
        };
        if let Some(why) =
            crate::kind::shrink_reason(agreed, &facts, self.config.sqlite.max_shrink_percent)
        {
            return Ok(MergeResult::Shrunk(why));
        }
        // The merged version is this machine's edit, made now by its clock.
        let now: i128 = self
            .clock
            .now()
            .timestamp_nanos_opt()
            .unwrap_or(i64::MAX)
            .into();
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let found = Found::Present {
            stat: scan::Stat {
                size,
                mtime_ns: now,
                ctime_ns: now,
                ino: 0,
                side: None,
            },
            content: crate::kind::Content {
                hash: hash.clone(),
                kind: Kind::Sqlite,
                facts: facts.clone(),
                snapshot: Some(path.clone()),
            },
            hashed: true,
        };
        Ok(MergeResult::Merged(Box::new(Merged {
            path,
            hash,
            facts,
            found,
            row_conflicts,
            rows_changed,
        })))
    }
}

/// A version made by a row merge this run.
pub(super) struct Merged {
    pub(super) path: PathBuf,
    pub(super) hash: String,
    pub(super) facts: crate::kind::Facts,
    pub(super) found: Found,
    pub(super) row_conflicts: Vec<crate::merge::RowConflict>,
    pub(super) rows_changed: usize,
}

pub(super) enum MergeResult {
    Merged(Box<Merged>),
    Held(Vec<crate::merge::RowConflict>),
    Shrunk(String),
}
