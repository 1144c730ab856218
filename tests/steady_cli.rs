//! The steady state (src/steady.rs): a run after one that changed nothing is replayed from a
//! stat of every file, and any change since (to a file, a folder, the configuration, a location
//! or the archive) makes the full run decide instead, with the full run's result.

mod common;
use common::*;
use std::path::Path;
use std::time::Duration;

const FILES: [&str; 4] = ["a.txt", "d/b.txt", "d/c.txt", "d/e/f.txt"];

/// How many runs of this home were replayed from the steady state (its log says so).
fn replays(m: &Machine) -> usize {
    let Ok(dir) = std::fs::read_dir(m.home.join("logs")) else {
        return 0;
    };
    dir.flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .map(|log| log.matches("(unchanged since the last run)").count())
        .sum()
}

/// A home and one remote holding the same four files, synced, with the steady state stored
/// by a second run once every file is older than the racy window.
fn steady_pair(w: &World, extra: &str) -> Machine {
    let m = w.machine(
        "home",
        &[("r", "remote")],
        &format!("files = [\"**/*\"]\n{extra}"),
    );
    for (i, f) in FILES.iter().enumerate() {
        write_aged(&m.file(f), &format!("content {i}\n"), 600);
    }
    m.sync(&[], 0);
    m
}

/// Runs the second sync of every pair (after the racy window), which stores the steady state,
/// and a third, which must be replayed.
fn settle(pairs: &[&Machine]) -> Vec<serde_json::Value> {
    std::thread::sleep(Duration::from_millis(2_300));
    pairs
        .iter()
        .map(|m| {
            let full = m.sync(&[], 0);
            assert_eq!(replays(m), 0, "the second run is a full one");
            let replayed = m.sync(&[], 0);
            assert_eq!(replays(m), 1, "the third run is replayed");
            assert_eq!(full["files"], replayed["files"], "same outcome per file");
            assert_eq!(full["locations"], replayed["locations"]);
            for key in ["actions", "conflicts", "warnings", "errors"] {
                assert_eq!(replayed[key], serde_json::json!([]), "{key}");
            }
            full
        })
        .collect()
}

fn outcome<'a>(report: &'a serde_json::Value, file: &str) -> &'a str {
    report["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == file)
        .and_then(|f| f["outcome"].as_str())
        .unwrap_or("none")
}

fn touch_keeping_mtime(path: &Path, content: &str) {
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    std::fs::write(path, content).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

#[test]
fn a_run_after_a_steady_one_is_replayed_with_the_same_report() {
    let w = World::new();
    let m = steady_pair(&w, "");
    let full = settle(&[&m]).remove(0);
    assert_eq!(full["files"].as_array().unwrap().len(), FILES.len());
    for f in FILES {
        assert_eq!(outcome(&full, f), "in_sync");
    }
    // Replays keep coming while nothing changes, push and pull included; history records each.
    m.sync(&[], 0);
    let (code, _) = m.json(&["push"]);
    assert_eq!(code, 0);
    let (code, _) = m.json(&["pull"]);
    assert_eq!(code, 0);
    assert_eq!(replays(&m), 4);
    // A dry run is always planned in full.
    m.sync(&["--dry-run"], 0);
    assert_eq!(replays(&m), 4);
}

#[test]
fn every_change_since_the_steady_run_is_seen() {
    let names = [
        "same-size edit, old mtime",
        "new file in the remote",
        "file deleted locally",
        "folder replaced by a link",
        "pattern changed",
        "remote missing",
        "archive written by another command",
    ];
    let worlds: Vec<World> = names.iter().map(|_| World::new()).collect();
    let pairs: Vec<Machine> = worlds.iter().map(|w| steady_pair(w, "")).collect();
    let refs: Vec<&Machine> = pairs.iter().collect();
    settle(&refs);
    let remote = |m: &Machine| m.home.parent().unwrap().join("remote");

    // Same size, mtime put back: only the ctime tells.
    let m = &pairs[0];
    touch_keeping_mtime(&m.file("d/b.txt"), "CONTENT 1\n");
    let r = m.sync(&[], 0);
    assert_eq!(outcome(&r, "d/b.txt"), "propagated", "{r:#}");
    assert_eq!(read(&remote(m).join("d/b.txt")), "CONTENT 1\n");

    let m = &pairs[1];
    write_aged(&remote(m).join("d/new.txt"), "new\n", 600);
    let r = m.sync(&[], 0);
    assert_eq!(outcome(&r, "d/new.txt"), "propagated", "{r:#}");
    assert_eq!(read(&m.file("d/new.txt")), "new\n");

    // Deletes are not propagated by default: the remote's copy comes back.
    let m = &pairs[2];
    std::fs::remove_file(m.file("d/e/f.txt")).unwrap();
    let r = m.sync(&[], 0);
    assert_eq!(outcome(&r, "d/e/f.txt"), "propagated", "{r:#}");
    assert_eq!(read(&m.file("d/e/f.txt")), "content 3\n");

    // The same files, reached through a symbolic link: not followed.
    let m = &pairs[3];
    let d = remote(m).join("d");
    std::fs::rename(&d, remote(m).join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(remote(m).join("elsewhere"), &d).unwrap();
    let r = m.sync(&[], 0);
    assert!(r["warnings"].to_string().contains("symbolic link"), "{r:#}");

    // A narrower pattern: d/ is no longer synced.
    let m = &pairs[4];
    let toml = std::fs::read_to_string(m.home.join("metasync.toml")).unwrap();
    std::fs::write(
        m.home.join("metasync.toml"),
        toml.replace("files = [\"**/*\"]", "files = [\"*.txt\"]"),
    )
    .unwrap();
    let r = m.sync(&[], 0);
    assert_eq!(r["files"].as_array().unwrap().len(), 1, "{r:#}");

    let m = &pairs[5];
    std::fs::rename(remote(m), m.home.parent().unwrap().join("gone")).unwrap();
    let r = m.sync(&[], 0);
    assert_eq!(r["locations"][1]["available"], false, "{r:#}");

    // Another command's archive write (a relink forgets what the archive knew of the
    // remote): the next run reads the remote again in full.
    let m = &pairs[6];
    let (code, v) = m.json(&["relink", "r"]);
    assert_eq!(code, 0, "{v:#}");
    m.sync(&[], 0);

    for (m, name) in pairs.iter().zip(names) {
        assert_eq!(
            replays(m),
            1,
            "{name}: the run after the change is a full one"
        );
    }
}

#[test]
fn backups_retention_may_thin_out_are_not_replayed_over() {
    let w = World::new();
    let m = steady_pair(&w, "[backups]\nkeep_last = 1\n");
    let remote = w.path("remote");
    // Two edits, each propagated over the remote's copy, which is backed up first.
    for round in 0..2 {
        write_aged(
            &m.file("a.txt"),
            &format!("edit {round}\n"),
            300 - round * 10,
        );
        let r = m.sync(&[], 0);
        assert_eq!(outcome(&r, "a.txt"), "propagated", "{r:#}");
    }
    assert_eq!(backups_in(&remote, "a.txt").len(), 2);
    std::thread::sleep(Duration::from_millis(2_300));
    m.sync(&[], 0);
    m.sync(&[], 0);
    // More backups than keep_last: retention looks at them after every run, so no replay.
    assert_eq!(replays(&m), 0);
}
