//! Backups as a lifecycle: listing with stable ids, restoring safely (only real backups inside
//! a configured location), and retention after every sync and on `prune`.

use crate::archive::{Archive, Changes, FileMap};
use crate::engine::{ns_to_rfc3339, Engine, Place};
use crate::error::{Error, Result};
use crate::history::hashes::PlainHashes;
use crate::history::policy::{self, Action};
use crate::history::store::{Manifest, Store, VersionInfo};
use crate::location::Availability;
use crate::names;
use crate::report::{BackupEntry, Event, PruneReport, RestoreReport};
use crate::scan::{self, Found};
use chrono::{Local, TimeZone};
use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

/// Rebuilds the stored version `m` into the new file `to` by way of a temp file beside it:
/// `to` appears only whole, verified and fsynced (a crash midway leaves at most the temp),
/// and never over a file that appeared there meanwhile.
fn restore_stored_to(
    store: &Store,
    m: &Manifest,
    to: &Path,
    sqlite: &crate::sqlite::SqliteOptions,
) -> Result<()> {
    let temp = crate::apply::atomic::Temp::in_folder(to, "restore")?;
    store.restore_to(m, temp.path(), sqlite)?;
    match temp.put_in_place_new(to) {
        Err(Error::Changed(_)) => Err(Error::Refused(format!(
            "{} appeared while the version was being restored; left as it is",
            to.display()
        ))),
        done => {
            crate::apply::atomic::sync_folder(to);
            done
        }
    }
}

/// How long a `restore --to` temp must have gone unwritten before it counts as abandoned: a
/// live restore writes its temp continuously, so one this old is a crash's leftover.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes what an interrupted `restore --to` of the same path left beside it: temps named
/// for that very file and made by a restore (`.<file>.metasync-tmp-restore-…`), unwritten
/// for [`ABANDONED_AFTER`]. Anything else in the folder is never touched; a temp that cannot
/// be removed stays, with a warning.
fn remove_abandoned_restores(to: &Path) {
    let (Some(name), Some(dir)) = (to.file_name().and_then(|n| n.to_str()), to.parent()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = names::temp_name(name, "restore", "");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let fname = entry.file_name();
        let Some(fname) = fname.to_str().filter(|f| f.starts_with(&prefix)) else {
            continue;
        };
        let abandoned = entry.metadata().is_ok_and(|m| {
            m.is_file()
                && m.modified()
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age >= ABANDONED_AFTER)
        });
        if !abandoned {
            continue;
        }
        let path = dir.join(fname);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(target: "metasync", "removed {}, left by an interrupted restore", path.display())
            }
            Err(e) => {
                tracing::warn!(target: "metasync", "could not remove {}, left by an interrupted restore: {e}", path.display())
            }
        }
    }
}

/// The name of the file in `dir` whose backups are named with the shortened `stem` (see
/// [`names::backup_stem`]), when it is there.
fn file_of_stem(dir: &Path, stem: &str) -> Option<String> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names::file_of_stem(stem, names.iter().map(String::as_str)).map(String::from)
}

/// One backup found on disk.
#[derive(Debug, Clone)]
pub(crate) struct OnDisk {
    pub(crate) entry: BackupEntry,
    pub(crate) rel: String,
    pub(crate) created: chrono::DateTime<chrono::Utc>,
}

