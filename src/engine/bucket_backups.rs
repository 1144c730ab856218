//! The backups an object store keeps as objects (`<file>.backup-…` under its prefix): listed
//! like plain backups (from the listing the refresh made), restored into the local folder
//! (the store's folder is only a mirror; the next sync carries the version everywhere; a dry
//! run reads nothing), thinned by retention after a run that wrote to the store and by
//! `prune`, and counted in the location's history (`max_history_mb`, `status`).

use super::backups::{created_of, OnDisk, Scratch};
use crate::engine::{Engine, Place};
use crate::error::{Error, Result};
use crate::history::policy::{self, Action};
use crate::history::store::{Manifest, Store};
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
                protected: object_protection(self, place, &b.rel)
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

/// One version of a store's history, as retention sees it.
enum Held {
    /// A backup object.
    Object(Box<OnDisk>),
    /// A stored version (its manifest id, its manifest and listing entry), and the backup
    /// object of the same name and size still in the bucket, if any (the version it was
    /// made from, left by a run that stopped before deleting it, or made here from the
    /// mirror's own plain backup).
    Stored(Box<Stored>),
}

/// A stored version: its manifest id, its manifest, its listing entry, and the backup object
/// of its name beside it, if any.
struct Stored {
    id: String,
    m: Manifest,
    listed: OnDisk,
    pair: Option<OnDisk>,
}

impl Held {
    fn listed(&self) -> &OnDisk {
        match self {
            Held::Object(o) => o,
            Held::Stored(s) => &s.listed,
        }
    }
}

/// The versions of the store `place`: its backup objects and its stored versions (the
/// mirror's manifests: the bucket's, fetched, and any made here not yet published).
fn held_versions(engine: &Engine, place: &Place, store: &Store) -> Result<Vec<Held>> {
    let (manifests, _) = store.manifests()?;
    let freed = store.exclusive_bytes(&manifests);
    let mut held: Vec<Held> = manifests
        .into_iter()
        .map(|(id, m)| {
            let mut entry = super::backups::stored_entry(place, store, &id, &m);
            entry.size = freed.get(&id).copied().unwrap_or(0);
            let listed = OnDisk {
                entry,
                rel: id.clone(),
                created: m.info.created,
            };
            Held::Stored(Box::new(Stored {
                id,
                m,
                listed,
                pair: None,
            }))
        })
        .collect();
    for o in engine.bucket_backups(place, None, false)? {
        let id = Manifest::id_of(&o.rel);
        let pair = held.iter_mut().find_map(|h| match h {
            Held::Stored(s) if s.id == id && s.m.size == o.entry.size && s.pair.is_none() => {
                Some(&mut s.pair)
            }
            _ => None,
        });
        match pair {
            Some(p) => *p = Some(o),
            None => held.push(Held::Object(Box::new(o))),
        }
    }
    Ok(held)
}

/// The policy's decisions for `held` (per file, then `max_history_mb` across them all).
fn decide(engine: &Engine, place: &Place, held: &[Held]) -> Vec<policy::Decision> {
    let versions: Vec<policy::Version> = held
        .iter()
        .map(|h| match h {
            Held::Object(b) => policy::Version {
                id: b.rel.clone(),
                created: b.created,
                size: b.entry.size,
                protected: object_protection(engine, place, &b.rel).map(|p| (p.reason, p.since)),
            },
            Held::Stored(s) => policy::Version {
                id: s.listed.entry.id.clone(),
                created: s.m.info.created,
                size: s.listed.entry.size,
                protected: s.m.info.protected.map(|p| (p.reason, p.since)),
            },
        })
        .collect();
    let config = &engine.config().backups;
    let now = engine.clock().now();
    let mut by_file: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, h) in held.iter().enumerate() {
        by_file
            .entry(h.listed().entry.file.as_str())
            .or_default()
            .push(i);
    }
    let mut decisions: Vec<Option<policy::Decision>> = vec![None; held.len()];
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
    decisions
}

