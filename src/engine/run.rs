//! One sync, push, pull or resolve, as named phases: **survey** (archive, places), **scope**
//! (the steady path: replay, or which files to plan), **load** (listings, caches, records),
//! **scan**, then per file **plan** → **merge** → **apply** → **record**, and **finish**
//! (markers, exit code, archive commit, retention, report). Every decision is `plan`'s; every
//! write goes through `write`; this module only sequences them and gathers what they said.

use super::*;
use crate::archive::{CacheEntry, FileMap};

/// What a run is asked to do.
pub(super) struct Ask<'a> {
    /// `sync`, `push`, `pull` or `resolve`.
    pub(super) command: &'a str,
    /// Which way versions move.
    pub(super) direction: Direction,
    /// The strategy in force (reported, and for conflicts).
    pub(super) strategy: Strategy,
    /// Only this file (a resolve).
    pub(super) only: Option<&'a str>,
    /// Decide and report, write nothing.
    pub(super) dry_run: bool,
    /// Only the counts are wanted (see [`super::RunOptions::summary_only`]).
    pub(super) summary_only: bool,
}

/// A run in progress: what was asked, and what it has said so far.
pub(super) struct Run<'a> {
    pub(super) engine: &'a Engine,
    pub(super) ask: Ask<'a>,
    pub(super) started: chrono::DateTime<chrono::Utc>,
    pub(super) events: &'a mut dyn FnMut(&Event),
    pub(super) warnings: Vec<String>,
    pub(super) errors: Vec<String>,
}

/// The archive and the places, as a run finds them.
pub(super) struct Survey {
    pub(super) archive: Archive,
    pub(super) machine: String,
    pub(super) places: Vec<Place>,
}

/// What the run reads before it scans.
pub(super) struct Loaded {
    pub(super) listings: Vec<Listing>,
    pub(super) caches: Vec<FileMap<CacheEntry>>,
    pub(super) records: FileMap<Vec<(String, Recorded)>>,
    pub(super) agreed: FileMap<Agreed>,
    /// With a partial replay: the changed files (only these are planned) and the unchanged
    /// files' outcomes.
    pub(super) partial: Option<(Vec<String>, Vec<FileOutcome>)>,
}

/// What stays fixed while files are planned and written, one by one.
pub(super) struct Scene<'p> {
    pub(super) available: Vec<&'p Place>,
    pub(super) machine: String,
    pub(super) loaded: Loaded,
    pub(super) scans: Scans,
    pub(super) scan_time: i64,
    pub(super) run_dir: RunScratch,
    /// Files whose agreed version an unavailable location was last seen holding.
    pub(super) agreed_offline: HashSet<String>,
    /// Files an unavailable location was last seen holding, in any version.
    pub(super) held_offline: HashSet<String>,
    pub(super) old_conflicts: HashMap<String, ConflictReport>,
}

/// What the run has done and found so far.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) changes: Changes,
    pub(super) outcomes: Vec<FileOutcome>,
    pub(super) actions: Vec<ActionReport>,
    pub(super) conflicts: Vec<ConflictReport>,
    pub(super) row_conflicts: Vec<crate::merge::RowConflict>,
    pub(super) ready: HashSet<String>,
    pub(super) written: u64,
    pub(super) hashed: u64,
    pub(super) backup_folders: BTreeSet<PathBuf>,
    /// What the scan knew of the versions the run's backups keep, for retention's move of
    /// them into the history store.
    pub(super) described: HashMap<PathBuf, super::backups::Described>,
    /// The run's copies of plain files (their folders fsynced before the archive commit).
    pub(super) copier: crate::apply::Copier,
}

/// One file on its way through plan, merge, apply and record.
pub(super) struct FileRun {
    pub(super) file: String,
    pub(super) input: FileInput,
    pub(super) planned: plan::FilePlan,
    pub(super) merged: Option<Merged>,
    pub(super) held_rows: Vec<crate::merge::RowConflict>,
}

