//! The history policy (SPEC §5 "History"), pure: for every kept version of one file in one
//! location, whether it stays a plain backup, moves into the location's store, or goes —
//! and why. No I/O, no clock: the caller passes the versions, the config and `now`.
//!
//! # Order
//!
//! A version's *age* is `now - created`; one made in the future (another machine's clock
//! ahead of ours) counts as age 0, so it is never thinned before its time. Versions are
//! ranked newest first by age, equal ages by id (the greater id newer), so the input order
//! never matters.
//!
//! # Rules, in order
//!
//! 1. The `keep_last` newest are kept, whatever else: the `plain_last` newest of them stay
//!    plain (`KeepPlain`) unless the version is larger than `plain_max_mb`, the others
//!    are stored (`Store`, reason `KeepLast`). A stored version's size is what removing it
//!    frees, not its file's size: the size check matters only for plain ones.
//! 2. A protected version (a conflict's loser, a version held by the shrink guard, a refused
//!    corrupt version, the version a restore or resolve replaced) is stored while it has been
//!    protected for less than `protect_days` (protection from the future counts as new).
//! 3. Otherwise the retention mode decides, for *every* version, unique or not:
//!    - `staggered`: one per slot, the newest of its slot — per hour while younger than a
//!      day, per day up to 30 days, per week up to 365 days; the rest go. Slots are fixed
//!      periods of time (UTC hours, days, weeks since the epoch), not ages: the newest version
//!      of an hour stays the newest of that hour however time passes, so what is kept at one
//!      run is still kept at the next until it ages into a coarser slot (with age-relative
//!      buckets, each new version would push the one before out of its bucket, run after
//!      run, and a steady stream of versions would keep none older than the first bucket);
//!    - `max_age`: stored while younger than `max_age_days`;
//!    - `none`: nothing beyond `keep_last`.
//!
//! [`within_budget`] then applies `max_history_mb` across the decisions of a location:
//! the oldest stored unprotected versions go first until the kept sizes fit; the
//! `keep_last` (plain or stored) and protected versions are never removed by the budget.

use crate::config::{BackupConfig, Retention};
use chrono::{DateTime, Duration, Utc};

use std::collections::HashSet;
use std::fmt;

pub use crate::model::Protected;

/// One kept version of one file in one location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Unique within the set.
    pub id: String,
    /// When it was made.
    pub created: DateTime<Utc>,
    /// The bytes it takes (what the budget counts).
    pub size: u64,
    /// Why it is protected, and since when.
    pub protected: Option<(Protected, DateTime<Utc>)>,
}

/// What happens to a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stays a plain backup beside its file.
    KeepPlain,
    /// Kept, in the location's store.
    Store,
    /// Goes.
    Remove,
}

/// Why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Among the `keep_last` newest (its rank, 0 the newest).
    KeepLast(usize),
    /// Protected for less than `protect_days`.
    Protected(Protected),
    /// The newest of its hour (younger than a day).
    Hourly,
    /// The newest of its day (younger than 30 days).
    Daily,
    /// The newest of its week (younger than 365 days).
    Weekly,
    /// A newer version represents its slot.
    Superseded,
    /// 365 days old or more (staggered).
    Expired,
    /// Younger than `max_age_days`.
    YoungerThanMaxAge,
    /// `max_age_days` old or more.
    OlderThanMaxAge,
    /// Retention `none` keeps only `keep_last`.
    NotKept,
    /// Removed to stay within `max_history_mb`.
    OverBudget,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::KeepLast(r) => write!(f, "one of the keep_last newest (#{})", r + 1),
            Reason::Protected(p) => write!(f, "protected ({})", p.as_str()),
            Reason::Hourly => f.write_str("the newest of its hour"),
            Reason::Daily => f.write_str("the newest of its day"),
            Reason::Weekly => f.write_str("the newest of its week"),
            Reason::Superseded => f.write_str("a newer version keeps its slot in the schedule"),
            Reason::Expired => f.write_str("older than a year"),
            Reason::YoungerThanMaxAge => f.write_str("younger than max_age_days"),
            Reason::OlderThanMaxAge => f.write_str("older than max_age_days"),
            Reason::NotKept => f.write_str("retention none keeps only keep_last"),
            Reason::OverBudget => f.write_str("over max_history_mb, oldest unprotected first"),
        }
    }
}

