//! The panel's commands through Tauri's IPC on the mock runtime, with the app's real
//! context (capabilities included) and real temporary folders behind the engine: a home
//! and one remote folder configured in a metasync.toml written here.

mod support;

use metasync_app::state::{AppState, EngineHandle};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{get_ipc_response, mock_builder, MockRuntime, INVOKE_KEY};
use tauri::webview::InvokeRequest;
use tauri::{App, Manager, WebviewUrl, WebviewWindow, WebviewWindowBuilder};

/// Start-at-login writes `$HOME/.config/autostart`: every test in this binary shares one
/// temporary HOME, set before any app is built.
fn temp_user_home() -> &'static Path {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    HOME.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp HOME");
        std::env::set_var("HOME", dir.path());
        std::env::set_var("XDG_CONFIG_HOME", dir.path().join(".config"));
        dir
    })
    .path()
}

struct Fixture {
    _dir: tempfile::TempDir,
    home: PathBuf,
    remote: PathBuf,
    _app: App<MockRuntime>,
    panel: WebviewWindow<MockRuntime>,
}

const RULES: &str = "sorting-rules.yaml";

fn fixture(strategy: &str) -> Fixture {
    temp_user_home();
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let remote = dir.path().join("remote");
    std::fs::create_dir_all(&home).expect("home");
    std::fs::create_dir_all(&remote).expect("remote");
    let config = format!(
        "interval_secs = 3600\nstrategy = \"{strategy}\"\nfiles = [\"metastore.db\", \"{RULES}\"]\n\n\
         [[locations]]\nname = \"drive\"\npath = {:?}\n",
        remote.display().to_string()
    );
    std::fs::write(home.join("metasync.toml"), config).expect("config");
    std::fs::write(home.join(RULES), "rules: v1\n").expect("rules");
    let (app, panel) = support::panel_app(&home);
    Fixture {
        _dir: dir,
        home,
        remote,
        _app: app,
        panel,
    }
}

impl Fixture {
    fn call(&self, cmd: &str, args: Value) -> Result<Value, Value> {
        call_on(&self.panel, cmd, args)
    }

    fn ok(&self, cmd: &str, args: Value) -> Value {
        match self.call(cmd, args) {
            Ok(v) => v,
            Err(e) => panic!("{cmd} failed: {e}"),
        }
    }

