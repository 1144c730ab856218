//! An object store in the panel and the tray, through Tauri's IPC on the mock runtime with
//! the app's real context: a home, a folder remote, a bucket on a real S3-compatible server
//! (`moto_server`, as the engine's own tests start it: `tests/common/moto.rs`), a store whose
//! endpoint nothing listens on and one whose bucket does not exist.

mod support;

use metasync_app::state::AppState;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{get_ipc_response, MockRuntime, INVOKE_KEY};
use tauri::webview::InvokeRequest;
use tauri::{Manager, WebviewWindow};

/// A `moto_server` on a free loopback port, killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    /// `None` (said on stderr) when `moto_server` is missing outside CI; in CI it must run.
    fn start() -> Option<Moto> {
        let found = Command::new("moto_server")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                std::env::var_os("CI").is_none(),
                "moto_server is missing: run scripts/deps (pip install 'moto[server]')"
            );
            eprintln!(
                "\n*** SKIPPED: moto_server is not installed; the store test did not run ***\n"
            );
            return None;
        }
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto { child, port };
        for _ in 0..600 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(moto);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("moto_server did not listen on port {port}");
    }

    /// Creates a bucket (moto takes an unsigned request for it).
    fn create_bucket(&self, bucket: &str) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        write!(
            s,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .expect("send");
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "create bucket {bucket}: {reply}"
        );
    }

    /// The config lines of a store `name` on `s3://bucket/meta` at `endpoint`.
    fn location(name: &str, bucket: &str, endpoint: &str) -> String {
        format!(
            "[[locations]]\nname = \"{name}\"\nurl = \"s3://{bucket}/meta\"\nendpoint = \"{endpoint}\"\n\
             region = \"us-east-1\"\nallow_http = true\n"
        )
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn call(w: &WebviewWindow<MockRuntime>, cmd: &str) -> Value {
    let request = InvokeRequest {
        cmd: cmd.into(),
        callback: CallbackFn(0),
        error: CallbackFn(1),
        url: "tauri://localhost".parse().expect("url"),
        body: InvokeBody::Json(json!({})),
        headers: Default::default(),
        invoke_key: INVOKE_KEY.to_string(),
    };
    get_ipc_response(w, request)
        .map(|b| b.deserialize::<Value>().unwrap_or(Value::Null))
        .unwrap_or_else(|e| panic!("{cmd} failed: {e}"))
}

fn write_aged(path: &Path, text: &str, secs_ago: u64) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    let f = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open");
    f.set_modified(SystemTime::now() - Duration::from_secs(secs_ago))
        .expect("set mtime");
}

/// The `health` entry of the location `name` in a `get_status` reply.
fn health<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["health"]
        .as_array()
        .and_then(|a| a.iter().find(|h| h["location"] == name))
        .unwrap_or_else(|| panic!("no health for {name}: {s:#}"))
}

#[test]
fn a_store_shows_its_health_its_reason_and_its_history_in_the_panel_and_the_tray() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("shared");
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    let dir = tempfile::tempdir().expect("tempdir");
    // Start at login writes under $HOME: keep it in the temp dir.
    std::env::set_var("HOME", dir.path());
    let (home, icloud) = (dir.path().join("home"), dir.path().join("icloud"));
    std::fs::create_dir_all(&home).expect("home");
    std::fs::create_dir_all(&icloud).expect("icloud");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let config = format!(
        "interval_secs = 3600\nfiles = [\"sorting-rules.yaml\"]\n\n[[locations]]\nname = \"icloud\"\npath = {:?}\n{}{}{}",
        icloud.display().to_string(),
        Moto::location("s3", "shared", &moto.endpoint()),
        Moto::location("gone", "shared", &dead),
        Moto::location("nobucket", "absent", &moto.endpoint()),
    );
    std::fs::write(home.join("metasync.toml"), config).expect("config");
    let (_app, panel) = support::panel_app(&home);

    // Two versions through the bucket: the first is kept there as a backup object.
    let rules = home.join("sorting-rules.yaml");
    write_aged(&rules, "rules: v1\n", 100);
    call(&panel, "sync_now");
    write_aged(&rules, "rules: v2\n", 50);
    let r = call(&panel, "sync_now");
    assert_eq!(r["report"]["exit_code"], 0, "{r:#}");

    let s = call(&panel, "get_status");
    let kinds: Vec<_> = ["local", "icloud", "s3", "gone", "nobucket"]
        .iter()
        .map(|n| health(&s, n)["kind"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        kinds,
        ["home", "folder", "store", "store", "store"],
        "{s:#}"
    );
    let store = health(&s, "s3");
    assert_eq!(store["available"], true, "{s:#}");
    assert_eq!(store["place"], "s3://shared/meta", "{s:#}");
    assert_eq!(store["reason"], Value::Null, "{s:#}");
    let history = store["history"].as_str().unwrap_or_default();
    assert!(
        history.contains(" in the bucket · ") && history.ends_with("1 version"),
        "{s:#}"
    );
    let gone = health(&s, "gone");
    assert_eq!(gone["available"], false, "{s:#}");
    assert_eq!(
        gone["reason"],
        format!("endpoint unreachable ({dead})"),
        "{s:#}"
    );
    assert!(
        gone["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("s3://shared/meta: endpoint unreachable (")),
        "{s:#}"
    );
    assert_eq!(
        health(&s, "nobucket")["reason"],
        "no such bucket `absent`",
        "{s:#}"
    );

    // The tray's health lines, from the status the app keeps.
    let state = panel.state::<AppState>();
    let lines = metasync_app::tray::info_lines(&state.view(), state.last_status().as_ref());
    assert!(lines.iter().any(|l| l.starts_with("s3 — ok")), "{lines:#?}");
    assert!(
        lines.contains(&format!(
            "gone — unavailable: endpoint unreachable ({dead})"
        )),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"nobucket — unavailable: no such bucket `absent`".to_string()),
        "{lines:#?}"
    );
}
