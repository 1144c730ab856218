//! Engine events → native notifications: **one per run that found something**, grouped
//! ("2 conflicts, 1 refused database"), none when a run merely succeeded, none for what was
//! already announced (a standing conflict, a failure that repeats every tick); and one for a
//! backup the user restored. The texts are pure functions; `alerts::show` puts them on the desktop.
//!
//! A click on a notification opens the panel where the problem is ([`Target`]). Linux: the
//! notification carries a default action through the desktop's notification service (D-Bus,
//! `org.freedesktop.Notifications`); GNOME and KDE invoke it on a click on the body, dunst on
//! a middle click (or a left click with `mouse_left_click = do_action`). macOS: the
//! notification plugin reports no clicks, so there a click only brings the app forward; the
//! tray's *Conflicts (n)* submenu opens the panel on a conflict on every platform.

use metasync::words::plural;
use metasync::Event;
use serde::Serialize;
use std::collections::HashSet;

/// Where the panel opens for a notification or a tray item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "section", content = "file", rename_all = "snake_case")]
pub enum Target {
    /// The conflict on that file.
    Conflict(String),
    /// That file's timeline (a refused version is listed there).
    Timeline(String),
    /// The recent runs (a failure).
    Runs,
}

/// A notification to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The bold line.
    pub title: String,
    /// The rest.
    pub body: String,
    /// Where a click opens the panel, if anywhere.
    pub target: Option<Target>,
}

/// What one engine call found worth telling, after leaving out what was told before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// New conflicts: (file, reason, rows held for the user).
    pub conflicts: Vec<(String, String, usize)>,
    /// Refused corrupt versions: (file, location).
    pub refused: Vec<(String, String)>,
    /// The call's error, if it failed.
    pub failure: Option<String>,
}

/// The one notice for a run's findings, or none when it found nothing: the title counts
/// ("Sync failed, 2 conflicts, 1 refused database"), the body says which files.
pub fn run_notice(f: &Findings) -> Option<Notice> {
    let mut parts = Vec::new();
    if f.failure.is_some() {
        parts.push("sync failed".to_string());
    }
    if !f.conflicts.is_empty() {
        parts.push(plural(f.conflicts.len() as u64, "conflict"));
    }
    if !f.refused.is_empty() {
        parts.push(plural(f.refused.len() as u64, "refused database"));
    }
    let mut title = parts.join(", ");
    title = capitalised(&title)?;
    let mut lines = Vec::new();
    if let Some(e) = &f.failure {
        lines.push(e.clone());
    }
    for (file, reason, rows) in &f.conflicts {
        let rows = match rows {
            0 => String::new(),
            n => format!(" — {} to choose", plural(*n as u64, "row")),
        };
        lines.push(format!("{file}: {reason}{rows}"));
    }
    for (file, location) in &f.refused {
        lines.push(format!(
            "{file} in {location} failed its integrity check and was not used"
        ));
    }
    let target = match (f.conflicts.first(), f.refused.first()) {
        (Some((file, ..)), _) => Some(Target::Conflict(file.clone())),
        (None, Some((file, _))) => Some(Target::Timeline(file.clone())),
        (None, None) => Some(Target::Runs),
    };
    Some(Notice {
        title,
        body: lines.join("\n"),
        target,
    })
}

fn capitalised(s: &str) -> Option<String> {
    let mut chars = s.chars();
    let first = chars.next()?;
    Some(first.to_uppercase().chain(chars).collect())
}

/// The notice for a backup the user restored.
pub fn restored_notice(id: &str, file: &str) -> Notice {
    Notice {
        title: format!("Restored {file}"),
        body: format!("Backup {id} is back in place; the next sync propagates it."),
        target: Some(Target::Timeline(file.to_string())),
    }
}

/// A stable key for one conflict: the file and the versions in play.
fn conflict_key(c: &metasync::ConflictReport) -> String {
    let mut hashes: Vec<String> = c
        .candidates
        .iter()
        .map(|k| format!("{}={}", k.location, k.sha256.as_deref().unwrap_or("-")))
        .collect();
    hashes.sort();
    format!("{}|{}", c.file, hashes.join(","))
}

/// Remembers what was already notified, so a standing conflict, a corrupt copy refused at
/// every tick or a failure that repeats is announced once.
#[derive(Debug, Default)]
pub struct Notifier {
    conflicts: HashSet<String>,
    refused: HashSet<String>,
    failure: Option<String>,
}

