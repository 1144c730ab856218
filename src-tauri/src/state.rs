//! The app's state: where the engine lives, the run queue (with the paused flag), what the
//! last run said, and the tray state derived from them (a pure function, tested below).

use crate::notify::Notifier;
use crate::pause::{PauseFor, PauseSettings, Paused, Power};
use crate::queue::RunQueue;
use metasync::{Engine, RunReport, StatusReport};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

/// What a file looked like right after the engine wrote it: a later event on it that finds
/// it unchanged is the echo of that write, not an edit.
pub type Fingerprint = (u64, SystemTime);

/// The fingerprint of a file now, if it exists.
pub fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// `path` with every symbolic link resolved, as FSEvents reports paths (`/var` → `/private/var`,
/// a home reached through a link); `path` itself when it cannot be resolved (not there yet).
pub fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Whether a file event is the echo of the engine's own write: the synced file still looks
/// exactly as the engine left it, and the event is on that file or on a side file (a
/// rollback journal) that has already gone again.
pub fn is_echo(
    recorded: Option<&Fingerprint>,
    now: Option<Fingerprint>,
    event_on_main: bool,
    event_path_exists: bool,
) -> bool {
    match (recorded, now) {
        (Some(r), Some(n)) => *r == n && (event_on_main || !event_path_exists),
        _ => false,
    }
}

/// Where the engine's home and config are; opens a fresh [`Engine`] per call so an edited
/// `metasync.toml` takes effect on the next run.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    home: PathBuf,
    config: Option<PathBuf>,
}

impl EngineHandle {
    /// A handle on `home`, with an explicit config file or the default `<home>/metasync.toml`.
    pub fn new(home: impl Into<PathBuf>, config: Option<PathBuf>) -> Self {
        EngineHandle {
            home: home.into(),
            config,
        }
    }

    /// The engine's home resolution: `METASYNC_HOME` or `~/.metasystem`; `METASYNC_CONFIG`.
    pub fn from_env() -> Self {
        let home = std::env::var_os("METASYNC_HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(metasync::config::default_home);
        let config = std::env::var_os("METASYNC_CONFIG")
            .filter(|c| !c.is_empty())
            .map(PathBuf::from);
        EngineHandle::new(home, config)
    }

    /// The home folder.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Opens the engine; the error is the engine's message, for the page or the tooltip.
    pub fn open(&self) -> Result<Engine, String> {
        Engine::open(&self.home, self.config.as_deref()).map_err(|e| e.to_string())
    }
}

/// What the tray icon shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrayState {
    /// Idle, everything agreed at the last run.
    InSync,
    /// A run is in progress.
    Syncing,
    /// Unresolved conflicts wait for the user.
    Conflict,
    /// The last run failed.
    Error,
    /// No remote was available at the last run.
    Offline,
    /// Scheduled runs are paused.
    Paused,
}

impl TrayState {
    /// Its stable name (icon file stem, `data-state` in the panel).
    pub fn as_str(self) -> &'static str {
        match self {
            TrayState::InSync => "in_sync",
            TrayState::Syncing => "syncing",
            TrayState::Conflict => "conflict",
            TrayState::Error => "error",
            TrayState::Offline => "offline",
            TrayState::Paused => "paused",
        }
    }

    /// Words for people.
    pub fn label(self) -> &'static str {
        match self {
            TrayState::InSync => "In sync",
            TrayState::Syncing => "Syncing…",
            TrayState::Conflict => "Conflict — needs you",
            TrayState::Error => "Last sync failed",
            TrayState::Offline => "Offline — no remote available",
            TrayState::Paused => "Paused",
        }
    }
}

/// How a run (or resolve) ended, as far as the tray cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done, everything agrees.
    Ok,
    /// Done, but conflicts remain.
    Conflict,
    /// The run failed or reported errors.
    Failed,
}

/// The last run, boiled down.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastOutcome {
    /// `sync`, `resolve`, ...
    pub command: String,
    /// When it ended, RFC 3339.
    pub finished: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Unresolved conflicts after it.
    pub conflicts: usize,
    /// Configured remotes (every location but `local`).
    pub remotes: usize,
    /// Of those, how many were available.
    pub remotes_available: usize,
    /// One line for people: the error, or what happened.
    pub message: String,
}

