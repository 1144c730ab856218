//! Black-box tests of `metasync` on real temp folders: the two-machine story, conflicts under
//! every strategy, missing drives, placeholders, bad configs and concurrent runs.

mod common;
use common::*;

const RULES: &str = "sorting-rules.yaml";

fn cloud(w: &World, name: &str, extra: &str) -> Machine {
    w.machine(name, &[("icloud", "cloud")], extra)
}

#[test]
fn two_machine_round_trip() {
    let w = World::new();
    let a = cloud(&w, "a", "");
    let b = cloud(&w, "b", "");
    write_aged(&a.file(RULES), "rules: v1\n", 100);
    let r = a.sync(&[], 0);
    assert_eq!(r["files"][0]["outcome"], "propagated", "{r:#}");
    assert_eq!(read(&w.path("cloud").join(RULES)), "rules: v1\n");
    assert!(
        w.path("cloud/.metasync-location").exists(),
        "marker written on first use"
    );

    b.sync(&[], 0);
    assert_eq!(read(&b.file(RULES)), "rules: v1\n");
    // The copy keeps the edit's modification time.
    let ma = std::fs::metadata(a.file(RULES))
        .unwrap()
        .modified()
        .unwrap();
    let mb = std::fs::metadata(b.file(RULES))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(ma, mb);

    write_aged(&b.file(RULES), "rules: v2 from b\n", 50);
    b.sync(&[], 0);
    a.sync(&[], 0);
    assert_eq!(read(&a.file(RULES)), "rules: v2 from b\n");
    // A's previous version is kept as a backup beside it.
    let backups = backups_in(&a.home, RULES);
    assert_eq!(backups.len(), 1);
    assert_eq!(read(&backups[0]), "rules: v1\n");

    // The next run is a no-op: nothing written. Files written less than the racy window
    // (2 s) before a scan are hashed again once; after that a no-op reads no file contents.
    let before = tree(&w.path("cloud"));
    let r = a.sync(&[], 0);
    assert_eq!(r["actions"].as_array().unwrap().len(), 0, "{r:#}");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    a.sync(&[], 0);
    let r = a.sync(&[], 0);
    assert_eq!(
        r["hashed"], 0,
        "a no-op re-sync reads no file contents: {r:#}"
    );
    assert_eq!(tree(&w.path("cloud")), before);
}

/// Both machines edit while apart; returns (a, b, world) after A synced its edit.
fn diverge(extra: &str) -> (World, Machine, Machine) {
    let w = World::new();
    let a = cloud(&w, "a", extra);
    let b = cloud(&w, "b", extra);
    write_aged(&a.file(RULES), "base\n", 1000);
    a.sync(&[], 0);
    b.sync(&[], 0);
    write_aged(&a.file(RULES), "edit from a\n", 200);
    write_aged(&b.file(RULES), "edit from b (newer)\n", 100);
    a.sync(&[], 0);
    assert_eq!(read(&w.path("cloud").join(RULES)), "edit from a\n");
    (w, a, b)
}

