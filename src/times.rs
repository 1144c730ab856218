//! File times as `i128` nanoseconds since the Unix epoch.
//!
//! A file's mtime is whatever its owner set: `touch -d 9999-12-31`, a FAT drive's 1980, an
//! NTFS 1601, a pre-1970 time with a fractional second (`st_mtime = -1`,
//! `st_mtime_nsec = 500_000_000`). `i64` nanoseconds end in 2262, so every file time is kept
//! as `i128` nanoseconds: exact over the whole `i64` seconds range the kernel can report,
//! totally ordered (plan's and merge's `newest`), and converted back to the very same
//! `SystemTime` when a copy is given its source's mtime. Times this program takes from its own
//! clock (`scanned_ns`, stored as SQLite integers) stay `i64`: they are "now".

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const NS_PER_SEC: i128 = 1_000_000_000;

/// Nanoseconds since the epoch of a `stat` time (`st_mtime`, `st_mtime_nsec`): `secs` may be
/// negative, `nsec` is always the positive part of the second.
pub fn ns_of(secs: i64, nsec: i64) -> i128 {
    i128::from(secs) * NS_PER_SEC + i128::from(nsec)
}

/// Nanoseconds since the epoch of a `SystemTime`, before 1970 included.
pub fn ns_of_system_time(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// The `SystemTime` of `ns`, exactly for every time a file system reports (whole seconds
/// within `i64`); beyond that, clamped to the `i64` seconds range.
pub fn system_time(ns: i128) -> SystemTime {
    let secs = ns.div_euclid(NS_PER_SEC);
    let nsec = ns.rem_euclid(NS_PER_SEC) as u64; // 0..1e9
    let secs = secs.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    let whole = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    // Unix's SystemTime holds any i64 seconds with their nanoseconds: only a platform with
    // a narrower one lands here, and then on its nearest representable end.
    let whole = whole.unwrap_or(if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(u32::MAX.into())
    } else {
        UNIX_EPOCH
    });
    whole
        .checked_add(Duration::from_nanos(nsec))
        .unwrap_or(whole)
}

/// RFC 3339 (local offset, whole seconds) of `ns`; in UTC where the local offset has seconds,
/// in the years 0 and 9999, and beyond (past what chrono can show, about ±262,000 years, as
/// its first or last second).
pub fn rfc3339(ns: i128) -> String {
    use chrono::{DateTime, Utc};
    let secs = ns.div_euclid(NS_PER_SEC);
    let nsec = ns.rem_euclid(NS_PER_SEC) as u32;
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| DateTime::<Utc>::from_timestamp(s, nsec))
        .unwrap_or(if secs < 0 {
            DateTime::<Utc>::MIN_UTC
        } else {
            DateTime::<Utc>::MAX_UTC
        });
    // RFC 3339 has four-digit years: a time a local offset could take out of them (and any
    // time beyond them) is shown in UTC.
    if !(1..=9998).contains(&chrono::Datelike::year(&t)) {
        return t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    }
    let local = t.with_timezone(&chrono::Local);
    // An offset RFC 3339 cannot write (local mean time before time zones: +09:18:59) too.
    if chrono::Offset::fix(local.offset()).local_minus_utc() % 60 != 0 {
        return t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    }
    local.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// Now, in nanoseconds since the epoch (`i64`: until 2262).
pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn ns_at(rfc: &str) -> i128 {
        let t = DateTime::parse_from_rfc3339(rfc)
            .unwrap()
            .with_timezone(&Utc);
        ns_of(t.timestamp(), i64::from(t.timestamp_subsec_nanos()))
    }

    #[test]
    fn stat_pairs_before_1970_count_the_fraction_forward() {
        // 1969-12-31T23:59:59.5Z as stat reports it: -1 s and +0.5 s.
        assert_eq!(ns_of(-1, 500_000_000), -500_000_000);
        assert_eq!(ns_at("1969-12-31T23:59:59.5Z"), -500_000_000);
        assert_eq!(ns_of(0, 0), 0);
    }

    #[test]
    fn system_time_round_trips_exactly_from_1601_to_9999_and_beyond_2262() {
        for rfc in [
            "1601-01-01T00:00:00Z",
            "1601-01-01T00:00:00.000000001Z",
            "1901-12-13T20:45:52.999999999Z",
            "1969-12-31T23:59:59.5Z",
            "1970-01-01T00:00:00Z",
            "2262-04-11T23:47:16.854775808Z", // one ns past i64 ns
            "2300-01-01T12:00:00.123456789Z",
            "9999-12-31T23:59:59.999999999Z",
        ] {
            let ns = ns_at(rfc);
            let t = system_time(ns);
            assert_eq!(ns_of_system_time(t), ns, "{rfc}");
        }
        // The extremes a stat can report.
        for (secs, nsec) in [(i64::MAX, 999_999_999), (i64::MIN + 1, 0), (-1, 1)] {
            let ns = ns_of(secs, nsec);
            assert_eq!(ns_of_system_time(system_time(ns)), ns, "{secs}.{nsec}");
        }
    }

    #[test]
    fn order_holds_across_the_whole_range() {
        let times: Vec<i128> = [
            "1601-01-01T00:00:00Z",
            "1969-12-31T23:59:59.5Z",
            "2024-06-01T00:00:00Z",
            "2300-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
        ]
        .iter()
        .map(|r| ns_at(r))
        .collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    }

    #[test]
    fn rfc3339_shows_the_instant_in_any_range() {
        for rfc in [
            "1601-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2300-01-01T12:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            let shown = rfc3339(ns_at(rfc));
            let back = DateTime::parse_from_rfc3339(&shown)
                .unwrap_or_else(|e| panic!("{shown}: {e}"))
                .with_timezone(&Utc);
            assert_eq!(back.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), rfc);
        }
        // Whole seconds, rounded down also before 1970.
        assert!(
            rfc3339(-500_000_000).contains(":59"),
            "{}",
            rfc3339(-500_000_000)
        );
        // Beyond chrono: no panic, the edge of its range.
        assert!(!rfc3339(ns_of(i64::MAX, 0)).is_empty());
        assert!(!rfc3339(ns_of(i64::MIN, 0)).is_empty());
        assert!(!rfc3339(i128::MAX).is_empty());
        assert!(!rfc3339(i128::MIN).is_empty());
    }
}
