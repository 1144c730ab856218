//! When the engine runs: a few seconds after start, every `interval_secs`, a few seconds
//! after a synced file changes (debounced, ignoring the app's own writes), when a
//! configured drive is mounted, and on "Sync now". One run at a time; a Sync now during a
//! run queues exactly one more. Engine calls run on blocking threads, never on the UI.

use crate::state::{AppState, LastOutcome};
use crate::{notify, tray};
use ::notify::{EventKind, RecursiveMode, Watcher as _};
use metasync::select::Selector;
use metasync::{Event, RunOptions, RunReport};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tauri::{AppHandle, Emitter, Manager, Runtime};
use tokio::sync::mpsc;

/// Delay between start and the first run (a login catches up at once, after the tray is up).
pub const STARTUP_DELAY: Duration = Duration::from_secs(3);
/// A change triggers a run once files have been quiet this long...
pub const DEBOUNCE: Duration = Duration::from_secs(2);
/// ...or this long after the first change, if they never go quiet (a busy database).
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(15);
/// How often watched folders and mount points are looked at again.
pub const POLL: Duration = Duration::from_secs(5);
/// The event the page listens to: the app's state changed (a run ended, pause toggled).
pub const CHANGED_EVENT: &str = "metasync:changed";

/// Why a run is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Shortly after start.
    Startup,
    /// The period elapsed.
    Interval,
    /// A synced file changed.
    FilesChanged,
    /// A configured drive was mounted.
    DriveMounted,
    /// The user asked.
    Manual,
}

impl Trigger {
    /// Whether the user asked: such runs happen while paused and queue behind a running one.
    pub fn is_manual(self) -> bool {
        self == Trigger::Manual
    }
}

/// What [`RunQueue::request`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Nothing runs: the caller runs now.
    Start,
    /// A run is in progress; one more will follow it.
    Queued,
    /// A run is in progress and this request is covered by it.
    Dropped,
}

/// Coalesces run requests: at most one run at a time and at most one waiting.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunQueue {
    running: bool,
    pending: bool,
}

impl RunQueue {
    /// A request; `queue_if_busy` for manual ones (a scheduled tick during a run is moot).
    pub fn request(&mut self, queue_if_busy: bool) -> Admission {
        if !self.running {
            self.running = true;
            Admission::Start
        } else if queue_if_busy {
            // Any number of clicks during one run make exactly one more run.
            self.pending = true;
            Admission::Queued
        } else {
            Admission::Dropped
        }
    }

    /// The running run ended: whether to run again (a request was queued meanwhile).
    pub fn finish(&mut self) -> bool {
        if self.pending {
            self.pending = false;
            true
        } else {
            self.running = false;
            false
        }
    }

    /// Whether a run is in progress.
    pub fn is_running(&self) -> bool {
        self.running
    }
}

