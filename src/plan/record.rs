//! What the archive learns from a decided file and what apply did with it (SPEC §6 "Records
//! follow writes"): a written location holds the winner; one that took part without being
//! written holds what was scanned there (a loser not yet overwritten stays a loser, and one
//! whose write failed stays behind the agreed version); a skipped or raced location keeps its
//! record. The agreed version becomes the winner.

use super::{FileInput, Observed};
use crate::model::{Agreed, Recorded};
use std::collections::HashSet;

/// Where apply wrote this file this run.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Written {
    /// Locations written and verified.
    pub written: HashSet<String>,
    /// Locations left alone because they changed since the scan (raced).
    pub untouched: HashSet<String>,
    /// Locations where a write was attempted (written or not).
    pub attempted: HashSet<String>,
}

/// What the archive learns.
#[derive(Debug, Clone, PartialEq)]
pub struct Learned {
    /// Records that change: (location, version now recorded).
    pub records: Vec<(String, Recorded)>,
    /// Every available location's record after the run, changed or not.
    pub after: Vec<Recorded>,
    /// The new agreed version, when it changes.
    pub agreed: Option<Agreed>,
}

/// What the archive learns from `winner` decided for `input`, given what apply `did`;
/// `counts` are the winner's (entities, conversations).
pub fn record(
    input: &FileInput,
    winner: &Recorded,
    did: &Written,
    counts: (Option<u64>, Option<u64>),
    old_agreed: Option<&Agreed>,
) -> Learned {
    let mut learned = Learned {
        records: Vec::new(),
        after: Vec::new(),
        agreed: None,
    };
    for side in &input.sides {
        let rec = if did.untouched.contains(&side.location) {
            None
        } else if did.written.contains(&side.location) {
            Some(winner.clone())
        } else {
            match &side.observed {
                Observed::Present(v) => Some(Recorded::Present(v.hash.clone())),
                Observed::Absent => Some(Recorded::Absent),
                Observed::Skipped(_) => None,
            }
        };
        let Some(rec) = rec else {
            learned.after.extend(side.recorded.clone());
            continue;
        };
        learned.after.push(rec.clone());
        // Unchanged rows are not rewritten: a no-op run over 10,000 files stays cheap.
        if side.recorded.as_ref() != Some(&rec) {
            learned.records.push((side.location.clone(), rec));
        }
    }
    let agreed = Agreed {
        version: winner.clone(),
        entities: counts.0,
        conversations: counts.1,
    };
    if old_agreed != Some(&agreed) {
        learned.agreed = Some(agreed);
    }
    learned
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Side, Version};

    fn side(location: &str, observed: Observed, recorded: Option<&str>) -> Side {
        Side {
            location: location.into(),
            local: location == "local",
            observed,
            recorded: recorded.map(|h| Recorded::Present(h.into())),
        }
    }

    fn present(h: &str) -> Observed {
        Observed::Present(Version {
            hash: h.into(),
            mtime_ns: 0,
            corrupt: None,
            hold: None,
        })
    }

    #[test]
    fn records_follow_writes() {
        let input = FileInput {
            file: "f".into(),
            agreed: Some(Recorded::Present("o".into())),
            sides: vec![
                side("local", present("o"), Some("o")),
                side("icloud", present("w"), Some("o")),
                side("external", present("o"), Some("o")),
                side("drive", Observed::Skipped("evicted".into()), Some("o")),
                side("nas", present("x"), Some("o")),
            ],
            propagate_deletes: false,
            mergeable: false,
            agreed_elsewhere: false,
            held_elsewhere: false,
        };
        let w = Recorded::Present("w".into());
        let did = Written {
            // local's write failed; external was written; nas changed during the run.
            written: ["external".to_string()].into(),
            untouched: ["nas".to_string()].into(),
            attempted: ["local", "external", "nas"].map(String::from).into(),
        };
        let l = record(&input, &w, &did, (Some(3), None), None);
        assert_eq!(
            l.records,
            vec![
                ("icloud".to_string(), w.clone()),
                ("external".to_string(), w.clone())
            ],
            "local was not written: it stays behind; the skipped and raced ones keep theirs"
        );
        let o = Recorded::Present("o".into());
        assert_eq!(l.after, vec![o.clone(), w.clone(), w.clone(), o.clone(), o]);
        assert_eq!(l.agreed.unwrap().entities, Some(3));
        let again = record(
            &input,
            &w,
            &did,
            (Some(3), None),
            Some(&Agreed {
                version: w.clone(),
                entities: Some(3),
                conversations: None,
            }),
        );
        assert_eq!(
            again.agreed, None,
            "an unchanged agreed version is not rewritten"
        );
    }
}
