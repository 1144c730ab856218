//! Every write of a run: a location made ready, then each file's backup and copy or delete.

use super::*;

impl Engine {
    /// Creates a location's folder and marker before its first write.
    pub(super) fn make_ready(
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

    /// Backs up then writes (or deletes) one file in one location: the reports, and how it
    /// went. The target must still be what was scanned, or a fresh edit would be lost:
    /// checked before the backup and again right before the write (a backup of a large
    /// database takes a while, and its program may commit meanwhile).
    pub(super) fn apply_group(
        &self,
        job: &Job<'_>,
        ready: &mut HashSet<String>,
        changes: &mut Changes,
        copier: &mut crate::apply::Copier,
        events: &mut dyn FnMut(&Event),
    ) -> (Vec<ActionReport>, GroupOutcome) {
        let (file, place) = (job.file, job.place);
        let mut reports = Vec::new();
        let moved =
            || Error::Refused("changed since it was scanned; it will be synced next run".into());
        if job.stat_now() != job.scanned_stat() {
            return (reports, GroupOutcome::Raced(moved()));
        }
        if let Err(e) = self.make_ready(place, ready, changes) {
            return (reports, GroupOutcome::Failed(e));
        }
        let at = self.clock.now_local().naive_local();
        let later = job.batches();
        for action in job.group {
            // The location's folder must still be there: a write would otherwise re-create
            // it (a drive unplugged or a folder moved away during the run). Like an
            // unavailable location, a warning; and its record is kept (its scan may have seen
            // the files as absent because the folder was already gone).
            if !place.loc.root.is_dir() {
                let e = Error::Refused(format!(
                    "{} disappeared during the run; nothing written there",
                    place.loc.root.display()
                ));
                return (reports, GroupOutcome::Raced(e));
            }
            // A batched copy is the group's only action, checked just above (nothing written
            // since), and its rename never replaces a file that appeared meanwhile.
            let recheck = matches!(action, Action::Copy { .. } | Action::Delete { .. }) && !later;
            if recheck && !job.unchanged() {
                return (reports, GroupOutcome::Raced(moved()));
            }
            match self.act(job, action, at, copier, later) {
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
                    return match e {
                        Error::Changed(_) => (reports, GroupOutcome::Raced(e)),
                        e => (reports, GroupOutcome::Failed(e)),
                    };
                }
            }
        }
        // A batched copy's cache entry is made once it is in place (Run::settle_copies).
        if !later {
            let entry = job.written_entry();
            changes
                .cache
                .push(((place.loc.name.clone(), file.to_string()), entry));
        }
        (reports, GroupOutcome::Written)
    }

    /// Carries out one action; its detail for the report. With `later`, a copy joins the
    /// copier's batch ([`crate::apply::batch`]).
    fn act(
        &self,
        job: &Job<'_>,
        action: &Action,
        at: chrono::NaiveDateTime,
        copier: &mut crate::apply::Copier,
        later: bool,
    ) -> Result<String> {
        let dest = job.dest();
        match action {
            Action::Backup { .. } => {
                let kind = match job.scanned() {
                    Some(Found::Present { content, .. }) => content.kind,
                    _ => Kind::Plain,
                };
                let method = crate::apply::backup_method(kind, job.place.loc.is_local());
                let sqlite = crate::sqlite::SqliteOptions::from(&self.config.sqlite);
                let made = crate::apply::backup(&dest, at, method, &sqlite);
                crate::failpoint::hit("after_backup");
                made.map(|p| p.display().to_string())
            }
            Action::Copy { from, hash, .. } => {
                let Some((src, Found::Present { stat, content, .. })) = job.source else {
                    return Err(Error::Refused(format!(
                        "no source for {} in {from}",
                        job.file
                    )));
                };
                let version = crate::kind::Source {
                    kind: content.kind,
                    path: src,
                    hash,
                    mtime: crate::times::system_time(stat.mtime_ns),
                    snapshot: content.snapshot.as_deref().map(|p| (p, job.snapshot_use)),
                };
                let local = job.place.loc.is_local();
                let written = match content.kind {
                    Kind::Plain if later => {
                        let copy = crate::apply::batch::NewCopy {
                            src: src.to_path_buf(),
                            expected: hash.to_string(),
                            mtime: version.mtime,
                            size: stat.size,
                            tag: crate::apply::batch::Tag {
                                location: job.place.loc.name.clone(),
                                file: job.file.to_string(),
                                content: content.clone(),
                            },
                        };
                        copier.copy_later(&dest, job.machine, copy)
                    }
                    // The folder's fsync waits for the archive commit (once per folder).
                    Kind::Plain => copier.copy(src, &dest, hash, version.mtime, job.machine),
                    Kind::Sqlite => crate::kind::write_version(
                        &version,
                        &dest,
                        local,
                        job.machine,
                        &self.read_ctx(),
                    ),
                };
                written.map(|_| format!("from {from}"))
            }
            Action::Delete { .. } => crate::apply::delete_to_backup(&dest, at)
                .map(|p| format!("moved to {}", p.display())),
        }
    }
}

