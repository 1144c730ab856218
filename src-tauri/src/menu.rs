//! What a click on a tray menu item does: sync now, pause and resume, open the panel (on a
//! conflict, from the *Conflicts (n)* submenu), start at login, quit. The tray module draws the
//! menu; this one acts on it.

use crate::queue::Trigger;
use crate::state::AppState;
use tauri::menu::MenuEvent;
use tauri::{AppHandle, Manager, Runtime};
use tauri_plugin_autostart::ManagerExt;

/// Answers a click on the tray menu item of `event`.
pub fn on_menu_event<R: Runtime>(app: &AppHandle<R>, event: MenuEvent) {
    match event.id().as_ref() {
        "sync_now" => app.state::<AppState>().queue().trigger(Trigger::Manual),
        "resume" => {
            let state = app.state::<AppState>();
            state.resume(chrono::Utc::now());
            crate::scheduler::pause_changed(app, true);
        }
        "pause:battery" => {
            let state = app.state::<AppState>();
            let was = state.is_paused();
            let on = !state.pause_settings().on_battery;
            state.set_pause_on_battery(on, chrono::Utc::now());
            crate::scheduler::pause_changed(app, was);
        }
        id if crate::tray::pause_choice(id).is_some() => {
            if let Some(choice) = crate::tray::pause_choice(id) {
                let state = app.state::<AppState>();
                state.pause_for(choice, chrono::Local::now());
                crate::scheduler::pause_changed(app, false);
            }
        }
        "open_panel" => crate::panel::show(app),
        id if id.starts_with("conflict:") => {
            let file = id.trim_start_matches("conflict:").to_string();
            crate::panel::open_at(app, crate::notify::Target::Conflict(file));
        }
        "autostart" => {
            let auto = app.autolaunch();
            let result = match auto.is_enabled() {
                Ok(true) => auto.disable(),
                Ok(false) => match crate::login::warning() {
                    // Refused: said in the log and in a notification (the panel says it too).
                    Some(why) => {
                        tracing::warn!("{why}");
                        let notice = crate::notify::Notice {
                            title: "Start at login is off".into(),
                            body: why,
                            target: None,
                        };
                        crate::alerts::show(app, &[notice]);
                        Ok(())
                    }
                    None => auto.enable(),
                },
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!("start at login: {e}");
            }
            crate::tray::refresh(app);
        }
        "quit" => app.exit(0),
        _ => {}
    }
}
