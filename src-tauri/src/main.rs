//! Metasync.app's entry point: plugins, state, the hidden panel, the tray, the scheduler.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

use metasync_app::state::{AppState, EngineHandle};
use metasync_app::{panel, scheduler, tray};
use tauri::{RunEvent, WindowEvent};

fn main() {
    let engine = EngineHandle::from_env();
    let log = metasync_app::logs::init(engine.home());
    let mut builder = tauri::Builder::default();
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
            app.set_activation_policy(tauri::ActivationPolicy::Accessory);
            // The panel's web view (and WebKit's processes) exist only once it is opened.
            if open_panel {
                panel::create(app.handle(), true)?;
            }
            tray::create(app.handle())?;
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
    app.run(|_app, event| {
        // A tray app lives on with no window open; only Quit (an explicit exit code) ends it.
        if let RunEvent::ExitRequested {
            api, code: None, ..
        } = event
        {
            api.prevent_exit();
        }
    });
}
