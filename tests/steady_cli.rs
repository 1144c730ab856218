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
    log_lines(m, "(unchanged since the last run)")
}

fn log_lines(m: &Machine, saying: &str) -> usize {
    let Ok(dir) = std::fs::read_dir(m.home.join("logs")) else {
        return 0;
    };
    dir.flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .map(|log| log.matches(saying).count())
        .sum()
}

/// How many runs of this home planned only the files changed since a steady run.
fn partial_runs(m: &Machine) -> usize {
    log_lines(m, "since the last run; planning those")
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
fn backups_beyond_keep_last_move_into_the_store_and_runs_still_replay() {
    let w = World::new();
    let m = steady_pair(&w, "[backups]\nkeep_last = 1\n");
    let remote = w.path("remote");
    // Each edit is propagated over the remote's copy, which is backed up first.
    let edit = |round: u64| {
        write_aged(
            &m.file("a.txt"),
            &format!("edit {round}\n"),
            300 - round * 10,
        );
        let r = m.sync(&[], 0);
        assert_eq!(outcome(&r, "a.txt"), "propagated", "{r:#}");
    };
    let settle = || {
        std::thread::sleep(Duration::from_millis(2_300));
        m.sync(&[], 0);
        m.sync(&[], 0);
    };
    // Two backups: the last one stays plain, the older moves into the remote's store right
    // after the run that made it. Then retention has nothing to do and runs replay.
    edit(0);
    edit(1);
    assert_eq!(backups_in(&remote, "a.txt").len(), 1);
    settle();
    let replayed = replays(&m);
    assert!(replayed >= 1, "retention has nothing to do: replayed");
    // A third: again one plain, and one stored (the newest of its hour; the schedule lets
    // the older one of the same hour go); the runs after it replay again.
    edit(2);
    assert_eq!(backups_in(&remote, "a.txt").len(), 1);
    let (_, list) = m.json(&["backups", "a.txt"]);
    let stored: Vec<bool> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["stored"] == true)
        .collect();
    assert_eq!(stored, vec![false, true], "{list:#}");
    settle();
    assert!(replays(&m) > replayed, "the runs after it replay");
}

/// What a report says, without what differs between two worlds: times, the world's own
/// folder, and backup names (they carry the time).
fn gist(report: &serde_json::Value, world: &Path) -> serde_json::Value {
    let text = report
        .to_string()
        .replace(&world.display().to_string(), "<world>");
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in ["started", "finished"] {
        v.as_object_mut().unwrap().remove(key);
    }
    for a in v["actions"].as_array_mut().unwrap() {
        if a["action"] == "backup" {
            a["detail"] = "<backup>".into();
        }
    }
    v
}

type Change = fn(&Machine, &Path);