#[test]
fn conflict_newest_wins_and_loser_is_backed_up() {
    let (w, a, b) = diverge("");
    let r = b.sync(&[], 0);
    assert!(
        r["files"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("conflict"),
        "{r:#}"
    );
    assert_eq!(read(&w.path("cloud").join(RULES)), "edit from b (newer)\n");
    let cloud_backups: Vec<String> = backups_in(&w.path("cloud"), RULES)
        .iter()
        .map(|p| read(p))
        .collect();
    assert!(
        cloud_backups.contains(&"edit from a\n".to_string()),
        "{cloud_backups:?}"
    );
    a.sync(&[], 0);
    assert_eq!(read(&a.file(RULES)), "edit from b (newer)\n");
    assert!(backups_in(&a.home, RULES)
        .iter()
        .any(|p| read(p) == "edit from a\n"));
}

#[test]
fn conflict_local_wins() {
    let (w, _a, b) = diverge("");
    b.sync(&["--strategy", "local"], 0);
    assert_eq!(read(&b.file(RULES)), "edit from b (newer)\n");
    assert_eq!(read(&w.path("cloud").join(RULES)), "edit from b (newer)\n");
    assert!(backups_in(&w.path("cloud"), RULES)
        .iter()
        .any(|p| read(p) == "edit from a\n"));
}

#[test]
fn conflict_remote_wins() {
    let (w, _a, b) = diverge("");
    b.sync(&["--strategy", "remote"], 0);
    assert_eq!(read(&b.file(RULES)), "edit from a\n");
    assert_eq!(read(&w.path("cloud").join(RULES)), "edit from a\n");
    assert!(backups_in(&b.home, RULES)
        .iter()
        .any(|p| read(p) == "edit from b (newer)\n"));
}

#[test]
fn conflict_manual_waits_for_resolve() {
    let (w, _a, b) = diverge("strategy = \"manual\"");
    let r = b.sync(&[], 3);
    assert_eq!(r["conflicts"][0]["file"], RULES);
    assert_eq!(
        r["conflicts"][0]["candidates"].as_array().unwrap().len(),
        2,
        "{r:#}"
    );
    // Nothing overwritten.
    assert_eq!(read(&b.file(RULES)), "edit from b (newer)\n");
    assert_eq!(read(&w.path("cloud").join(RULES)), "edit from a\n");
    assert!(backups_in(&b.home, RULES).is_empty());
    // It survives and is reported until settled.
    let (code, list) = b.json(&["conflicts"]);
    assert_eq!(code, 3);
    assert_eq!(list[0]["file"], RULES);
    b.sync(&[], 3);
    let (code, r) = b.json(&["resolve", RULES, "--keep", "icloud"]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(read(&b.file(RULES)), "edit from a\n");
    // Both versions still exist: the loser is a backup.
    assert!(backups_in(&b.home, RULES)
        .iter()
        .any(|p| read(p) == "edit from b (newer)\n"));
    let (code, list) = b.json(&["conflicts"]);
    assert_eq!((code, list.as_array().unwrap().len()), (0, 0));
    b.sync(&[], 0);
}

#[test]
fn resolve_refuses_unknown_location_and_missing_version() {
    let (_w, _a, b) = diverge("strategy = \"manual\"");
    b.sync(&[], 3);
    let out = b.run(&["resolve", RULES, "--keep", "nowhere"]);
    assert_eq!(out.status.code(), Some(2));
    let out = b.run(&["resolve", "not-synced.txt", "--keep", "icloud"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn drive_not_mounted_is_never_written() {
    let w = World::new();
    let mp = w.path("Volumes/4444-iivii");
    std::fs::create_dir_all(&mp).unwrap(); // a bare folder where the drive would mount
    let home = w.path("a");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join("metasync.toml"),
        format!(
            "[[locations]]\nname = \"external\"\npath = \"{}/.metasystem\"\nmount_point = \"{}\"\n",
            mp.display(),
            mp.display()
        ),
    )
    .unwrap();
    let a = Machine { home };
    write_aged(&a.file(RULES), "x\n", 10);
    let r = a.sync(&[], 0);
    assert_eq!(r["locations"][1]["available"], false);
    assert!(
        r["locations"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("not mounted"),
        "{r:#}"
    );
    assert!(
        tree(&mp).is_empty(),
        "nothing created under the mount point"
    );
    assert!(std::fs::read_dir(&mp).unwrap().next().is_none());
}

#[test]
fn returning_drive_catches_up_without_false_conflict() {
    let w = World::new();
    let a = w.machine(
        "a",
        &[("icloud", "cloud"), ("external", "drive/.metasystem")],
        "strategy = \"manual\"",
    );
    std::fs::create_dir_all(w.path("drive")).unwrap();
    write_aged(&a.file(RULES), "v1\n", 500);
    a.sync(&[], 0);
    assert_eq!(read(&w.path("drive/.metasystem").join(RULES)), "v1\n");
    // Unplug: the folder disappears.
    std::fs::rename(w.path("drive"), w.path("drive-away")).unwrap();
    write_aged(&a.file(RULES), "v2\n", 300);
    let r = a.sync(&[], 0);
    assert_eq!(r["locations"][2]["available"], false, "{r:#}");
    assert!(
        !w.path("drive").exists(),
        "a missing drive is not re-created"
    );
    write_aged(&a.file(RULES), "v3\n", 100);
    a.sync(&[], 0);
    // Plug back in: the old v1 there is not a conflict, it catches up.
    std::fs::rename(w.path("drive-away"), w.path("drive")).unwrap();
    let r = a.sync(&[], 0);
    assert!(r["conflicts"].as_array().unwrap().is_empty(), "{r:#}");
    assert_eq!(read(&w.path("drive/.metasystem").join(RULES)), "v3\n");
    assert!(backups_in(&w.path("drive/.metasystem"), RULES)
        .iter()
        .any(|p| read(p) == "v1\n"));
}

#[test]
fn another_drive_under_the_same_name_is_not_mistaken() {
    let w = World::new();
    let a = w.machine("a", &[("external", "drive")], "");
    write_aged(&a.file(RULES), "mine\n", 100);
    a.sync(&[], 0);
    // A different drive appears at the same path, with its own content and no marker.
    std::fs::rename(w.path("drive"), w.path("old-drive")).unwrap();
    write_aged(&w.path("drive").join(RULES), "someone else's\n", 10);
    let r = a.sync(&[], 0);
    assert_eq!(r["locations"][1]["available"], false);
    assert!(
        r["locations"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("marker"),
        "{r:#}"
    );
    assert_eq!(read(&w.path("drive").join(RULES)), "someone else's\n");
    // Relinking accepts it; its content then meets the first-sync rule (a conflict, newest wins here).
    let (code, _) = a.json(&["relink", "external"]);
    assert_eq!(code, 0);
    let r = a.sync(&["--strategy", "manual"], 3);
    assert_eq!(r["conflicts"][0]["file"], RULES);
}

#[test]
fn placeholder_is_not_a_deletion() {
    let w = World::new();
    let a = cloud(&w, "a", "propagate_deletes = true");
    write_aged(&a.file(RULES), "keep me\n", 100);
    a.sync(&[], 0);
    // iCloud evicts the file: it is replaced by a placeholder.
    std::fs::remove_file(w.path("cloud").join(RULES)).unwrap();
    std::fs::write(w.path("cloud").join(format!(".{RULES}.icloud")), "bplist").unwrap();
    let r = a.sync(&[], 0);
    assert_eq!(read(&a.file(RULES)), "keep me\n");
    assert!(
        r["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("evicted")),
        "{r:#}"
    );
    assert!(
        !w.path("cloud").join(RULES).exists(),
        "an evicted file is not written over"
    );
    let (_, st) = a.json(&["status"]);
    let cloud_files = &st["locations"][1]["files"];
    assert_eq!(cloud_files[0]["state"], "evicted", "{st:#}");
}

#[test]
fn missing_file_is_restored_unless_deletes_propagate() {
    let w = World::new();
    let a = cloud(&w, "a", "");
    write_aged(&a.file(RULES), "x\n", 100);
    a.sync(&[], 0);
    std::fs::remove_file(a.file(RULES)).unwrap();
    a.sync(&[], 0);
    assert_eq!(read(&a.file(RULES)), "x\n");

    let w = World::new();
    let a = cloud(&w, "a", "propagate_deletes = true");
    write_aged(&a.file(RULES), "x\n", 100);
    a.sync(&[], 0);
    std::fs::remove_file(a.file(RULES)).unwrap();
    a.sync(&[], 0);
    assert!(!w.path("cloud").join(RULES).exists());
    // The deleted version is a backup, not gone.
    assert_eq!(
        backups_in(&w.path("cloud"), RULES)
            .iter()
            .map(|p| read(p))
            .collect::<Vec<_>>(),
        vec!["x\n"]
    );
}

#[test]
fn same_size_edit_with_the_old_mtime_is_still_seen() {
    let w = World::new();
    let a = cloud(&w, "a", "");
    write_aged(&a.file(RULES), "aaaa\n", 100);
    a.sync(&[], 0);
    a.sync(&[], 0);
    let mtime = std::fs::metadata(a.file(RULES))
        .unwrap()
        .modified()
        .unwrap();
    std::fs::write(a.file(RULES), "bbbb\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(a.file(RULES))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    a.sync(&[], 0);
    assert_eq!(read(&w.path("cloud").join(RULES)), "bbbb\n");
}

#[test]
fn push_and_pull() {
    let (w, a, b) = diverge("");
    // pull on B: B's newer edit wins locally, the cloud is not written.
    b.json(&["pull"]);
    assert_eq!(read(&w.path("cloud").join(RULES)), "edit from a\n");
    // push from A: A's version wins everywhere.
    let (code, _) = a.json(&["push"]);
    assert_eq!(code, 0);
    assert_eq!(read(&w.path("cloud").join(RULES)), "edit from a\n");
    let (code, _) = b.json(&["push"]);
    assert_eq!(code, 0);
    assert_eq!(read(&w.path("cloud").join(RULES)), "edit from b (newer)\n");
}

#[test]
fn dry_run_writes_nothing() {
    let w = World::new();
    let a = cloud(&w, "a", "");
    write_aged(&a.file(RULES), "x\n", 100);
    let r = a.sync(&["--dry-run"], 0);
    assert_eq!(r["dry_run"], true);
    assert!(!r["actions"].as_array().unwrap().is_empty());
    assert!(!w.path("cloud").exists());
}

#[test]
fn bad_config_exits_2_naming_file_line_and_key() {
    let w = World::new();
    let a = cloud(&w, "a", "");
    std::fs::write(
        a.home.join("metasync.toml"),
        "interval_secs = 300\nstrategyy = \"newest\"\n",
    )
    .unwrap();
    let out = a.run(&["sync"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("metasync.toml:2:"), "{err}");
    assert!(err.contains("strategyy"), "{err}");
    let out = a.run(&["--config", "/nonexistent/metasync.toml", "status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/metasync.toml"));
    // Nothing was touched.
    assert!(!a.home.join(".metasync").exists());
}

#[test]
fn init_writes_defaults_once() {
    let w = World::new();
    let home = w.path("fresh");
    let m = Machine { home: home.clone() };
    let out = m.run(&["init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(read(&home.join("metasync.toml")).contains("interval_secs = 300"));
    assert_eq!(m.run(&["init"]).status.code(), Some(2));
    let (code, st) = m.json(&["status"]);
    assert_eq!(code, 0);
    assert_eq!(st["locations"][0]["name"], "local");
    // The offer of mounted volumes for a never-seen drive is always part of the JSON (empty
    // where the defaults name no drive, as off macOS).
    let other = Machine {
        home: w.path("fresh2"),
    };
    let (code, out) = other.json(&["init"]);
    assert_eq!(code, 0);
    assert!(
        out["config"]
            .as_str()
            .is_some_and(|c| c.ends_with("metasync.toml")),
        "{out}"
    );
    assert!(out["volume_offers"].is_array(), "{out}");
}

#[test]
fn concurrent_syncs_never_interleave() {
    let w = World::new();
    let a = w.machine("a", &[("icloud", "cloud")], "files = [\"**/*.txt\"]");
    for i in 0..200 {
        write_aged(
            &a.file(&format!("notes/n{i:03}.txt")),
            &"x".repeat(20_000 + i),
            100,
        );
    }
    let children: Vec<_> = (0..3)
        .map(|_| a.cmd(&["--json", "sync"]).spawn().unwrap())
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_metasync"))
        .arg("--home")
        .arg(&a.home)
        .arg("--json")
        .arg("status")
        .output()
        .unwrap();
    assert!(out.status.success());
    // The archive's history: runs one after another, never overlapping.
    let db = rusqlite::Connection::open(a.home.join(".metasync/state.db")).unwrap();
    let mut stmt = db
        .prepare("SELECT started, finished FROM runs ORDER BY id")
        .unwrap();
    let runs: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(runs.len(), 3);
    for pair in runs.windows(2) {
        let end = chrono::DateTime::parse_from_rfc3339(&pair[0].1).unwrap();
        let next = chrono::DateTime::parse_from_rfc3339(&pair[1].0).unwrap();
        assert!(next >= end, "runs overlap: {runs:?}");
    }
    assert_eq!(
        tree(&w.path("cloud"))
            .iter()
            .filter(|f| f.ends_with(".txt"))
            .count(),
        200
    );
}

#[test]
fn a_held_lock_makes_the_second_run_wait_then_name_the_holder() {
    let w = World::new();
    let a = cloud(&w, "a", "lock_wait_secs = 1");
    std::fs::write(a.home.join("metasync.toml"), "lock_wait_secs = 1\n").unwrap();
    std::fs::create_dir_all(a.home.join(".metasync")).unwrap();
    let f = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(a.home.join(".metasync/lock"))
        .unwrap();
    f.lock().unwrap();
    std::fs::write(
        a.home.join(".metasync/lock"),
        "pid 4242 (metasync-app sync)",
    )
    .unwrap();
    let out = a.run(&["sync"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pid 4242 (metasync-app sync)"), "{err}");
}

#[test]
fn logs_one_line_per_action_and_skipped_location() {
    let w = World::new();
    let a = w.machine(
        "a",
        &[("icloud", "cloud"), ("gone", "missing/parent/dir")],
        "",
    );
    write_aged(&a.file(RULES), "x\n", 100);
    a.sync(&[], 0);
    let logs: String = std::fs::read_dir(a.home.join("logs"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(logs.contains("gone: skipped"), "{logs}");
    assert!(
        logs.contains("sorting-rules.yaml in icloud: copy"),
        "{logs}"
    );
}

#[test]
fn stale_temp_files_are_cleaned_and_never_synced() {
    let w = World::new();
    let a = w.machine("a", &[("icloud", "cloud")], "files = [\"*\"]");
    write_aged(&a.file(RULES), "x\n", 100);
    a.sync(&[], 0);
    let machine: String = rusqlite::Connection::open(a.home.join(".metasync/state.db"))
        .unwrap()
        .query_row("SELECT value FROM meta WHERE key = 'machine_id'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let stale = w
        .path("cloud")
        .join(format!(".{RULES}.metasync-tmp-{machine}-dead"));
    std::fs::write(&stale, "half a file").unwrap();
    let r = a.sync(&[], 0);
    assert!(!stale.exists());
    assert_eq!(r["files"].as_array().unwrap().len(), 1, "{r:#}");
}

#[test]
fn icloud_conflict_copies_are_reported_in_status() {
    let w = World::new();
    let a = cloud(&w, "a", "");
    write_aged(&a.file(RULES), "x\n", 100);
    a.sync(&[], 0);
    std::fs::write(
        w.path("cloud").join("sorting-rules 2.yaml"),
        "iCloud's copy\n",
    )
    .unwrap();
    let (_, st) = a.json(&["status"]);
    assert_eq!(
        st["locations"][1]["conflict_copies"][0], "sorting-rules 2.yaml",
        "{st:#}"
    );
    assert!(st["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("conflict copy")));
    // It is reported, never synced.
    a.sync(&[], 0);
    assert!(!a.file("sorting-rules 2.yaml").exists());
}

#[test]
fn daemon_syncs_in_the_background() {
    let w = World::new();
    let a = cloud(&w, "a", "");
    write_aged(&a.file(RULES), "first\n", 100);
    let mut child = a
        .cmd(&["daemon", "--interval", "1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let target = w.path("cloud").join(RULES);
    let wait_for = |content: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if std::fs::read_to_string(&target).ok().as_deref() == Some(content) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    };
    let first = wait_for("first\n");
    write_aged(&a.file(RULES), "second\n", 50);
    let second = wait_for("second\n");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(first && second, "the daemon propagated both edits");
}

#[test]
fn status_remembers_what_it_hashed() {
    let w = World::new();
    let a = cloud(&w, "a", "");
    write_aged(&a.file(RULES), "one\n", 100);
    a.sync(&[], 0);
    write_aged(&a.file(RULES), "two\n", 50);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (_, st) = a.json(&["status"]);
    assert_eq!(st["locations"][0]["files"][0]["state"], "present");
    // The sync trusts the hash status computed: the edit is seen without reading it again.
    let r = a.sync(&[], 0);
    assert_eq!(r["files"][0]["outcome"], "propagated", "{r:#}");
    assert_eq!(r["hashed"], 0, "{r:#}");
    assert_eq!(read(&w.path("cloud").join(RULES)), "two\n");
}

#[test]
fn what_a_run_wrote_is_not_read_again_by_the_next() {
    let w = World::new();
    let a = cloud(&w, "a", "");
    write_aged(&a.file(RULES), "one\n", 100);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let r = a.sync(&[], 0);
    assert_eq!(r["hashed"], 1, "only the local edit is read: {r:#}");
    let r = a.sync(&[], 0);
    assert_eq!(
        r["hashed"], 0,
        "the copy in the cloud is known from writing it: {r:#}"
    );
    // And an edit of the written copy is still seen.
    write_aged(&w.path("cloud").join(RULES), "two\n", 10);
    a.sync(&[], 0);
    assert_eq!(read(&a.file(RULES)), "two\n");
}

/// A file deleted by hand in every location is agreed deleted: no warning run after run.
/// While an unplugged drive was last seen holding it, it waits for that drive, which
/// brings it back everywhere when it returns. Before, both cases warned "the agreed
/// version is in no available location" on every run, forever in the first.
#[test]
fn a_file_deleted_in_every_location_is_agreed_gone_unless_an_unplugged_drive_holds_it() {
    let w = World::new();
    let a = w.machine(
        "a",
        &[("icloud", "cloud"), ("external", "drive/.metasystem")],
        "",
    );
    std::fs::create_dir_all(w.path("drive")).unwrap();
    write_aged(&a.file(RULES), "v1\n", 500);
    a.sync(&[], 0);
    let everywhere = [
        a.file(RULES),
        w.path("cloud").join(RULES),
        w.path("drive/.metasystem").join(RULES),
    ];
    // The drive unplugged while it holds the file: the deletion waits for it.
    std::fs::rename(w.path("drive"), w.path("drive-away")).unwrap();
    for p in &everywhere[..2] {
        std::fs::remove_file(p).unwrap();
    }
    let r = a.sync(&[], 0);
    let waits = r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("is in no available location"));
    assert!(waits, "{r:#}");
    std::fs::rename(w.path("drive-away"), w.path("drive")).unwrap();
    a.sync(&[], 0);
    for p in &everywhere {
        assert_eq!(read(p), "v1\n", "{}", p.display());
    }
    // Deleted in all three: gone, in sync, and said so once per run without a warning.
    for p in &everywhere {
        std::fs::remove_file(p).unwrap();
    }
    for run in 0..2 {
        let r = a.sync(&[], 0);
        assert!(
            r["warnings"].as_array().unwrap().is_empty(),
            "run {run}: {r:#}"
        );
        let f = r["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["file"] == RULES)
            .expect("the file is reported");
        assert_eq!(f["outcome"], "in_sync", "{r:#}");
        assert_eq!(f["reason"], "deleted in every location", "{r:#}");
    }
    for p in &everywhere {
        assert!(!p.exists(), "{}", p.display());
    }
    // Made again later: an ordinary new file.
    write_aged(&a.file(RULES), "v2\n", 10);
    a.sync(&[], 0);
    assert_eq!(read(&w.path("cloud").join(RULES)), "v2\n");
}
