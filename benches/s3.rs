//! `cargo bench --bench s3` (run by `scripts/bench` unless `BENCH_ONLY` leaves `s3` out): a
//! bucket as a location, on a real S3-compatible server on this machine (`moto_server`).
//! Times whole `metasync sync` processes and counts the requests each made (the client's own
//! counts: `<home>/.metasync/stores/<name>.stats.json`; moto counts nothing) for: the first
//! sync of a 10,000-entity database, a no-op, a one-row change pushed, and that change pulled
//! by a second machine. Prints a Markdown table (also to `BENCH_S3_OUT` when set).
//!
//! `BENCH_RUNS` (default 9) runs per case; Metasync through `target/release/metasync`
//! (`scripts/bench` builds it; `BENCH_S3_BIN` overrides). Run as a test it does nothing.

#[path = "../tests/common/moto.rs"]
#[allow(dead_code)]
mod moto;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Longer than the scan cache's racy-clean window (2 s).
const AGE: Duration = Duration::from_millis(2100);

fn bin() -> PathBuf {
    std::env::var_os("BENCH_S3_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/metasync"))
}

/// One timed `metasync sync` of `home`; seconds and the requests it made to the store.
fn sync(home: &Path) -> (f64, serde_json::Value) {
    let started = Instant::now();
    let out = Command::new(bin())
        .args(["--json", "--home"])
        .arg(home)
        .arg("sync")
        .output()
        .expect("run metasync");
    let secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "sync failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stats = std::fs::read(home.join(".metasync/stores/s3.stats.json")).expect("stats");
    (secs, serde_json::from_slice(&stats).expect("stats JSON"))
}

fn requests(s: &serde_json::Value) -> String {
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    format!(
        "{} (list {}, get {}, head {}, put {}, delete {})",
        n("list") + n("get") + n("head") + n("put") + n("delete"),
        n("list"),
        n("get"),
        n("head"),
        n("put"),
        n("delete")
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn machine(dir: &Path, name: &str, location: &str) -> PathBuf {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("metasync.toml"), location).unwrap();
    home
}

fn change_one_row(db: &Path, i: usize) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute(
        "UPDATE entities SET name = ?1 WHERE id = 7",
        [format!("changed {i}")],
    )
    .unwrap();
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("s3: a benchmark, not a test; run `cargo bench --bench s3`");
        return;
    }
    assert!(
        bin().exists(),
        "{} is missing: cargo build --release",
        bin().display()
    );
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9)
        .max(1);
    let server = moto::Moto::start().expect("moto_server (scripts/deps installs it)");
    server.create_bucket("bench");
    std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
    let dir = tempfile::tempdir().unwrap();
    let location = server.location("s3", "bench", "meta");
    let a = machine(dir.path(), "a", &location);
    let b = machine(dir.path(), "b", &location);
    let db = a.join("metastore.db");
    metasync::sample::create_knowledge_graph(&db, 10_000, 1).unwrap();
    let size = std::fs::metadata(&db).unwrap().len();
    let mut rows: Vec<(String, f64, String)> = Vec::new();

    let (secs, s) = sync(&a);
    rows.push(("first sync (upload)".into(), secs, requests(&s)));
    let (secs, s) = sync(&b);
    rows.push((
        "first sync, second machine (download)".into(),
        secs,
        requests(&s),
    ));
    std::thread::sleep(AGE);
    sync(&a);
    let mut times = Vec::new();
    let mut last = serde_json::Value::Null;
    for _ in 0..runs {
        let (secs, s) = sync(&a);
        times.push(secs);
        last = s;
    }
    rows.push(("no-op".into(), median(times), requests(&last)));
    let (mut push, mut pull) = (Vec::new(), Vec::new());
    let (mut push_req, mut pull_req) = (serde_json::Value::Null, serde_json::Value::Null);
    for i in 0..runs {
        change_one_row(&db, i);
        let (secs, s) = sync(&a);
        push.push(secs);
        push_req = s;
        let (secs, s) = sync(&b);
        pull.push(secs);
        pull_req = s;
    }
    rows.push((
        "one-row change, pushed".into(),
        median(push),
        requests(&push_req),
    ));
    rows.push((
        "one-row change, pulled by the other machine".into(),
        median(pull),
        requests(&pull_req),
    ));

    let mut out = String::new();
    writeln!(
        out,
        "### A bucket as a location (moto_server on loopback; 10,000-entity database, {:.1} MB)\n",
        size as f64 / 1e6
    )
    .unwrap();
    writeln!(out, "| case | median wall time | requests (last run) |").unwrap();
    writeln!(out, "|---|---:|---|").unwrap();
    for (case, secs, req) in &rows {
        writeln!(out, "| {case} | {:.0} ms | {req} |", secs * 1000.0).unwrap();
    }
    writeln!(
        out,
        "\n{runs} runs per repeated case; `{}`.",
        bin().display()
    )
    .unwrap();
    print!("{out}");
    if let Some(path) = std::env::var_os("BENCH_S3_OUT") {
        std::fs::write(path, &out).unwrap();
    }
}
