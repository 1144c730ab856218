//! Backups as a lifecycle: listing with stable ids, restoring safely (only real backups inside
//! a configured location), and retention after every sync and on `prune`.

use crate::archive::{Archive, CacheEntry, Changes, FileMap};
use crate::engine::{ns_to_rfc3339, Engine, Place};
use crate::error::{Error, Result};
use crate::location::Availability;
use crate::names;
use crate::report::{BackupEntry, Event, PruneReport, RestoreReport};
use crate::retention::{self, BackupItem};
use crate::scan::{self, Found};
use chrono::{Local, TimeZone};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

/// One backup found on disk.
#[derive(Debug, Clone)]
pub(crate) struct OnDisk {
    pub(crate) entry: BackupEntry,
    pub(crate) rel: String,
    pub(crate) created: chrono::DateTime<chrono::Utc>,
}

fn created_of(at: chrono::NaiveDateTime) -> chrono::DateTime<Local> {
    // A name in a skipped daylight-saving hour has no local time: read it as UTC.
    Local
        .from_local_datetime(&at)
        .earliest()
        .unwrap_or_else(|| chrono::Utc.from_utc_datetime(&at).with_timezone(&Local))
}

/// The backups of the synced file `file` in one location.
fn backups_of(place: &Place, file: &str) -> Vec<OnDisk> {
    let path = place.loc.path_of(file);
    let (Some(dir), Some(base)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| backup_entry(place, file, base, &e))
        .collect()
}

/// The backups of each of `files` in one location, listing every folder once (not once per
/// file: a tree of 10,000 files has 10,000 files but only as many folders as it has).
fn backups_by_file<'f>(
    place: &Place,
    files: impl Iterator<Item = &'f str>,
) -> Vec<(String, Vec<OnDisk>)> {
    // folder -> base name -> (position, relative path)
    let mut by_dir: HashMap<PathBuf, HashMap<String, (usize, &'f str)>> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for f in files {
        let path = place.loc.path_of(f);
        let (Some(dir), Some(base)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        else {
            continue;
        };
        by_dir
            .entry(dir.to_path_buf())
            .or_default()
            .insert(base.to_string(), (order.len(), f));
        order.push(f);
    }
    let mut found: Vec<Vec<OnDisk>> = vec![Vec::new(); order.len()];
    for (dir, bases) in &by_dir {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(parsed) = name.to_str().and_then(names::parse_backup_name) else {
                continue;
            };
            if let Some((i, file)) = bases.get(parsed.file_name.as_str()) {
                if let Some(b) = backup_entry(place, file, &parsed.file_name, &e) {
                    found[*i].push(b);
                }
            }
        }
    }
    order
        .into_iter()
        .zip(found)
        .filter(|(_, list)| !list.is_empty())
        .map(|(f, list)| (f.to_string(), list))
        .collect()
}

/// Whether retention right after a run that changed nothing could delete any backup of
/// `files` in `place`, looking only in `folders` (the ones its listing saw backups in): only a
/// file with more than `keep_last` backups there can lose one.
pub(crate) fn could_prune<'f>(
    engine: &Engine,
    place: &Place,
    files: impl Iterator<Item = &'f str>,
    folders: &[PathBuf],
) -> bool {
    let in_folders = files.filter(|f| {
        place
            .loc
            .path_of(f)
            .parent()
            .is_some_and(|d| folders.iter().any(|x| x == d))
    });
    let now = engine.clock().now();
    backups_by_file(place, in_folders)
        .iter()
        .any(|(_, list)| !policy_keeps_all(list, &engine.config().backups, now))
}

/// The backups as the retention decision sees them, versions not yet read.
fn unread_items(list: &[OnDisk]) -> Vec<BackupItem> {
    list.iter()
        .map(|b| BackupItem {
            id: b.entry.id.clone(),
            created: b.created,
            version: None,
        })
        .collect()
}