#[test]
fn a_run_planning_only_the_changed_files_reports_what_a_full_run_does() {
    let changes: [(&str, Change); 6] = [
        ("one file edited", |m, _| {
            write_aged(&m.file("d/c.txt"), "edited\n", 60)
        }),
        ("one file edited in the remote", |_, r| {
            write_aged(&r.join("a.txt"), "remote edit\n", 60)
        }),
        ("both sides edited: a conflict, newest wins", |m, r| {
            write_aged(&m.file("d/b.txt"), "local side\n", 120);
            write_aged(&r.join("d/b.txt"), "remote side\n", 60);
        }),
        ("a new file and a deleted one", |m, r| {
            write_aged(&r.join("d/e/new.txt"), "new\n", 60);
            std::fs::remove_file(m.file("a.txt")).unwrap();
        }),
        ("touched, same content", |m, _| {
            let f = m.file("d/e/f.txt");
            let content = read(&f);
            write_aged(&f, &content, 30);
        }),
        ("a stray temp file of another machine", |_, r| {
            write_aged(
                &r.join("d/.b.txt.metasync-tmp-0123456789abcdef-1a2b3c4d"),
                "x",
                60,
            );
        }),
    ];
    // Twin worlds per change, the same steps; in the second the steady state is dropped
    // before the change. All settled at once (one wait for the racy window).
    let worlds: Vec<[World; 2]> = changes
        .iter()
        .map(|_| [World::new(), World::new()])
        .collect();
    let all: Vec<[Machine; 2]> = worlds
        .iter()
        .map(|[a, b]| [steady_pair(a, ""), steady_pair(b, "")])
        .collect();
    settle(&all.iter().flatten().collect::<Vec<_>>());
    for (((name, change), worlds), pairs) in changes.into_iter().zip(&worlds).zip(&all) {
        let db = pairs[1].home.join(".metasync/state.db");
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute("DELETE FROM steady", [])
            .unwrap();
        let reports: Vec<serde_json::Value> = pairs
            .iter()
            .zip(worlds)
            .map(|(m, w)| {
                change(m, &w.path("remote"));
                let (code, r) = m.json(&["sync"]);
                assert!(code == 0 || code == 3, "{name}: exit {code}: {r:#}");
                gist(&r, w.dir.path())
            })
            .collect();
        assert_eq!(reports[0], reports[1], "{name}");
        assert_eq!(replays(&pairs[0]), 1, "{name}: not a replay");
        assert_eq!(
            partial_runs(&pairs[0]),
            1,
            "{name}: only the changed files planned"
        );
        assert_eq!(partial_runs(&pairs[1]), 0, "{name}: planned in full");
        // And the worlds end the same.
        let trees: Vec<Vec<(String, String)>> = worlds
            .iter()
            .map(|w| {
                let mut all = Vec::new();
                for side in ["home", "remote"] {
                    for f in tree(&w.path(side)) {
                        if f.contains(".backup-")
                            || f.starts_with(".metasync")
                            || f.starts_with("logs/")
                            || f == "metasync.toml"
                        {
                            continue;
                        }
                        all.push((format!("{side}/{f}"), read(&w.path(side).join(&f))));
                    }
                }
                all
            })
            .collect();
        assert_eq!(trees[0], trees[1], "{name}");
    }
}

/// `steady_pair` with a SQLite database beside the plain files: `metastore.db` in WAL mode,
/// its rows written through `conn`, which stays open (so its `-wal` stays, with the rows
/// since the last checkpoint) and never checkpoints by itself.
fn steady_pair_with_db(w: &World) -> (Machine, rusqlite::Connection) {
    let m = steady_pair(w, "");
    let db = m.file("metastore.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    conn.execute_batch(
        "CREATE TABLE entities(id INTEGER PRIMARY KEY, name TEXT);
         INSERT INTO entities(name) VALUES ('one'), ('two'), ('three');
         PRAGMA wal_checkpoint(TRUNCATE);
         INSERT INTO entities(name) VALUES ('four');",
    )
    .unwrap();
    m.sync(&[], 0);
    (m, conn)
}

