//! The backups an object store keeps as objects (`<file>.backup-…` under its prefix): listed
//! like plain backups (from the listing the refresh made), restored into the local folder
//! (the store's folder is only a mirror; the next sync carries the version everywhere; a dry
//! run reads nothing), thinned by retention after a run that wrote to the store and by
//! `prune`, and counted in the location's history (`max_history_mb`, `status`).

use super::backups::{created_of, OnDisk, Scratch};
use crate::engine::{Engine, Place};
use crate::error::{Error, Result};
use crate::history::policy::{self, Action};
use crate::report::{BackupEntry, PruneReport, RestoreReport};
use crate::scan::{self, Found};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A version to restore: the place it goes back into, its file, the file holding it, its
/// listing entry, and the scratch copy's guard.
pub(crate) type FoundVersion = (Place, String, PathBuf, BackupEntry, Scratch);

impl Engine {
    /// The backup objects of the store `place` (of `file`, when given), as listed entries;
    /// with `read`, each is downloaded to find its hash and counts.
    pub(crate) fn bucket_backups(
        &self,
        place: &Place,
        file: Option<&str>,
        read: bool,
    ) -> Result<Vec<OnDisk>> {
        let (Some(spec), Some(objects)) = (
            &place.loc.store,
            self.stores.backup_objects(&place.loc.name),
        ) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for b in objects
            .into_iter()
            .filter(|b| file.is_none_or(|f| f == b.file))
        {
            let created = created_of(b.at);
            let mut entry = BackupEntry {
                id: format!("{}:{}", place.loc.name, b.rel),
                location: place.loc.name.clone(),
                file: b.file.clone(),
                path: format!("{}/{}", spec.url(), b.rel),
                created: created.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
                size: b.size,
                entities: None,
                conversations: None,
                sha256: None,
                protected: crate::history::protection_of(&place.loc.root, &b.rel)
                    .map(|p| p.reason.as_str().to_string()),
                stored: false,
            };
            if read {
                let (tmp, _scratch) = self.fetch_bucket_backup(&place.loc.name, &b.rel)?;
                // One read gives the hash and the counts.
                if let Found::Present { content, .. } =
                    scan::scan_file(&tmp, None, &self.read_ctx())
                {
                    entry.sha256 = Some(content.hash);
                    entry.entities = content.facts.entities;
                    entry.conversations = content.facts.conversations;
                }
            }
            out.push(OnDisk {
                entry,
                rel: b.rel,
                created: created.with_timezone(&chrono::Utc),
            });
        }
        Ok(out)
    }

    /// Downloads the backup object `rel` of the store `name` into a scratch file (removed
    /// when the returned guard drops).
    fn fetch_bucket_backup(&self, name: &str, rel: &str) -> Result<(PathBuf, Scratch)> {
        let ctx = self.read_ctx();
        std::fs::create_dir_all(&ctx.scratch)
            .map_err(|e| Error::io("create folder", &ctx.scratch, e))?;
        let tmp = ctx
            .scratch
            .join(format!("bucket-backup-{}", crate::ids::random_hex(12)));
        let scratch = Scratch::new(tmp.clone());
        self.stores
            .fetch_backup(name, rel, &tmp)
            .map_err(|e| Error::Refused(format!("cannot read the backup {name}:{rel}: {e}")))?;
        Ok((tmp, scratch))
    }

    /// The backup object `spec` (`<store>:<path>`) names, downloaded into scratch, with the
    /// local place it is restored into. `None`: `spec` names no backup object.
    pub(crate) fn find_bucket_backup(&self, spec: &str) -> Result<Option<FoundVersion>> {
        let Some((local, found)) = self.locate_bucket_backup(spec)? else {
            return Ok(None);
        };
        let name = found.entry.location.clone();
        let (tmp, scratch) = self.fetch_bucket_backup(&name, &found.rel)?;
        Ok(Some((
            local,
            found.entry.file.clone(),
            tmp,
            found.entry,
            scratch,
        )))
    }

    /// The backup object `spec` names, as its listing gives it (nothing read), with the local
    /// place it is restored into. `None`: `spec` names no backup object.
    fn locate_bucket_backup(&self, spec: &str) -> Result<Option<(Place, OnDisk)>> {
        let Some((loc, rel)) = spec.split_once(':').filter(|(l, _)| !l.contains('/')) else {
            return Ok(None);
        };
        if !self
            .config()
            .locations
            .iter()
            .any(|c| c.name == loc && c.url.is_some())
        {
            return Ok(None);
        }
        let (places, _) = self.available_places()?;
        let Some(place) = places.iter().find(|p| p.loc.name == loc) else {
            return Ok(None);
        };
        let Some(found) = self
            .bucket_backups(place, None, false)?
            .into_iter()
            .find(|b| b.rel == rel)
        else {
            return Ok(None);
        };
        if !self.selector().matches(&found.entry.file) {
            return Err(Error::Refused(format!(
                "`{spec}` is not a restorable backup: `{}` is not a synced file",
                found.entry.file
            )));
        }
        let local = places
            .into_iter()
            .find(|p| p.loc.is_local())
            .ok_or_else(|| Error::Refused("the local folder is not available".into()))?;
        Ok(Some((local, found)))
    }