/// Whether the policy alone keeps every backup in `list` now (see
/// [`retention::policy_keeps_all`]); then none of them needs reading.
fn policy_keeps_all(
    list: &[OnDisk],
    policy: &crate::config::BackupConfig,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    list.len() <= policy.keep_last || retention::policy_keeps_all(&unread_items(list), policy, now)
}

/// `e` as a backup of `file` (whose base name is `base`) in `place`, when it is one.
fn backup_entry(place: &Place, file: &str, base: &str, e: &std::fs::DirEntry) -> Option<OnDisk> {
    let name = e.file_name().to_str().map(String::from)?;
    let parsed = names::parse_backup_name(&name)?;
    if parsed.file_name != base {
        return None;
    }
    let meta = std::fs::symlink_metadata(e.path()).ok()?;
    if !meta.is_file() {
        return None;
    }
    let prefix = file
        .rsplit_once('/')
        .map(|(d, _)| format!("{d}/"))
        .unwrap_or_default();
    let created = created_of(parsed.at);
    let rel = format!("{prefix}{name}");
    Some(OnDisk {
        entry: BackupEntry {
            id: format!("{}:{rel}", place.loc.name),
            location: place.loc.name.clone(),
            file: file.to_string(),
            path: e.path().display().to_string(),
            created: created.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            size: meta.len(),
            entities: None,
            conversations: None,
        },
        rel,
        created: created.with_timezone(&chrono::Utc),
    })
}

fn sort_newest_first(list: &mut [OnDisk]) {
    list.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then_with(|| b.rel.cmp(&a.rel))
            .then_with(|| a.entry.location.cmp(&b.entry.location))
    });
}

impl Engine {
    fn available_places(&self) -> Result<(Vec<Place>, Option<Archive>)> {
        let archive = Archive::open_existing(self.home())?;
        let known = match &archive {
            Some(a) => a.location_ids()?,
            None => HashMap::new(),
        };
        let places = self
            .places(&known)
            .into_iter()
            .filter(|p| p.availability.is_available())
            .collect();
        Ok((places, archive))
    }

    /// Every backup in every available location, newest first.
    pub fn backups(
        &self,
        file: Option<&str>,
        location: Option<&str>,
        with_counts: bool,
    ) -> Result<Vec<BackupEntry>> {
        if let Some(l) = location {
            if l != crate::location::LOCAL && !self.config().locations.iter().any(|c| c.name == l) {
                return Err(Error::Usage(format!("no location named `{l}`")));
            }
        }
        let (places, archive) = self.available_places()?;
        let files = self.file_set(&places, archive.as_ref())?;
        let mut all = Vec::new();
        for p in places
            .iter()
            .filter(|p| location.is_none_or(|l| l == p.loc.name))
        {
            for f in files
                .iter()
                .filter(|f| file.is_none_or(|x| x == f.as_str()))
            {
                all.extend(backups_of(p, f));
            }
        }
        sort_newest_first(&mut all);
        let mut out: Vec<BackupEntry> = all.into_iter().map(|b| b.entry).collect();
        if with_counts {
            for b in &mut out {
                let facts = crate::kind::read_content(Path::new(&b.path), &self.read_ctx())
                    .map(|c| c.facts)
                    .unwrap_or_default();
                b.entities = facts.entities;
                b.conversations = facts.conversations;
            }
        }
        Ok(out)
    }