/// One file's writes in one location.
pub(super) struct Job<'a> {
    pub(super) file: &'a str,
    pub(super) place: &'a Place,
    /// The actions for this location, in order.
    pub(super) group: &'a [Action],
    /// Where the winner is read from, and what its scan found.
    pub(super) source: Option<(&'a Path, &'a Found)>,
    /// Whether the source's run snapshot may become this target's file.
    pub(super) snapshot_use: crate::kind::SnapshotUse,
    pub(super) scans: &'a Scans,
    pub(super) machine: &'a str,
}

impl Job<'_> {
    fn dest(&self) -> PathBuf {
        self.place.loc.path_of(self.file)
    }

    fn scanned(&self) -> Option<&Found> {
        self.scans.get(self.file, &self.place.loc.name)
    }

    fn scanned_stat(&self) -> Option<scan::Stat> {
        match self.scanned() {
            Some(Found::Present { stat, .. }) => Some(stat.clone()),
            _ => None,
        }
    }

    fn stat_now(&self) -> Option<scan::Stat> {
        let database = matches!(self.scanned(), Some(Found::Present { content, .. }) if content.kind == Kind::Sqlite);
        scan::Stat::of_kind(&self.dest(), database)
            .ok()
            .flatten()
            .map(|(s, _)| s)
    }

    /// Whether the target is still as scanned (after our own backup a hard link has moved
    /// the ctime: the rest is compared).
    fn unchanged(&self) -> bool {
        match (self.stat_now(), self.scanned_stat()) {
            (Some(a), Some(b)) => {
                (a.size, a.mtime_ns, a.ino, a.side) == (b.size, b.mtime_ns, b.ino, b.side)
            }
            (None, None) => true,
            _ => false,
        }
    }

    /// Whether this job's copy may join a batch ([`crate::apply::batch`]): one copy of a
    /// small plain file to where the scan found none, in a location of plain folders (an
    /// object store's mirror publishes each file right after its write).
    fn batches(&self) -> bool {
        let small_plain = matches!(self.source, Some((_, Found::Present { stat, content, .. }))
            if content.kind == Kind::Plain && crate::apply::Copier::batches(stat.size));
        small_plain
            && self.place.loc.store.is_none()
            && matches!(self.group, [Action::Copy { .. }])
            && self.scanned_stat().is_none()
    }

    /// What was just written is known exactly: the scan cache remembers it, so the next run
    /// need not read it again (see [`written_entry_at`]).
    fn written_entry(&self) -> Option<crate::archive::CacheEntry> {
        let hash = self.group.iter().find_map(|a| match a {
            Action::Copy { hash, .. } => Some(hash.clone()),
            _ => None,
        })?;
        let Some((_, Found::Present { content, .. })) = self.source else {
            return None;
        };
        written_entry_at(&self.dest(), content, hash)
    }
}

/// The scan cache's entry for `content` just written at `dest` with the version hash `hash`.
/// Trusted at once (not subject to the racy-clean wait): the copy carries the source's old
/// mtime, so any later edit moves mtime and ctime away from this stat.
pub(super) fn written_entry_at(
    dest: &Path,
    content: &crate::kind::Content,
    hash: String,
) -> Option<crate::archive::CacheEntry> {
    let database = content.kind == Kind::Sqlite;
    let (stat, _) = scan::Stat::of_kind(dest, database).ok().flatten()?;
    let trusted = stat
        .mtime_ns
        .max(stat.ctime_ns)
        .max(stat.side.map_or(0, |s| s.1))
        .saturating_add(i128::from(scan::RACY_NS) + 1);
    // Past 2262 (i64 ns) the entry stays racy: read again each run.
    let trusted = i64::try_from(trusted).unwrap_or(i64::MAX);
    let mut e = scan::cache_entry(&stat, content, trusted);
    e.hash = hash;
    Some(e)
}

/// How one location's writes for one file went.
pub(super) enum GroupOutcome {
    /// Written and verified.
    Written,
    /// Left alone: it changed since the scan (or its folder went away); synced next run.
    Raced(Error),
    /// A write failed.
    Failed(Error),
}

