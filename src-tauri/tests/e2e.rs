//! End to end through the real app: tauri-driver + WebKitWebDriver drive the real binary's
//! panel against a temporary home with one remote folder — see both locations, make a
//! conflict on disk, sync, keep one version, restore a backup — and check the files on disk.
//! Saves a screenshot to tests/artifacts/panel.png.
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

/// Stops tauri-driver with SIGTERM: only then does it stop WebKitWebDriver too.
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

async fn wait_gone(d: &WebDriver, css: &str) {
    let start = Instant::now();
    while d.find(By::Css(css)).await.is_ok() {
        assert!(start.elapsed() < TIMEOUT, "`{css}` did not go away");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn panel_end_to_end() {
    let driver_bin = match prerequisites() {
        Ok(p) => p,
        Err(why) => {
            if std::env::var("METASYNC_E2E_REQUIRED").as_deref() == Ok("1") {
                panic!("e2e required but cannot run: {why}");
            }
            eprintln!("e2e skipped: {why}");
            return;
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(scenario(driver_bin));
}

async fn scenario(driver_bin: PathBuf) {
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
    write_aged(&home.join(RULES), "rules: v1\n", 60);
    make_metastore(&home.join("metastore.db"));

    let (port, native_port) = free_ports();
    let child = Command::new(&driver_bin)
        .args([
            "--port",
            &port.to_string(),
            "--native-port",
            &native_port.to_string(),
        ])
        // Inherited by WebKitWebDriver and the app it launches.
        .env("METASYNC_HOME", &home)
        .env_remove("METASYNC_CONFIG")
        .env("METASYNC_NO_SINGLE_INSTANCE", "1")
        .env("HOME", &user_home)
        .env("NO_AT_BRIDGE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tauri-driver");
    let _guard = DriverGuard(child);
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
    // The steps run as their own task so that a failed assertion still leaves a picture.
    let d2 = d.clone();
    let (h, r) = (home.clone(), remote.clone());
    let result = tokio::spawn(async move { steps(&d2, &h, &r).await }).await;
    if !matches!(result, Ok(Ok(()))) {
        save_screenshot(&d, "panel-failure.png").await;
    }
    let _ = d.quit().await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e}"),
        Err(e) => panic!("e2e steps failed (see tests/artifacts/panel-failure.png): {e}"),
    }
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