impl Notifier {
    /// What one engine call found that was not told before: its events, and `failure` (its
    /// error) if it failed. `open_conflicts`, when known, are the conflicts still unresolved
    /// after the call: forgetting settled ones lets the same conflict notify again if it comes
    /// back. A refused version is forgotten once a call that ran refuses it no more.
    pub fn findings(
        &mut self,
        events: &[Event],
        failure: Option<&str>,
        open_conflicts: Option<&[metasync::ConflictReport]>,
    ) -> Findings {
        if let Some(open) = open_conflicts {
            let keep: HashSet<String> = open.iter().map(conflict_key).collect();
            self.conflicts.retain(|k| keep.contains(k));
        }
        let mut out = Findings::default();
        let mut refused_now = HashSet::new();
        for event in events {
            match event {
                Event::Conflict(c) if self.conflicts.insert(conflict_key(c)) => {
                    out.conflicts
                        .push((c.file.clone(), c.reason.clone(), c.rows.len()));
                }
                Event::CorruptRefused { file, location, .. } => {
                    let key = format!("{file}|{location}");
                    if !self.refused.contains(&key) {
                        out.refused.push((file.clone(), location.clone()));
                    }
                    refused_now.insert(key);
                }
                _ => {}
            }
        }
        if open_conflicts.is_some() {
            self.refused = refused_now;
        } else {
            self.refused.extend(refused_now);
        }
        match failure {
            Some(error) if self.failure.as_deref() != Some(error) => {
                self.failure = Some(error.to_string());
                out.failure = Some(error.to_string());
            }
            Some(_) => {}
            None => self.failure = None,
        }
        out
    }

