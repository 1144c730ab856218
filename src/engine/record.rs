//! What the archive learns from a decided file.

use super::*;

impl Engine {
    /// What the archive learns from a decided file: written locations hold the winner; the
    /// others that took part hold what was scanned there (a loser not yet overwritten stays a
    /// loser: it is not "changed" next time); skipped or raced locations keep their record.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_decided(
        &self,
        file: &str,
        winner: &Recorded,
        input: &FileInput,
        written: &HashSet<String>,
        untouched: &HashSet<String>,
        scans: &Scans,
        known_facts: Option<crate::kind::Facts>,
        old_agreed: Option<&Agreed>,
        changes: &mut Changes,
    ) -> Vec<Recorded> {
        let mut winner_facts = known_facts;
        let mut after = Vec::new();
        for side in &input.sides {
            if untouched.contains(&side.location) {
                after.extend(side.recorded.clone());
                continue;
            }
            let rec = if written.contains(&side.location) {
                winner.clone()
            } else {
                match &side.observed {
                    Observed::Present(v) => Recorded::Present(v.hash.clone()),
                    Observed::Absent => Recorded::Absent,
                    Observed::Skipped(_) => {
                        after.extend(side.recorded.clone());
                        continue;
                    }
                }
            };
            after.push(rec.clone());
            if let (Recorded::Present(h), Some(Found::Present { content, .. })) =
                (winner, scans.get(file, &side.location))
            {
                if &content.hash == h {
                    winner_facts = Some(content.facts.clone());
                }
            }
            // Unchanged rows are not rewritten: a no-op run over 10,000 files stays cheap.
            if side.recorded.as_ref() != Some(&rec) {
                changes
                    .records
                    .push(((file.to_string(), side.location.clone()), rec));
            }
        }
        let facts = winner_facts.unwrap_or_default();
        let agreed = Agreed {
            version: winner.clone(),
            entities: facts.entities,
            conversations: facts.conversations,
        };
        if old_agreed != Some(&agreed) {
            changes.agreed.push((file.to_string(), agreed));
        }
        after
    }
}