/// What became of a run request.
#[derive(Debug, Clone)]
pub enum RunRequest {
    /// This call ran the engine (perhaps more than once); the last result.
    Ran(Result<Box<RunReport>, String>),
    /// A run is in progress; one more follows it.
    Queued,
    /// Not run: paused, or a run in progress covers it.
    Skipped(&'static str),
}

/// Runs the engine for `trigger` unless paused or covered; returns when done.
pub async fn request_run<R: Runtime>(app: &AppHandle<R>, trigger: Trigger) -> RunRequest {
    let state = app.state::<AppState>();
    if !trigger.is_manual() && state.is_paused() {
        return RunRequest::Skipped("paused");
    }
    let admission = state.queue().request(trigger.is_manual());
    match admission {
        Admission::Queued => return RunRequest::Queued,
        Admission::Dropped => return RunRequest::Skipped("a run is in progress"),
        Admission::Start => tracing::info!("sync ({trigger:?})"),
    }
    changed(app);
    let mut last;
    loop {
        last = run_once(app).await;
        if !state.queue().finish() {
            break;
        }
    }
    changed(app);
    RunRequest::Ran(last.map(Box::new))
}

async fn run_once<R: Runtime>(app: &AppHandle<R>) -> Result<RunReport, String> {
    let engine = app.state::<AppState>().engine.clone();
    let app2 = app.clone();
    let joined = tauri::async_runtime::spawn_blocking(move || {
        let state = app2.state::<AppState>();
        let _writing = state.begin_write();
        let mut events = Vec::new();
        let result = engine.open().and_then(|e| {
            e.run(&RunOptions::default(), &mut |ev| events.push(ev.clone()))
                .map_err(|err| err.to_string())
        });
        if let Ok(report) = &result {
            state.record_own_writes(report);
        }
        (result, events)
    })
    .await;
    let (result, events) =
        joined.unwrap_or_else(|e| (Err(format!("sync task failed: {e}")), vec![]));
    after_call(app, "sync", result.as_ref(), &events).await;
    result
}

/// After any engine call that reports a run (sync, resolve, restore): remember the outcome,
/// notify, refresh the tray from a fresh status, tell the page.
pub async fn after_call<R: Runtime>(
    app: &AppHandle<R>,
    command: &str,
    result: Result<&RunReport, &String>,
    events: &[Event],
) {
    let state = app.state::<AppState>();
    let (failure, open) = match result {
        Ok(report) => {
            state.set_last(LastOutcome::from_report(report));
            let failure = (!report.errors.is_empty()).then(|| report.errors.join("; "));
            (failure, Some(report.conflicts.clone()))
        }
        Err(error) => {
            let now = chrono::Local::now().to_rfc3339();
            state.set_last(LastOutcome::failed(command, now, error));
            (Some(error.clone()), None)
        }
    };
    let notices = state
        .notifier()
        .notices(events, failure.as_deref(), open.as_deref());
    notify::show(app, &notices);
    refresh_status(app).await;
}

/// Reads a fresh status for the tray menu (off the UI thread), then rebuilds the tray.
pub async fn refresh_status<R: Runtime>(app: &AppHandle<R>) {
    let engine = app.state::<AppState>().engine.clone();
    let status = tauri::async_runtime::spawn_blocking(move || {
        engine.open()?.status().map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match status {
        Ok(s) => app.state::<AppState>().set_last_status(s),
        Err(e) => tracing::warn!("status failed: {e}"),
    }
    changed(app);
}

/// The app's state changed: rebuild the tray, tell the page.
pub fn changed<R: Runtime>(app: &AppHandle<R>) {
    tray::refresh(app);
    let view = app.state::<AppState>().view();
    let _ = app.emit(CHANGED_EVENT, view);
}

/// The synced file a change to `rel` (relative to a location root) concerns, if any. A live
/// SQLite database changes through its `-wal` or `-journal` before its main file.
pub fn synced_file_of<'a>(selector: &Selector, rel: &'a str) -> Option<&'a str> {
    if selector.matches(rel) {
        return Some(rel);
    }
    ["-wal", "-journal"]
        .iter()
        .filter_map(|s| rel.strip_suffix(s))
        .find(|main| !main.is_empty() && selector.matches(main))
}

/// The root that holds `path` and the path relative to it, with `/` separators.
pub fn relative_to<'a>(roots: &'a [PathBuf], path: &Path) -> Option<(&'a Path, String)> {
    roots.iter().find_map(|r| {
        let rel = path.strip_prefix(r).ok()?;
        let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
        parts
            .map(|p| p.join("/"))
            .filter(|s| !s.is_empty())
            .map(|s| (r.as_path(), s))
    })
}

/// The folders to watch, each with its symbolic links resolved (and each once): FSEvents
/// reports resolved paths, so events are compared against resolved roots — against the
/// configured ones, an edit under a linked home matched no root and was taken for the app's
/// own write. Inotify reports paths under the folder watched, so watching the resolved root
/// gives resolved paths there too.
pub fn watch_roots(configured: &[PathBuf]) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    for root in configured.iter().map(|r| crate::state::canonical(r)) {
        if !roots.contains(&root) {
            roots.push(root);
        }
    }
    roots
}

/// Whether a file event on `path` is a user's change to a synced file: under one of the
/// (resolved) `roots`, a synced file or its journal, and not the app's own write or its echo.
pub fn is_user_change(
    state: &AppState,
    roots: &[PathBuf],
    selector: &Selector,
    path: &Path,
) -> bool {
    let Some((root, rel)) = relative_to(roots, path) else {
        return false;
    };
    synced_file_of(selector, &rel).is_some_and(|main| !state.is_own_change(path, &root.join(main)))
}

/// What the scheduler watches, as read from the config now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Targets {
    roots: Vec<PathBuf>,
    mounted: BTreeSet<PathBuf>,
    interval: Duration,
}

fn targets<R: Runtime>(app: &AppHandle<R>) -> (Targets, Option<Selector>) {
    let state = app.state::<AppState>();
    let engine = match state.engine.open() {
        Ok(e) => e,
        Err(_) => {
            return (
                Targets {
                    interval: Duration::from_secs(300),
                    ..Targets::default()
                },
                None,
            )
        }
    };
    let config = engine.config();
    let mut configured = vec![engine.home().to_path_buf()];
    for loc in &config.locations {
        let p = metasync::config::expand_tilde(&loc.path);
        if p.is_dir() {
            configured.push(p);
        }
    }
    let roots = watch_roots(&configured);
    let mounted = config
        .locations
        .iter()
        .filter_map(|l| l.mount_point.as_deref())
        .map(metasync::config::expand_tilde)
        .filter(|m| metasync::location::is_mount_point(m))
        .collect();
    let interval = Duration::from_secs(config.interval_secs.max(1));
    (
        Targets {
            roots,
            mounted,
            interval,
        },
        Selector::new(&config.files).ok(),
    )
}

