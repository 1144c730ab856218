//! Metasync.app: the menu-bar face of the `metasync` engine. It holds no sync logic: it
//! decides *when* the engine runs and shows what the engine reports — in the tray, in
//! native notifications, and in a small web-view panel (`ui/`).
#![deny(missing_docs)]

pub mod alerts;
pub mod commands;
pub mod health;
pub mod login;
pub mod logs;
pub mod menu;
pub mod notify;
pub mod panel;
pub mod pause;
pub mod queue;
pub mod scheduler;
pub mod state;
pub mod tray;

use tauri::{ipc::Invoke, Runtime};

/// The app's Tauri context (config, assets, capabilities), for any runtime.
pub fn context<R: Runtime>() -> tauri::Context<R> {
    tauri::generate_context!()
}

/// The invoke handler with every command the panel may call.
pub fn handler<R: Runtime>() -> impl Fn(Invoke<R>) -> bool + Send + Sync + 'static {
    tauri::generate_handler![
        commands::get_status,
        commands::sync_now,
        commands::list_backups,
        commands::restore_backup,
        commands::list_conflicts,
        commands::resolve_conflict,
        commands::recent_runs,
        commands::set_paused,
        commands::pause_for,
        commands::set_pause_on_battery,
        commands::take_focus,
        commands::file_history,
        commands::diff_versions,
        commands::restore_rows,
        commands::resolve_rows,
        commands::get_autostart,
        commands::set_autostart,
    ]
}
