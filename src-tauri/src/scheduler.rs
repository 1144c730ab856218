//! When the engine runs: a few seconds after start, every `interval_secs`, a few seconds
//! after a synced file changes (debounced, ignoring the app's own writes), when a
//! configured drive is mounted, and on "Sync now" (the tray pokes the queue, the panel's
//! command asks directly). Whether a run starts, waits or is covered is the
//! [`queue`](crate::queue)'s call: one run at a time, a Sync now during a run queues exactly
//! one more. Engine calls run on blocking threads, never on the UI.

// The queue's types as this module's API names them (`request_run` takes and returns them).
pub use crate::queue::{RunRequest, Trigger};
use crate::state::{AppState, LastOutcome};
use crate::tray;
use ::notify::{EventKind, RecursiveMode, Watcher as _};
use metasync::select::Selector;
use metasync::{Event, RunOptions, RunReport};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tauri::{AppHandle, Manager, Runtime};
use tokio::sync::mpsc::UnboundedReceiver;

/// Delay between start and the first run (a login catches up at once, after the tray is up).
pub const STARTUP_DELAY: Duration = Duration::from_secs(3);
/// A change triggers a run once files have been quiet this long...
pub const DEBOUNCE: Duration = Duration::from_secs(2);
/// ...or this long after the first change, if they never go quiet (a busy database).
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(15);
/// How often watched folders and mount points are looked at again.
pub const POLL: Duration = Duration::from_secs(5);

/// Runs the engine for `trigger` unless paused or covered (the app's
/// [`RunQueue`](crate::queue::RunQueue) decides); returns when done.
pub async fn request_run<R: Runtime>(
    app: &AppHandle<R>,
    trigger: Trigger,
) -> RunRequest<Result<Box<RunReport>, String>> {
    let started = || {
        tracing::info!("sync ({trigger:?})");
        tray::changed(app);
    };
    let state = app.state::<AppState>();
    let ran = state
        .queue()
        .run(trigger, started, || async move {
            run_once(app).await.map(Box::new)
        })
        .await;
    if let RunRequest::Ran(_) = ran {
        tray::changed(app);
    }
    ran
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
    crate::alerts::show(app, &notices);
    refresh_status(app).await;
}

/// The pause settings changed (or a pause ended by itself): rebuild the tray, tell the page,
/// and when scheduled runs were paused and no longer are, run once to catch up.
pub fn pause_changed<R: Runtime>(app: &AppHandle<R>, was_paused: bool) {
    tray::changed(app);
    let state = app.state::<AppState>();
    if was_paused && !state.is_paused() {
        tracing::info!("pause over: catching up");
        state.queue().trigger(Trigger::Interval);
    }
}

/// A poll of the pause: an elapsed pause ends, the power source is read again.
pub fn poll_pause<R: Runtime>(app: &AppHandle<R>, now: chrono::DateTime<chrono::Utc>) {
    let state = app.state::<AppState>();
    let was = state.is_paused();
    if state.apply_pause(now) {
        pause_changed(app, was);
    }
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
    tray::changed(app);
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
            state.queue().trigger(Trigger::FilesChanged);
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
    let rx = app.state::<AppState>().queue().listen();
    tauri::async_runtime::spawn(run_loop(app, rx));
}

async fn run_loop<R: Runtime>(app: AppHandle<R>, mut rx: UnboundedReceiver<Trigger>) {
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
                poll_pause(&app, chrono::Utc::now());
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
