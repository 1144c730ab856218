//! Object-store locations (S3 and compatibles, SPEC §7): a location whose `url` is
//! `s3://BUCKET/PREFIX`. The engine sees it as a folder: a *mirror* under the home's state
//! folder (`<home>/.metasync/stores/<name>/`, never inside a synced tree), brought up to the
//! bucket by one listing before the scan ([`Stores::refresh`]), and every file the run
//! writes there is published to the bucket before the archive records it
//! ([`Stores::publish`]), conditional on the object version the run scanned (its ETag), under
//! a lease that serialises the runs of different machines on one store.

mod backups;
mod client;
mod credentials;
mod history;
mod lease;
mod mirror;

pub use crate::bucket::{mirror_root, StoreSpec};
pub use backups::BucketBackup;
pub use credentials::{login, Credentials};

use crate::location::Location;
use crate::select::Selector;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// The lease object at the prefix's root.
pub const LEASE: &str = ".metasync-lease";

/// How publishing one file's writes went.
#[derive(Debug)]
pub enum Published {
    /// In the bucket now.
    Done,
    /// Another writer got there first (or holds the lease): left for the next run.
    Raced(String),
    /// A request failed.
    Failed(String),
}

/// The object-store locations an engine has met, each with its client and mirror index.
#[derive(Default)]
pub struct Stores {
    sessions: Mutex<HashMap<String, client::Session>>,
}

impl Stores {
    /// Brings the mirror of `loc` up to its bucket: one listing, and a download of each
    /// synced object whose version the mirror does not hold. `Err`: why the location is
    /// unavailable.
    pub fn refresh(&self, home: &Path, loc: &Location, selector: &Selector) -> Result<(), String> {
        let Some(spec) = &loc.store else {
            return Ok(());
        };
        let mut sessions = self.lock();
        let session = match sessions.remove(&loc.name) {
            Some(s) if &s.spec == spec => s,
            _ => client::Session::open(home, &loc.name, spec)?,
        };
        let session = sessions.entry(loc.name.clone()).or_insert(session);
        session.begin_run();
        session.refresh(&loc.root, selector)
    }

    /// Publishes what the run just wrote for `file` in the store location `name` (its
    /// backups, the marker, then the file itself, or its deletion). `None`: not a store.
    pub fn publish(&self, name: &str, file: &str) -> Option<Published> {
        let mut sessions = self.lock();
        let session = sessions.get_mut(name)?;
        Some(session.publish(file))
    }

    /// The backup objects of the store `name` (as its last listing and this run know them).
    /// `None`: not a store this engine has listed.
    pub fn backup_objects(&self, name: &str) -> Option<Vec<BucketBackup>> {
        let sessions = self.lock();
        Some(sessions.get(name)?.backups.values().cloned().collect())
    }

    /// The synced files of the store `name` this run published.
    pub fn touched(&self, name: &str) -> Vec<String> {
        let sessions = self.lock();
        sessions
            .get(name)
            .map(|s| s.touched.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Downloads the backup object `rel` of the store `name` to the new file `dest`.
    pub fn fetch_backup(&self, name: &str, rel: &str, dest: &Path) -> Result<(), String> {
        let mut sessions = self.lock();
        let session = sessions
            .get_mut(name)
            .ok_or_else(|| format!("{name} is not an object store this run listed"))?;
        session.get_backup(rel, dest)
    }

    /// Deletes backup objects of the store `name`, under the run's lease.
    pub fn delete_backups(&self, name: &str, rels: &[String]) -> Result<(), String> {
        let mut sessions = self.lock();
        match sessions.get_mut(name) {
            Some(s) => s.delete_backups(rels),
            None => Ok(()),
        }
    }

    /// Whether the store `name`'s identity marker is in its bucket (as far as this engine knows).
    pub fn marker_published(&self, name: &str) -> bool {
        self.lock()
            .get(name)
            .is_none_or(|s| s.index.0.contains_key(crate::names::MARKER))
    }

    /// Runs `f` on the session of the store `name`; `Err` when there is none.
    fn with<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut client::Session) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut sessions = self.lock();
        let session = sessions
            .get_mut(name)
            .ok_or_else(|| format!("{name} is not an object store this run listed"))?;
        f(session)
    }

