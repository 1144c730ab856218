//! Shared helpers for the black-box tests: isolated homes and remotes in a temp folder, and
//! the real `metasync` binary run against them.
#![allow(dead_code)]

pub mod moto;
pub mod s3;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A temp world: machines (homes) and shared remote folders.
pub struct World {
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> World {
        World {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A machine's home with a config naming the given remotes (`name=relative/path`) and extra TOML.
    pub fn machine(&self, name: &str, remotes: &[(&str, &str)], extra: &str) -> Machine {
        let home = self.path(name);
        std::fs::create_dir_all(&home).unwrap();
        let mut toml = format!("lock_wait_secs = 30\n{extra}\n");
        for (n, p) in remotes {
            toml.push_str(&format!(
                "[[locations]]\nname = \"{n}\"\npath = \"{}\"\n",
                self.path(p).display()
            ));
        }
        std::fs::write(home.join("metasync.toml"), toml).unwrap();
        Machine { home }
    }
}

/// One simulated machine.
pub struct Machine {
    pub home: PathBuf,
}

impl Machine {
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_metasync"));
        c.arg("--home").arg(&self.home).args(args);
        c.env_remove("METASYNC_HOME").env_remove("METASYNC_CONFIG");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run metasync")
    }

    /// Runs and returns (exit code, parsed JSON of stdout).
    pub fn json(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let code = out.status.code().unwrap_or(-1);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "bad JSON from {args:?} (exit {code}): {e}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (code, v)
    }

    /// `sync` with extra args; asserts the exit code.
    pub fn sync(&self, extra: &[&str], expect: i32) -> serde_json::Value {
        let mut args = vec!["sync"];
        args.extend_from_slice(extra);
        let (code, v) = self.json(&args);
        assert_eq!(code, expect, "sync {extra:?} exit code; report: {v:#}");
        v
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        self.home.join(rel)
    }
}

/// Writes a file and sets its modification time to `secs_ago` seconds in the past.
pub fn write_aged(path: &Path, content: &str, secs_ago: u64) {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(path, content).unwrap();
    set_age(path, secs_ago);
}

pub fn set_age(path: &Path, secs_ago: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(secs_ago))
        .unwrap();
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Names of backups of `file_name` in `dir`.
pub fn backups_in(dir: &Path, file_name: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{file_name}.backup-")))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every file under `dir`, relative, sorted.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if dir.exists() {
        for e in walkdir::WalkDir::new(dir).into_iter().flatten() {
            if e.file_type().is_file() {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// SplitMix64: a small seeded generator, the same on every platform (model and fuzz tests).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Runs `sql` on the database at `db`, as another program would.
pub fn exec(db: &Path, sql: &str) {
    rusqlite::Connection::open(db)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

/// The `name` of entity `id` in the knowledge graph at `db`, if the row is there.
pub fn name(db: &Path, id: i64) -> Option<String> {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("SELECT name FROM entities WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .ok()
}

/// An engine for `machine`'s home on a simulated clock that starts `back` ago, in whole
/// seconds (as a backup's name has them), and that clock.
pub fn clocked_engine(
    machine: &Machine,
    back: chrono::Duration,
) -> (metasync::Engine, Arc<metasync::clock::FixedClock>) {
    let start = chrono::Utc::now() - back;
    let start = start - chrono::Duration::nanoseconds(start.timestamp_subsec_nanos().into());
    let clock = Arc::new(metasync::clock::FixedClock::new(start));
    let engine = metasync::Engine::open(machine.home.clone(), None)
        .unwrap()
        .with_clock(clock.clone());
    (engine, clock)
}

/// One sync of `engine` with the default options, which must exit 0.
pub fn run_ok(engine: &metasync::Engine) -> metasync::RunReport {
    let r = engine
        .run(&metasync::RunOptions::default(), &mut |_| {})
        .unwrap();
    assert_eq!(r.exit_code, 0, "{:?} {:?}", r.errors, r.warnings);
    r
}

/// The logical hash of the database at `path`.
pub fn logical(path: &Path) -> String {
    metasync::sqlite::logical_hash(path, &Default::default()).unwrap()
}

/// One row of a knowledge graph of `entities` entities changed, as a five-minute edit
/// does: the row `rep` picks (every one in turn), its data and its time.
pub fn change_one_row(db: &Path, rep: u64, entities: u64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute(
        "UPDATE entities SET data = ?1, updated_at = ?2 WHERE id = ?3",
        rusqlite::params![
            format!("{{\"summary\":\"edited in repetition {rep}\"}}"),
            format!("2026-12-01T12:{:02}:00Z", rep % 60),
            ((rep * 7919) % entities + 1) as i64
        ],
    )
    .unwrap();
}

/// Every version `m` lists with `backups` + `list_args`, each restored with `restore --to`
/// into `w` (names tagged `tag`): its id and restored bytes, in the listing's order.
pub fn restore_each(
    m: &Machine,
    w: &World,
    list_args: &[&str],
    tag: &str,
) -> Vec<(String, Vec<u8>)> {
    let mut args = vec!["backups"];
    args.extend_from_slice(list_args);
    let (code, list) = m.json(&args);
    assert_eq!(code, 0, "{list:#}");
    let mut out = Vec::new();
    for (i, e) in list.as_array().unwrap().iter().enumerate() {
        let id = e["id"].as_str().unwrap();
        let to = w.path(&format!("{tag}-{i}"));
        let r = m.run(&["restore", id, "--to", to.to_str().unwrap()]);
        assert!(
            r.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        out.push((id.to_string(), std::fs::read(&to).unwrap()));
    }
    out
}

/// The entries of a `backups --json` listing that are stored versions.
pub fn stored_entries(list: &serde_json::Value) -> Vec<&serde_json::Value> {
    list.as_array()
        .unwrap()
        .iter()
        .filter(|b| b["stored"] == true)
        .collect()
}
