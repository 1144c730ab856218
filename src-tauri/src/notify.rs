//! Engine events → native notifications: a new conflict, a refused corrupt database, a
//! failed sync, a restored backup. One per event, none per quiet tick. Which events notify
//! is decided by pure functions; only [`show`] touches the system.

use metasync::Event;
use std::collections::HashSet;
use tauri::{AppHandle, Runtime};
use tauri_plugin_notification::NotificationExt;

/// A notification to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The bold line.
    pub title: String,
    /// The rest.
    pub body: String,
}

/// The notice an engine event deserves, if any. Failed runs are handled by
/// [`Notifier::notices`] (one per failure, not one per failing tick).
pub fn notice_for(event: &Event) -> Option<Notice> {
    match event {
        Event::Conflict(c) => {
            let places: Vec<&str> = c.candidates.iter().map(|k| k.location.as_str()).collect();
            let body = if places.is_empty() {
                c.reason.clone()
            } else {
                format!(
                    "{} — choose which version to keep: {}",
                    c.reason,
                    places.join(", ")
                )
            };
            Some(Notice {
                title: format!("Conflict on {}", c.file),
                body,
            })
        }
        Event::CorruptRefused {
            file,
            location,
            detail,
        } => Some(Notice {
            title: format!("Refused a corrupt {file}"),
            body: format!(
                "The copy in {location} failed its integrity check and was not used: {detail}"
            ),
        }),
        Event::BackupRestored { id, file } => Some(Notice {
            title: format!("Restored {file}"),
            body: format!("Backup {id} is back in place; the next sync propagates it."),
        }),
        Event::RunStarted { .. }
        | Event::LocationUnavailable { .. }
        | Event::FileSkipped { .. }
        | Event::Action(_)
        | Event::RunFinished { .. } => None,
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

/// Remembers what was already notified, so a standing conflict or a failure that repeats
/// every tick is announced once.
#[derive(Debug, Default)]
pub struct Notifier {
    conflicts: HashSet<String>,
    failure: Option<String>,
}

impl Notifier {
    /// The notices for one engine call: its events, and `failure` (its error) if it failed.
    /// `open_conflicts`, when known, are the conflicts still unresolved after the call:
    /// forgetting settled ones lets the same conflict notify again if it comes back.
    pub fn notices(
        &mut self,
        events: &[Event],
        failure: Option<&str>,
        open_conflicts: Option<&[metasync::ConflictReport]>,
    ) -> Vec<Notice> {
        if let Some(open) = open_conflicts {
            let keep: HashSet<String> = open.iter().map(conflict_key).collect();
            self.conflicts.retain(|k| keep.contains(k));
        }
        let mut out = Vec::new();
        for event in events {
            if let Event::Conflict(c) = event {
                if !self.conflicts.insert(conflict_key(c)) {
                    continue;
                }
            }
            if let Some(n) = notice_for(event) {
                out.push(n);
            }
        }
        match failure {
            Some(error) if self.failure.as_deref() != Some(error) => {
                self.failure = Some(error.to_string());
                out.push(Notice {
                    title: "Sync failed".into(),
                    body: error.to_string(),
                });
            }
            Some(_) => {}
            None => self.failure = None,
        }
        out
    }
}

/// Shows notices natively, off the caller's thread: a notification daemon that is slow to
/// start (D-Bus activation) must not hold up a command or a run. Delivery cannot be
/// confirmed on every platform (without a daemon the plugin still returns Ok), so errors
/// are only logged.
pub fn show<R: Runtime>(app: &AppHandle<R>, notices: &[Notice]) {
    if notices.is_empty() {
        return;
    }
    let app = app.clone();
    let notices = notices.to_vec();
    tauri::async_runtime::spawn_blocking(move || {
        for n in notices {
            if let Err(e) = app
                .notification()
                .builder()
                .title(&n.title)
                .body(&n.body)
                .show()
            {
                tracing::warn!("notification failed: {e}");
            }
        }
    });
}

/// macOS: names the app that sends notifications, once, before the first one. The plugin
/// does it too but drops the result, and sends on a task of its own whose failures nobody
/// sees: a sender macOS does not know (an app never registered with Launch Services, a
/// binary run outside its bundle) means notifications silently never show, so that failure,
/// the one that can be known, is logged here at start.
#[cfg(target_os = "macos")]
pub fn register_sender<R: Runtime>(app: &AppHandle<R>) {
    // The same choice as the plugin's: a development binary has no bundle of its own.
    let sender = if tauri::is_dev() {
        "com.apple.Terminal".to_string()
    } else {
        app.config().identifier.clone()
    };
    match notify_rust::set_application(&sender) {
        Ok(()) => tracing::info!("notifications are sent as {sender}"),
        Err(e) => tracing::warn!(
            "notifications may not show: macOS does not accept {sender} as their sender ({e:?}); \
             open Metasync.app from /Applications once, and allow it in System Settings → \
             Notifications"
        ),
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

    #[test]
    fn which_events_notify() {
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
                result: metasync::model::RunResult::Failed,
                summary: "x".into(),
            },
        ];
        for e in &quiet {
            assert_eq!(notice_for(e), None, "{e:?}");
        }
        let loud = [
            Event::Conflict(conflict("sorting-rules.yaml", "a", "b")),
            Event::CorruptRefused {
                file: "metastore.db".into(),
                location: "usb".into(),
                detail: "page 3 is never used".into(),
            },
            Event::BackupRestored {
                id: "local:x.backup-20260101-100000".into(),
                file: "x".into(),
            },
        ];
        for e in &loud {
            assert!(notice_for(e).is_some(), "{e:?}");
        }
        let n = notice_for(&loud[0]).unwrap_or_else(|| panic!("conflict notifies"));
        assert_eq!(n.title, "Conflict on sorting-rules.yaml");
        assert!(n.body.contains("local, usb"), "{}", n.body);
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
    }

    #[test]
    fn quiet_ticks_notify_nothing() {
        let mut n = Notifier::default();
        for _ in 0..3 {
            let ev = [
                Event::RunStarted {
                    command: "sync".into(),
                },
                Event::RunFinished {
                    result: metasync::model::RunResult::Ok,
                    summary: "in sync".into(),
                },
            ];
            assert!(n.notices(&ev, None, Some(&[])).is_empty());
        }
    }
}
