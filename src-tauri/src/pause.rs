//! Pausing: *for 1 hour*, *until tomorrow*, *until resumed*, and *while on battery power*.
//! Everything here is a pure function of the settings, a clock reading and the power source
//! (tested below with a fixed clock and a fake `/sys/class/power_supply`); the scheduler's
//! loop calls [`PauseSettings::paused`] on every poll and sets the run queue's paused flag
//! from it.
//!
//! **Until tomorrow** means 08:00 local time on the next calendar day — or, before 04:00,
//! 08:00 of the same day: a pause chosen at 01:30 "until tomorrow" ends in the morning after
//! that night, not 30 hours later. Where 08:00 does not exist that day (a daylight-saving
//! jump), the first valid time after it.
//!
//! **On battery**: Linux reads `/sys/class/power_supply/*/` — any `Mains`/`USB` supply with
//! `online` = 1 means mains power; otherwise, with a system battery (`type` = `Battery`,
//! `scope` not `Device`, which is a mouse's or a headset's), an external supply that is
//! offline or a battery whose `status` is `Discharging` means battery. No system battery at
//! all is a desktop: mains. macOS asks `pmset -g batt`, which reports
//! IOKit's power sources (`IOPSCopyPowerSourcesInfo`) — the C API itself would take `unsafe`
//! FFI or a crate for one line of information.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The hour "until tomorrow" ends at, local time.
pub const MORNING_HOUR: u32 = 8;
/// Before this hour, "tomorrow" is the coming morning of the same calendar day.
pub const NIGHT_ENDS_HOUR: u32 = 4;
/// Where Linux lists power supplies.
pub const LINUX_POWER_SUPPLY: &str = "/sys/class/power_supply";

/// A pause the user chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseFor {
    /// One hour from now.
    Hour,
    /// Until [`MORNING_HOUR`] tomorrow (see the module's notes).
    Tomorrow,
    /// Until the user resumes.
    Resumed,
}

/// When the user's pause ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "at")]
pub enum Until {
    /// At that moment.
    Time(DateTime<Utc>),
    /// When the user resumes.
    Resumed,
}

/// Where power comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Power {
    /// Mains (or no battery at all).
    Mains,
    /// A battery, discharging.
    Battery,
    /// Could not be read.
    Unknown,
}

/// Why scheduled runs are paused now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "until")]
pub enum Paused {
    /// The user paused, until then.
    User(Until),
    /// Running on battery, and the user asked to pause then.
    Battery,
}

/// The pause settings the app keeps (and saves, so a restart keeps them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseSettings {
    /// The user's pause, if any.
    #[serde(default)]
    pub user: Option<Until>,
    /// Pause scheduled runs while on battery power.
    #[serde(default)]
    pub on_battery: bool,
}

/// When a pause chosen at `now` ends.
pub fn until<Tz: TimeZone>(choice: PauseFor, now: &DateTime<Tz>) -> Until {
    match choice {
        PauseFor::Hour => Until::Time(now.to_utc() + Duration::hours(1)),
        PauseFor::Tomorrow => Until::Time(next_morning(now)),
        PauseFor::Resumed => Until::Resumed,
    }
}

/// The next "tomorrow morning" after `now`, in `now`'s time zone.
pub fn next_morning<Tz: TimeZone>(now: &DateTime<Tz>) -> DateTime<Utc> {
    let local = now.naive_local();
    let night = local.time() < hm(NIGHT_ENDS_HOUR, 0);
    let day = if night {
        local.date()
    } else {
        local.date() + Duration::days(1)
    };
    // A daylight-saving gap can swallow 08:00: the first valid quarter hour after it.
    let tz = now.timezone();
    (0..=16)
        .map(|q| day.and_time(hm(MORNING_HOUR, 0)) + Duration::minutes(15 * q))
        .find_map(|t| tz.from_local_datetime(&t).earliest())
        .map(|t| t.to_utc())
        .unwrap_or_else(|| now.to_utc() + Duration::hours(24))
}

fn hm(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).unwrap_or(NaiveTime::MIN)
}

