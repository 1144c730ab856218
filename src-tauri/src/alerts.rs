//! Notices on the desktop: the one module that shows them, and that a click on one leads
//! into the panel (see [`crate::notify`] for what is shown and when).

use crate::notify::Notice;
use tauri::{AppHandle, Runtime};
#[cfg(not(target_os = "linux"))]
use tauri_plugin_notification::NotificationExt;

/// Shows notices natively, off the caller's thread: a notification daemon that is slow to
/// start (D-Bus activation) must not hold up a command or a run. Delivery cannot be
/// confirmed on every platform (without a daemon the plugin still returns Ok), so errors
/// are only logged. On Linux each notice with a [`Target`] waits (on its own thread, until
/// it is closed) for a click that opens the panel there.
pub fn show<R: Runtime>(app: &AppHandle<R>, notices: &[Notice]) {
    for n in notices.iter().cloned() {
        let app = app.clone();
        tauri::async_runtime::spawn_blocking(move || show_one(&app, n));
    }
}

#[cfg(target_os = "linux")]
fn show_one<R: Runtime>(app: &AppHandle<R>, n: Notice) {
    let mut note = notify_rust::Notification::new();
    note.appname("Metasync").summary(&n.title).body(&n.body);
    if n.target.is_some() {
        note.action("default", "Open the panel");
    }
    match note.show() {
        Ok(handle) => {
            if let Some(target) = n.target {
                handle.wait_for_action(|action| {
                    if action == "default" {
                        crate::panel::open_at(app, target);
                    }
                });
            }
        }
        Err(e) => tracing::warn!("notification failed: {e}"),
    }
}

#[cfg(not(target_os = "linux"))]
fn show_one<R: Runtime>(app: &AppHandle<R>, n: Notice) {
    let shown = app
        .notification()
        .builder()
        .title(&n.title)
        .body(&n.body)
        .show();
    if let Err(e) = shown {
        tracing::warn!("notification failed: {e}");
    }
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
