//! What the app's IPC tests share: the app on Tauri's mock runtime with its real context
//! (capabilities included), an engine over `home`, and the panel window to call from.

use metasync_app::state::{AppState, EngineHandle};
use std::path::Path;
use tauri::test::{mock_builder, MockRuntime};
use tauri::{App, WebviewUrl, WebviewWindow, WebviewWindowBuilder};

/// The app over the home folder `home` (its `metasync.toml` already written) and its panel.
pub fn panel_app(home: &Path) -> (App<MockRuntime>, WebviewWindow<MockRuntime>) {
    let app = mock_builder()
        .plugin(tauri_plugin_autostart::init(
            tauri_plugin_autostart::MacosLauncher::LaunchAgent,
            None,
        ))
        .plugin(tauri_plugin_notification::init())
        .manage(AppState::new(EngineHandle::new(home, None)))
        .invoke_handler(metasync_app::handler())
        .build(metasync_app::context())
        .expect("mock app");
    let panel = WebviewWindowBuilder::new(&app, "panel", WebviewUrl::App("index.html".into()))
        .build()
        .expect("panel window");
    (app, panel)
}
