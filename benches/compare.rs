//! `cargo bench --bench compare` (or `scripts/bench`): Metasync side by side with unison,
//! rsync and rclone bisync on generated, seeded workloads, plus the reference operations
//! (`sqlite3 .backup`, `PRAGMA quick_check`, `cp`, `openssl dgst -sha256`, `sha256sum`), then
//! `BENCHMARKS.md`.
//!
//! Every whole-run timing is of a process launched the same way (`/usr/bin/time -f %M -o F
//! <tool> …`, which also gives each run's peak RSS); Metasync through its release binary
//! `target/release/metasync`. The library is used only for the hash-throughput
//! micro-measurement and to generate the databases.
//!
//! Environment: `BENCH_FULL=1` adds the 1,000,000-entity database and hashes 1 GiB (quick:
//! 256 MiB); `BENCH_RUNS` (default 9; the 1M database's first syncs and changes use
//! `BENCH_RUNS_LARGE`, default 5, and its no-op case `BENCH_RUNS` too);
//! `BENCH_DIR` (work folder; default a fresh temp dir, removed at the end);
//! `BENCH_OUT` (default `BENCHMARKS.md` at the repository root); `BENCH_ONLY` (comma list of
//! workload names: home, db92, db10k, db1m, tree10k, hash, ref, daemon, app; `home` is a
//! 10,000-entity database beside the 10,000-file tree, the report's headline). `app`: the tray app
//! `target/release/metasync-app` under `xvfb-run` (skipped, with a line in the report, when
//! the binary or xvfb-run is missing); `BENCH_APP_SETTLE` (default 15 s after its first
//! sync) and `BENCH_APP_SECS` (default 20 s of sampling); screenshots go to
//! `tests/artifacts/bench-app-{tray,panel}.png`.
//!
//! Not a test: run as a test target (no `--bench` argument) it does nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// Longer than the scan cache's racy-clean window (2 s).
const AGE: Duration = Duration::from_millis(2100);
/// Everything in BENCHMARKS.md from this line on is kept when the harness rewrites it.
const NOTES_MARKER: &str = "<!-- notes below:";

// ---------------------------------------------------------------------------------------
// Measuring

#[derive(Debug, Clone, Copy)]
struct Sample {
    secs: f64,
    rss_kb: u64,
}

/// One process run: wall time, peak RSS, exit code, stdout, stderr.
struct Ran {
    sample: Sample,
    code: i32,
    stderr: String,
}

fn run_timed(argv: &[String], envs: &[(String, String)], rss_file: &Path) -> Ran {
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-f").arg("%M").arg("-o").arg(rss_file).args(argv);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let out = cmd.output().expect("spawn /usr/bin/time");
    let secs = start.elapsed().as_secs_f64();
    let rss_kb = std::fs::read_to_string(rss_file)
        .ok()
        .and_then(|s| s.lines().last().and_then(|l| l.trim().parse().ok()))
        .unwrap_or(0);
    Ran {
        sample: Sample { secs, rss_kb },
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[derive(Debug, Clone, Default)]
struct Series {
    samples: Vec<Sample>,
    failures: Vec<String>,
}

impl Series {
    fn secs(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.samples.iter().map(|s| s.secs).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v
    }
    fn median(&self) -> Option<f64> {
        median(&self.secs())
    }
    fn min(&self) -> Option<f64> {
        self.secs().first().copied()
    }
    fn max(&self) -> Option<f64> {
        self.secs().last().copied()
    }
    fn rss_max_kb(&self) -> u64 {
        self.samples.iter().map(|s| s.rss_kb).max().unwrap_or(0)
    }
    fn cell(&self) -> String {
        match (self.median(), self.min(), self.max()) {
            (Some(m), Some(lo), Some(hi)) => {
                let mut s = format!("{} ({}–{})", fmt_s(m), fmt_s(lo), fmt_s(hi));
                if !self.failures.is_empty() {
                    let _ = write!(s, " ⚠ {} failed", self.failures.len());
                }
                s
            }
            _ if !self.failures.is_empty() => format!("failed: {}", self.failures[0]),
            _ => "—".into(),
        }
    }
}

fn median(sorted: &[f64]) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    Some(if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    })
}

fn fmt_s(s: f64) -> String {
    if s < 0.1 {
        format!("{:.4} s", s)
    } else if s < 10.0 {
        format!("{:.3} s", s)
    } else {
        format!("{:.1} s", s)
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "—".into(),
    }
}

// ---------------------------------------------------------------------------------------
// Tools

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tool {
    Metasync,
    Unison,
    Rsync,
    Rclone,
}

const TOOLS: [Tool; 4] = [Tool::Metasync, Tool::Unison, Tool::Rsync, Tool::Rclone];

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Metasync => "Metasync",
            Tool::Unison => "unison",
            Tool::Rsync => "rsync -a",
            Tool::Rclone => "rclone bisync",
        }
    }
    fn dir(self) -> &'static str {
        match self {
            Tool::Metasync => "metasync",
            Tool::Unison => "unison",
            Tool::Rsync => "rsync",
            Tool::Rclone => "rclone",
        }
    }
}

fn metasync_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(MANIFEST_DIR).join("target"));
    target.join("release").join("metasync")
}

/// One tool's pair of replicas for one workload: `a` (local/home), `b` (the remote), and the
/// tool's own state folder.
struct Pair {
    tool: Tool,
    root: PathBuf,
    files: Vec<String>,
}

impl Pair {
    fn a(&self) -> PathBuf {
        self.root.join("a")
    }
    fn b(&self) -> PathBuf {
        self.root.join("b")
    }
    fn state(&self) -> PathBuf {
        self.root.join("state")
    }

    /// Fresh replicas: `a` a copy of the seed, `b` empty, no tool state.
    fn reset(&self, seed: &Path) {
        let _ = std::fs::remove_dir_all(&self.root);
        std::fs::create_dir_all(&self.root).unwrap();
        sh(&["cp", "-a", &path_str(seed), &path_str(&self.a())]);
        std::fs::create_dir_all(self.b()).unwrap();
        std::fs::create_dir_all(self.state()).unwrap();
        match self.tool {
            Tool::Metasync => {
                let files: Vec<String> = self.files.iter().map(|f| format!("{f:?}")).collect();
                let toml = format!(
                    "files = [{}]\n\n[[locations]]\nname = \"remote\"\npath = {:?}\n",
                    files.join(", "),
                    path_str(&self.b())
                );
                std::fs::write(self.a().join("metasync.toml"), toml).unwrap();
            }
            Tool::Rclone => std::fs::write(self.state().join("rclone.conf"), "").unwrap(),
            _ => {}
        }
    }