/// The decision for one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The version's id.
    pub id: String,
    /// What happens to it.
    pub action: Action,
    /// Why.
    pub reason: Reason,
}

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;
const WEEK: i64 = 7 * DAY;

/// The staggered slot of a version made at `created`, this old (`>= 0`): the kind of slot
/// and its number (UTC hours, days or weeks since the epoch); `None` from 365 days on.
fn slot(created: DateTime<Utc>, age: Duration) -> Option<(Reason, i64)> {
    let a = age.num_seconds();
    let t = created.timestamp();
    if a < DAY {
        Some((Reason::Hourly, t.div_euclid(HOUR)))
    } else if a < 30 * DAY {
        Some((Reason::Daily, t.div_euclid(DAY)))
    } else if a < 365 * DAY {
        Some((Reason::Weekly, t.div_euclid(WEEK)))
    } else {
        None
    }
}

fn age(at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    now.signed_duration_since(at).max(Duration::zero())
}

/// Whether `v` is protected at `now` under `config`.
pub fn is_protected(v: &Version, config: &BackupConfig, now: DateTime<Utc>) -> bool {
    v.protected
        .is_some_and(|(_, since)| age(since, now) < Duration::days(i64::from(config.protect_days)))
}

/// Where the `rank`-th newest version (one of the `keep_last`) is kept: plain while among
/// the `plain_last` newest and its file is at most `plain_max_mb`, stored otherwise.
fn keep_last_action(v: &Version, rank: usize, config: &BackupConfig) -> Action {
    if rank < config.plain_last && v.size <= config.plain_max_mb.saturating_mul(1 << 20) {
        Action::KeepPlain
    } else {
        Action::Store
    }
}

/// Decides every version of one file in one location (any order); the decisions come back
/// in the input's order.
pub fn decide(versions: &[Version], config: &BackupConfig, now: DateTime<Utc>) -> Vec<Decision> {
    let mut order: Vec<usize> = (0..versions.len()).collect();
    order.sort_by(|&a, &b| {
        let (va, vb) = (&versions[a], &versions[b]);
        age(va.created, now)
            .cmp(&age(vb.created, now))
            .then_with(|| vb.id.cmp(&va.id))
    });
    let max_age = Duration::days(i64::from(config.max_age_days));
    let mut taken = HashSet::new();
    let mut out: Vec<Option<Decision>> = vec![None; versions.len()];
    for (rank, &i) in order.iter().enumerate() {
        let v = &versions[i];
        let a = age(v.created, now);
        let (action, reason) = if rank < config.keep_last {
            (keep_last_action(v, rank, config), Reason::KeepLast(rank))
        } else {
            let scheduled = match config.retention {
                Retention::None => (Action::Remove, Reason::NotKept),
                Retention::MaxAge if a < max_age => (Action::Store, Reason::YoungerThanMaxAge),
                Retention::MaxAge => (Action::Remove, Reason::OlderThanMaxAge),
                Retention::Staggered => match slot(v.created, a) {
                    None => (Action::Remove, Reason::Expired),
                    Some(s) if taken.insert(s) => (Action::Store, s.0),
                    Some(_) => (Action::Remove, Reason::Superseded),
                },
            };
            match (scheduled.0, v.protected) {
                (Action::Remove, Some((p, _))) if is_protected(v, config, now) => {
                    (Action::Store, Reason::Protected(p))
                }
                _ => scheduled,
            }
        };
        out[i] = Some(Decision {
            id: v.id.clone(),
            action,
            reason,
        });
    }
    out.into_iter().flatten().collect()
}

