//! Crash injection against the real CLI binary.
//!
//! 1. Failpoints: for each point of propagation (after_backup, after_temp_write,
//!    before_rename, after_rename, before_archive_commit), for a plain file and a SQLite
//!    database, and for a write into a remote (rename path) and into the local home (live
//!    SQLite write path), `METASYNC_FAILPOINT=<point>[:n]` aborts the process there. After
//!    each crash: every copy of the synced file in every location is a complete known version
//!    (no torn file; databases also pass `integrity_check`), no version is lost (current or
//!    backup), the next sync without failpoint exits 0, and a round of syncs converges.
//! 2. SIGKILL at random moments (5–95% of a measured full sync) of a sync of a large plain
//!    file and a large database, same checks after each kill. Sizes: `METASYNC_CRASH_MB`
//!    (default 64; TESTING.md has a 200 MB run), `METASYNC_CRASH_DB_ENTITIES` (default
//!    100,000 ≈ 30 MB), kills per file `METASYNC_CRASH_KILLS` (default 4).

mod common;
use common::*;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const RULES: &str = "sorting-rules.yaml";
const DB: &str = "metastore.db";

fn ctx(dir: &Path) -> metasync::kind::ReadCtx {
    metasync::kind::ReadCtx {
        sqlite: Default::default(),
        scratch: dir.join("scratch"),
        keep_snapshots: None,
    }
}

/// The engine's version hash of a file, and whether it is healthy (a database passes its
/// integrity check; a plain file always does).
fn version(path: &Path, scratch: &Path) -> Option<(String, bool)> {
    use std::os::unix::fs::MetadataExt;
    type Key = (PathBuf, u64, i64, i64, u64);
    static CACHE: std::sync::Mutex<Option<std::collections::HashMap<Key, (String, bool)>>> =
        std::sync::Mutex::new(None);
    let m = std::fs::symlink_metadata(path).ok()?;
    // Backups never change: re-hashing hundreds of MB after every kill is not needed.
    let key = (
        path.to_path_buf(),
        m.len(),
        m.mtime_nsec() + m.mtime() * 1_000_000_000,
        m.ctime_nsec() + m.ctime() * 1_000_000_000,
        m.ino(),
    );
    if let Some(v) = CACHE
        .lock()
        .unwrap()
        .get_or_insert_with(Default::default)
        .get(&key)
    {
        return Some(v.clone());
    }
    let c = metasync::kind::read_content(path, &ctx(scratch)).ok()?;
    let v = (c.hash, c.facts.integrity.is_empty());
    CACHE
        .lock()
        .unwrap()
        .get_or_insert_with(Default::default)
        .insert(key, v.clone());
    Some(v)
}

/// Versions stay plain files here (the checks read them beside the file): `plain_last` as
/// `keep_last`, none moved into the history store.
const PLAIN: &str = "[backups]\nplain_last = 5";

/// Every version of `file` in `dir`: (name, hash, healthy), current and backups.
fn versions_in(dir: &Path, file: &str, scratch: &Path) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name == file || name.starts_with(&format!("{file}.backup-")) {
            if let Some((h, ok)) = version(&e.path(), scratch) {
                out.push((name, h, ok));
            }
        }
    }
    out
}

struct Outcome {
    crashed: bool,
    versions_checked: u64,
    lost: u64,
}

/// After a crash: no torn file, nothing lost, then recovery converges.
fn check_after_crash(
    w: &World,
    machines: &[&Machine],
    remotes: &[PathBuf],
    file: &str,
    known: &HashSet<String>,
    label: &str,
) -> (u64, u64) {
    let scratch = w.path("scratch");
    let mut dirs: Vec<PathBuf> = machines.iter().map(|m| m.home.clone()).collect();
    dirs.extend(remotes.iter().cloned());
    let mut present = HashSet::new();
    for d in &dirs {
        for (name, h, ok) in versions_in(d, file, &scratch) {
            if name == file {
                assert!(
                    known.contains(&h) && ok,
                    "{label}: torn or unknown {file} in {}: {h} (healthy {ok})",
                    d.display()
                );
            }
            present.insert(h);
        }
    }
    let lost: Vec<&String> = known.iter().filter(|h| !present.contains(*h)).collect();
    assert!(
        lost.is_empty(),
        "{label}: versions lost after the crash: {lost:?}"
    );
    // Recovery: the next syncs (no failpoint) complete and converge.
    for m in machines {
        let (code, v) = m.json(&["sync"]);
        assert_eq!(code, 0, "{label}: recovery sync: {v:#}");
    }
    for m in machines {
        let (code, v) = m.json(&["sync"]);
        assert_eq!(code, 0, "{label}: second recovery sync: {v:#}");
    }
    let mut current = HashSet::new();
    for d in &dirs {
        let (h, ok) = version(&d.join(file), &scratch).expect("file present after recovery");
        assert!(ok, "{label}: unhealthy after recovery in {}", d.display());
        current.insert(h);
    }
    assert_eq!(current.len(), 1, "{label}: no convergence after recovery");
    // And still nothing lost.
    let mut present = HashSet::new();
    for d in &dirs {
        for (_, h, _) in versions_in(d, file, &scratch) {
            present.insert(h);
        }
    }
    for h in known {
        assert!(present.contains(h), "{label}: {h} lost after recovery");
    }
    // No temp file left behind anywhere.
    for d in &dirs {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            assert!(
                !n.contains(".metasync-tmp-"),
                "{label}: temp file left: {n}"
            );
        }
    }
    for m in machines {
        assert_bases_are_their_versions(&m.home, label);
    }
    (known.len() as u64, 0)
}

