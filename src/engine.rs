//! One run: lock → scan → plan → apply → commit the archive → report.

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigSource, Strategy};
use crate::error::{Error, Result};
use crate::report::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    clock: Arc<dyn Clock>,
}

impl Engine {
    /// Opens the engine for `home` with the config at `config_path` (or the default one).
    pub fn open(home: impl Into<PathBuf>, config_path: Option<&Path>) -> Result<Engine> {
        let home = home.into();
        let (config, source) = Config::load(&home, config_path)?;
        Ok(Engine {
            home,
            config,
            source,
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

    /// `sync`, `push` or `pull`.
    pub fn run(&self, _opts: &RunOptions, _events: &mut dyn FnMut(&Event)) -> Result<RunReport> {
        Err(Error::Usage("not implemented yet".into()))
    }

    /// Settles a conflict on `file` with the version in `keep`.
    pub fn resolve(
        &self,
        _file: &str,
        _keep: &str,
        _events: &mut dyn FnMut(&Event),
    ) -> Result<RunReport> {
        Err(Error::Usage("not implemented yet".into()))
    }

    /// Locations, files, conflicts and the last run; reads no file contents that the scan cache knows.
    pub fn status(&self) -> Result<StatusReport> {
        Err(Error::Usage("not implemented yet".into()))
    }

    /// Every backup in every available location, newest first.
    pub fn backups(
        &self,
        _file: Option<&str>,
        _location: Option<&str>,
        _with_counts: bool,
    ) -> Result<Vec<BackupEntry>> {
        Err(Error::Usage("not implemented yet".into()))
    }

    /// Puts a backup (by id or path) back in place; the current version is backed up first.
    pub fn restore(
        &self,
        _backup: &str,
        _dry_run: bool,
        _events: &mut dyn FnMut(&Event),
    ) -> Result<RestoreReport> {
        Err(Error::Usage("not implemented yet".into()))
    }

    /// Unresolved conflicts.
    pub fn conflicts(&self) -> Result<Vec<ConflictReport>> {
        Err(Error::Usage("not implemented yet".into()))
    }

    /// Accepts a remote whose identity marker is missing or different.
    pub fn relink(&self, _location: &str) -> Result<RelinkReport> {
        Err(Error::Usage("not implemented yet".into()))
    }

    /// Integrity and table counts of every database in every available location.
    pub fn verify(&self) -> Result<VerifyReport> {
        Err(Error::Usage("not implemented yet".into()))
    }

    /// Applies the backup retention now.
    pub fn prune(&self, _dry_run: bool) -> Result<PruneReport> {
        Err(Error::Usage("not implemented yet".into()))
    }

    /// The most recent runs, newest first.
    pub fn history(&self, _limit: usize) -> Result<Vec<RunSummary>> {
        Err(Error::Usage("not implemented yet".into()))
    }
}