/// Whether a file-system event can be a change. Reads are not: the engine's own scans open
/// and read every synced file.
pub fn is_change_kind(kind: &EventKind) -> bool {
    !matches!(kind, EventKind::Access(_))
}

/// Gathers a burst of changes into one run: due [`DEBOUNCE`] after the last change, and at
/// the latest [`DEBOUNCE_MAX`] after the first.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Debounce {
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Debounce {
    /// A change at `now`.
    pub fn note(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When the gathered changes should run, if any are waiting.
    pub fn due(&self) -> Option<Instant> {
        match (self.first, self.last) {
            (Some(f), Some(l)) => Some((l + DEBOUNCE).min(f + DEBOUNCE_MAX)),
            _ => None,
        }
    }

    /// The run was started: nothing waits any more.
    pub fn clear(&mut self) {
        *self = Debounce::default();
    }
}

fn watch<R: Runtime>(
    app: &AppHandle<R>,
    roots: &[PathBuf],
    selector: Selector,
) -> Option<::notify::RecommendedWatcher> {
    let app2 = app.clone();
    let roots2 = roots.to_vec();
    let handler = move |res: ::notify::Result<::notify::Event>| {
        let Ok(event) = res else { return };
        if !is_change_kind(&event.kind) {
            return;
        }
        let state = app2.state::<AppState>();
        if let Some(p) = event
            .paths
            .iter()
            .find(|p| is_user_change(&state, &roots2, &selector, p))
        {
            tracing::info!("changed: {}", p.display());
            state.trigger(Trigger::FilesChanged);
        }
    };
    let mut watcher = match ::notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("cannot watch files: {e}");
            return None;
        }
    };
    for root in roots {
        if let Err(e) = watcher.watch(root, RecursiveMode::Recursive) {
            tracing::warn!("cannot watch {}: {e}", root.display());
        }
    }
    Some(watcher)
}

/// Starts the background task.
pub fn start<R: Runtime>(app: AppHandle<R>) {
    let (tx, rx) = mpsc::unbounded_channel();
    app.state::<AppState>().set_trigger_sender(tx);
    tauri::async_runtime::spawn(run_loop(app, rx));
}

async fn run_loop<R: Runtime>(app: AppHandle<R>, mut rx: mpsc::UnboundedReceiver<Trigger>) {
    let (mut current, selector) = targets(&app);
    let mut _watcher = selector.and_then(|s| watch(&app, &current.roots, s));
    let mut next = tokio::time::Instant::now() + STARTUP_DELAY;
    let mut first = true;
    let mut poll = tokio::time::interval(POLL);
    let mut changes = Debounce::default();
    loop {
        let change_due = changes.due().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                let t = if first { Trigger::Startup } else { Trigger::Interval };
                first = false;
                next = tokio::time::Instant::now() + current.interval;
                spawn_run(&app, t);
            }
            _ = tokio::time::sleep_until(change_due.unwrap_or(next)), if change_due.is_some() => {
                changes.clear();
                spawn_run(&app, Trigger::FilesChanged);
            }
            got = rx.recv() => match got {
                Some(Trigger::FilesChanged) => changes.note(Instant::now()),
                Some(t) => spawn_run(&app, t),
                None => return,
            },
            _ = poll.tick() => {
                let (seen, selector) = targets(&app);
                if seen.mounted.difference(&current.mounted).next().is_some() {
                    spawn_run(&app, Trigger::DriveMounted);
                }
                if seen.roots != current.roots {
                    _watcher = selector.and_then(|s| watch(&app, &seen.roots, s));
                }
                if seen.interval != current.interval {
                    next = tokio::time::Instant::now() + seen.interval;
                }
                current = seen;
            }
        }
    }
}

