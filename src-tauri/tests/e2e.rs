//! End to end through the real app: tauri-driver + WebKitWebDriver drive the real binary's
//! panel against a temporary home with one remote folder, and check the files on disk:
//! - `panel_end_to_end`: see both locations, make a conflict on disk, sync, keep one version,
//!   restore a backup (screenshots tests/artifacts/panel.png, panel-conflict.png);
//! - `versions_end_to_end`: open a database's timeline, compare two versions, put back two
//!   rows, pause, make a row conflict and settle it row by row (panel-timeline.png,
//!   panel-diff.png, panel-rows-restored.png, panel-row-conflict.png).
//!
//! The two sessions run one after the other (a lock), each with its own home.
//!
//! Needs a display (Xvfb: `scripts/e2e`), `tauri-driver` and `WebKitWebDriver`. Without them
//! it says why and passes, unless METASYNC_E2E_REQUIRED=1, where it fails.

use serde_json::json;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use thirtyfour::prelude::*;

const RULES: &str = "sorting-rules.yaml";
const TIMEOUT: Duration = Duration::from_secs(30);

fn find_on_path(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// The tauri-driver binary, or why the test cannot run.
fn prerequisites() -> Result<PathBuf, String> {
    if std::env::var_os("DISPLAY").is_none_or(|d| d.is_empty()) {
        return Err("no DISPLAY (run scripts/e2e, which uses xvfb-run)".into());
    }
    if find_on_path("WebKitWebDriver").is_none() {
        return Err("no WebKitWebDriver on PATH (apt install webkit2gtk-driver)".into());
    }
    find_on_path("tauri-driver")
        .ok_or_else(|| "no tauri-driver (cargo install tauri-driver --locked)".to_string())
}

/// Two distinct free ports (both held while they are picked).
fn free_ports() -> (u16, u16) {
    let bind = || TcpListener::bind("127.0.0.1:0").ok();
    let (a, b) = (bind(), bind());
    let port = |l: &Option<TcpListener>, fallback| {
        l.as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or(fallback, |a| a.port())
    };
    (port(&a, 4444), port(&b, 4445))
}

/// Stops a child with SIGTERM (tauri-driver: only then does it stop WebKitWebDriver too).
struct DriverGuard(Child);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Writes a file and backdates it, so the edits are unambiguous to the scan cache.
fn write_aged(path: &Path, text: &str, secs_ago: u64) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let t = std::time::SystemTime::now() - Duration::from_secs(secs_ago);
    if let Ok(f) = std::fs::File::options().write(true).open(path) {
        let _ = f.set_modified(t);
    }
}

/// A small knowledge graph: 3 entities, 2 conversations.
fn make_metastore(path: &Path) {
    let db = rusqlite::Connection::open(path).expect("create metastore.db");
    db.execute_batch(
        "CREATE TABLE entities (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE conversations (id INTEGER PRIMARY KEY, title TEXT NOT NULL);
         INSERT INTO entities (name) VALUES ('Ada'), ('Grace'), ('Edsger');
         INSERT INTO conversations (title) VALUES ('kick-off'), ('review');",
    )
    .expect("fill metastore.db");
}