    /// The command line of one sync; `first` for the very first one (rclone needs `--resync`).
    fn argv(&self, first: bool) -> Vec<String> {
        let (a, b) = (path_str(&self.a()), path_str(&self.b()));
        let mut v: Vec<String> = match self.tool {
            Tool::Metasync => vec![
                path_str(&metasync_bin()),
                "--home".into(),
                a,
                "-q".into(),
                "sync".into(),
            ],
            Tool::Unison => vec![
                "unison".into(),
                a,
                b,
                "-batch".into(),
                "-auto".into(),
                "-times".into(),
                "-ui".into(),
                "text".into(),
                "-silent".into(),
            ],
            Tool::Rsync => vec![
                "rsync".into(),
                "-a".into(),
                format!("{a}/"),
                format!("{b}/"),
            ],
            Tool::Rclone => vec![
                "rclone".into(),
                "bisync".into(),
                a,
                b,
                "--workdir".into(),
                path_str(&self.state().join("rclone")),
                "--config".into(),
                path_str(&self.state().join("rclone.conf")),
            ],
        };
        if first && self.tool == Tool::Rclone {
            v.push("--resync".into());
        }
        v
    }

    fn envs(&self) -> Vec<(String, String)> {
        match self.tool {
            Tool::Unison => vec![("UNISON".into(), path_str(&self.state().join("unison")))],
            _ => vec![],
        }
    }

    fn sync(&self, first: bool) -> Ran {
        let r = run_timed(
            &self.argv(first),
            &self.envs(),
            &self.state().join("rss.txt"),
        );
        if r.code != 0 {
            eprintln!(
                "  {} exited {}: {}",
                self.tool.name(),
                r.code,
                r.stderr.lines().take(3).collect::<Vec<_>>().join(" | ")
            );
        }
        r
    }

    /// Metasync only: `versions read` of a run, from `--json`.
    fn metasync_hashed(&self) -> Option<u64> {
        let out = Command::new(metasync_bin())
            .arg("--home")
            .arg(self.a())
            .arg("--json")
            .arg("sync")
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.get("hashed")?.as_u64()
    }
}

