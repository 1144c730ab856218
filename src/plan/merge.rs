//! What a row merge attempt means (SPEC §6 "Row merge"): the engine tries the merge the plan
//! asked for ([`Decision::Merge`]) and reports what came of it; the decision that follows is
//! made here.

use super::{actions_for, conflict_at, Action, Decision, FileInput};
use crate::model::Direction;
use crate::words::plural;

/// The pseudo-location a row-merged version is copied from.
pub const MERGE_SOURCE: &str = "row merge";

/// What a row merge attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum MergeAttempt {
    /// A merged version with this hash was made.
    Merged {
        /// Its version hash.
        hash: String,
        /// How many rows the sides changed.
        rows_changed: usize,
        /// How many rows were changed differently on two sides (settled by the strategy).
        row_conflicts: usize,
    },
    /// Rows changed differently on two sides, and the strategy is manual.
    Held {
        /// How many.
        rows: usize,
    },
    /// The merged version would be held back by the shrink guard: why.
    Shrunk(String),
    /// The merge cannot be done exactly: why (the file-level decision applies).
    Impossible(String),
}

/// The decision after a merge attempt, its actions, and a warning for people.
#[derive(Debug, Clone, PartialEq)]
pub struct AfterMerge {
    /// What is decided.
    pub decision: Decision,
    /// What to do.
    pub actions: Vec<Action>,
    /// Said in the run's warnings.
    pub warning: Option<String>,
}

/// What `attempt`, a merge of the versions at `candidates`, means; `fallback` is the plan's
/// file-level decision.
pub fn after_merge(
    input: &FileInput,
    candidates: &[String],
    fallback: Decision,
    attempt: MergeAttempt,
    direction: &Direction,
) -> AfterMerge {
    let strategy = direction.strategy().as_str();
    let from = candidates.join(" and ");
    match attempt {
        MergeAttempt::Merged {
            hash,
            rows_changed,
            row_conflicts,
        } => {
            let winner = crate::model::Recorded::Present(hash);
            let reason = if row_conflicts == 0 {
                format!(
                    "merged row by row ({} from {from})",
                    plural(rows_changed as u64, "row change")
                )
            } else {
                format!(
                    "merged row by row ({} from {from}; {} settled by {strategy})",
                    plural(rows_changed as u64, "row change"),
                    plural(row_conflicts as u64, "row conflict")
                )
            };
            AfterMerge {
                actions: actions_for(input, &winner, MERGE_SOURCE, direction),
                decision: Decision::Propagate {
                    winner,
                    source: MERGE_SOURCE.into(),
                    reason,
                },
                warning: None,
            }
        }
        MergeAttempt::Held { rows } => AfterMerge {
            decision: conflict_at(
                input,
                candidates,
                format!(
                    "{} changed differently in {from} (strategy manual)",
                    plural(rows as u64, "row")
                ),
            ),
            actions: Vec::new(),
            warning: None,
        },
        MergeAttempt::Shrunk(why) => AfterMerge {
            decision: conflict_at(
                input,
                candidates,
                format!("the merged version is held back: {why}"),
            ),
            actions: Vec::new(),
            warning: None,
        },
        MergeAttempt::Impossible(why) => {
            let mut decision = fallback;
            if let Decision::Propagate { reason, .. } | Decision::Conflict { reason, .. } =
                &mut decision
            {
                *reason = format!("{reason} (row merge not possible: {why})");
            }
            let actions = match &decision {
                Decision::Propagate { winner, source, .. } => {
                    actions_for(input, winner, source, direction)
                }
                _ => Vec::new(),
            };
            AfterMerge {
                decision,
                actions,
                warning: Some(format!(
                    "row merge not possible ({why}); file-level strategy {strategy}"
                )),
            }
        }
    }
}
