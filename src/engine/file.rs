//! One file's way through a run: **plan** (or the settled shortcut), **merge** (a row merge
//! attempt when the plan asks for one), **apply** (each target location's writes), **record**
//! (what the archive learns, and the bases later merges need).

use super::run::{FileRun, Run, Scene, Tally};
use super::*;

impl Run<'_> {
    /// Plans, merges, applies and records one file.
    pub(super) fn file(&mut self, sc: &Scene<'_>, index: usize, t: &mut Tally) {
        let Some(mut fr) = self.plan(sc, index, t) else {
            return;
        };
        self.merge(sc, &mut fr);
        self.refused(&fr);
        let (outcome, winner, sha256, reason) = outcome_of(&fr.planned.decision);
        if let Decision::Stuck { reason, failure } = &fr.planned.decision {
            let message = format!("{}: {reason}", fr.file);
            match failure {
                true => self.errors.push(message),
                false => self.warnings.push(message),
            }
        }
        if let Decision::Conflict { candidates, reason } = &fr.planned.decision {
            self.conflict(sc, &fr, candidates, reason, t);
        }
        let first_action = t.actions.len();
        let (did, failed) = self.apply(sc, &fr, t);
        if !self.ask.dry_run {
            self.protect(sc, &fr, &t.actions[first_action..]);
        }
        let outcome = if failed { Outcome::Failed } else { outcome };
        if !self.ask.dry_run {
            self.learn(sc, &fr, &did, t);
            self.note_written(sc, &fr, &did, t);
        }
        let settled = matches!(
            fr.planned.decision,
            Decision::InSync(_) | Decision::Propagate { .. }
        );
        if settled && sc.old_conflicts.contains_key(&fr.file) && !failed {
            t.changes.conflicts.push((fr.file.clone(), None));
        }
        t.outcomes.push(FileOutcome {
            file: fr.file,
            outcome,
            winner,
            sha256,
            reason,
        });
    }

    /// Plan: the settled shortcut (a plain file every location holds as agreed and as
    /// recorded; databases are always planned in full, for their base), else `plan_file`.
    fn plan(&mut self, sc: &Scene<'_>, index: usize, t: &mut Tally) -> Option<FileRun> {
        let file = &sc.scans.files[index];
        let recorded = sc.loaded.records.get(file);
        let recorded_at =
            |loc: &str| recorded.and_then(|r| r.iter().find(|(l, _)| l == loc).map(|(_, rec)| rec));
        let agreed = sc.loaded.agreed.get(file);
        let agreed_version = agreed.map(|a| &a.version);
        let held = |li: usize| match &sc.scans.found[li][index] {
            Found::Present { content, .. } if content.kind == Kind::Plain => {
                Some(content.hash.as_str())
            }
            _ => None,
        };
        let sides_held = sc
            .available
            .iter()
            .enumerate()
            .map(|(li, p)| (held(li), recorded_at(&p.loc.name)));
        if !sc.old_conflicts.contains_key(file)
            && plan::settled(&self.ask.direction, agreed_version, sides_held)
        {
            t.outcomes.push(FileOutcome {
                file: file.clone(),
                outcome: Outcome::InSync,
                winner: None,
                sha256: agreed_version.and_then(|v| v.hash().map(String::from)),
                reason: "every location holds it".into(),
            });
            return None;
        }
        let engine = self.engine;
        let sides: Vec<Side> = sc
            .available
            .iter()
            .enumerate()
            .map(|(li, p)| Side {
                location: p.loc.name.clone(),
                local: p.loc.is_local(),
                observed: engine.observed(&sc.scans.found[li][index], agreed),
                recorded: recorded_at(&p.loc.name).cloned(),
            })
            .collect();
        let all_databases = (0..sc.available.len()).all(|li| match &sc.scans.found[li][index] {
            Found::Present { content, .. } => content.kind == Kind::Sqlite,
            _ => true,
        });
        let input = FileInput {
            file: file.clone(),
            agreed: agreed_version.cloned(),
            sides,
            propagate_deletes: engine.config.propagate_deletes,
            mergeable: all_databases && engine.config.merge_mode_for(file) == MergeMode::Rows,
            agreed_elsewhere: sc.agreed_offline.contains(file),
            held_elsewhere: sc.held_offline.contains(file),
        };
        let planned = plan::plan_file(&input, &self.ask.direction);
        Some(FileRun {
            file: file.clone(),
            input,
            planned,
            merged: None,
            held_rows: Vec::new(),
        })
    }

    /// Merge: when the plan asks for a row merge, attempt it; `plan::after_merge` says what
    /// the attempt means.
    fn merge(&mut self, sc: &Scene<'_>, fr: &mut FileRun) {
        let Decision::Merge {
            candidates,
            base,
            fallback,
        } = fr.planned.decision.clone()
        else {
            return;
        };
        let attempt = if self.ask.dry_run {
            Err("not attempted in a dry run".to_string())
        } else {
            self.engine
                .try_merge(fr, &candidates, &base, &self.ask.direction, sc)
        };
        let attempt = match attempt {
            Ok(MergeResult::Merged(m)) => {
                for rc in &m.row_conflicts {
                    self.warnings.push(format!(
                        "{}: row conflict in {} {}: kept {}'s value",
                        fr.file,
                        rc.table,
                        rc.key,
                        rc.winner.as_deref().unwrap_or("?")
                    ));
                }
                let attempt = plan::MergeAttempt::Merged {
                    hash: m.hash.clone(),
                    rows_changed: m.rows_changed,
                    row_conflicts: m.row_conflicts.len(),
                };
                fr.merged = Some(*m);
                attempt
            }
            Ok(MergeResult::Held(rows)) => {
                let attempt = plan::MergeAttempt::Held { rows: rows.len() };
                fr.held_rows = rows;
                attempt
            }
            Ok(MergeResult::Shrunk(why)) => plan::MergeAttempt::Shrunk(why),
            Err(why) => plan::MergeAttempt::Impossible(why),
        };
        let after = plan::after_merge(
            &fr.input,
            &candidates,
            *fallback,
            attempt,
            &self.ask.direction,
        );
        if let (Some(w), false) = (after.warning, self.ask.dry_run) {
            self.warnings.push(format!("{}: {w}", fr.file));
        }
        fr.planned.decision = after.decision;
        fr.planned.actions = after.actions;
    }

    /// Corrupt versions the plan refused: said, and notified.
    fn refused(&mut self, fr: &FileRun) {
        let file = &fr.file;
        for (loc, detail) in &fr.planned.refused {
            tracing::warn!(target: "metasync", "{file} in {loc}: corrupt version refused: {detail}");
            (self.events)(&Event::CorruptRefused {
                file: file.clone(),
                location: loc.clone(),
                detail: detail.clone(),
            });
            self.warnings.push(format!(
                "{file} in {loc} is corrupt and was refused: {detail}"
            ));
        }
    }

    /// A conflict: reported (notified when new), and kept in the archive.
    fn conflict(
        &mut self,
        sc: &Scene<'_>,
        fr: &FileRun,
        candidates: &[(String, Option<plan::Version>)],
        reason: &str,
        t: &mut Tally,
    ) {
        let file = &fr.file;
        let old = sc.old_conflicts.get(file);
        let report = ConflictReport {
            file: file.clone(),
            detected: old
                .map(|c| c.detected.clone())
                .unwrap_or_else(|| rfc3339(self.started)),
            reason: reason.to_string(),
            candidates: candidates
                .iter()
                .map(|(loc, _)| self.engine.candidate(&sc.scans, file, loc))
                .collect(),
            rows: fr.held_rows.clone(),
        };
        if old.is_none() {
            (self.events)(&Event::Conflict(report.clone()));
        }
        tracing::warn!(target: "metasync", "{file}: conflict: {reason}");
        t.changes
            .conflicts
            .push((file.clone(), Some(report.clone())));
        t.conflicts.push(report);
    }

    /// Record: what the archive learns, and the row-merge bases to keep.
    fn learn(&mut self, sc: &Scene<'_>, fr: &FileRun, did: &plan::Written, t: &mut Tally) {
        let winner = match &fr.planned.decision {
            Decision::Propagate { winner, .. } | Decision::InSync(winner) => winner,
            _ => return,
        };
        let after = self
            .engine
            .record_decided(fr, winner, did, sc, &mut t.changes);
        // Bases of older versions some location still holds as its last synced one stay: a
        // change made there is merged against them (plan::merge_base).
        let offline = sc
            .loaded
            .records
            .get(&fr.file)
            .into_iter()
            .flatten()
            .filter(|(l, _)| !sc.scans.locations.contains(l))
            .map(|(_, r)| r);
        let older: Vec<&str> = after
            .iter()
            .chain(offline)
            .filter_map(Recorded::hash)
            .filter(|h| Some(*h) != winner.hash())
            .collect();
        // A remote written with the winner: the previous base may be rewritten from it.
        let written = t.changes.cache.iter().rev().find_map(|((loc, f), e)| {
            let e = e.as_ref().filter(|e| e.kind == Kind::Sqlite)?;
            let remote = fr
                .input
                .sides
                .iter()
                .any(|s| &s.location == loc && !s.local);
            (f == &fr.file && remote && did.written.contains(loc) && winner.hash() == Some(&e.hash))
                .then_some(super::rowmerge::Written {
                    location: loc,
                    signature: &e.signature,
                })
        });
        if let Some(w) = self
            .engine
            .keep_base(fr, winner, &older, sc, written.as_ref())
        {
            self.warnings.push(w);
        }
        if let Some(m) = &fr.merged {
            t.changes
                .row_conflicts
                .extend(m.row_conflicts.iter().cloned());
            t.row_conflicts.extend(m.row_conflicts.iter().cloned());
        }
    }

    /// Marks the backups this file's writes made that retention must keep for a while
    /// (`plan::protection`); a note that cannot be written is a warning.
    fn protect(&mut self, sc: &Scene<'_>, fr: &FileRun, reports: &[ActionReport]) {
        let row_conflicts = fr
            .merged
            .as_ref()
            .is_some_and(|m| !m.row_conflicts.is_empty());
        let now = self.engine.clock.now();
        for r in reports
            .iter()
            .filter(|r| r.done && r.action == ActionKind::Backup)
        {
            let why =
                plan::protection(&fr.planned, &self.ask.direction, &r.location, row_conflicts);
            let place = sc.available.iter().find(|p| p.loc.name == r.location);
            let (Some(why), Some(place)) = (why, place) else {
                continue;
            };
            let rel = Path::new(&r.detail).strip_prefix(&place.loc.root).ok();
            if let Some(rel) = rel.and_then(|p| p.to_str()) {
                if let Err(e) = crate::history::protect(&place.loc.root, rel, why, now) {
                    self.warnings.push(format!(
                        "{}: cannot keep {} protected: {e}",
                        fr.file, r.detail
                    ));
                }
            }
        }
    }

    /// The folders retention after the run reads: where this file's writes were attempted.
    fn note_written(&self, sc: &Scene<'_>, fr: &FileRun, did: &plan::Written, t: &mut Tally) {
        for p in sc
            .available
            .iter()
            .filter(|p| did.attempted.contains(&p.loc.name))
        {
            if let Some(dir) = p.loc.path_of(&fr.file).parent() {
                t.backup_folders.insert(dir.to_path_buf());
            }
        }
    }
}

/// The report's view of a decision: outcome, winning location, winning hash, reason.
fn outcome_of(decision: &Decision) -> (Outcome, Option<String>, Option<String>, String) {
    match decision {
        Decision::InSync(v) => (
            Outcome::InSync,
            None,
            v.hash().map(String::from),
            match v {
                Recorded::Absent => "deleted in every location",
                Recorded::Present(_) => "every location holds it",
            }
            .to_string(),
        ),
        Decision::Propagate {
            winner,
            source,
            reason,
        } => (
            Outcome::Propagated,
            Some(source.clone()),
            winner.hash().map(String::from),
            reason.clone(),
        ),
        Decision::Conflict { reason, .. } => (Outcome::Conflict, None, None, reason.clone()),
        Decision::Merge { .. } => (
            Outcome::Skipped,
            None,
            None,
            "row merge not decided".to_string(),
        ),
        Decision::Stuck { reason, .. } => (Outcome::Skipped, None, None, reason.clone()),
    }
}