fn record(series: &mut Series, r: &Ran) {
    if r.code == 0 {
        series.samples.push(r.sample);
    } else {
        let msg = r.stderr.lines().next().unwrap_or("").to_string();
        series.failures.push(format!("exit {}: {msg}", r.code));
        // Still a timing: the tool ran; but it is flagged in the table.
        series.samples.push(r.sample);
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

fn sh(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", argv[0]));
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        argv,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sh_ok(argv: &[&str]) -> String {
    Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Workloads (seeded)

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

const WORDS: &[&str] = &[
    "inbox", "archive", "project", "notes", "meeting", "draft", "invoice", "photo", "travel",
    "research", "paper", "code", "review", "family", "health", "finance", "music", "reading",
];

fn sorting_rules(rng: &mut Rng) -> String {
    let mut s = String::from("# sorting rules (generated, seeded)\nversion: 1\nrules:\n");
    for i in 0..120 {
        let w = WORDS[(rng.next() % WORDS.len() as u64) as usize];
        let d = WORDS[(rng.next() % WORDS.len() as u64) as usize];
        let _ = writeln!(
            s,
            "  - name: rule-{i:03}\n    match: \"*{w}*\"\n    move_to: \"~/Documents/{d}/{w}\"\n    priority: {}",
            rng.next() % 100
        );
    }
    s
}

/// A metastore.db of `entities` entities plus sorting-rules.yaml in a new folder.
fn make_db_seed(dir: &Path, entities: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let conversations = (entities / 10).max(1);
    metasync::sample::create_knowledge_graph(&dir.join("metastore.db"), entities, conversations)
        .expect("create knowledge graph");
    let mut rng = Rng(0x5eed_0000 ^ entities);
    std::fs::write(dir.join("sorting-rules.yaml"), sorting_rules(&mut rng)).unwrap();
}

/// The mixed home's title (the report's headline names it).
const HOME_TITLE: &str =
    "a mixed home: metastore.db with 10,000 entities + sorting-rules.yaml + 10,000 small files";

/// 10,000 small files (100 folders × 100 files, 100–4,000 bytes each).
fn make_tree_seed(dir: &Path) {
    let mut rng = Rng(0x7eee_5eed);
    for d in 0..100 {
        let sub = dir.join(format!("d{d:02}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..100 {
            let len = 100 + (rng.next() % 3900) as usize;
            let mut text = String::with_capacity(len + 16);
            while text.len() < len {
                text.push_str(WORDS[(rng.next() % WORDS.len() as u64) as usize]);
                text.push(if rng.next().is_multiple_of(12) {
                    '\n'
                } else {
                    ' '
                });
            }
            std::fs::write(sub.join(format!("f{f:03}.txt")), text).unwrap();
        }
    }
}

fn change_one_row(db: &Path, rep: u64, entities: u64) {
    let conn = rusqlite::Connection::open(db).expect("open for the change");
    let id = (rep * 7919) % entities + 1;
    conn.execute(
        "UPDATE entities SET data = ?1, updated_at = ?2 WHERE id = ?3",
        rusqlite::params![
            format!("{{\"summary\":\"edited in benchmark repetition {rep}\"}}"),
            format!("2026-12-01T12:{:02}:00Z", rep % 60),
            id as i64
        ],
    )
    .expect("update one row");
    conn.close().expect("close");
}

/// Deletes every `*.backup-*` file under `dir`.
fn remove_backups(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_backups(&path);
        } else if e.file_name().to_string_lossy().contains(".backup-") {
            std::fs::remove_file(&path).unwrap();
        }
    }
}

fn change_one_file(tree: &Path, rep: u64) {
    let p = tree
        .join(format!("d{:02}", rep % 100))
        .join(format!("f{:03}.txt", (rep * 37) % 100));
    let mut text = std::fs::read_to_string(&p).unwrap();
    let _ = writeln!(text, "edited in benchmark repetition {rep}");
    std::fs::write(&p, text).unwrap();
}

fn dir_size(p: &Path) -> u64 {
    sh(&["du", "-sb", &path_str(p)])
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// The comparison

#[derive(Default)]
struct CaseResult {
    by_tool: BTreeMap<Tool, Series>,
    /// Metasync's `hashed` (versions read) in a `--json` run in the same state.
    metasync_hashed: Option<u64>,
    /// Metasync's run right after the timed one (the copy it wrote is read once more, since
    /// it was written inside the racy-clean window), where it applies.
    metasync_after: Option<Series>,
    note: String,
}

struct WorkloadResult {
    name: String,
    title: String,
    size_bytes: u64,
    files: Vec<String>,
    pairs_root: PathBuf,
    cases: Vec<(String, CaseResult)>,
}

/// Repetitions of a workload's cases.
#[derive(Clone, Copy)]
struct Reps {
    /// Of the first sync and of the change.
    changes: usize,
    /// Of the no-op re-sync (cheap, and the most often run, so never fewer).
    noop: usize,
}

enum Change {
    Row { entities: u64 },
    File,
}

fn compare_workload(
    name: &str,
    title: &str,
    seed: &Path,
    files: &[String],
    change: Change,
    reps: Reps,
    work: &Path,
) -> WorkloadResult {
    let Reps {
        changes: runs,
        noop: noop_runs,
    } = reps;
    let size_bytes = dir_size(seed);
    let pairs_root = work.join("pairs").join(name);
    let pairs: Vec<Pair> = TOOLS
        .iter()
        .map(|&tool| Pair {
            tool,
            root: pairs_root.join(tool.dir()),
            files: files.to_vec(),
        })
        .collect();
    let mut cases = Vec::new();

    // 1. First sync: `a` filled, `b` empty, no state. Repetitions interleave the tools.
    eprintln!("{name}: first sync ×{runs}");
    let mut first = CaseResult::default();
    for rep in 0..runs {
        for p in &pairs {
            p.reset(seed);
        }
        for p in &pairs {
            // No tool waits for another's writeback in its own fsyncs.
            sh(&["sync"]);
            let r = p.sync(true);
            record(first.by_tool.entry(p.tool).or_default(), &r);
        }
        eprint!("  rep {rep} done\r");
    }
    cases.push(("first sync (b empty)".to_string(), first));

    // 2. No-op re-sync: let every file age past the racy-clean window, one warm-up run each,
    //    then the timed runs.
    eprintln!("{name}: no-op re-sync ×{noop_runs}");
    std::thread::sleep(AGE);
    for p in &pairs {
        p.sync(false);
    }
    let mut noop = CaseResult::default();
    for _ in 0..noop_runs {
        for p in &pairs {
            let r = p.sync(false);
            record(noop.by_tool.entry(p.tool).or_default(), &r);
        }
    }
    noop.metasync_hashed = pairs[0].metasync_hashed();
    noop.note = "after files aged > 2 s and one warm-up run of each tool".into();
    cases.push(("no-op re-sync".to_string(), noop));

    // 3. One change in `a`, aged past the racy window, then the timed run; then one untimed
    //    settling run (timed separately for Metasync) before the next repetition.
    let label = match change {
        Change::Row { .. } => "re-sync after one row changed",
        Change::File => "re-sync after one file of 10,000 changed",
    };
    eprintln!("{name}: {label} ×{runs}");
    let mut changed = CaseResult::default();
    let mut after = Series::default();
    for rep in 0..runs as u64 {
        for p in &pairs {
            match change {
                Change::Row { entities } => {
                    change_one_row(&p.a().join("metastore.db"), rep, entities)
                }
                Change::File => change_one_file(&p.a(), rep),
            }
        }
        std::thread::sleep(AGE);
        for p in &pairs {
            sh(&["sync"]);
            let r = p.sync(false);
            record(changed.by_tool.entry(p.tool).or_default(), &r);
        }
        std::thread::sleep(AGE);
        for p in &pairs {
            let r = p.sync(false);
            if p.tool == Tool::Metasync {
                record(&mut after, &r);
                // The others keep no copy of what they overwrite: with Metasync's backups
                // removed, every replica holds the same data before the next repetition.
                remove_backups(&p.b());
            }
        }
    }
    changed.metasync_after = Some(after);
    changed.note = "the change aged > 2 s before the timed run".into();
    cases.push((label.to_string(), changed));

    WorkloadResult {
        name: name.into(),
        title: title.into(),
        size_bytes,
        files: files.to_vec(),
        pairs_root,
        cases,
    }
}

// ---------------------------------------------------------------------------------------
// Reference operations

struct RefOp {
    label: String,
    command: String,
    series: Series,
}

fn ref_series(argv: &[String], runs: usize, scratch: &Path, before: &dyn Fn()) -> Series {
    let mut s = Series::default();
    for _ in 0..runs {
        before();
        // As before the tools' timed runs: nothing left dirty by an earlier run.
        sh(&["sync"]);
        let r = run_timed(argv, &[], &scratch.join("rss.txt"));
        record(&mut s, &r);
    }
    s
}

/// `sqlite3 .backup`, `PRAGMA quick_check`, `PRAGMA integrity_check` and `cp` of a database.
fn database_refs(db: &Path, runs: usize, scratch: &Path) -> Vec<RefOp> {
    std::fs::create_dir_all(scratch).unwrap();
    let copy = scratch.join("backup.db");
    let cp_dest = scratch.join("cp.db");
    let rm = |p: PathBuf| {
        move || {
            let _ = std::fs::remove_file(&p);
        }
    };
    let (db_s, copy_s, cp_s) = (path_str(db), path_str(&copy), path_str(&cp_dest));
    let backup: Vec<String> = vec!["sqlite3".into(), db_s.clone(), format!(".backup {copy_s}")];
    let quick: Vec<String> = vec![
        "sqlite3".into(),
        copy_s.clone(),
        "PRAGMA quick_check".into(),
    ];
    let integ: Vec<String> = vec![
        "sqlite3".into(),
        copy_s.clone(),
        "PRAGMA integrity_check".into(),
    ];
    let cp: Vec<String> = vec!["cp".into(), db_s.clone(), cp_s.clone()];
    let mut out = vec![RefOp {
        label: "sqlite3 .backup".into(),
        command: shell_line(&backup),
        series: ref_series(&backup, runs, scratch, &rm(copy.clone())),
    }];
    out.push(RefOp {
        label: "PRAGMA quick_check".into(),
        command: shell_line(&quick),
        series: ref_series(&quick, runs, scratch, &|| {}),
    });
    out.push(RefOp {
        label: "PRAGMA integrity_check".into(),
        command: shell_line(&integ),
        series: ref_series(&integ, runs, scratch, &|| {}),
    });
    out.push(RefOp {
        label: "cp".into(),
        command: shell_line(&cp),
        series: ref_series(&cp, runs, scratch, &rm(cp_dest.clone())),
    });
    out
}

fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:~+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------
// Hash throughput

struct HashResult {
    bytes: u64,
    rows: Vec<(String, String, Series)>,
}

fn hash_throughput(work: &Path, mib: u64, runs: usize) -> HashResult {
    let file = work.join("hash-input.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let mut rng = Rng(0x4a54_5eed);
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..mib {
            for chunk in block.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes()[..chunk.len()]);
            }
            f.write_all(&block).unwrap();
        }
    }
    let bytes = std::fs::metadata(&file).unwrap().len();
    let fs = path_str(&file);
    // Into the page cache first: every tool hashes from memory.
    sh(&["cat", &fs]);
    let mut rows = Vec::new();
    // Metasync: the engine's own function, in process (what a scan calls on a plain file).
    let mut ms = Series::default();
    let _ = metasync::kind::sha256_file(&file);
    for _ in 0..runs {
        let t = Instant::now();
        let h = metasync::kind::sha256_file(&file).expect("hash");
        ms.samples.push(Sample {
            secs: t.elapsed().as_secs_f64(),
            rss_kb: 0,
        });
        std::hint::black_box(h);
    }
    rows.push((
        "Metasync (metasync::kind::sha256_file, in process)".into(),
        "metasync::kind::sha256_file(path)".into(),
        ms,
    ));
    for argv in [
        vec![
            "openssl".to_string(),
            "dgst".into(),
            "-sha256".into(),
            fs.clone(),
        ],
        vec!["sha256sum".to_string(), fs.clone()],
    ] {
        let s = ref_series(&argv, runs, work, &|| {});
        rows.push((argv[0].clone(), shell_line(&argv), s));
    }
    let _ = std::fs::remove_file(&file);
    HashResult { bytes, rows }
}

// ---------------------------------------------------------------------------------------
// Idle daemon

struct DaemonResult {
    command: String,
    seconds: f64,
    cpu_percent: f64,
    rss_kb_start: u64,
    rss_kb_end: u64,
    hwm_kb: u64,
    note: String,
}

fn proc_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, i.e. 11 and 12 after ')'.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn proc_status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn idle_daemon(pair: &Pair, sample_secs: u64) -> DaemonResult {
    let argv = vec![
        path_str(&metasync_bin()),
        "--home".into(),
        path_str(&pair.a()),
        "-q".into(),
        "daemon".into(),
        "--interval".into(),
        "300".into(),
    ];
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the daemon");
    let pid = child.id();
    // Past the first run: wait until its run history grows (the archive is committed), then 1 s.
    let state = pair.a().join(".metasync").join("state.db");
    let runs_before = history_len(&state);
    let t0 = Instant::now();
    while history_len(&state) <= runs_before && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let clk_tck: f64 = sh(&["getconf", "CLK_TCK"]).trim().parse().unwrap_or(100.0);
    let ticks0 = proc_ticks(pid).unwrap_or(0);
    let rss_kb_start = proc_status_kb(pid, "VmRSS:");
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(sample_secs));
    let ticks1 = proc_ticks(pid).unwrap_or(0);
    let seconds = t.elapsed().as_secs_f64();
    let rss_kb_end = proc_status_kb(pid, "VmRSS:");
    let hwm_kb = proc_status_kb(pid, "VmHWM:");
    let _ = child.kill();
    let _ = child.wait();
    DaemonResult {
        command: shell_line(&argv),
        seconds,
        cpu_percent: (ticks1.saturating_sub(ticks0)) as f64 / clk_tck / seconds * 100.0,
        rss_kb_start,
        rss_kb_end,
        hwm_kb,
        note: format!(
            "home: the {} pair (already in sync); first run finished {:.1} s after start",
            pair.root
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            t0.elapsed().as_secs_f64() - seconds - 1.0
        ),
    }
}

fn history_len(state: &Path) -> i64 {
    rusqlite::Connection::open_with_flags(state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| {
            // Table name as in archive.rs; any failure (not created yet) counts as 0.
            c.query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Idle app: the real tray app under Xvfb, its whole process tree

/// The release build of the tray app (`cargo build --release -p metasync-app`).
fn app_bin() -> PathBuf {
    metasync_bin().with_file_name("metasync-app")
}

/// One process of the app's tree over the sampling window.
struct ProcRow {
    pid: u32,
    name: String,
    /// `None` when the process appeared during the window.
    cpu_percent: Option<f64>,
    rss_kb: u64,
    hwm_kb: u64,
    pss_kb: Option<u64>,
}

/// One idle measurement of the app: tray only, or after the panel was opened.
struct AppRun {
    label: &'static str,
    command: String,
    seconds: f64,
    rows: Vec<ProcRow>,
    note: String,
    screenshot: Option<PathBuf>,
    error: Option<String>,
}

struct AppResult {
    /// Why nothing was measured (no app binary, no xvfb-run).
    skipped: Option<String>,
    runs: Vec<AppRun>,
    webkit: String,
}

/// The parent pid from `/proc/<pid>/stat` (the field after the state, after `)`).
fn proc_ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every live descendant of `root` (children first found through each process's ppid).
fn descendants(root: u32) -> Vec<u32> {
    let mut by_parent: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = proc_ppid(pid) {
                by_parent.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in by_parent.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            out.push(c);
            todo.push(c);
        }
    }
    out.sort_unstable();
    out
}

/// The program's name: argv[0]'s last component (`comm` is cut at 15 characters).
fn proc_name(pid: u32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or(&[]);
    let name = String::from_utf8_lossy(argv0);
    match name.rsplit('/').next().filter(|n| !n.is_empty()) {
        Some(n) => n.to_string(),
        None => std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// Proportional set size: each shared page divided among the processes that map it.
fn proc_pss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    s.lines()
        .find(|l| l.starts_with("Pss:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// One variable of a process's environment (to reach its display for the screenshot).
fn proc_env(pid: u32, key: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|&b| b == 0).find_map(|kv| {
        let kv = String::from_utf8_lossy(kv);
        kv.strip_prefix(key)
            .and_then(|r| r.strip_prefix('='))
            .map(str::to_string)
    })
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Starts the app under `xvfb-run` + `dbus-run-session` (with `trayer` as the tray host when
/// it is installed) on a fresh home with two locations, waits for its first sync and
/// `settle_secs` more, then samples its process tree for `sample_secs`.
fn idle_app(
    seed: &Path,
    root: &Path,
    panel: bool,
    settle_secs: u64,
    sample_secs: u64,
    shot: &Path,
) -> AppRun {
    let label = if panel {
        "panel opened (`--panel`)"
    } else {
        "tray only (panel never opened)"
    };
    let _ = std::fs::remove_dir_all(root);
    let (home, user) = (root.join("home"), root.join("user"));
    std::fs::create_dir_all(root).unwrap();
    sh(&["cp", "-a", &path_str(seed), &path_str(&home)]);
    for d in [&user, &root.join("b"), &root.join("c")] {
        std::fs::create_dir_all(d).unwrap();
    }
    let config = home.join("metasync.toml");
    std::fs::write(
        &config,
        format!(
            "interval_secs = 300\nfiles = [\"metastore.db\", \"sorting-rules.yaml\"]\n\n\
             [[locations]]\nname = \"b\"\npath = {:?}\n\n[[locations]]\nname = \"c\"\npath = {:?}\n",
            path_str(&root.join("b")),
            path_str(&root.join("c"))
        ),
    )
    .unwrap();
    let tray_host = if have("trayer") {
        "trayer --edge bottom --align right --widthtype pixel --width 120 --heighttype pixel \
         --height 32 --transparent false --tint 0xdddddd >/dev/null 2>&1 & sleep 1; "
    } else {
        ""
    };
    let inner = format!("{tray_host}exec dbus-run-session -- \"$@\"");
    let mut argv: Vec<String> = vec![
        "xvfb-run".into(),
        "-a".into(),
        "-s".into(),
        "-screen 0 1280x800x24".into(),
        "sh".into(),
        "-c".into(),
        inner,
        "sh".into(),
        path_str(&app_bin()),
    ];
    if panel {
        argv.push("--panel".into());
    }
    let envs = [
        ("HOME", path_str(&user)),
        ("METASYNC_HOME", path_str(&home)),
        ("METASYNC_CONFIG", path_str(&config)),
        ("NO_AT_BRIDGE", "1".into()),
    ];
    let command = format!(
        "{} {}",
        envs.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        shell_line(&argv)
    );
    let mut run = AppRun {
        label,
        command,
        seconds: 0.0,
        rows: Vec::new(),
        note: String::new(),
        screenshot: None,
        error: None,
    };
    let log = std::fs::File::create(root.join("app.log")).unwrap();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for (k, v) in &envs {
        cmd.env(k, v);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            run.error = Some(format!("cannot start xvfb-run: {e}"));
            return run;
        }
    };
    let top = child.id();
    let t0 = Instant::now();
    let measured = measure_app(&mut run, top, &home, settle_secs, sample_secs, shot);
    if let Err(e) = measured {
        let log = std::fs::read_to_string(root.join("app.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        run.error = Some(format!(
            "{e} ({:.0} s after start; log: {})",
            t0.elapsed().as_secs_f64(),
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    // Stop: TERM the app (dbus-run-session and xvfb-run then end), then whatever of the
    // tree xvfb-run started is left (trayer, Xvfb).
    let tree = descendants(top);
    let app = tree.iter().copied().find(|&p| is_app(p));
    if let Some(p) = app {
        signal(p, "TERM");
    }
    let t = Instant::now();
    while child.try_wait().ok().flatten().is_none() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    for p in tree.iter().rev().copied().filter(|&p| alive(p)) {
        signal(p, "TERM");
    }
    let _ = child.kill();
    let _ = child.wait();
    run
}

fn is_app(pid: u32) -> bool {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let want = std::fs::canonicalize(app_bin()).ok();
    exe.is_some() && exe == want
}

fn measure_app(
    run: &mut AppRun,
    top: u32,
    home: &Path,
    settle_secs: u64,
    sample_secs: u64,
    shot: &Path,
) -> Result<(), String> {
    let t0 = Instant::now();
    let app = loop {
        if let Some(p) = descendants(top).into_iter().find(|&p| is_app(p)) {
            break p;
        }
        if t0.elapsed() > Duration::from_secs(30) || !alive(top) {
            return Err("the app process did not appear".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let state = home.join(".metasync").join("state.db");
    while history_len(&state) == 0 {
        if t0.elapsed() > Duration::from_secs(120) || !alive(app) {
            return Err("no first sync within 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let first_run = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(settle_secs));
    let clk_tck: f64 = sh(&["getconf", "CLK_TCK"]).trim().parse().unwrap_or(100.0);
    let tree = |app: u32| {
        let mut v = vec![app];
        v.extend(descendants(app));
        v
    };
    let ticks0: BTreeMap<u32, u64> = tree(app)
        .into_iter()
        .filter_map(|p| Some((p, proc_ticks(p)?)))
        .collect();
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(sample_secs));
    let seconds = t.elapsed().as_secs_f64();
    let pids = tree(app);
    for &pid in &pids {
        let Some(ticks1) = proc_ticks(pid) else {
            continue;
        };
        run.rows.push(ProcRow {
            pid,
            name: proc_name(pid),
            cpu_percent: ticks0
                .get(&pid)
                .map(|&t0| ticks1.saturating_sub(t0) as f64 / clk_tck / seconds * 100.0),
            rss_kb: proc_status_kb(pid, "VmRSS:"),
            hwm_kb: proc_status_kb(pid, "VmHWM:"),
            pss_kb: proc_pss_kb(pid),
        });
    }
    let gone = ticks0.keys().filter(|p| !pids.contains(p)).count();
    run.seconds = seconds;
    run.note = format!(
        "first sync recorded {first_run:.1} s after start, then {settle_secs} s of settling{}",
        if gone > 0 {
            format!("; {gone} process(es) of the tree ended during the window")
        } else {
            String::new()
        }
    );
    // The screen, to check that it really ran (after sampling, so it does not disturb it).
    if let Some(display) = proc_env(app, "DISPLAY") {
        if let Some(dir) = shot.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut imp = Command::new("import");
        imp.arg("-display")
            .arg(&display)
            .arg("-window")
            .arg("root")
            .arg(shot)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(xauth) = proc_env(app, "XAUTHORITY") {
            imp.env("XAUTHORITY", xauth);
        }
        if imp.status().is_ok_and(|s| s.success()) {
            run.screenshot = Some(shot.to_path_buf());
        }
    }
    Ok(())
}

/// Both measurements, or why there are none.
fn idle_app_all(seed: &Path, work: &Path, settle_secs: u64, sample_secs: u64) -> AppResult {
    let webkit = sh_ok(&[
        "dpkg-query",
        "-W",
        "-f",
        "${Version}",
        "libwebkit2gtk-4.1-0",
    ])
    .trim()
    .to_string();
    let mut result = AppResult {
        skipped: None,
        runs: Vec::new(),
        webkit,
    };
    let missing: Vec<&str> = ["xvfb-run", "dbus-run-session"]
        .into_iter()
        .filter(|c| !have(c))
        .collect();
    if !app_bin().exists() {
        result.skipped = Some(format!(
            "`{}` is missing: build it with `cargo build --release --locked -p metasync-app` \
             (`scripts/bench` does when `xvfb-run` is installed)",
            app_bin().display()
        ));
    } else if !missing.is_empty() {
        result.skipped = Some(format!(
            "`{}` not installed (`scripts/deps` installs it)",
            missing.join("`, `")
        ));
    }
    if result.skipped.is_some() {
        return result;
    }
    let shots = Path::new(MANIFEST_DIR).join("tests").join("artifacts");
    for (panel, name) in [(false, "tray"), (true, "panel")] {
        eprintln!("idle app: {name}");
        result.runs.push(idle_app(
            seed,
            &work.join("pairs").join(format!("app-{name}")),
            panel,
            settle_secs,
            sample_secs,
            &shots.join(format!("bench-app-{name}.png")),
        ));
    }
    result
}

// ---------------------------------------------------------------------------------------
// Machine facts

fn machine_facts() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or("");
    let sha_ni = flags.split_whitespace().any(|f| f == "sha_ni");
    let first_line = |argv: &[&str]| sh_ok(argv).lines().next().unwrap_or("?").trim().to_string();
    vec![
        ("nproc".into(), sh_ok(&["nproc"]).trim().into()),
        ("CPU".into(), model),
        (
            "sha_ni".into(),
            if sha_ni {
                "present".into()
            } else {
                "absent".into()
            },
        ),
        ("kernel".into(), first_line(&["uname", "-sr"])),
        (
            "memory".into(),
            first_line(&["sh", "-c", "free -m | awk '/Mem:/{print $2\" MiB\"}'"]),
        ),
        (
            "load average at start".into(),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        ("unison".into(), first_line(&["unison", "-version"])),
        ("rsync".into(), first_line(&["rsync", "--version"])),
        ("rclone".into(), first_line(&["rclone", "version"])),
        (
            "sqlite3".into(),
            first_line(&["sqlite3", "--version"])
                .split_whitespace()
                .next()
                .unwrap_or("?")
                .to_string(),
        ),
        ("openssl".into(), first_line(&["openssl", "version"])),
        ("sha256sum".into(), first_line(&["sha256sum", "--version"])),
        (
            "metasync".into(),
            format!(
                "{} (release build, git {})",
                path_str(&metasync_bin()),
                sh_ok(&["git", "-C", MANIFEST_DIR, "rev-parse", "--short", "HEAD"]).trim()
            ),
        ),
    ]
}

// ---------------------------------------------------------------------------------------
// Report

/// The report's single-measurement sections (each absent when its workload was not run).
struct Extras<'a> {
    hash: Option<&'a HashResult>,
    daemon: Option<&'a DaemonResult>,
    app: Option<&'a AppResult>,
}

/// The mixed home's cases at a glance, against the targets of issue 16: its no-op under
/// half of rsync -a and faster than unison.
fn headline(w: &mut String, home: &WorkloadResult) {
    let _ = writeln!(
        w,
        "## Headline: {HOME_TITLE}\n\n| case | Metasync | rsync -a | unison | ÷ rsync | ÷ unison | Metasync peak RSS | rsync peak RSS | unison peak RSS |\n|---|---|---|---|---|---|---|---|---|"
    );
    for (label, c) in &home.cases {
        let med = |t: Tool| c.by_tool.get(&t).and_then(Series::median);
        let rss = |t: Tool| {
            c.by_tool
                .get(&t)
                .map(|s| format!("{:.1} MB", s.rss_max_kb() as f64 / 1024.0))
                .unwrap_or_else(|| "—".into())
        };
        let _ = writeln!(
            w,
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {} |",
            med(Tool::Metasync).map(fmt_s).unwrap_or_else(|| "—".into()),
            med(Tool::Rsync).map(fmt_s).unwrap_or_else(|| "—".into()),
            med(Tool::Unison).map(fmt_s).unwrap_or_else(|| "—".into()),
            ratio(med(Tool::Metasync), med(Tool::Rsync)),
            ratio(med(Tool::Metasync), med(Tool::Unison)),
            rss(Tool::Metasync),
            rss(Tool::Rsync),
            rss(Tool::Unison),
        );
    }
    let noop = home.cases.iter().find(|(l, _)| l == "no-op re-sync");
    if let Some((_, c)) = noop {
        let med = |t: Tool| c.by_tool.get(&t).and_then(Series::median);
        if let (Some(m), Some(r), Some(u)) =
            (med(Tool::Metasync), med(Tool::Rsync), med(Tool::Unison))
        {
            let verdict = |ok: bool| if ok { "met" } else { "**not met**" };
            let _ = writeln!(
                w,
                "\nTargets for the no-op (issue 16): under half of rsync -a ({} < {}): {}; faster than unison ({} < {}): {}.\n",
                fmt_s(m),
                fmt_s(r / 2.0),
                verdict(m < r / 2.0),
                fmt_s(m),
                fmt_s(u),
                verdict(m < u)
            );
        }
    }
}

fn write_report(
    facts: &[(String, String)],
    workloads: &[WorkloadResult],
    refs: &[(String, Vec<RefOp>)],
    extras: Extras<'_>,
    runs: usize,
    full: bool,
    total: Duration,
) -> String {
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# Benchmarks\n");
    let _ = writeln!(
        w,
        "Written by `cargo bench --bench compare` (`scripts/bench`{}) in {:.0} s. Medians of {} runs \
         (the 1,000,000-entity database: `BENCH_RUNS_LARGE` for its first syncs and changes; its no-op runs as many as the others), with min–max in brackets. \
         Ratios are Metasync's median ÷ the peer's median: **below 1× Metasync is faster**. \
         Two shared cores: compare ratios, not absolutes.\n",
        if full { ", `BENCH_FULL=1`" } else { "" },
        total.as_secs_f64(),
        runs
    );
    if let Some(home) = workloads.iter().find(|wl| wl.name == "home") {
        headline(w, home);
    }
    let _ = writeln!(w, "## Machine\n\n| | |\n|---|---|");
    for (k, v) in facts {
        let _ = writeln!(w, "| {k} | {v} |");
    }
    let _ = writeln!(w, "\n## How each run is measured\n");
    let _ = writeln!(
        w,
        "- Every tool, Metasync included, is one process launched the same way: \
         `/usr/bin/time -f %M -o FILE <command>` (the wall time around it is the timing; `%M` \
         is its peak RSS). Metasync is its release CLI binary.\n\
         - Each tool has its own pair of replicas `a` (Metasync's home) and `b` (the remote), \
         made from the same seeded workload. Repetitions interleave the tools.\n\
         - **first sync**: before every repetition `a` is a fresh `cp -a` of the workload, `b` \
         is empty and every tool's state is deleted.\n\
         - Before every timed run of a first sync or a change, `sync(1)` flushes what earlier \
         runs left dirty, so that no tool's fsync waits for another tool's writes.\n\
         - **no-op re-sync**: Metasync's scan cache does not trust an entry recorded within 2 s \
         of a file's mtime/ctime (the racy-clean rule, SPEC §4.1). So after the first syncs \
         the harness sleeps 2.1 s, runs every tool once untimed (warm-up; for Metasync this \
         re-reads the copy it wrote into `b`, once), then times the no-op runs. \
         `versions read` is Metasync's own `hashed` count of one more `--json` run.\n\
         - **one change**: one row of `entities` (an `UPDATE` through SQLite) or one file of \
         the tree is changed in every `a`; 2.1 s of ageing; the timed run; 2.1 s; an untimed \
         settling run of every tool. Metasync's settling run is reported too: right after \
         Metasync writes a copy, that copy is inside the racy-clean window, so the *next* run \
         reads it once more (in a 5-minute loop that is the next tick's cost, once). Then \
         Metasync's backups in `b` are deleted: the others keep none, and on this machine a \
         write that grows the page cache costs ~10× one that reuses freed pages (see the \
         notes), so every replica holds the same data before the next repetition. The timed \
         run still makes its backup.\n\
         - rsync is one-way (`a` → `b`): it is the floor for copying, not a two-way sync. \
         Metasync also keeps a backup of every version it overwrites (a hard link in `b`); \
         the others keep none.\n"
    );
    for wl in workloads {
        let _ = writeln!(
            w,
            "## {} — {:.1} MB, files `{}`\n",
            wl.title,
            wl.size_bytes as f64 / 1e6,
            wl.files.join("`, `")
        );
        let _ = writeln!(
            w,
            "| case | Metasync | unison | rsync -a | rclone bisync | ÷ unison | ÷ rsync | ÷ rclone |\n|---|---|---|---|---|---|---|---|"
        );
        for (label, c) in &wl.cases {
            let m = c.by_tool.get(&Tool::Metasync).cloned().unwrap_or_default();
            let cell = |t: Tool| {
                c.by_tool
                    .get(&t)
                    .map(Series::cell)
                    .unwrap_or_else(|| "—".into())
            };
            let med = |t: Tool| c.by_tool.get(&t).and_then(Series::median);
            let _ = writeln!(
                w,
                "| {label}{} | {} | {} | {} | {} | {} | {} | {} |",
                c.metasync_hashed
                    .map(|h| format!(" (Metasync versions read: {h})"))
                    .unwrap_or_default(),
                m.cell(),
                cell(Tool::Unison),
                cell(Tool::Rsync),
                cell(Tool::Rclone),
                ratio(m.median(), med(Tool::Unison)),
                ratio(m.median(), med(Tool::Rsync)),
                ratio(m.median(), med(Tool::Rclone)),
            );
            if let Some(after) = &c.metasync_after {
                let _ = writeln!(
                    w,
                    "| ↳ Metasync's next run (re-reads the copy it wrote) | {} | | | | | | |",
                    after.cell()
                );
            }
        }
        let _ = writeln!(w, "\nPeak RSS (max over the runs of each case, MB):\n");
        let _ = writeln!(
            w,
            "| case | Metasync | unison | rsync -a | rclone bisync |\n|---|---|---|---|---|"
        );
        for (label, c) in &wl.cases {
            let rss = |t: Tool| {
                c.by_tool
                    .get(&t)
                    .map(|s| format!("{:.1}", s.rss_max_kb() as f64 / 1024.0))
                    .unwrap_or_else(|| "—".into())
            };
            let _ = writeln!(
                w,
                "| {label} | {} | {} | {} | {} |",
                rss(Tool::Metasync),
                rss(Tool::Unison),
                rss(Tool::Rsync),
                rss(Tool::Rclone)
            );
        }
        let _ = writeln!(
            w,
            "\nCommands (paths under the work folder `{}`):\n",
            wl.pairs_root.display()
        );
        let _ = writeln!(w, "```");
        for &t in &TOOLS {
            let p = Pair {
                tool: t,
                root: wl.pairs_root.join(t.dir()),
                files: wl.files.clone(),
            };
            let env = p
                .envs()
                .iter()
                .map(|(k, v)| format!("{k}={v} "))
                .collect::<String>();
            let _ = writeln!(w, "{env}{}", shell_line(&p.argv(false)));
            if t == Tool::Rclone {
                let _ = writeln!(w, "# first sync only: the same with --resync");
            }
        }
        let _ = writeln!(w, "```\n");
        let _ = writeln!(
            w,
            "Metasync's config (`a/metasync.toml`): `files = [{}]` and one `[[locations]]` \
             `name = \"remote\"`, `path = \".../b\"`.\n",
            wl.files
                .iter()
                .map(|f| format!("{f:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = wl.name.len();
    }
    for (db_label, ops) in refs {
        let _ = writeln!(w, "## Reference operations on the {db_label} database\n");
        let _ = writeln!(
            w,
            "| operation | median (min–max) | command |\n|---|---|---|"
        );
        for op in ops {
            let _ = writeln!(
                w,
                "| {} | {} | `{}` |",
                op.label,
                op.series.cell(),
                op.command
            );
        }
        let get = |l: &str| {
            ops.iter()
                .find(|o| o.label == l)
                .and_then(|o| o.series.median())
        };
        if let (Some(b), Some(q), Some(c)) =
            (get("sqlite3 .backup"), get("PRAGMA quick_check"), get("cp"))
        {
            let sum = b + q + c;
            let first = workloads
                .iter()
                .find(|wl| wl.title.contains(db_label.as_str()))
                .and_then(|wl| wl.cases.first())
                .and_then(|(_, c)| c.by_tool.get(&Tool::Metasync))
                .and_then(Series::median);
            let _ = writeln!(
                w,
                "\n`.backup` + `quick_check` + `cp` = {}; the target (issue 7) is Metasync's first \
                 sync within 1.5× of it = {}. Metasync's first sync: {} → {:} of the sum.\n",
                fmt_s(sum),
                fmt_s(sum * 1.5),
                first.map(fmt_s).unwrap_or_else(|| "—".into()),
                ratio(first, Some(sum))
            );
        } else {
            let _ = writeln!(w);
        }
    }
    let Extras { hash, daemon, app } = extras;
    if let Some(h) = hash {
        let _ = writeln!(
            w,
            "## SHA-256 throughput on one {:.0} MiB file (in the page cache)\n",
            h.bytes as f64 / (1 << 20) as f64
        );
        let _ = writeln!(w, "| hasher | median (min–max) | GB/s (median) | vs openssl | command |\n|---|---|---|---|---|");
        let openssl = h
            .rows
            .iter()
            .find(|r| r.0 == "openssl")
            .and_then(|r| r.2.median());
        for (label, cmd, s) in &h.rows {
            let gbps = s.median().map(|m| h.bytes as f64 / m / 1e9);
            let vs = match (s.median(), openssl) {
                (Some(m), Some(o)) => format!("{:.0}%", o / m * 100.0),
                _ => "—".into(),
            };
            let _ = writeln!(
                w,
                "| {label} | {} | {} | {vs} | `{cmd}` |",
                s.cell(),
                gbps.map(|g| format!("{g:.2}"))
                    .unwrap_or_else(|| "—".into())
            );
        }
        let _ = writeln!(
            w,
            "\nThe processes' times include their start-up (a few ms); Metasync's is the \
             function alone, so it is measured in its favour by about that much.\n"
        );
    }
    if let Some(d) = daemon {
        let _ = writeln!(w, "## Idle daemon\n");
        let _ = writeln!(
            w,
            "`{}`; {}. Sampled over {:.1} s from `/proc/<pid>/stat` (utime+stime) and \
             `/proc/<pid>/status`.\n",
            d.command, d.note, d.seconds
        );
        let _ = writeln!(
            w,
            "| CPU while idle | RSS at start of sampling | RSS at end | peak RSS (VmHWM, includes the first run) |\n|---|---|---|---|\n| {:.2}% | {:.1} MB | {:.1} MB | {:.1} MB |\n",
            d.cpu_percent,
            d.rss_kb_start as f64 / 1024.0,
            d.rss_kb_end as f64 / 1024.0,
            d.hwm_kb as f64 / 1024.0
        );
    }
    if let Some(a) = app {
        let _ = writeln!(w, "## Idle app (the tray app's whole process tree)\n");
        if let Some(why) = &a.skipped {
            let _ = writeln!(w, "Skipped: {why}.\n");
        } else {
            let _ = writeln!(
                w,
                "The release app `{}` (WebKitGTK {}) under Xvfb with a private session bus, \
                 `trayer` as the tray host when installed, a fresh home (the 92-entity database \
                 + `sorting-rules.yaml`) and two locations in temp folders. After its own first \
                 sync and some settling, every process of its tree (the app and its \
                 descendants, found through `/proc/*/stat` ppid) is sampled: CPU from \
                 utime+stime in `/proc/<pid>/stat`; `VmRSS`/`VmHWM` from `/proc/<pid>/status`; \
                 PSS from `/proc/<pid>/smaps_rollup`. The processes share libraries (GTK, \
                 WebKit), so the RSS sum counts them more than once; the PSS sum divides each \
                 shared page among its users and is the fairer total. The panel window is made \
                 the first time it opens: tray only, WebKit starts no process.\n",
                path_str(&app_bin()),
                if a.webkit.is_empty() {
                    "?"
                } else {
                    a.webkit.as_str()
                }
            );
            let mb = |kb: u64| format!("{:.1}", kb as f64 / 1024.0);
            for r in &a.runs {
                let _ = writeln!(w, "### {}\n\n`{}`\n", r.label, r.command);
                if let Some(e) = &r.error {
                    let _ = writeln!(w, "Not measured: {e}.\n");
                    continue;
                }
                let _ = writeln!(
                    w,
                    "{}; sampled over {:.1} s. Screenshot: {}.\n",
                    r.note,
                    r.seconds,
                    r.screenshot
                        .as_ref()
                        .map(|p| format!("`{}`", p.display()))
                        .unwrap_or_else(|| "none".into())
                );
                let _ = writeln!(
                    w,
                    "| process | CPU while idle | VmRSS MB | PSS MB | VmHWM MB |\n|---|---|---|---|---|"
                );
                for p in &r.rows {
                    let _ = writeln!(
                        w,
                        "| {} (pid {}) | {} | {} | {} | {} |",
                        p.name,
                        p.pid,
                        p.cpu_percent
                            .map(|c| format!("{c:.2}%"))
                            .unwrap_or_else(|| "(started during the window)".into()),
                        mb(p.rss_kb),
                        p.pss_kb.map(mb).unwrap_or_else(|| "—".into()),
                        mb(p.hwm_kb)
                    );
                }
                let cpu: f64 = r.rows.iter().filter_map(|p| p.cpu_percent).sum();
                let rss: u64 = r.rows.iter().map(|p| p.rss_kb).sum();
                let pss: u64 = r.rows.iter().filter_map(|p| p.pss_kb).sum();
                let _ = writeln!(
                    w,
                    "| **whole app ({} processes)** | **{cpu:.2}%** | **{}** (sum, overcounts shared pages) | **{}** | |\n",
                    r.rows.len(),
                    mb(rss),
                    mb(pss)
                );
            }
        }
    }
    md
}

// ---------------------------------------------------------------------------------------

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("compare: a benchmark, not a test; run `cargo bench --bench compare`");
        return;
    }
    let started = Instant::now();
    let full = std::env::var("BENCH_FULL").is_ok_and(|v| v == "1");
    let runs = env_usize("BENCH_RUNS", 9).max(1);
    let runs_large = env_usize("BENCH_RUNS_LARGE", 5).max(1);
    let only: Option<Vec<String>> = std::env::var("BENCH_ONLY")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let want = |n: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == n));
    assert!(
        metasync_bin().exists(),
        "{} is missing: run `cargo build --release` first (scripts/bench does)",
        metasync_bin().display()
    );
    for tool in [
        "unison",
        "rsync",
        "rclone",
        "sqlite3",
        "openssl",
        "sha256sum",
        "/usr/bin/time",
    ] {
        assert!(
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {tool}"))
                .output()
                .is_ok_and(|o| o.status.success()),
            "{tool} is not installed (scripts/bench installs it)"
        );
    }
    let (work, _tmp) = match std::env::var_os("BENCH_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            std::fs::create_dir_all(&d).unwrap();
            (d, None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("metasync-bench-")
                .tempdir()
                .unwrap();
            (t.path().to_path_buf(), Some(t))
        }
    };
    eprintln!("bench: work folder {}", work.display());
    let facts = machine_facts();
    let db_files = vec!["metastore.db".to_string(), "sorting-rules.yaml".to_string()];

    let mut workloads = Vec::new();
    let mut refs = Vec::new();
    let mut db_sizes: Vec<(&str, &str, u64, usize)> = vec![
        ("db92", "92 entities", 92, runs),
        ("db10k", "10,000 entities", 10_000, runs),
    ];
    if full {
        db_sizes.push(("db1m", "1,000,000 entities", 1_000_000, runs_large));
    }
    for (name, label, entities, n) in db_sizes {
        if !want(name) {
            continue;
        }
        let seed = work.join("seeds").join(name);
        if !seed.join("metastore.db").exists() {
            eprintln!("{name}: generating");
            let _ = std::fs::remove_dir_all(&seed);
            make_db_seed(&seed, entities);
        }
        workloads.push(compare_workload(
            name,
            &format!("metastore.db with {label} + sorting-rules.yaml"),
            &seed,
            &db_files,
            Change::Row { entities },
            Reps {
                changes: n,
                noop: n.max(runs),
            },
            &work,
        ));
        if entities >= 10_000 && want("ref") {
            eprintln!("{name}: reference operations");
            refs.push((
                label.to_string(),
                database_refs(&seed.join("metastore.db"), n, &work.join("ref").join(name)),
            ));
            let _ = std::fs::remove_dir_all(work.join("ref").join(name));
        }
    }
    if want("home") {
        // The headline: a real home mixes a database with files.
        let seed = work.join("seeds").join("home");
        if !seed.join("metastore.db").exists() {
            eprintln!("home: generating");
            let _ = std::fs::remove_dir_all(&seed);
            make_db_seed(&seed, 10_000);
            make_tree_seed(&seed);
        }
        workloads.insert(
            0,
            compare_workload(
                "home",
                HOME_TITLE,
                &seed,
                &["**/*".to_string()],
                Change::Row { entities: 10_000 },
                Reps {
                    changes: runs,
                    noop: runs,
                },
                &work,
            ),
        );
    }
    if want("tree10k") {
        let seed = work.join("seeds").join("tree10k");
        if !seed.exists() {
            eprintln!("tree10k: generating");
            make_tree_seed(&seed);
        }
        workloads.push(compare_workload(
            "tree10k",
            "a tree of 10,000 small files",
            &seed,
            &["**/*".to_string()],
            Change::File,
            Reps {
                changes: runs,
                noop: runs,
            },
            &work,
        ));
    }
    let hash = want("hash").then(|| {
        eprintln!("hash throughput");
        hash_throughput(&work, if full { 1024 } else { 256 }, runs.min(7))
    });
    let daemon = if want("daemon") {
        eprintln!("idle daemon");
        let pair = Pair {
            tool: Tool::Metasync,
            root: work.join("pairs").join("daemon").join("metasync"),
            files: db_files.clone(),
        };
        let seed = work.join("seeds").join("db-daemon");
        if !seed.exists() {
            make_db_seed(&seed, 92);
        }
        pair.reset(&seed);
        pair.sync(true);
        std::thread::sleep(AGE);
        Some(idle_daemon(
            &pair,
            env_usize("BENCH_DAEMON_SECS", 20) as u64,
        ))
    } else {
        None
    };

    let app = want("app").then(|| {
        let seed = work.join("seeds").join("db-daemon");
        if !seed.exists() {
            make_db_seed(&seed, 92);
        }
        idle_app_all(
            &seed,
            &work,
            env_usize("BENCH_APP_SETTLE", 15) as u64,
            env_usize("BENCH_APP_SECS", 20) as u64,
        )
    });

    let md = write_report(
        &facts,
        &workloads,
        &refs,
        Extras {
            hash: hash.as_ref(),
            daemon: daemon.as_ref(),
            app: app.as_ref(),
        },
        runs,
        full,
        started.elapsed(),
    );
    let out = std::env::var_os("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(MANIFEST_DIR).join("BENCHMARKS.md"));
    // Hand-written notes after the marker survive a re-run (check they still hold).
    let kept = std::fs::read_to_string(&out)
        .ok()
        .and_then(|old| old.find(NOTES_MARKER).map(|i| old[i..].to_string()));
    let md = match kept {
        Some(notes) => format!("{md}\n---\n\n{notes}"),
        None => md,
    };
    std::fs::write(&out, &md).unwrap();
    println!("{md}");
    eprintln!("bench: wrote {}", out.display());
}