/// Applies `max_history_mb` to the decisions of every file of one location (`versions[i]`
/// decided as `decisions[i]`): while the kept sizes exceed the cap, the oldest stored,
/// unprotected version goes. Returns whether the kept sizes still exceed it (only plain
/// `keep_last` and protected versions left).
pub fn within_budget(
    versions: &[Version],
    decisions: &mut [Decision],
    config: &BackupConfig,
    now: DateTime<Utc>,
) -> bool {
    let Some(mb) = config.max_history_mb else {
        return false;
    };
    let cap = mb.saturating_mul(1024 * 1024);
    let mut total: u64 = versions
        .iter()
        .zip(decisions.iter())
        .filter(|(_, d)| d.action != Action::Remove)
        .map(|(v, _)| v.size)
        .sum();
    let mut candidates: Vec<usize> = (0..versions.len())
        .filter(|&i| decisions[i].action == Action::Store)
        .filter(|&i| !matches!(decisions[i].reason, Reason::KeepLast(_)))
        .filter(|&i| !is_protected(&versions[i], config, now))
        .collect();
    // Oldest first: the greatest age, then the smaller id.
    candidates.sort_by(|&a, &b| {
        let (va, vb) = (&versions[a], &versions[b]);
        age(vb.created, now)
            .cmp(&age(va.created, now))
            .then_with(|| va.id.cmp(&vb.id))
    });
    for i in candidates {
        if total <= cap {
            break;
        }
        decisions[i].action = Action::Remove;
        decisions[i].reason = Reason::OverBudget;
        total -= versions[i].size;
    }
    total > cap
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
    }
    fn h(n: i64) -> Duration {
        Duration::hours(n)
    }
    fn d(n: i64) -> Duration {
        Duration::days(n)
    }
    fn m(n: i64) -> Duration {
        Duration::minutes(n)
    }

    /// A config whose `keep_last` all stay plain (cases of the stored `keep_last` below).
    fn config(keep_last: usize, retention: Retention) -> BackupConfig {
        BackupConfig {
            keep_last,
            plain_last: keep_last,
            retention,
            ..BackupConfig::default()
        }
    }

    /// (id, age, size, protected reason and how long ago)
    type Spec = (&'static str, Duration, u64, Option<(Protected, Duration)>);

    fn versions(spec: &[Spec]) -> Vec<Version> {
        spec.iter()
            .map(|(id, a, size, p)| Version {
                id: id.to_string(),
                created: now() - *a,
                size: *size,
                protected: p.map(|(r, ago)| (r, now() - ago)),
            })
            .collect()
    }

    fn plain(id: &'static str, a: Duration) -> Spec {
        (id, a, 1, None)
    }

    fn prot(id: &'static str, a: Duration, r: Protected, ago: Duration) -> Spec {
        (id, a, 1, Some((r, ago)))
    }

    struct Case {
        name: &'static str,
        spec: Vec<Spec>,
        config: BackupConfig,
        /// (id, action, reason) for every version, in input order.
        want: Vec<(&'static str, Action, Reason)>,
        over: bool,
    }

    use Action::{KeepPlain as P, Remove as R, Store as S};

    fn cases() -> Vec<Case> {
        let staggered = |k| config(k, Retention::Staggered);
        let budget = |k, mb| BackupConfig {
            max_history_mb: Some(mb),
            ..config(k, Retention::Staggered)
        };
        let mib = 1024 * 1024;
        vec![
            Case {
                name: "empty",
                spec: vec![],
                config: staggered(5),
                want: vec![],
                over: false,
            },
            Case {
                name: "keep_last stay plain, the rest one per hour, the newest of each",
                spec: vec![
                    plain("a", m(1)),
                    plain("b", m(6)),
                    plain("c", m(11)),
                    plain("d", m(16)),
                    plain("e", m(61)),
                    plain("f", m(66)),
                ],
                config: staggered(2),
                want: vec![
                    ("a", P, Reason::KeepLast(0)),
                    ("b", P, Reason::KeepLast(1)),
                    ("c", S, Reason::Hourly),
                    ("d", R, Reason::Superseded),
                    ("e", S, Reason::Hourly),
                    ("f", R, Reason::Superseded),
                ],
                over: false,
            },
            Case {
                name: "input order never matters: same as above, shuffled",
                spec: vec![
                    plain("f", m(66)),
                    plain("c", m(11)),
                    plain("a", m(1)),
                    plain("e", m(61)),
                    plain("d", m(16)),
                    plain("b", m(6)),
                ],
                config: staggered(2),
                want: vec![
                    ("f", R, Reason::Superseded),
                    ("c", S, Reason::Hourly),
                    ("a", P, Reason::KeepLast(0)),
                    ("e", S, Reason::Hourly),
                    ("d", R, Reason::Superseded),
                    ("b", P, Reason::KeepLast(1)),
                ],
                over: false,
            },
            Case {
                name: "daily, weekly, expired",
                spec: vec![
                    plain("d1", h(25)),
                    plain("d1b", h(30)),
                    plain("d29", d(29)),
                    // Weeks since the epoch start on Thursdays: May 2 is in one, Apr 26 and
                    // Apr 25 in the one before.
                    plain("w0", d(30)),
                    plain("w1", d(36)),
                    plain("w1b", d(37)),
                    plain("w47", d(364)),
                    plain("old", d(365)),
                ],
                config: staggered(0),
                want: vec![
                    ("d1", S, Reason::Daily),
                    ("d1b", R, Reason::Superseded),
                    ("d29", S, Reason::Daily),
                    ("w0", S, Reason::Weekly),
                    ("w1", S, Reason::Weekly),
                    ("w1b", R, Reason::Superseded),
                    ("w47", S, Reason::Weekly),
                    ("old", R, Reason::Expired),
                ],
                over: false,
            },
            Case {
                name: "every protected kind is stored inside protect_days, whatever its slot",
                spec: vec![
                    plain("new", m(1)),
                    prot("loser", m(2), Protected::ConflictLoser, d(29)),
                    prot("row", m(3), Protected::RowConflictLoser, d(1)),
                    prot("held", m(4), Protected::ShrinkHeld, d(0)),
                    prot("corrupt", d(400), Protected::RefusedCorrupt, d(2)),
                    prot("replaced", d(500), Protected::Replaced, h(1)),
                ],
                config: staggered(1),
                want: vec![
                    ("new", P, Reason::KeepLast(0)),
                    ("loser", S, Reason::Hourly),
                    ("row", S, Reason::Protected(Protected::RowConflictLoser)),
                    ("held", S, Reason::Protected(Protected::ShrinkHeld)),
                    ("corrupt", S, Reason::Protected(Protected::RefusedCorrupt)),
                    ("replaced", S, Reason::Protected(Protected::Replaced)),
                ],
                over: false,
            },
            Case {
                name: "protection ends after protect_days (to the day)",
                spec: vec![
                    plain("new", m(1)),
                    prot("kept", m(20), Protected::ConflictLoser, d(30) - m(1)),
                    prot("ends", m(30), Protected::ConflictLoser, d(30)),
                ],
                config: staggered(1),
                want: vec![
                    ("new", P, Reason::KeepLast(0)),
                    ("kept", S, Reason::Hourly),
                    ("ends", R, Reason::Superseded),
                ],
                over: false,
            },
            Case {
                name: "protection also holds under retention none and max_age",
                spec: vec![
                    plain("new", m(1)),
                    prot("loser", d(100), Protected::ConflictLoser, d(3)),
                    plain("other", d(2)),
                ],
                config: config(1, Retention::None),
                want: vec![
                    ("new", P, Reason::KeepLast(0)),
                    ("loser", S, Reason::Protected(Protected::ConflictLoser)),
                    ("other", R, Reason::NotKept),
                ],
                over: false,
            },
            Case {
                name: "max_age",
                spec: vec![plain("young", d(89)), plain("old", d(90))],
                config: config(0, Retention::MaxAge),
                want: vec![
                    ("young", S, Reason::YoungerThanMaxAge),
                    ("old", R, Reason::OlderThanMaxAge),
                ],
                over: false,
            },
            Case {
                name: "clock skew: a version from the future is the newest, never thinned early",
                spec: vec![
                    plain("future", -d(3)),
                    plain("now", m(1)),
                    plain("older", m(2)),
                ],
                config: staggered(1),
                want: vec![
                    ("future", P, Reason::KeepLast(0)),
                    ("now", S, Reason::Hourly),
                    ("older", R, Reason::Superseded),
                ],
                over: false,
            },
            Case {
                name: "clock skew: protection dated in the future still protects",
                spec: vec![prot("x", d(400), Protected::Replaced, -d(100))],
                config: staggered(0),
                want: vec![("x", S, Reason::Protected(Protected::Replaced))],
                over: false,
            },
            Case {
                name: "budget: the oldest unprotected stored versions go first",
                spec: vec![
                    ("p", m(1), mib, None),
                    ("h0", m(30), mib, None),
                    ("h5", h(5), mib, None),
                    ("loser", h(6), mib, Some((Protected::ConflictLoser, h(6)))),
                    ("d3", d(3), mib, None),
                ],
                config: budget(1, 3),
                want: vec![
                    ("p", P, Reason::KeepLast(0)),
                    ("h0", S, Reason::Hourly),
                    ("h5", R, Reason::OverBudget),
                    ("loser", S, Reason::Hourly),
                    ("d3", R, Reason::OverBudget),
                ],
                over: false,
            },
            Case {
                name: "budget never removes keep_last or protected versions, and says so",
                spec: vec![
                    ("p1", m(1), 2 * mib, None),
                    ("p2", m(2), 2 * mib, None),
                    ("loser", d(2), mib, Some((Protected::ShrinkHeld, d(2)))),
                    ("d5", d(5), mib, None),
                ],
                config: budget(2, 3),
                want: vec![
                    ("p1", P, Reason::KeepLast(0)),
                    ("p2", P, Reason::KeepLast(1)),
                    ("loser", S, Reason::Daily),
                    ("d5", R, Reason::OverBudget),
                ],
                over: true,
            },
            Case {
                name: "budget not reached: nothing more goes",
                spec: vec![("p", m(1), mib, None), ("d2", d(2), mib, None)],
                config: budget(1, 2),
                want: vec![("p", P, Reason::KeepLast(0)), ("d2", S, Reason::Daily)],
                over: false,
            },
            Case {
                name: "the defaults: of the keep_last 5, the newest stays plain, 4 are stored",
                spec: vec![
                    plain("a", m(1)),
                    plain("b", m(6)),
                    plain("c", m(11)),
                    plain("d", m(16)),
                    plain("e", m(21)),
                    plain("f", m(26)),
                ],
                config: BackupConfig::default(),
                want: vec![
                    ("a", P, Reason::KeepLast(0)),
                    ("b", S, Reason::KeepLast(1)),
                    ("c", S, Reason::KeepLast(2)),
                    ("d", S, Reason::KeepLast(3)),
                    ("e", S, Reason::KeepLast(4)),
                    ("f", S, Reason::Hourly),
                ],
                over: false,
            },
            Case {
                name: "a file over plain_max_mb keeps no plain copy, all its keep_last stored",
                spec: vec![
                    ("big1", m(1), 101 * mib, None),
                    ("big2", m(6), 100 * mib + 1, None),
                    ("fits", m(11), 100 * mib, None),
                ],
                config: BackupConfig {
                    plain_last: 3,
                    ..BackupConfig::default()
                },
                want: vec![
                    ("big1", S, Reason::KeepLast(0)),
                    ("big2", S, Reason::KeepLast(1)),
                    ("fits", P, Reason::KeepLast(2)),
                ],
                over: false,
            },
            Case {
                name: "stored keep_last never go over budget; the older stored ones do",
                spec: vec![
                    ("k1", m(1), mib, None),
                    ("k2", m(6), mib, None),
                    ("d2", d(2), mib, None),
                ],
                config: BackupConfig {
                    keep_last: 2,
                    plain_last: 0,
                    max_history_mb: Some(1),
                    ..BackupConfig::default()
                },
                want: vec![
                    ("k1", S, Reason::KeepLast(0)),
                    ("k2", S, Reason::KeepLast(1)),
                    ("d2", R, Reason::OverBudget),
                ],
                over: true,
            },
        ]
    }

    #[test]
    fn policy_table() {
        let mut failures = Vec::new();
        for case in cases() {
            let vs = versions(&case.spec);
            let mut got = decide(&vs, &case.config, now());
            let over = within_budget(&vs, &mut got, &case.config, now());
            let got: Vec<(String, Action, Reason)> = got
                .into_iter()
                .map(|d| (d.id, d.action, d.reason))
                .collect();
            let want: Vec<(String, Action, Reason)> = case
                .want
                .iter()
                .map(|(i, a, r)| (i.to_string(), *a, *r))
                .collect();
            if got != want || over != case.over {
                failures.push(format!(
                    "{}:\n  want {want:?} over {}\n  got  {got:?} over {over}",
                    case.name, case.over
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// The case: 300 versions five minutes apart over 25 hours → keep_last plain,
    /// one per hour of the last day (and one for the day before) stored, nothing else.
    #[test]
    fn five_minute_versions_over_a_day_keep_one_per_hour() {
        let vs: Vec<Version> = (0..300)
            .map(|i| Version {
                id: format!("v{i:03}"),
                created: now() - m(5 * i),
                size: 1,
                protected: None,
            })
            .collect();
        let got = decide(&vs, &config(5, Retention::Staggered), now());
        let count = |a| got.iter().filter(|d| d.action == a).count();
        assert_eq!(count(P), 5);
        assert_eq!(
            count(S),
            24 + 1,
            "hours 0..24 (hour 0 beyond the 5 plain) and day 1"
        );
        // Running again on the survivors at the same time changes nothing.
        let kept: Vec<Version> = vs
            .iter()
            .zip(&got)
            .filter(|(_, d)| d.action != R)
            .map(|(v, _)| v.clone())
            .collect();
        let again = decide(&kept, &config(5, Retention::Staggered), now());
        assert!(again.iter().all(|d| d.action != R), "{again:?}");
    }

    /// Thinning run after run, as the engine does: a version every 5 minutes for 40 days,
    /// the policy applied after each. At the end every hour of the last day, every day of
    /// the last 30 and the weeks before still have a version (slots fixed in time; with
    /// buckets relative to `now`, each new version pushes the previous one out of its
    /// bucket and nothing older than the first survives).
    #[test]
    fn thinning_run_after_run_keeps_one_per_hour_day_and_week() {
        let config = config(5, Retention::Staggered);
        let start = now() - d(40);
        let mut kept: Vec<Version> = Vec::new();
        let mut t = start;
        let mut i = 0;
        while t <= now() {
            kept.push(Version {
                id: format!("v{i:06}"),
                created: t,
                size: 1,
                protected: None,
            });
            let decided = decide(&kept, &config, t);
            kept = kept
                .into_iter()
                .zip(decided)
                .filter(|(_, d)| d.action != R)
                .map(|(v, _)| v)
                .collect();
            t += m(5);
            i += 1;
        }
        let now = t - m(5);
        let ages: Vec<Duration> = kept.iter().map(|v| now - v.created).collect();
        for h in 0..24 {
            assert!(
                ages.iter().any(|a| a.num_hours() == h),
                "no version in hour {h}: {ages:?}"
            );
        }
        for day in 1..30 {
            assert!(
                ages.iter().any(|a| a.num_days() == day),
                "no version on day {day}: {ages:?}"
            );
        }
        assert!(ages.iter().any(|a| a.num_days() >= 37), "{ages:?}");
        assert!(kept.len() < 5 + 25 + 31 + 3, "{} kept", kept.len());
    }
}
