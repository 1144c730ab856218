//! Row-merge benchmark (issue 8): the time to merge a 10,000-row change set (5,000 rows
//! changed on each side) into a 1,000,000-entity knowledge graph, against the time to copy
//! the whole file once, in the same run. Run: `cargo bench --bench merge` (BENCH_ENTITIES to
//! resize). Prints a Markdown table for BENCHMARKS.md.

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
    let mut changed = 0;
    for i in 0..runs {
        let out = dir.path().join(format!("out-{i}.db"));
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
    let (m, c) = (median(merge_times.clone()), median(copy_times.clone()));
    let min = merge_times.iter().cloned().fold(f64::MAX, f64::min);
    let max = merge_times.iter().cloned().fold(0.0, f64::max);
    println!("| case | median | min–max | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| row merge, {changed} rows changed, {entities} entities ({:.0} MB) | {m:.2} s | {min:.2}–{max:.2} s | {:.1}× a copy |",
        size as f64 / 1e6,
        m / c
    );
    println!("| `cp` + fsync of the same file (reference) | {c:.2} s | | 1× |");
}