/// The names in the remote's copy of the database.
fn remote_names(m: &Machine) -> Vec<String> {
    let db = m.home.parent().unwrap().join("remote/metastore.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    let mut q = c.prepare("SELECT name FROM entities ORDER BY id").unwrap();
    let names = q.query_map([], |r| r.get(0)).unwrap();
    names.map(Result::unwrap).collect()
}

#[test]
fn a_no_op_with_a_database_is_replayed_until_its_stat_set_or_base_changes() {
    let w = World::new();
    let (m, _conn) = steady_pair_with_db(&w);
    let full = settle(&[&m]).remove(0);
    assert_eq!(outcome(&full, "metastore.db"), "in_sync", "{full:#}");
    assert_eq!(remote_names(&m), ["one", "two", "three", "four"]);
    // A `-journal` appearing beside it (an empty one: no rows) is a change of its stat set:
    // the next run is a full one, the one after it replayed again.
    std::fs::write(m.file("metastore.db-journal"), "").unwrap();
    m.sync(&[], 0);
    assert_eq!(replays(&m), 1, "a new -journal leaves the steady path");
    std::thread::sleep(Duration::from_millis(2_300));
    m.sync(&[], 0);
    m.sync(&[], 0);
    assert_eq!(replays(&m), 2, "steady again, with the -journal");
    std::fs::remove_file(m.file("metastore.db-journal")).unwrap();
    m.sync(&[], 0);
    assert_eq!(replays(&m), 2, "a -journal gone leaves the steady path too");
    m.sync(&[], 0);
    m.sync(&[], 0);
    assert_eq!(replays(&m), 3, "a full run, then a replay again");
    // The row-merge base of the agreed version is part of what a replay stands for: when it
    // is gone, the database is planned again and its base kept again.
    let bases = m.home.join(".metasync/base");
    std::fs::remove_dir_all(&bases).unwrap();
    let r = m.sync(&[], 0);
    assert_eq!(replays(&m), 3, "no replay without the base");
    assert_eq!(outcome(&r, "metastore.db"), "in_sync", "{r:#}");
    assert_eq!(r["actions"], serde_json::json!([]), "{r:#}");
    assert_eq!(tree(&bases).len(), 1, "the base is kept again");
}

#[test]
fn a_database_edited_through_its_wal_leaves_the_steady_path_and_is_synced() {
    let w = World::new();
    let (m, conn) = steady_pair_with_db(&w);
    settle(&[&m]);
    let db = m.file("metastore.db");
    let before = std::fs::metadata(&db).unwrap();
    let wal = m.file("metastore.db-wal");
    let wal_mtime = std::fs::metadata(&wal).unwrap().modified().unwrap();
    conn.execute("UPDATE entities SET name = 'TWO' WHERE id = 2", [])
        .unwrap();
    // Its mtime put back (a coarse clock, a restored time): only the -wal's size tells.
    std::fs::File::options()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_modified(wal_mtime)
        .unwrap();
    // The writer touched only the -wal: the database file is as it was.
    let after = std::fs::metadata(&db).unwrap();
    assert_eq!(before.modified().unwrap(), after.modified().unwrap());
    assert_eq!(before.len(), after.len());
    let r = m.sync(&[], 0);
    assert_eq!(replays(&m), 1, "not replayed over");
    assert_eq!(outcome(&r, "metastore.db"), "propagated", "{r:#}");
    assert_eq!(remote_names(&m), ["one", "TWO", "three", "four"]);
}

#[test]
fn a_checkpoint_changes_the_database_file_but_not_its_version() {
    let w = World::new();
    let (m, conn) = steady_pair_with_db(&w);
    settle(&[&m]);
    let db = m.file("metastore.db");
    let before = std::fs::read(&db).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    assert_ne!(
        std::fs::read(&db).unwrap(),
        before,
        "the rows moved into the file"
    );
    // Not replayed over: the database is read again, found to be the same version, and
    // nothing is written anywhere.
    let r = m.sync(&[], 0);
    assert_eq!(replays(&m), 1);
    assert_eq!(outcome(&r, "metastore.db"), "in_sync", "{r:#}");
    assert_eq!(r["actions"], serde_json::json!([]), "{r:#}");
    assert_eq!(r["hashed"], 1, "{r:#}");
    assert!(backups_in(&w.path("remote"), "metastore.db").is_empty());
    // Steady again once the file is out of the racy window.
    std::thread::sleep(Duration::from_millis(2_300));
    m.sync(&[], 0);
    let again = m.sync(&[], 0);
    assert_eq!(replays(&m), 2, "{again:#}");
    assert_eq!(remote_names(&m), ["one", "two", "three", "four"]);
}

/// With only the counts asked for (the CLI's `--quiet`), a replayed run reports no per-file
/// outcomes but counts them; a run that asks for them gets them, replayed or not.
#[test]
fn a_replay_asked_only_for_counts_builds_no_outcomes() {
    use metasync::{Engine, RunOptions};
    let w = World::new();
    let m = steady_pair(&w, "");
    settle(&[&m]);
    let engine = Engine::open(&m.home, None).unwrap();
    let counts = RunOptions {
        summary_only: true,
        ..RunOptions::default()
    };
    // (The library logs nothing: the report tells the replay, whose outcomes are left out.)
    let quiet = engine.run(&counts, &mut |_| {}).unwrap();
    assert!(quiet.files.is_empty(), "{:?}", quiet.files);
    assert_eq!((quiet.exit_code, quiet.warnings.len()), (0, 0));
    let full = engine.run(&RunOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(full.files.len(), FILES.len());
    assert!(full
        .files
        .iter()
        .all(|f| f.outcome == metasync::model::Outcome::InSync));
    // Still replayed after both; --json with --quiet still prints every file's outcome.
    let json = m.sync(&["-q"], 0);
    assert_eq!(replays(&m), 2);
    assert_eq!(
        json["files"].as_array().unwrap().len(),
        FILES.len(),
        "{json:#}"
    );
}