    /// Finds the backup named by an id (`location:relative/path`) or a path, refusing
    /// anything that is not a real backup of a synced file inside an available location.
    pub(crate) fn find_backup(&self, spec: &str) -> Result<(Place, String, PathBuf)> {
        let (places, _) = self.available_places()?;
        let refuse =
            |why: String| Error::Refused(format!("`{spec}` is not a restorable backup: {why}"));
        let (place, rel) =
            if let Some((loc, rel)) = spec.split_once(':').filter(|(l, _)| !l.contains('/')) {
                let place = places
                    .into_iter()
                    .find(|p| p.loc.name == loc)
                    .ok_or_else(|| refuse(format!("no available location named `{loc}`")))?;
                (place, rel.to_string())
            } else {
                let path = Path::new(spec);
                if !path.is_absolute() {
                    return Err(refuse(
                        "give a backup id (location:path) or an absolute path".into(),
                    ));
                }
                let mut found = None;
                for p in places {
                    if let Ok(rel) = path.strip_prefix(&p.loc.root) {
                        let rel = rel
                            .to_str()
                            .ok_or_else(|| refuse("the path is not valid UTF-8".into()))?
                            .to_string();
                        found = Some((p, rel));
                        break;
                    }
                }
                found.ok_or_else(|| refuse("it is not inside any available location".into()))?
            };
        let rel_path = Path::new(&rel);
        if rel.is_empty()
            || rel_path
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(refuse(
                "the path must stay inside the location (no `..`, no absolute part)".into(),
            ));
        }
        let name = rel_path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let parsed = names::parse_backup_name(name)
            .ok_or_else(|| refuse("its name is not a backup name".into()))?;
        let file = match rel.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/{}", parsed.file_name),
            None => parsed.file_name.clone(),
        };
        if !self.selector().matches(&file) {
            return Err(refuse(format!("`{file}` is not a synced file")));
        }
        let full = place.loc.root.join(&rel);
        let meta =
            std::fs::symlink_metadata(&full).map_err(|e| refuse(format!("cannot read it: {e}")))?;
        if !meta.is_file() {
            return Err(refuse("it is a link or not a regular file".into()));
        }
        // Every folder on the way must be inside the location too (no symlinked folders out).
        let root = std::fs::canonicalize(&place.loc.root)
            .map_err(|e| Error::io("resolve", &place.loc.root, e))?;
        let real = std::fs::canonicalize(&full).map_err(|e| Error::io("resolve", &full, e))?;
        if !real.starts_with(&root) {
            return Err(refuse("it leads outside the location".into()));
        }
        Ok((place, file, full))
    }

    /// Puts a backup (by id or path) back in place; the current version is backed up first.
    /// The restored version then propagates at the next sync as an ordinary change.
    pub fn restore(
        &self,
        spec: &str,
        dry_run: bool,
        events: &mut dyn FnMut(&Event),
    ) -> Result<RestoreReport> {
        let _lock = self.lock("metasync restore")?;
        let (place, file, backup_path) = self.find_backup(spec)?;
        let content = crate::kind::read_content(&backup_path, &self.read_ctx())?;
        if !content.facts.integrity.is_empty() {
            return Err(Error::Refused(format!(
                "backup {} fails its integrity check ({}); not restored",
                backup_path.display(),
                content.facts.integrity.join("; ")
            )));
        }
        let entry = backups_of(&place, &file)
            .into_iter()
            .find(|b| Path::new(&b.entry.path) == backup_path)
            .map(|b| b.entry)
            .ok_or_else(|| {
                Error::Refused(format!(
                    "{} is not a backup of {file}",
                    backup_path.display()
                ))
            })?;
        let dest = place.loc.path_of(&file);
        let mut report = RestoreReport {
            backup: entry,
            restored_to: dest.display().to_string(),
            previous_backup: None,
            dry_run,
        };
        if dry_run {
            return Ok(report);
        }
        let at = self.clock().now_local().naive_local();
        if let Found::Present {
            content: current, ..
        } = scan::scan_file(&dest, None, &self.read_ctx())
        {
            let method = crate::apply::backup_method(current.kind, place.loc.is_local());
            report.previous_backup = Some(
                crate::apply::backup(
                    &dest,
                    at,
                    method,
                    &crate::sqlite::SqliteOptions::from(&self.config().sqlite),
                )?
                .display()
                .to_string(),
            );
        }
        let archive = Archive::open(self.home())?;
        let machine = archive.machine_id()?;
        let version = crate::kind::Source {
            kind: content.kind,
            path: &backup_path,
            hash: &content.hash,
            mtime: std::time::SystemTime::now(),
            snapshot: None,
        };
        crate::kind::write_version(
            &version,
            &dest,
            place.loc.is_local(),
            &machine,
            &self.read_ctx(),
        )?;
        tracing::info!(target: "metasync", "{file} in {}: restored from {}", place.loc.name, backup_path.display());
        events(&Event::BackupRestored {
            id: report.backup.id.clone(),
            file: file.clone(),
        });
        Ok(report)
    }

    /// Applies the backup retention now.
    pub fn prune(&self, dry_run: bool) -> Result<PruneReport> {
        let _lock = self.lock("metasync prune")?;
        let (places, _) = self.available_places()?;
        let refs: Vec<&Place> = places.iter().collect();
        prune_places(self, &refs, dry_run, None)
    }
}

