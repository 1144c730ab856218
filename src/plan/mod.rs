//! Reconciliation (SPEC §4): from the archive's memory and this run's scans to a decision
//! and a list of actions, per file. Pure: no I/O, every sync decision is made and tested here:
//! who changed and who wins (this file), what a row merge attempt means ([`merge`]), what the
//! archive learns from what was written ([`record`]), and how a run ends ([`run_end`]).

mod merge;
mod record;

pub use merge::{after_merge, AfterMerge, MergeAttempt, MERGE_SOURCE};
pub use record::{record, Learned, Written};

pub use crate::model::Direction;
use crate::model::{Protected, Recorded, RunResult, Strategy};

/// One version of a file as scanned in one location.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    /// Version hash.
    pub hash: String,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i128,
    /// Set when the version failed its integrity check: it never wins.
    pub corrupt: Option<String>,
    /// Set when the version is held back (shrink guard) until the user confirms it.
    pub hold: Option<String>,
}

/// What a scan found for one file in one location.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// The file is there.
    Present(Version),
    /// The file is not there.
    Absent,
    /// The file cannot be used this run (evicted, unreadable, changing): leave it alone.
    Skipped(String),
}

/// One available location's view of one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Side {
    /// Location name.
    pub location: String,
    /// Whether it is the local home.
    pub local: bool,
    /// What is there now.
    pub observed: Observed,
    /// What this machine recorded there after the last successful sync (`None`: never seen).
    pub recorded: Option<Recorded>,
}

/// Everything the decision for one file depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct FileInput {
    /// The synced file.
    pub file: String,
    /// The last agreed version, if any.
    pub agreed: Option<Recorded>,
    /// Every available location, local first, then remotes in config order.
    pub sides: Vec<Side>,
    /// Whether a missing file is a deletion.
    pub propagate_deletes: bool,
    /// Whether a conflict may be merged row by row (a database with `merge = "rows"`).
    pub mergeable: bool,
    /// Whether a location unavailable this run was last recorded holding the agreed version
    /// (so it may still be there, and nothing else is restored in its stead).
    pub agreed_elsewhere: bool,
    /// Whether a location unavailable this run was last recorded holding the file, in any
    /// version.
    pub held_elsewhere: bool,
}

/// A step of propagation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Keep the current version at `location` as a backup (before it is overwritten).
    Backup {
        /// Where.
        location: String,
    },
    /// Write the version `hash` from `from` into `to`.
    Copy {
        /// Source location.
        from: String,
        /// Target location.
        to: String,
        /// The version expected (checked after writing).
        hash: String,
    },
    /// Delete the file at `location` (by moving it to a backup).
    Delete {
        /// Where.
        location: String,
    },
}

/// The decision for one file.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Every location already holds the winner.
    InSync(Recorded),
    /// `winner` goes everywhere it is not yet, taken from `source`.
    Propagate {
        /// The winning version (`Absent` for a propagated deletion).
        winner: Recorded,
        /// A location holding it (for a deletion, the one where it was deleted).
        source: String,
        /// Why it won.
        reason: String,
    },
    /// Two or more versions and no automatic winner: nothing moves.
    Conflict {
        /// Every version in play: (location, observed version).
        candidates: Vec<(String, Option<Version>)>,
        /// Why.
        reason: String,
    },
    /// Two or more database versions that all descend from the agreed version: try a row
    /// merge of the versions at `candidates`; if it cannot be done, `fallback` applies.
    Merge {
        /// One location per distinct version, in order.
        candidates: Vec<String>,
        /// The hash of the version every candidate descends from (the merge's base).
        base: String,
        /// The file-level decision.
        fallback: Box<Decision>,
    },
    /// Nothing can be done (the agreed version is nowhere available, no healthy version...).
    Stuck {
        /// Why.
        reason: String,
        /// Whether the run fails because of it.
        failure: bool,
    },
}

/// The plan for one file.
#[derive(Debug, Clone, PartialEq)]
pub struct FilePlan {
    /// The synced file.
    pub file: String,
    /// What was decided.
    pub decision: Decision,
    /// What to do, in order.
    pub actions: Vec<Action>,
    /// Corrupt versions that were refused: (location, detail).
    pub refused: Vec<(String, String)>,
    /// Whether two or more changed versions competed (a conflict, settled by the strategy,
    /// merged, or held): the versions it overwrites are conflict losers.
    pub conflict: bool,
    /// Locations whose version the shrink guard holds back (against the agreed version).
    pub held: Vec<String>,
}

fn current(observed: &Observed) -> Option<Recorded> {
    match observed {
        Observed::Present(v) => Some(Recorded::Present(v.hash.clone())),
        Observed::Absent => Some(Recorded::Absent),
        Observed::Skipped(_) => None,
    }
}

fn version(observed: &Observed) -> Option<&Version> {
    match observed {
        Observed::Present(v) => Some(v),
        _ => None,
    }
}

/// How a run ends, from what it met: its exit code (SPEC §3: 1 for a failure, 3 while
/// conflicts remain, 0 otherwise) and its result.
pub fn run_end(dry_run: bool, failed: bool, conflicts: bool) -> (i32, RunResult) {
    let exit_code = if failed {
        1
    } else if conflicts {
        3
    } else {
        0
    };
    let result = match (dry_run, exit_code) {
        (true, _) => RunResult::DryRun,
        (false, 1) => RunResult::Failed,
        (false, 3) => RunResult::Conflict,
        _ => RunResult::Ok,
    };
    (exit_code, result)
}

/// Decides what happens to one file.
pub fn plan_file(input: &FileInput, direction: &Direction) -> FilePlan {
    let refused: Vec<(String, String)> = input
        .sides
        .iter()
        .filter_map(|s| {
            let v = version(&s.observed)?;
            v.corrupt.as_ref().map(|c| (s.location.clone(), c.clone()))
        })
        .collect();
    let held = input
        .sides
        .iter()
        .filter(|s| version(&s.observed).is_some_and(|v| v.hold.is_some()))
        .map(|s| s.location.clone())
        .collect();
    let (decision, conflict) = decide(input, direction);
    let actions = match &decision {
        Decision::Propagate { winner, source, .. } => actions_for(input, winner, source, direction),
        Decision::InSync(_)
        | Decision::Conflict { .. }
        | Decision::Stuck { .. }
        | Decision::Merge { .. } => Vec::new(),
    };
    FilePlan {
        file: input.file.clone(),
        decision,
        actions,
        refused,
        conflict,
        held,
    }
}