impl Engine {
    /// One run, phase by phase (see the module doc).
    pub(super) fn execute(
        &self,
        ask: Ask<'_>,
        events: &mut dyn FnMut(&Event),
    ) -> Result<RunReport> {
        let _stores = crate::objstore::RunGuard(&self.stores);
        let mut run = Run {
            engine: self,
            started: self.clock.now(),
            ask,
            events,
            warnings: Vec::new(),
            errors: Vec::new(),
        };
        let mut survey = run.survey()?;
        let steady_key = run.steady_key(&survey);
        let available: Vec<&Place> = survey
            .places
            .iter()
            .filter(|p| p.availability.is_available())
            .collect();
        let scope = match &steady_key {
            Some(key) => self.scope(
                &mut run,
                &mut survey.archive,
                &survey.places,
                &available,
                key,
            )?,
            None => Replay::Unusable,
        };
        let loaded = match scope {
            Replay::Done(report) => return Ok(*report),
            other => run.load(&survey.archive, &available, other)?,
        };
        let mut tally = Tally::default();
        let scene = run.scan(&survey, available, loaded, &mut tally)?;
        for index in 0..scene.scans.files.len() {
            run.file(&scene, index, &mut tally);
            // After the file's records, which a copy that cannot be put in place undoes.
            if tally.copier.batch_full() {
                run.settle_copies(&mut tally);
            }
        }
        run.finish(survey.archive, &survey.places, scene, tally, steady_key)
    }

    /// Scope: a stored steady run is replayed when nothing changed since; else it says which
    /// files to plan and lends its listings.
    fn scope(
        &self,
        run: &mut Run<'_>,
        archive: &mut Archive,
        places: &[Place],
        available: &[&Place],
        key: &str,
    ) -> Result<Replay> {
        match archive.steady()? {
            Some((stored, body)) if stored == key => {
                self.replay_steady(run, archive, &body, places, available)
            }
            _ => Ok(Replay::Unusable),
        }
    }
}

