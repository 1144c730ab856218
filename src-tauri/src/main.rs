//! Metasync.app's entry point: plugins, state, the hidden panel, the tray, the scheduler.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

use metasync_app::state::{AppState, EngineHandle};
use metasync_app::{panel, scheduler, tray};
use tauri::{RunEvent, WindowEvent};

fn main() {
    let engine = EngineHandle::from_env();
    let log = metasync_app::logs::init(engine.home());
    let mut builder = tauri::Builder::default();
    // A menu-bar app: launching (at login too) must not take the focus from the app in front.
    #[cfg(target_os = "macos")]
    {
        builder = builder.activate_ignoring_other_apps(false);
    }
    // A second launch opens the first one's panel. End-to-end tests run sessions side by
    // side with a session bus, where a hand-over would hang WebDriver: they turn it off.
    if std::env::var("METASYNC_NO_SINGLE_INSTANCE").as_deref() != Ok("1") {
        builder = builder.plugin(tauri_plugin_single_instance::init(|app, _argv, _cwd| {
            panel::show(app)
        }));
    }
    let open_panel = std::env::args().any(|a| a == "--panel");
    let app = builder
        .plugin(tauri_plugin_autostart::init(
            tauri_plugin_autostart::MacosLauncher::LaunchAgent,
            None,
        ))
        .plugin(tauri_plugin_notification::init())
        .manage(AppState::new(engine))
        .invoke_handler(metasync_app::handler())
        .setup(move |app| {
            #[cfg(target_os = "macos")]
            metasync_app::alerts::register_sender(app.handle());
            // The panel's web view (and WebKit's processes) exist only once it is opened.
            if open_panel {
                panel::create(app.handle(), true)?;
            }
            tray::create(app.handle(), metasync_app::menu::on_menu_event)?;
            scheduler::start(app.handle().clone());
            Ok(())
        })
        .on_window_event(|window, event| {
            if let WindowEvent::CloseRequested { api, .. } = event {
                api.prevent_close();
                let _ = window.hide();
            }
        })
        .build(metasync_app::context());
    let app = match app {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            eprintln!("metasync-app: cannot start: {e}");
            drop(log);
            std::process::exit(1);
        }
    };
    // The accessory policy (no Dock icon, no menu bar of its own) is set on the built app,
    // before the event loop starts: set in `setup`, it came after the launch had already
    // made the app a regular one, and a Dock icon flashed at every start.
    #[cfg(target_os = "macos")]
    let app = {
        let mut app = app;
        app.set_activation_policy(tauri::ActivationPolicy::Accessory);
        app
    };
    // `_app` is used on macOS only (the reopen event).
    app.run(|_app, event| match event {
        // A tray app lives on with no window open; only Quit (an explicit exit code) ends it.
        RunEvent::ExitRequested {
            api, code: None, ..
        } => api.prevent_exit(),
        #[cfg(target_os = "macos")]
        RunEvent::Reopen { .. } => panel::reopen(_app),
        _ => {}
    });
}