    /// `restore --dry-run` of a backup object: what it would do, from the listing (its size)
    /// and the hash recorded for it if any, without downloading it. `None`: `spec` names no
    /// backup object.
    pub(crate) fn bucket_restore_plan(&self, spec: &str) -> Result<Option<RestoreReport>> {
        let Some((local, mut found)) = self.locate_bucket_backup(spec)? else {
            return Ok(None);
        };
        if let Some(archive) = crate::archive::Archive::open_existing(self.home())? {
            let cache = archive.cache(&found.entry.location)?;
            found.entry.sha256 = cache.get(&found.rel).map(|c| c.hash.clone());
        }
        Ok(Some(RestoreReport {
            restored_to: local.loc.path_of(&found.entry.file).display().to_string(),
            backup: found.entry,
            previous_backup: None,
            dry_run: true,
        }))
    }
}

/// Retention for the backup objects of a store: the same policy as for a folder's backups,
/// per file, then `max_history_mb` across all the location's objects (a bucket's history is
/// its backup objects); the versions it removes are deleted from the bucket (a version it
/// would store stays an object: a bucket has no compact store). Under the run's lease.
/// `Ok`: what goes (with `dry_run`, what would), and how many stay.
pub(crate) fn thin_bucket(
    engine: &Engine,
    place: &Place,
    dry_run: bool,
) -> Result<(Vec<OnDisk>, usize)> {
    let list = engine.bucket_backups(place, None, false)?;
    let versions: Vec<policy::Version> = list
        .iter()
        .map(|b| policy::Version {
            id: b.rel.clone(),
            created: b.created,
            size: b.entry.size,
            protected: crate::history::protection_of(&place.loc.root, &b.rel)
                .map(|p| (p.reason, p.since)),
        })
        .collect();
    let config = &engine.config().backups;
    let now = engine.clock().now();
    let mut by_file: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, b) in list.iter().enumerate() {
        by_file.entry(b.entry.file.as_str()).or_default().push(i);
    }
    let mut decisions: Vec<Option<policy::Decision>> = vec![None; list.len()];
    for idx in by_file.values() {
        let group: Vec<policy::Version> = idx.iter().map(|&i| versions[i].clone()).collect();
        for (&i, d) in idx.iter().zip(policy::decide(&group, config, now)) {
            decisions[i] = Some(d);
        }
    }
    let mut decisions: Vec<policy::Decision> = decisions.into_iter().flatten().collect();
    if policy::within_budget(&versions, &mut decisions, config, now) {
        tracing::warn!(target: "metasync", "history in {} is over max_history_mb with only plain and protected versions left", place.loc.name);
    }
    let (doomed, kept): (Vec<_>, Vec<_>) = list
        .into_iter()
        .zip(&decisions)
        .partition(|(_, d)| d.action == Action::Remove);
    let doomed: Vec<OnDisk> = doomed.into_iter().map(|(b, _)| b).collect();
    if !dry_run {
        let rels: Vec<String> = doomed.iter().map(|b| b.rel.clone()).collect();
        engine
            .stores
            .delete_backups(&place.loc.name, &rels)
            .map_err(|e| Error::Refused(format!("{}: {e}", place.loc.name)))?;
    }
    Ok((doomed, kept.len()))
}

/// Retention after a run, for each store it wrote to; the warnings.
pub(crate) fn prune_bucket_backups(engine: &Engine, places: &[&Place]) -> Vec<String> {
    places
        .iter()
        .filter(|p| p.loc.store.is_some() && !engine.stores.touched(&p.loc.name).is_empty())
        .filter_map(|p| thin_bucket(engine, p, false).err())
        .map(|e| e.to_string())
        .collect()
}

/// `prune` for the stores among `places`: their thinned backup objects join `report`.
pub(crate) fn prune_buckets(
    engine: &Engine,
    places: &[&Place],
    dry_run: bool,
    report: &mut PruneReport,
) -> Result<()> {
    for p in places
        .iter()
        .filter(|p| p.loc.store.is_some() && p.availability.is_available())
    {
        let (doomed, kept) = thin_bucket(engine, p, dry_run)?;
        report.kept += kept;
        report.bytes_freed += doomed.iter().map(|b| b.entry.size).sum::<u64>();
        report.deleted.extend(doomed.into_iter().map(|b| b.entry));
    }
    report.deleted.sort_by(|a, b| a.created.cmp(&b.created));
    Ok(())
}

/// The bytes and the number of the backup objects of the store `place` that its mirror does
/// not hold as plain backups (none for a folder).
pub(crate) fn bucket_usage(engine: &Engine, place: &Place) -> (u64, usize) {
    let list = engine
        .bucket_backups(place, None, false)
        .unwrap_or_default();
    let objects: Vec<&OnDisk> = list
        .iter()
        .filter(|b| !place.loc.root.join(&b.rel).exists())
        .collect();
    (objects.iter().map(|b| b.entry.size).sum(), objects.len())
}

/// Whether `path` is a backup object's address rather than a file.
pub(crate) fn is_object_path(path: &str) -> bool {
    path.starts_with("s3://") && !Path::new(path).exists()
}