fn spawn_run<R: Runtime>(app: &AppHandle<R>, trigger: Trigger) {
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        request_run(&app, trigger).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_run_at_a_time_and_one_more_for_any_clicks_during_it() {
        let mut q = RunQueue::default();
        assert_eq!(q.request(true), Admission::Start);
        assert!(q.is_running());
        assert_eq!(q.request(true), Admission::Queued);
        assert_eq!(q.request(true), Admission::Queued);
        assert_eq!(q.request(false), Admission::Dropped);
        assert!(q.finish(), "the queued run follows");
        assert!(q.is_running());
        assert!(!q.finish(), "only one more");
        assert!(!q.is_running());
        assert_eq!(q.request(false), Admission::Start);
    }

    #[test]
    fn a_scheduled_tick_during_a_run_is_dropped() {
        let mut q = RunQueue::default();
        assert_eq!(q.request(false), Admission::Start);
        assert_eq!(q.request(false), Admission::Dropped);
        assert!(!q.finish());
        assert!(!q.is_running());
    }

    fn sel(p: &[&str]) -> Selector {
        Selector::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn only_synced_files_and_their_journals_count() {
        let s = sel(&["metastore.db", "sorting-rules.yaml", "notes/*.md"]);
        for (rel, main) in [
            ("metastore.db", "metastore.db"),
            ("metastore.db-wal", "metastore.db"),
            ("metastore.db-journal", "metastore.db"),
            ("sorting-rules.yaml", "sorting-rules.yaml"),
            ("notes/a.md", "notes/a.md"),
        ] {
            assert_eq!(synced_file_of(&s, rel), Some(main), "{rel}");
        }
        for no in [
            "metastore.db-shm",
            "metastore.db.backup-20260101-100000",
            ".metasync/state.db",
            ".metasync/state.db-wal",
            "logs/metasync.log",
            "metasync.toml",
            "other.txt",
            "-wal",
        ] {
            assert_eq!(synced_file_of(&s, no), None, "{no}");
        }
    }

    #[test]
    fn reads_are_not_changes() {
        use ::notify::event::{AccessKind, CreateKind, ModifyKind, RemoveKind};
        assert!(!is_change_kind(&EventKind::Access(AccessKind::Any)));
        assert!(is_change_kind(&EventKind::Create(CreateKind::File)));
        assert!(is_change_kind(&EventKind::Modify(ModifyKind::Any)));
        assert!(is_change_kind(&EventKind::Remove(RemoveKind::File)));
    }

    #[test]
    fn a_burst_of_changes_makes_one_run_soon_after_it_ends() {
        let t0 = Instant::now();
        let mut d = Debounce::default();
        assert_eq!(d.due(), None);
        d.note(t0);
        assert_eq!(d.due(), Some(t0 + DEBOUNCE));
        d.note(t0 + Duration::from_secs(1));
        assert_eq!(d.due(), Some(t0 + Duration::from_secs(1) + DEBOUNCE));
        // Changes that never stop still run within DEBOUNCE_MAX of the first.
        d.note(t0 + DEBOUNCE_MAX);
        assert_eq!(d.due(), Some(t0 + DEBOUNCE_MAX));
        d.clear();
        assert_eq!(d.due(), None);
    }

    /// A home reached through a symbolic link (as `/var` → `/private/var` on macOS), and the
    /// path of a synced file in it as FSEvents reports it: resolved.
    #[test]
    fn an_edit_under_a_linked_home_is_a_user_change() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let real = dir.path().join("real");
        std::fs::create_dir_all(real.join("home")).unwrap_or_else(|e| panic!("{e}"));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap_or_else(|e| panic!("{e}"));
        let home = link.join("home");
        let resolved = std::fs::canonicalize(real.join("home")).unwrap_or_else(|e| panic!("{e}"));
        let reported = resolved.join("sorting-rules.yaml");
        std::fs::write(home.join("sorting-rules.yaml"), "a").unwrap_or_else(|e| panic!("{e}"));

        let roots = watch_roots(&[home.clone(), link.join("home/")]);
        assert_eq!(roots, vec![resolved.clone()], "resolved, and once");
        let state = AppState::new(crate::state::EngineHandle::new(&home, None));
        let s = sel(&["sorting-rules.yaml"]);
        assert!(
            is_user_change(&state, &roots, &s, &reported),
            "the user's edit"
        );
        assert!(!is_user_change(
            &state,
            &roots,
            &s,
            &resolved.join("other.txt")
        ));
        assert!(!is_user_change(
            &state,
            &roots,
            &s,
            Path::new("/elsewhere/sorting-rules.yaml")
        ));
    }

    #[test]
    fn relative_paths_under_roots() {
        let roots = vec![PathBuf::from("/h"), PathBuf::from("/r/x")];
        let rel = |p: &str| relative_to(&roots, Path::new(p)).map(|(r, s)| (r.to_path_buf(), s));
        assert_eq!(
            rel("/h/a/b.md"),
            Some((PathBuf::from("/h"), "a/b.md".into()))
        );
        assert_eq!(
            rel("/r/x/metastore.db"),
            Some((PathBuf::from("/r/x"), "metastore.db".into()))
        );
        assert_eq!(rel("/elsewhere/f"), None);
        assert_eq!(rel("/h"), None);
    }
}