pub(crate) fn created_of(at: chrono::NaiveDateTime) -> chrono::DateTime<Local> {
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
            .insert(names::backup_stem(base).into_owned(), (order.len(), f));
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
/// file with more plain backups there than stay plain can lose one.
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

/// Whether retention has nothing to do with the plain backups in `list`: no more of them
/// than stay plain (`plain_last` of the `keep_last`; older ones move into the store or go),
/// and none of a file too large to keep a plain copy.
fn policy_keeps_all(
    list: &[OnDisk],
    policy: &crate::config::BackupConfig,
    _now: chrono::DateTime<chrono::Utc>,
) -> bool {
    let max = policy.plain_max_mb.saturating_mul(1 << 20);
    list.len() <= policy.plain_last.min(policy.keep_last)
        && list.iter().all(|b| b.entry.size <= max)
}

/// `e` as a backup of `file` (whose base name is `base`) in `place`, when it is one.
fn backup_entry(place: &Place, file: &str, base: &str, e: &std::fs::DirEntry) -> Option<OnDisk> {
    let name = e.file_name().to_str().map(String::from)?;
    let parsed = names::parse_backup_name(&name)?;
    if parsed.file_name != names::backup_stem(base) {
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
            sha256: None,
            protected: crate::history::protection_of(&place.loc.root, &rel)
                .map(|p| p.reason.as_str().to_string()),
            stored: false,
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
    pub(crate) fn available_places(&self) -> Result<(Vec<Place>, Option<Archive>)> {
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

    /// Every backup in every available location, plain and stored, newest first.
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
        let mut stored = Vec::new();
        let mut facts = HashMap::new();
        for p in places
            .iter()
            .filter(|p| location.is_none_or(|l| l == p.loc.name))
        {
            let cache = match &archive {
                Some(a) => a.cache(&p.loc.name)?,
                None => FileMap::default(),
            };
            let plain = self.plain_backups(p, &files, file, &cache, &mut facts);
            all.extend(plain);
            // The store's backup objects the mirror does not hold as plain files.
            for b in self.bucket_backups(p, file, with_counts)? {
                if !all.iter().any(|a| a.entry.id == b.entry.id) {
                    all.push(b);
                }
            }
            let store = Store::of_location(&p.loc.root);
            for (id, m) in store.manifests()?.0 {
                if file.is_none_or(|x| x == m.info.file) {
                    let entry = stored_entry(p, &store, &id, &m);
                    stored.push((m.info.created, entry));
                }
            }
        }
        sort_newest_first(&mut all);
        let mut out: Vec<(chrono::DateTime<chrono::Utc>, BackupEntry)> =
            all.into_iter().map(|b| (b.created, b.entry)).collect();
        out.extend(stored);
        // Newest first; a stable sort keeps the plain backups' own order among equals.
        out.sort_by_key(|b| std::cmp::Reverse(b.0));
        let mut out: Vec<BackupEntry> = out.into_iter().map(|(_, e)| e).collect();
        if with_counts {
            let plain =
                |b: &BackupEntry| !b.stored && !super::bucket_backups::is_object_path(&b.path);
            for b in out.iter_mut().filter(|b| plain(b)) {
                // Read with the hash (or kept with it); read again only if that failed.
                let facts = facts.remove(&b.id).unwrap_or_else(|| {
                    crate::kind::read_content(Path::new(&b.path), &self.read_ctx())
                        .map(|c| c.facts)
                        .unwrap_or_default()
                });
                b.entities = facts.entities;
                b.conversations = facts.conversations;
            }
        }
        Ok(out)
    }

    /// The plain backups of `files` (or of `file` alone) in `place`, each with its version
    /// hash, and its facts in `facts` (by id). A backup's hash is read once and then kept
    /// ([`PlainHashes`]) for as long as its stat stays the same: a listing of unchanged
    /// backups reads none of them.
    fn plain_backups(
        &self,
        place: &Place,
        files: &BTreeSet<String>,
        file: Option<&str>,
        cache: &FileMap<crate::archive::CacheEntry>,
        facts: &mut HashMap<String, crate::model::Facts>,
    ) -> Vec<OnDisk> {
        let mut hashes = PlainHashes::load(self.home(), &place.loc.name);
        let mut all = Vec::new();
        for f in files
            .iter()
            .filter(|f| file.is_none_or(|x| x == f.as_str()))
        {
            for mut b in backups_of(place, f) {
                let kept = hashes.get(&b.rel);
                let path = Path::new(&b.entry.path);
                let found =
                    scan::scan_file(path, kept.as_ref().or(cache.get(&b.rel)), &self.read_ctx());
                if let Found::Present {
                    stat,
                    content,
                    hashed,
                } = found
                {
                    if hashed {
                        let now = crate::times::now_ns();
                        hashes.put(&b.rel, f, scan::cache_entry(&stat, &content, now));
                    }
                    b.entry.sha256 = Some(content.hash);
                    facts.insert(b.entry.id.clone(), content.facts);
                }
                all.push(b);
            }
        }
        let listed: Vec<&str> = all.iter().map(|b| b.rel.as_str()).collect();
        hashes.forget_unlisted(file, &listed);
        if let Err(e) = hashes.save() {
            tracing::warn!(target: "metasync", "cannot keep the hashes of the backups in {}: {e}", place.loc.name);
        }
        all
    }

    /// The id of the newest backup of `file` in any available location, plain, stored or a
    /// store's backup object, found without reading any (what `diff` compares with by default).
    pub(crate) fn newest_backup_id(&self, file: &str) -> Result<Option<String>> {
        let (places, _) = self.available_places()?;
        let mut best: Option<(chrono::DateTime<chrono::Utc>, String, String)> = None;
        let mut consider = |created, rel: &str, id: String| {
            if best
                .as_ref()
                .is_none_or(|b| (created, rel) > (b.0, b.1.as_str()))
            {
                best = Some((created, rel.to_string(), id));
            }
        };
        for p in &places {
            for b in backups_of(p, file) {
                consider(b.created, &b.rel, b.entry.id);
            }
            // A store's backup objects, from the listing the refresh made (nothing read).
            for b in self.bucket_backups(p, Some(file), false)? {
                consider(b.created, &b.rel, b.entry.id);
            }
            let store = Store::of_location(&p.loc.root);
            for (id, m) in store.manifests()?.0 {
                if m.info.file == file {
                    consider(m.info.created, "", stored_entry(p, &store, &id, &m).id);
                }
            }
        }
        Ok(best.map(|b| b.2))
    }

    /// The stored version named by `<location>:history:<backup name>`, when `spec` is one,
    /// among the available `places`.
    fn find_stored(
        &self,
        spec: &str,
        places: Vec<Place>,
    ) -> Result<Option<(Place, Store, String, Manifest)>> {
        let Some((loc, name)) = spec
            .split_once(':')
            .and_then(|(l, rest)| Some((l, rest.strip_prefix(STORED_PREFIX)?)))
        else {
            return Ok(None);
        };
        let refuse =
            |why: String| Error::Refused(format!("`{spec}` is not a restorable backup: {why}"));
        let place = places
            .into_iter()
            .find(|p| p.loc.name == loc)
            .ok_or_else(|| refuse(format!("no available location named `{loc}`")))?;
        let store = Store::of_location(&place.loc.root);
        let id = Manifest::id_of(name);
        let found = store.manifests()?.0.into_iter().find(|(i, _)| *i == id);
        let (id, m) =
            found.ok_or_else(|| refuse(format!("no stored version `{name}` in {loc}")))?;
        if !self.selector().matches(&m.info.file) {
            return Err(refuse(format!("`{}` is not a synced file", m.info.file)));
        }
        self.fetch_stored_packs(&place, &m)?;
        Ok(Some((place, store, id, m)))
    }

    /// Writes the version `spec` names (plain or stored) to the new file `to`, touching no
    /// location; the version is checked against its hash first.
    pub fn restore_to_path(&self, spec: &str, to: &Path) -> Result<BackupEntry> {
        if to.symlink_metadata().is_ok() {
            return Err(Error::Refused(format!(
                "{} exists; give a path that does not",
                to.display()
            )));
        }
        let (places, _) = self.available_places()?;
        let parent = to
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let real = std::fs::canonicalize(parent).map_err(|e| Error::io("resolve", parent, e))?;
        for p in &places {
            if std::fs::canonicalize(&p.loc.root).is_ok_and(|root| real.starts_with(root)) {
                return Err(Error::Refused(format!(
                    "{} is inside the location {}; restore --to writes outside every location",
                    to.display(),
                    p.loc.name
                )));
            }
        }
        remove_abandoned_restores(to);
        let ctx = self.read_ctx();
        if let Some((_, _, tmp, entry, _scratch)) = self.find_bucket_backup(spec)? {
            let content = crate::kind::read_content(&tmp, &ctx)?;
            if !content.facts.integrity.is_empty() {
                return Err(Error::Refused(format!(
                    "backup {} fails its integrity check ({}); not restored",
                    entry.path,
                    content.facts.integrity.join("; ")
                )));
            }
            // A plain file's version hash is its byte hash already; a database's is logical.
            let hash = match content.kind {
                crate::model::Kind::Plain => content.hash,
                _ => crate::kind::sha256_file(&tmp)?,
            };
            crate::apply::copy_file(&tmp, to, &hash, std::time::SystemTime::now(), "restore")?;
            return Ok(entry);
        }
        if let Some((place, store, id, m)) = self.find_stored(spec, places)? {
            restore_stored_to(&store, &m, to, &ctx.sqlite)?;
            return Ok(stored_entry(&place, &store, &id, &m));
        }
        let (place, file, path) = self.find_backup(spec)?;
        let entry = backups_of(&place, &file)
            .into_iter()
            .find(|b| Path::new(&b.entry.path) == path)
            .map(|b| b.entry)
            .ok_or_else(|| {
                Error::Refused(format!("{} is not a backup of {file}", path.display()))
            })?;
        let hash = crate::kind::sha256_file(&path)?;
        crate::apply::copy_file(&path, to, &hash, std::time::SystemTime::now(), "restore")?;
        Ok(entry)
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
        let dir = rel.rsplit_once('/').map(|(d, _)| d);
        let base = match names::may_be_shortened(&parsed.file_name) {
            true => file_of_stem(&place.loc.root.join(dir.unwrap_or("")), &parsed.file_name)
                .unwrap_or(parsed.file_name.clone()),
            false => parsed.file_name.clone(),
        };
        let file = match dir {
            Some(dir) => format!("{dir}/{base}"),
            None => base,
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

    /// Finds the version `spec` names, plain or stored: a stored one is rebuilt into a
    /// scratch file (checked against its byte and logical hashes), removed on drop.
    pub(crate) fn find_version(
        &self,
        spec: &str,
    ) -> Result<(Place, String, PathBuf, BackupEntry, Scratch)> {
        if let Some(found) = self.find_bucket_backup(spec)? {
            return Ok(found);
        }
        if let Some((place, store, id, m)) = self.find_stored(spec, self.available_places()?.0)? {
            let ctx = self.read_ctx();
            std::fs::create_dir_all(&ctx.scratch)
                .map_err(|e| Error::io("create folder", &ctx.scratch, e))?;
            let tmp = ctx
                .scratch
                .join(format!("restore-{}", crate::ids::random_hex(12)));
            let scratch = Scratch(Some(tmp.clone()));
            store.restore_to(&m, &tmp, &ctx.sqlite)?;
            let entry = stored_entry(&place, &store, &id, &m);
            let place = self.restore_place(place)?;
            return Ok((place, m.info.file, tmp, entry, scratch));
        }
        let (place, file, backup_path) = self.find_backup(spec)?;
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
        Ok((place, file, backup_path, entry, Scratch(None)))
    }

    /// Puts a backup (by id or path, plain or stored) back in place; the current version is
    /// backed up first, and that backup is protected (`replaced`). The restored version
    /// then propagates at the next sync as an ordinary change.
    pub fn restore(
        &self,
        spec: &str,
        dry_run: bool,
        events: &mut dyn FnMut(&Event),
    ) -> Result<RestoreReport> {
        let _lock = self.lock("metasync restore")?;
        if dry_run {
            // A backup object is not downloaded to say what restoring it would do.
            if let Some(plan) = self.bucket_restore_plan(spec)? {
                return Ok(plan);
            }
        }
        let (place, file, backup_path, entry, _scratch) = self.find_version(spec)?;
        let content = crate::kind::read_content(&backup_path, &self.read_ctx())?;
        if !content.facts.integrity.is_empty() {
            return Err(Error::Refused(format!(
                "backup {} fails its integrity check ({}); not restored",
                entry.path,
                content.facts.integrity.join("; ")
            )));
        }
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
            let made = crate::apply::backup(
                &dest,
                at,
                method,
                &crate::sqlite::SqliteOptions::from(&self.config().sqlite),
            )?;
            self.protect_replaced(&place.loc.root, &made)?;
            report.previous_backup = Some(made.display().to_string());
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
        tracing::info!(target: "metasync", "{file} in {}: restored from {}", place.loc.name, report.backup.id);
        events(&Event::BackupRestored {
            id: report.backup.id.clone(),
            file: file.clone(),
        });
        Ok(report)
    }

    /// Bytes used by the history of each available location (plain backups and store).
    pub fn history_usage(&self) -> Result<Vec<crate::report::HistoryUsage>> {
        let (places, archive) = self.available_places()?;
        let files = self.file_set(&places, archive.as_ref())?;
        let config = &self.config().backups;
        let mut out = Vec::new();
        for p in &places {
            let plain = backups_by_file(p, files.iter().map(String::as_str));
            let plain_bytes: u64 = plain
                .iter()
                .flat_map(|(_, l)| l)
                .map(|b| b.entry.size)
                .sum();
            let store = Store::of_location(&p.loc.root);
            let stored_bytes =
                super::bucket_backups::stored_usage(self, p).unwrap_or_else(|| store.bytes_used());
            let versions =
                plain.iter().map(|(_, l)| l.len()).sum::<usize>() + store.manifests()?.0.len();
            let cap = config.max_history_mb.map(|mb| mb.saturating_mul(1 << 20));
            let (bucket_bytes, objects) = super::bucket_backups::bucket_usage(self, p);
            out.push(crate::report::HistoryUsage {
                location: p.loc.name.clone(),
                plain_bytes,
                stored_bytes,
                bucket_bytes,
                versions: versions + objects,
                over_budget: cap.is_some_and(|c| plain_bytes + stored_bytes + bucket_bytes > c),
            });
        }
        Ok(out)
    }

    /// [`Engine::status`] with the bytes used by history in each location.
    pub fn status_with_history(&self) -> Result<crate::report::StatusReport> {
        let mut s = self.status()?;
        s.history = self.history_usage()?;
        Ok(s)
    }

    /// Applies the backup retention now.
    pub fn prune(&self, dry_run: bool) -> Result<PruneReport> {
        let _lock = self.lock("metasync prune")?;
        // A lease taken to thin a bucket is given back when the command ends.
        let _stores = crate::objstore::RunGuard(&self.stores);
        let (places, _) = self.available_places()?;
        let refs: Vec<&Place> = places.iter().collect();
        let mut report = prune_places(self, &refs, dry_run, None)?;
        super::bucket_backups::prune_buckets(self, &refs, dry_run, &mut report)?;
        Ok(report)
    }
}

/// What a sync run already knows when retention runs right after it: its files, and which
/// folders can hold backups (the ones its listing saw backups in, and the ones it wrote
/// into). Retention then reads only those folders.
pub(crate) struct RunVersions<'a> {
    pub(crate) files: &'a [String],
    pub(crate) backup_folders: BTreeSet<PathBuf>,
    /// What the run knew of the versions its backups keep, by backup path ([`Described`]).
    pub(crate) described: HashMap<PathBuf, Described>,
}

/// What was known of a version when a run renamed it aside as a backup (a hard link to the
/// very file its scan vouched for): its description and the file it was recorded for. The
/// move into the store trusts it instead of checking and hashing the backup again only when
/// the backup still is that file ([`Described::holds`]).
#[derive(Debug, Clone)]
pub(crate) struct Described {
    /// The file's identity and state when the description was recorded.
    pub(crate) at_rest: AtRest,
    /// When the description was taken (ns since the epoch): the scan cache entry's time, or
    /// the scan's when the run read it.
    pub(crate) recorded_ns: i64,
    /// The logical hash of a healthy database (`None`: damaged, stored as bytes).
    pub(crate) logical: Option<String>,
    pub(crate) entities: Option<u64>,
    pub(crate) conversations: Option<u64>,
}

impl Described {
    /// Whether this description holds for the file whose [`AtRest`] is `now`: the same
    /// device, inode, size and mtime (ns), and recorded at least [`scan::RACY_NS`] after that
    /// mtime (the scan cache's racy-entry rule: a write within the same timestamp tick could
    /// otherwise leave the stat as it was).
    pub(crate) fn holds(&self, now: &AtRest) -> bool {
        let (_, (_, secs, nanos)) = now;
        let mtime_ns = crate::times::ns_of(*secs, *nanos);
        self.at_rest == *now && i128::from(self.recorded_ns) >= mtime_ns + i128::from(scan::RACY_NS)
    }
}

/// Retention after a sync (the caller holds the lock).
pub(crate) fn prune_after_sync(
    engine: &Engine,
    available: &[&Place],
    known: Option<&RunVersions>,
) -> Result<()> {
    prune_places(engine, available, false, known).map(|_| ())
}

/// One kept version of one file in one location, plain or stored.
struct Kept {
    file: String,
    entry: BackupEntry,
    plain: Option<OnDisk>,
    stored: Option<String>,
    version: policy::Version,
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
        // An object store's history is the bucket's, thinned by `bucket_backups::thin_bucket`.
        .filter(|p| p.loc.store.is_none())
        .collect();
    // The `prune` command reads the archive itself; after a sync the run's files serve.
    let own: Option<Vec<String>> = match known {
        Some(_) => None,
        None => {
            let archive = Archive::open(engine.home())?;
            Some(
                engine
                    .file_set(usable.iter().copied(), Some(&archive))?
                    .into_iter()
                    .collect(),
            )
        }
    };
    let files: &[String] = match (&own, known) {
        (Some(f), _) => f,
        (None, Some(k)) => k.files,
        (None, None) => &[],
    };
    let mut report = PruneReport {
        deleted: Vec::new(),
        kept: 0,
        dry_run,
        stored: Vec::new(),
        bytes_freed: 0,
    };
    let mut changes = Changes::default();
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
        let described = known.map(|k| &k.described);
        let mut run = PruneRun {
            dry_run,
            described,
            report: &mut report,
            changes: &mut changes,
        };
        prune_place(engine, p, lists, &mut run)?;
    }
    if !changes.cache.is_empty() {
        let scan_time = crate::times::now_ns();
        changes.now = ns_to_rfc3339(scan_time.into());
        Archive::open(engine.home())?.commit(&changes)?;
    }
    report.deleted.sort_by(|a, b| a.created.cmp(&b.created));
    Ok(report)
}

/// The versions kept in `place`: its plain backups (`lists`) and its stored versions.
fn kept_versions(
    place: &Place,
    lists: Vec<(String, Vec<OnDisk>)>,
    store: &Store,
) -> Result<Vec<Kept>> {
    let mut kept = Vec::new();
    for (file, list) in lists {
        for b in list {
            let protected =
                crate::history::protection_of(&place.loc.root, &b.rel).map(|p| (p.reason, p.since));
            kept.push(Kept {
                file: file.clone(),
                entry: b.entry.clone(),
                version: policy::Version {
                    id: b.entry.id.clone(),
                    created: b.created,
                    size: b.entry.size,
                    protected,
                },
                plain: Some(b),
                stored: None,
            });
        }
    }
    let (manifests, _) = store.manifests()?;
    let freed = store.exclusive_bytes(&manifests);
    for (id, m) in manifests {
        let entry = stored_entry(place, store, &id, &m);
        kept.push(Kept {
            file: m.info.file.clone(),
            version: policy::Version {
                id: entry.id.clone(),
                created: m.info.created,
                size: freed.get(&id).copied().unwrap_or(0),
                protected: m.info.protected.map(|p| (p.reason, p.since)),
            },
            entry,
            plain: None,
            stored: Some(id),
        });
    }
    Ok(kept)
}

/// A stored version as the listing shows it.
pub(crate) fn stored_entry(place: &Place, store: &Store, id: &str, m: &Manifest) -> BackupEntry {
    BackupEntry {
        id: format!("{}:{STORED_PREFIX}{}", place.loc.name, m.info.name),
        location: place.loc.name.clone(),
        file: m.info.file.clone(),
        path: store.manifest_path(id).display().to_string(),
        created: m
            .info
            .created
            .with_timezone(&Local)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        size: m.size,
        entities: m.info.entities,
        conversations: m.info.conversations,
        sha256: Some(m.info.logical.clone().unwrap_or_else(|| m.sha256.clone())),
        protected: m.info.protected.map(|p| p.reason.as_str().to_string()),
        stored: true,
    }
}

/// What comes after `<location>:` in the id of a stored version, before its backup name.
pub(crate) const STORED_PREFIX: &str = "history:";

/// What one retention pass carries from place to place.
struct PruneRun<'a> {
    dry_run: bool,
    /// What the sync run knew of the backups it made (none for `prune`).
    described: Option<&'a HashMap<PathBuf, Described>>,
    report: &'a mut PruneReport,
    changes: &'a mut Changes,
}

/// Applies the policy to one location.
fn prune_place(
    engine: &Engine,
    place: &Place,
    lists: Vec<(String, Vec<OnDisk>)>,
    run: &mut PruneRun<'_>,
) -> Result<()> {
    let (dry_run, described) = (run.dry_run, run.described);
    let (report, changes) = (&mut *run.report, &mut *run.changes);
    let store = Store::of_location(&place.loc.root);
    let kept = kept_versions(place, lists, &store)?;
    if kept.is_empty() {
        return Ok(());
    }
    let config = &engine.config().backups;
    let now = engine.clock().now();
    let mut by_file: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, k) in kept.iter().enumerate() {
        by_file.entry(k.file.as_str()).or_default().push(i);
    }
    let versions: Vec<policy::Version> = kept.iter().map(|k| k.version.clone()).collect();
    let mut decisions: Vec<Option<policy::Decision>> = vec![None; kept.len()];
    for idx in by_file.values() {
        let group: Vec<policy::Version> = idx.iter().map(|&i| versions[i].clone()).collect();
        for (i, d) in idx.iter().zip(policy::decide(&group, config, now)) {
            decisions[*i] = Some(d);
        }
    }
    let mut decisions: Vec<policy::Decision> = decisions.into_iter().flatten().collect();
    if policy::within_budget(&versions, &mut decisions, config, now) {
        tracing::warn!(target: "metasync", "history in {} is over max_history_mb with only plain and protected versions left", place.loc.name);
    }
    for (k, d) in kept.iter().zip(&decisions) {
        match (d.action, &k.plain, &k.stored) {
            (Action::Store, Some(b), _) => {
                if !dry_run {
                    let known = described.and_then(|d| d.get(Path::new(&b.entry.path)));
                    let moved =
                        move_into_store(engine, place, &store, &k.file, b, &k.version, known);
                    match moved {
                        Ok(()) => {}
                        // Another machine sharing the location moved it meanwhile.
                        Err(_) if !Path::new(&b.entry.path).exists() => continue,
                        Err(e) => return Err(e),
                    }
                    changes
                        .cache
                        .push(((place.loc.name.clone(), b.rel.clone()), None));
                }
                report.stored.push(k.entry.clone());
            }
            (Action::Remove, plain, stored) => {
                if !dry_run {
                    if let Some(b) = plain {
                        match std::fs::remove_file(&b.entry.path) {
                            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                                return Err(Error::io("delete old backup", &b.entry.path, e))
                            }
                            _ => {}
                        }
                        crate::history::forget_protection(&place.loc.root, &b.rel);
                        changes
                            .cache
                            .push(((place.loc.name.clone(), b.rel.clone()), None));
                    }
                    if let Some(id) = stored {
                        store.remove(id)?;
                    }
                    tracing::info!(target: "metasync", "pruned {} ({})", k.entry.id, d.reason);
                }
                report.bytes_freed += k.version.size;
                report.deleted.push(k.entry.clone());
            }
            _ => report.kept += 1,
        }
    }
    if !dry_run && store.dir().is_dir() {
        store.collect(now)?;
    }
    Ok(())
}