impl Run<'_> {
    fn warn(&mut self, message: String) {
        self.warnings.push(message);
    }

    /// Survey: the archive, this machine's id, every location and whether it is available.
    fn survey(&mut self) -> Result<Survey> {
        let command = self.ask.command;
        (self.events)(&Event::RunStarted {
            command: command.to_string(),
        });
        let dry = if self.ask.dry_run { " (dry run)" } else { "" };
        tracing::info!(target: "metasync", "{command}: started{dry}");
        let archive = Archive::open(&self.engine.home)?;
        let machine = archive.machine_id()?;
        let places = self.engine.places(&archive.location_ids()?);
        for p in &places {
            if let Availability::Unavailable(reason) = &p.availability {
                tracing::warn!(target: "metasync", "{}: skipped: {reason}", p.loc.name);
                (self.events)(&Event::LocationUnavailable {
                    location: p.loc.name.clone(),
                    reason: reason.clone(),
                });
                self.warn(format!("{} unavailable: {reason}", p.loc.name));
            }
        }
        Ok(Survey {
            archive,
            machine,
            places,
        })
    }

    /// The steady state's key for this run, when a steady run may be replayed or stored: a
    /// full sync, push or pull, every location available and already in use.
    fn steady_key(&self, survey: &Survey) -> Option<String> {
        let eligible = !self.ask.dry_run
            && self.ask.only.is_none()
            && !matches!(self.ask.direction, Direction::Keep(_))
            && survey.places.iter().all(|p| {
                matches!(
                    p.availability,
                    Availability::Available {
                        create_folder: false,
                        new_id: None
                    }
                )
            });
        eligible.then(|| {
            crate::steady::key(
                &self.engine.config,
                &survey.machine,
                survey.places.iter().map(|p| (&p.loc, &p.availability)),
            )
        })
    }

    /// Load: each location's listing and scan cache, the archive's records and agreed
    /// versions (of the changed files only, after a partial replay).
    fn load(&mut self, archive: &Archive, available: &[&Place], scope: Replay) -> Result<Loaded> {
        let (prelisted, partial) = match scope {
            Replay::Partial {
                listings,
                changed,
                others,
            } => (Some(listings), Some((changed, others))),
            Replay::Full(listings) => (Some(listings), None),
            Replay::Unusable | Replay::Done(_) => (None, None),
        };
        let mut loaded = match (prelisted, &partial) {
            (Some(listings), Some((changed, _))) => {
                let names: Vec<&str> = available.iter().map(|p| p.loc.name.as_str()).collect();
                let (records, agreed, caches) = archive.known_of(changed, &names)?;
                Loaded {
                    listings,
                    caches,
                    records,
                    agreed,
                    partial: None,
                }
            }
            (prelisted, _) => self.engine.load_all(archive, available, prelisted)?,
        };
        loaded.partial = partial;
        for (p, listing) in available.iter().zip(&loaded.listings) {
            for f in &listing.skipped {
                tracing::warn!(target: "metasync", "{} in {}: {}", f.name, p.loc.name, f.reason);
                (self.events)(&Event::FileSkipped {
                    file: f.name.clone(),
                    location: p.loc.name.clone(),
                    reason: f.reason.clone(),
                });
                self.warn(format!("{} in {}: {}", f.name, p.loc.name, f.reason));
            }
        }
        Ok(loaded)
    }

    /// The files this run plans: after a partial replay the changed ones; else what the
    /// archive knows (recorded anywhere or agreed) that the patterns still select, and what the
    /// listings found; a resolve's one file.
    fn files(&self, loaded: &Loaded) -> Vec<String> {
        let selector = &self.engine.selector;
        let partial = loaded.partial.as_ref().map(|(changed, _)| changed.clone());
        let mut files: Vec<String> = partial.unwrap_or_else(|| {
            // Sorted and deduplicated as borrowed names, copied once.
            let mut names: Vec<&str> = loaded
                .agreed
                .keys()
                .chain(loaded.records.keys())
                .map(String::as_str)
                .filter(|f| selector.matches(f))
                .chain(
                    loaded
                        .listings
                        .iter()
                        .flat_map(|l| l.files.iter().map(String::as_str)),
                )
                .collect();
            names.sort_unstable();
            names.dedup();
            names.into_iter().map(String::from).collect()
        });
        if let Some(f) = self.ask.only {
            files.retain(|x| x == f);
            if files.is_empty() {
                files.push(f.to_string());
            }
        }
        files
    }

    /// Scan: every location at the same time, a stat per file and a read only where the scan
    /// cache cannot vouch for it; the scene the files are then planned in.
    fn scan<'p>(
        &mut self,
        survey: &Survey,
        available: Vec<&'p Place>,
        loaded: Loaded,
        tally: &mut Tally,
    ) -> Result<Scene<'p>> {
        let files = self.files(&loaded);
        let scan_time = now_ns();
        let run_dir = RunScratch::create(&self.engine.home)?;
        let mut ctx = self.engine.read_ctx();
        ctx.keep_snapshots = Some(run_dir.0.clone());
        let found: Vec<Vec<Found>> = std::thread::scope(|s| {
            let scans: Vec<_> = available
                .iter()
                .zip(&loaded.caches)
                .map(|(p, cache)| {
                    let (files, ctx) = (&files, &ctx);
                    s.spawn(move || scan::scan_location(&p.loc.root, files, cache, ctx))
                })
                .collect();
            scans
                .into_iter()
                .map(|h| h.join().expect("scanning a location panicked"))
                .collect()
        });
        let scans = Scans {
            files,
            locations: available.iter().map(|p| p.loc.name.clone()).collect(),
            found,
        };
        self.learn_scans(&available, &loaded, &scans, scan_time, tally);
        let offline = |keep: &dyn Fn(&String, &Recorded) -> bool| -> HashSet<String> {
            loaded
                .records
                .iter()
                .filter(|(f, recs)| {
                    recs.iter()
                        .any(|(loc, rec)| !scans.locations.contains(loc) && keep(f, rec))
                })
                .map(|(f, _)| f.clone())
                .collect()
        };
        let agreed_offline =
            offline(&|f, rec| loaded.agreed.get(f).is_some_and(|a| a.version == *rec));
        let held_offline = offline(&|_, rec| matches!(rec, Recorded::Present(_)));
        let old_conflicts = survey
            .archive
            .conflicts()?
            .into_iter()
            .map(|c| (c.file.clone(), c))
            .collect();
        tally.backup_folders = loaded
            .listings
            .iter()
            .flat_map(|l| l.backup_folders.iter().cloned())
            .collect();
        Ok(Scene {
            available,
            machine: survey.machine.clone(),
            loaded,
            scans,
            scan_time,
            run_dir,
            agreed_offline,
            held_offline,
            old_conflicts,
        })
    }

    /// What the scans taught the scan cache, and the files skipped where they were.
    fn learn_scans(
        &mut self,
        available: &[&Place],
        loaded: &Loaded,
        scans: &Scans,
        scan_time: i64,
        tally: &mut Tally,
    ) {
        for ((p, cache), found) in available.iter().zip(&loaded.caches).zip(&scans.found) {
            for (file, found) in scans.files.iter().zip(found) {
                let key = || (p.loc.name.clone(), file.clone());
                match found {
                    Found::Present {
                        stat,
                        content,
                        hashed: true,
                    } => {
                        tally.hashed += 1;
                        let entry = scan::cache_entry(stat, content, scan_time);
                        tally.changes.cache.push((key(), Some(entry)));
                    }
                    Found::Absent if cache.contains_key(file) => {
                        tally.changes.cache.push((key(), None))
                    }
                    Found::Skipped(skip) => {
                        tracing::warn!(target: "metasync", "{file} in {}: skipped: {skip}", p.loc.name);
                        (self.events)(&Event::FileSkipped {
                            file: file.clone(),
                            location: p.loc.name.clone(),
                            reason: skip.reason.clone(),
                        });
                        self.warn(format!("{file} in {}: {skip}", p.loc.name));
                    }
                    _ => {}
                }
            }
        }
    }
}