impl LastOutcome {
    /// From an engine report.
    pub fn from_report(report: &RunReport) -> Self {
        let remotes: Vec<_> = report
            .locations
            .iter()
            .filter(|l| l.name != "local")
            .collect();
        let outcome = if !report.errors.is_empty() || report.exit_code == 1 {
            Outcome::Failed
        } else if !report.conflicts.is_empty() || report.exit_code == 3 {
            Outcome::Conflict
        } else {
            Outcome::Ok
        };
        let written = report.actions.iter().filter(|a| a.done).count();
        let message = match outcome {
            Outcome::Failed => report.errors.join("; "),
            Outcome::Conflict => plural(report.conflicts.len(), "conflict", "conflicts"),
            Outcome::Ok if written == 0 => "in sync, nothing to do".to_string(),
            Outcome::Ok => format!("in sync, {}", plural(written, "write", "writes")),
        };
        LastOutcome {
            command: report.command.clone(),
            finished: report.finished.clone(),
            outcome,
            conflicts: report.conflicts.len(),
            remotes: remotes.len(),
            remotes_available: remotes.iter().filter(|l| l.available).count(),
            message,
        }
    }

    /// A run that returned an error instead of a report.
    pub fn failed(command: &str, finished: String, error: &str) -> Self {
        LastOutcome {
            command: command.to_string(),
            finished,
            outcome: Outcome::Failed,
            conflicts: 0,
            remotes: 0,
            remotes_available: 0,
            message: error.to_string(),
        }
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// The tray state from the last outcome, the paused flag and whether a run is in progress.
/// A run in progress shows first, then paused, then failure, conflicts, and being offline.
pub fn tray_state(last: Option<&LastOutcome>, paused: bool, running: bool) -> TrayState {
    if running {
        return TrayState::Syncing;
    }
    if paused {
        return TrayState::Paused;
    }
    match last {
        None => TrayState::InSync,
        Some(l) if l.outcome == Outcome::Failed => TrayState::Error,
        Some(l) if l.outcome == Outcome::Conflict || l.conflicts > 0 => TrayState::Conflict,
        Some(l) if l.remotes_available == 0 => TrayState::Offline,
        Some(_) => TrayState::InSync,
    }
}

/// The tooltip: the state, then when the last sync ended and how.
pub fn tooltip(state: TrayState, last: Option<&LastOutcome>) -> String {
    labelled_tooltip(state.label(), last)
}

/// The tooltip with the state in words of the caller's ("Paused until 15:05").
pub fn labelled_tooltip(label: &str, last: Option<&LastOutcome>) -> String {
    match last {
        None => format!("Metasync — {label}\nNo sync yet"),
        Some(l) => format!(
            "Metasync — {label}\nLast {} {}: {}",
            l.command,
            short_time(&l.finished),
            l.message
        ),
    }
}

/// `HH:MM` in local time for today's RFC 3339 stamps, else `YYYY-MM-DD HH:MM`.
pub fn short_time(rfc3339: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => {
            let local = t.with_timezone(&chrono::Local);
            if local.date_naive() == chrono::Local::now().date_naive() {
                local.format("%H:%M").to_string()
            } else {
                local.format("%Y-%m-%d %H:%M").to_string()
            }
        }
        Err(_) => rfc3339.to_string(),
    }
}

/// Why scheduled runs are paused, for the page and the tray.
#[derive(Debug, Clone, Serialize)]
pub struct PauseView {
    /// Why, and until when.
    #[serde(flatten)]
    pub why: Paused,
    /// Words for it: "Paused until 15:05".
    pub label: String,
}

/// What the page and the tray see of the app itself.
#[derive(Debug, Clone, Serialize)]
pub struct AppView {
    /// Scheduled runs are paused.
    pub paused: bool,
    /// Why, when they are.
    pub pause: Option<PauseView>,
    /// The "pause while on battery power" option.
    pub pause_on_battery: bool,
    /// A run is in progress.
    pub running: bool,
    /// The tray state.
    pub tray_state: TrayState,
    /// Its words.
    pub tray_label: String,
    /// The tooltip text.
    pub tooltip: String,
    /// The last run, if any since the app started.
    pub last: Option<LastOutcome>,
}

/// Everything the app keeps, managed by Tauri.
pub struct AppState {
    /// Where the engine is.
    pub engine: EngineHandle,
    writers: AtomicUsize,
    own_writes: Mutex<HashMap<PathBuf, Fingerprint>>,
    queue: RunQueue,
    last: Mutex<Option<LastOutcome>>,
    last_status: Mutex<Option<StatusReport>>,
    notifier: Mutex<Notifier>,
    pause: Mutex<PauseSettings>,
    paused_why: Mutex<Option<Paused>>,
    power: PowerSource,
    focus: Mutex<Option<crate::notify::Target>>,
}

/// Reads the power source (the real one, or a test's).
pub type PowerSource = Box<dyn Fn() -> Power + Send + Sync>;

/// Where the app keeps its pause settings: `<home>/.metasync/app-pause.json`.
pub fn pause_file(home: &Path) -> PathBuf {
    home.join(metasync::names::STATE_DIR).join("app-pause.json")
}

fn load_pause(home: &Path) -> PauseSettings {
    let path = pause_file(home);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
            tracing::warn!(
                "{}: unreadable pause settings, ignored: {e}",
                path.display()
            );
            PauseSettings::default()
        }),
        Err(_) => PauseSettings::default(),
    }
}