/// Every row-merge base kept in `home` is named `<version>.db` and holds exactly that version
/// (its logical hash), and nothing else is in the bases' folders.
fn assert_bases_are_their_versions(home: &Path, label: &str) {
    let root = home.join(".metasync").join("base");
    for dir in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for e in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let hash = name.strip_suffix(".db");
            assert!(
                hash.is_some_and(|h| !h.starts_with('.')),
                "{label}: not a base: {name}"
            );
            let logical = metasync::sqlite::logical_hash(&e.path(), &Default::default()).unwrap();
            assert_eq!(
                Some(logical.as_str()),
                hash,
                "{label}: a base is not its version"
            );
        }
    }
}

fn write_version(path: &Path, file: &str, n: u32, scratch: &Path) -> String {
    if file == DB {
        if !path.exists() {
            metasync::sample::create_knowledge_graph(path, 40, 5).unwrap();
        } else {
            let c = rusqlite::Connection::open(path).unwrap();
            c.execute(
                "INSERT INTO entities(name, kind, data, updated_at) VALUES (?1, 'k', 'd', 't')",
                [format!("v{n}")],
            )
            .unwrap();
        }
    } else {
        std::fs::write(
            path,
            format!("rules: v{n}\n{}\n", "x".repeat(1000 * n as usize)),
        )
        .unwrap();
    }
    set_age(path, 100 - n as u64);
    version(path, scratch).unwrap().0
}

/// One failpoint scenario: `writer` is "remote" (a's sync writes its new version into the
/// cloud) or "local" (b's sync writes the cloud's new version into b's home).
fn failpoint_case(point: &str, nth: u32, file: &str, writer: &str) -> Outcome {
    let w = World::new();
    // Two remotes, so a sync writes twice and the n-th hit of a point is a later write.
    let a = w.machine("a", &[("icloud", "cloud"), ("drive", "drive")], PLAIN);
    let b = w.machine("b", &[("icloud", "cloud")], PLAIN);
    let cloud = w.path("cloud");
    let scratch = w.path("scratch");
    let mut known = HashSet::new();
    known.insert(write_version(&a.file(file), file, 1, &scratch));
    a.sync(&[], 0);
    b.sync(&[], 0);
    known.insert(write_version(&a.file(file), file, 2, &scratch));
    let (crasher, others): (&Machine, Vec<&Machine>) = if writer == "remote" {
        (&a, vec![&b])
    } else {
        a.sync(&[], 0);
        (&b, vec![&a])
    };
    let spec = format!("{point}:{nth}");
    let out = crasher
        .cmd(&["--json", "sync"])
        .env("METASYNC_FAILPOINT", &spec)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let crashed = out.status.code().is_none() && stderr.contains("failpoint");
    let label = format!("{file} {writer} {spec}");
    let mut all = vec![crasher];
    all.extend(others);
    let (checked, lost) =
        check_after_crash(&w, &all, &[cloud, w.path("drive")], file, &known, &label);
    Outcome {
        crashed,
        versions_checked: checked,
        lost,
    }
}

