//! Backups as a lifecycle, through the real binary: listing, restore round trips across two
//! machines, refused restore paths, retention by `prune`, manual conflicts across restarts.

mod common;
use common::*;

const RULES: &str = "sorting-rules.yaml";

fn two(extra: &str) -> (World, Machine, Machine) {
    let w = World::new();
    let a = w.machine("a", &[("icloud", "cloud")], extra);
    let b = w.machine("b", &[("icloud", "cloud")], extra);
    (w, a, b)
}

#[test]
fn backups_are_listed_newest_first_with_stable_ids() {
    let (w, a, _b) = two("");
    for (i, age) in [(1, 300), (2, 200), (3, 100)] {
        write_aged(&a.file(RULES), &format!("v{i}\n"), age);
        a.sync(&[], 0);
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let (code, list) = a.json(&["backups"]);
    assert_eq!(code, 0);
    let list = list.as_array().unwrap().clone();
    // v1 and v2 were overwritten in icloud: two backups there, none in local.
    assert_eq!(list.len(), 2, "{list:#?}");
    assert!(list
        .iter()
        .all(|b| b["location"] == "icloud" && b["file"] == RULES));
    assert!(list[0]["created"].as_str().unwrap() > list[1]["created"].as_str().unwrap());
    assert_eq!(
        read(std::path::Path::new(list[0]["path"].as_str().unwrap())),
        "v2\n"
    );
    let id = list[0]["id"].as_str().unwrap();
    assert!(id.starts_with("icloud:sorting-rules.yaml.backup-"), "{id}");
    // Filters.
    let (_, only_local) = a.json(&["backups", "--location", "local"]);
    assert_eq!(only_local.as_array().unwrap().len(), 0);
    let (_, by_file) = a.json(&["backups", RULES]);
    assert_eq!(by_file.as_array().unwrap().len(), 2);
    let (code, _) = a.json(&["backups", "--location", "nowhere"]);
    assert_eq!(code, 2);
    assert!(w.path("cloud").join(RULES).exists());
}

#[test]
fn restore_round_trip_across_two_machines() {
    let (w, a, b) = two("");
    write_aged(&a.file(RULES), "good rules\n", 300);
    a.sync(&[], 0);
    b.sync(&[], 0);
    write_aged(&b.file(RULES), "broken rules\n", 200);
    b.sync(&[], 0);
    a.sync(&[], 0);
    assert_eq!(read(&a.file(RULES)), "broken rules\n");
    // A's old version is a backup in A's home: restore it.
    let (_, list) = a.json(&["backups", "--location", "local"]);
    let id = list[0]["id"].as_str().unwrap().to_string();
    let (code, dry) = a.json(&["restore", &id, "--dry-run"]);
    assert_eq!(code, 0);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        read(&a.file(RULES)),
        "broken rules\n",
        "a dry run writes nothing"
    );
    let (code, r) = a.json(&["restore", &id]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(read(&a.file(RULES)), "good rules\n");
    // The version it replaced is itself a backup.
    let prev = r["previous_backup"].as_str().unwrap();
    assert_eq!(read(std::path::Path::new(prev)), "broken rules\n");
    // The restored version is an ordinary change: it wins everywhere, no conflict.
    let r = a.sync(&[], 0);
    assert!(r["conflicts"].as_array().unwrap().is_empty(), "{r:#}");
    assert_eq!(read(&w.path("cloud").join(RULES)), "good rules\n");
    b.sync(&[], 0);
    assert_eq!(read(&b.file(RULES)), "good rules\n");
    a.sync(&[], 0);
    assert_eq!(read(&a.file(RULES)), "good rules\n");
}

#[test]
fn restore_refuses_anything_but_a_real_backup_inside_a_location() {
    let (w, a, _b) = two("");
    write_aged(&a.file(RULES), "v1\n", 300);
    a.sync(&[], 0);
    write_aged(&a.file(RULES), "v2\n", 200);
    a.sync(&[], 0);
    let (_, list) = a.json(&["backups"]);
    let real = list[0]["id"].as_str().unwrap().to_string();
    let backup_name = real.split_once(':').unwrap().1.to_string();
    // Outside files, traversal, absolute paths elsewhere, non-backup names.
    std::fs::write(w.path("secret.yaml.backup-20260101-000000"), "secret\n").unwrap();
    let outside = w
        .path("secret.yaml.backup-20260101-000000")
        .display()
        .to_string();
    let traversal = format!("icloud:../{backup_name}");
    let bad = [
        traversal.as_str(),
        "icloud:../../etc/passwd",
        "icloud:/etc/passwd",
        outside.as_str(),
        "/etc/passwd",
        "local:sorting-rules.yaml",
        "nowhere:sorting-rules.yaml.backup-20260101-000000",
        "icloud:sorting-rules.yaml.backup-20260101-000000",
    ];
    for spec in bad {
        let out = a.run(&["restore", spec]);
        assert_eq!(out.status.code(), Some(1), "{spec} must be refused");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("refused"),
            "{spec}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A symlink with a backup name that leads outside the location.
    let link = w
        .path("cloud")
        .join("sorting-rules.yaml.backup-20260102-000000");
    std::os::unix::fs::symlink(w.path("secret.yaml.backup-20260101-000000"), &link).unwrap();
    let out = a.run(&[
        "restore",
        "icloud:sorting-rules.yaml.backup-20260102-000000",
    ]);
    assert_eq!(out.status.code(), Some(1));
    // A backup inside a symlinked folder leading out.
    std::fs::create_dir_all(w.path("elsewhere")).unwrap();
    std::fs::write(w.path("elsewhere/x.yaml.backup-20260101-000000"), "x").unwrap();
    std::os::unix::fs::symlink(w.path("elsewhere"), w.path("cloud/sub")).unwrap();
    let out = a.run(&["restore", "icloud:sub/x.yaml.backup-20260101-000000"]);
    assert_eq!(out.status.code(), Some(1));
    // Nothing was changed by any of it.
    assert_eq!(read(&a.file(RULES)), "v2\n");
    assert_eq!(
        read(&w.path("secret.yaml.backup-20260101-000000")),
        "secret\n"
    );
    // The real one, by absolute path, works.
    let real_path = list[0]["path"].as_str().unwrap().to_string();
    let out = a.run(&["restore", &real_path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read(&w.path("cloud").join(RULES)), "v1\n");
}

#[test]
fn prune_applies_retention_and_keeps_the_last_copies() {
    let (w, a, _b) = two(
        "[backups]\nkeep_last = 2\nplain_last = 2\nretention = \"max_age\"\nmax_age_days = 30\n",
    );
    write_aged(&a.file(RULES), "current\n", 100);
    a.sync(&[], 0);
    let cloud = w.path("cloud");
    let now = chrono::Local::now().naive_local();
    // Old backups of versions that still exist elsewhere (the current one) and one unique old version.
    let mk = |days: i64, content: &str| {
        let at = now - chrono::Duration::days(days);
        let p = cloud.join(format!("{RULES}.backup-{}", at.format("%Y%m%d-%H%M%S")));
        std::fs::write(&p, content).unwrap();
        p
    };
    let d1 = mk(1, "current\n");
    let d2 = mk(2, "current\n");
    let d10 = mk(10, "ten days old\n");
    let d40 = mk(40, "current\n");
    let d50 = mk(50, "current\n");
    let unique = mk(60, "the only copy of this version\n");
    let (code, dry) = a.json(&["prune", "--dry-run"]);
    assert_eq!(code, 0);
    let doomed: Vec<&str> = dry["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["path"].as_str().unwrap())
        .collect();
    // Every version is thinned by the schedule, unique or not (SPEC §5 "History").
    assert_eq!(doomed.len(), 3, "{dry:#}");
    for p in [&d40, &d50, &unique] {
        assert!(doomed.contains(&p.to_str().unwrap()), "{doomed:?}");
    }
    let moved = dry["stored"].as_array().unwrap();
    assert_eq!(moved.len(), 1, "{dry:#}");
    assert_eq!(
        dry["bytes_freed"],
        2 * "current\n".len() + "the only copy of this version\n".len()
    );
    assert!(d40.exists() && d10.exists(), "a dry run changes nothing");
    let (code, _) = a.json(&["prune"]);
    assert_eq!(code, 0);
    assert!(d1.exists() && d2.exists(), "keep_last");
    assert!(
        !d40.exists() && !d50.exists() && !unique.exists(),
        "older than max_age"
    );
    assert!(!d10.exists(), "moved into the store");
    let (_, list) = a.json(&["backups", RULES, "--location", "icloud"]);
    let stored = stored_entries(&list);
    assert_eq!(stored.len(), 1, "{list:#}");
    let out = w.path("ten-days-old");
    let r = a.run(&[
        "restore",
        stored[0]["id"].as_str().unwrap(),
        "--to",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(read(&out), "ten days old\n");
}

#[test]
fn retention_runs_after_every_sync() {
    let (w, a, _b) = two("[backups]\nkeep_last = 1\nretention = \"none\"\n");
    write_aged(&a.file(RULES), "v0\n", 400);
    a.sync(&[], 0);
    write_aged(&a.file(RULES), "v1\n", 300);
    a.sync(&[], 0);
    // v0's backup is the newest: kept as the keep_last one.
    assert_eq!(backups_in(&w.path("cloud"), RULES).len(), 1);
    // Three older backups of the current version v1 appear (e.g. from other machines' runs).
    let now = chrono::Local::now().naive_local();
    for h in 1..=3 {
        let at = now - chrono::Duration::hours(h);
        std::fs::write(
            w.path("cloud")
                .join(format!("{RULES}.backup-{}", at.format("%Y%m%d-%H%M%S"))),
            "v1\n",
        )
        .unwrap();
    }
    assert_eq!(backups_in(&w.path("cloud"), RULES).len(), 4);
    // A plain no-op sync applies retention: with retention "none" only the keep_last newest
    // (v0's backup) stays; the older ones go.
    a.sync(&[], 0);
    let left: Vec<String> = backups_in(&w.path("cloud"), RULES)
        .iter()
        .map(|p| read(p))
        .collect();
    assert_eq!(left, vec!["v0\n".to_string()], "{left:?}");
}

/// Backups the archive has read the versions of (retention records each one it hashes).
fn backups_read(m: &Machine) -> usize {
    let db = m.home.join(".metasync").join("state.db");
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(
        "SELECT count(*) FROM scan_cache WHERE file LIKE '%.backup-%'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .unwrap() as usize
}

#[test]
fn retention_reads_no_backup_while_the_policy_keeps_them_all() {
    let (w, a, _b) = two("[backups]\nkeep_last = 2\nplain_last = 2\nretention = \"staggered\"\n");
    write_aged(&a.file(RULES), "current\n", 100);
    a.sync(&[], 0);
    let cloud = w.path("cloud");
    let now = chrono::Local::now().naive_local();
    let mk = |minutes: i64| {
        let at = now - chrono::Duration::minutes(minutes);
        let p = cloud.join(format!("{RULES}.backup-{}", at.format("%Y%m%d-%H%M%S")));
        std::fs::write(&p, format!("made {minutes} minutes ago\n")).unwrap();
        p
    };
    // Two plain backups, no more than keep_last: retention has nothing to do.
    let made: Vec<_> = [60, 120].into_iter().map(mk).collect();
    a.sync(&[], 0);
    assert_eq!(backups_read(&a), 0, "no backup needed reading");
    assert!(made.iter().all(|p| p.exists()));
    let store = cloud.join(".metasync/history");
    assert!(!store.exists(), "nothing stored");
    // A third, older: it moves into the store; the two newest stay plain.
    let third = mk(185);
    a.sync(&[], 0);
    assert!(made.iter().all(|p| p.exists()));
    assert!(!third.exists());
    assert_eq!(backups_in(&cloud, RULES).len(), 2);
    let (_, list) = a.json(&["backups", RULES, "--location", "icloud"]);
    assert_eq!(list.as_array().unwrap().len(), 3, "{list:#}");
}

#[test]
fn manual_conflict_lifecycle_across_restarts_and_convergence() {
    let (w, a, b) = two("strategy = \"manual\"");
    write_aged(&a.file(RULES), "base\n", 500);
    a.sync(&[], 0);
    b.sync(&[], 0);
    write_aged(&a.file(RULES), "from a\n", 300);
    write_aged(&b.file(RULES), "from b\n", 200);
    a.sync(&[], 0);
    b.sync(&[], 3);
    // A fresh process (a restart) still knows it, with every candidate's details.
    let (code, list) = b.json(&["conflicts"]);
    assert_eq!(code, 3);
    let c = &list[0];
    assert_eq!(c["file"], RULES);
    let locs: Vec<&str> = c["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["location"].as_str().unwrap())
        .collect();
    assert_eq!(locs, ["local", "icloud"]);
    for cand in c["candidates"].as_array().unwrap() {
        assert!(
            cand["sha256"].as_str().unwrap().len() == 64
                && cand["size"].as_u64().is_some()
                && cand["mtime"].is_string()
        );
    }
    let detected = c["detected"].as_str().unwrap().to_string();
    b.sync(&[], 3);
    let (_, again) = b.json(&["conflicts"]);
    assert_eq!(
        again[0]["detected"],
        detected.as_str(),
        "the first detection time is kept"
    );
    // The user makes them equal by hand: the candidates converge and the conflict goes.
    std::fs::copy(w.path("cloud").join(RULES), b.file(RULES)).unwrap();
    let r = b.sync(&[], 0);
    assert!(r["conflicts"].as_array().unwrap().is_empty(), "{r:#}");
    let (code, list) = b.json(&["conflicts"]);
    assert_eq!((code, list.as_array().unwrap().len()), (0, 0));
}

#[test]
fn a_database_backup_is_checked_then_restored_live_and_propagates() {
    use rusqlite::Connection;
    let (w, a, _b) = two("");
    let db = a.file("metastore.db");
    metasync::sample::create_knowledge_graph(&db, 92, 1).unwrap();
    a.sync(&[], 0);
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "PRAGMA journal_mode=WAL; DELETE FROM relations; DELETE FROM entities WHERE id > 60;",
        )
        .unwrap();
    a.sync(&[], 0);
    let count = |p: &std::path::Path| -> i64 {
        Connection::open(p)
            .unwrap()
            .query_row("SELECT count(*) FROM entities", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(&w.path("cloud/metastore.db")), 60);
    // The cloud kept the 92-entity version; list it with counts.
    let (_, list) = a.json(&["backups", "metastore.db", "--counts"]);
    let b = &list[0];
    assert_eq!(b["entities"], 92, "{list:#}");
    // A corrupt backup is refused before anything is touched.
    let bad = w.path("cloud/metastore.db.backup-20260101-000000");
    let mut bytes = std::fs::read(b["path"].as_str().unwrap()).unwrap();
    for x in &mut bytes[4096..4160] {
        *x = !*x;
    }
    std::fs::write(&bad, bytes).unwrap();
    let out = a.run(&["restore", "icloud:metastore.db.backup-20260101-000000"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("integrity"));
    assert_eq!(count(&w.path("cloud/metastore.db")), 60);
    // The good one goes back, then travels home through the live-safe path.
    let (code, r) = a.json(&["restore", b["id"].as_str().unwrap()]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(count(&w.path("cloud/metastore.db")), 92);
    a.sync(&[], 0);
    assert_eq!(count(&db), 92);
    let mode: String = Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        mode, "wal",
        "written in place, not replaced: the local file keeps its journal mode"
    );
}

/// `path → sha256` of a listing.
fn listed_hashes(list: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let hash = b["sha256"].as_str().unwrap_or_default().to_string();
            (b["path"].as_str().unwrap().to_string(), hash)
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A listing keeps each plain backup's hash with the stat it was read at (in the home's
/// state): a later listing of the unchanged backups takes every hash (and, with `--counts`,
/// every count) from there, reading none of the backups — shown by replacing what was kept
/// with values no backup has —, and reads again the one whose stat changed (same size, new
/// mtime).
#[test]
fn a_listing_of_unchanged_backups_reads_none_and_rehashes_a_changed_one() {
    let (w, a, _b) = two("");
    write_aged(&a.file(RULES), "current\n", 100);
    a.sync(&[], 0);
    let cloud = w.path("cloud");
    let now = chrono::Local::now().naive_local();
    let made: Vec<std::path::PathBuf> = (1..=3u64)
        .map(|h| {
            let at = now - chrono::Duration::hours(h as i64);
            let p = cloud.join(format!("{RULES}.backup-{}", at.format("%Y%m%d-%H%M%S")));
            write_aged(&p, &format!("version {h}\n"), 3600 * h);
            p
        })
        .collect();
    // A hash read within 2 s of the file's last change is never trusted later (racy).
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let args = ["backups", RULES, "--location", "icloud"];
    let (code, first) = a.json(&args);
    assert_eq!(code, 0);
    let real: std::collections::BTreeMap<String, String> = made
        .iter()
        .map(|p| {
            let hash = sha256_hex(&std::fs::read(p).unwrap());
            (p.display().to_string(), hash)
        })
        .collect();
    assert_eq!(listed_hashes(&first), real);
    // What was kept, replaced by values no backup has.
    let kept_dir = a.home.join(".metasync").join("backup-hashes");
    let kept: Vec<_> = std::fs::read_dir(&kept_dir)
        .expect("the listing kept the backups' hashes")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "one location listed: {kept:?}");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&kept[0]).unwrap()).unwrap();
    let entries = json.as_object_mut().unwrap();
    assert_eq!(entries.len(), 3, "{entries:?}");
    for e in entries.values_mut() {
        e["hash"] = serde_json::json!("f".repeat(64));
        e["extra"] = serde_json::json!("{\"entities\":777}");
    }
    std::fs::write(&kept[0], serde_json::to_vec(&json).unwrap()).unwrap();
    let planted = |list: &serde_json::Value| {
        let hashes = listed_hashes(list);
        hashes.values().filter(|h| **h == "f".repeat(64)).count()
    };
    let (_, second) = a.json(&args);
    assert_eq!(planted(&second), 3, "no backup read: {second:#}");
    let mut counted = args.to_vec();
    counted.push("--counts");
    let (_, with_counts) = a.json(&counted);
    let counts: Vec<_> = with_counts
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["entities"].clone())
        .collect();
    assert_eq!(counts, vec![serde_json::json!(777); 3], "{with_counts:#}");
    // One backup rewritten in place: same size, other bytes, another mtime.
    write_aged(&made[0], "version 9\n", 7200);
    let (_, third) = a.json(&args);
    let hashes = listed_hashes(&third);
    assert_eq!(
        hashes[&made[0].display().to_string()],
        sha256_hex(b"version 9\n"),
        "the changed backup is read again"
    );
    assert_eq!(planted(&third), 2, "the others still are not: {third:#}");
}

/// `restore ID --to PATH` of a stored version writes a temp file beside PATH and renames it
/// only once whole, verified and fsynced: a crash before the rename leaves nothing at PATH,
/// and the next attempt writes it.
#[test]
fn restore_to_a_path_crashing_before_the_rename_leaves_nothing_there() {
    let (w, a, _b) = two("[backups]\nkeep_last = 3\nplain_last = 1\n");
    write_aged(&a.file(RULES), "current\n", 100);
    a.sync(&[], 0);
    let cloud = w.path("cloud");
    let now = chrono::Local::now().naive_local();
    for (h, body) in [(1u64, "newer\n"), (2, "the older version\n")] {
        let at = now - chrono::Duration::hours(h as i64);
        let p = cloud.join(format!("{RULES}.backup-{}", at.format("%Y%m%d-%H%M%S")));
        write_aged(&p, body, 3600 * h);
    }
    let (code, _) = a.json(&["prune"]);
    assert_eq!(code, 0);
    let (_, list) = a.json(&["backups", RULES, "--location", "icloud"]);
    let stored = stored_entries(&list);
    assert_eq!(stored.len(), 1, "{list:#}");
    let id = stored[0]["id"].as_str().unwrap();
    let out = w.path("restored");
    let crashed = a
        .cmd(&["restore", id, "--to", out.to_str().unwrap()])
        .env("METASYNC_FAILPOINT", "before_rename")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&crashed.stderr);
    assert!(
        crashed.status.code().is_none() && stderr.contains("failpoint"),
        "the restore stops at the rename: {:?} {stderr}",
        crashed.status
    );
    assert!(!out.exists(), "nothing at the path before the rename");
    let beside = |prefix: &str| -> Vec<String> {
        std::fs::read_dir(out.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(prefix))
            .collect()
    };
    let left = beside(".restored.metasync-tmp-restore-");
    assert_eq!(left.len(), 1, "the crash leaves its temp: {left:?}");
    // An hour-old leftover is the crash's; a temp of another file, of a sync, or one still
    // being written (fresh) is not, and stays.
    set_age(&out.parent().unwrap().join(&left[0]), 3600);
    let others = [
        ".restored.metasync-tmp-restore-fresh",
        ".restored-not.metasync-tmp-restore-old",
        ".restored.metasync-tmp-ab12-old",
    ];
    for (i, o) in others.iter().enumerate() {
        write_aged(
            &out.parent().unwrap().join(o),
            "keep\n",
            if i == 0 { 0 } else { 3600 },
        );
    }
    let r = a.run(&["restore", id, "--to", out.to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(read(&out), "the older version\n");
    let mut kept = beside(".restored");
    kept.sort();
    let mut want: Vec<String> = others.iter().map(|o| o.to_string()).collect();
    want.sort();
    assert_eq!(
        kept, want,
        "only the abandoned restore temp of this path is removed"
    );
}