/// Why the backup a run made of `location`'s version of a planned file is protected from
/// thinning, if it is: a version the shrink guard held back (replaced by a resolve that kept
/// another one), or one replaced by such a version (a resolve confirming it, a push); what a
/// resolve replaced, a corrupt version refused, a conflict's loser (file level), a version
/// holding a row that lost a row conflict.
pub fn protection(
    plan: &FilePlan,
    direction: &Direction,
    location: &str,
    row_conflicts: bool,
) -> Option<Protected> {
    let merged =
        matches!(&plan.decision, Decision::Propagate { source, .. } if source == MERGE_SOURCE);
    let held_wins =
        matches!(&plan.decision, Decision::Propagate { source, .. } if plan.held.contains(source));
    if held_wins || plan.held.iter().any(|l| l == location) {
        Some(Protected::ShrinkHeld)
    } else if matches!(direction, Direction::Keep(_)) {
        Some(Protected::Replaced)
    } else if plan.refused.iter().any(|(l, _)| l == location) {
        Some(Protected::RefusedCorrupt)
    } else if merged && row_conflicts {
        Some(Protected::RowConflictLoser)
    } else if plan.conflict && !merged {
        Some(Protected::ConflictLoser)
    } else {
        None
    }
}

/// The common case, recognised without building a [`FileInput`]: every available location
/// holds the agreed version, healthy and not held back, and is recorded as holding it.
/// `sides` gives, per location, the hash it holds when that is so (`None` otherwise) and its
/// record. [`plan_file`] decides `InSync` with no action for such a file in a sync, push or
/// pull (checked against every case of the reconciliation table); a resolve
/// ([`Direction::Keep`]) is never settled: it is always planned in full.
pub fn settled<'a>(
    direction: &Direction,
    agreed: Option<&Recorded>,
    sides: impl IntoIterator<Item = (Option<&'a str>, Option<&'a Recorded>)>,
) -> bool {
    if matches!(direction, Direction::Keep(_)) {
        return false;
    }
    let Some(Recorded::Present(h)) = agreed else {
        return false;
    };
    let mut any = false;
    for (held, recorded) in sides {
        let recorded_h = match recorded {
            Some(Recorded::Present(r)) => Some(r.as_str()),
            _ => None,
        };
        if held != Some(h.as_str()) || recorded_h != Some(h.as_str()) {
            return false;
        }
        any = true;
    }
    any
}

/// A changed version: its value and the first location (in order) holding it.
struct Changed<'a> {
    value: Recorded,
    side: &'a Side,
}

/// The changed versions of one file, and why the agreed version is a candidate too.
struct Changes<'a> {
    changed: Vec<Changed<'a>>,
    /// A location never seen from this machine holds another version than the agreed one.
    first_sync_rule: bool,
    /// The records of changed locations that had not received the agreed version (a write
    /// that failed, a target that changed during the run, a loser left in place): their
    /// change was made without the agreed one, so it cannot simply replace it.
    behind: Vec<Recorded>,
}

fn changed_sides(input: &FileInput) -> Changes<'_> {
    let mut out = Changes {
        changed: Vec::new(),
        first_sync_rule: false,
        behind: Vec::new(),
    };
    for side in &input.sides {
        let Some(cur) = current(&side.observed) else {
            continue;
        };
        let is_change = match (&side.recorded, &input.agreed) {
            // A location holding the agreed version has not changed, whatever its older
            // record says (a drive returning with what every machine agreed on since).
            (Some(_), Some(agreed)) if cur == *agreed => false,
            (Some(rec), _) => cur != *rec,
            // A location this machine never saw: compared with the agreed version.
            (None, Some(agreed)) => {
                let differs = cur != *agreed && cur != Recorded::Absent;
                out.first_sync_rule |= differs && *agreed != Recorded::Absent;
                differs
            }
            (None, None) => cur != Recorded::Absent,
        };
        if !is_change {
            continue;
        }
        if cur == Recorded::Absent {
            // A missing file is a deletion only where it was seen, and only when asked for.
            let was_present = matches!(side.recorded, Some(Recorded::Present(_)));
            if !(input.propagate_deletes && was_present) {
                continue;
            }
        }
        if let (Some(rec), Some(agreed @ Recorded::Present(_))) = (&side.recorded, &input.agreed) {
            if rec != agreed && !out.behind.contains(rec) {
                out.behind.push(rec.clone());
            }
        }
        out.changed.push(Changed { value: cur, side });
    }
    out
}

fn holder<'a>(input: &'a FileInput, value: &Recorded) -> Option<&'a Side> {
    input.sides.iter().find(|s| {
        current(&s.observed).as_ref() == Some(value)
            && version(&s.observed).is_none_or(|v| v.corrupt.is_none())
    })
}

/// The side holding the one healthy version present anywhere available, when there is
/// exactly one such version (however many sides hold it).
/// Whether every location, available or not, is without the file: each available one
/// observed it absent, and no unavailable one was last seen holding it.
fn deleted_everywhere(input: &FileInput) -> bool {
    !input.held_elsewhere
        && input
            .sides
            .iter()
            .all(|s| matches!(s.observed, Observed::Absent))
}

fn sole_present(input: &FileInput) -> Option<&Side> {
    let mut found: Option<&Side> = None;
    for side in &input.sides {
        let v = match &side.observed {
            Observed::Present(v) => v,
            Observed::Absent => continue,
            // An evicted or unreadable copy may be the agreed version: wait for it.
            Observed::Skipped(_) => return None,
        };
        if v.corrupt.is_some() {
            return None;
        }
        match found {
            None => found = Some(side),
            Some(f) if version(&f.observed).map(|x| &x.hash) == Some(&v.hash) => {}
            Some(_) => return None,
        }
    }
    found
}

fn healthy(c: &Changed<'_>) -> bool {
    version(&c.side.observed).is_none_or(|v| v.corrupt.is_none())
}

/// The decision, and whether two or more changed versions competed.
fn decide(input: &FileInput, direction: &Direction) -> (Decision, bool) {
    if let Direction::Keep(location) = direction {
        return (kept(input, location), false);
    }
    if let (Direction::Push, Some(pushed)) = (direction, pushed(input)) {
        return (pushed, false);
    }
    let Changes {
        changed,
        first_sync_rule,
        behind,
    } = changed_sides(input);
    let mut distinct: Vec<&Changed<'_>> = Vec::new();
    for c in changed.iter().filter(|c| healthy(c)) {
        if !distinct.iter().any(|d| d.value == c.value) {
            distinct.push(c);
        }
    }
    let any_corrupt_change = changed.iter().any(|c| !healthy(c));
    if let Some(held) = held_back(input, &distinct, first_sync_rule) {
        return (held, true);
    }
    // The first-sync rule: a location never seen that holds another version than the agreed
    // one makes the agreed version a candidate too; so does a change made by a location that
    // had not received the agreed version.
    let mut candidates = distinct.clone();
    let agreed_candidate = (first_sync_rule || !behind.is_empty())
        .then(|| agreed_holder(input, &candidates))
        .flatten();
    if let Some(c) = &agreed_candidate {
        candidates.push(c);
    }
    if let Some(waits) = waits_for_agreed(input, &candidates, &behind, first_sync_rule) {
        return (waits, false);
    }
    match candidates.len() {
        0 => (unchanged(input, any_corrupt_change), false),
        1 => {
            let c = candidates[0];
            let why = if c.value == Recorded::Absent {
                format!("deleted in {}", c.side.location)
            } else {
                format!("changed in {}", c.side.location)
            };
            (
                propagate_or_in_sync(input, c.value.clone(), c.side, &why),
                false,
            )
        }
        _ => (
            several(input, direction, &candidates, first_sync_rule, &behind),
            true,
        ),
    }
}