impl Engine {
    /// Each location's folders read once, all locations at the same time, while the archive's
    /// memory of them is loaded.
    fn load_all(
        &self,
        archive: &Archive,
        available: &[&Place],
        mut prelisted: Option<Vec<Listing>>,
    ) -> Result<Loaded> {
        let (looked, known) = std::thread::scope(|s| {
            let walks: Vec<_> = available
                .iter()
                .enumerate()
                .map(|(li, p)| {
                    let reader = archive.reader();
                    let listed = prelisted.as_mut().map(|l| std::mem::take(&mut l[li]));
                    s.spawn(move || {
                        let cache = reader.and_then(|r| r.cache(&p.loc.name));
                        let listing = listed.unwrap_or_else(|| self.selector.list(&p.loc.root));
                        (listing, cache)
                    })
                })
                .collect();
            let known = (|| Ok((archive.records()?, archive.agreed()?)))();
            let looked: Vec<(Listing, Result<_>)> = walks
                .into_iter()
                .map(|w| w.join().expect("listing a location panicked"))
                .collect();
            (looked, known)
        });
        let (records, agreed) = known?;
        let mut listings = Vec::new();
        let mut caches = Vec::new();
        for (listing, cache) in looked {
            listings.push(listing);
            caches.push(cache?);
        }
        Ok(Loaded {
            listings,
            caches,
            records,
            agreed,
            partial: None,
        })
    }
}