async fn wait_until<F: FnMut() -> bool>(what: &str, mut ok: F) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_css(d: &WebDriver, css: &str) -> WebElement {
    let start = Instant::now();
    loop {
        if let Ok(e) = d.find(By::Css(css)).await {
            return e;
        }
        if start.elapsed() > TIMEOUT {
            let body = match d.find(By::Tag("body")).await {
                Ok(b) => b.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            panic!("timed out waiting for `{css}`; the page says:\n{body}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Clicks the element `css` names, finding it again if the page re-rendered in between.
async fn click_css(d: &WebDriver, css: &str) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let e = wait_css(d, css).await;
        match e.click().await {
            Ok(()) => return Ok(()),
            Err(err) if start.elapsed() < TIMEOUT => {
                eprintln!("click `{css}` again: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => return Err(format!("click `{css}`: {err}")),
        }
    }
}

/// The text of the element `css` names, read again if the page re-rendered in between.
async fn text_css(d: &WebDriver, css: &str) -> Result<String, String> {
    let start = Instant::now();
    loop {
        match wait_css(d, css).await.text().await {
            Ok(t) => return Ok(t),
            Err(err) if start.elapsed() < TIMEOUT => {
                eprintln!("read `{css}` again: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => return Err(format!("read `{css}`: {err}")),
        }
    }
}

/// Clicks `css` until `then` shows (a refresh may swap the element under the click).
async fn click_until(d: &WebDriver, css: &str, then: &str) -> Result<(), String> {
    let start = Instant::now();
    loop {
        click_css(d, css).await?;
        let clicked = Instant::now();
        while clicked.elapsed() < Duration::from_secs(3) {
            if d.find(By::Css(then)).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if start.elapsed() > TIMEOUT {
            return Err(format!("clicked `{css}`, `{then}` never showed"));
        }
    }
}

async fn wait_gone(d: &WebDriver, css: &str) {
    let start = Instant::now();
    while d.find(By::Css(css)).await.is_ok() {
        assert!(start.elapsed() < TIMEOUT, "`{css}` did not go away");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// App sessions one at a time.
static SESSION: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The tauri-driver binary, or None when the test is skipped (said why).
fn driver_or_skip() -> Option<PathBuf> {
    match prerequisites() {
        Ok(p) => Some(p),
        Err(why) => {
            if std::env::var("METASYNC_E2E_REQUIRED").as_deref() == Ok("1") {
                panic!("e2e required but cannot run: {why}");
            }
            eprintln!("e2e skipped: {why}");
            None
        }
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

#[test]
fn panel_end_to_end() {
    let _one = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(driver_bin) = driver_or_skip() {
        block_on(scenario(driver_bin));
    }
}

#[test]
fn versions_end_to_end() {
    let _one = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(driver_bin) = driver_or_skip() {
        block_on(versions_scenario(driver_bin));
    }
}

/// A temporary world: a home with a config (strategy manual, one remote folder `drive`), the
/// drive, and a user HOME.
struct World {
    _dir: tempfile::TempDir,
    home: PathBuf,
    remote: PathBuf,
    user_home: PathBuf,
}

fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let remote = dir.path().join("drive");
    let user_home = dir.path().join("user");
    for d in [&home, &remote, &user_home] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let config = format!(
        "interval_secs = 3600\nstrategy = \"manual\"\nfiles = [\"metastore.db\", \"{RULES}\"]\n\n\
         [[locations]]\nname = \"drive\"\npath = {:?}\n",
        remote.display().to_string()
    );
    std::fs::write(home.join("metasync.toml"), config).expect("config");
    World {
        _dir: dir,
        home,
        remote,
        user_home,
    }
}

/// tauri-driver (stopped when the guard drops) and a WebDriver session with the app, its
/// panel open.
async fn session(driver_bin: &Path, w: &World) -> (DriverGuard, WebDriver) {
    let (port, native_port) = free_ports();
    let child = Command::new(driver_bin)
        .args([
            "--port",
            &port.to_string(),
            "--native-port",
            &native_port.to_string(),
        ])
        // Inherited by WebKitWebDriver and the app it launches.
        .env("METASYNC_HOME", &w.home)
        .env_remove("METASYNC_CONFIG")
        .env("METASYNC_NO_SINGLE_INSTANCE", "1")
        .env("HOME", &w.user_home)
        .env("NO_AT_BRIDGE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tauri-driver");
    let guard = DriverGuard(child);
    wait_until("tauri-driver to listen", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;

    let mut caps = thirtyfour::Capabilities::new();
    caps.insert("browserName".into(), json!("wry"));
    caps.insert(
        "tauri:options".into(),
        json!({
            "application": env!("CARGO_BIN_EXE_metasync-app"),
            "args": ["--panel"],
        }),
    );
    // tauri-driver may accept connections a moment before it serves sessions.
    let url = format!("http://127.0.0.1:{port}");
    let mut attempt = 0;
    let d = loop {
        attempt += 1;
        match WebDriver::new(url.clone(), caps.clone()).await {
            Ok(d) => break d,
            Err(e) if attempt < 5 => {
                eprintln!("WebDriver session attempt {attempt}: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("WebDriver session with the app: {e}"),
        }
    };
    (guard, d)
}

/// Ends the session; a failure leaves tests/artifacts/<failure> and panics with the error.
async fn finish(
    d: WebDriver,
    result: Result<Result<(), String>, tokio::task::JoinError>,
    failure: &str,
) {
    if !matches!(result, Ok(Ok(()))) {
        save_screenshot(&d, failure).await;
    }
    let _ = d.quit().await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e} (see tests/artifacts/{failure})"),
        Err(e) => panic!("e2e steps failed (see tests/artifacts/{failure}): {e}"),
    }
}

async fn scenario(driver_bin: PathBuf) {
    let w = world();
    write_aged(&w.home.join(RULES), "rules: v1\n", 60);
    make_metastore(&w.home.join("metastore.db"));
    let (_guard, d) = session(&driver_bin, &w).await;
    // The steps run as their own task so that a failed assertion still leaves a picture.
    let d2 = d.clone();
    let (h, r) = (w.home.clone(), w.remote.clone());
    let result = tokio::spawn(async move { steps(&d2, &h, &r).await }).await;
    finish(d, result, "panel-failure.png").await;
}

async fn versions_scenario(driver_bin: PathBuf) {
    let w = world();
    make_metastore(&w.home.join("metastore.db"));
    // A notification daemon on the test's session bus, when there is one to start: the
    // click on the conflict's notification is tried then.
    let dunst = notification_daemon(&w);
    let (_guard, d) = session(&driver_bin, &w).await;
    let d2 = d.clone();
    let (h, r) = (w.home.clone(), w.remote.clone());
    let clicks = dunst.is_some();
    let result = tokio::spawn(async move { version_steps(&d2, &h, &r, clicks).await }).await;
    finish(d, result, "versions-failure.png").await;
}

async fn steps(d: &WebDriver, home: &Path, remote: &Path) -> Result<(), String> {
    // Both locations are shown, with their health.
    wait_css(d, "body[data-loaded='true']").await;
    wait_css(d, "[data-location='local'] .health[data-available='true']").await;
    wait_css(d, "[data-location='drive'] .health[data-available='true']").await;

    // A first sync puts the rules and the database on the drive.
    click_css(d, "#sync-now").await?;
    wait_until("the first sync to reach the drive", || {
        read(&remote.join(RULES)) == "rules: v1\n" && remote.join("metastore.db").is_file()
    })
    .await;
    let db_row = "[data-location='drive'] tr[data-file='metastore.db']";
    // The page refreshes after the run: wait for it to show the copied database's counts.
    let start = Instant::now();
    loop {
        let counts = text_css(d, db_row).await?;
        if counts.contains("3 entities") && counts.contains("2 conversations") {
            break;
        }
        if start.elapsed() > TIMEOUT {
            return Err(format!("the drive's database counts: {counts}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Different edits on both sides, then Sync now: a conflict (strategy manual).
    write_aged(&home.join(RULES), "rules: home\n", 20);
    write_aged(&remote.join(RULES), "rules: drive\n", 10);
    click_css(d, "#sync-now").await?;
    let conflict = "[data-conflict='sorting-rules.yaml']";
    wait_css(d, conflict).await;
    wait_css(d, &format!("{conflict} [data-candidate='local']")).await;
    wait_css(d, &format!("{conflict} [data-candidate='drive']")).await;
    save_screenshot(d, "panel-conflict.png").await;
    assert_eq!(
        read(&home.join(RULES)),
        "rules: home\n",
        "manual: nothing overwritten"
    );
    assert_eq!(read(&remote.join(RULES)), "rules: drive\n");

    // Keep the drive's version: both files hold it.
    click_css(d, &format!("{conflict} button.keep[data-location='drive']")).await?;
    wait_gone(d, conflict).await;
    wait_until("the kept version everywhere", || {
        read(&home.join(RULES)) == "rules: drive\n" && read(&remote.join(RULES)) == "rules: drive\n"
    })
    .await;

    // Home's version was backed up before it was overwritten; restore it, confirming first.
    let restore = "[data-backups-of='sorting-rules.yaml'] button.restore[data-backup-id^='local:']";
    let confirm = "#confirm:not([hidden]) #confirm-ok";
    let start = Instant::now();
    loop {
        // A background refresh may re-render the list under the click: try again.
        click_css(d, restore).await?;
        if d.find(By::Css(confirm)).await.is_ok() {
            break;
        }
        if start.elapsed() > TIMEOUT {
            return Err("the restore confirmation never opened".into());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    click_css(d, confirm).await?;
    wait_until("the backup back in place at home", || {
        read(&home.join(RULES)) == "rules: home\n"
    })
    .await;
    wait_css(d, "#message[data-action='restore'][data-kind='info']").await;
    // The current version was backed up before the restore: now two backups at home.
    wait_css(
        d,
        "[data-backups-of='sorting-rules.yaml'] tr.backup[data-backup-id^='local:'] ~ tr.backup[data-backup-id^='local:']",
    )
    .await;
    // The restore is an ordinary change: the watcher notices it and a sync carries it to
    // the drive a few seconds later, with no click.
    wait_until("the restored version to reach the drive by itself", || {
        read(&remote.join(RULES)) == "rules: home\n"
    })
    .await;
    wait_css(d, ".runs li:first-child .result[data-result='ok']").await;
    // Let the page settle on its refreshed state before the picture.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    save_screenshot(d, "panel.png").await;

    // The rules' timeline; the newest backup at home (the drive's version, kept when the
    // restore replaced it) against the current copy: a unified diff.
    let timeline = "[data-timeline='sorting-rules.yaml']";
    click_until(
        d,
        "button.timeline-file[data-file='sorting-rules.yaml']",
        &format!("{timeline} tr.version[data-version-id^='local:'] button.compare"),
    )
    .await?;
    click_until(
        d,
        &format!("{timeline} tr.version[data-version-id^='local:'] button.compare"),
        "#diff pre.unified .add",
    )
    .await?;
    expect_text(
        d,
        "#diff",
        &[
            "1 line added, 1 line removed",
            "-rules: drive",
            "+rules: home",
        ],
    )
    .await?;
    save_screenshot(d, "panel-text-diff.png").await;
    Ok(())
}

const DB: &str = "metastore.db";

fn db_exec(path: &Path, sql: &str) {
    let db = rusqlite::Connection::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    db.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    db.execute_batch(sql)
        .unwrap_or_else(|e| panic!("{}: {sql}: {e}", path.display()));
}

/// The entities of a database (empty while it cannot be read).
fn entities(path: &Path) -> Vec<(i64, String)> {
    let read = || -> rusqlite::Result<Vec<(i64, String)>> {
        let db = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        let mut st = db.prepare("SELECT id, name FROM entities ORDER BY id")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    };
    read().unwrap_or_default()
}

fn owned(rows: &[(i64, &str)]) -> Vec<(i64, String)> {
    rows.iter().map(|(i, s)| (*i, s.to_string())).collect()
}

async fn expect_text(d: &WebDriver, css: &str, want: &[&str]) -> Result<String, String> {
    let text = text_css(d, css).await?;
    match want.iter().find(|w| !text.contains(**w)) {
        None => Ok(text),
        Some(missing) => Err(format!("`{css}` lacks {missing:?}: {text}")),
    }
}

/// dunst on the session bus (stopped when the guard drops), if it and dunstctl are here and
/// a session bus is (scripts/e2e runs the tests in one).
fn notification_daemon(w: &World) -> Option<DriverGuard> {
    let ready = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some()
        && find_on_path("dunst").is_some()
        && find_on_path("dunstctl").is_some();
    if !ready {
        eprintln!("no notification click tried: no dunst/dunstctl or no session bus");
        return None;
    }
    // An empty config: dunst's defaults, whatever the machine's user has.
    let config = w.user_home.join("dunstrc");
    std::fs::write(&config, "[global]\n    timeout = 60\n").expect("dunstrc");
    let child = Command::new("dunst")
        .arg("-config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(DriverGuard(child))
}

fn dunstctl(args: &[&str]) -> String {
    Command::new("dunstctl")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The conflict's notification is on screen; a click on it (dunst's default action) brings
/// the panel to that conflict.
async fn click_the_notification(d: &WebDriver) -> Result<(), String> {
    d.execute("window.scrollTo(0, 0)", vec![])
        .await
        .map_err(|e| format!("scroll: {e}"))?;
    wait_until("the conflict's notification on screen", || {
        dunstctl(&["count", "displayed"]) == "1"
    })
    .await;
    // The app listens for the click right after the notification is shown (notify-rust
    // shows, then subscribes): a click in that first instant would be lost. A person's is
    // not that quick; the test waits a second before its own.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/artifacts/notification.png");
    let _ = Command::new("import")
        .args(["-window", "root"])
        .arg(&shot)
        .status();
    dunstctl(&["action", "0"]);
    wait_css(d, "[data-conflict='metastore.db'].focused").await;
    Ok(())
}

async fn version_steps(
    d: &WebDriver,
    home: &Path,
    remote: &Path,
    notification_clicks: bool,
) -> Result<(), String> {
    wait_css(d, "body[data-loaded='true']").await;
    click_css(d, "#sync-now").await?;
    wait_until("the database on the drive", || {
        entities(&remote.join(DB)).len() == 3
    })
    .await;
    // Changed at home (row 2 renamed, row 3 deleted, row 4 added) and carried to the drive,
    // whose previous copy is kept.
    db_exec(
        &home.join(DB),
        "UPDATE entities SET name = 'Grace Hopper' WHERE id = 2;
         DELETE FROM entities WHERE id = 3;
         INSERT INTO entities (id, name) VALUES (4, 'Barbara');",
    );
    let changed = owned(&[(1, "Ada"), (2, "Grace Hopper"), (4, "Barbara")]);
    click_css(d, "#sync-now").await?;
    wait_until("the change on the drive", || {
        entities(&remote.join(DB)) == changed
    })
    .await;

    timeline_and_compare(d).await?;
    put_back_two_rows(d, home, remote).await?;
    row_conflict_row_by_row(d, home, remote, notification_clicks).await
}

/// The database's timeline, and its oldest version compared with the current copy.
async fn timeline_and_compare(d: &WebDriver) -> Result<(), String> {
    // The timeline: every kept version with what changed.
    let timeline = "[data-timeline='metastore.db']";
    click_until(
        d,
        "button.timeline-file[data-file='metastore.db']",
        &format!("{timeline} tr.version[data-version-id='current:local']"),
    )
    .await?;
    let oldest = format!("{timeline} tr.version:not([data-kind='current']):last-child");
    wait_css(d, &oldest).await;
    expect_text(
        d,
        &format!("{timeline} tr.version[data-version-id='current:local']"),
        &["current", "3 entities", "2 conversations"],
    )
    .await?;
    save_screenshot(d, "panel-timeline.png").await;

    // Compare the oldest version with the current copy: one row changed, one added, one gone.
    let t = ".table-diff[data-table='entities']";
    click_until(
        d,
        &format!("{oldest} button.compare"),
        &format!("{t} tr.diff-row.changed td.cell-changed"),
    )
    .await?;
    expect_text(
        d,
        &format!("{t} h4"),
        &["1 row changed", "1 row added", "1 row removed"],
    )
    .await?;
    expect_text(
        d,
        &format!("{t} tr.diff-row.changed td.cell-changed"),
        &["Grace", "→", "Grace Hopper"],
    )
    .await?;
    expect_text(d, &format!("{t} tr.diff-row.removed"), &["Edsger"]).await?;
    expect_text(d, &format!("{t} tr.diff-row.added"), &["Barbara"]).await?;
    save_screenshot(d, "panel-diff.png").await;

    Ok(())
}

/// Two rows of the compared version put back with their checkboxes, then synced.
async fn put_back_two_rows(d: &WebDriver, home: &Path, remote: &Path) -> Result<(), String> {
    let t = ".table-diff[data-table='entities']";
    // Put back two rows of the old version: the renamed one and the deleted one.
    click_css(d, &format!("{t} tr.diff-row.changed input.pick-row")).await?;
    click_css(d, &format!("{t} tr.diff-row.removed input.pick-row")).await?;
    expect_text(
        d,
        &format!("{t} button.restore-rows"),
        &["Put back 2 rows from"],
    )
    .await?;
    click_css(d, &format!("{t} button.restore-rows")).await?;
    let restored = owned(&[(1, "Ada"), (2, "Grace"), (3, "Edsger"), (4, "Barbara")]);
    wait_until("rows 2 and 3 back at home", || {
        entities(&home.join(DB)) == restored
    })
    .await;
    wait_css(d, "#message[data-action='restore-rows'][data-kind='info']").await;
    // The restore is a local change like any other: the next sync carries it to the drive.
    wait_until("the restored rows on the drive", || {
        entities(&remote.join(DB)) == restored
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    save_screenshot(d, "panel-rows-restored.png").await;

    Ok(())
}

/// Paused, a row conflict made on both sides, settled row by row.
async fn row_conflict_row_by_row(
    d: &WebDriver,
    home: &Path,
    remote: &Path,
    notification_clicks: bool,
) -> Result<(), String> {
    // No run in progress (the one that carried the restore may still be finishing).
    wait_css(d, "#sync-now[data-running='false']").await;
    // Paused, edits wait for Sync now: rows 1 and 2 changed differently on both sides.
    click_css(d, "#pause-for option[value='resumed']").await?;
    wait_css(d, "#state[data-state='paused']").await;
    db_exec(
        &home.join(DB),
        "UPDATE entities SET name = 'Ada L.' WHERE id = 1;
         UPDATE entities SET name = 'Grace H.' WHERE id = 2;",
    );
    db_exec(
        &remote.join(DB),
        "UPDATE entities SET name = 'Ada Lovelace' WHERE id = 1;
         UPDATE entities SET name = 'Grace B. Hopper' WHERE id = 2;",
    );
    click_css(d, "#sync-now").await?;
    let rows = "[data-row-conflicts='metastore.db']";
    wait_css(d, &format!("{rows} tr.row-conflict[data-row-key='[2]']")).await;
    if notification_clicks {
        click_the_notification(d).await?;
    }
    expect_text(
        d,
        rows,
        &["2 rows changed differently", "Ada L.", "Ada Lovelace"],
    )
    .await?;
    // The drive's value for every row, then home's for row 1.
    click_css(d, &format!("{rows} button.keep-side[data-side='drive']")).await?;
    click_css(
        d,
        &format!("{rows} tr.row-conflict[data-row-key='[1]'] input[data-side='local']"),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    save_screenshot(d, "panel-row-conflict.png").await;
    click_css(d, &format!("{rows} button.apply-rows")).await?;
    let settled = owned(&[
        (1, "Ada L."),
        (2, "Grace B. Hopper"),
        (3, "Edsger"),
        (4, "Barbara"),
    ]);
    wait_until("the chosen rows at home and on the drive", || {
        entities(&home.join(DB)) == settled && entities(&remote.join(DB)) == settled
    })
    .await;
    wait_gone(d, "[data-conflict='metastore.db']").await;
    Ok(())
}

async fn save_screenshot(d: &WebDriver, name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/artifacts");
    let _ = std::fs::create_dir_all(&dir);
    match d.screenshot_as_png().await {
        Ok(png) => {
            if let Err(e) = std::fs::write(dir.join(name), png) {
                eprintln!("cannot save {name}: {e}");
            }
        }
        Err(e) => eprintln!("no screenshot {name}: {e}"),
    }
}