    /// The notices for one engine call: at most one for what it found, and one per backup
    /// restored.
    pub fn notices(
        &mut self,
        events: &[Event],
        failure: Option<&str>,
        open_conflicts: Option<&[metasync::ConflictReport]>,
    ) -> Vec<Notice> {
        let findings = self.findings(events, failure, open_conflicts);
        let restored = events.iter().filter_map(|e| match e {
            Event::BackupRestored { id, file } => Some(restored_notice(id, file)),
            _ => None,
        });
        run_notice(&findings).into_iter().chain(restored).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metasync::{ActionReport, Candidate, ConflictReport};

    fn conflict(file: &str, a: &str, b: &str) -> ConflictReport {
        let cand = |loc: &str, h: &str| Candidate {
            location: loc.into(),
            sha256: Some(h.into()),
            size: Some(1),
            mtime: None,
            entities: None,
            conversations: None,
        };
        ConflictReport {
            file: file.into(),
            detected: "2026-01-01T10:00:00+00:00".into(),
            reason: "changed in local and usb".into(),
            candidates: vec![cand("local", a), cand("usb", b)],
            rows: vec![],
        }
    }

    fn refused(file: &str, location: &str) -> Event {
        Event::CorruptRefused {
            file: file.into(),
            location: location.into(),
            detail: "page 3 is never used".into(),
        }
    }

    fn findings(conflicts: usize, refused: usize, failure: Option<&str>) -> Findings {
        Findings {
            conflicts: (0..conflicts)
                .map(|i| (format!("f{i}.md"), "changed in local and usb".into(), 0))
                .collect(),
            refused: (0..refused)
                .map(|i| (format!("db{i}.db"), "usb".into()))
                .collect(),
            failure: failure.map(Into::into),
        }
    }

    #[test]
    fn one_title_counts_everything_a_run_found() {
        let cases = [
            (0, 0, None, None),
            (1, 0, None, Some("1 conflict")),
            (2, 0, None, Some("2 conflicts")),
            (0, 1, None, Some("1 refused database")),
            (2, 1, None, Some("2 conflicts, 1 refused database")),
            (1, 3, None, Some("1 conflict, 3 refused databases")),
            (0, 0, Some("disk full"), Some("Sync failed")),
            (2, 0, Some("disk full"), Some("Sync failed, 2 conflicts")),
        ];
        for (c, r, fail, want) in cases {
            let got = run_notice(&findings(c, r, fail)).map(|n| n.title);
            assert_eq!(got.as_deref(), want, "{c} conflicts, {r} refused, {fail:?}");
        }
    }

    #[test]
    fn the_body_names_the_files_and_a_click_goes_to_the_first_problem() {
        let mut f = findings(0, 1, Some("disk full"));
        f.conflicts
            .push(("metastore.db".into(), "changed in local and usb".into(), 1));
        f.conflicts
            .push(("rules.yaml".into(), "changed in local and usb".into(), 0));
        let n = run_notice(&f).unwrap_or_else(|| panic!("a notice"));
        assert_eq!(n.title, "Sync failed, 2 conflicts, 1 refused database");
        assert_eq!(
            n.body,
            "disk full\n\
             metastore.db: changed in local and usb — 1 row to choose\n\
             rules.yaml: changed in local and usb\n\
             db0.db in usb failed its integrity check and was not used"
        );
        assert_eq!(n.target, Some(Target::Conflict("metastore.db".into())));
        let n = run_notice(&findings(0, 2, None)).unwrap_or_else(|| panic!("a notice"));
        assert_eq!(n.target, Some(Target::Timeline("db0.db".into())));
        let n = run_notice(&findings(0, 0, Some("x"))).unwrap_or_else(|| panic!("a notice"));
        assert_eq!(n.target, Some(Target::Runs));
    }

    #[test]
    fn a_run_with_many_findings_makes_one_notice() {
        let mut n = Notifier::default();
        let a = conflict("a.md", "1", "2");
        let b = conflict("b.md", "1", "2");
        let events = [
            Event::RunStarted {
                command: "sync".into(),
            },
            Event::Conflict(a.clone()),
            Event::Conflict(b.clone()),
            refused("metastore.db", "usb"),
            Event::RunFinished {
                result: metasync::model::RunResult::Conflict,
                summary: "x".into(),
            },
        ];
        let open = [a, b];
        let notices = n.notices(&events, None, Some(&open));
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert_eq!(notices[0].title, "2 conflicts, 1 refused database");
        // The next tick finds the same: nothing new to say.
        assert!(n.notices(&events, None, Some(&open)).is_empty());
        // The corrupt copy is gone, then comes back: told again.
        assert!(n.notices(&[], None, Some(&open)).is_empty());
        let again = n.notices(&[refused("metastore.db", "usb")], None, Some(&open));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].title, "1 refused database");
    }

    #[test]
    fn quiet_events_notify_nothing() {
        let mut n = Notifier::default();
        let quiet = [
            Event::RunStarted {
                command: "sync".into(),
            },
            Event::LocationUnavailable {
                location: "usb".into(),
                reason: "drive not mounted".into(),
            },
            Event::FileSkipped {
                file: "metastore.db".into(),
                location: "icloud".into(),
                reason: "evicted".into(),
            },
            Event::Action(ActionReport {
                file: "f".into(),
                location: "usb".into(),
                action: metasync::model::ActionKind::Copy,
                detail: "local".into(),
                done: true,
                error: None,
            }),
            Event::RunFinished {
                result: metasync::model::RunResult::Ok,
                summary: "in sync".into(),
            },
        ];
        for _ in 0..3 {
            assert!(n.notices(&quiet, None, Some(&[])).is_empty());
        }
    }

    #[test]
    fn a_restore_is_announced() {
        let mut n = Notifier::default();
        let ev = [Event::BackupRestored {
            id: "local:x.backup-20260101-100000".into(),
            file: "x".into(),
        }];
        let notices = n.notices(&ev, None, None);
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].title, "Restored x");
        assert_eq!(notices[0].target, Some(Target::Timeline("x".into())));
    }

    #[test]
    fn a_standing_conflict_notifies_once() {
        let mut n = Notifier::default();
        let c = conflict("f", "a", "b");
        let ev = [Event::Conflict(c.clone())];
        assert_eq!(
            n.notices(&ev, None, Some(std::slice::from_ref(&c))).len(),
            1
        );
        assert_eq!(
            n.notices(&ev, None, Some(std::slice::from_ref(&c))).len(),
            0
        );
        // A different pair of versions is a new conflict.
        let c2 = conflict("f", "a", "c");
        assert_eq!(
            n.notices(&[Event::Conflict(c2.clone())], None, None).len(),
            1
        );
        // Settled, then back: notifies again.
        assert_eq!(n.notices(&[], None, Some(&[])).len(), 0);
        assert_eq!(n.notices(&ev, None, None).len(), 1);
    }

    #[test]
    fn a_repeating_failure_notifies_once_until_a_success() {
        let mut n = Notifier::default();
        assert_eq!(n.notices(&[], Some("lock held"), None).len(), 1);
        assert_eq!(n.notices(&[], Some("lock held"), None).len(), 0);
        assert_eq!(n.notices(&[], Some("disk full"), None).len(), 1);
        assert_eq!(n.notices(&[], None, None).len(), 0);
        let again = n.notices(&[], Some("disk full"), None);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].title, "Sync failed");
        assert_eq!(again[0].body, "disk full");
    }
}