    /// Before the history of the store `name` is changed: the run's lease (taken when not
    /// held yet, which lists the prefix again), and the manifests listed since fetched.
    pub fn history_begin(&self, name: &str) -> Result<(), String> {
        self.with(name, |s| {
            s.ensure_lease()
                .map_err(|p| format!("history not thinned: {p:?}"))?;
            let root = s.mirror.clone();
            s.pull_manifests(&root)?;
            s.publish_protections()
        })
    }

    /// Publishes the mirror's stored version `id` of the store `name` (its packs, then its
    /// manifest). `Ok(false)`: another machine changed it since (left for the next run).
    pub fn push_manifest(&self, name: &str, id: &str) -> Result<bool, String> {
        self.with(name, |s| {
            let root = s.mirror.clone();
            s.push_manifest(&root, id)
        })
    }

    /// Removes the stored version `id` from the bucket of the store `name`.
    pub fn drop_manifest(&self, name: &str, id: &str) -> Result<(), String> {
        self.with(name, |s| s.drop_manifest(id))
    }

    /// Whether the bucket of the store `name` holds the manifest `id` (as last listed).
    pub fn lists_manifest(&self, name: &str, id: &str) -> bool {
        self.with(name, |s| Ok(s.lists_manifest(id)))
            .unwrap_or(false)
    }

    /// Fetches into the mirror's store the packs among `packs` it does not hold.
    pub fn fetch_packs(&self, name: &str, packs: &[String]) -> Result<(), String> {
        self.with(name, |s| {
            let root = s.mirror.clone();
            s.fetch_packs(&root, packs)
        })
    }

    /// Collection of the bucket's packs (see `history`); the number deleted.
    pub fn collect_packs(
        &self,
        name: &str,
        referenced: &std::collections::HashSet<String>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, String> {
        self.with(name, |s| s.collect_packs(referenced, now))
    }

    /// Whether the history of the store `name` has work left by a run that stopped (see
    /// `history`): then retention runs even after a run that published nothing.
    pub fn history_pending(&self, name: &str) -> bool {
        self.with(name, |s| Ok(s.history_pending(&s.mirror.clone())))
            .unwrap_or(false)
    }

    /// The protection the bucket records for the backup object `rel` of the store `name`.
    pub fn bucket_protection(
        &self,
        name: &str,
        rel: &str,
    ) -> Option<crate::history::store::Protection> {
        self.with(name, |s| Ok(s.bucket_protection(rel)))
            .ok()
            .flatten()
    }

    /// Bytes the bucket's history store of `name` takes, as last listed.
    pub fn history_bytes(&self, name: &str) -> Option<u64> {
        self.with(name, |s| Ok(s.history_bytes())).ok()
    }

    /// Ends a run: leases released, request counts written beside the mirrors.
    pub fn end_run(&self) {
        for session in self.lock().values_mut() {
            session.end_run();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, client::Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Test hook: with `METASYNC_STORE_PAUSE=<point>:<folder>` a run stops at `point`
/// (`before_lease`, `lease_taken`), says so by creating `<folder>/reached`, and goes on once
/// `<folder>/go` exists: a test can then act as another writer at exactly that moment.
pub(crate) fn pause(point: &str) {
    let Ok(v) = std::env::var("METASYNC_STORE_PAUSE") else {
        return;
    };
    let Some((at, dir)) = v.split_once(':') else {
        return;
    };
    if at != point {
        return;
    }
    let dir = Path::new(dir);
    let _ = std::fs::write(dir.join("reached"), point);
    while !dir.join("go").exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

impl Drop for Stores {
    /// A command that met a store without a run around it (`backups`, `restore`, `status`)
    /// ends its session too: any lease given back, its request counts written.
    fn drop(&mut self) {
        self.end_run();
    }
}

/// Releases the run's leases when dropped (also when a run stops on an error).
pub struct RunGuard<'a>(pub &'a Stores);

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.0.end_run();
    }
}