#[test]
fn failpoint_at_every_step_plain_and_sqlite() {
    let started = Instant::now();
    let (mut cases, mut crashes, mut checked, mut lost) = (0u64, 0u64, 0u64, 0u64);
    let mut not_hit = Vec::new();
    for file in [RULES, DB] {
        for writer in ["remote", "local"] {
            for point in metasync::failpoint::POINTS {
                // The second hit exists where one run writes twice: a's sync into two remotes.
                let nths: &[u32] = if writer == "remote" && *point != "before_archive_commit" {
                    &[1, 2]
                } else {
                    &[1]
                };
                for &nth in nths {
                    let o = failpoint_case(point, nth, file, writer);
                    cases += 1;
                    checked += o.versions_checked;
                    lost += o.lost;
                    if o.crashed {
                        crashes += 1;
                    } else {
                        not_hit.push(format!("{file}/{writer}/{point}:{nth}"));
                    }
                }
            }
        }
    }
    println!(
        "crash[failpoints]: cases {cases}, faults injected {crashes} (not reached: {}), versions checked {checked}, versions lost {lost}, {:.1}s",
        not_hit.join(" "),
        started.elapsed().as_secs_f64()
    );
    // Every point is reached at least once (first hit) for both kinds and both writers.
    for file in [RULES, DB] {
        for writer in ["remote", "local"] {
            for point in metasync::failpoint::POINTS {
                for nth in [1, 2] {
                    let name = format!("{file}/{writer}/{point}:{nth}");
                    assert!(!not_hit.contains(&name), "{name} never reached");
                }
            }
        }
    }
    assert_eq!(lost, 0);
}

/// A crash while a row-merge base is rewritten in place (the old base renamed aside, not yet
/// rewritten) loses no version, the runs after it recover, and every base left is exactly
/// its version (the checks of `failpoint_case`).
#[test]
fn a_crash_while_a_base_is_rewritten_loses_nothing_and_leaves_no_wrong_base() {
    let o = failpoint_case(metasync::failpoint::BASE_PATCH, 1, DB, "remote");
    assert!(o.crashed, "the base rewrite was never reached");
    assert_eq!(o.lost, 0);
}

/// Deterministic pseudo-random kill delays, between 5% and 95% of a full sync's time.
fn delays(seed: u64, n: usize, full_ms: u64) -> Vec<u64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            full_ms / 20 + x % (full_ms * 9 / 10).max(1)
        })
        .collect()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn write_big_plain(path: &Path, mb: u64, fill: u8) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let mut chunk = vec![fill; 1 << 20];
    for i in 0..mb {
        chunk[0] = (i % 251) as u8;
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
}

/// SIGKILL during `sync` of a big file, at pseudo-random moments within a measured sync time.
fn sigkill_case(file: &str, kills: usize) -> (u64, u64, u64) {
    let w = World::new();
    let a = w.machine("a", &[("icloud", "cloud")], PLAIN);
    let b = w.machine("b", &[("icloud", "cloud")], PLAIN);
    let cloud = w.path("cloud");
    let scratch = w.path("scratch");
    let mb = env_u64("METASYNC_CRASH_MB", 64);
    let entities = env_u64("METASYNC_CRASH_DB_ENTITIES", 100_000);
    let mut known = HashSet::new();
    let make = |n: u32| -> String {
        let p = a.file(file);
        if file == DB {
            if n == 1 {
                metasync::sample::create_knowledge_graph(&p, entities, 100).unwrap();
            } else {
                let c = rusqlite::Connection::open(&p).unwrap();
                c.execute(
                    "UPDATE entities SET data = ?1 WHERE id % 1000 = 0",
                    [format!("v{n}")],
                )
                .unwrap();
            }
        } else {
            write_big_plain(&p, mb, b'a' + n as u8);
        }
        set_age(&p, 1000 - n as u64);
        version(&p, &scratch).unwrap().0
    };
    known.insert(make(1));
    let t0 = Instant::now();
    a.sync(&[], 0);
    let full = t0.elapsed();
    b.sync(&[], 0);
    let mut killed = 0;
    let (mut checked, lost) = (0u64, 0u64);
    for (i, d) in delays(
        0x9e3779b9 ^ file.len() as u64,
        kills,
        full.as_millis() as u64,
    )
    .into_iter()
    .enumerate()
    {
        known.insert(make(i as u32 + 2));
        let mut child = a.cmd(&["sync"]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(d));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
        let label = format!("{file} SIGKILL after {d} ms (kill {i})");
        let (c, l) = check_after_crash(
            &w,
            &[&a, &b],
            std::slice::from_ref(&cloud),
            file,
            &known,
            &label,
        );
        checked += c;
        let _ = l;
    }
    (killed, checked, lost)
}

