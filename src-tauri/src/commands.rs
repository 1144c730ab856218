//! The commands the panel calls. Each returns the engine's own report types (errors as
//! strings for the page); ids and paths from the page go straight to the engine, which
//! checks them. Engine calls run on blocking threads.

use crate::health::{self, LocationHealth};
use crate::pause::PauseFor;
use crate::queue::{RunRequest, Trigger};
use crate::scheduler;
use crate::state::{AppState, AppView, EngineHandle};
use metasync::inspect::{Diff, HistoryEntry, RestoreRowsReport, RowChoice};
use metasync::volumes::{self, VolumeOffer};
use metasync::{
    BackupEntry, ConflictReport, Engine, Event, RestoreReport, RunReport, RunSummary, StatusReport,
};
use serde::Serialize;
use tauri::{AppHandle, Manager, Runtime, State};
use tauri_plugin_autostart::ManagerExt;

/// How many runs `recent_runs` returns when the page does not say.
pub const RECENT_RUNS: usize = 20;

async fn blocking<T: Send + 'static>(
    engine: &EngineHandle,
    f: impl FnOnce(Engine) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let engine = engine.clone();
    tauri::async_runtime::spawn_blocking(move || f(engine.open()?))
        .await
        .map_err(|e| format!("engine task failed: {e}"))?
}

/// `get_status`: the engine's status plus the app's own state.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    /// The engine's status report, flattened.
    #[serde(flatten)]
    pub status: StatusReport,
    /// Paused, running, tray state, last outcome.
    pub app: AppView,
    /// Why start at login is refused for the running copy of the app, if it is.
    pub autostart_warning: Option<String>,
    /// Drive locations whose volume this machine never saw, with the volumes mounted now.
    pub volume_offers: Vec<VolumeOffer>,
    /// Each location's kind, health in short words and history, in the order of `locations`.
    pub health: Vec<LocationHealth>,
}

/// Locations, files, conflicts and the last run, with the app's state.
#[tauri::command]
pub async fn get_status(state: State<'_, AppState>) -> Result<StatusView, String> {
    let (status, volume_offers, health) = blocking(&state.engine, |e| {
        let status = health::with_history(&e, e.status().map_err(|e| e.to_string())?);
        let health = health::of_status(&status, e.config());
        let offers = volumes::offers_for(e.home(), e.config()).unwrap_or_else(|err| {
            tracing::warn!("volume offer: {err}");
            Vec::new()
        });
        Ok((status, offers, health))
    })
    .await?;
    state.set_last_status(status.clone());
    Ok(StatusView {
        status,
        app: state.view(),
        autostart_warning: crate::login::warning(),
        volume_offers,
        health,
    })
}

/// What `sync_now` did.
#[derive(Debug, Clone, Serialize)]
pub struct SyncNowReply {
    /// A run was in progress; one more follows it.
    pub queued: bool,
    /// The report of the run this call made, if it made one.
    pub report: Option<RunReport>,
}

/// Runs a sync now, or queues one more behind the running one.
#[tauri::command]
pub async fn sync_now<R: Runtime>(app: AppHandle<R>) -> Result<SyncNowReply, String> {
    match scheduler::request_run(&app, Trigger::Manual).await {
        RunRequest::Ran(Ok(report)) => Ok(SyncNowReply {
            queued: false,
            report: Some(*report),
        }),
        RunRequest::Ran(Err(e)) => Err(e),
        RunRequest::Queued | RunRequest::Skipped(_) => Ok(SyncNowReply {
            queued: true,
            report: None,
        }),
    }
}

/// Every backup in every available location, newest first.
#[tauri::command]
pub async fn list_backups(state: State<'_, AppState>) -> Result<Vec<BackupEntry>, String> {
    blocking(&state.engine, |e| {
        e.backups(None, None, true).map_err(|e| e.to_string())
    })
    .await
}

/// Puts backup `id` back in place (the engine checks the id and backs up the current version).
#[tauri::command]
pub async fn restore_backup<R: Runtime>(
    app: AppHandle<R>,
    id: String,
) -> Result<RestoreReport, String> {
    let engine = app.state::<AppState>().engine.clone();
    let (result, events) = blocking(&engine, move |e| {
        let mut events: Vec<Event> = Vec::new();
        let r = e
            .restore(&id, false, &mut |ev| events.push(ev.clone()))
            .map_err(|e| e.to_string());
        Ok((r, events))
    })
    .await?;
    let mut events = events;
    if let Ok(r) = &result {
        // A restored backup is announced whether or not the engine emitted the event.
        if !events
            .iter()
            .any(|e| matches!(e, Event::BackupRestored { .. }))
        {
            events.push(Event::BackupRestored {
                id: r.backup.id.clone(),
                file: r.backup.file.clone(),
            });
        }
    }
    let notices = app
        .state::<AppState>()
        .notifier()
        .notices(&events, None, None);
    crate::alerts::show(&app, &notices);
    scheduler::refresh_status(&app).await;
    result
}

/// Unresolved conflicts.
#[tauri::command]
pub async fn list_conflicts(state: State<'_, AppState>) -> Result<Vec<ConflictReport>, String> {
    blocking(&state.engine, |e| e.conflicts().map_err(|e| e.to_string())).await
}

/// Settles the conflict on `file` with the version in `location`.
#[tauri::command]
pub async fn resolve_conflict<R: Runtime>(
    app: AppHandle<R>,
    file: String,
    location: String,
) -> Result<RunReport, String> {
    settle(app, move |e, events| e.resolve(&file, &location, events)).await
}