/// A resolve: the kept location's version wins, if it has a healthy one.
fn kept(input: &FileInput, location: &str) -> Decision {
    let stuck = |reason: String| Decision::Stuck {
        reason,
        failure: true,
    };
    let Some(side) = input.sides.iter().find(|s| s.location == location) else {
        return stuck(format!("{location} is not available"));
    };
    match &side.observed {
        Observed::Present(v) if v.corrupt.is_none() => Decision::Propagate {
            winner: Recorded::Present(v.hash.clone()),
            source: side.location.clone(),
            reason: format!("kept {location}'s version"),
        },
        Observed::Present(v) => stuck(format!(
            "{location}'s version is corrupt: {}",
            v.corrupt.clone().unwrap_or_default()
        )),
        _ => stuck(format!("{location} holds no usable version")),
    }
}

/// A push: local's healthy version wins everywhere (without one, a push decides like a sync).
fn pushed(input: &FileInput) -> Option<Decision> {
    let side = input.sides.iter().find(|s| s.local)?;
    match &side.observed {
        Observed::Present(v) if v.corrupt.is_none() => Some(propagate_or_in_sync(
            input,
            Recorded::Present(v.hash.clone()),
            side,
            "push: local wins",
        )),
        _ => None,
    }
}

/// Held-back versions (shrink guard) wait for the user whatever the strategy.
fn held_back(input: &FileInput, distinct: &[&Changed<'_>], first: bool) -> Option<Decision> {
    let h = distinct
        .iter()
        .find(|c| version(&c.side.observed).is_some_and(|v| v.hold.is_some()))?;
    let why = version(&h.side.observed)
        .and_then(|v| v.hold.clone())
        .unwrap_or_default();
    Some(conflict(
        input,
        distinct,
        first,
        format!("held back in {}: {why}", h.side.location),
    ))
}

/// The agreed version as a candidate, held where it is, when it is not one already.
fn agreed_holder<'a>(input: &'a FileInput, candidates: &[&Changed<'a>]) -> Option<Changed<'a>> {
    let agreed @ Recorded::Present(_) = input.agreed.as_ref()? else {
        return None;
    };
    if candidates.iter().any(|d| &d.value == agreed) {
        return None;
    }
    holder(input, agreed).map(|side| Changed {
        value: agreed.clone(),
        side,
    })
}

/// Changes all made without the agreed version, which is still there but not reachable
/// this run (offline, evicted, or unreadable: a database that never held still): replacing it
/// by them would drop it, so they wait for it. So does the version of a location never seen
/// from this machine (the first-sync rule): the agreed version must compete with it, and it
/// cannot while it is out of reach.
fn waits_for_agreed(
    input: &FileInput,
    candidates: &[&Changed<'_>],
    behind: &[Recorded],
    first_sync_rule: bool,
) -> Option<Decision> {
    let agreed @ Recorded::Present(_) = input.agreed.as_ref()? else {
        return None;
    };
    let carried = candidates
        .iter()
        .any(|c| c.value == *agreed || c.side.recorded.as_ref() == Some(agreed));
    let reachable_later = input.agreed_elsewhere
        || input
            .sides
            .iter()
            .any(|s| matches!(s.observed, Observed::Skipped(_)));
    if carried || !reachable_later {
        return None;
    }
    let reason = if !behind.is_empty() {
        format!(
            "{} changed a version older than the agreed one, which is in no available location",
            behind_names(candidates, input).join(" and ")
        )
    } else if first_sync_rule {
        let new: Vec<&str> = candidates
            .iter()
            .filter(|c| c.side.recorded.is_none())
            .map(|c| c.side.location.as_str())
            .collect();
        format!(
            "{} holds another version than the agreed one, which cannot be read this run:              they are compared when it can",
            new.join(" and ")
        )
    } else {
        return None;
    };
    Some(Decision::Stuck {
        reason,
        failure: false,
    })
}

/// No location changed the file: the agreed version goes where it is missing.
fn unchanged(input: &FileInput, any_corrupt_change: bool) -> Decision {
    let no_healthy = || Decision::Stuck {
        reason: "no healthy version anywhere".into(),
        failure: true,
    };
    let nowhere = || Decision::Stuck {
        reason: "the agreed version is in no available location".into(),
        failure: false,
    };
    let agreed = match &input.agreed {
        None if any_corrupt_change => return no_healthy(),
        None | Some(Recorded::Absent) => return Decision::InSync(Recorded::Absent),
        Some(agreed) => agreed,
    };
    match holder(input, agreed) {
        Some(side) => propagate_or_in_sync(input, agreed.clone(), side, "the agreed version"),
        None if any_corrupt_change => no_healthy(),
        None if input.agreed_elsewhere => nowhere(),
        // Deleted in every location, and no unavailable one was seen holding it: there is
        // nothing to restore it from, and nowhere it could come back from; the deletion is
        // agreed (Unison's "deleted on both sides").
        None if deleted_everywhere(input) => Decision::InSync(Recorded::Absent),
        // The agreed version exists nowhere available (say it was an offline edit that was
        // then deleted) but every location that has the file agrees on another one: missing
        // copies are restored from it rather than never.
        None => match sole_present(input) {
            Some(side) => propagate_or_in_sync(
                input,
                current(&side.observed).unwrap_or(Recorded::Absent),
                side,
                "the agreed version is in no available location; restored from the one version there is",
            ),
            None => nowhere(),
        },
    }
}

/// Two or more distinct versions: the strategy's pick (or a conflict), or a row merge of
/// databases that all descend from one version.
fn several(
    input: &FileInput,
    direction: &Direction,
    candidates: &[&Changed<'_>],
    first_sync_rule: bool,
    behind: &[Recorded],
) -> Decision {
    let names: Vec<&str> = candidates
        .iter()
        .map(|c| c.side.location.as_str())
        .collect();
    let reason = if first_sync_rule && candidates.len() == 2 {
        format!(
            "{} differ and one was never synced from this machine",
            names.join(" and ")
        )
    } else if !behind.is_empty() {
        format!(
            "changed in {}; {} changed a version older than the agreed one",
            names.join(" and "),
            behind_names(candidates, input).join(" and ")
        )
    } else {
        format!("changed in {}", names.join(" and "))
    };
    let file_level = match pick(candidates, direction.strategy()) {
        Some((c, how)) => propagate_or_in_sync(
            input,
            c.value.clone(),
            c.side,
            &format!("conflict ({reason}): {how}"),
        ),
        None => conflict(input, candidates, first_sync_rule, reason),
    };
    let merging_direction = matches!(direction, Direction::Sync(_) | Direction::Pull(_));
    match merge_base(input, candidates, first_sync_rule, behind) {
        Some(base) if input.mergeable && merging_direction => Decision::Merge {
            candidates: candidates.iter().map(|c| c.side.location.clone()).collect(),
            base,
            fallback: Box::new(file_level),
        },
        _ => file_level,
    }
}

/// The version a row merge of `candidates` diffs against, when there is one every candidate
/// descends from: the agreed version, when every candidate changed it; or the older version a
/// location was left holding (it missed the agreed version), when the only candidates are
/// that location's change and the agreed version itself. Never for a location never seen
/// (the first-sync rule), nor for deletions.
fn merge_base(
    input: &FileInput,
    candidates: &[&Changed<'_>],
    first_sync_rule: bool,
    behind: &[Recorded],
) -> Option<String> {
    let agreed = input.agreed.as_ref()?;
    if first_sync_rule || candidates.iter().any(|c| c.value == Recorded::Absent) {
        return None;
    }
    let base = match behind {
        [] => agreed,
        [older] => older,
        _ => return None,
    };
    let descends = candidates
        .iter()
        .all(|c| c.side.recorded.as_ref() == Some(base) || (base != agreed && c.value == *agreed));
    match (descends, base) {
        (true, Recorded::Present(h)) => Some(h.clone()),
        _ => None,
    }
}

/// The candidates' locations whose change was made on a version older than the agreed one.
fn behind_names<'a>(candidates: &[&Changed<'a>], input: &FileInput) -> Vec<&'a str> {
    candidates
        .iter()
        .filter(|c| c.side.recorded.is_some() && c.side.recorded != input.agreed)
        .filter(|c| Some(&c.value) != input.agreed.as_ref())
        .map(|c| c.side.location.as_str())
        .collect()
}

fn conflict(
    input: &FileInput,
    candidates: &[&Changed<'_>],
    _first: bool,
    reason: String,
) -> Decision {
    let mut list: Vec<(String, Option<Version>)> = Vec::new();
    for c in candidates {
        for side in &input.sides {
            if current(&side.observed).as_ref() == Some(&c.value) {
                list.push((side.location.clone(), version(&side.observed).cloned()));
            }
        }
    }
    list.sort_by_key(|(loc, _)| input.sides.iter().position(|s| &s.location == loc));
    list.dedup();
    Decision::Conflict {
        candidates: list,
        reason,
    }
}

/// A conflict among the versions held at `locations`; every location holding one is listed.
pub fn conflict_at(input: &FileInput, locations: &[String], reason: String) -> Decision {
    let values: Vec<Recorded> = input
        .sides
        .iter()
        .filter(|s| locations.contains(&s.location))
        .filter_map(|s| current(&s.observed))
        .collect();
    let candidates = input
        .sides
        .iter()
        .filter(|s| current(&s.observed).is_some_and(|c| values.contains(&c)))
        .map(|s| (s.location.clone(), version(&s.observed).cloned()))
        .collect();
    Decision::Conflict { candidates, reason }
}

fn mtime(c: &Changed<'_>) -> Option<i128> {
    version(&c.side.observed).map(|v| v.mtime_ns)
}

/// The strategy's pick among two or more distinct candidates; `None` for manual.
fn pick<'a, 'b>(
    candidates: &[&'b Changed<'a>],
    strategy: Strategy,
) -> Option<(&'b Changed<'a>, String)> {
    let present: Vec<&&Changed<'_>> = candidates
        .iter()
        .filter(|c| c.value != Recorded::Absent)
        .collect();
    // A modification beats a deletion: the safe side keeps data.
    if present.len() == 1 && strategy != Strategy::Manual {
        return Some((present[0], "the modification wins over the deletion".into()));
    }
    match strategy {
        Strategy::Manual => None,
        Strategy::Newest => newest(&present).map(|c| (c, format!("newest ({})", c.side.location))),
        Strategy::Local => match present.iter().find(|c| c.side.local) {
            Some(c) => Some((c, "local wins".into())),
            None => newest(&present)
                .map(|c| (c, format!("local unchanged; newest ({})", c.side.location))),
        },
        Strategy::Remote => present
            .iter()
            .find(|c| !c.side.local)
            .map(|c| (**c, format!("remote wins ({})", c.side.location))),
    }
}

fn newest<'a, 'b>(present: &[&&'b Changed<'a>]) -> Option<&'b Changed<'a>> {
    // Ties go to the earlier location (local first, then config order).
    let mut best: Option<&'b Changed<'a>> = None;
    for c in present {
        if best.is_none_or(|b| mtime(c) > mtime(b)) {
            best = Some(c);
        }
    }
    best
}

fn propagate_or_in_sync(
    input: &FileInput,
    winner: Recorded,
    source: &Side,
    reason: &str,
) -> Decision {
    let all_hold = input.sides.iter().all(|s| match current(&s.observed) {
        Some(cur) => cur == winner && version(&s.observed).is_none_or(|v| v.corrupt.is_none()),
        None => true,
    });
    if all_hold {
        Decision::InSync(winner)
    } else {
        Decision::Propagate {
            winner,
            source: source.location.clone(),
            reason: reason.to_string(),
        }
    }
}

/// The actions that bring `winner` (held at `source`) to every location lacking it.
pub fn actions_for(
    input: &FileInput,
    winner: &Recorded,
    source: &str,
    direction: &Direction,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for side in &input.sides {
        if matches!(direction, Direction::Pull(_)) && !side.local {
            continue;
        }
        let Some(cur) = current(&side.observed) else {
            continue;
        };
        let corrupt = version(&side.observed).is_some_and(|v| v.corrupt.is_some());
        if cur == *winner && !corrupt {
            continue;
        }
        match winner {
            Recorded::Present(hash) => {
                if cur != Recorded::Absent {
                    actions.push(Action::Backup {
                        location: side.location.clone(),
                    });
                }
                actions.push(Action::Copy {
                    from: source.to_string(),
                    to: side.location.clone(),
                    hash: hash.clone(),
                });
            }
            Recorded::Absent => {
                if cur != Recorded::Absent {
                    actions.push(Action::Delete {
                        location: side.location.clone(),
                    });
                }
            }
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use Strategy::*;

    /// A side: name, what is there ("-" absent, "?" skipped, "h@t" hash h with mtime t,
    /// "h@t!" corrupt, "h@t~" held back), what was recorded ("" never seen, "-" absent, "h").
    fn side(spec: &str) -> Side {
        let parts: Vec<&str> = spec.split(':').collect();
        let (location, now, rec) = (parts[0], parts[1], parts.get(2).copied().unwrap_or(""));
        let observed = match now {
            "-" => Observed::Absent,
            "?" => Observed::Skipped("evicted".into()),
            v => {
                let (h, rest) = v.split_once('@').unwrap();
                let t: i128 = rest.trim_end_matches(['!', '~']).parse().unwrap();
                Observed::Present(Version {
                    hash: h.into(),
                    mtime_ns: t,
                    corrupt: rest.ends_with('!').then(|| "malformed".into()),
                    hold: rest.ends_with('~').then(|| "entities fell".into()),
                })
            }
        };
        let recorded = match rec {
            "" => None,
            "-" => Some(Recorded::Absent),
            h => Some(Recorded::Present(h.into())),
        };
        Side {
            location: location.into(),
            local: location == "local",
            observed,
            recorded,
        }
    }

    fn rec(s: &str) -> Option<Recorded> {
        match s {
            "" => None,
            "-" => Some(Recorded::Absent),
            h => Some(Recorded::Present(h.into())),
        }
    }

    fn acts(list: &[&str]) -> Vec<Action> {
        list.iter()
            .map(|a| {
                let p: Vec<&str> = a.split(' ').collect();
                match p[0] {
                    "backup" => Action::Backup {
                        location: p[1].into(),
                    },
                    "delete" => Action::Delete {
                        location: p[1].into(),
                    },
                    "copy" => Action::Copy {
                        from: p[1].into(),
                        to: p[2].into(),
                        hash: p[3].into(),
                    },
                    _ => unreachable!(),
                }
            })
            .collect()
    }

    /// Expected outcome: "sync h", "prop h from", "del from", "conflict", "stuck", "fail".
    fn outcome(d: &Decision) -> String {
        match d {
            Decision::InSync(Recorded::Present(h)) => format!("sync {h}"),
            Decision::InSync(Recorded::Absent) => "sync -".into(),
            Decision::Propagate {
                winner: Recorded::Present(h),
                source,
                ..
            } => format!("prop {h} {source}"),
            Decision::Propagate {
                winner: Recorded::Absent,
                source,
                ..
            } => format!("del {source}"),
            Decision::Conflict { .. } => "conflict".into(),
            Decision::Stuck { failure: false, .. } => "stuck".into(),
            Decision::Stuck { failure: true, .. } => "fail".into(),
            Decision::Merge {
                candidates,
                fallback,
                ..
            } => {
                format!("merge {} else {}", candidates.join("+"), outcome(fallback))
            }
        }
    }

    struct Case {
        name: &'static str,
        agreed: &'static str,
        sides: &'static [&'static str],
        deletes: bool,
        direction: Direction,
        expect: &'static str,
        actions: &'static [&'static str],
        mergeable: bool,
    }

    fn sync(s: Strategy) -> Direction {
        Direction::Sync(s)
    }

    fn cases() -> Vec<Case> {
        vec![
            Case {
                name: "nothing changed",
                agreed: "a",
                sides: &["local:a@1:a", "icloud:a@1:a"],
                deletes: false,
                direction: sync(Newest),
                expect: "sync a",
                actions: &[],
                mergeable: false,
            },
            Case {
                name: "local edit goes to the remotes",
                agreed: "a",
                sides: &["local:b@2:a", "icloud:a@1:a", "external:a@1:a"],
                deletes: false,
                direction: sync(Newest),
                expect: "prop b local",
                actions: &[
                    "backup icloud",
                    "copy local icloud b",
                    "backup external",
                    "copy local external b",
                ],
                mergeable: false,
            },
            Case {
                name: "remote edit comes home",
                agreed: "a",
                sides: &["local:a@1:a", "icloud:b@2:a"],
                deletes: false,
                direction: sync(Newest),
                expect: "prop b icloud",
                actions: &["backup local", "copy icloud local b"],
                mergeable: false,
            },
            Case {
                name: "same edit in two places is no conflict",
                agreed: "a",
                sides: &["local:b@2:a", "icloud:b@3:a"],
                deletes: false,
                direction: sync(Manual),
                expect: "sync b",
                actions: &[],
                mergeable: false,
            },
            Case {
                name: "conflict, newest wins",
                agreed: "a",
                sides: &["local:b@2:a", "icloud:c@3:a"],
                deletes: false,
                direction: sync(Newest),
                expect: "prop c icloud",
                actions: &["backup local", "copy icloud local c"],
                mergeable: false,
            },
            Case {
                name: "conflict, newest tie goes to the earlier location",
                agreed: "a",
                sides: &["local:b@3:a", "icloud:c@3:a"],
                deletes: false,
                direction: sync(Newest),
                expect: "prop b local",
                actions: &["backup icloud", "copy local icloud b"],
                mergeable: false,
            },
            Case {
                name: "conflict, local wins",
                agreed: "a",
                sides: &["local:b@2:a", "icloud:c@3:a"],
                deletes: false,
                direction: sync(Local),
                expect: "prop b local",
                actions: &["backup icloud", "copy local icloud b"],
                mergeable: false,
            },
            Case {
                name:
                    "conflict between remotes, local unchanged, strategy local falls back to newest",
                agreed: "a",
                sides: &["local:a@1:a", "icloud:b@5:a", "external:c@3:a"],
                deletes: false,
                direction: sync(Local),
                expect: "prop b icloud",
                actions: &[
                    "backup local",
                    "copy icloud local b",
                    "backup external",
                    "copy icloud external b",
                ],
                mergeable: false,
            },
            Case {
                name: "conflict, remote wins (first changed remote in config order)",
                agreed: "a",
                sides: &["local:b@9:a", "icloud:a@1:a", "external:c@3:a"],
                deletes: false,
                direction: sync(Remote),
                expect: "prop c external",
                actions: &[
                    "backup local",
                    "copy external local c",
                    "backup icloud",
                    "copy external icloud c",
                ],
                mergeable: false,
            },
            Case {
                name: "conflict, manual: nothing moves",
                agreed: "a",
                sides: &["local:b@2:a", "icloud:c@3:a"],
                deletes: false,
                direction: sync(Manual),
                expect: "conflict",
                actions: &[],
                mergeable: false,
            },
            Case {
                name: "missing file is restored, not deleted",
                agreed: "a",
                sides: &["local:-:a", "icloud:a@1:a"],
                deletes: false,
                direction: sync(Newest),
                expect: "prop a icloud",
                actions: &["copy icloud local a"],
                mergeable: false,
            },
            Case {
                name: "missing file with propagate_deletes is deleted everywhere",
                agreed: "a",
                sides: &["local:-:a", "icloud:a@1:a"],
                deletes: true,
                direction: sync(Newest),
                expect: "del local",
                actions: &["delete icloud"],
                mergeable: false,
            },
            Case {
                name: "deletion against a modification: the modification wins",
                agreed: "a",
                sides: &["local:-:a", "icloud:b@1:a"],
                deletes: true,
                direction: sync(Newest),
                expect: "prop b icloud",
                actions: &["copy icloud local b"],
                mergeable: false,
            },
            Case {
                name: "deletion against a modification under manual is a conflict",
                agreed: "a",
                sides: &["local:-:a", "icloud:b@1:a"],
                deletes: true,
                direction: sync(Manual),
                expect: "conflict",
                actions: &[],
                mergeable: false,
            },
            Case {
                name: "returning drive catches up without a conflict",
                agreed: "c",
                sides: &["local:c@3:c", "icloud:c@3:c", "external:a@1:a"],
                deletes: false,
                direction: sync(Manual),
                expect: "prop c local",
                actions: &["backup external", "copy local external c"],
                mergeable: false,
            },
            Case {
                name: "a drive never seen with an old copy is a conflict (first-sync rule)",
                agreed: "c",
                sides: &["local:c@3:c", "external:a@1:"],
                deletes: false,
                direction: sync(Manual),
                expect: "conflict",
                actions: &[],
                mergeable: false,
            },
            Case {
                name: "first-sync rule under newest: the newer agreed version wins",
                agreed: "c",
                sides: &["local:c@3:c", "external:a@1:"],
                deletes: false,
                direction: sync(Newest),
                expect: "prop c local",
                actions: &["backup external", "copy local external c"],
                mergeable: false,
            },
            Case {
                name: "a never-seen location holding the agreed version is in sync",
                agreed: "c",
                sides: &["local:c@3:c", "external:c@3:"],
                deletes: false,
                direction: sync(Manual),
                expect: "sync c",
                actions: &[],
                mergeable: false,
            },
            Case {
                name: "a never-seen empty location gets the agreed version",
                agreed: "c",
                sides: &["local:c@3:c", "external:-:"],
                deletes: true,
                direction: sync(Manual),
                expect: "prop c local",
                actions: &["copy local external c"],
                mergeable: false,
            },
            Case {
                name: "first sync ever: one side has the file",
                agreed: "",
                sides: &["local:a@1:", "icloud:-:"],
                deletes: false,
                direction: sync(Manual),
                expect: "prop a local",
                actions: &["copy local icloud a"],
                mergeable: false,
            },
            Case {
                name: "first sync ever: both hold the same version",
                agreed: "",
                sides: &["local:a@1:", "icloud:a@2:"],
                deletes: false,
                direction: sync(Manual),
                expect: "sync a",
                actions: &[],
                mergeable: false,
            },
            Case {
                name: "first sync ever: different versions are a conflict",
                agreed: "",
                sides: &["local:a@1:", "icloud:b@2:"],
                deletes: false,
                direction: sync(Manual),
                expect: "conflict",
                actions: &[],
                mergeable: false,
            },
            Case {
                name: "first sync ever, newest",
                agreed: "",
                sides: &["local:a@1:", "icloud:b@2:"],
                deletes: false,
                direction: sync(Newest),
                expect: "prop b icloud",
                actions: &["backup local", "copy icloud local b"],
                mergeable: false,
            },
            Case {
                name: "file nowhere",
                agreed: "",
                sides: &["local:-:", "icloud:-:"],
                deletes: false,
                direction: sync(Newest),
                expect: "sync -",
                actions: &[],
                mergeable: false,
            },
            Case {
                name: "an evicted copy is not a deletion and is not written",
                agreed: "a",
                sides: &["local:b@2:a", "icloud:?:a"],
                deletes: true,
                direction: sync(Newest),
                expect: "sync b",
                actions: &[],
                mergeable: false,
            },
            Case {
                name: "agreed version nowhere available: stuck, no failure",
                agreed: "a",
                sides: &["local:-:a", "icloud:?:a"],
                deletes: false,
                direction: sync(Newest),
                expect: "stuck",
                actions: &[],
                mergeable: false,
            },
            Case {
                name: "a corrupt change never wins and is replaced after a backup",
                agreed: "a",
                sides: &["local:a@1:a", "icloud:x@9!:a"],
                deletes: false,
                direction: sync(Newest),
                expect: "prop a local",
                actions: &["backup icloud", "copy local icloud a"],
                mergeable: false,
            },
            Case {
                name: "a corrupt change loses to a healthy change",
                agreed: "a",
                sides: &["local:b@1:a", "icloud:x@9!:a"],
                deletes: false,
                direction: sync(Newest),
                expect: "prop b local",
                actions: &["backup icloud", "copy local icloud b"],
                mergeable: false,
            },
            Case {
                name: "no healthy version anywhere: fail, nothing moves",
                agreed: "",
                sides: &["local:x@1!:", "icloud:-:"],
                deletes: false,
                direction: sync(Newest),
                expect: "fail",
                actions: &[],
                mergeable: false,
            },
            Case {
                name: "a held-back version is a conflict whatever the strategy",
                agreed: "a",
                sides: &["local:a@1:a", "icloud:s@9~:a"],
                deletes: false,
                direction: sync(Newest),
                expect: "conflict",
                actions: &[],
                mergeable: false,
            },
            Case {
                name: "push: local wins even though a remote changed",
                agreed: "a",
                sides: &["local:a@1:a", "icloud:b@9:a"],
                deletes: false,
                direction: Direction::Push,
                expect: "prop a local",
                actions: &["backup icloud", "copy local icloud a"],
                mergeable: false,
            },
            Case {
                name: "pull writes only local",
                agreed: "a",
                sides: &["local:a@1:a", "icloud:b@9:a", "external:a@1:a"],
                deletes: false,
                direction: Direction::Pull(Newest),
                expect: "prop b icloud",
                actions: &["backup local", "copy icloud local b"],
                mergeable: false,
            },
            Case {
                name: "pull of a local change writes nothing",
                agreed: "a",
                sides: &["local:b@2:a", "icloud:a@1:a"],
                deletes: false,
                direction: Direction::Pull(Newest),
                expect: "prop b local",
                actions: &[],
                mergeable: false,
            },
            Case {
                name: "keep a location's version settles a conflict",
                agreed: "a",
                sides: &["local:b@2:a", "icloud:c@3:a"],
                deletes: false,
                direction: Direction::Keep("local".into()),
                expect: "prop b local",
                actions: &["backup icloud", "copy local icloud b"],
                mergeable: false,
            },
            Case {
                name: "keep a location that has no version fails",
                agreed: "a",
                sides: &["local:b@2:a", "icloud:-:a"],
                deletes: false,
                direction: Direction::Keep("icloud".into()),
                expect: "fail",
                actions: &[],
                mergeable: false,
            },
            Case {
                name: "database conflict descending from the agreed version: row merge",
                agreed: "a",
                sides: &["local:b@2:a", "icloud:c@3:a"],
                deletes: false,
                direction: sync(Manual),
                expect: "merge local+icloud else conflict",
                actions: &[],
                mergeable: true,
            },
            Case {
                name: "row merge falls back to the strategy",
                agreed: "a",
                sides: &["local:b@2:a", "icloud:c@3:a"],
                deletes: false,
                direction: sync(Newest),
                expect: "merge local+icloud else prop c icloud",
                actions: &[],
                mergeable: true,
            },
            Case {
                name: "no row merge with a location never seen (first-sync rule)",
                agreed: "c",
                sides: &["local:c@3:c", "external:a@1:"],
                deletes: false,
                direction: sync(Manual),
                expect: "conflict",
                actions: &[],
                mergeable: true,
            },
            Case {
                name: "no row merge when a side's base is not the agreed version",
                agreed: "a",
                sides: &["local:b@2:a", "external:c@3:z"],
                deletes: false,
                direction: sync(Manual),
                expect: "conflict",
                actions: &[],
                mergeable: true,
            },
            Case {
                name: "a location holding the agreed version has not changed, whatever its record",
                agreed: "a",
                sides: &["local:b@2:a", "icloud:c@3:a", "external:a@1:z"],
                deletes: false,
                direction: sync(Manual),
                expect: "merge local+icloud else conflict",
                actions: &[],
                mergeable: true,
            },
            Case {
                name: "a returning drive with the agreed version: the one change wins",
                agreed: "a",
                sides: &["local:b@2:a", "icloud:a@3:a", "external:a@1:z"],
                deletes: false,
                direction: sync(Manual),
                expect: "prop b local",
                actions: &["backup icloud", "copy local icloud b", "backup external", "copy local external b"],
                mergeable: true,
            },
            Case {
                name: "a change made by a location that missed the agreed version conflicts with it",
                agreed: "a",
                sides: &["local:b@5:o", "icloud:a@3:a"],
                deletes: false,
                direction: sync(Manual),
                expect: "conflict",
                actions: &[],
                mergeable: false,
            },
            Case {
                name: "... and newest settles it (the agreed version kept as a backup)",
                agreed: "a",
                sides: &["local:b@5:o", "icloud:a@3:a"],
                deletes: false,
                direction: sync(Newest),
                expect: "prop b local",
                actions: &["backup icloud", "copy local icloud b"],
                mergeable: false,
            },
            Case {
                name: "... and a database merges it against the version that location last synced",
                agreed: "a",
                sides: &["local:b@5:o", "icloud:a@3:a"],
                deletes: false,
                direction: sync(Manual),
                expect: "merge local+icloud else conflict",
                actions: &[],
                mergeable: true,
            },
            Case {
                name: "no merge against the older version when another location changed the agreed one",
                agreed: "a",
                sides: &["local:b@5:o", "icloud:c@3:a"],
                deletes: false,
                direction: sync(Manual),
                expect: "conflict",
                actions: &[],
                mergeable: true,
            },
            Case {
                name: "a change made without the agreed version, which is not available now, waits",
                agreed: "a",
                sides: &["local:b@5:o", "icloud:?:a"],
                deletes: false,
                direction: sync(Newest),
                expect: "stuck",
                actions: &[],
                mergeable: true,
            },
            Case {
                name: "a location never seen holds another version while the agreed one cannot be read (a busy database): it waits",
                agreed: "a",
                sides: &["local:?:a", "icloud:c@9:"],
                deletes: false,
                direction: sync(Newest),
                expect: "stuck",
                actions: &[],
                mergeable: true,
            },
            Case {
                name: "... and competes with it once it can be read",
                agreed: "a",
                sides: &["local:a@1:a", "icloud:c@9:"],
                deletes: false,
                direction: sync(Newest),
                expect: "prop c icloud",
                actions: &["backup local", "copy icloud local c"],
                mergeable: false,
            },
            Case {
                name: "... but when the agreed version is gone everywhere (deleted by hand), the change is restored",
                agreed: "a",
                sides: &["local:-:a", "icloud:c@3:o"],
                deletes: false,
                direction: sync(Manual),
                expect: "prop c icloud",
                actions: &["copy icloud local c"],
                mergeable: false,
            },
            Case {
                name: "a loser left in place (pull) that changes again conflicts with the agreed version",
                agreed: "a",
                sides: &["local:a@5:a", "icloud:v2@6:v"],
                deletes: false,
                direction: sync(Manual),
                expect: "conflict",
                actions: &[],
                mergeable: false,
            },
            Case {
                name: "no row merge against a deletion",
                agreed: "a",
                sides: &["local:-:a", "icloud:c@3:a"],
                deletes: true,
                direction: sync(Manual),
                expect: "conflict",
                actions: &[],
                mergeable: true,
            },
            Case {
                name: "push never merges",
                agreed: "a",
                sides: &["local:b@2:a", "icloud:c@3:a"],
                deletes: false,
                direction: Direction::Push,
                expect: "prop b local",
                actions: &["backup icloud", "copy local icloud b"],
                mergeable: true,
            },
        ]
    }

    #[test]
    fn reconciliation_table() {
        let mut failures = Vec::new();
        for case in cases() {
            let input = FileInput {
                file: "f".into(),
                agreed: rec(case.agreed),
                sides: case.sides.iter().map(|s| side(s)).collect(),
                propagate_deletes: case.deletes,
                mergeable: case.mergeable,
                agreed_elsewhere: false,
                held_elsewhere: false,
            };
            let plan = plan_file(&input, &case.direction);
            let got = outcome(&plan.decision);
            if got != case.expect || plan.actions != acts(case.actions) {
                failures.push(format!(
                    "{}: expected {} {:?}, got {} {:?}",
                    case.name, case.expect, case.actions, got, plan.actions
                ));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn settled_files_are_exactly_in_sync_without_actions() {
        let directions = [
            sync(Newest),
            sync(Manual),
            Direction::Push,
            Direction::Pull(Newest),
        ];
        let mut settled_seen = 0;
        for case in cases() {
            let sides: Vec<Side> = case.sides.iter().map(|s| side(s)).collect();
            let agreed = rec(case.agreed);
            let held = |s: &Side| match &s.observed {
                Observed::Present(v) if v.corrupt.is_none() && v.hold.is_none() => {
                    Some(v.hash.clone())
                }
                _ => None,
            };
            let helds: Vec<Option<String>> = sides.iter().map(held).collect();
            let is_settled = |direction: &Direction| {
                settled(
                    direction,
                    agreed.as_ref(),
                    helds
                        .iter()
                        .zip(&sides)
                        .map(|(h, s)| (h.as_deref(), s.recorded.as_ref())),
                )
            };
            assert!(
                !is_settled(&Direction::Keep("icloud".into())),
                "{}",
                case.name
            );
            if !is_settled(&directions[0]) {
                continue;
            }
            settled_seen += 1;
            for direction in &directions {
                assert!(is_settled(direction), "{}: {direction:?}", case.name);
                for deletes in [false, true] {
                    let input = FileInput {
                        file: "f".into(),
                        agreed: agreed.clone(),
                        sides: sides.clone(),
                        propagate_deletes: deletes,
                        mergeable: case.mergeable,
                        agreed_elsewhere: false,
                        held_elsewhere: false,
                    };
                    let plan = plan_file(&input, direction);
                    assert!(
                        matches!(plan.decision, Decision::InSync(_))
                            && plan.actions.is_empty()
                            && plan.refused.is_empty(),
                        "{}: settled, but {direction:?} plans {:?} {:?}",
                        case.name,
                        plan.decision,
                        plan.actions
                    );
                }
            }
        }
        assert!(settled_seen > 0, "no table case is settled");
        // Not settled: a location recorded differently, holding another version, or none.
        let a = Recorded::Present("a".into());
        let b = Recorded::Present("b".into());
        assert!(!settled(&sync(Newest), Some(&a), [(Some("a"), Some(&b))]));
        assert!(!settled(
            &sync(Newest),
            Some(&a),
            [(Some("a"), Some(&a)), (Some("b"), Some(&a))]
        ));
        assert!(!settled(&sync(Newest), Some(&a), [(None, Some(&a))]));
        assert!(!settled(
            &sync(Newest),
            Some(&Recorded::Absent),
            [(None, Some(&Recorded::Absent))]
        ));
        assert!(!settled(&sync(Newest), None, [(Some("a"), Some(&a))]));
        assert!(!settled(&sync(Newest), Some(&a), []));
        assert!(settled(
            &sync(Newest),
            Some(&a),
            [(Some("a"), Some(&a)), (Some("a"), Some(&a))]
        ));
    }

    #[test]
    fn a_file_deleted_in_every_location_is_agreed_deleted_unless_it_may_come_back() {
        let input = |sides: &[&str], held_elsewhere: bool, agreed_elsewhere: bool| FileInput {
            file: "f".into(),
            agreed: rec("a"),
            sides: sides.iter().map(|s| side(s)).collect(),
            propagate_deletes: false,
            mergeable: false,
            agreed_elsewhere,
            held_elsewhere,
        };
        let sync = Direction::Sync(Newest);
        let stuck = |d: &Decision| matches!(d, Decision::Stuck { failure: false, .. });
        // Gone everywhere, nothing offline: the deletion is agreed, no warning.
        let gone = plan_file(&input(&["local:-:a", "icloud:-:a"], false, false), &sync);
        assert_eq!(gone.decision, Decision::InSync(Recorded::Absent));
        assert!(gone.actions.is_empty());
        // An unavailable drive last held it (any version) or holds the agreed one: it may
        // come back from there, so it waits, with the warning.
        for (held, agreed) in [(true, false), (true, true)] {
            let d = plan_file(&input(&["local:-:a", "icloud:-:a"], held, agreed), &sync).decision;
            assert!(stuck(&d), "{held} {agreed}: {d:?}");
        }
        // An evicted copy may be it: not a deletion either.
        let d = plan_file(&input(&["local:-:a", "icloud:?:a"], false, false), &sync).decision;
        assert!(stuck(&d), "{d:?}");
        // One location still holds another version: that one is restored everywhere.
        let d = plan_file(&input(&["local:-:a", "icloud:b@2:b"], false, false), &sync).decision;
        assert!(matches!(d, Decision::Propagate { .. }), "{d:?}");
    }

    #[test]
    fn conflict_lists_every_location_holding_a_candidate() {
        let input = FileInput {
            file: "f".into(),
            agreed: rec("a"),
            sides: ["local:b@2:a", "icloud:c@3:a", "external:c@3:a"]
                .iter()
                .map(|s| side(s))
                .collect(),
            propagate_deletes: false,
            mergeable: false,
            agreed_elsewhere: false,
            held_elsewhere: false,
        };
        let plan = plan_file(&input, &Direction::Sync(Manual));
        let Decision::Conflict { candidates, reason } = plan.decision else {
            panic!("not a conflict")
        };
        let locs: Vec<&str> = candidates.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(locs, ["local", "icloud", "external"]);
        assert!(reason.contains("local and icloud"), "{reason}");
    }

    #[test]
    fn refused_corrupt_versions_are_reported() {
        let input = FileInput {
            file: "f".into(),
            agreed: rec("a"),
            sides: ["local:a@1:a", "icloud:x@9!:a"]
                .iter()
                .map(|s| side(s))
                .collect(),
            propagate_deletes: false,
            mergeable: false,
            agreed_elsewhere: false,
            held_elsewhere: false,
        };
        let plan = plan_file(&input, &Direction::Sync(Newest));
        assert_eq!(
            plan.refused,
            vec![("icloud".to_string(), "malformed".to_string())]
        );
    }

    #[test]
    fn protection_of_what_a_run_overwrites() {
        let input = |sides: &[&str]| FileInput {
            file: "f".into(),
            agreed: rec("a"),
            sides: sides.iter().map(|s| side(s)).collect(),
            propagate_deletes: false,
            mergeable: false,
            agreed_elsewhere: false,
            held_elsewhere: false,
        };
        let sync = Direction::Sync(Newest);
        // A conflict settled by newest: the loser's backup is protected, in every location.
        let conflict = plan_file(&input(&["local:b@2:a", "icloud:c@3:a"]), &sync);
        assert!(conflict.conflict);
        assert_eq!(
            protection(&conflict, &sync, "local", false),
            Some(Protected::ConflictLoser)
        );
        // One change: the versions it replaces are old agreed ones, not losers.
        let one = plan_file(&input(&["local:b@2:a", "icloud:a@1:a"]), &sync);
        assert!(!one.conflict);
        assert_eq!(protection(&one, &sync, "icloud", false), None);
        // A corrupt version refused and replaced.
        let corrupt = plan_file(&input(&["local:a@1:a", "icloud:x@9!:a"]), &sync);
        assert_eq!(
            protection(&corrupt, &sync, "icloud", false),
            Some(Protected::RefusedCorrupt)
        );
        // What a resolve replaces.
        let keep = Direction::Keep("icloud".into());
        let resolve = plan_file(&input(&["local:b@2:a", "icloud:c@3:a"]), &keep);
        assert_eq!(
            protection(&resolve, &keep, "local", false),
            Some(Protected::Replaced)
        );
        // A merged version: protected only where it settled row conflicts.
        let mut merged = conflict.clone();
        merged.decision = Decision::Propagate {
            winner: Recorded::Present("m".into()),
            source: MERGE_SOURCE.into(),
            reason: "merged".into(),
        };
        assert_eq!(protection(&merged, &sync, "local", false), None);
        assert_eq!(
            protection(&merged, &sync, "local", true),
            Some(Protected::RowConflictLoser)
        );
    }

    #[test]
    fn protection_of_a_version_held_by_the_shrink_guard() {
        let input = FileInput {
            file: "f".into(),
            agreed: rec("a"),
            sides: vec![side("local:s@2~:a"), side("icloud:a@1:a")],
            propagate_deletes: false,
            mergeable: false,
            agreed_elsewhere: false,
            held_elsewhere: false,
        };
        let sync = Direction::Sync(Newest);
        let held = plan_file(&input, &sync);
        assert_eq!(held.held, vec!["local".to_string()]);
        assert!(matches!(held.decision, Decision::Conflict { .. }));
        // A resolve keeping the other version replaces the held one: its backup is protected
        // as held back, not merely as replaced.
        let keep_other = Direction::Keep("icloud".into());
        let plan = plan_file(&input, &keep_other);
        assert_eq!(
            protection(&plan, &keep_other, "local", false),
            Some(Protected::ShrinkHeld)
        );
        // The held version confirmed (resolve) or pushed: what it replaces is protected.
        for direction in [Direction::Keep("local".into()), Direction::Push] {
            let plan = plan_file(&input, &direction);
            assert!(
                matches!(&plan.decision, Decision::Propagate { source, .. } if source == "local"),
                "{direction:?}: {:?}",
                plan.decision
            );
            assert_eq!(
                protection(&plan, &direction, "icloud", false),
                Some(Protected::ShrinkHeld),
                "{direction:?}"
            );
        }
        // Nothing held: nothing protected for it.
        let plain = FileInput {
            sides: vec![side("local:s@2:a"), side("icloud:a@1:a")],
            ..input
        };
        assert_eq!(
            protection(
                &plan_file(&plain, &Direction::Push),
                &Direction::Push,
                "icloud",
                false
            ),
            None
        );
    }
}