#[test]
fn sigkill_during_large_syncs() {
    let started = Instant::now();
    let kills = env_u64("METASYNC_CRASH_KILLS", 4) as usize;
    let mut total = (0u64, 0u64, 0u64);
    for file in ["big.bin", DB] {
        let r = sigkill_case_named(file, kills);
        total.0 += r.0;
        total.1 += r.1;
        total.2 += r.2;
    }
    println!(
        "crash[sigkill]: cases {}, faults injected {} (killed mid-run), versions checked {}, versions lost {}, {:.1}s",
        2 * kills,
        total.0,
        total.1,
        total.2,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(total.2, 0);
}

fn sigkill_case_named(file: &str, kills: usize) -> (u64, u64, u64) {
    if file == DB {
        return sigkill_case(DB, kills);
    }
    sigkill_case_plain(file, kills)
}

/// The plain-file variant syncs `big.bin` (configured with `files = ["big.bin"]`).
fn sigkill_case_plain(file: &str, kills: usize) -> (u64, u64, u64) {
    let w = World::new();
    let extra = format!("files = [\"{file}\"]\n{PLAIN}");
    let a = w.machine("a", &[("icloud", "cloud")], &extra);
    let b = w.machine("b", &[("icloud", "cloud")], &extra);
    let cloud = w.path("cloud");
    let scratch = w.path("scratch");
    let mb = env_u64("METASYNC_CRASH_MB", 64);
    let mut known = HashSet::new();
    let make = |n: u32| -> String {
        let p = a.file(file);
        write_big_plain(&p, mb, b'a' + n as u8);
        set_age(&p, 1000 - n as u64);
        version(&p, &scratch).unwrap().0
    };
    known.insert(make(1));
    let t0 = Instant::now();
    a.sync(&[], 0);
    let full = t0.elapsed();
    b.sync(&[], 0);
    let mut killed = 0;
    let mut checked = 0u64;
    for (i, d) in delays(0x2545F491, kills, full.as_millis() as u64)
        .into_iter()
        .enumerate()
    {
        known.insert(make(i as u32 + 2));
        let mut child = a.cmd(&["sync"]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(d));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
        let label = format!(
            "{file} ({mb} MB) SIGKILL after {d} ms of ~{} ms (kill {i})",
            full.as_millis()
        );
        let (c, _) = check_after_crash(
            &w,
            &[&a, &b],
            std::slice::from_ref(&cloud),
            file,
            &known,
            &label,
        );
        checked += c;
    }
    (killed, checked, 0)
}

/// The batched path (many small new files, `apply::batch`): a first sync of a tree into a new
/// remote crashes while the batch's pool of threads writes its temps (`after_temp_write:40`:
/// 90 files, more than one thread's run), where the temps are durable but not yet renamed
/// (`temps_durable`),
/// in the middle of its renames (`after_rename:N`), and after them before the archive commit
/// (`before_archive_commit`). After each crash every file of the remote is absent or complete
/// (the source's bytes, never torn), and the next syncs write the rest, leave no temp file and
/// converge.
#[test]
fn crash_in_a_batch_of_new_files() {
    let points = [
        "after_temp_write:40",
        "temps_durable",
        "after_rename:7",
        "before_archive_commit",
    ];
    for point in points {
        let w = World::new();
        let a = w.machine("a", &[("icloud", "cloud")], "files = [\"**/*.txt\"]");
        let mut want = std::collections::BTreeMap::new();
        for d in 0..3 {
            for f in 0..30 {
                let rel = format!("d{d}/f{f}.txt");
                let text = format!("file {rel}\n{}\n", "words ".repeat(20 * (f + 1)));
                write_aged(&a.file(&rel), &text, 100);
                want.insert(rel, text);
            }
        }
        let out = a
            .cmd(&["--json", "sync"])
            .env("METASYNC_FAILPOINT", point)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code().is_none() && stderr.contains("failpoint"),
            "{point}: the batched path never reached it (exit {:?}): {stderr}",
            out.status.code()
        );
        let cloud = w.path("cloud");
        let mut present = 0;
        for (rel, text) in &want {
            if let Ok(got) = std::fs::read_to_string(cloud.join(rel)) {
                assert_eq!(&got, text, "{point}: torn {rel} in the remote");
                present += 1;
            }
        }
        let placed = match point {
            "after_temp_write:40" | "temps_durable" => 0,
            "after_rename:7" => 7,
            _ => want.len(),
        };
        assert_eq!(present, placed, "{point}: files in place after the crash");
        a.sync(&[], 0);
        let v = a.sync(&[], 0);
        assert!(
            v["actions"].as_array().is_some_and(|x| x.is_empty()),
            "{point}: no convergence: {v:#}"
        );
        for (rel, text) in &want {
            assert_eq!(
                &read(&cloud.join(rel)),
                text,
                "{point}: {rel} after recovery"
            );
        }
        let names = tree(&cloud);
        assert!(
            names.iter().all(|n| !n.contains(".metasync-tmp-")),
            "{point}: temp file left: {names:?}"
        );
        assert_eq!(
            names.iter().filter(|n| n.ends_with(".txt")).count(),
            want.len(),
            "{point}: {names:?}"
        );
    }
}