/// What a sync run already knows when retention runs right after it: its files, what its
/// scan found (stat and version of each file in each location), what it wrote, its scan
/// caches, and which folders can hold backups (the ones its listing saw backups in, and the
/// ones it wrote into). Retention then reads only those folders, and re-reads only files
/// that changed since.
pub(crate) struct RunVersions<'a> {
    pub(crate) files: &'a [String],
    pub(crate) scans: &'a crate::engine::Scans,
    pub(crate) caches: &'a [FileMap<CacheEntry>],
    /// (location, file) → stat and version just written there.
    pub(crate) written: HashMap<(String, String), (scan::Stat, String)>,
    pub(crate) backup_folders: BTreeSet<PathBuf>,
}

impl RunVersions<'_> {
    /// The version `file` had in `location` as this run left it, with the stat it had then.
    fn current(&self, location: &str, file: &str) -> Option<(&scan::Stat, &str)> {
        if let Some((stat, hash)) = self.written.get(&(location.to_string(), file.to_string())) {
            return Some((stat, hash));
        }
        match self.scans.get(file, location) {
            Some(Found::Present { stat, content, .. }) => Some((stat, &content.hash)),
            _ => None,
        }
    }

    fn cache(&self, location: &str) -> Option<&FileMap<CacheEntry>> {
        let i = self.scans.location_index(location)?;
        self.caches.get(i)
    }
}

/// Scan caches by location.
type Caches = HashMap<String, FileMap<CacheEntry>>;

/// Retention after a sync (the caller holds the lock).
pub(crate) fn prune_after_sync(
    engine: &Engine,
    available: &[&Place],
    known: Option<&RunVersions>,
) -> Result<()> {
    prune_places(engine, available, false, known).map(|_| ())
}

