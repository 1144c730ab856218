//! The tray icon: one icon per state, a tooltip with the last sync, and a menu rebuilt after
//! every run (Sync now, one line per location, Resume, a Pause submenu — for 1 hour, until
//! tomorrow, until resumed, while on battery power —, Open panel, Start at login, Quit). The line texts are pure functions, tested below.

use crate::pause::{PauseFor, Paused};
use crate::state::{AppState, AppView, PauseView, TrayState};
use metasync::{LocationStatus, StatusReport};
use tauri::image::Image;
use tauri::menu::{
    CheckMenuItem, IsMenuItem, Menu, MenuEvent, MenuItem, PredefinedMenuItem, Submenu,
};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Emitter, Manager, Runtime};
use tauri_plugin_autostart::ManagerExt;

/// The tray icon's id.
pub const TRAY_ID: &str = "metasync";
/// The event the page listens to: the app's state changed (a run ended, pause toggled).
pub const CHANGED_EVENT: &str = "metasync:changed";

/// The icon for a state. macOS gets black+alpha template images, which the menu bar tints.
fn icon_bytes(state: TrayState) -> &'static [u8] {
    #[cfg(target_os = "macos")]
    return match state {
        TrayState::InSync => include_bytes!("../../icons/tray/in_sync-template.png"),
        TrayState::Syncing => include_bytes!("../../icons/tray/syncing-template.png"),
        TrayState::Conflict => include_bytes!("../../icons/tray/conflict-template.png"),
        TrayState::Error => include_bytes!("../../icons/tray/error-template.png"),
        TrayState::Offline => include_bytes!("../../icons/tray/offline-template.png"),
        TrayState::Paused => include_bytes!("../../icons/tray/paused-template.png"),
    };
    #[cfg(not(target_os = "macos"))]
    match state {
        TrayState::InSync => include_bytes!("../../icons/tray/in_sync.png"),
        TrayState::Syncing => include_bytes!("../../icons/tray/syncing.png"),
        TrayState::Conflict => include_bytes!("../../icons/tray/conflict.png"),
        TrayState::Error => include_bytes!("../../icons/tray/error.png"),
        TrayState::Offline => include_bytes!("../../icons/tray/offline.png"),
        TrayState::Paused => include_bytes!("../../icons/tray/paused.png"),
    }
}

fn icon(state: TrayState) -> tauri::Result<Image<'static>> {
    Image::from_bytes(icon_bytes(state))
}

/// The first 7 hex digits of a hash.
pub fn short_hash(hash: &str) -> &str {
    hash.get(..7).unwrap_or(hash)
}

/// One menu line for a location: its health, then `metastore.db`'s short hash and counts.
pub fn location_line(loc: &LocationStatus) -> String {
    let name = &loc.location.name;
    if !loc.location.available {
        let why = match loc.location.reason.as_deref() {
            Some(r) => crate::health::short_reason(&loc.location.path, r),
            None => "unavailable".to_string(),
        };
        return format!("{name} — unavailable: {why}");
    }
    let db = loc
        .files
        .iter()
        .find(|f| f.file == "metastore.db")
        .or_else(|| {
            loc.files
                .iter()
                .find(|f| f.kind.as_deref() == Some("sqlite"))
        });
    let mut parts = vec![format!("{name} — ok")];
    match db {
        Some(f) => match f.sha256.as_deref() {
            Some(h) if f.state == metasync::model::FileState::Present => {
                parts.push(format!("{} {}", f.file, short_hash(h)));
                if let Some(n) = f.entities {
                    parts.push(metasync::words::plural(n, "entity"));
                }
                if let Some(n) = f.conversations {
                    parts.push(metasync::words::plural(n, "conversation"));
                }
            }
            _ => parts.push(format!("{} {}", f.file, f.state)),
        },
        None => parts.push("no database".to_string()),
    }
    parts.join(" · ")
}

/// The menu's informational lines: the state and last sync, then one per location.
pub fn info_lines(view: &AppView, status: Option<&StatusReport>) -> Vec<String> {
    let mut lines = vec![match &view.last {
        Some(l) => format!(
            "{} — last {} {}",
            view.tray_label,
            l.command,
            crate::state::short_time(&l.finished)
        ),
        None => view.tray_label.clone(),
    }];
    match status {
        Some(s) => {
            lines.extend(s.locations.iter().map(location_line));
            lines.extend(s.warnings.iter().take(1).cloned());
        }
        None => lines.push("Locations not read yet".to_string()),
    }
    lines
}