fn save_pause(home: &Path, settings: &PauseSettings) {
    let path = pause_file(home);
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(settings).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        tracing::warn!("saving pause settings to {}: {e}", path.display());
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the tray down with it: the data is plain values.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AppState {
    /// Fresh state for this engine.
    pub fn new(engine: EngineHandle) -> Self {
        let engine_home = engine.home().to_path_buf();
        let engine_home = engine_home.as_path();
        let state = AppState {
            engine,
            writers: AtomicUsize::new(0),
            own_writes: Mutex::new(HashMap::new()),
            queue: RunQueue::default(),
            last: Mutex::new(None),
            last_status: Mutex::new(None),
            notifier: Mutex::new(Notifier::default()),
            pause: Mutex::new(load_pause(engine_home)),
            paused_why: Mutex::new(None),
            power: Box::new(crate::pause::power_now),
            focus: Mutex::new(None),
        };
        state.apply_pause(chrono::Utc::now());
        state
    }

    /// The same, reading the power source with `power` (tests: a fake power_supply folder).
    pub fn with_power_source(mut self, power: PowerSource) -> Self {
        self.power = power;
        self.apply_pause(chrono::Utc::now());
        self
    }

    /// Where the panel should go when it next asks.
    pub fn set_focus(&self, target: crate::notify::Target) {
        *lock(&self.focus) = Some(target);
    }

    /// Where the panel should go, once.
    pub fn take_focus(&self) -> Option<crate::notify::Target> {
        lock(&self.focus).take()
    }

    /// The pause settings.
    pub fn pause_settings(&self) -> PauseSettings {
        *lock(&self.pause)
    }

    /// Why scheduled runs are paused, as of the last [`AppState::apply_pause`].
    pub fn paused_why(&self) -> Option<Paused> {
        *lock(&self.paused_why)
    }

    fn change_pause(&self, now: chrono::DateTime<chrono::Utc>, f: impl FnOnce(&mut PauseSettings)) {
        let settings = {
            let mut s = lock(&self.pause);
            f(&mut s);
            *s
        };
        save_pause(self.engine.home(), &settings);
        self.apply_pause(now);
    }

    /// Pauses scheduled runs for `choice`, chosen at `now` (local time: "tomorrow" is local).
    pub fn pause_for(&self, choice: PauseFor, now: chrono::DateTime<chrono::Local>) {
        let until = crate::pause::until(choice, &now);
        self.change_pause(now.to_utc(), |s| s.user = Some(until));
    }

    /// Ends the user's pause (a battery pause goes on while its option is set).
    pub fn resume(&self, now: chrono::DateTime<chrono::Utc>) {
        self.change_pause(now, |s| s.user = None);
    }

    /// Sets the "pause while on battery power" option.
    pub fn set_pause_on_battery(&self, on: bool, now: chrono::DateTime<chrono::Utc>) {
        self.change_pause(now, |s| s.on_battery = on);
    }

    /// Works out at `now` whether scheduled runs are paused (an elapsed pause ends; the
    /// power source is read only when the battery option is set) and sets the run queue's
    /// flag; returns whether that changed anything the tray shows.
    pub fn apply_pause(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        let settings = {
            let mut s = lock(&self.pause);
            if s.expire(now) {
                save_pause(self.engine.home(), &s);
            }
            *s
        };
        let power = if settings.on_battery {
            (self.power)()
        } else {
            Power::Unknown
        };
        let why = settings.paused(now, power);
        self.queue.set_paused(why.is_some());
        let mut old = lock(&self.paused_why);
        let changed = *old != why;
        *old = why;
        changed
    }

    /// Whether scheduled runs are paused.
    pub fn is_paused(&self) -> bool {
        self.queue.is_paused()
    }

    /// Whether a run is in progress.
    pub fn is_running(&self) -> bool {
        self.queue.is_running()
    }

    /// The run queue: runs, triggers, pause.
    pub fn queue(&self) -> &RunQueue {
        &self.queue
    }

    /// The last outcome.
    pub fn last(&self) -> Option<LastOutcome> {
        lock(&self.last).clone()
    }

    /// Records the last outcome.
    pub fn set_last(&self, outcome: LastOutcome) {
        *lock(&self.last) = Some(outcome);
    }

    /// The last status the tray menu was built from.
    pub fn last_status(&self) -> Option<StatusReport> {
        lock(&self.last_status).clone()
    }

    /// Keeps a fresh status for the tray menu.
    pub fn set_last_status(&self, status: StatusReport) {
        *lock(&self.last_status) = Some(status);
    }

    /// The notification bookkeeping.
    pub fn notifier(&self) -> MutexGuard<'_, Notifier> {
        lock(&self.notifier)
    }

    /// Marks the start of an engine call that writes synced files (a run, a resolve); the
    /// returned guard marks its end. While any is open, file events are taken as ours.
    pub fn begin_write(&self) -> WriteGuard<'_> {
        self.writers.fetch_add(1, Ordering::SeqCst);
        WriteGuard { state: self }
    }

    /// Remembers what the engine wrote in a run, so the watcher can tell its echoes from
    /// edits. Call before the write guard is dropped.
    pub fn record_own_writes(&self, report: &RunReport) {
        let mut own = lock(&self.own_writes);
        for a in report
            .actions
            .iter()
            .filter(|a| a.done && a.action != metasync::model::ActionKind::Backup)
        {
            let Some(loc) = report.locations.iter().find(|l| l.name == a.location) else {
                continue;
            };
            // Keyed by the resolved root, as the watcher compares it (`scheduler::watch_roots`).
            let path = canonical(Path::new(&loc.path)).join(&a.file);
            if let Some(fp) = fingerprint(&path) {
                own.insert(path, fp);
            }
        }
    }

    /// Whether an event on `path` (the synced file `main`, or one of its side files) is the
    /// app's own doing: during an engine write, or an echo of one.
    pub fn is_own_change(&self, path: &Path, main: &Path) -> bool {
        if self.writers.load(Ordering::SeqCst) > 0 {
            return true;
        }
        let own = lock(&self.own_writes);
        is_echo(
            own.get(main),
            fingerprint(main),
            path == main,
            path.exists(),
        )
    }

    /// The app's own view of itself.
    pub fn view(&self) -> AppView {
        let last = self.last();
        let state = tray_state(last.as_ref(), self.is_paused(), self.is_running());
        let now = chrono::Local::now();
        let pause = self.paused_why().map(|why| PauseView {
            why,
            label: crate::pause::label(why, &now),
        });
        let label = match (&pause, state) {
            (Some(p), TrayState::Paused) => p.label.clone(),
            _ => state.label().to_string(),
        };
        AppView {
            paused: self.is_paused(),
            pause,
            pause_on_battery: self.pause_settings().on_battery,
            running: self.is_running(),
            tray_state: state,
            tooltip: labelled_tooltip(&label, last.as_ref()),
            tray_label: label,
            last,
        }
    }
}

