//! Backup retention (SPEC §2, §5): which backups of one file in one location may go.
//!
//! Pure: no I/O and no clock. The caller passes the backups, the policy, `now`, and a way
//! to ask whether a version also exists outside the set; [`to_delete`] returns ids.
//!
//! # Order
//!
//! A backup's *age* is `now - created`, and a `created` in the future (clock skew between
//! machines) counts as age 0. Backups are ranked newest first by age; equal ages are
//! ranked by id, the greater id counting as newer (`x.backup-…-2` after `x.backup-…`).
//! The ranking is total, so the input order never matters.
//!
//! # Policies
//!
//! The `keep_last` newest are always kept. Beyond those:
//!
//! - `None`: everything else may go.
//! - `MaxAge`: a backup may go when its age is at least `max_age_days` whole days.
//! - `Staggered`: each backup falls in one bucket by its age, and only the newest backup
//!   of each bucket (among those not already kept by `keep_last`) is kept. Buckets are
//!   half-open age ranges measured back from `now` (age-based, not calendar-based):
//!   - hourly: `[h, h+1)` hours for `h` in `0..24` — the last 24 hours;
//!   - daily: `[d, d+1)` days for `d` in `1..30` — from 24 hours to 30 days;
//!   - weekly: `[30 + 7w, 30 + 7(w+1))` days for `w` in `0..48`, the last one cut short at
//!     365 days — from 30 days to 365 days;
//!   - age of 365 days or more: no bucket, the backup may go.
//!
//!   So a backup exactly 1 hour old is in the second hourly bucket, exactly 24 hours old in
//!   the first daily bucket (day 1), exactly 30 days old in the first weekly bucket, and
//!   exactly 365 days old is expired.
//!
//! # Safety
//!
//! "May go" is only the policy's wish. A backup is deleted only if its version is known
//! and survives anyway: it exists elsewhere (`exists_elsewhere`), or another backup of
//! the same version in this set is kept. A backup of unknown version is never deleted.
//! When every backup of a version that exists nowhere else may go, the newest of them
//! is kept.
//!
//! # Stability
//!
//! For the same `now`, running the decision again on the survivors deletes nothing: the
//! `keep_last` newest and each bucket's newest are survivors themselves and stay what
//! they were, and a version's rescued copy is then its only copy. As `now` moves on,
//! backups age into wider buckets, and a later run thins them further — that is the
//! intent.

use crate::config::{BackupConfig, Retention};
use chrono::{DateTime, Duration, Utc};
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

/// One backup of one file in one location, as the decision needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupItem {
    /// Its identifier, unique within the set; what [`to_delete`] returns.
    pub id: String,
    /// When it was made.
    pub created: DateTime<Utc>,
    /// Its content hash, when known.
    pub version: Option<String>,
}

const HOUR_SECS: i64 = 3600;
const DAY_SECS: i64 = 24 * HOUR_SECS;
const WEEK_SECS: i64 = 7 * DAY_SECS;
const HOURLY_UNTIL_SECS: i64 = DAY_SECS;
const DAILY_UNTIL_SECS: i64 = 30 * DAY_SECS;
const WEEKLY_UNTIL_SECS: i64 = 365 * DAY_SECS;

/// A staggered bucket: a half-open age range whose newest backup is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Bucket {
    /// `[n, n+1)` hours old, `n < 24`.
    Hour(i64),
    /// `[n, n+1)` days old, `1 <= n < 30`.
    Day(i64),
    /// `[30 + 7n, 30 + 7(n+1))` days old, and under 365 days.
    Week(i64),
}

/// The staggered bucket of a backup of this age (`>= 0`); `None` once it is 365 days old.
fn staggered_bucket(age: Duration) -> Option<Bucket> {
    // Every boundary is a whole number of seconds, so flooring the age to whole seconds
    // first does not change which side of a boundary it falls on.
    let secs = age.num_seconds();
    if secs < HOURLY_UNTIL_SECS {
        Some(Bucket::Hour(secs / HOUR_SECS))
    } else if secs < DAILY_UNTIL_SECS {
        Some(Bucket::Day(secs / DAY_SECS))
    } else if secs < WEEKLY_UNTIL_SECS {
        Some(Bucket::Week((secs - DAILY_UNTIL_SECS) / WEEK_SECS))
    } else {
        None
    }
}