/// Retention for a store's history, the same policy as a folder's, over its backup objects
/// and its stored versions, under the run's lease: a backup object the policy stores moves
/// into the bucket's store (stored in the mirror's store, published, and only then deleted);
/// a version it removes is deleted from the bucket; then unreferenced packs are collected.
/// `Ok`: what goes (with `dry_run`, what would; nothing is changed then), and how many stay.
pub(crate) fn thin_bucket(
    engine: &Engine,
    place: &Place,
    dry_run: bool,
) -> Result<(Vec<OnDisk>, usize)> {
    let name = &place.loc.name;
    let refused = |e: String| Error::Refused(format!("{name}: {e}"));
    if !dry_run {
        engine.stores.history_begin(name).map_err(refused)?;
    }
    let store = Store::of_location(&place.loc.root);
    let held = held_versions(engine, place, &store)?;
    let decisions = decide(engine, place, &held);
    let mut doomed = Vec::new();
    let mut kept = 0;
    for (h, d) in held.into_iter().zip(&decisions) {
        if d.action != Action::Remove {
            kept += 1;
        }
        if !dry_run {
            settle(engine, place, &store, &h, d.action)?;
        }
        if d.action == Action::Remove {
            doomed.push(match h {
                Held::Object(o) => *o,
                Held::Stored(s) => s.listed,
            });
        }
    }
    if !dry_run {
        if store.dir().is_dir() {
            store.collect(engine.clock().now())?;
        }
        // The bucket's packs are collected only when its manifests are the mirror's: one
        // another machine changed meanwhile may name packs no manifest here does.
        if publish_all(engine, place, &store)? {
            collect_bucket(engine, place, &store)?;
        }
    }
    Ok((doomed, kept))
}

/// Publishes every manifest of the mirror's store the bucket does not hold as it is (one
/// made or rewritten by a repack here); nothing to do, no request. `Ok(false)`: one was
/// changed by another machine since (the bucket's and the mirror's then differ).
fn publish_all(engine: &Engine, place: &Place, store: &Store) -> Result<bool> {
    let (manifests, _) = store.manifests()?;
    let mut same = true;
    for (id, _) in manifests {
        same &= engine
            .stores
            .push_manifest(&place.loc.name, &id)
            .map_err(|e| Error::Refused(format!("{}: {e}", place.loc.name)))?;
    }
    Ok(same)
}

/// The bytes of the bucket's history store, for an object store.
pub(crate) fn stored_usage(engine: &Engine, place: &Place) -> Option<u64> {
    place.loc.store.as_ref()?;
    engine.stores.history_bytes(&place.loc.name)
}

/// Carries out one decision on one version of the store `place`.
fn settle(engine: &Engine, place: &Place, store: &Store, h: &Held, action: Action) -> Result<()> {
    let name = &place.loc.name;
    let refused = |e: String| Error::Refused(format!("{name}: {e}"));
    match (h, action) {
        (Held::Object(o), Action::Remove) => {
            engine
                .stores
                .delete_backups(name, std::slice::from_ref(&o.rel))
                .map_err(refused)?;
            crate::history::forget_protection(&place.loc.root, &o.rel);
        }
        (Held::Object(_), Action::KeepPlain) => {}
        (Held::Object(o), Action::Store) => move_object(engine, place, store, o)?,
        (Held::Stored(s), Action::Remove) => {
            let Stored { id, m, pair, .. } = &**s;
            engine.stores.drop_manifest(name, id).map_err(refused)?;
            store.remove(id)?;
            if let Some(o) = pair {
                // Its object goes too when it holds the very same bytes.
                let (tmp, _scratch) = engine.fetch_bucket_backup(name, &o.rel)?;
                if crate::kind::sha256_file(&tmp)? == m.sha256 {
                    engine
                        .stores
                        .delete_backups(name, std::slice::from_ref(&o.rel))
                        .map_err(refused)?;
                }
            }
        }
        (Held::Stored(s), _) => {
            let Stored { id, pair, .. } = &**s;
            if !engine.stores.push_manifest(name, id).map_err(refused)? {
                return Ok(());
            }
            if let Some(o) = pair {
                move_object(engine, place, store, o)?;
            }
        }
    }
    Ok(())
}

