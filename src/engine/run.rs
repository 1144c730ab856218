//! One sync, push, pull or resolve, as named phases.

use super::*;

impl Engine {

    pub(super) fn execute(
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
                            reason: reason.reason.clone(),
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
                    outcome: Outcome::InSync,
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
                    Outcome::InSync,
                    None,
                    v.hash().map(String::from),
                    "every location holds it".to_string(),
                ),
                Decision::Propagate {
                    winner,
                    source,
                    reason,
                } => (
                    Outcome::Propagated,
                    Some(source.clone()),
                    winner.hash().map(String::from),
                    reason.clone(),
                ),
                Decision::Conflict { reason, .. } => {
                    (Outcome::Conflict, None, None, reason.clone())
                }
                Decision::Merge { .. } => {
                    (Outcome::Skipped, None, None, "row merge not decided".to_string())
                }
                Decision::Stuck { reason, failure } => {
                    if *failure {
                        errors.push(format!("{file}: {reason}"));
                    } else {
                        warnings.push(format!("{file}: {reason}"));
                    }
                    (Outcome::Skipped, None, None, reason.clone())
                }
            };
            let mut outcome = outcome;

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
                            outcome = Outcome::Failed;
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
                && outcome != Outcome::Failed
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
        let (exit_code, result) =
            plan::run_end(dry_run, !errors.is_empty(), !conflicts.is_empty());
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
            result,
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
        events(&Event::RunFinished { result, summary });
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
}