/// Moves one plain backup into the store: stored, rebuilt and checked (bytes, and a
/// database's logical hash), and only then deleted. `known`: what the run that made the
/// backup knew of its version, used instead of describing it again only when the backup
/// provably still is the file it was recorded for ([`Described::holds`], checked before the
/// read into the store; after it, the file must be as it was before).
pub(crate) fn move_into_store(
    engine: &Engine,
    place: &Place,
    store: &Store,
    file: &str,
    b: &OnDisk,
    version: &policy::Version,
    known: Option<&Described>,
) -> Result<()> {
    let path = PathBuf::from(&b.entry.path);
    let guess = VersionInfo {
        file: file.to_string(),
        name: b.rel.clone(),
        created: b.created,
        database: crate::sqlite::is_sqlite(&path)?,
        logical: None,
        entities: None,
        conversations: None,
        protected: version
            .protected
            .map(|(reason, since)| crate::history::store::Protection { reason, since }),
    };
    store_proven(store, &path, guess, known, &engine.read_ctx().sqlite)?;
    crate::failpoint::hit("history_before_plain_delete");
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io("delete stored backup", &path, e))
        }
        _ => {}
    }
    crate::history::forget_protection(&place.loc.root, &b.rel);
    tracing::info!(target: "metasync", "{} moved into {}", b.entry.id, store.dir().display());
    Ok(())
}

