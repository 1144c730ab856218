//! The steady path: a run that changed nothing is replayed from stats (crate::steady).

use super::run::Run;
use super::*;

impl Engine {
    /// Replays the stored steady run (`body`, see crate::steady) when every location still
    /// is as it saw: lists each location (all at once) and stats its files, nothing more.
    /// When a few files changed, only those need planning; when more did (or retention may
    /// have backups to thin out), all of them.
    pub(super) fn replay_steady(
        &self,
        run: &mut Run<'_>,
        archive: &mut Archive,
        body: &[u8],
        places: &[Place],
        available: &[&Place],
    ) -> Result<Replay> {
        let command = run.ask.command;
        let Some(steady) = crate::steady::Steady::decode(body) else {
            return Ok(Replay::Unusable);
        };
        if steady.locations != available.len() {
            return Ok(Replay::Unusable);
        }
        let looked = self.look_all(&steady, available);
        let mut changed: Vec<String> = looked.iter().flat_map(|(_, c, _)| c.clone()).collect();
        changed.extend(self.without_base(&steady).map(String::from));
        changed.sort_unstable();
        changed.dedup();
        let prunable = looked.iter().any(|(_, _, p)| *p);
        let temps = looked.iter().any(|(l, _, _)| !l.temps.is_empty());
        let listings: Vec<Listing> = looked.into_iter().map(|(l, _, _)| l).collect();
        // A file that cannot be synced is a warning: no steady replay hides it.
        if listings.iter().any(|l| !l.skipped.is_empty()) {
            return Ok(Replay::Full(listings));
        }
        let settled = |skip: &[String]| -> Vec<FileOutcome> {
            steady
                .files
                .iter()
                .filter(|f| skip.binary_search_by(|c| c.as_str().cmp(f.name)).is_err())
                .map(|f| FileOutcome {
                    file: f.name.to_string(),
                    outcome: Outcome::InSync,
                    winner: None,
                    sha256: f.sha256.map(String::from),
                    reason: f.reason.to_string(),
                })
                .collect()
        };
        match crate::steady::scope(changed.len(), steady.files.len(), prunable, temps) {
            crate::steady::Scope::All => {
                tracing::debug!(target: "metasync", "{command}: {} file(s) changed since the last steady run; planned in full", changed.len());
                return Ok(Replay::Full(listings));
            }
            crate::steady::Scope::Changed => {
                tracing::info!(target: "metasync", "{command}: {} file(s) changed since the last run; planning those", changed.len());
                let others = settled(&changed);
                return Ok(Replay::Partial {
                    listings,
                    changed,
                    others,
                });
            }
            crate::steady::Scope::Unchanged => {}
        }
        let files = if run.ask.summary_only {
            Vec::new()
        } else {
            settled(&[])
        };
        self.replayed(run, archive, places, available, (steady.files.len(), files))
    }

    /// The steady run's databases whose row merges need a base that is no longer kept: a
    /// full run would keep it again, so they are planned.
    fn without_base<'s>(
        &'s self,
        steady: &'s crate::steady::Steady<'_>,
    ) -> impl Iterator<Item = &'s str> + 's {
        steady.files.iter().enumerate().filter_map(move |(i, f)| {
            let needs_base = steady.is_database(i)
                && self.config.merge_mode_for(f.name) == crate::config::MergeMode::Rows;
            let missing = needs_base
                && f.sha256
                    .is_none_or(|h| crate::merge::base_of(&self.home, f.name, h).is_none());
            missing.then_some(f.name)
        })
    }

    /// Per location, all at once: its listing, what changed there since the steady run, and
    /// whether retention could thin out its backups.
    fn look_all(
        &self,
        steady: &crate::steady::Steady<'_>,
        available: &[&Place],
    ) -> Vec<(Listing, Vec<String>, bool)> {
        // Made once, by the first look whose listing is done.
        let names = std::sync::OnceLock::new();
        std::thread::scope(|s| {
            let looks: Vec<_> = available
                .iter()
                .enumerate()
                .map(|(li, p)| {
                    let (steady, names) = (&steady, &names);
                    s.spawn(move || {
                        let listing = self.selector.list(&p.loc.root);
                        let changed: Vec<String> = steady
                            .changed_in(
                                names.get_or_init(|| steady.names()),
                                li,
                                &p.loc.root,
                                &listing.files,
                            )
                            .into_iter()
                            .map(String::from)
                            .collect();
                        let prunable = !listing.backup_folders.is_empty()
                            && super::backups::could_prune(
                                self,
                                p,
                                steady.files.iter().map(|f| f.name),
                                &listing.backup_folders,
                            );
                        (listing, changed, prunable)
                    })
                })
                .collect();
            looks
                .into_iter()
                .map(|h| h.join().expect("listing a location panicked"))
                .collect()
        })
    }

    /// The replay itself: the stored run's report (of `count` files, with `files` their
    /// outcomes unless only the counts are wanted), with its archive commit.
    fn replayed(
        &self,
        run: &mut Run<'_>,
        archive: &mut Archive,
        places: &[Place],
        available: &[&Place],
        (count, files): (usize, Vec<FileOutcome>),
    ) -> Result<Replay> {
        let (command, strategy, started) = (run.ask.command, run.ask.strategy, run.started);
        let finished = self.clock.now();
        let summary = run_summary(count, 0, 0, places.len() - available.len());
        let changes = Changes {
            now: rfc3339(finished),
            run: Some(RunSummary {
                id: 0,
                command: command.to_string(),
                started: rfc3339(started),
                finished: rfc3339(finished),
                result: RunResult::Ok,
                written: 0,
                summary: summary.clone(),
            }),
            ..Changes::default()
        };
        crate::failpoint::hit("before_archive_commit");
        archive.commit(&changes)?;
        tracing::info!(target: "metasync", "{command}: ok: {summary} (unchanged since the last run)");
        (run.events)(&Event::RunFinished {
            result: RunResult::Ok,
            summary,
        });
        Ok(Replay::Done(Box::new(RunReport {
            command: command.to_string(),
            dry_run: false,
            strategy: strategy.as_str().to_string(),
            started: rfc3339(started),
            finished: rfc3339(finished),
            locations: places.iter().map(Place::report).collect(),
            files,
            actions: Vec::new(),
            conflicts: Vec::new(),
            warnings: Vec::new(),
            errors: Vec::new(),
            row_conflicts: Vec::new(),
            hashed: 0,
            exit_code: 0,
        })))
    }
}

/// What the steady state says of a run (see [`Engine::replay_steady`]).
pub(super) enum Replay {
    /// Nothing changed: the run is replayed, this is its report.
    Done(Box<RunReport>),
    /// Only `changed` need planning (with the listings made); every other file is in sync as
    /// `others` say (sorted by file).
    Partial {
        listings: Vec<Listing>,
        changed: Vec<String>,
        others: Vec<FileOutcome>,
    },
    /// Every file is planned, with the listings made.
    Full(Vec<Listing>),
    /// The stored steady state does not fit this run.
    Unusable,
}