fn prune_places(
    engine: &Engine,
    places: &[&Place],
    dry_run: bool,
    known: Option<&RunVersions>,
) -> Result<PruneReport> {
    let usable: Vec<&Place> = places
        .iter()
        .copied()
        .filter(|p| matches!(p.availability, Availability::Available { .. }))
        .collect();
    // The `prune` command reads the archive itself; after a sync the run's knowledge serves.
    let own: Option<(Vec<String>, Caches)> = match known {
        Some(_) => None,
        None => {
            let archive = Archive::open(engine.home())?;
            let files = engine
                .file_set(usable.iter().copied(), Some(&archive))?
                .into_iter()
                .collect();
            let mut caches = HashMap::new();
            for p in &usable {
                caches.insert(p.loc.name.clone(), archive.cache(&p.loc.name)?);
            }
            Some((files, caches))
        }
    };
    let files: &[String] = match (&own, known) {
        (Some((f, _)), _) => f,
        (None, Some(k)) => k.files,
        (None, None) => &[],
    };
    let cache_of = |loc: &str| -> Option<&FileMap<CacheEntry>> {
        match (&own, known) {
            (Some((_, c)), _) => c.get(loc),
            (None, Some(k)) => k.cache(loc),
            (None, None) => None,
        }
    };
    let policy = &engine.config().backups;
    let ctx = engine.read_ctx();
    let mut changes = Changes::default();
    let mut report = PruneReport {
        deleted: Vec::new(),
        kept: 0,
        dry_run,
    };
    let scan_time = crate::times::now_ns();

    let mut per_place: Vec<(&Place, String, Vec<OnDisk>)> = Vec::new();
    for p in &usable {
        let lists = match known {
            // Only the folders that can hold backups are read.
            Some(k) if k.backup_folders.is_empty() => Vec::new(),
            Some(k) => backups_by_file(
                p,
                files.iter().map(String::as_str).filter(|f| {
                    p.loc
                        .path_of(f)
                        .parent()
                        .is_some_and(|d| k.backup_folders.contains(d))
                }),
            ),
            None => backups_by_file(p, files.iter().map(String::as_str)),
        };
        for (f, list) in lists {
            per_place.push((p, f, list));
        }
    }
    // Only the backups of a file the policy would thin are read (hashed), and the versions
    // that exist as current files anywhere available are needed only when there is one.
    let now = engine.clock().now();
    let (settled, per_place): (Vec<_>, Vec<_>) = per_place
        .into_iter()
        .partition(|(_, _, list)| policy_keeps_all(list, policy, now));
    report.kept += settled.iter().map(|(_, _, list)| list.len()).sum::<usize>();
    let needs_elsewhere = !per_place.is_empty();
    let mut elsewhere: HashSet<String> = HashSet::new();
    if needs_elsewhere {
        for p in &usable {
            let cache = cache_of(&p.loc.name);
            for f in files {
                let path = p.loc.path_of(f);
                let vouched = known
                    .and_then(|k| k.current(&p.loc.name, f))
                    .filter(|(stat, _)| {
                        matches!(scan::Stat::of(&path), Ok(Some((now, _))) if &now == *stat)
                    })
                    .map(|(_, hash)| hash.to_string());
                if let Some(hash) = vouched {
                    elsewhere.insert(hash);
                } else if let Found::Present { content, .. } =
                    scan::scan_file(&path, cache.and_then(|c| c.get(f)), &ctx)
                {
                    elsewhere.insert(content.hash);
                }
            }
        }
    }
    for (place, _file, list) in per_place {
        let cache = cache_of(&place.loc.name);
        let mut items = Vec::new();
        let mut by_id = HashMap::new();
        for b in &list {
            let version = match scan::scan_file(
                &place.loc.root.join(&b.rel),
                cache.and_then(|c| c.get(&b.rel)),
                &ctx,
            ) {
                Found::Present {
                    stat,
                    content,
                    hashed,
                } => {
                    if hashed {
                        changes.cache.push((
                            (place.loc.name.clone(), b.rel.clone()),
                            Some(scan::cache_entry(&stat, &content, scan_time)),
                        ));
                    }
                    Some(content.hash)
                }
                _ => None,
            };
            items.push(BackupItem {
                id: b.entry.id.clone(),
                created: b.created,
                version,
            });
            by_id.insert(b.entry.id.clone(), b);
        }
        let doomed: HashSet<String> =
            retention::to_delete(&items, policy, now, &|h| elsewhere.contains(h))
                .into_iter()
                .collect();
        for item in &items {
            let b = by_id[&item.id];
            if doomed.contains(&item.id) {
                if !dry_run {
                    std::fs::remove_file(&b.entry.path)
                        .map_err(|e| Error::io("delete old backup", &b.entry.path, e))?;
                    changes
                        .cache
                        .push(((place.loc.name.clone(), b.rel.clone()), None));
                    tracing::info!(target: "metasync", "pruned backup {}", b.entry.path);
                }
                report.deleted.push(b.entry.clone());
            } else {
                report.kept += 1;
                // What survives here counts as "elsewhere" for the next location.
                if let Some(h) = &item.version {
                    elsewhere.insert(h.clone());
                }
            }
        }
    }
    if !changes.cache.is_empty() {
        changes.now = ns_to_rfc3339(scan_time.into());
        Archive::open(engine.home())?.commit(&changes)?;
    }
    report.deleted.sort_by(|a, b| a.created.cmp(&b.created));
    Ok(report)
}
