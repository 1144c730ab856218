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

    /// Backs up then writes (or deletes) one file in one location. On error: the reports so
    /// far, the error, and whether it was because the target changed since the scan.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_group(
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
                    let changed = matches!(e, Error::Changed(_));
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
}

/// A write that failed: the reports so far, the error, and whether it failed because the
/// target changed since it was scanned.
pub(super) type GroupFailure = Box<(Vec<ActionReport>, Error, bool)>;
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