pub(super) fn action_target(a: &Action) -> &str {
    match a {
        Action::Backup { location } | Action::Delete { location } => location,
        Action::Copy { to, .. } => to,
    }
}

pub(super) fn action_report(
    file: &str,
    a: &Action,
    detail: String,
    done: bool,
    error: Option<String>,
) -> ActionReport {
    let (action, detail) = match a {
        Action::Backup { .. } => (ActionKind::Backup, detail),
        Action::Copy { from, hash, .. } if detail.is_empty() => {
            (ActionKind::Copy, format!("from {from} ({})", short(hash)))
        }
        Action::Copy { .. } => (ActionKind::Copy, detail),
        Action::Delete { .. } => (ActionKind::Delete, detail),
    };
    ActionReport {
        file: file.to_string(),
        location: action_target(a).to_string(),
        action,
        detail,
        done,
        error,
    }
}

impl super::run::Run<'_> {
    /// Apply: each target location's actions, in the plan's order; where it wrote, where a
    /// write raced a change, and whether any write failed.
    pub(super) fn apply(
        &mut self,
        sc: &super::run::Scene<'_>,
        fr: &super::run::FileRun,
        t: &mut super::run::Tally,
    ) -> (plan::Written, bool) {
        let mut did = plan::Written::default();
        let mut failed = false;
        let Decision::Propagate { source, .. } = &fr.planned.decision else {
            return (did, failed);
        };
        let (file, actions) = (&fr.file, &fr.planned.actions);
        let source_found = match &fr.merged {
            Some(m) if source == plan::MERGE_SOURCE => Some((m.path.clone(), &m.found)),
            _ => self
                .engine
                .root_of(source)
                .and_then(|root| sc.scans.get(file, source).map(|f| (root.join(file), f))),
        };
        let mut i = 0;
        while i < actions.len() {
            let target = action_target(&actions[i]).to_string();
            let j = i + actions[i..]
                .iter()
                .take_while(|a| action_target(a) == target)
                .count();
            let (group, later) = (&actions[i..j], &actions[j..]);
            i = j;
            let Some(place) = sc.available.iter().find(|p| p.loc.name == target).copied() else {
                continue;
            };
            did.attempted.insert(target.clone());
            if self.ask.dry_run {
                for a in group {
                    t.actions
                        .push(action_report(file, a, String::new(), false, None));
                }
                continue;
            }
            let job = Job {
                file,
                place,
                group,
                source: source_found.as_ref().map(|(p, f)| (p.as_path(), *f)),
                snapshot_use: self.snapshot_use(
                    file,
                    source_found.as_ref().map(|(_, f)| *f),
                    later,
                    sc,
                ),
                scans: &sc.scans,
                machine: &sc.machine,
            };
            let (reports, outcome) = self.engine.apply_group(
                &job,
                &mut t.ready,
                &mut t.changes,
                &mut t.copier,
                &mut *self.events,
            );
            let outcome = self.engine.published(place, file, outcome, &mut t.changes);
            for r in reports
                .iter()
                .filter(|r| r.done && r.action == ActionKind::Backup)
            {
                let backup = PathBuf::from(&r.detail);
                if let Some(d) = described_backup(sc, place, file, &backup) {
                    t.described.insert(backup, d);
                }
            }
            t.actions.extend(reports);
            match outcome {
                GroupOutcome::Written => {
                    did.written.insert(target);
                    t.written += 1;
                }
                GroupOutcome::Raced(e) => {
                    self.warnings.push(format!("{file} in {target}: {e}"));
                    did.untouched.insert(target);
                    failed = true;
                }
                GroupOutcome::Failed(e) => {
                    self.errors.push(format!("{file} in {target}: {e}"));
                    failed = true;
                }
            }
        }
        (did, failed)
    }

    /// Settles the copier's batch ([`crate::apply::batch`]): each file put in place gets its
    /// scan cache entry; one that could not be is not recorded (its copy reported as failed,
    /// its file as failed, a warning when it raced a change, else an error), so the next run
    /// writes it again. Before the archive commit, and whenever the batch is full.
    pub(super) fn settle_copies(&mut self, t: &mut super::run::Tally) {
        let mut undone: HashSet<(String, String)> = HashSet::new();
        for s in t.copier.settle() {
            let (loc, file) = (s.tag.location, s.tag.file);
            match s.result {
                Ok(()) => {
                    let hash = s.tag.content.hash.clone();
                    let entry = written_entry_at(&s.dest, &s.tag.content, hash);
                    t.changes.cache.push(((loc, file), entry));
                }
                Err(e) => {
                    tracing::error!(target: "metasync", "{file} in {loc}: copy failed: {e}");
                    let copy = t.actions.iter_mut().rev().find(|r| {
                        r.file == file && r.location == loc && r.action == ActionKind::Copy
                    });
                    if let Some(r) = copy {
                        r.done = false;
                        r.error = Some(e.to_string());
                    }
                    if let Some(o) = t.outcomes.iter_mut().rev().find(|o| o.file == file) {
                        o.outcome = Outcome::Failed;
                    }
                    t.written = t.written.saturating_sub(1);
                    match e {
                        Error::Changed(_) => self.warnings.push(format!("{file} in {loc}: {e}")),
                        e => self.errors.push(format!("{file} in {loc}: {e}")),
                    }
                    undone.insert((file, loc));
                }
            }
        }
        if !undone.is_empty() {
            t.changes.records.retain(|(key, _)| !undone.contains(key));
        }
    }

    /// The source's snapshot may become this target's file (no copy) only when nothing reads
    /// it afterwards: no later target copies it, and the base for row merges is not kept from
    /// it after the writes (no base is kept, or it is kept from the snapshot's own base copy,
    /// or by rewriting the agreed version's base: see [`Engine::keep_base`]).
    /// So at most one target gets it, and it never shares an inode with anything.
    fn snapshot_use(
        &self,
        file: &str,
        source: Option<&Found>,
        later: &[Action],
        sc: &super::run::Scene<'_>,
    ) -> crate::kind::SnapshotUse {
        let rewritable = || {
            !sc.agreed_offline.contains(file)
                && sc
                    .loaded
                    .agreed
                    .get(file)
                    .and_then(|a| a.version.hash())
                    .is_some_and(|h| crate::merge::base_of(&self.engine.home, file, h).is_some())
        };
        let base_elsewhere = self.engine.config.merge_mode_for(file) != MergeMode::Rows
            || rewritable()
            || source.is_some_and(|f| {
                matches!(f, Found::Present { content, .. } if content
                    .snapshot
                    .as_deref()
                    .is_some_and(|p| crate::kind::base_copy_of(p).is_file()))
            });
        if base_elsewhere && !later.iter().any(|a| matches!(a, Action::Copy { .. })) {
            crate::kind::SnapshotUse::Move
        } else {
            crate::kind::SnapshotUse::Copy
        }
    }
}

