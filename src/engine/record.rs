//! What the archive learns from a decided file ([`plan::record`]), put into the run's changes.

use super::run::{FileRun, Scene};
use super::*;

impl Engine {
    /// Records what `plan::record` says the archive learns of `file`; returns every available
    /// location's record after the run.
    pub(super) fn record_decided(
        &self,
        fr: &FileRun,
        winner: &Recorded,
        did: &plan::Written,
        sc: &Scene<'_>,
        changes: &mut Changes,
    ) -> Vec<Recorded> {
        let (file, input, scans) = (fr.file.as_str(), &fr.input, &sc.scans);
        let merged_facts = fr.merged.as_ref().map(|m| m.facts.clone());
        let old_agreed = sc.loaded.agreed.get(file);
        // The winner's counts: from a location scanned holding it (not a raced or skipped
        // one), else from the merge that made it.
        let scanned = input
            .sides
            .iter()
            .filter(|s| !did.untouched.contains(&s.location))
            .filter(|s| !matches!(s.observed, Observed::Skipped(_)))
            .rev()
            .find_map(|s| match (winner, scans.get(file, &s.location)) {
                (Recorded::Present(h), Some(Found::Present { content, .. }))
                    if &content.hash == h =>
                {
                    Some(content.facts.clone())
                }
                _ => None,
            });
        let facts = scanned.or(merged_facts).unwrap_or_default();
        let learned = plan::record(
            input,
            winner,
            did,
            (facts.entities, facts.conversations),
            old_agreed,
        );
        for (location, rec) in learned.records {
            changes.records.push(((file.to_string(), location), rec));
        }
        if let Some(agreed) = learned.agreed {
            changes.agreed.push((file.to_string(), agreed));
        }
        learned.after
    }
}