/// Stores the plain backup at `path` (named in the store after `guess.name`) and proves it
/// before the plain file may go: the manifest rebuilds to the very bytes read (into nothing:
/// no file written, the rebuilt bytes hashed), and the file is as it was before the read
/// (device, inode, size, mtime). It is described as it is read ([`describe_backup`]), unless
/// `known` holds for it as it is before the read ([`Described::holds`]): then that
/// description is its own. A failed proof removes the manifest (the plain file stays).
fn store_proven(
    store: &Store,
    path: &Path,
    guess: VersionInfo,
    known: Option<&Described>,
    opts: &crate::sqlite::SqliteOptions,
) -> Result<(String, Manifest)> {
    let before = at_rest(path)?;
    let known = known.filter(|k| k.holds(&before)).map(|k| VersionInfo {
        database: k.logical.is_some(),
        logical: k.logical.clone(),
        entities: k.entities,
        conversations: k.conversations,
        ..guess.clone()
    });
    if known.is_some() {
        tracing::debug!(target: "metasync", "{}: described by the run that made it", path.display());
    }
    let rel = guess.name.clone();
    let (id, manifest) = store_backup(store, path, &rel, guess, known, opts)?;
    let checked = store
        .verify(&manifest)
        .and_then(|()| match at_rest_now(path)? {
            Some(now) if now != before => Err(Error::Refused(format!(
                "{} changed while it was stored",
                path.display()
            ))),
            _ => Ok(()),
        });
    if let Err(e) = checked {
        // The plain file stays, so the version is not lost; a manifest of the same name may be
        // another machine's, made from a backup it has already deleted: it stays then.
        if path.exists() {
            store.remove(&id)?;
        }
        return Err(e);
    }
    Ok((id, manifest))
}

