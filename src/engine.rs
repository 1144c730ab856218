//! One run: lock → scan → plan → apply → commit the archive → report.

use crate::archive::{Agreed, Archive, Changes, Recorded};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigSource, MergeMode, Strategy};
use crate::error::{Error, Result};
use crate::kind::Kind;
use crate::location::{self, Availability, Location, NewId};
use crate::plan::{self, Action, Decision, Direction, FileInput, Observed, Side};
use crate::report::*;
use crate::scan::{self, Found};
use crate::select::{Listing, Selector};
use crate::times::now_ns;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Which way a run moves versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bidirectional.
    Sync,
    /// Local's version wins everywhere.
    Push,
    /// Only local is written.
    Pull,
}

impl Mode {
    fn command(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Push => "push",
            Mode::Pull => "pull",
        }
    }
}

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Sync, push or pull.
    pub mode: Mode,
    /// Overrides the config's strategy.
    pub strategy: Option<Strategy>,
    /// Decide and report, write nothing.
    pub dry_run: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            mode: Mode::Sync,
            strategy: None,
            dry_run: false,
        }
    }
}

/// The engine for one home folder.
pub struct Engine {
    home: PathBuf,
    config: Config,
    source: ConfigSource,
    selector: Selector,
    clock: Arc<dyn Clock>,
}

/// A location with its availability this run.
pub(crate) struct Place {
    pub(crate) loc: Location,
    pub(crate) availability: Availability,
}