/// Moves the backup object `o` into the bucket's store: downloaded, stored in the mirror's
/// store (unless a stored version of the same name holds these very bytes already) and
/// checked, published (packs, then manifest), and only then deleted from the bucket.
fn move_object(engine: &Engine, place: &Place, store: &Store, o: &OnDisk) -> Result<()> {
    let name = &place.loc.name;
    let refused = |e: String| Error::Refused(format!("{name}: {e}"));
    let (tmp, _scratch) = engine.fetch_bucket_backup(name, &o.rel)?;
    let sha256 = crate::kind::sha256_file(&tmp)?;
    let id = Manifest::id_of(&store.free_name(&o.rel, &sha256));
    if store.manifest(&id).is_none() {
        // The packs its earlier versions are in: its chunks are stored once, beside them.
        let (manifests, _) = store.manifests()?;
        let packs: Vec<String> = manifests
            .iter()
            .filter(|(_, m)| m.info.file == o.entry.file)
            .flat_map(|(_, m)| m.packs.iter().cloned())
            .collect();
        engine.stores.fetch_packs(name, &packs).map_err(refused)?;
        let version = policy::Version {
            id: o.rel.clone(),
            created: o.created,
            size: o.entry.size,
            protected: object_protection(engine, place, &o.rel).map(|p| (p.reason, p.since)),
        };
        let local = OnDisk {
            entry: BackupEntry {
                path: tmp.display().to_string(),
                ..o.entry.clone()
            },
            rel: o.rel.clone(),
            created: o.created,
        };
        let file = o.entry.file.as_str();
        super::backups::move_into_store(engine, place, store, file, &local, &version, None)?;
    }
    if !engine.stores.push_manifest(name, &id).map_err(refused)? {
        return Ok(());
    }
    crate::failpoint::hit("bucket_before_object_delete");
    engine
        .stores
        .delete_backups(name, std::slice::from_ref(&o.rel))
        .map_err(refused)?;
    tracing::info!(target: "metasync", "{name}: {} moved into the bucket's history store", o.rel);
    Ok(())
}

/// Collection of the bucket's packs: those no manifest of the mirror's store references
/// (the bucket's, and any not yet published), in two steps (see `crate::objstore`); nothing
/// when a manifest cannot be read.
fn collect_bucket(engine: &Engine, place: &Place, store: &Store) -> Result<()> {
    let (manifests, unreadable) = store.manifests()?;
    if unreadable {
        return Ok(());
    }
    let referenced: std::collections::HashSet<String> = manifests
        .iter()
        .flat_map(|(_, m)| m.packs.iter().cloned())
        .collect();
    let now = engine.clock().now();
    engine
        .stores
        .collect_packs(&place.loc.name, &referenced, now)
        .map_err(|e| Error::Refused(format!("{}: {e}", place.loc.name)))?;
    Ok(())
}

/// Retention after a run, for each store it wrote to; the warnings.
pub(crate) fn prune_bucket_backups(engine: &Engine, places: &[&Place]) -> Vec<String> {
    places
        .iter()
        .filter(|p| {
            p.loc.store.is_some()
                && (!engine.stores.touched(&p.loc.name).is_empty()
                    || engine.stores.history_pending(&p.loc.name))
        })
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

/// The protection of the backup object `rel` of the store `place`, as the bucket records it
/// (by the machine that put it, under the object's own name: the mirror's note is under the
/// name its copy had, which another machine's object may have taken in the same second).
fn object_protection(
    engine: &Engine,
    place: &Place,
    rel: &str,
) -> Option<crate::history::store::Protection> {
    engine.stores.bucket_protection(&place.loc.name, rel)
}