/// Stores the plain backup at `path` (relative path `rel`): described (see
/// [`describe_backup`]) while it is read into the store, by pages when `guess` says it is a
/// database, and named by the SHA-256 of its bytes taken meanwhile; read again, as bytes, when
/// the description says it is not one after all (damaged).
/// `known`: its description when that is known already (then it is not described again).
fn store_backup(
    store: &Store,
    path: &Path,
    rel: &str,
    mut guess: VersionInfo,
    mut known: Option<VersionInfo>,
    opts: &crate::sqlite::SqliteOptions,
) -> Result<(String, Manifest)> {
    for _ in 0..2 {
        let base = guess.clone();
        let given = known.take();
        let describe = || -> Result<VersionInfo> {
            if let Some(info) = given {
                return Ok(info);
            }
            let (logical, entities, conversations) = describe_backup(path, opts)?;
            Ok(VersionInfo {
                database: logical.is_some(),
                logical,
                entities,
                conversations,
                ..base
            })
        };
        match store.put_backup(path, rel, &guess, describe)? {
            Ok(done) => return Ok(done),
            Err(described) => {
                guess = described.clone();
                known = Some(described);
            }
        }
    }
    Err(Error::Refused(format!(
        "{} changed while it was stored",
        path.display()
    )))
}

/// A file's identity (device, inode) and state (size, modification time in nanoseconds).
pub(crate) type AtRest = ((u64, u64), (u64, i64, i64));

