//! The end of a run: identity markers, stale temps, the exit code and summary, the steady
//! state, one archive commit, retention, and the report.

use super::run::{Run, Scene, Tally};
use super::*;

impl Run<'_> {
    /// Finish: everything after the last file (see the module doc).
    pub(super) fn finish(
        mut self,
        mut archive: Archive,
        places: &[Place],
        sc: Scene<'_>,
        mut t: Tally,
        steady_key: Option<String>,
    ) -> Result<RunReport> {
        // The last batch of copies is in place (or undone) before anything is decided.
        self.settle_copies(&mut t);
        // A partial run's report lists every file, the unchanged ones as in sync.
        let planned_all = sc.loaded.partial.is_none();
        if let Some((_, others)) = &sc.loaded.partial {
            t.outcomes = merge_by_file(std::mem::take(&mut t.outcomes), others.clone());
        }
        self.markers(&sc, &mut t);
        if !self.ask.dry_run {
            clean_temps(&sc.loaded.listings, &sc.machine);
        }
        let finished = self.engine.clock.now();
        let (exit_code, result) = plan::run_end(
            self.ask.dry_run,
            !self.errors.is_empty(),
            !t.conflicts.is_empty(),
        );
        let unavailable = places.len() - sc.available.len();
        let summary = run_summary(t.outcomes.len(), t.written, t.conflicts.len(), unavailable);
        t.changes.now = rfc3339(finished);
        t.changes.run = Some(RunSummary {
            id: 0,
            command: self.ask.command.to_string(),
            started: rfc3339(self.started),
            finished: rfc3339(finished),
            result,
            written: t.written,
            summary: summary.clone(),
        });
        if self.ask.dry_run {
            t.changes.records.clear();
            t.changes.agreed.clear();
            t.changes.conflicts.clear();
            t.changes.location_ids.clear();
        }
        match (&steady_key, planned_all) {
            (Some(key), true) => self.keep_steady(key, &sc, &mut t),
            // A partial run found a change that left the archive as it was (say, a
            // database's `-journal` came or went): the steady state it started from no longer
            // says what the locations hold, so it is replaced by none, and the next run plans
            // in full and stores a new one (an empty key matches no run).
            (Some(_), false) if t.changes.steady.is_none() => {
                t.changes.steady = Some((String::new(), Vec::new()));
            }
            _ => {}
        }
        // What the run copied is durable before the archive says so.
        t.copier.sync_folders();
        crate::failpoint::hit("before_archive_commit");
        archive.commit(&t.changes)?;
        if !self.ask.dry_run {
            self.retention(&sc, &mut t);
        }
        let command = self.ask.command;
        tracing::info!(target: "metasync", "{command}: {result}: {summary}");
        (self.events)(&Event::RunFinished { result, summary });
        Ok(RunReport {
            command: command.to_string(),
            dry_run: self.ask.dry_run,
            strategy: self.ask.strategy.as_str().to_string(),
            started: rfc3339(self.started),
            finished: rfc3339(finished),
            locations: places.iter().map(Place::report).collect(),
            files: t.outcomes,
            actions: t.actions,
            conflicts: t.conflicts,
            warnings: self.warnings,
            errors: self.errors,
            row_conflicts: t.row_conflicts,
            hashed: t.hashed,
            exit_code,
        })
    }

    /// Identity markers: adopt what another machine wrote; write ours on first use.
    fn markers(&mut self, sc: &Scene<'_>, t: &mut Tally) {
        for p in &sc.available {
            let Availability::Available {
                new_id: Some(id),
                create_folder,
            } = &p.availability
            else {
                continue;
            };
            match id {
                NewId::Adopt(m) => t
                    .changes
                    .location_ids
                    .push((p.loc.name.clone(), Some(m.clone()))),
                NewId::Create if !self.ask.dry_run && !create_folder => {
                    if !t.ready.contains(&p.loc.name) {
                        if let Err(e) = self.engine.make_ready(p, &mut t.ready, &mut t.changes) {
                            self.errors.push(e.to_string());
                        }
                    }
                }
                NewId::Create => {}
            }
        }
    }

    /// A run that changed nothing stores what each location held, for the next run to
    /// replay (crate::steady).
    fn keep_steady(&self, key: &str, sc: &Scene<'_>, t: &mut Tally) {
        let quiet = t.written == 0
            && t.actions.is_empty()
            && self.warnings.is_empty()
            && self.errors.is_empty()
            && t.conflicts.is_empty()
            && sc.old_conflicts.is_empty();
        if quiet {
            let roots: Vec<&Path> = sc.available.iter().map(|p| p.loc.root.as_path()).collect();
            t.changes.steady = crate::steady::of_run(
                &sc.scans.files,
                &sc.scans.found,
                &sc.loaded.caches,
                &t.outcomes,
                sc.scan_time,
                &roots,
            )
            .map(|s| (key.to_string(), s.encode()));
        }
    }

    /// Retention, after the run has succeeded in writing its archive.
    fn retention(&mut self, sc: &Scene<'_>, t: &mut Tally) {
        let run_versions = super::backups::RunVersions {
            files: &sc.scans.files,
            backup_folders: std::mem::take(&mut t.backup_folders),
            described: std::mem::take(&mut t.described),
        };
        let known = self.ask.only.is_none().then_some(&run_versions);
        if let Err(e) = super::backups::prune_after_sync(self.engine, &sc.available, known) {
            self.warnings.push(format!("backup retention: {e}"));
        }
        for w in super::bucket_backups::prune_bucket_backups(self.engine, &sc.available) {
            self.warnings.push(format!("backup retention: {w}"));
        }
    }
}
