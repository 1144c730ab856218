//! What a person asks to see: status, conflicts, relink, history.

use super::*;

impl Engine {
    /// Locations, files, conflicts and the last run; reads no file the scan cache knows.
    pub fn status(&self) -> Result<StatusReport> {
        let mut archive = Archive::open_existing(&self.home)?;
        // When no run is going on, what status hashes is remembered, so it is hashed once.
        let lock = match &archive {
            Some(_) => crate::lock::acquire(&self.home, "metasync status", Duration::ZERO).ok(),
            None => None,
        };
        let known = match &archive {
            Some(a) => a.location_ids()?,
            None => HashMap::new(),
        };
        let places = self.places(&known);
        let (files, mut skipped) = self.listed_set(&places, archive.as_ref())?;
        let files: Vec<String> = files.into_iter().collect();
        let scan_time = now_ns();
        let mut learned = Changes::default();
        let mut locations = Vec::new();
        for p in &places {
            let mut file_reports = Vec::new();
            let mut copies = Vec::new();
            if p.availability.is_available() {
                let cache = match &archive {
                    Some(a) => a.cache(&p.loc.name)?,
                    None => Default::default(),
                };
                let found = scan::scan_location(&p.loc.root, &files, &cache, &self.read_ctx());
                for (file, found) in files.iter().zip(found) {
                    file_reports.push(file_report(file, &found));
                    copies.extend(conflict_copies(&p.loc.path_of(file)));
                    if let Found::Present {
                        stat,
                        content,
                        hashed: true,
                    } = &found
                    {
                        let entry = scan::cache_entry(stat, content, scan_time);
                        learned
                            .cache
                            .push(((p.loc.name.clone(), file.clone()), Some(entry)));
                    }
                }
            }
            locations.push(LocationStatus {
                location: p.report(),
                files: file_reports,
                conflict_copies: copies,
                skipped: skipped.remove(&p.loc.name).unwrap_or_default(),
            });
        }
        let mut warnings = Vec::new();
        if self.config.locations.is_empty() {
            warnings.push(format!(
                "no remote configured: add a [[locations]] entry (name, path) to {}",
                crate::config::default_path(&self.home).display()
            ));
        }
        for l in &locations {
            for c in &l.conflict_copies {
                warnings.push(format!("iCloud conflict copy in {}: {c}", l.location.name));
            }
            for f in &l.skipped {
                warnings.push(format!("{} in {}: {}", f.name, l.location.name, f.reason));
            }
        }
        if let (Some(a), Some(_held)) = (archive.as_mut(), &lock) {
            if !learned.cache.is_empty() {
                learned.now = rfc3339(self.clock.now());
                a.commit(&learned)?;
            }
        }
        drop(lock);
        let (conflicts, last_run, row_conflicts) = match &archive {
            Some(a) => (
                a.conflicts()?,
                a.history(1)?.into_iter().next(),
                a.row_conflicts(20)?,
            ),
            None => (Vec::new(), None, Vec::new()),
        };
        Ok(StatusReport {
            home: self.home.display().to_string(),
            config: match &self.source {
                ConfigSource::Defaults => "(defaults)".into(),
                ConfigSource::File(p) => p.display().to_string(),
            },
            locations,
            conflicts,
            row_conflicts,
            last_run,
            warnings,
            history: Vec::new(),
        })
    }

    /// Unresolved conflicts.
    pub fn conflicts(&self) -> Result<Vec<ConflictReport>> {
        match Archive::open_existing(&self.home)? {
            Some(a) => a.conflicts(),
            None => Ok(Vec::new()),
        }
    }

    /// Accepts a remote whose identity marker is missing or different: from now on its
    /// content is compared as if this machine had never seen it (the first-sync rule).
    pub fn relink(&self, name: &str) -> Result<RelinkReport> {
        let loc = location::all(&self.home, &self.config)
            .into_iter()
            .find(|l| l.name == name && !l.is_local())
            .ok_or_else(|| Error::Usage(format!("no remote location named `{name}`")))?;
        let _lock = self.lock("metasync relink")?;
        let mut archive = Archive::open(&self.home)?;
        let previous = archive.location_ids()?.remove(name);
        match location::check(&loc, None) {
            Availability::Unavailable(r) => {
                return Err(Error::Refused(format!(
                    "{name} cannot be relinked now: {r}"
                )))
            }
            Availability::Available {
                create_folder: true,
                ..
            } => std::fs::create_dir(&loc.root)
                .map_err(|e| Error::io("create folder", &loc.root, e))?,
            _ => {}
        }
        let id = match location::read_marker(&loc.root)
            .map_err(|e| Error::io("read marker", &loc.root, e))?
        {
            Some(id) => id,
            None => {
                let id = crate::ids::random_hex(16);
                location::write_marker(&loc.root, &id, name, &rfc3339(self.clock.now()))
                    .map_err(|e| Error::io("write marker", &loc.root, e))?;
                id
            }
        };
        let changes = Changes {
            now: rfc3339(self.clock.now()),
            location_ids: vec![(name.to_string(), Some(id.clone()))],
            forget_location: vec![name.to_string()],
            ..Default::default()
        };
        archive.commit(&changes)?;
        tracing::info!(target: "metasync", "{name}: relinked as {id}");
        Ok(RelinkReport {
            location: name.to_string(),
            id,
            previous_id: previous,
        })
    }

    /// The most recent runs, newest first.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunSummary>> {
        match Archive::open_existing(&self.home)? {
            Some(a) => a.history(limit),
            None => Ok(Vec::new()),
        }
    }
}

fn file_report(file: &str, found: &Found) -> FileReport {
    let mut r = FileReport {
        file: file.to_string(),
        state: FileState::Missing,
        size: None,
        mtime: None,
        sha256: None,
        kind: None,
        entities: None,
        conversations: None,
        note: None,
    };
    match found {
        Found::Present { stat, content, .. } => {
            r.state = FileState::Present;
            r.size = Some(stat.size);
            r.mtime = Some(ns_to_rfc3339(stat.mtime_ns));
            r.sha256 = Some(content.hash.clone());
            r.kind = Some(content.kind.as_str().into());
            r.entities = content.facts.entities;
            r.conversations = content.facts.conversations;
            if !content.facts.integrity.is_empty() {
                r.note = Some(format!("corrupt: {}", content.facts.integrity.join("; ")));
            }
        }
        Found::Absent => r.state = FileState::Missing,
        Found::Skipped(skip) => {
            r.state = match skip.kind {
                SkipKind::Evicted => FileState::Evicted,
                SkipKind::Changing | SkipKind::Unreadable => FileState::Unreadable,
            };
            r.note = Some(skip.reason.clone());
        }
    }
    r
}

pub(super) fn conflict_copies(path: &Path) -> Vec<String> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| crate::names::is_conflict_copy_of(n, name))
        .collect();
    out.sort();
    out
}