fn build_menu<R: Runtime>(app: &AppHandle<R>) -> tauri::Result<Menu<R>> {
    let state = app.state::<AppState>();
    let view = state.view();
    let status = state.last_status();
    let sync_label = if view.running {
        "Sync now (a run is in progress)"
    } else {
        "Sync now"
    };
    let autostart = app.autolaunch().is_enabled().unwrap_or(false);
    let mut items: Vec<Box<dyn IsMenuItem<R>>> = vec![
        Box::new(MenuItem::with_id(
            app,
            "sync_now",
            sync_label,
            true,
            None::<&str>,
        )?),
        Box::new(PredefinedMenuItem::separator(app)?),
    ];
    for (i, line) in info_lines(&view, status.as_ref()).into_iter().enumerate() {
        items.push(Box::new(MenuItem::with_id(
            app,
            format!("info:{i}"),
            line,
            false,
            None::<&str>,
        )?));
    }
    let conflicts = status
        .as_ref()
        .map(|s| s.conflicts.as_slice())
        .unwrap_or(&[]);
    if !conflicts.is_empty() {
        items.push(Box::new(PredefinedMenuItem::separator(app)?));
        items.push(Box::new(conflicts_menu(app, conflicts)?));
    }
    items.push(Box::new(PredefinedMenuItem::separator(app)?));
    if matches!(
        view.pause,
        Some(PauseView {
            why: Paused::User(_),
            ..
        })
    ) {
        items.push(Box::new(MenuItem::with_id(
            app,
            "resume",
            "Resume syncing",
            true,
            None::<&str>,
        )?));
    }
    items.push(Box::new(pause_menu(app, view.pause_on_battery)?));
    items.push(Box::new(MenuItem::with_id(
        app,
        "open_panel",
        "Open panel…",
        true,
        None::<&str>,
    )?));
    items.push(Box::new(CheckMenuItem::with_id(
        app,
        "autostart",
        "Start at login",
        true,
        autostart,
        None::<&str>,
    )?));
    items.push(Box::new(PredefinedMenuItem::separator(app)?));
    items.push(Box::new(MenuItem::with_id(
        app,
        "quit",
        "Quit Metasync",
        true,
        None::<&str>,
    )?));
    let refs: Vec<&dyn IsMenuItem<R>> = items.iter().map(|b| b.as_ref()).collect();
    Menu::with_items(app, &refs)
}

/// The *Conflicts (n)* submenu's title and its items: (menu id, words) per conflict.
pub fn conflict_items(conflicts: &[metasync::ConflictReport]) -> (String, Vec<(String, String)>) {
    let items = conflicts
        .iter()
        .map(|c| {
            let rows = match c.rows.len() {
                0 => String::new(),
                n => format!(" ({})", metasync::words::plural(n as u64, "row")),
            };
            (
                format!("conflict:{}", c.file),
                format!("{}{rows} — {}", c.file, c.reason),
            )
        })
        .collect();
    (format!("Conflicts ({})", conflicts.len()), items)
}

fn conflicts_menu<R: Runtime>(
    app: &AppHandle<R>,
    conflicts: &[metasync::ConflictReport],
) -> tauri::Result<Submenu<R>> {
    let (title, items) = conflict_items(conflicts);
    let menu = Submenu::with_id(app, "conflicts", title, true)?;
    for (id, label) in items {
        menu.append(&MenuItem::with_id(app, id, label, true, None::<&str>)?)?;
    }
    Ok(menu)
}

/// The menu ids and words of the pause choices.
pub const PAUSE_CHOICES: [(&str, &str); 3] = [
    ("pause:hour", "For 1 hour"),
    ("pause:tomorrow", "Until tomorrow (08:00)"),
    ("pause:resumed", "Until resumed"),
];

fn pause_menu<R: Runtime>(app: &AppHandle<R>, on_battery: bool) -> tauri::Result<Submenu<R>> {
    let menu = Submenu::with_id(app, "pause", "Pause syncing", true)?;
    for (id, label) in PAUSE_CHOICES {
        menu.append(&MenuItem::with_id(app, id, label, true, None::<&str>)?)?;
    }
    menu.append(&PredefinedMenuItem::separator(app)?)?;
    menu.append(&CheckMenuItem::with_id(
        app,
        "pause:battery",
        "While on battery power",
        true,
        on_battery,
        None::<&str>,
    )?)?;
    Ok(menu)
}

/// The pause a menu id asks for.
pub fn pause_choice(id: &str) -> Option<PauseFor> {
    match id {
        "pause:hour" => Some(PauseFor::Hour),
        "pause:tomorrow" => Some(PauseFor::Tomorrow),
        "pause:resumed" => Some(PauseFor::Resumed),
        _ => None,
    }
}

/// The function that answers a click on one of the tray menu's items.
pub type MenuHandler<R> = fn(&AppHandle<R>, MenuEvent);

/// Creates the tray icon; `on_menu` answers its menu's clicks (`crate::menu::on_menu_event`:
/// the tray draws, the menu module acts, so neither depends on the other's callers).
pub fn create<R: Runtime>(app: &AppHandle<R>, on_menu: MenuHandler<R>) -> tauri::Result<()> {
    let view = app.state::<AppState>().view();
    let builder = TrayIconBuilder::with_id(TRAY_ID)
        .icon(icon(view.tray_state)?)
        .tooltip(&view.tooltip)
        .menu(&build_menu(app)?)
        .on_menu_event(on_menu);
    #[cfg(target_os = "macos")]
    let builder = builder.icon_as_template(true);
    builder.build(app)?;
    Ok(())
}