/// What the scan knew of the version the run just kept as the backup `backup` of `file` in
/// `place` ([`super::backups::Described`]): only for a database whose scan found it whole in
/// its file (no `-wal` beside it) and whose backup is that very file (a hard link: the same
/// inode, size and mtime as scanned), while the file itself is now another inode. Recorded at
/// the scan cache entry's time when the cache vouched for it, else at the scan's (it was read
/// after that).
fn described_backup(
    sc: &super::run::Scene<'_>,
    place: &Place,
    file: &str,
    backup: &Path,
) -> Option<super::backups::Described> {
    let Some(Found::Present {
        stat,
        content,
        hashed,
    }) = sc.scans.get(file, &place.loc.name)
    else {
        return None;
    };
    if content.kind != Kind::Sqlite || stat.side.is_some() {
        return None;
    }
    let recorded_ns = match hashed {
        true => sc.scan_time,
        false => {
            let l = sc.scans.location_index(&place.loc.name)?;
            sc.loaded.caches.get(l)?.get(file)?.scanned_ns
        }
    };
    let at_rest = super::backups::at_rest(backup).ok()?;
    let ((_, ino), (size, secs, nanos)) = at_rest;
    let mtime_ns = crate::times::ns_of(secs, nanos);
    if (ino, size, mtime_ns) != (stat.ino, stat.size, stat.mtime_ns) {
        return None;
    }
    // The file was replaced by a new one (a rename), not written in place through the link:
    // an in-place write that kept size and mtime would otherwise go unseen.
    let dest = super::backups::at_rest(&place.loc.path_of(file)).ok();
    if dest.is_some_and(|((_, dest_ino), _)| dest_ino == ino) {
        return None;
    }
    let healthy = content.facts.integrity.is_empty() && !content.hash.starts_with("corrupt-");
    Some(super::backups::Described {
        at_rest,
        recorded_ns,
        logical: healthy.then(|| content.hash.clone()),
        entities: content.facts.entities,
        conversations: content.facts.conversations,
    })
}
