//! The engine for one home folder: a run is lock → scan → plan → apply → commit the archive
//! → report, in named phases (`run`); `replay` is the steady path, `rowmerge` the row-level
//! merge attempt, `write` every write of a run, `status` what a person asks to see.

mod backups;
mod bucket_backups;
mod file;
mod finish;
mod inspect;
mod record;
mod replay;
mod rowmerge;
mod run;
mod status;
mod store;
mod write;

use replay::Replay;
use rowmerge::{MergeResult, Merged};

use crate::archive::{Agreed, Archive, Changes, Recorded};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigSource, MergeMode, Strategy};
use crate::error::{Error, Result};
use crate::kind::Kind;
use crate::location::{self, Availability, Location, NewId};
use crate::model::{ActionKind, FileState, Outcome, RunResult, SkipKind};
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
    /// Only the run's counts are wanted (the CLI's `--quiet`): a run replayed from the steady
    /// state then reports no per-file outcomes (`files` is empty; its summary still counts
    /// them), which for a home of 10,000 files was a fifth of a no-op's instructions.
    pub summary_only: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            mode: Mode::Sync,
            strategy: None,
            dry_run: false,
            summary_only: false,
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
    stores: crate::objstore::Stores,
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
            path: match &self.loc.store {
                Some(store) => store.url(),
                None => self.loc.root.display().to_string(),
            },
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
        // Locations never overlap (a remote inside the home copies itself one level deeper
        // every run).
        if let Some(o) = location::overlap(&location::all(&home, &config)) {
            let key = format!("locations[{}].path", o.remote_index);
            return Err(crate::config::key_error(&source, &key, &o.to_string()));
        }
        Ok(Engine {
            home,
            config,
            source,
            selector,
            clock: Arc::new(SystemClock),
            stores: Default::default(),
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
                let availability = match self.stores.refresh(&self.home, &loc, &self.selector) {
                    Ok(()) => location::check(&loc, known.get(&loc.name).map(String::as_str)),
                    Err(why) => Availability::Unavailable(why),
                };
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
        let ask = run::Ask {
            command,
            direction,
            strategy,
            only: None,
            dry_run: opts.dry_run,
            summary_only: opts.summary_only,
        };
        self.execute(ask, events)
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
        let ask = run::Ask {
            command: "resolve",
            direction: Direction::Keep(keep.to_string()),
            strategy: self.config.strategy,
            only: Some(file),
            dry_run: false,
            summary_only: false,
        };
        self.execute(ask, events)
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
            Found::Skipped(r) => Observed::Skipped(r.reason.clone()),
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
    pub(crate) fn root_of(&self, name: &str) -> Option<PathBuf> {
        location::all(&self.home, &self.config)
            .into_iter()
            .find(|l| l.name == name)
            .map(|l| l.root)
    }
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
/// Two lists of outcomes for distinct files as one, sorted by file.
fn merge_by_file(mut a: Vec<FileOutcome>, b: Vec<FileOutcome>) -> Vec<FileOutcome> {
    a.extend(b);
    a.sort_unstable_by(|x, y| x.file.cmp(&y.file));
    a
}

/// A run's one-line summary.
fn run_summary(files: usize, written: u64, conflicts: usize, unavailable: usize) -> String {
    use crate::words::plural;
    format!(
        "{}, {written} written, {}, {} unavailable",
        plural(files as u64, "file"),
        plural(conflicts as u64, "conflict"),
        plural(unavailable as u64, "location")
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