impl Place {
    pub(crate) fn report(&self) -> LocationReport {
        let (available, reason) = match &self.availability {
            Availability::Available {
                create_folder: true,
                ..
            } => (
                true,
                Some("new: the folder is created on first use".to_string()),
            ),
            Availability::Available { .. } => (true, None),
            Availability::Unavailable(r) => (false, Some(r.clone())),
        };
        LocationReport {
            name: self.loc.name.clone(),
            path: self.loc.root.display().to_string(),
            available,
            reason,
        }
    }
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.with_timezone(&chrono::Local)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// RFC 3339 (local offset) of a time in ns since the epoch.
pub fn ns_to_rfc3339(ns: i128) -> String {
    crate::times::rfc3339(ns)
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// Per location name, the files its patterns select that cannot be synced.
pub(crate) type SkippedByLocation = HashMap<String, Vec<SkippedFile>>;

/// What this run's scan found for each file in each available location, looked up without
/// building keys.
pub(crate) struct Scans {
    /// The run's files, sorted.
    files: Vec<String>,
    /// The available locations, in scan order.
    locations: Vec<String>,
    /// `found[location][file]`.
    found: Vec<Vec<Found>>,
}

impl Scans {
    pub(crate) fn location_index(&self, location: &str) -> Option<usize> {
        self.locations.iter().position(|l| l == location)
    }

    pub(crate) fn get(&self, file: &str, location: &str) -> Option<&Found> {
        let l = self.location_index(location)?;
        let f = self.files.binary_search_by(|x| x.as_str().cmp(file)).ok()?;
        self.found.get(l)?.get(f)
    }
}

impl Engine {
    /// Opens the engine for `home` with the config at `config_path` (or the default one).
    pub fn open(home: impl Into<PathBuf>, config_path: Option<&Path>) -> Result<Engine> {
        let home = home.into();
        let (config, source) = Config::load(&home, config_path)?;
        Engine::with_config(home, config, source)
    }

    /// An engine over an already loaded config.
    pub fn with_config(home: PathBuf, config: Config, source: ConfigSource) -> Result<Engine> {
        let selector = Selector::new(&config.files).map_err(Error::Config)?;
        config.check_locations(&home, &source)?;
        Ok(Engine {
            home,
            config,
            source,
            selector,
            clock: Arc::new(SystemClock),
        })
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Engine {
        self.clock = clock;
        self
    }

    /// The home folder.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where the configuration came from.
    pub fn config_source(&self) -> &ConfigSource {
        &self.source
    }

    pub(crate) fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    pub(crate) fn read_ctx(&self) -> crate::kind::ReadCtx {
        crate::kind::ReadCtx::new(&self.home, &self.config)
    }

    pub(crate) fn selector(&self) -> &Selector {
        &self.selector
    }

    pub(crate) fn lock(&self, what: &str) -> Result<crate::lock::RunLock> {
        crate::lock::acquire(
            &self.home,
            what,
            Duration::from_secs(self.config.lock_wait_secs),
        )
    }

    pub(crate) fn places(&self, known: &HashMap<String, String>) -> Vec<Place> {
        location::all(&self.home, &self.config)
            .into_iter()
            .map(|loc| {
                let availability = location::check(&loc, known.get(&loc.name).map(String::as_str));
                Place { loc, availability }
            })
            .collect()
    }

    /// The synced files this run looks at: what the patterns find plus what the archive knows.
    pub(crate) fn file_set<'a>(
        &self,
        places: impl IntoIterator<Item = &'a Place>,
        archive: Option<&Archive>,
    ) -> Result<BTreeSet<String>> {
        Ok(self.listed_set(places, archive)?.0)
    }

    /// [`Engine::file_set`], and per available location the files its patterns select that
    /// cannot be synced.
    pub(crate) fn listed_set<'a>(
        &self,
        places: impl IntoIterator<Item = &'a Place>,
        archive: Option<&Archive>,
    ) -> Result<(BTreeSet<String>, SkippedByLocation)> {
        let mut files = BTreeSet::new();
        let mut skipped = HashMap::new();
        for p in places.into_iter().filter(|p| p.availability.is_available()) {
            let listing = self.selector.list(&p.loc.root);
            files.extend(listing.files);
            skipped.insert(p.loc.name.clone(), listing.skipped);
        }
        if let Some(a) = archive {
            files.extend(a.known_files()?);
        }
        files.retain(|f| self.selector.matches(f));
        Ok((files, skipped))
    }

    /// `sync`, `push` or `pull`.
    pub fn run(&self, opts: &RunOptions, events: &mut dyn FnMut(&Event)) -> Result<RunReport> {
        let strategy = opts.strategy.unwrap_or(self.config.strategy);
        let direction = match opts.mode {
            Mode::Sync => Direction::Sync(strategy),
            Mode::Push => Direction::Push,
            Mode::Pull => Direction::Pull(strategy),
        };
        let command = opts.mode.command();
        let _lock = self.lock(&format!("metasync {command}"))?;
        self.execute(command, &direction, strategy, None, opts.dry_run, events)
    }

    /// Settles a conflict on `file` with the version in `keep`.
    pub fn resolve(
        &self,
        file: &str,
        keep: &str,
        events: &mut dyn FnMut(&Event),
    ) -> Result<RunReport> {
        if !self.selector.matches(file) {
            return Err(Error::Usage(format!(
                "`{file}` is not a synced file (see `files` in the config)"
            )));
        }
        if keep != location::LOCAL && !self.config.locations.iter().any(|l| l.name == keep) {
            return Err(Error::Usage(format!("no location named `{keep}`")));
        }
        let _lock = self.lock("metasync resolve")?;
        let report = self.execute(
            "resolve",
            &Direction::Keep(keep.to_string()),
            self.config.strategy,
            Some(file),
            false,
            events,
        )?;
        Ok(report)
    }

    fn execute(
        &self,
        command: &str,
        direction: &Direction,
        strategy: Strategy,
        only: Option<&str>,
        dry_run: bool,
        events: &mut dyn FnMut(&Event),
    ) -> Result<RunReport> {
        let started = self.clock.now();
        events(&Event::RunStarted {
            command: command.to_string(),
        });
        tracing::info!(target: "metasync", "{command}: started{}", if dry_run { " (dry run)" } else { "" });
        let mut archive = Archive::open(&self.home)?;
        let machine = archive.machine_id()?;
        let known_ids = archive.location_ids()?;
        let places = self.places(&known_ids);
        let mut warnings = Vec::new();
        let mut errors = Vec::new();
        for p in &places {
            if let Availability::Unavailable(reason) = &p.availability {
                tracing::warn!(target: "metasync", "{}: skipped: {reason}", p.loc.name);
                events(&Event::LocationUnavailable {
                    location: p.loc.name.clone(),
                    reason: reason.clone(),
                });
                warnings.push(format!("{} unavailable: {reason}", p.loc.name));
            }
        }
        let available: Vec<&Place> = places
            .iter()
            .filter(|p| p.availability.is_available())
            .collect();

        // A run that changed nothing is replayed when nothing has changed since
        // (crate::steady); otherwise its listings serve the full run.
        let steady_key = (!dry_run
            && only.is_none()
            && !matches!(direction, Direction::Keep(_))
            && places.iter().all(|p| {
                matches!(
                    p.availability,
                    Availability::Available {
                        create_folder: false,
                        new_id: None
                    }
                )
            }))
        .then(|| {
            crate::steady::key(
                &self.config,
                &machine,
                places.iter().map(|p| (&p.loc, &p.availability)),
            )
        });
        let mut prelisted: Option<Vec<Listing>> = None;
        // Only these files are planned; the others are in sync as these outcomes say.
        let mut partial: Option<(Vec<String>, Vec<FileOutcome>)> = None;
        if let (Some(key), Some((stored, body))) = (&steady_key, archive.steady()?) {
            if stored == *key {
                match self.replay_steady(
                    &mut archive,
                    &body,
                    &places,
                    &available,
                    command,
                    strategy,
                    started,
                    events,
                )? {
                    Replay::Done(report) => return Ok(*report),
                    Replay::Partial {
                        listings,
                        changed,
                        others,
                    } => {
                        prelisted = Some(listings);
                        partial = Some((changed, others));
                    }
                    Replay::Full(listings) => prelisted = Some(listings),
                    Replay::Unusable => {}
                }
            }
        }

        let (listings, caches, records, agreed) = match (prelisted, &partial) {
            // What the archive knows of the changed files only.
            (Some(listings), Some((changed, _))) => {
                let names: Vec<&str> = available.iter().map(|p| p.loc.name.as_str()).collect();
                let (records, agreed, caches) = archive.known_of(changed, &names)?;
                (listings, caches, records, agreed)
            }
            (mut prelisted, _) => {
                // Each location's folders are read once, all locations at the same time, while
                // the archive's memory of them is loaded.
                let (looked, known) = std::thread::scope(|s| {
                    let walks: Vec<_> = available
                        .iter()
                        .enumerate()
                        .map(|(li, p)| {
                            let reader = archive.reader();
                            let listed = prelisted.as_mut().map(|l| std::mem::take(&mut l[li]));
                            s.spawn(move || {
                                let cache = reader.and_then(|r| r.cache(&p.loc.name));
                                let listing =
                                    listed.unwrap_or_else(|| self.selector.list(&p.loc.root));
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
                (listings, caches, records, agreed)
            }
        };
        for (p, listing) in available.iter().zip(&listings) {
            for f in &listing.skipped {
                tracing::warn!(target: "metasync", "{} in {}: {}", f.name, p.loc.name, f.reason);
                events(&Event::FileSkipped {
                    file: f.name.clone(),
                    location: p.loc.name.clone(),
                    reason: f.reason.clone(),
                });
                warnings.push(format!("{} in {}: {}", f.name, p.loc.name, f.reason));
            }
        }
        let mut files: Vec<String> = match &partial {
            Some((changed, _)) => changed.clone(),
            None => {
                // The files the archive knows (recorded anywhere or agreed) that the patterns
                // still select, and what the listings found: sorted and deduplicated as
                // borrowed names, copied once.
                let mut names: Vec<&str> = agreed
                    .keys()
                    .chain(records.keys())
                    .map(String::as_str)
                    .filter(|f| self.selector.matches(f))
                    .chain(
                        listings
                            .iter()
                            .flat_map(|l| l.files.iter().map(String::as_str)),
                    )
                    .collect();
                names.sort_unstable();
                names.dedup();
                names.into_iter().map(String::from).collect()
            }
        };
        if let Some(f) = only {
            files.retain(|x| x == f);
            if files.is_empty() {
                files.push(f.to_string());
            }
        }

        let mut changes = Changes::default();
        let scan_time = now_ns();
        let run_dir = RunScratch::create(&self.home)?;
        let mut ctx = self.read_ctx();
        ctx.keep_snapshots = Some(run_dir.0.clone());
        // Every location is scanned at the same time: a stat per file, a read only where the
        // scan cache cannot vouch for it.
        let found: Vec<Vec<Found>> = std::thread::scope(|s| {
            let scans: Vec<_> = available
                .iter()
                .zip(&caches)
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
        let mut hashed = 0u64;
        for ((p, cache), found) in available.iter().zip(&caches).zip(&found) {
            for (file, found) in files.iter().zip(found) {
                match found {
                    Found::Present {
                        stat,
                        content,
                        hashed: true,
                    } => {
                        hashed += 1;
                        changes.cache.push((
                            (p.loc.name.clone(), file.clone()),
                            Some(scan::cache_entry(stat, content, scan_time)),
                        ));
                    }
                    Found::Absent if cache.contains_key(file) => changes
                        .cache
                        .push(((p.loc.name.clone(), file.clone()), None)),
                    Found::Skipped(reason) => {
                        tracing::warn!(target: "metasync", "{file} in {}: skipped: {reason}", p.loc.name);
                        events(&Event::FileSkipped {
                            file: file.clone(),
                            location: p.loc.name.clone(),
                            reason: reason.clone(),
                        });
                        warnings.push(format!("{file} in {}: {reason}", p.loc.name));
                    }
                    _ => {}
                }
            }
        }
        let scans = Scans {
            files,
            locations: available.iter().map(|p| p.loc.name.clone()).collect(),
            found,
        };
        let files = &scans.files;

        // Files whose agreed version an unavailable location was last seen holding.
        let agreed_offline: HashSet<&str> = records
            .iter()
            .filter(|(f, recs)| {
                recs.iter().any(|(loc, rec)| {
                    !scans.locations.contains(loc)
                        && agreed.get(*f).is_some_and(|a| a.version == *rec)
                })
            })
            .map(|(f, _)| f.as_str())
            .collect();
        let old_conflicts: HashMap<String, ConflictReport> = archive
            .conflicts()?
            .into_iter()
            .map(|c| (c.file.clone(), c))
            .collect();
        let mut outcomes = Vec::new();
        let mut actions_done = Vec::new();
        let mut conflicts = Vec::new();
        let mut ready: HashSet<String> = HashSet::new();
        let mut written_count = 0u64;
        let mut written_versions = HashMap::new();
        let mut backup_folders: BTreeSet<PathBuf> = listings
            .iter()
            .flat_map(|l| l.backup_folders.iter().cloned())
            .collect();
        let mut row_conflicts_out = Vec::new();

        for (fi, file) in files.iter().enumerate() {
            let recorded = records.get(file);
            // The common case first: a plain file every location holds as agreed and as
            // recorded (plan::settled; databases are always planned in full, for their base).
            let recorded_at = |loc: &str| {
                recorded.and_then(|r| r.iter().find(|(l, _)| l == loc).map(|(_, rec)| rec))
            };
            let agreed_version = agreed.get(file).map(|a| &a.version);
            if !old_conflicts.contains_key(file)
                && plan::settled(
                    direction,
                    agreed_version,
                    available.iter().enumerate().map(|(li, p)| {
                        let held = match &scans.found[li][fi] {
                            Found::Present { content, .. } if content.kind == Kind::Plain => {
                                Some(content.hash.as_str())
                            }
                            _ => None,
                        };
                        (held, recorded_at(&p.loc.name))
                    }),
                )
            {
                outcomes.push(FileOutcome {
                    file: file.clone(),
                    outcome: "in_sync".into(),
                    winner: None,
                    sha256: agreed_version.and_then(|v| v.hash().map(String::from)),
                    reason: "every location holds it".into(),
                });
                continue;
            }
            let sides: Vec<Side> = available
                .iter()
                .enumerate()
                .map(|(li, p)| Side {
                    location: p.loc.name.clone(),
                    local: p.loc.is_local(),
                    observed: self.observed(&scans.found[li][fi], agreed.get(file)),
                    recorded: recorded_at(&p.loc.name).cloned(),
                })
                .collect();
            let all_databases = (0..available.len()).all(|li| match &scans.found[li][fi] {
                Found::Present { content, .. } => content.kind == Kind::Sqlite,
                _ => true,
            });
            let input = FileInput {
                file: file.clone(),
                agreed: agreed.get(file).map(|a| a.version.clone()),
                sides,
                propagate_deletes: self.config.propagate_deletes,
                mergeable: all_databases && self.config.merge_mode_for(file) == MergeMode::Rows,
                agreed_elsewhere: agreed_offline.contains(file.as_str()),
            };
            let mut planned = plan::plan_file(&input, direction);
            let mut merged: Option<Merged> = None;
            let mut held_rows = Vec::new();
            if let Decision::Merge {
                candidates,
                base,
                fallback,
            } = planned.decision.clone()
            {
                let attempt = if dry_run {
                    Err("not attempted in a dry run".to_string())
                } else {
                    self.try_merge(
                        file,
                        &input,
                        &candidates,
                        &base,
                        direction,
                        &scans,
                        &run_dir.0,
                        agreed.get(file),
                    )
                };
                match attempt {
                    Ok(MergeResult::Merged(m)) => {
                        let winner = Recorded::Present(m.hash.clone());
                        planned.actions =
                            plan::actions_for(&input, &winner, MERGE_SOURCE, direction);
                        let reason = if m.row_conflicts.is_empty() {
                            format!(
                                "merged row by row ({} row change(s) from {})",
                                m.rows_changed,
                                candidates.join(" and ")
                            )
                        } else {
                            format!(
                                "merged row by row ({} row change(s) from {}; {} row conflict(s) settled by {})",
                                m.rows_changed,
                                candidates.join(" and "),
                                m.row_conflicts.len(),
                                strategy.as_str()
                            )
                        };
                        for rc in &m.row_conflicts {
                            warnings.push(format!(
                                "{file}: row conflict in {} {}: kept {}'s value",
                                rc.table,
                                rc.key,
                                rc.winner.as_deref().unwrap_or("?")
                            ));
                        }
                        planned.decision = Decision::Propagate {
                            winner,
                            source: MERGE_SOURCE.into(),
                            reason,
                        };
                        merged = Some(*m);
                    }
                    Ok(MergeResult::Held(rows)) => {
                        let reason = format!(
                            "{} row(s) changed differently in {} (strategy manual)",
                            rows.len(),
                            candidates.join(" and ")
                        );
                        planned.decision = plan::conflict_at(&input, &candidates, reason);
                        held_rows = rows;
                    }
                    Ok(MergeResult::Shrunk(why)) => {
                        let reason = format!("the merged version is held back: {why}");
                        planned.decision = plan::conflict_at(&input, &candidates, reason);
                    }
                    Err(why) => {
                        let mut fallback = *fallback;
                        if let Decision::Propagate { reason, .. }
                        | Decision::Conflict { reason, .. } = &mut fallback
                        {
                            *reason = format!("{reason} (row merge not possible: {why})");
                        }
                        if !dry_run {
                            warnings.push(format!(
                                "{file}: row merge not possible ({why}); file-level strategy {}",
                                strategy.as_str()
                            ));
                        }
                        if let Decision::Propagate { winner, source, .. } = &fallback {
                            planned.actions = plan::actions_for(&input, winner, source, direction);
                        }
                        planned.decision = fallback;
                    }
                }
            }
            for (loc, detail) in &planned.refused {
                tracing::warn!(target: "metasync", "{file} in {loc}: corrupt version refused: {detail}");
                events(&Event::CorruptRefused {
                    file: file.clone(),
                    location: loc.clone(),
                    detail: detail.clone(),
                });
                warnings.push(format!(
                    "{file} in {loc} is corrupt and was refused: {detail}"
                ));
            }
            let (outcome, winner_name, winner_hash, reason) = match &planned.decision {
                Decision::InSync(v) => (
                    "in_sync",
                    None,
                    v.hash().map(String::from),
                    "every location holds it".to_string(),
                ),
                Decision::Propagate {
                    winner,
                    source,
                    reason,
                } => (
                    "propagated",
                    Some(source.clone()),
                    winner.hash().map(String::from),
                    reason.clone(),
                ),
                Decision::Conflict { reason, .. } => ("conflict", None, None, reason.clone()),
                Decision::Merge { .. } => {
                    ("skipped", None, None, "row merge not decided".to_string())
                }
                Decision::Stuck { reason, failure } => {
                    if *failure {
                        errors.push(format!("{file}: {reason}"));
                    } else {
                        warnings.push(format!("{file}: {reason}"));
                    }
                    ("skipped", None, None, reason.clone())
                }
            };
            let mut outcome = outcome.to_string();

            if let Decision::Conflict { candidates, reason } = &planned.decision {
                let report = ConflictReport {
                    file: file.clone(),
                    detected: old_conflicts
                        .get(file)
                        .map(|c| c.detected.clone())
                        .unwrap_or_else(|| rfc3339(started)),
                    reason: reason.clone(),
                    candidates: candidates
                        .iter()
                        .map(|(loc, _)| self.candidate(&scans, file, loc))
                        .collect(),
                    rows: held_rows.clone(),
                };
                if !old_conflicts.contains_key(file) {
                    events(&Event::Conflict(report.clone()));
                }
                tracing::warn!(target: "metasync", "{file}: conflict: {reason}");
                changes.conflicts.push((file.clone(), Some(report.clone())));
                conflicts.push(report);
            }

            // Carry out the actions, location by location.
            let mut written: HashSet<String> = HashSet::new();
            let mut attempted: HashSet<String> = HashSet::new();
            let mut untouched: HashSet<String> = HashSet::new();
            if let Decision::Propagate { source, .. } = &planned.decision {
                let source_found = match &merged {
                    Some(m) if source == MERGE_SOURCE => Some((m.path.clone(), &m.found)),
                    _ => self
                        .root_of(source)
                        .and_then(|root| scans.get(file, source).map(|f| (root.join(file), f))),
                };
                let mut i = 0;
                while i < planned.actions.len() {
                    let target = action_target(&planned.actions[i]).to_string();
                    let mut j = i;
                    while j < planned.actions.len() && action_target(&planned.actions[j]) == target
                    {
                        j += 1;
                    }
                    let group = &planned.actions[i..j];
                    i = j;
                    // The source's snapshot may become this target's file (no copy) only when
                    // nothing reads it afterwards: no later target copies it, and the base for
                    // row merges is not kept from it after the writes (no base is kept, or it
                    // is kept from the snapshot's own base copy). So at most one target gets
                    // it, and it never shares an inode with anything.
                    let base_elsewhere = self.config.merge_mode_for(file) != MergeMode::Rows
                        || source_found.as_ref().is_some_and(|(_, f)| {
                            matches!(f, Found::Present { content, .. } if content
                                .snapshot
                                .as_deref()
                                .is_some_and(|p| crate::kind::base_copy_of(p).is_file()))
                        });
                    let snapshot_use = if base_elsewhere
                        && !planned.actions[j..]
                            .iter()
                            .any(|a| matches!(a, Action::Copy { .. }))
                    {
                        crate::kind::SnapshotUse::Move
                    } else {
                        crate::kind::SnapshotUse::Copy
                    };
                    let place = available.iter().find(|p| p.loc.name == target).copied();
                    let Some(place) = place else { continue };
                    attempted.insert(target.clone());
                    if dry_run {
                        for a in group {
                            let r = action_report(file, a, String::new(), false, None);
                            actions_done.push(r);
                        }
                        continue;
                    }
                    match self.apply_group(
                        file,
                        place,
                        group,
                        source_found.as_ref().map(|(p, f)| (p.as_path(), *f)),
                        snapshot_use,
                        &scans,
                        &machine,
                        &mut ready,
                        &mut changes,
                        events,
                    ) {
                        Ok(reports) => {
                            written.insert(target.clone());
                            written_count += 1;
                            actions_done.extend(reports);
                        }
                        Err(failure) => {
                            let (reports, e, changed_meanwhile) = *failure;
                            actions_done.extend(reports);
                            if changed_meanwhile {
                                untouched.insert(target.clone());
                                warnings.push(format!("{file} in {target}: {e}"));
                            } else {
                                errors.push(format!("{file} in {target}: {e}"));
                            }
                            outcome = "failed".into();
                        }
                    }
                }
            }
            let decided = match &planned.decision {
                Decision::Propagate { winner, .. } | Decision::InSync(winner) => Some(winner),
                _ => None,
            };
            if let (Some(winner), false) = (decided, dry_run) {
                let after = self.record_decided(
                    file,
                    winner,
                    &input,
                    &written,
                    &untouched,
                    &scans,
                    merged.as_ref().map(|m| m.facts.clone()),
                    agreed.get(file),
                    &mut changes,
                );
                // Bases of older versions some location still holds as its last synced one
                // stay: a change made there is merged against them (plan::merge_base).
                let offline = recorded
                    .into_iter()
                    .flatten()
                    .filter(|(l, _)| !scans.locations.contains(l))
                    .map(|(_, r)| r);
                let older: Vec<&str> = after
                    .iter()
                    .chain(offline)
                    .filter_map(Recorded::hash)
                    .filter(|h| Some(*h) != winner.hash())
                    .collect();
                self.keep_base(
                    file,
                    winner,
                    &older,
                    &input,
                    &scans,
                    merged.as_ref(),
                    &run_dir.0,
                    &mut warnings,
                );
                if let Some(m) = &merged {
                    changes
                        .row_conflicts
                        .extend(m.row_conflicts.iter().cloned());
                    row_conflicts_out.extend(m.row_conflicts.iter().cloned());
                }
            }
            // What retention after the run may take as known instead of reading it again.
            if !dry_run {
                for p in &available {
                    if attempted.contains(&p.loc.name) {
                        if let Some(dir) = p.loc.path_of(file).parent() {
                            backup_folders.insert(dir.to_path_buf());
                        }
                    }
                    if !written.contains(&p.loc.name) {
                        continue;
                    }
                    let now = scan::Stat::of(&p.loc.path_of(file)).ok().flatten();
                    if let (Some(h), Some((stat, _))) = (&winner_hash, now) {
                        written_versions
                            .insert((p.loc.name.clone(), file.clone()), (stat, h.clone()));
                    }
                }
            }
            if matches!(
                planned.decision,
                Decision::InSync(_) | Decision::Propagate { .. }
            ) && old_conflicts.contains_key(file)
                && outcome != "failed"
            {
                changes.conflicts.push((file.clone(), None));
            }
            outcomes.push(FileOutcome {
                file: file.clone(),
                outcome,
                winner: winner_name,
                sha256: winner_hash,
                reason,
            });
        }

        // A partial run's report lists every file, the unchanged ones as in sync.
        let planned_all = partial.is_none();
        if let Some((_, others)) = partial.take() {
            outcomes = merge_by_file(outcomes, others);
        }

        // Identity markers: adopt what another machine wrote; write ours on first use.
        for p in &available {
            if let Availability::Available {
                new_id: Some(id),
                create_folder,
            } = &p.availability
            {
                match id {
                    NewId::Adopt(m) => changes
                        .location_ids
                        .push((p.loc.name.clone(), Some(m.clone()))),
                    NewId::Create
                        if !dry_run && (!create_folder || ready.contains(&p.loc.name)) =>
                    {
                        if !ready.contains(&p.loc.name) {
                            if let Err(e) = self.make_ready(p, &mut ready, &mut changes) {
                                errors.push(e.to_string());
                            }
                        }
                    }
                    NewId::Create => {}
                }
            }
        }
        if !dry_run {
            clean_temps(&listings, &machine);
        }

        let finished = self.clock.now();
        let exit_code = if !errors.is_empty() {
            1
        } else if !conflicts.is_empty() {
            3
        } else {
            0
        };
        let result = if dry_run {
            "dry_run"
        } else if exit_code == 1 {
            "failed"
        } else if exit_code == 3 {
            "conflict"
        } else {
            "ok"
        };
        let summary = run_summary(
            outcomes.len(),
            written_count,
            conflicts.len(),
            places.len() - available.len(),
        );
        changes.now = rfc3339(finished);
        changes.run = Some(RunSummary {
            id: 0,
            command: command.to_string(),
            started: rfc3339(started),
            finished: rfc3339(finished),
            result: result.to_string(),
            written: written_count,
            summary: summary.clone(),
        });
        if dry_run {
            changes.records.clear();
            changes.agreed.clear();
            changes.conflicts.clear();
            changes.location_ids.clear();
        }
        if let (Some(key), true) = (&steady_key, planned_all) {
            let quiet = written_count == 0
                && actions_done.is_empty()
                && warnings.is_empty()
                && errors.is_empty()
                && conflicts.is_empty()
                && old_conflicts.is_empty();
            if quiet {
                changes.steady =
                    crate::steady::of_run(files, &scans.found, &caches, &outcomes, scan_time)
                        .map(|s| (key.clone(), s.encode()));
            }
        }
        crate::failpoint::hit("before_archive_commit");
        archive.commit(&changes)?;
        if !dry_run {
            let run_versions = crate::backups::RunVersions {
                files,
                scans: &scans,
                caches: &caches,
                written: written_versions,
                backup_folders,
            };
            let known = only.is_none().then_some(&run_versions);
            if let Err(e) = crate::backups::prune_after_sync(self, &available, known) {
                warnings.push(format!("backup retention: {e}"));
            }
        }
        tracing::info!(target: "metasync", "{command}: {result}: {summary}");
        events(&Event::RunFinished {
            result: result.to_string(),
            summary,
        });
        Ok(RunReport {
            command: command.to_string(),
            dry_run,
            strategy: strategy.as_str().to_string(),
            started: rfc3339(started),
            finished: rfc3339(finished),
            locations: places.iter().map(Place::report).collect(),
            files: outcomes,
            actions: actions_done,
            conflicts,
            warnings,
            errors,
            row_conflicts: row_conflicts_out,
            hashed,
            exit_code,
        })
    }

    /// Replays the stored steady run (`body`, see crate::steady) when every location still
    /// is as it saw: lists each location (all at once) and stats its files, nothing more.
    /// When a few files changed, only those need planning; when more did (or retention may
    /// have backups to thin out), all of them.
    #[allow(clippy::too_many_arguments)]
    fn replay_steady(
        &self,
        archive: &mut Archive,
        body: &[u8],
        places: &[Place],
        available: &[&Place],
        command: &str,
        strategy: Strategy,
        started: chrono::DateTime<chrono::Utc>,
        events: &mut dyn FnMut(&Event),
    ) -> Result<Replay> {
        let Some(steady) = crate::steady::Steady::decode(body) else {
            return Ok(Replay::Unusable);
        };
        if steady.locations != available.len() {
            return Ok(Replay::Unusable);
        }
        // Per location: its listing, what changed there, and whether retention could thin out
        // its backups.
        let looked: Vec<(Listing, Vec<String>, bool)> = std::thread::scope(|s| {
            let looks: Vec<_> = available
                .iter()
                .enumerate()
                .map(|(li, p)| {
                    let steady = &steady;
                    s.spawn(move || {
                        let listing = self.selector.list(&p.loc.root);
                        let changed: Vec<String> = steady
                            .changed_in(li, &p.loc.root, &listing.files)
                            .into_iter()
                            .map(String::from)
                            .collect();
                        let prunable = !listing.backup_folders.is_empty()
                            && crate::backups::could_prune(
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
        });
        let mut changed: Vec<String> = looked.iter().flat_map(|(_, c, _)| c.clone()).collect();
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
                    outcome: "in_sync".into(),
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
        let files = settled(&[]);
        let finished = self.clock.now();
        let summary = run_summary(files.len(), 0, 0, places.len() - available.len());
        let changes = Changes {
            now: rfc3339(finished),
            run: Some(RunSummary {
                id: 0,
                command: command.to_string(),
                started: rfc3339(started),
                finished: rfc3339(finished),
                result: "ok".into(),
                written: 0,
                summary: summary.clone(),
            }),
            ..Changes::default()
        };
        crate::failpoint::hit("before_archive_commit");
        archive.commit(&changes)?;
        tracing::info!(target: "metasync", "{command}: ok: {summary} (unchanged since the last run)");
        events(&Event::RunFinished {
            result: "ok".into(),
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

    /// The plan's view of a scan.
    fn observed(&self, found: &Found, agreed: Option<&Agreed>) -> Observed {
        match found {
            Found::Present { stat, content, .. } => Observed::Present(plan::Version {
                hash: content.hash.clone(),
                mtime_ns: stat.mtime_ns,
                corrupt: (!content.facts.integrity.is_empty())
                    .then(|| content.facts.integrity.join("; ")),
                hold: agreed.and_then(|a| {
                    crate::kind::shrink_reason(
                        a,
                        &content.facts,
                        self.config.sqlite.max_shrink_percent,
                    )
                }),
            }),
            Found::Absent => Observed::Absent,
            Found::Skipped(r) => Observed::Skipped(r.clone()),
        }
    }

    pub(crate) fn candidate(&self, scans: &Scans, file: &str, loc: &str) -> Candidate {
        match scans.get(file, loc) {
            Some(Found::Present { stat, content, .. }) => Candidate {
                location: loc.to_string(),
                sha256: Some(content.hash.clone()),
                size: Some(stat.size),
                mtime: Some(ns_to_rfc3339(stat.mtime_ns)),
                entities: content.facts.entities,
                conversations: content.facts.conversations,
            },
            _ => Candidate {
                location: loc.to_string(),
                sha256: None,
                size: None,
                mtime: None,
                entities: None,
                conversations: None,
            },
        }
    }

    /// Tries a row merge of the versions at `candidates` against the base snapshot of the
    /// agreed version. `Err` says why the file-level strategy applies instead.
    #[allow(clippy::too_many_arguments)]
    fn try_merge(
        &self,
        file: &str,
        input: &FileInput,
        candidates: &[String],
        base_hash: &str,
        direction: &Direction,
        scans: &Scans,
        run_dir: &Path,
        agreed: Option<&Agreed>,
    ) -> std::result::Result<MergeResult, String> {
        let agreed = agreed.ok_or("no agreed version")?;
        let base = crate::merge::base_of(&self.home, file, base_hash).ok_or(
            if Some(base_hash) == agreed.version.hash() {
                "no base snapshot of the last agreed version is kept yet"
            } else {
                "no base snapshot of the older version it changed is kept"
            },
        )?;
        let strategy = match direction {
            Direction::Sync(s) | Direction::Pull(s) => *s,
            Direction::Push | Direction::Keep(_) => Strategy::Newest,
        };
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
                let hash = crate::sqlite::logical_hash(&path, &opts).map_err(|e| e.to_string())?;
                let counts =
                    crate::sqlite::table_counts(&path, &opts).map_err(|e| e.to_string())?;
                let facts = crate::kind::Facts {
                    integrity: Vec::new(),
                    entities: counts.entities(),
                    conversations: counts.conversations(),
                };
                if let Some(why) = crate::kind::shrink_reason(
                    agreed,
                    &facts,
                    self.config.sqlite.max_shrink_percent,
                ) {
                    return Ok(MergeResult::Shrunk(why));
                }
                let now = now_ns();
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                let found = Found::Present {
                    stat: scan::Stat {
                        size,
                        mtime_ns: now.into(),
                        ctime_ns: now.into(),
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
    #[allow(clippy::too_many_arguments)]
    fn keep_base(
        &self,
        file: &str,
        winner: &Recorded,
        older: &[&str],
        input: &FileInput,
        scans: &Scans,
        merged: Option<&Merged>,
        run_dir: &Path,
        warnings: &mut Vec<String>,
    ) {
        if self.config.merge_mode_for(file) != MergeMode::Rows {
            return;
        }
        let Recorded::Present(hash) = winner else {
            crate::merge::drop_bases_except(&self.home, file, older);
            return;
        };
        let mut keep = older.to_vec();
        keep.push(hash);
        let found_db = |loc: &str| match scans.get(file, loc) {
            Some(Found::Present { content, .. }) if content.kind == Kind::Sqlite => Some(content),
            _ => None,
        };
        if merged.is_none() && !input.sides.iter().any(|s| found_db(&s.location).is_some()) {
            return;
        }
        if crate::merge::base_of(&self.home, file, hash).is_some() {
            crate::merge::drop_bases_except(&self.home, file, &keep);
            return;
        }
        let mut source = merged.filter(|m| &m.hash == hash).map(|m| m.path.clone());
        if source.is_none() {
            source = input.sides.iter().find_map(|s| {
                found_db(&s.location)
                    .filter(|c| &c.hash == hash)
                    .and_then(|c| c.snapshot.as_deref())
                    .and_then(crate::kind::base_source)
            });
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
                    Ok(()) => crate::merge::drop_bases_except(&self.home, file, &keep),
                    Err(e) => {
                        warnings.push(format!("{file}: cannot keep the base for row merges: {e}"))
                    }
                }
            }
            None => warnings.push(format!(
                "{file}: no copy of the agreed version to keep as the base for row merges"
            )),
        }
    }

    /// Creates a location's folder and marker before its first write.
    fn make_ready(
        &self,
        place: &Place,
        ready: &mut HashSet<String>,
        changes: &mut Changes,
    ) -> Result<()> {
        if ready.contains(&place.loc.name) {
            return Ok(());
        }
        if let Availability::Available {
            create_folder,
            new_id,
        } = &place.availability
        {
            if *create_folder {
                std::fs::create_dir(&place.loc.root)
                    .or_else(|e| {
                        if place.loc.root.is_dir() {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .map_err(|e| Error::io("create folder", &place.loc.root, e))?;
            }
            if let Some(NewId::Create) = new_id {
                let id = crate::ids::random_hex(16);
                location::write_marker(
                    &place.loc.root,
                    &id,
                    &place.loc.name,
                    &rfc3339(self.clock.now()),
                )
                .map_err(|e| {
                    Error::io("write marker", place.loc.root.join(crate::names::MARKER), e)
                })?;
                changes
                    .location_ids
                    .push((place.loc.name.clone(), Some(id)));
            }
        }
        ready.insert(place.loc.name.clone());
        Ok(())
    }

    /// Backs up then writes (or deletes) one file in one location. On error: the reports so
    /// far, the error, and whether it was because the target changed since the scan.
    #[allow(clippy::too_many_arguments)]
    fn apply_group(
        &self,
        file: &str,
        place: &Place,
        group: &[Action],
        source_found: Option<(&Path, &Found)>,
        snapshot_use: crate::kind::SnapshotUse,
        scans: &Scans,
        machine: &str,
        ready: &mut HashSet<String>,
        changes: &mut Changes,
        events: &mut dyn FnMut(&Event),
    ) -> std::result::Result<Vec<ActionReport>, GroupFailure> {
        let mut reports = Vec::new();
        let dest = place.loc.path_of(file);
        let scanned = scans.get(file, &place.loc.name);
        // Guard: the target must still be what was scanned, or a fresh edit would be lost.
        // Checked before the backup and again right before the write (a backup of a large
        // database takes a while, and its program may commit meanwhile).
        let scanned_stat = match scanned {
            Some(Found::Present { stat, .. }) => Some(stat.clone()),
            _ => None,
        };
        // After our own backup a hard link has moved the ctime: compare the rest.
        let same = |a: &scan::Stat, b: &scan::Stat| {
            (a.size, a.mtime_ns, a.ino, a.side) == (b.size, b.mtime_ns, b.ino, b.side)
        };
        let database =
            matches!(scanned, Some(Found::Present { content, .. }) if content.kind == Kind::Sqlite);
        let stat_now = || {
            scan::Stat::of_kind(&dest, database)
                .ok()
                .flatten()
                .map(|(s, _)| s)
        };
        let unchanged = || {
            let now = stat_now();
            match (&now, &scanned_stat) {
                (Some(a), Some(b)) => same(a, b),
                (None, None) => true,
                _ => false,
            }
        };
        let moved =
            || Error::Refused("changed since it was scanned; it will be synced next run".into());
        let first = stat_now();
        if first != scanned_stat {
            return Err(Box::new((reports, moved(), true)));
        }
        if let Err(e) = self.make_ready(place, ready, changes) {
            return Err(Box::new((reports, e, false)));
        }
        let at = self.clock.now_local().naive_local();
        for action in group {
            // The location's folder must still be there: a write would otherwise re-create
            // it (a drive unplugged or a folder moved away during the run).
            // Like an unavailable location, a warning; and its record is kept (its scan may
            // have seen the files as absent because the folder was already gone).
            if !place.loc.root.is_dir() {
                let e = Error::Refused(format!(
                    "{} disappeared during the run; nothing written there",
                    place.loc.root.display()
                ));
                return Err(Box::new((reports, e, true)));
            }
            if matches!(action, Action::Copy { .. } | Action::Delete { .. }) && !unchanged() {
                return Err(Box::new((reports, moved(), true)));
            }
            let result = match action {
                Action::Backup { .. } => {
                    let kind = match scanned {
                        Some(Found::Present { content, .. }) => content.kind,
                        _ => Kind::Plain,
                    };
                    let method = crate::apply::backup_method(kind, place.loc.is_local());
                    let sqlite = crate::sqlite::SqliteOptions::from(&self.config.sqlite);
                    let made = crate::apply::backup(&dest, at, method, &sqlite);
                    crate::failpoint::hit("after_backup");
                    made.map(|p| p.display().to_string())
                }
                Action::Copy { from, hash, .. } => {
                    let Some((src, Found::Present { stat, content, .. })) = source_found else {
                        return Err(Box::new((
                            reports,
                            Error::Refused(format!("no source for {file} in {from}")),
                            false,
                        )));
                    };
                    let mtime = crate::times::system_time(stat.mtime_ns);
                    crate::kind::write_version(
                        content.kind,
                        src,
                        &dest,
                        place.loc.is_local(),
                        hash,
                        mtime,
                        machine,
                        &self.read_ctx(),
                        content.snapshot.as_deref().map(|p| (p, snapshot_use)),
                    )
                    .map(|_| format!("from {from}"))
                }
                Action::Delete { .. } => crate::apply::delete_to_backup(&dest, at)
                    .map(|p| format!("moved to {}", p.display())),
            };
            match result {
                Ok(detail) => {
                    let r = action_report(file, action, detail, true, None);
                    tracing::info!(target: "metasync", "{file} in {}: {} {}", place.loc.name, r.action, r.detail);
                    events(&Event::Action(r.clone()));
                    reports.push(r);
                }
                Err(e) => {
                    let r = action_report(file, action, String::new(), false, Some(e.to_string()));
                    tracing::error!(target: "metasync", "{file} in {}: {} failed: {e}", place.loc.name, r.action);
                    events(&Event::Action(r.clone()));
                    reports.push(r);
                    let changed = matches!(e, Error::Refused(ref m) if m.contains("changed while"));
                    return Err(Box::new((reports, e, changed)));
                }
            }
        }
        // What was just written is known exactly: remember it, so the next run need not read
        // it again. Trusted at once (not subject to the racy-clean wait): the copy carries the
        // source's old mtime, so any later edit moves mtime and ctime away from this stat.
        let written = group.iter().any(|a| matches!(a, Action::Copy { .. }));
        let entry = match (written, source_found) {
            (true, Some((_, Found::Present { content, .. }))) => {
                let database = content.kind == Kind::Sqlite;
                scan::Stat::of_kind(&dest, database)
                    .ok()
                    .flatten()
                    .map(|(stat, _)| {
                        let trusted = stat
                            .mtime_ns
                            .max(stat.ctime_ns)
                            .max(stat.side.map_or(0, |s| s.1))
                            .saturating_add(i128::from(scan::RACY_NS) + 1);
                        // Past 2262 (i64 ns) the entry stays racy: read again each run.
                        let trusted = i64::try_from(trusted).unwrap_or(i64::MAX);
                        let mut e = scan::cache_entry(&stat, content, trusted);
                        e.hash = group
                            .iter()
                            .find_map(|a| match a {
                                Action::Copy { hash, .. } => Some(hash.clone()),
                                _ => None,
                            })
                            .unwrap_or(e.hash);
                        e
                    })
            }
            _ => None,
        };
        changes
            .cache
            .push(((place.loc.name.clone(), file.to_string()), entry));
        Ok(reports)
    }

    pub(crate) fn root_of(&self, name: &str) -> Option<PathBuf> {
        location::all(&self.home, &self.config)
            .into_iter()
            .find(|l| l.name == name)
            .map(|l| l.root)
    }

    /// What the archive learns from a decided file: written locations hold the winner; the
    /// others that took part hold what was scanned there (a loser not yet overwritten stays a
    /// loser: it is not "changed" next time); skipped or raced locations keep their record.
    #[allow(clippy::too_many_arguments)]
    fn record_decided(
        &self,
        file: &str,
        winner: &Recorded,
        input: &FileInput,
        written: &HashSet<String>,
        untouched: &HashSet<String>,
        scans: &Scans,
        known_facts: Option<crate::kind::Facts>,
        old_agreed: Option<&Agreed>,
        changes: &mut Changes,
    ) -> Vec<Recorded> {
        let mut winner_facts = known_facts;
        let mut after = Vec::new();
        for side in &input.sides {
            if untouched.contains(&side.location) {
                after.extend(side.recorded.clone());
                continue;
            }
            let rec = if written.contains(&side.location) {
                winner.clone()
            } else {
                match &side.observed {
                    Observed::Present(v) => Recorded::Present(v.hash.clone()),
                    Observed::Absent => Recorded::Absent,
                    Observed::Skipped(_) => {
                        after.extend(side.recorded.clone());
                        continue;
                    }
                }
            };
            after.push(rec.clone());
            if let (Recorded::Present(h), Some(Found::Present { content, .. })) =
                (winner, scans.get(file, &side.location))
            {
                if &content.hash == h {
                    winner_facts = Some(content.facts.clone());
                }
            }
            // Unchanged rows are not rewritten: a no-op run over 10,000 files stays cheap.
            if side.recorded.as_ref() != Some(&rec) {
                changes
                    .records
                    .push(((file.to_string(), side.location.clone()), rec));
            }
        }
        let facts = winner_facts.unwrap_or_default();
        let agreed = Agreed {
            version: winner.clone(),
            entities: facts.entities,
            conversations: facts.conversations,
        };
        if old_agreed != Some(&agreed) {
            changes.agreed.push((file.to_string(), agreed));
        }
        after
    }

    /// Locations, files, conflicts and the last run; reads no file the scan cache knows.
    pub fn status(&self) -> Result<StatusReport> {
        let mut archive = Archive::open_existing(&self.home)?;
        // When no run is going on, what status hashes is remembered, so it is hashed once.
        let lock = match &archive {
            Some(_) => crate::lock::acquire(&self.home, "metasync status", Duration::ZERO).ok(),
            None => None,
        };
        let known = match &archive {
            Some(a) => a.location_ids()?,
            None => HashMap::new(),
        };
        let places = self.places(&known);
        let (files, mut skipped) = self.listed_set(&places, archive.as_ref())?;
        let files: Vec<String> = files.into_iter().collect();
        let scan_time = now_ns();
        let mut learned = Changes::default();
        let mut locations = Vec::new();
        for p in &places {
            let mut file_reports = Vec::new();
            let mut copies = Vec::new();
            if p.availability.is_available() {
                let cache = match &archive {
                    Some(a) => a.cache(&p.loc.name)?,
                    None => Default::default(),
                };
                let found = scan::scan_location(&p.loc.root, &files, &cache, &self.read_ctx());
                for (file, found) in files.iter().zip(found) {
                    file_reports.push(file_report(file, &found));
                    copies.extend(conflict_copies(&p.loc.path_of(file)));
                    if let Found::Present {
                        stat,
                        content,
                        hashed: true,
                    } = &found
                    {
                        let entry = scan::cache_entry(stat, content, scan_time);
                        learned
                            .cache
                            .push(((p.loc.name.clone(), file.clone()), Some(entry)));
                    }
                }
            }
            locations.push(LocationStatus {
                location: p.report(),
                files: file_reports,
                conflict_copies: copies,
                skipped: skipped.remove(&p.loc.name).unwrap_or_default(),
            });
        }
        let mut warnings = Vec::new();
        if self.config.locations.is_empty() {
            warnings.push(format!(
                "no remote configured: add a [[locations]] entry (name, path) to {}",
                crate::config::default_path(&self.home).display()
            ));
        }
        for l in &locations {
            for c in &l.conflict_copies {
                warnings.push(format!("iCloud conflict copy in {}: {c}", l.location.name));
            }
            for f in &l.skipped {
                warnings.push(format!("{} in {}: {}", f.name, l.location.name, f.reason));
            }
        }
        if let (Some(a), Some(_held)) = (archive.as_mut(), &lock) {
            if !learned.cache.is_empty() {
                learned.now = rfc3339(self.clock.now());
                a.commit(&learned)?;
            }
        }
        drop(lock);
        let (conflicts, last_run, row_conflicts) = match &archive {
            Some(a) => (
                a.conflicts()?,
                a.history(1)?.into_iter().next(),
                a.row_conflicts(20)?,
            ),
            None => (Vec::new(), None, Vec::new()),
        };
        Ok(StatusReport {
            home: self.home.display().to_string(),
            config: match &self.source {
                ConfigSource::Defaults => "(defaults)".into(),
                ConfigSource::File(p) => p.display().to_string(),
            },
            locations,
            conflicts,
            row_conflicts,
            last_run,
            warnings,
            history: Vec::new(),
        })
    }

    /// Unresolved conflicts.
    pub fn conflicts(&self) -> Result<Vec<ConflictReport>> {
        match Archive::open_existing(&self.home)? {
            Some(a) => a.conflicts(),
            None => Ok(Vec::new()),
        }
    }

    /// Accepts a remote whose identity marker is missing or different: from now on its
    /// content is compared as if this machine had never seen it (the first-sync rule).
    pub fn relink(&self, name: &str) -> Result<RelinkReport> {
        let loc = location::all(&self.home, &self.config)
            .into_iter()
            .find(|l| l.name == name && !l.is_local())
            .ok_or_else(|| Error::Usage(format!("no remote location named `{name}`")))?;
        let _lock = self.lock("metasync relink")?;
        let mut archive = Archive::open(&self.home)?;
        let previous = archive.location_ids()?.remove(name);
        match location::check(&loc, None) {
            Availability::Unavailable(r) => {
                return Err(Error::Refused(format!(
                    "{name} cannot be relinked now: {r}"
                )))
            }
            Availability::Available {
                create_folder: true,
                ..
            } => std::fs::create_dir(&loc.root)
                .map_err(|e| Error::io("create folder", &loc.root, e))?,
            _ => {}
        }
        let id = match location::read_marker(&loc.root)
            .map_err(|e| Error::io("read marker", &loc.root, e))?
        {
            Some(id) => id,
            None => {
                let id = crate::ids::random_hex(16);
                location::write_marker(&loc.root, &id, name, &rfc3339(self.clock.now()))
                    .map_err(|e| Error::io("write marker", &loc.root, e))?;
                id
            }
        };
        let changes = Changes {
            now: rfc3339(self.clock.now()),
            location_ids: vec![(name.to_string(), Some(id.clone()))],
            forget_location: vec![name.to_string()],
            ..Default::default()
        };
        archive.commit(&changes)?;
        tracing::info!(target: "metasync", "{name}: relinked as {id}");
        Ok(RelinkReport {
            location: name.to_string(),
            id,
            previous_id: previous,
        })
    }

    /// The most recent runs, newest first.
    pub fn history(&self, limit: usize) -> Result<Vec<RunSummary>> {
        match Archive::open_existing(&self.home)? {
            Some(a) => a.history(limit),
            None => Ok(Vec::new()),
        }
    }
}

/// A write that failed: the reports so far, the error, and whether it failed because the
/// target changed since it was scanned.
type GroupFailure = Box<(Vec<ActionReport>, Error, bool)>;

/// The pseudo-location a row-merged version is copied from.
const MERGE_SOURCE: &str = "row merge";

/// A version made by a row merge this run.
struct Merged {
    path: PathBuf,
    hash: String,
    facts: crate::kind::Facts,
    found: Found,
    row_conflicts: Vec<crate::merge::RowConflict>,
    rows_changed: usize,
}

enum MergeResult {
    Merged(Box<Merged>),
    Held(Vec<crate::merge::RowConflict>),
    Shrunk(String),
}

/// A run's own folder for database snapshots, removed when the run ends (and, if a crash left
/// one behind, by the next run, which holds the lock).
struct RunScratch(PathBuf);

impl RunScratch {
    fn create(home: &Path) -> Result<RunScratch> {
        let tmp = home.join(crate::names::STATE_DIR).join("tmp");
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                if e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with("run-"))
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = tmp.join(format!("run-{}", crate::ids::random_hex(12)));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create folder", &dir, e))?;
        Ok(RunScratch(dir))
    }
}

impl Drop for RunScratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the steady state says of a run (see [`Engine::replay_steady`]).
enum Replay {
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

/// Two lists of outcomes for distinct files as one, sorted by file.
fn merge_by_file(mut a: Vec<FileOutcome>, b: Vec<FileOutcome>) -> Vec<FileOutcome> {
    a.extend(b);
    a.sort_unstable_by(|x, y| x.file.cmp(&y.file));
    a
}

/// A run's one-line summary.
fn run_summary(files: usize, written: u64, conflicts: usize, unavailable: usize) -> String {
    format!(
        "{files} file(s), {written} written, {conflicts} conflict(s), {unavailable} location(s) unavailable"
    )
}

/// Removes the stale temp files the run's listing saw (interrupted writes).
fn clean_temps(listings: &[Listing], machine: &str) {
    for temp in listings.iter().flat_map(|l| &l.temps) {
        if crate::apply::remove_if_stale(temp, machine) {
            tracing::info!(target: "metasync", "removed stale temp file {}", temp.display());
        }
    }
}

fn action_target(a: &Action) -> &str {
    match a {
        Action::Backup { location } | Action::Delete { location } => location,
        Action::Copy { to, .. } => to,
    }
}

fn action_report(
    file: &str,
    a: &Action,
    detail: String,
    done: bool,
    error: Option<String>,
) -> ActionReport {
    let (action, detail) = match a {
        Action::Backup { .. } => ("backup", detail),
        Action::Copy { from, hash, .. } if detail.is_empty() => {
            ("copy", format!("from {from} ({})", short(hash)))
        }
        Action::Copy { .. } => ("copy", detail),
        Action::Delete { .. } => ("delete", detail),
    };
    ActionReport {
        file: file.to_string(),
        location: action_target(a).to_string(),
        action: action.into(),
        detail,
        done,
        error,
    }
}

pub(crate) fn file_report(file: &str, found: &Found) -> FileReport {
    let mut r = FileReport {
        file: file.to_string(),
        state: String::new(),
        size: None,
        mtime: None,
        sha256: None,
        kind: None,
        entities: None,
        conversations: None,
        note: None,
    };
    match found {
        Found::Present { stat, content, .. } => {
            r.state = "present".into();
            r.size = Some(stat.size);
            r.mtime = Some(ns_to_rfc3339(stat.mtime_ns));
            r.sha256 = Some(content.hash.clone());
            r.kind = Some(content.kind.as_str().into());
            r.entities = content.facts.entities;
            r.conversations = content.facts.conversations;
            if !content.facts.integrity.is_empty() {
                r.note = Some(format!("corrupt: {}", content.facts.integrity.join("; ")));
            }
        }
        Found::Absent => r.state = "missing".into(),
        Found::Skipped(reason) => {
            r.state = if reason.contains("evicted") {
                "evicted"
            } else {
                "unreadable"
            }
            .into();
            r.note = Some(reason.clone());
        }
    }
    r
}

fn conflict_copies(path: &Path) -> Vec<String> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| crate::names::is_conflict_copy_of(n, name))
        .collect();
    out.sort();
    out
}