/// Runs a resolve on a blocking thread as the app's own write (its writes are not taken for
/// the user's), then tells the tray and the page what came of it.
async fn settle<R: Runtime>(
    app: AppHandle<R>,
    resolve: impl FnOnce(&Engine, &mut dyn FnMut(&Event)) -> metasync::Result<RunReport>
        + Send
        + 'static,
) -> Result<RunReport, String> {
    let engine = app.state::<AppState>().engine.clone();
    let app2 = app.clone();
    let (result, events) = blocking(&engine, move |e| {
        let state = app2.state::<AppState>();
        let _writing = state.begin_write();
        let mut events: Vec<Event> = Vec::new();
        let r = resolve(&e, &mut |ev| events.push(ev.clone())).map_err(|e| e.to_string());
        if let Ok(report) = &r {
            state.record_own_writes(report);
        }
        Ok((r, events))
    })
    .await?;
    match &result {
        Ok(report) => scheduler::after_call(&app, "resolve", Ok(report), &events).await,
        // A refused resolve (unknown file or location) is the page's error, not a failed sync.
        Err(_) => scheduler::refresh_status(&app).await,
    }
    result
}

/// A file's timeline: every kept version in every available location, newest first, each
/// with what changed against the one before it.
#[tauri::command]
pub async fn file_history(
    state: State<'_, AppState>,
    file: String,
) -> Result<Vec<HistoryEntry>, String> {
    blocking(&state.engine, move |e| {
        e.history(&file).map_err(|e| e.to_string())
    })
    .await
}

/// The differences between versions `a` and `b` of `file` (ids from the timeline; the
/// engine's defaults when absent), only `table`'s rows when given.
#[tauri::command]
pub async fn diff_versions(
    state: State<'_, AppState>,
    file: String,
    a: Option<String>,
    b: Option<String>,
    table: Option<String>,
) -> Result<Diff, String> {
    blocking(&state.engine, move |e| {
        e.diff(&file, a.as_deref(), b.as_deref(), table.as_deref())
            .map_err(|e| e.to_string())
    })
    .await
}

/// Puts back only the rows of `table` with `keys` from version `id` into the local
/// database (the engine backs up the current version first and checks integrity).
#[tauri::command]
pub async fn restore_rows<R: Runtime>(
    app: AppHandle<R>,
    id: String,
    table: String,
    keys: Vec<String>,
) -> Result<RestoreRowsReport, String> {
    let engine = app.state::<AppState>().engine.clone();
    let result = blocking(&engine, move |e| {
        e.restore_rows(&id, &table, &keys)
            .map_err(|e| e.to_string())
    })
    .await;
    scheduler::refresh_status(&app).await;
    result
}

/// Settles the row conflict on `file` row by row: each choice keeps one location's value.
#[tauri::command]
pub async fn resolve_rows<R: Runtime>(
    app: AppHandle<R>,
    file: String,
    choices: Vec<RowChoice>,
) -> Result<RunReport, String> {
    settle(app, move |e, events| {
        e.resolve_rows(&file, &choices, events)
    })
    .await
}

/// The most recent runs from the archive, newest first.
#[tauri::command]
pub async fn recent_runs(
    state: State<'_, AppState>,
    limit: Option<usize>,
) -> Result<Vec<RunSummary>, String> {
    let limit = limit.unwrap_or(RECENT_RUNS).clamp(1, 500);
    blocking(&state.engine, move |e| {
        e.runs(limit).map_err(|e| e.to_string())
    })
    .await
}

/// Pauses scheduled runs until resumed, or resumes them; returns the app's state.
#[tauri::command]
pub fn set_paused<R: Runtime>(app: AppHandle<R>, paused: bool) -> AppView {
    let state = app.state::<AppState>();
    let was = state.is_paused();
    if paused {
        state.pause_for(PauseFor::Resumed, chrono::Local::now());
    } else {
        state.resume(chrono::Utc::now());
    }
    scheduler::pause_changed(&app, was);
    state.view()
}

/// Pauses scheduled runs for an hour, until tomorrow morning or until resumed.
#[tauri::command]
pub fn pause_for<R: Runtime>(app: AppHandle<R>, choice: PauseFor) -> AppView {
    let state = app.state::<AppState>();
    state.pause_for(choice, chrono::Local::now());
    scheduler::pause_changed(&app, false);
    state.view()
}

/// Turns "pause while on battery power" on or off.
#[tauri::command]
pub fn set_pause_on_battery<R: Runtime>(app: AppHandle<R>, enabled: bool) -> AppView {
    let state = app.state::<AppState>();
    let was = state.is_paused();
    state.set_pause_on_battery(enabled, chrono::Utc::now());
    scheduler::pause_changed(&app, was);
    state.view()
}

/// Where the panel was asked to go (a notification's or a tray item's target), once.
#[tauri::command]
pub fn take_focus(state: State<'_, AppState>) -> Option<crate::notify::Target> {
    state.take_focus()
}

/// Whether the app starts at login.
#[tauri::command]
pub fn get_autostart<R: Runtime>(app: AppHandle<R>) -> Result<bool, String> {
    app.autolaunch().is_enabled().map_err(|e| e.to_string())
}

/// Turns start-at-login on or off; returns the new setting. Turning it on is refused while
/// the app runs from a path that is gone at the next login ([`crate::login`]).
#[tauri::command]
pub fn set_autostart<R: Runtime>(app: AppHandle<R>, enabled: bool) -> Result<bool, String> {
    if enabled {
        if let Some(why) = crate::login::warning() {
            tracing::warn!("{why}");
            return Err(why);
        }
    }
    let auto = app.autolaunch();
    if enabled {
        auto.enable()
    } else {
        auto.disable()
    }
    .map_err(|e| e.to_string())?;
    crate::tray::refresh(&app);
    auto.is_enabled().map_err(|e| e.to_string())
}
