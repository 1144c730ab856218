//! The panel window: created the first time it is opened (from the tray, a second launch, or
//! `--panel` at start), so a tray-only app runs no WebKit web process (~110 MB PSS measured
//! in BENCHMARKS.md); hidden, not destroyed, when closed, so it opens again at once.

use crate::notify::Target;
use crate::state::AppState;
use tauri::{
    AppHandle, Emitter, Manager, Runtime, WebviewUrl, WebviewWindow, WebviewWindowBuilder,
};

/// The event that tells an open page to ask where to go ([`AppState::take_focus`]).
pub const FOCUS_EVENT: &str = "metasync:focus";

/// The panel window's label (the capability file grants commands to it only).
pub const PANEL: &str = "panel";

/// Creates the panel window, visible or not.
pub fn create<R: Runtime>(app: &AppHandle<R>, visible: bool) -> tauri::Result<WebviewWindow<R>> {
    WebviewWindowBuilder::new(app, PANEL, WebviewUrl::App("index.html".into()))
        .title("Metasync")
        .inner_size(760.0, 680.0)
        .min_inner_size(520.0, 420.0)
        .visible(visible)
        .build()
}

/// Shows and focuses the panel, creating it if it was never made.
pub fn show<R: Runtime>(app: &AppHandle<R>) {
    let window = match app.get_webview_window(PANEL) {
        Some(w) => w,
        None => match create(app, true) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!("cannot open the panel: {e}");
                return;
            }
        },
    };
    let _ = window.unminimize();
    let _ = window.show();
    let _ = window.set_focus();
}

/// Shows the panel on `target` (a conflict, a file's timeline, the runs): the target waits
/// in the app's state until the page takes it — at its start when the panel is new, or on
/// the focus event when it is open.
pub fn open_at<R: Runtime>(app: &AppHandle<R>, target: Target) {
    app.state::<AppState>().set_focus(target);
    let app2 = app.clone();
    // Windows belong to the main thread (a notification's click arrives on another).
    let _ = app.run_on_main_thread(move || {
        show(&app2);
        let _ = app2.emit_to(PANEL, FOCUS_EVENT, ());
    });
}

/// The app was opened again while it runs (Finder, Spotlight, `open`, a login item: macOS
/// sends a reopen event instead of starting a second process): open the panel, the app's
/// only window — a menu-bar app otherwise shows nothing for it.
pub fn reopen<R: Runtime>(app: &AppHandle<R>) {
    tracing::info!("opened again: showing the panel");
    show(app);
}