/// Brings the tray up to date with the app's state (no-op without a tray, as in tests).
pub fn refresh<R: Runtime>(app: &AppHandle<R>) {
    if app.tray_by_id(TRAY_ID).is_none() {
        return;
    }
    let app2 = app.clone();
    // Menus and tray icons belong to the main (GTK / AppKit) thread.
    let _ = app.run_on_main_thread(move || {
        let Some(tray) = app2.tray_by_id(TRAY_ID) else {
            return;
        };
        let view = app2.state::<AppState>().view();
        let result = icon(view.tray_state)
            .and_then(|i| tray.set_icon(Some(i)))
            .and_then(|_| tray.set_tooltip(Some(&view.tooltip)))
            .and_then(|_| build_menu(&app2))
            .and_then(|m| tray.set_menu(Some(m)));
        #[cfg(target_os = "macos")]
        let _ = tray.set_icon_as_template(true);
        if let Err(e) = result {
            tracing::warn!("tray update failed: {e}");
        }
    });
}

/// The app's state changed: rebuild the tray, tell the page.
pub fn changed<R: Runtime>(app: &AppHandle<R>) {
    refresh(app);
    let view = app.state::<AppState>().view();
    let _ = app.emit(CHANGED_EVENT, view);
}

#[cfg(test)]
mod tests {
    use super::*;
    use metasync::{FileReport, LocationReport};

    fn loc(
        name: &str,
        available: bool,
        reason: Option<&str>,
        files: Vec<FileReport>,
    ) -> LocationStatus {
        LocationStatus {
            location: LocationReport {
                name: name.into(),
                path: format!("/{name}"),
                available,
                reason: reason.map(Into::into),
            },
            files,
            conflict_copies: vec![],
            skipped: vec![],
        }
    }

    fn db(state: &str, hash: Option<&str>) -> FileReport {
        FileReport {
            file: "metastore.db".into(),
            state: state.parse().expect("a file state"),
            size: Some(4096),
            mtime: None,
            sha256: hash.map(Into::into),
            kind: Some("sqlite".into()),
            entities: Some(1204),
            conversations: Some(88),
            note: None,
        }
    }

    #[test]
    fn location_lines() {
        assert_eq!(
            location_line(&loc(
                "local",
                true,
                None,
                vec![db("present", Some("3f2a9c1e77aa"))]
            )),
            "local — ok · metastore.db 3f2a9c1 · 1204 entities · 88 conversations"
        );
        let mut one = db("present", Some("3f2a9c1e77aa"));
        (one.entities, one.conversations) = (Some(1), Some(1));
        assert_eq!(
            location_line(&loc("local", true, None, vec![one])),
            "local — ok · metastore.db 3f2a9c1 · 1 entity · 1 conversation"
        );
        assert_eq!(
            location_line(&loc("usb", false, Some("drive not mounted"), vec![])),
            "usb — unavailable: drive not mounted"
        );
        assert_eq!(
            location_line(&loc("cloud", true, None, vec![db("evicted", None)])),
            "cloud — ok · metastore.db evicted"
        );
        assert_eq!(
            location_line(&loc("cloud", true, None, vec![])),
            "cloud — ok · no database"
        );
    }

    #[test]
    fn the_conflicts_submenu_names_each_conflict() {
        let c = |file: &str, rows: usize| metasync::ConflictReport {
            file: file.into(),
            detected: "2026-01-01T10:00:00+00:00".into(),
            reason: "changed in local and usb".into(),
            candidates: vec![],
            rows: (0..rows)
                .map(|i| metasync::merge::RowConflict {
                    file: file.into(),
                    table: "entities".into(),
                    key: format!("[{i}]"),
                    values: vec![],
                    winner: None,
                })
                .collect(),
        };
        let (title, items) = conflict_items(&[c("metastore.db", 1), c("notes/a.md", 0)]);
        assert_eq!(title, "Conflicts (2)");
        assert_eq!(
            items,
            vec![
                (
                    "conflict:metastore.db".to_string(),
                    "metastore.db (1 row) — changed in local and usb".to_string()
                ),
                (
                    "conflict:notes/a.md".to_string(),
                    "notes/a.md — changed in local and usb".to_string()
                ),
            ]
        );
        let (_, items) = conflict_items(&[c("metastore.db", 3)]);
        assert!(items[0].1.starts_with("metastore.db (3 rows)"), "{items:?}");
    }

    #[test]
    fn short_hash_never_panics() {
        assert_eq!(short_hash("abc"), "abc");
        assert_eq!(short_hash("0123456789"), "0123456");
        // 7 bytes would split a character: the whole string, not a panic.
        assert_eq!(short_hash("ééééé"), "ééééé");
    }
}