impl PauseSettings {
    /// Why scheduled runs are paused at `now` with this power source, if they are. A user
    /// pause whose time has come is over (see [`PauseSettings::expire`]).
    pub fn paused(&self, now: DateTime<Utc>, power: Power) -> Option<Paused> {
        match self.user {
            Some(Until::Time(t)) if now < t => return Some(Paused::User(Until::Time(t))),
            Some(Until::Resumed) => return Some(Paused::User(Until::Resumed)),
            _ => {}
        }
        (self.on_battery && power == Power::Battery).then_some(Paused::Battery)
    }

    /// Forgets a user pause that has ended at `now`; whether it did.
    pub fn expire(&mut self, now: DateTime<Utc>) -> bool {
        match self.user {
            Some(Until::Time(t)) if now >= t => {
                self.user = None;
                true
            }
            _ => false,
        }
    }
}

/// Words for a pause, times in `now`'s time zone: "Paused until 14:05", "Paused until
/// tomorrow 08:00", "Paused until resumed", "Paused while on battery power".
pub fn label<Tz: TimeZone>(paused: Paused, now: &DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    match paused {
        Paused::Battery => "Paused while on battery power".to_string(),
        Paused::User(Until::Resumed) => "Paused until resumed".to_string(),
        Paused::User(Until::Time(t)) => {
            let end = t.with_timezone(&now.timezone());
            let days = (end.date_naive() - now.date_naive()).num_days();
            let time = end.format("%H:%M");
            match days {
                0 => format!("Paused until {time}"),
                1 => format!("Paused until tomorrow {time}"),
                _ => format!("Paused until {} {time}", end.format("%Y-%m-%d")),
            }
        }
    }
}

/// The power source as Linux's `power_supply` class folder (`dir`) describes it.
pub fn linux_power(dir: &Path) -> Power {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Power::Unknown;
    };
    let read = |p: &Path, name: &str| {
        std::fs::read_to_string(p.join(name))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let (mut external, mut online, mut battery, mut discharging) = (false, false, false, false);
    for supply in entries.flatten().map(|e| e.path()) {
        match read(&supply, "type").as_str() {
            "Battery" if read(&supply, "scope") != "Device" => {
                battery = true;
                discharging |= read(&supply, "status") == "Discharging";
            }
            "Battery" => {}
            // Mains, USB, USB_C, Wireless...: an external supply.
            _ => {
                external = true;
                online |= read(&supply, "online") == "1";
            }
        }
    }
    // Unplugged, a full battery may still say "Full" or "Not charging" for a while.
    if online || !battery {
        Power::Mains
    } else if discharging || external {
        Power::Battery
    } else {
        Power::Mains
    }
}

/// The power source from `pmset -g batt`'s output ("Now drawing from 'Battery Power'").
pub fn pmset_power(text: &str) -> Power {
    if text.contains("'Battery Power'") {
        Power::Battery
    } else if text.contains("'AC Power'") || text.contains("'UPS Power'") {
        Power::Mains
    } else {
        Power::Unknown
    }
}