    fn read(&self, root: &Path, file: &str) -> String {
        std::fs::read_to_string(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    /// Sets a file's mtime explicitly, so `newest` and the scan cache see a real edit.
    fn write_at(&self, root: &Path, file: &str, text: &str, secs_ago: u64) {
        let path = root.join(file);
        std::fs::write(&path, text).expect("write");
        let t = std::time::SystemTime::now() - std::time::Duration::from_secs(secs_ago);
        let f = std::fs::File::options()
            .write(true)
            .open(&path)
            .expect("open");
        f.set_modified(t).expect("set mtime");
    }
}

fn call_on(w: &WebviewWindow<MockRuntime>, cmd: &str, args: Value) -> Result<Value, Value> {
    let request = InvokeRequest {
        cmd: cmd.into(),
        callback: CallbackFn(0),
        error: CallbackFn(1),
        // Local origin: http://tauri.localhost counts as remote on Linux (LINUX-TAURI.md).
        url: "tauri://localhost".parse().expect("url"),
        body: InvokeBody::Json(args),
        headers: Default::default(),
        invoke_key: INVOKE_KEY.to_string(),
    };
    get_ipc_response(w, request).map(|b| b.deserialize::<Value>().unwrap_or(Value::Null))
}

fn names(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn status_shows_both_locations_and_the_app_state() {
    let f = fixture("newest");
    let s = f.ok("get_status", json!({}));
    assert_eq!(names(&s, "locations"), ["local", "drive"], "{s}");
    assert_eq!(s["locations"][0]["available"], true, "{s}");
    assert_eq!(s["app"]["paused"], false);
    assert_eq!(s["app"]["running"], false);
    assert!(s["app"]["tray_state"].is_string(), "{s}");
}

#[test]
fn status_offers_the_mounted_volumes_for_a_drive_never_seen() {
    let f = fixture("newest");
    let config = f.home.join("metasync.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(
        "\n[[locations]]\nname = \"usb\"\npath = \"/nonexistent-media/usb/.metasystem\"\n\
         mount_point = \"/nonexistent-media/usb\"\n",
    );
    std::fs::write(&config, text).expect("config");
    let s = f.ok("get_status", json!({}));
    let offers = s["volume_offers"].as_array().expect("volume_offers");
    // Only the drive location, not the plain folder `drive` (no mount point).
    assert_eq!(offers.len(), 1, "{s}");
    assert_eq!(offers[0]["location"], "usb", "{s}");
    assert_eq!(offers[0]["mount_point"], "/nonexistent-media/usb", "{s}");
    assert!(offers[0]["volumes"].is_array(), "{s}");
    // The test binary does not run from a disk image: start at login is allowed.
    assert_eq!(s["autostart_warning"], Value::Null, "{s}");
    assert!(s
        .as_object()
        .is_some_and(|o| o.contains_key("autostart_warning")));
}

#[test]
fn reopening_the_app_opens_the_panel() {
    temp_user_home();
    let app = mock_builder()
        .manage(AppState::new(EngineHandle::new("/nonexistent-home", None)))
        .build(metasync_app::context())
        .expect("mock app");
    assert!(app.get_webview_window("panel").is_none());
    metasync_app::panel::reopen(app.handle());
    let panel = app
        .get_webview_window("panel")
        .expect("the panel was opened");
    assert_eq!(panel.label(), "panel");
}

#[test]
fn sync_now_copies_to_the_remote_and_lands_in_history() {
    let f = fixture("newest");
    let r = f.ok("sync_now", json!({}));
    assert_eq!(r["queued"], false, "{r}");
    assert_eq!(r["report"]["exit_code"], 0, "{r}");
    assert_eq!(f.read(&f.remote, RULES), "rules: v1\n");
    let runs = f.ok("recent_runs", json!({ "limit": 5 }));
    assert!(
        !runs.as_array().map(Vec::is_empty).unwrap_or(true),
        "{runs}"
    );
    let s = f.ok("get_status", json!({}));
    assert_eq!(s["app"]["tray_state"], "in_sync", "{s}");
    assert_eq!(s["app"]["last"]["outcome"], "ok", "{s}");
}

#[test]
fn backups_list_and_restore() {
    let f = fixture("newest");
    f.ok("sync_now", json!({}));
    // A newer edit at home overwrites the remote's copy, which is kept as a backup there.
    f.write_at(&f.home, RULES, "rules: v2\n", 0);
    f.ok("sync_now", json!({}));
    assert_eq!(f.read(&f.remote, RULES), "rules: v2\n");
    let backups = f.ok("list_backups", json!({}));
    let list = backups.as_array().cloned().unwrap_or_default();
    let b = list
        .iter()
        .find(|b| b["file"] == RULES && b["location"] == "drive")
        .unwrap_or_else(|| panic!("a backup of the remote's v1: {backups}"));
    let id = b["id"].as_str().expect("id").to_string();
    let r = f.ok("restore_backup", json!({ "id": id }));
    assert_eq!(r["backup"]["id"], id.as_str(), "{r}");
    assert_eq!(f.read(&f.remote, RULES), "rules: v1\n");
    // The page cannot name a path of its own choosing.
    let refused = f.call("restore_backup", json!({ "id": "/etc/passwd" }));
    assert!(refused.is_err(), "{refused:?}");
}

#[test]
fn a_manual_conflict_is_listed_and_resolved() {
    let f = fixture("manual");
    f.ok("sync_now", json!({}));
    f.write_at(&f.home, RULES, "rules: home\n", 5);
    f.write_at(&f.remote, RULES, "rules: drive\n", 0);
    let r = f.ok("sync_now", json!({}));
    assert_eq!(r["report"]["exit_code"], 3, "{r}");
    let conflicts = f.ok("list_conflicts", json!({}));
    assert_eq!(conflicts[0]["file"], RULES, "{conflicts}");
    let s = f.ok("get_status", json!({}));
    assert_eq!(s["app"]["tray_state"], "conflict", "{s}");
    // Nothing was overwritten while waiting.
    assert_eq!(f.read(&f.home, RULES), "rules: home\n");
    assert_eq!(f.read(&f.remote, RULES), "rules: drive\n");

    let bad = f.call(
        "resolve_conflict",
        json!({ "file": RULES, "location": "nowhere" }),
    );
    assert!(bad.is_err(), "{bad:?}");
    f.ok(
        "resolve_conflict",
        json!({ "file": RULES, "location": "drive" }),
    );
    assert_eq!(f.read(&f.home, RULES), "rules: drive\n");
    assert_eq!(f.read(&f.remote, RULES), "rules: drive\n");
    let conflicts = f.ok("list_conflicts", json!({}));
    assert_eq!(conflicts, json!([]));
    let s = f.ok("get_status", json!({}));
    assert_eq!(s["app"]["tray_state"], "in_sync", "{s}");
}

#[test]
fn pause_stops_scheduled_runs_but_not_sync_now() {
    let f = fixture("newest");
    let v = f.ok("set_paused", json!({ "paused": true }));
    assert_eq!(v["paused"], true);
    assert_eq!(v["tray_state"], "paused");
    let state = f.panel.state::<AppState>();
    assert!(state.is_paused());
    let rt = tauri::async_runtime::block_on(metasync_app::scheduler::request_run(
        f.panel.app_handle(),
        metasync_app::scheduler::Trigger::Interval,
    ));
    assert!(
        matches!(rt, metasync_app::scheduler::RunRequest::Skipped("paused")),
        "{rt:?}"
    );
    assert!(
        !f.remote.join(RULES).exists(),
        "a paused tick writes nothing"
    );
    // The user's own click still runs.
    f.ok("sync_now", json!({}));
    assert_eq!(f.read(&f.remote, RULES), "rules: v1\n");
    let v = f.ok("set_paused", json!({ "paused": false }));
    assert_eq!(v["paused"], false);
}

#[test]
fn autostart_round_trip_in_a_temp_home() {
    let f = fixture("newest");
    assert_eq!(f.ok("set_autostart", json!({ "enabled": true })), true);
    assert_eq!(f.ok("get_autostart", json!({})), true);
    assert_eq!(f.ok("set_autostart", json!({ "enabled": false })), false);
    assert_eq!(f.ok("get_autostart", json!({})), false);
}

#[test]
fn only_the_panel_window_may_call_commands() {
    let f = fixture("newest");
    let other = WebviewWindowBuilder::new(
        f.panel.app_handle(),
        "other",
        WebviewUrl::App("index.html".into()),
    )
    .build()
    .expect("window");
    let r = call_on(&other, "get_autostart", json!({}));
    assert!(r.is_err(), "{r:?}");
    let r = call_on(&f.panel, "not_a_command", json!({}));
    assert!(r.is_err(), "{r:?}");
}

#[test]
fn sync_now_during_a_run_queues_exactly_one_more() {
    use metasync_app::queue::Admission;
    let f = fixture("newest");
    let state = f.panel.state::<AppState>();
    // A scheduled run holds the queue.
    assert_eq!(state.queue().request(false), Admission::Start);
    for _ in 0..3 {
        let r = f.ok("sync_now", json!({}));
        assert_eq!(r["queued"], true, "{r}");
        assert_eq!(r["report"], Value::Null);
    }
    assert!(!f.remote.join(RULES).exists(), "no second writer");
    let s = f.ok("get_status", json!({}));
    assert_eq!(s["app"]["tray_state"], "syncing", "{s}");
    assert!(
        state.queue().finish(),
        "one more run follows the running one"
    );
    assert!(!state.queue().finish(), "and only one");
}

/// A fake `/sys/class/power_supply` with one mains supply and one system battery.
fn power_supply(dir: &Path, mains_online: bool) {
    for (name, attrs) in [
        (
            "AC",
            vec![
                ("type", "Mains"),
                ("online", if mains_online { "1" } else { "0" }),
            ],
        ),
        (
            "BAT0",
            vec![
                ("type", "Battery"),
                ("scope", "System"),
                (
                    "status",
                    if mains_online {
                        "Charging"
                    } else {
                        "Discharging"
                    },
                ),
            ],
        ),
    ] {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).expect("supply dir");
        for (k, v) in attrs {
            std::fs::write(d.join(k), format!("{v}\n")).expect("supply attr");
        }
    }
}

#[test]
fn pause_for_an_hour_then_the_clock_ends_it() {
    let f = fixture("newest");
    let v = f.ok("pause_for", json!({ "choice": "hour" }));
    assert_eq!(v["paused"], true, "{v}");
    assert_eq!(v["pause"]["reason"], "user", "{v}");
    assert!(
        v["tray_label"]
            .as_str()
            .unwrap_or("")
            .starts_with("Paused until "),
        "{v}"
    );
    let state = f.panel.state::<AppState>();
    let until = match state.pause_settings().user {
        Some(metasync_app::pause::Until::Time(t)) => t,
        other => panic!("an hour's pause: {other:?}"),
    };
    let secs = (until - chrono::Utc::now()).num_seconds();
    assert!((3590..=3600).contains(&secs), "{secs} s");
    // Kept across a restart of the app.
    let again = AppState::new(EngineHandle::new(&f.home, None));
    assert!(again.is_paused(), "the saved pause holds after a restart");
    // A scheduled run is refused while paused...
    let rt = tauri::async_runtime::block_on(metasync_app::scheduler::request_run(
        f.panel.app_handle(),
        metasync_app::scheduler::Trigger::Interval,
    ));
    assert!(
        matches!(rt, metasync_app::scheduler::RunRequest::Skipped("paused")),
        "{rt:?}"
    );
    // ...until the loop's poll sees the hour is over.
    metasync_app::scheduler::poll_pause(f.panel.app_handle(), until - chrono::Duration::seconds(1));
    assert!(state.is_paused(), "a second before the end");
    metasync_app::scheduler::poll_pause(f.panel.app_handle(), until);
    assert!(!state.is_paused(), "over at the hour");
    assert_eq!(state.pause_settings().user, None, "and forgotten");
    let s = f.ok("get_status", json!({}));
    assert_eq!(s["app"]["pause"], Value::Null, "{s}");
    let v = f.ok("pause_for", json!({ "choice": "tomorrow" }));
    assert!(
        v["tray_label"].as_str().unwrap_or("").contains("08:00"),
        "{v}"
    );
    let v = f.ok("set_paused", json!({ "paused": false }));
    assert_eq!(v["paused"], false, "{v}");
    let bad = f.call("pause_for", json!({ "choice": "forever-and-a-day" }));
    assert!(bad.is_err(), "{bad:?}");
}

#[test]
fn pause_while_on_battery_follows_the_power_supply() {
    let f = fixture("newest");
    let supply = tempfile::tempdir().expect("power_supply");
    let dir = supply.path().to_path_buf();
    power_supply(&dir, false);
    // The app's state with the fake power supply, as the real one reads /sys.
    let app = mock_builder()
        .plugin(tauri_plugin_notification::init())
        .manage(
            AppState::new(EngineHandle::new(&f.home, None))
                .with_power_source(Box::new(move || metasync_app::pause::linux_power(&dir))),
        )
        .invoke_handler(metasync_app::handler())
        .build(metasync_app::context())
        .expect("mock app");
    let panel = WebviewWindowBuilder::new(&app, "panel", WebviewUrl::App("index.html".into()))
        .build()
        .expect("panel window");
    let v = call_on(&panel, "get_status", json!({})).expect("status");
    assert_eq!(v["app"]["paused"], false, "the option is off: {v}");
    let v = call_on(&panel, "set_pause_on_battery", json!({ "enabled": true })).expect("on");
    assert_eq!(v["paused"], true, "{v}");
    assert_eq!(v["pause"]["reason"], "battery", "{v}");
    assert_eq!(v["tray_label"], "Paused while on battery power", "{v}");
    let rt = tauri::async_runtime::block_on(metasync_app::scheduler::request_run(
        panel.app_handle(),
        metasync_app::scheduler::Trigger::FilesChanged,
    ));
    assert!(
        matches!(rt, metasync_app::scheduler::RunRequest::Skipped("paused")),
        "{rt:?}"
    );
    assert!(!f.remote.join(RULES).exists(), "nothing written on battery");
    // Plugged in: the next poll resumes.
    power_supply(supply.path(), true);
    metasync_app::scheduler::poll_pause(panel.app_handle(), chrono::Utc::now());
    let state = panel.state::<AppState>();
    assert!(!state.is_paused(), "on mains again");
    let rt = tauri::async_runtime::block_on(metasync_app::scheduler::request_run(
        panel.app_handle(),
        metasync_app::scheduler::Trigger::FilesChanged,
    ));
    assert!(
        matches!(rt, metasync_app::scheduler::RunRequest::Ran(Ok(_))),
        "{rt:?}"
    );
    assert_eq!(f.read(&f.remote, RULES), "rules: v1\n");
}

#[test]
fn a_conflict_makes_a_tray_submenu_item_that_opens_the_panel_on_it() {
    let f = fixture("manual");
    f.ok("sync_now", json!({}));
    f.write_at(&f.home, RULES, "rules: home\n", 5);
    f.write_at(&f.remote, RULES, "rules: drive\n", 0);
    let r = f.ok("sync_now", json!({}));
    assert_eq!(r["report"]["exit_code"], 3, "{r}");
    // The tray's menu is built from the status read after the run.
    let state = f.panel.state::<AppState>();
    let status = state.last_status().expect("a status after the run");
    let (title, items) = metasync_app::tray::conflict_items(&status.conflicts);
    assert_eq!(title, "Conflicts (1)");
    assert_eq!(items[0].0, format!("conflict:{RULES}"));
    // Its item (or a notification's click) opens the panel there; the page takes it once.
    assert_eq!(f.ok("take_focus", json!({})), Value::Null);
    metasync_app::panel::open_at(
        f.panel.app_handle(),
        metasync_app::notify::Target::Conflict(RULES.into()),
    );
    assert_eq!(
        f.ok("take_focus", json!({})),
        json!({ "section": "conflict", "file": RULES })
    );
    assert_eq!(f.ok("take_focus", json!({})), Value::Null);
}

const DB: &str = "metastore.db";

fn db_exec(path: &Path, sql: &str) {
    let db = rusqlite::Connection::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    db.execute_batch(sql)
        .unwrap_or_else(|e| panic!("{}: {sql}: {e}", path.display()));
}

fn entities(path: &Path) -> Vec<(i64, String)> {
    let db = rusqlite::Connection::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut st = db
        .prepare("SELECT id, name FROM entities ORDER BY id")
        .expect("select");
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query");
    rows.map(|r| r.expect("row")).collect()
}

fn owned(rows: &[(i64, &str)]) -> Vec<(i64, String)> {
    rows.iter().map(|(i, s)| (*i, s.to_string())).collect()
}

/// A database synced to the drive, then changed at home (row 2 renamed, row 3 deleted, row 4
/// added) and synced again: the drive's old copy is kept as a backup there.
fn two_versions_of_a_database(f: &Fixture) -> String {
    db_exec(
        &f.home.join(DB),
        "CREATE TABLE entities (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE conversations (id INTEGER PRIMARY KEY, title TEXT NOT NULL);
         INSERT INTO entities (name) VALUES ('Ada'), ('Grace'), ('Edsger');
         INSERT INTO conversations (title) VALUES ('kick-off');",
    );
    f.ok("sync_now", json!({}));
    db_exec(
        &f.home.join(DB),
        "UPDATE entities SET name = 'Grace Hopper' WHERE id = 2;
         DELETE FROM entities WHERE id = 3;
         INSERT INTO entities (id, name) VALUES (4, 'Barbara');",
    );
    let r = f.ok("sync_now", json!({}));
    assert_eq!(r["report"]["exit_code"], 0, "{r}");
    assert_eq!(
        entities(&f.remote.join(DB)),
        owned(&[(1, "Ada"), (2, "Grace Hopper"), (4, "Barbara")])
    );
    let history = f.ok("file_history", json!({ "file": DB }));
    let old = history
        .as_array()
        .and_then(|l| l.iter().find(|v| v["kind"] != "current"))
        .unwrap_or_else(|| panic!("a kept older version: {history}"));
    old["id"].as_str().expect("id").to_string()
}

#[test]
fn a_databases_timeline_and_the_diff_of_two_versions() {
    let f = fixture("newest");
    two_versions_of_a_database(&f);
    let history = f.ok("file_history", json!({ "file": DB }));
    let list = history.as_array().expect("a list");
    let current = list
        .iter()
        .find(|v| v["id"] == "current:local")
        .unwrap_or_else(|| panic!("the local copy: {history}"));
    assert_eq!(current["kind"], "current", "{current}");
    assert_eq!(current["counts"]["entities"], 3, "{current}");
    // Each version's change against the one before it: the two current copies are the
    // same, the drive's against its old copy says what changed, per table.
    assert_eq!(list[0]["summary"]["type"], "same", "{history}");
    let change = list
        .iter()
        .map(|v| &v["summary"])
        .find(|s| s["type"] != "same")
        .unwrap_or_else(|| panic!("a change: {history}"));
    assert_eq!(
        change["tables"],
        json!([{ "table": "entities", "added": 1, "removed": 1, "changed": 1 }]),
        "{history}"
    );
    let old = list
        .iter()
        .find(|v| v["kind"] != "current")
        .unwrap_or_else(|| panic!("{history}"));
    let diff = f.ok(
        "diff_versions",
        json!({ "file": DB, "a": old["id"], "b": "current:local" }),
    );
    assert_eq!(diff["type"], "database", "{diff}");
    let tables = diff["tables"].as_array().expect("tables");
    assert_eq!(tables.len(), 1, "only entities changed: {diff}");
    let t = &tables[0];
    assert_eq!(t["table"], "entities");
    assert_eq!(t["key_columns"], json!(["id"]), "{t}");
    assert_eq!(
        t["summary"],
        json!({ "table": "entities", "added": 1, "removed": 1, "changed": 1 }),
        "{t}"
    );
    assert_eq!(t["changed"][0]["changed_columns"], json!(["name"]), "{t}");
    assert_eq!(t["changed"][0]["old"]["name"]["value"], "Grace", "{t}");
    assert_eq!(
        t["changed"][0]["new"]["name"]["value"], "Grace Hopper",
        "{t}"
    );
    assert_eq!(t["removed"][0]["values"]["name"]["value"], "Edsger", "{t}");
    assert_eq!(t["added"][0]["values"]["name"]["value"], "Barbara", "{t}");
    // The page names versions only by the engine's ids.
    let bad = f.call(
        "diff_versions",
        json!({ "file": DB, "a": "/etc/passwd", "b": "current:local" }),
    );
    assert!(bad.is_err(), "{bad:?}");
}

#[test]
fn two_rows_of_an_old_version_are_put_back_and_nothing_else_changes() {
    let f = fixture("newest");
    let old = two_versions_of_a_database(&f);
    let diff = f.ok(
        "diff_versions",
        json!({ "file": DB, "a": old, "b": "current:local" }),
    );
    let t = &diff["tables"][0];
    let keys = vec![
        t["changed"][0]["key"].as_str().expect("key").to_string(),
        t["removed"][0]["key"].as_str().expect("key").to_string(),
    ];
    let r = f.ok(
        "restore_rows",
        json!({ "id": old, "table": "entities", "keys": keys }),
    );
    assert_eq!(r["replaced"].as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(r["reinserted"].as_array().map(Vec::len), Some(1), "{r}");
    assert!(r["previous_backup"].is_string(), "backed up first: {r}");
    // Rows 2 and 3 are the old version's again; row 4, added since, stays.
    assert_eq!(
        entities(&f.home.join(DB)),
        owned(&[(1, "Ada"), (2, "Grace"), (3, "Edsger"), (4, "Barbara")])
    );
}

#[test]
fn a_row_conflict_is_settled_row_by_row() {
    let f = fixture("manual");
    db_exec(
        &f.home.join(DB),
        "CREATE TABLE entities (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         INSERT INTO entities (name) VALUES ('Ada'), ('Grace'), ('Edsger');",
    );
    f.ok("sync_now", json!({}));
    // Both sides change rows 1 and 2 differently; row 3 only at home.
    db_exec(
        &f.home.join(DB),
        "UPDATE entities SET name = 'Ada L.' WHERE id = 1;
         UPDATE entities SET name = 'Grace H.' WHERE id = 2;
         UPDATE entities SET name = 'E. W. Dijkstra' WHERE id = 3;",
    );
    db_exec(
        &f.remote.join(DB),
        "UPDATE entities SET name = 'Ada Lovelace' WHERE id = 1;
         UPDATE entities SET name = 'Grace Hopper' WHERE id = 2;",
    );
    f.ok("sync_now", json!({}));
    let conflicts = f.ok("list_conflicts", json!({}));
    let c = conflicts
        .as_array()
        .and_then(|l| l.iter().find(|c| c["file"] == DB))
        .unwrap_or_else(|| panic!("a row conflict on {DB}: {conflicts}"));
    let rows = c["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{c}");
    // Keep home's row 1 and the drive's row 2.
    let choices: Vec<Value> = rows
        .iter()
        .map(|r| {
            let keep = if r["key"] == "[1]" { "local" } else { "drive" };
            json!({ "table": r["table"], "key": r["key"], "location": keep })
        })
        .collect();
    f.ok("resolve_rows", json!({ "file": DB, "choices": choices }));
    let want = owned(&[(1, "Ada L."), (2, "Grace Hopper"), (3, "E. W. Dijkstra")]);
    assert_eq!(entities(&f.home.join(DB)), want);
    assert_eq!(entities(&f.remote.join(DB)), want);
    assert_eq!(f.ok("list_conflicts", json!({})), json!([]));
}

#[test]
fn the_timeline_lists_stored_versions_and_one_is_compared_and_restored() {
    let f = fixture("newest");
    // One plain backup per file and place; older ones, younger than 30 days, move into the
    // history store.
    let config = f.home.join("metasync.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str("\n[backups]\nkeep_last = 1\nretention = \"max_age\"\nmax_age_days = 30\n");
    std::fs::write(&config, text).expect("config");
    f.ok("sync_now", json!({}));
    for (i, v) in ["rules: v2\n", "rules: v3\n", "rules: v4\n"]
        .iter()
        .enumerate()
    {
        f.write_at(&f.home, RULES, v, 3 - i as u64);
        let r = f.ok("sync_now", json!({}));
        assert_eq!(r["report"]["exit_code"], 0, "{r}");
    }
    let history = f.ok("file_history", json!({ "file": RULES }));
    let list = history.as_array().expect("a list");
    let kinds: Vec<&str> = list.iter().filter_map(|v| v["kind"].as_str()).collect();
    assert!(
        kinds.contains(&"stored"),
        "stored versions listed: {history}"
    );
    assert!(kinds.contains(&"plain"), "{history}");
    // A stored version compared with the current copy: a unified diff of the two texts.
    let stored = list
        .iter()
        .find(|v| v["kind"] == "stored")
        .unwrap_or_else(|| panic!("{history}"));
    let diff = f.ok(
        "diff_versions",
        json!({ "file": RULES, "a": stored["id"], "b": "current:local" }),
    );
    assert_eq!(diff["type"], "text", "{diff}");
    assert_eq!(
        (diff["added"].as_u64(), diff["removed"].as_u64()),
        (Some(1), Some(1)),
        "{diff}"
    );
    let unified = diff["unified"].as_str().unwrap_or("");
    assert!(unified.contains("\n+rules: v4\n"), "{unified}");
    let old = unified
        .lines()
        .find_map(|l| l.strip_prefix("-rules: "))
        .unwrap_or_else(|| panic!("the stored version's line: {unified}"));
    // Restore the whole stored version from the timeline: the file holds it again.
    f.ok("restore_backup", json!({ "id": stored["id"] }));
    let place = if stored["location"] == "local" {
        &f.home
    } else {
        &f.remote
    };
    assert_eq!(f.read(place, RULES), format!("rules: {old}\n"));
}