/// Ends a write window (see [`AppState::begin_write`]).
pub struct WriteGuard<'a> {
    state: &'a AppState,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.state.writers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(
        outcome: Outcome,
        conflicts: usize,
        remotes: usize,
        available: usize,
    ) -> LastOutcome {
        LastOutcome {
            command: "sync".into(),
            finished: "2026-01-01T10:00:00+00:00".into(),
            outcome,
            conflicts,
            remotes,
            remotes_available: available,
            message: String::new(),
        }
    }

    #[test]
    fn tray_state_table() {
        use TrayState::*;
        let ok = outcome(Outcome::Ok, 0, 2, 1);
        let offline = outcome(Outcome::Ok, 0, 1, 0);
        let no_remote = outcome(Outcome::Ok, 0, 0, 0);
        let conflict = outcome(Outcome::Conflict, 1, 1, 1);
        let failed = outcome(Outcome::Failed, 0, 1, 1);
        let cases: &[(Option<&LastOutcome>, bool, bool, TrayState)] = &[
            (None, false, false, InSync),
            (None, false, true, Syncing),
            (None, true, false, Paused),
            (Some(&ok), false, false, InSync),
            (Some(&ok), true, true, Syncing),
            (Some(&ok), true, false, Paused),
            (Some(&offline), false, false, Offline),
            (Some(&no_remote), false, false, Offline),
            (Some(&conflict), false, false, Conflict),
            (Some(&conflict), true, false, Paused),
            (Some(&failed), false, false, Error),
            (Some(&failed), false, true, Syncing),
        ];
        for (i, (last, paused, running, want)) in cases.iter().enumerate() {
            assert_eq!(tray_state(*last, *paused, *running), *want, "case {i}");
        }
    }

    #[test]
    fn failure_beats_conflict_and_offline() {
        let mut l = outcome(Outcome::Failed, 2, 1, 0);
        assert_eq!(tray_state(Some(&l), false, false), TrayState::Error);
        l.outcome = Outcome::Conflict;
        assert_eq!(tray_state(Some(&l), false, false), TrayState::Conflict);
    }

    fn report(errors: Vec<String>, conflicts: usize, exit_code: i32) -> RunReport {
        use metasync::*;
        RunReport {
            command: "sync".into(),
            dry_run: false,
            strategy: "newest".into(),
            started: "2026-01-01T10:00:00+00:00".into(),
            finished: "2026-01-01T10:00:01+00:00".into(),
            locations: vec![
                LocationReport {
                    name: "local".into(),
                    path: "/h".into(),
                    available: true,
                    reason: None,
                },
                LocationReport {
                    name: "usb".into(),
                    path: "/u".into(),
                    available: false,
                    reason: Some("drive not mounted".into()),
                },
                LocationReport {
                    name: "cloud".into(),
                    path: "/c".into(),
                    available: true,
                    reason: None,
                },
            ],
            files: vec![],
            actions: vec![],
            conflicts: (0..conflicts)
                .map(|i| ConflictReport {
                    file: format!("f{i}"),
                    detected: "2026-01-01T10:00:00+00:00".into(),
                    reason: "changed in local and cloud".into(),
                    candidates: vec![],
                    rows: vec![],
                })
                .collect(),
            warnings: vec![],
            errors,
            row_conflicts: vec![],
            hashed: 0,
            exit_code,
        }
    }

    #[test]
    fn outcome_from_report() {
        let ok = LastOutcome::from_report(&report(vec![], 0, 0));
        assert_eq!(ok.outcome, Outcome::Ok);
        assert_eq!((ok.remotes, ok.remotes_available), (2, 1));
        assert_eq!(ok.message, "in sync, nothing to do");
        let c = LastOutcome::from_report(&report(vec![], 2, 3));
        assert_eq!((c.outcome, c.conflicts), (Outcome::Conflict, 2));
        assert_eq!(c.message, "2 conflicts");
        let f = LastOutcome::from_report(&report(vec!["disk full".into()], 1, 1));
        assert_eq!(f.outcome, Outcome::Failed);
        assert_eq!(f.message, "disk full");
    }

    #[test]
    fn tooltip_names_state_time_and_result() {
        assert_eq!(
            tooltip(TrayState::InSync, None),
            "Metasync — In sync\nNo sync yet"
        );
        let l = LastOutcome::failed("sync", "not a time".into(), "lock held");
        assert_eq!(
            tooltip(TrayState::Error, Some(&l)),
            "Metasync — Last sync failed\nLast sync not a time: lock held"
        );
    }

    #[test]
    fn echoes_of_own_writes_are_told_from_edits() {
        let t = SystemTime::UNIX_EPOCH;
        let fp = (12, t);
        let later = (12, t + std::time::Duration::from_secs(1));
        // The file as the engine left it: an echo, on the file or a vanished journal.
        assert!(is_echo(Some(&fp), Some(fp), true, true));
        assert!(is_echo(Some(&fp), Some(fp), false, false));
        // A side file still there (a live -wal) may be someone else's write.
        assert!(!is_echo(Some(&fp), Some(fp), false, true));
        // Changed since, never written by us, or gone: an edit.
        assert!(!is_echo(Some(&fp), Some(later), true, true));
        assert!(!is_echo(Some(&fp), Some((13, t)), true, true));
        assert!(!is_echo(None, Some(fp), true, true));
        assert!(!is_echo(Some(&fp), None, true, false));
    }

    #[test]
    fn during_a_write_every_event_is_ours_then_only_echoes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let f = dir.path().join("sorting-rules.yaml");
        std::fs::write(&f, "a").unwrap_or_else(|e| panic!("{e}"));
        let s = AppState::new(EngineHandle::new(dir.path(), None));
        assert!(!s.is_own_change(&f, &f));
        {
            let _g = s.begin_write();
            assert!(s.is_own_change(&f, &f));
        }
        assert!(!s.is_own_change(&f, &f));
        let mut report = sample_report();
        report.locations[0].path = dir.path().display().to_string();
        report.actions.push(metasync::ActionReport {
            file: "sorting-rules.yaml".into(),
            location: "local".into(),
            action: metasync::model::ActionKind::Copy,
            detail: "usb".into(),
            done: true,
            error: None,
        });
        s.record_own_writes(&report);
        assert!(s.is_own_change(&f, &f), "the echo of our copy");
        std::fs::write(&f, "a longer edit").unwrap_or_else(|e| panic!("{e}"));
        assert!(!s.is_own_change(&f, &f), "the user's edit after it");
    }

    /// The watcher compares resolved paths (FSEvents reports them so): the engine's writes
    /// under a home reached through a link are remembered by their resolved path.
    #[test]
    fn own_writes_under_a_linked_home_are_known_by_their_resolved_path() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(dir.path().join("real/home")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link"))
            .unwrap_or_else(|e| panic!("{e}"));
        let home = dir.path().join("link/home");
        let f = home.join("sorting-rules.yaml");
        std::fs::write(&f, "a").unwrap_or_else(|e| panic!("{e}"));
        let resolved = canonical(&f);
        assert_ne!(resolved, f);
        let s = AppState::new(EngineHandle::new(&home, None));
        let mut report = sample_report();
        report.locations[0].path = home.display().to_string();
        report.actions.push(metasync::ActionReport {
            file: "sorting-rules.yaml".into(),
            location: "local".into(),
            action: metasync::model::ActionKind::Copy,
            detail: "usb".into(),
            done: true,
            error: None,
        });
        s.record_own_writes(&report);
        assert!(
            s.is_own_change(&resolved, &resolved),
            "the echo of our copy"
        );
        std::fs::write(&f, "a longer edit").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !s.is_own_change(&resolved, &resolved),
            "the user's edit after it"
        );
    }

    fn sample_report() -> RunReport {
        report(vec![], 0, 0)
    }
}