/// The power source now. `METASYNC_POWER_SUPPLY` names another folder to read on Linux
/// (the end-to-end tests use a fake one).
pub fn power_now() -> Power {
    #[cfg(target_os = "macos")]
    return std::process::Command::new("/usr/bin/pmset")
        .args(["-g", "batt"])
        .output()
        .map(|o| pmset_power(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or(Power::Unknown);
    #[cfg(not(target_os = "macos"))]
    {
        let dir = std::env::var_os("METASYNC_POWER_SUPPLY")
            .filter(|d| !d.is_empty())
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| LINUX_POWER_SUPPLY.into());
        linux_power(&dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn at(offset_h: i32, s: &str) -> DateTime<FixedOffset> {
        let tz = FixedOffset::east_opt(offset_h * 3600).unwrap_or_else(|| panic!("offset"));
        let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
            .unwrap_or_else(|e| panic!("{s}: {e}"));
        tz.from_local_datetime(&naive)
            .single()
            .unwrap_or_else(|| panic!("{s}"))
    }

    #[test]
    fn when_each_pause_ends() {
        // (zone, now, choice, local end or None for "until resumed")
        let cases = [
            (
                0,
                "2026-03-10 14:05",
                PauseFor::Hour,
                Some("2026-03-10 15:05"),
            ),
            (
                2,
                "2026-03-10 23:30",
                PauseFor::Hour,
                Some("2026-03-11 00:30"),
            ),
            (
                2,
                "2026-03-10 14:05",
                PauseFor::Tomorrow,
                Some("2026-03-11 08:00"),
            ),
            (
                2,
                "2026-03-10 23:59",
                PauseFor::Tomorrow,
                Some("2026-03-11 08:00"),
            ),
            (
                -5,
                "2026-03-10 08:00",
                PauseFor::Tomorrow,
                Some("2026-03-11 08:00"),
            ),
            // Late at night "tomorrow" is the coming morning.
            (
                9,
                "2026-03-11 01:30",
                PauseFor::Tomorrow,
                Some("2026-03-11 08:00"),
            ),
            (
                9,
                "2026-03-11 03:59",
                PauseFor::Tomorrow,
                Some("2026-03-11 08:00"),
            ),
            (
                9,
                "2026-03-11 04:00",
                PauseFor::Tomorrow,
                Some("2026-03-12 08:00"),
            ),
            // Month and year ends.
            (
                0,
                "2026-12-31 20:00",
                PauseFor::Tomorrow,
                Some("2027-01-01 08:00"),
            ),
            (
                1,
                "2026-02-28 12:00",
                PauseFor::Tomorrow,
                Some("2026-03-01 08:00"),
            ),
            (0, "2026-03-10 14:05", PauseFor::Resumed, None),
        ];
        for (zone, now, choice, want) in cases {
            let now_t = at(zone, now);
            let got = until(choice, &now_t);
            let want = match want {
                Some(w) => Until::Time(at(zone, w).to_utc()),
                None => Until::Resumed,
            };
            assert_eq!(got, want, "{choice:?} at {now} (UTC{zone:+})");
        }
    }

    #[test]
    fn paused_by_the_user_until_the_time_comes() {
        let t0 = at(0, "2026-03-10 14:05").to_utc();
        let mut s = PauseSettings {
            user: Some(until(PauseFor::Hour, &t0)),
            on_battery: false,
        };
        let end = t0 + Duration::hours(1);
        let minute = Duration::minutes(1);
        assert_eq!(
            s.paused(t0, Power::Mains),
            Some(Paused::User(Until::Time(end)))
        );
        assert!(s.paused(end - minute, Power::Unknown).is_some());
        assert_eq!(s.paused(end, Power::Mains), None, "over at the hour");
        assert!(!s.expire(end - minute), "not over yet");
        assert!(s.expire(end));
        assert_eq!(s.user, None);
        assert!(!s.expire(end + minute), "expired once");
        s.user = Some(Until::Resumed);
        let years = end + Duration::days(3650);
        assert_eq!(
            s.paused(years, Power::Mains),
            Some(Paused::User(Until::Resumed))
        );
        assert!(!s.expire(years), "until resumed never ends by itself");
    }

    #[test]
    fn battery_pauses_only_when_asked_and_on_battery() {
        let now = at(0, "2026-03-10 14:05").to_utc();
        let cases = [
            (false, Power::Battery, None),
            (true, Power::Battery, Some(Paused::Battery)),
            (true, Power::Mains, None),
            (true, Power::Unknown, None),
        ];
        for (on_battery, power, want) in cases {
            let s = PauseSettings {
                user: None,
                on_battery,
            };
            assert_eq!(s.paused(now, power), want, "{on_battery} {power:?}");
        }
        // The user's pause is named first: it says when it ends.
        let s = PauseSettings {
            user: Some(Until::Resumed),
            on_battery: true,
        };
        assert_eq!(
            s.paused(now, Power::Battery),
            Some(Paused::User(Until::Resumed))
        );
        // An elapsed user pause leaves the battery one.
        let s = PauseSettings {
            user: Some(Until::Time(now - Duration::seconds(1))),
            on_battery: true,
        };
        assert_eq!(s.paused(now, Power::Battery), Some(Paused::Battery));
    }

    #[test]
    fn labels_say_when() {
        let now = at(2, "2026-03-10 14:05");
        let label_for = |choice| label(Paused::User(until(choice, &now)), &now);
        assert_eq!(label_for(PauseFor::Hour), "Paused until 15:05");
        assert_eq!(label_for(PauseFor::Tomorrow), "Paused until tomorrow 08:00");
        assert_eq!(label_for(PauseFor::Resumed), "Paused until resumed");
        assert_eq!(
            label(Paused::Battery, &now),
            "Paused while on battery power"
        );
        let late = at(2, "2026-03-10 23:30");
        assert_eq!(
            label(Paused::User(until(PauseFor::Hour, &late)), &late),
            "Paused until tomorrow 00:30"
        );
        let far = Until::Time(at(2, "2026-03-20 09:00").to_utc());
        assert_eq!(
            label(Paused::User(far), &now),
            "Paused until 2026-03-20 09:00"
        );
    }

    /// A fake `/sys/class/power_supply`: (name, [(attribute, value)]).
    fn supplies(list: &[(&str, &[(&str, &str)])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for (name, attrs) in list {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
            for (k, v) in *attrs {
                std::fs::write(d.join(k), format!("{v}\n")).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        dir
    }

    #[test]
    fn linux_power_supply_table() {
        let ac = |online: &'static str| vec![("type", "Mains"), ("online", online)];
        let bat = |status: &'static str| {
            vec![("type", "Battery"), ("status", status), ("scope", "System")]
        };
        let mouse = vec![
            ("type", "Battery"),
            ("status", "Discharging"),
            ("scope", "Device"),
        ];
        let usb_c = vec![("type", "USB"), ("online", "1")];
        type Case<'a> = (&'a str, Vec<(&'a str, Vec<(&'a str, &'a str)>)>, Power);
        let cases: Vec<Case> = vec![
            (
                "laptop on mains",
                vec![("AC", ac("1")), ("BAT0", bat("Charging"))],
                Power::Mains,
            ),
            (
                "laptop unplugged",
                vec![("AC", ac("0")), ("BAT0", bat("Discharging"))],
                Power::Battery,
            ),
            (
                "full, plugged in",
                vec![("AC", ac("1")), ("BAT0", bat("Full"))],
                Power::Mains,
            ),
            (
                "full, unplugged a moment ago",
                vec![("AC", ac("0")), ("BAT0", bat("Full"))],
                Power::Battery,
            ),
            (
                "battery only, not charging",
                vec![("BAT0", bat("Not charging"))],
                Power::Mains,
            ),
            (
                "two batteries, one draining",
                vec![
                    ("AC", ac("0")),
                    ("BAT0", bat("Unknown")),
                    ("BAT1", bat("Discharging")),
                ],
                Power::Battery,
            ),
            (
                "charging over USB-C",
                vec![("ucsi-source-psy-1", usb_c), ("BAT0", bat("Discharging"))],
                Power::Mains,
            ),
            (
                "desktop with a wireless mouse",
                vec![("hidpp_battery_0", mouse.clone())],
                Power::Mains,
            ),
            ("desktop with nothing", vec![], Power::Mains),
            (
                "battery without a scope file",
                vec![("BAT0", vec![("type", "Battery"), ("status", "Discharging")])],
                Power::Battery,
            ),
        ];
        for (what, list, want) in cases {
            let refs: Vec<(&str, &[(&str, &str)])> =
                list.iter().map(|(n, a)| (*n, a.as_slice())).collect();
            let dir = supplies(&refs);
            assert_eq!(linux_power(dir.path()), want, "{what}");
        }
        assert_eq!(
            linux_power(Path::new("/nonexistent/power_supply")),
            Power::Unknown
        );
    }

    #[test]
    fn pmset_output() {
        let battery = "Now drawing from 'Battery Power'\n -InternalBattery-0 (id=1234)\t87%; discharging; 5:12 remaining present: true\n";
        let ac = "Now drawing from 'AC Power'\n -InternalBattery-0 (id=1234)\t100%; charged; 0:00 remaining present: true\n";
        assert_eq!(pmset_power(battery), Power::Battery);
        assert_eq!(pmset_power(ac), Power::Mains);
        assert_eq!(pmset_power(""), Power::Unknown);
    }

    #[test]
    fn settings_round_trip_as_json() {
        let t = at(0, "2026-03-10 14:05").to_utc();
        for s in [
            PauseSettings::default(),
            PauseSettings {
                user: Some(Until::Time(t)),
                on_battery: true,
            },
            PauseSettings {
                user: Some(Until::Resumed),
                on_battery: false,
            },
        ] {
            let text = serde_json::to_string(&s).unwrap_or_else(|e| panic!("{e}"));
            let back: PauseSettings = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, s, "{text}");
        }
        let old: PauseSettings = serde_json::from_str("{}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(old, PauseSettings::default());
    }
}