/// A backup's age at `now`; one made in the future counts as age 0.
fn age_at(item: &BackupItem, now: DateTime<Utc>) -> Duration {
    now.signed_duration_since(item.created)
        .max(Duration::zero())
}

/// Newest first: the smaller age, then the greater id.
fn newest_first(a: &(Duration, &BackupItem), b: &(Duration, &BackupItem)) -> Ordering {
    a.0.cmp(&b.0).then_with(|| b.1.id.cmp(&a.1.id))
}

/// The backups ranked newest first, each with whether the policy alone keeps it (by rank
/// or by bucket), whatever its version.
fn ranked_by_policy<'i>(
    items: &'i [BackupItem],
    policy: &BackupConfig,
    now: DateTime<Utc>,
) -> (Vec<(Duration, &'i BackupItem)>, Vec<bool>) {
    let mut ranked: Vec<(Duration, &BackupItem)> =
        items.iter().map(|item| (age_at(item, now), item)).collect();
    ranked.sort_by(newest_first);

    let max_age = Duration::days(i64::from(policy.max_age_days));
    let mut seen_buckets = HashSet::new();
    let policy_keeps: Vec<bool> = ranked
        .iter()
        .enumerate()
        .map(|(rank, (age, _))| {
            rank < policy.keep_last
                || match policy.retention {
                    Retention::None => false,
                    Retention::MaxAge => *age < max_age,
                    Retention::Staggered => {
                        staggered_bucket(*age).is_some_and(|bucket| seen_buckets.insert(bucket))
                    }
                }
        })
        .collect();
    (ranked, policy_keeps)
}

/// Whether the policy alone keeps every one of `items` at `now`: then [`to_delete`] deletes
/// nothing whatever their versions are, and the caller need not read any of them (hashing
/// six backups of a 383 MB database took 14 s).
pub fn policy_keeps_all(items: &[BackupItem], policy: &BackupConfig, now: DateTime<Utc>) -> bool {
    ranked_by_policy(items, policy, now)
        .1
        .iter()
        .all(|keep| *keep)
}

/// Decides which of `items` (all backups of ONE file in ONE location, any order) to delete under `policy` at time `now`.
///
/// `exists_elsewhere(hash)` says whether that version also exists outside this set (a
/// current file in any location, or a backup in another location). Returns the ids to
/// delete, oldest first. See the module documentation for the exact rules.
pub fn to_delete(
    items: &[BackupItem],
    policy: &BackupConfig,
    now: DateTime<Utc>,
    exists_elsewhere: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let (ranked, policy_keeps) = ranked_by_policy(items, policy, now);
    let mut kept_versions: HashSet<&str> = ranked
        .iter()
        .zip(&policy_keeps)
        .filter(|(_, keep)| **keep)
        .filter_map(|((_, item), _)| item.version.as_deref())
        .collect();
    let mut elsewhere: HashMap<&str, bool> = HashMap::new();
    let mut doomed = Vec::new();
    // Newest first, so that a version with no other copy keeps its newest backup.
    for ((_, item), keep) in ranked.iter().zip(&policy_keeps) {
        if *keep {
            continue;
        }
        let Some(hash) = item.version.as_deref() else {
            continue;
        };
        let survives = kept_versions.contains(hash)
            || *elsewhere
                .entry(hash)
                .or_insert_with(|| exists_elsewhere(hash));
        if survives {
            doomed.push(item.id.clone());
        } else {
            kept_versions.insert(hash);
        }
    }
    doomed.reverse();
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::collections::BTreeSet;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
    }

    fn policy(retention: Retention, keep_last: usize, max_age_days: u32) -> BackupConfig {
        BackupConfig {
            keep_last,
            retention,
            max_age_days,
            ..BackupConfig::default()
        }
    }

    fn staggered(keep_last: usize) -> BackupConfig {
        policy(Retention::Staggered, keep_last, 90)
    }

    fn items_of(spec: &[(&str, Duration, Option<&str>)]) -> Vec<BackupItem> {
        spec.iter()
            .map(|(id, age, version)| BackupItem {
                id: id.to_string(),
                created: now() - *age,
                version: version.map(str::to_string),
            })
            .collect()
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
    fn s(n: i64) -> Duration {
        Duration::seconds(n)
    }

    struct Case {
        name: &'static str,
        items: Vec<(&'static str, Duration, Option<&'static str>)>,
        policy: BackupConfig,
        elsewhere: Vec<&'static str>,
        deleted: Vec<&'static str>,
    }

    /// Every backup gets its own version, present elsewhere: only the policy decides.
    fn distinct(
        spec: &[(&'static str, Duration)],
    ) -> Vec<(&'static str, Duration, Option<&'static str>)> {
        spec.iter()
            .map(|(id, age)| (*id, *age, Some(*id)))
            .collect()
    }

    fn all_elsewhere(spec: &[(&'static str, Duration)]) -> Vec<&'static str> {
        spec.iter().map(|(id, _)| *id).collect()
    }

    fn cases() -> Vec<Case> {
        let mut cases = Vec::new();
        let mut plain = |name, spec: &[(&'static str, Duration)], config, deleted: &[_]| {
            cases.push(Case {
                name,
                items: distinct(spec),
                policy: config,
                elsewhere: all_elsewhere(spec),
                deleted: deleted.to_vec(),
            })
        };

        // Empty lists and keep_last.
        plain("empty, staggered", &[], staggered(5), &[]);
        plain("empty, max_age", &[], policy(Retention::MaxAge, 0, 1), &[]);
        plain("empty, none", &[], policy(Retention::None, 0, 0), &[]);
        plain(
            "keep_last bigger than the list, none",
            &[("a", d(400)), ("b", d(500)), ("c", h(1))],
            policy(Retention::None, 10, 0),
            &[],
        );
        plain(
            "keep_last bigger than the list, staggered, all expired",
            &[("a", d(400)), ("b", d(500))],
            staggered(3),
            &[],
        );
        plain(
            "keep_last equal to the list",
            &[("a", d(1)), ("b", d(2))],
            policy(Retention::None, 2, 0),
            &[],
        );

        // None.
        plain(
            "none keeps only keep_last, deletes oldest first",
            &[("b1", h(1)), ("b3", h(3)), ("b2", h(2)), ("b4", h(4))],
            policy(Retention::None, 2, 0),
            &["b4", "b3"],
        );
        plain(
            "none with keep_last 0 deletes everything",
            &[("a", m(1)), ("b", m(2))],
            policy(Retention::None, 0, 0),
            &["b", "a"],
        );

        // MaxAge.
        plain(
            "max_age deletes at and beyond the limit",
            &[("a", d(1)), ("b", d(89)), ("c", d(90)), ("d", d(91))],
            policy(Retention::MaxAge, 1, 90),
            &["d", "c"],
        );
        plain(
            "max_age boundary to the second",
            &[("a", d(90) - s(1)), ("b", d(90))],
            policy(Retention::MaxAge, 0, 90),
            &["b"],
        );
        plain(
            "max_age: keep_last protects old backups",
            &[("a", d(100)), ("b", d(200)), ("c", d(300))],
            policy(Retention::MaxAge, 2, 90),
            &["c"],
        );
        plain(
            "max_age 0 days keeps only keep_last",
            &[("a", s(0)), ("b", s(1)), ("c", d(1))],
            policy(Retention::MaxAge, 1, 0),
            &["c", "b"],
        );

        // Staggered.
        plain(
            "staggered: one per hour bucket, the newest",
            &[("m10", m(10)), ("m20", m(20)), ("m50", m(50))],
            staggered(0),
            &["m50", "m20"],
        );
        plain(
            "staggered: keep_last first, then the newest of the rest in a bucket",
            &[("m10", m(10)), ("m20", m(20)), ("m30", m(30))],
            staggered(1),
            &["m30"],
        );
        plain(
            "staggered boundary: exactly 1 h starts the second hour",
            &[("under", h(1) - s(1)), ("at", h(1)), ("end", h(2) - s(1))],
            staggered(0),
            &["end"],
        );
        plain(
            "staggered boundary: exactly 24 h starts day 1",
            &[
                ("under", h(24) - s(1)),
                ("at", h(24)),
                ("end", h(48) - s(1)),
            ],
            staggered(0),
            &["end"],
        );
        plain(
            "staggered boundary: exactly 30 d starts week 0",
            &[
                ("under", d(30) - s(1)),
                ("at", d(30)),
                ("end", d(37) - s(1)),
                ("next", d(37)),
            ],
            staggered(0),
            &["end"],
        );
        plain(
            "staggered boundary: exactly 365 d is expired",
            &[("under", d(365) - s(1)), ("at", d(365)), ("older", d(900))],
            staggered(0),
            &["older", "at"],
        );
        plain(
            "staggered: last weekly bucket is cut short at 365 d",
            &[("w47", d(30 + 7 * 47)), ("w47b", d(364))],
            staggered(0),
            &["w47b"],
        );
        plain(
            "staggered: sub-second ages stay in their bucket",
            &[("a", h(1) - Duration::milliseconds(1)), ("b", m(30))],
            staggered(0),
            &["a"],
        );
        plain(
            "staggered: a realistic spread",
            &[
                ("n1", m(5)),
                ("n2", m(35)),
                ("n3", m(65)),
                ("n4", m(70)),
                ("n5", h(5)),
                ("n6", h(5) + m(10)),
                ("n7", h(30)),
                ("n8", h(40)),
                ("n9", d(3)),
                ("n10", d(40)),
                ("n11", d(41)),
                ("n12", d(50)),
                ("n13", d(400)),
            ],
            staggered(2),
            &["n13", "n11", "n8", "n6", "n4"],
        );

        // Future timestamps count as age 0.
        plain(
            "future backup is the newest",
            &[("future", -h(2)), ("m10", m(10)), ("h3", h(3))],
            policy(Retention::None, 1, 0),
            &["h3", "m10"],
        );
        plain(
            "future backup shares the first hour bucket",
            &[("future", -d(3)), ("m10", m(10))],
            staggered(0),
            &["m10"],
        );
        plain(
            "future backups tie at age 0, the greater id is newer",
            &[("x-1", -h(1)), ("x-2", -d(2)), ("x", s(0))],
            policy(Retention::None, 1, 0),
            &["x", "x-1"],
        );
        plain(
            "future backup is not expired under max_age",
            &[("future", -d(400)), ("old", d(10))],
            policy(Retention::MaxAge, 0, 5),
            &["old"],
        );

        // Safety: the only copy of a version is kept.
        cases.push(Case {
            name: "only copy kept although the policy deletes it",
            items: vec![("a", h(1), Some("v1")), ("b", h(2), Some("v2"))],
            policy: policy(Retention::None, 0, 0),
            elsewhere: vec!["v2"],
            deleted: vec!["b"],
        });
        cases.push(Case {
            name: "only copy kept although expired",
            items: vec![("a", m(1), Some("v1")), ("b", d(500), Some("v2"))],
            policy: staggered(0),
            elsewhere: vec![],
            deleted: vec![],
        });
        cases.push(Case {
            name: "duplicate versions, none kept by policy: the newest copy stays",
            items: vec![
                ("a", h(1), Some("v")),
                ("b", h(2), Some("v")),
                ("c", h(3), Some("v")),
            ],
            policy: policy(Retention::None, 0, 0),
            elsewhere: vec![],
            deleted: vec!["c", "b"],
        });
        cases.push(Case {
            name: "duplicate versions, one kept by keep_last: the other goes",
            items: vec![("a", h(1), Some("v")), ("b", h(2), Some("v"))],
            policy: policy(Retention::None, 1, 0),
            elsewhere: vec![],
            deleted: vec!["b"],
        });
        cases.push(Case {
            name: "duplicate versions, the older one kept by a bucket: the newer one goes",
            items: vec![
                ("keep", m(10), Some("w")),
                ("dup", m(20), Some("v")),
                ("rep", h(5), Some("v")),
            ],
            policy: staggered(0),
            elsewhere: vec![],
            deleted: vec!["dup"],
        });
        cases.push(Case {
            name: "staggered: a bucket keeps its newest and the only copy of another version",
            items: vec![
                ("rep", m(10), Some("v1")),
                ("lone", m(20), Some("v2")),
                ("dup", m(30), Some("v1")),
                ("else", m(40), Some("v3")),
            ],
            policy: staggered(0),
            elsewhere: vec!["v3"],
            deleted: vec!["else", "dup"],
        });
        cases.push(Case {
            name: "unknown version is never deleted",
            items: vec![
                ("a", h(1), None),
                ("b", d(900), None),
                ("c", d(2), Some("v")),
            ],
            policy: policy(Retention::None, 0, 0),
            elsewhere: vec!["v"],
            deleted: vec!["c"],
        });
        cases.push(Case {
            name: "unknown version still represents its bucket",
            items: vec![("u", m(10), None), ("k", m(20), Some("v"))],
            policy: staggered(0),
            elsewhere: vec!["v"],
            deleted: vec!["k"],
        });
        cases
    }

    #[test]
    fn retention_table() {
        let mut failures = Vec::new();
        for case in cases() {
            let items = items_of(&case.items);
            let elsewhere: HashSet<&str> = case.elsewhere.iter().copied().collect();
            let got = to_delete(&items, &case.policy, now(), &|h| elsewhere.contains(h));
            if got != case.deleted {
                failures.push(format!(
                    "{}: expected {:?}, got {:?}",
                    case.name, case.deleted, got
                ));
            }
            // Input order never matters.
            let mut reversed = items.clone();
            reversed.reverse();
            let again = to_delete(&reversed, &case.policy, now(), &|h| elsewhere.contains(h));
            if again != got {
                failures.push(format!("{}: depends on input order", case.name));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// `policy_keeps_all` is true exactly when nothing would go even if every version
    /// survived elsewhere (the most `to_delete` can delete): the caller skips reading the
    /// versions only when they cannot matter.
    #[test]
    fn policy_keeps_all_exactly_when_no_version_could_let_one_go() {
        let mut both = [0, 0];
        for case in cases() {
            let items: Vec<BackupItem> = items_of(&case.items)
                .into_iter()
                .map(|mut i| {
                    i.version = Some(i.id.clone());
                    i
                })
                .collect();
            let most = to_delete(&items, &case.policy, now(), &|_| true);
            let all_kept = policy_keeps_all(&items, &case.policy, now());
            assert_eq!(all_kept, most.is_empty(), "{}", case.name);
            both[usize::from(all_kept)] += 1;
        }
        assert!(
            both[0] > 0 && both[1] > 0,
            "the table has both kinds: {both:?}"
        );
    }

    #[test]
    fn retention_asks_elsewhere_once_per_version() {
        let items = items_of(&[
            ("a", d(1), Some("v")),
            ("b", d(2), Some("v")),
            ("c", d(3), Some("w")),
        ]);
        let calls = std::cell::RefCell::new(Vec::new());
        let got = to_delete(&items, &policy(Retention::None, 0, 0), now(), &|h| {
            calls.borrow_mut().push(h.to_string());
            true
        });
        assert_eq!(got, vec!["c", "b", "a"]);
        let mut calls = calls.into_inner();
        calls.sort();
        assert_eq!(calls, vec!["v", "w"]);
    }

    /// xorshift64: deterministic, no crates.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    /// An age in seconds (negative: in the future), clustered around the interesting spots.
    fn random_age_secs(rng: &mut XorShift) -> i64 {
        const BOUNDARIES: [i64; 6] = [
            HOUR_SECS,
            2 * HOUR_SECS,
            DAY_SECS,
            30 * DAY_SECS,
            37 * DAY_SECS,
            365 * DAY_SECS,
        ];
        let r = rng.below(100) as i64;
        match rng.below(7) {
            0 => -(1 + rng.below(3 * DAY_SECS as u64) as i64),
            1 => rng.below(2 * HOUR_SECS as u64) as i64,
            2 => rng.below(3 * DAY_SECS as u64) as i64,
            3 => rng.below(60 * DAY_SECS as u64) as i64,
            4 => rng.below(400 * DAY_SECS as u64) as i64,
            5 => BOUNDARIES[rng.below(6) as usize] + (r % 3) - 1,
            _ => r,
        }
    }

    fn random_case(rng: &mut XorShift) -> (Vec<BackupItem>, BackupConfig, HashSet<String>) {
        let n = rng.below(30) as usize;
        let pool = 1 + rng.below(8);
        let mut ages: Vec<i64> = Vec::new();
        let mut items = Vec::new();
        for i in 0..n {
            let age = if !ages.is_empty() && rng.chance(10) {
                ages[rng.below(ages.len() as u64) as usize]
            } else {
                random_age_secs(rng)
            };
            ages.push(age);
            let version = if rng.chance(10) {
                None
            } else {
                Some(format!("v{}", rng.below(pool)))
            };
            items.push(BackupItem {
                // Unique, and in an order unrelated to the ages.
                id: format!("b{}", rng.below(100) * 100 + i as u64),
                created: now() - Duration::seconds(age)
                    + Duration::milliseconds(rng.below(1000) as i64),
                version,
            });
        }
        let retention = match rng.below(3) {
            0 => Retention::None,
            1 => Retention::MaxAge,
            _ => Retention::Staggered,
        };
        let config = policy(retention, rng.below(7) as usize, rng.below(400) as u32);
        let elsewhere = (0..pool)
            .filter(|_| rng.chance(50))
            .map(|v| format!("v{v}"))
            .collect();
        (items, config, elsewhere)
    }

    /// The staggered bucket, restated independently of the code under test.
    fn bucket_label(age_secs: i64) -> Option<(u8, i64)> {
        let hours = age_secs / 3600;
        let days = age_secs / 86_400;
        match days {
            0 => Some((0, hours)),
            1..=29 => Some((1, days)),
            30..=364 => Some((2, (days - 30) / 7)),
            _ => None,
        }
    }

    #[test]
    fn retention_properties_on_random_lists() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for round in 0..500 {
            let (items, config, elsewhere) = random_case(&mut rng);
            let there = |h: &str| elsewhere.contains(h);
            let deleted = to_delete(&items, &config, now(), &there);
            let ctx = format!(
                "round {round}: {config:?} {items:?} elsewhere {elsewhere:?} deleted {deleted:?}"
            );
            let age = |item: &BackupItem| (now() - item.created).max(Duration::zero());
            let created_of = |id: &str| items.iter().find(|i| i.id == id).unwrap().created;

            // Ids are real, unique, oldest first.
            let deleted_set: BTreeSet<&str> = deleted.iter().map(String::as_str).collect();
            assert_eq!(deleted_set.len(), deleted.len(), "{ctx}");
            assert!(
                deleted
                    .windows(2)
                    .all(|w| created_of(&w[0]).min(now()) <= created_of(&w[1]).min(now())),
                "not oldest first: {ctx}"
            );
            let survivors: Vec<BackupItem> = items
                .iter()
                .filter(|i| !deleted_set.contains(i.id.as_str()))
                .cloned()
                .collect();
            assert_eq!(survivors.len() + deleted.len(), items.len(), "{ctx}");

            // Idempotence.
            assert!(
                to_delete(&survivors, &config, now(), &there).is_empty(),
                "second run deletes more: {ctx}"
            );

            // Input order never matters.
            let mut shuffled = items.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.below(i as u64 + 1) as usize);
            }
            assert_eq!(
                to_delete(&shuffled, &config, now(), &there),
                deleted,
                "{ctx}"
            );

            // The keep_last newest survive: nothing deleted has fewer than keep_last
            // backups at least as new as itself.
            for id in &deleted {
                let d_age = age(items.iter().find(|i| &i.id == id).unwrap());
                let as_new = items
                    .iter()
                    .filter(|i| &i.id != id && age(i) <= d_age)
                    .count();
                assert!(as_new >= config.keep_last, "{id} is a keep_last: {ctx}");
            }

            // No version loses its last copy; unknown versions all survive.
            for item in &items {
                match &item.version {
                    None => assert!(!deleted_set.contains(item.id.as_str()), "{ctx}"),
                    Some(v) => assert!(
                        there(v) || survivors.iter().any(|s| s.version.as_ref() == Some(v)),
                        "version {v} lost: {ctx}"
                    ),
                }
            }

            // Nothing is kept without a reason, and staggered keeps at most one per bucket
            // among the survivors that are not protected.
            let mut ranked: Vec<&BackupItem> = survivors.iter().collect();
            ranked.sort_by(|a, b| age(a).cmp(&age(b)).then_with(|| b.id.cmp(&a.id)));
            let mut per_bucket: HashMap<(u8, i64), usize> = HashMap::new();
            for (rank, item) in ranked.iter().enumerate() {
                let protected = rank < config.keep_last
                    || match &item.version {
                        None => true,
                        Some(v) => {
                            !there(v)
                                && survivors
                                    .iter()
                                    .filter(|s| s.version.as_ref() == Some(v))
                                    .count()
                                    == 1
                        }
                    };
                if protected {
                    continue;
                }
                match config.retention {
                    Retention::None => panic!("{} kept under none: {ctx}", item.id),
                    Retention::MaxAge => assert!(
                        age(item) < Duration::days(i64::from(config.max_age_days)),
                        "{} kept past max age: {ctx}",
                        item.id
                    ),
                    Retention::Staggered => {
                        let label = bucket_label(age(item).num_seconds())
                            .unwrap_or_else(|| panic!("{} kept expired: {ctx}", item.id));
                        let count = per_bucket.entry(label).or_default();
                        *count += 1;
                        assert!(*count <= 1, "two kept in bucket {label:?}: {ctx}");
                    }
                }
            }
        }
    }
}