/// [`AtRest`] of the file at `path`.
pub(crate) fn at_rest(path: &Path) -> Result<AtRest> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).map_err(|e| Error::io("read the state of", path, e))?;
    Ok(((m.dev(), m.ino()), (m.len(), m.mtime(), m.mtime_nsec())))
}

/// [`at_rest`], `None` when the file is gone.
fn at_rest_now(path: &Path) -> Result<Option<AtRest>> {
    match at_rest(path) {
        Ok(s) => Ok(Some(s)),
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What is known of the plain backup at `path` before it is stored: the logical hash of a
/// healthy SQLite database (stored by pages; `None` for any other file, stored as bytes, as
/// is a damaged database), and the `entities` and `conversations` counts. Read where it is,
/// read-only: a plain backup is a file at rest (never synced, nobody writes it), so it needs
/// no snapshot to be read consistently.
fn describe_backup(
    path: &Path,
    opts: &crate::sqlite::SqliteOptions,
) -> Result<(Option<String>, Option<u64>, Option<u64>)> {
    if !crate::sqlite::is_sqlite(path)? {
        return Ok((None, None, None));
    }
    crate::failpoint::hit(crate::failpoint::DESCRIBE_BACKUP);
    match crate::sqlite::describe_at_rest(path, opts) {
        Ok(info) => Ok((
            info.integrity.ok.then_some(info.logical_hash),
            info.counts.entities(),
            info.counts.conversations(),
        )),
        Err(e) if crate::sqlite::is_corruption(&e) => Ok((None, None, None)),
        Err(e) => Err(e),
    }
}

/// A scratch file removed when dropped.
pub(crate) struct Scratch(Option<PathBuf>);

impl Scratch {
    /// The scratch file `path`.
    pub(crate) fn new(path: PathBuf) -> Scratch {
        Scratch(Some(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain backup of a small knowledge graph in a fresh location; its store; and what a
    /// run would have recorded of it, with a logical hash no read of it gives (`recorded`),
    /// so that the stored manifest shows which description was used.
    fn backup_and_record(dir: &Path) -> (PathBuf, Store, Described) {
        let path = dir.join("m.db.backup-20261208-020000");
        crate::sample::create_knowledge_graph(&path, 40, 4).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(old).unwrap();
        drop(f);
        let described = Described {
            at_rest: at_rest(&path).unwrap(),
            recorded_ns: crate::times::now_ns(),
            logical: Some("recorded".into()),
            entities: Some(40),
            conversations: Some(4),
        };
        (path, Store::of_location(dir), described)
    }

    fn guess_for(path: &Path) -> VersionInfo {
        VersionInfo {
            file: "m.db".into(),
            name: path.file_name().unwrap().to_str().unwrap().into(),
            created: chrono::Utc::now(),
            database: true,
            logical: None,
            entities: None,
            conversations: None,
            protected: None,
        }
    }

    fn stored_logical(path: &Path, store: &Store, known: &Described) -> Option<String> {
        let opts = crate::sqlite::SqliteOptions::default();
        let (_, m) = store_proven(store, path, guess_for(path), Some(known), &opts).unwrap();
        m.info.logical
    }

    #[test]
    fn a_backup_that_still_is_the_file_recorded_takes_the_recorded_description() {
        let dir = tempfile::tempdir().unwrap();
        let (path, store, known) = backup_and_record(dir.path());
        assert_eq!(
            stored_logical(&path, &store, &known).as_deref(),
            Some("recorded")
        );
    }

    #[test]
    fn a_backup_replaced_by_a_copy_with_its_mtime_is_described_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let (path, store, known) = backup_and_record(dir.path());
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let copy = dir.path().join("copy");
        std::fs::copy(&path, &copy).unwrap();
        std::fs::rename(&copy, &path).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(mtime).unwrap();
        drop(f);
        let truth = crate::sqlite::logical_hash(&path, &Default::default()).unwrap();
        assert_eq!(stored_logical(&path, &store, &known), Some(truth));
    }

    #[test]
    fn a_backup_whose_mtime_moved_is_described_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let (path, store, known) = backup_and_record(dir.path());
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(50))
            .unwrap();
        drop(f);
        let truth = crate::sqlite::logical_hash(&path, &Default::default()).unwrap();
        assert_eq!(stored_logical(&path, &store, &known), Some(truth));
    }

    #[test]
    fn a_description_recorded_within_two_seconds_of_the_mtime_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let (path, store, mut known) = backup_and_record(dir.path());
        let (_, (_, secs, nanos)) = known.at_rest;
        let mtime_ns = i64::try_from(crate::times::ns_of(secs, nanos)).unwrap();
        known.recorded_ns = mtime_ns + scan::RACY_NS - 1;
        let truth = crate::sqlite::logical_hash(&path, &Default::default()).unwrap();
        assert_eq!(stored_logical(&path, &store, &known), Some(truth));
    }
}
