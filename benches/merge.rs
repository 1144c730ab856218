//! Row-merge benchmark (issue 8): the time to merge a 10,000-row change set (5,000 rows
//! changed on each side) into a 1,000,000-entity knowledge graph, against the time to copy
//! the whole file once, in the same run. Run: `cargo bench --bench merge` (BENCH_ENTITIES to
//! resize). Prints a Markdown table for BENCHMARKS.md, with peak RSS: the merge's own (the
//! process's high-water mark is reset through `/proc/self/clear_refs` before each merge,
//! read from `VmHWM` after it) and `cp`'s (`/usr/bin/time -f %M cp`, a process of its own).

use metasync::config::Strategy;
use metasync::merge::{merge_files, MergeOutcome, MergeSide};
use std::path::Path;
use std::time::Instant;

fn exec(db: &Path, sql: &str) {
    rusqlite::Connection::open(db)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

/// Resets this process's peak RSS (`VmHWM`) to its current RSS (Linux: `clear_refs` 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// This process's peak RSS in MB since the last [`reset_peak_rss`].
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// This process's CPU time so far (user + system, seconds), from `/proc/self/stat`: on a
/// machine shared with other work the wall time varies with their load, the CPU time much less.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) start with the state (3rd).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are the 14th and 15th fields: 11th and 12th after the state's index 0.
    (ticks(11) + ticks(12)) / 100.0
}

/// `cp from to` as its own process under `/usr/bin/time`: its peak RSS in MB.
fn cp_peak_rss_mb(from: &Path, to: &Path) -> f64 {
    let rss = to.with_extension("rss");
    let ok = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&rss)
        .arg("cp")
        .arg(from)
        .arg(to)
        .status()
        .is_ok_and(|s| s.success());
    let kb = std::fs::read_to_string(&rss)
        .ok()
        .filter(|_| ok)
        .and_then(|t| t.trim().lines().last()?.trim().parse::<f64>().ok());
    let _ = std::fs::remove_file(&rss);
    let _ = std::fs::remove_file(to);
    kb.map_or(f64::NAN, |kb| kb / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let entities: u64 = std::env::var("BENCH_ENTITIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.db");
    let t = Instant::now();
    metasync::sample::create_knowledge_graph(&base, entities, 1).unwrap();
    let size = std::fs::metadata(&base).unwrap().len();
    eprintln!(
        "made a {entities}-entity database ({:.0} MB) in {:.1} s",
        size as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    std::fs::copy(&base, &a).unwrap();
    std::fs::copy(&base, &b).unwrap();
    // 5,000 rows on each side, spread over the table; disjoint, so the merge keeps all 10,000.
    let step = (entities / 10_000).max(1);
    exec(
        &a,
        &format!(
            "UPDATE entities SET name = name || ' (a)' WHERE id % {} = 0",
            step * 2
        ),
    );
    exec(
        &b,
        &format!(
            "UPDATE entities SET name = name || ' (b)' WHERE id % {} = {}",
            step * 2,
            step
        ),
    );
    let sides = [
        MergeSide {
            location: "local".into(),
            local: true,
            mtime_ns: 1,
            path: a.clone(),
        },
        MergeSide {
            location: "icloud".into(),
            local: false,
            mtime_ns: 2,
            path: b.clone(),
        },
    ];
    let mut merge_times = Vec::new();
    let mut merge_rss: f64 = 0.0;
    let mut merge_cpu = Vec::new();
    let mut changed = 0;
    for i in 0..runs {
        let out = dir.path().join(format!("out-{i}.db"));
        reset_peak_rss();
        let cpu = cpu_secs();
        let t = Instant::now();
        match merge_files(&base, &sides, Strategy::Newest, &out).unwrap() {
            MergeOutcome::Merged {
                rows_changed,
                row_conflicts,
                ..
            } => {
                assert!(row_conflicts.is_empty());
                changed = rows_changed;
            }
            other => panic!("merge did not merge: {other:?}"),
        }
        merge_times.push(t.elapsed().as_secs_f64());
        merge_cpu.push(cpu_secs() - cpu);
        merge_rss = merge_rss.max(peak_rss_mb());
        std::fs::remove_file(&out).unwrap();
    }
    let mut copy_times = Vec::new();
    for i in 0..runs {
        let out = dir.path().join(format!("copy-{i}.db"));
        let t = Instant::now();
        std::fs::copy(&base, &out).unwrap();
        std::fs::File::open(&out).unwrap().sync_all().unwrap();
        copy_times.push(t.elapsed().as_secs_f64());
        std::fs::remove_file(&out).unwrap();
    }
    let cp_rss = cp_peak_rss_mb(&base, &dir.path().join("cp-rss.db"));
    let (m, c) = (median(merge_times.clone()), median(copy_times.clone()));
    let min = merge_times.iter().cloned().fold(f64::MAX, f64::min);
    let max = merge_times.iter().cloned().fold(0.0, f64::max);
    println!("| case | median | min–max | ratio | CPU (user + sys, median) | peak RSS |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| row merge, {changed} rows changed, {entities} entities ({:.0} MB) | {m:.2} s | {min:.2}–{max:.2} s | {:.1}× a copy | {:.2} s | {merge_rss:.1} MB |",
        size as f64 / 1e6,
        m / c,
        median(merge_cpu)
    );
    println!(
        "| `cp` + fsync of the same file (reference) | {c:.2} s | | 1× | | {cp_rss:.1} MB (`cp`) |"
    );
}
