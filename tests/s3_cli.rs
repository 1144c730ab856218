//! Object-store locations against a real S3-compatible server (`moto_server`, started on a
//! free loopback port): machines that share nothing but the bucket, conflicts, a bucket with
//! a folder remote, unreachable or wrong stores, lost races, concurrent machines.

mod common;
use common::moto::Moto;
use common::s3::*;
use common::*;

#[test]
fn round_trip_between_machines_sharing_only_the_bucket() {
    let Some(moto) = server() else { return };
    let w = World::new();
    let (a, b) = on_bucket(&moto, &w, "");
    write_aged(&a.file(RULES), "rules: v1\n", 100);
    let r = a.sync(&[], 0);
    assert_eq!(r["files"][0]["outcome"], "propagated", "{r:#}");
    assert_eq!(
        moto.keys("shared"),
        ["meta/.metasync-location", "meta/sorting-rules.yaml"],
        "the marker and the file are objects; the lease is gone"
    );

    b.sync(&[], 0);
    assert_eq!(read(&b.file(RULES)), "rules: v1\n");
    let modified = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    assert_eq!(
        modified(&a.file(RULES)),
        modified(&b.file(RULES)),
        "the copy keeps the edit's modification time through the bucket"
    );

    write_aged(&b.file(RULES), "rules: v2 from b\n", 50);
    b.sync(&[], 0);
    a.sync(&[], 0);
    assert_eq!(read(&a.file(RULES)), "rules: v2 from b\n");
    let keys = moto.keys("shared");
    assert!(
        keys.iter()
            .any(|k| k.starts_with("meta/sorting-rules.yaml.backup-")),
        "the version b replaced is kept as a backup object: {keys:?}"
    );

    // A no-op run costs one listing of the prefix and writes nothing.
    let r = a.sync(&[], 0);
    assert_eq!(r["actions"].as_array().unwrap().len(), 0, "{r:#}");
    let n = requests(&a, "s3");
    assert_eq!(
        (
            n["list"].as_u64(),
            n["get"].as_u64(),
            n["put"].as_u64(),
            n["head"].as_u64(),
            n["delete"].as_u64()
        ),
        (Some(1), Some(0), Some(0), Some(0), Some(0)),
        "{n}"
    );
}

/// Two machines on one bucket, in sync on `base`; then A edits and syncs, B edits (newer)
/// without syncing.
fn diverge(moto: &Moto, w: &World, extra: &str) -> (Machine, Machine) {
    let (a, b) = on_bucket(moto, w, extra);
    write_aged(&a.file(RULES), "base\n", 1000);
    a.sync(&[], 0);
    b.sync(&[], 0);
    write_aged(&a.file(RULES), "edit from a\n", 200);
    write_aged(&b.file(RULES), "edit from b (newer)\n", 100);
    a.sync(&[], 0);
    assert_eq!(
        moto.get("shared", "meta/sorting-rules.yaml"),
        "edit from a\n"
    );
    (a, b)
}

#[test]
fn conflicts_under_each_strategy_through_the_bucket() {
    let Some(moto) = server() else { return };
    // Newest: B's edit wins everywhere; A's is kept as a backup object.
    let w = World::new();
    let (a, b) = diverge(&moto, &w, "");
    let r = b.sync(&[], 0);
    assert!(
        r["files"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("conflict"),
        "{r:#}"
    );
    assert_eq!(
        moto.get("shared", "meta/sorting-rules.yaml"),
        "edit from b (newer)\n",
        "{r:#}"
    );
    assert!(backup_objects(&moto).contains(&"edit from a\n".to_string()));
    a.sync(&[], 0);
    assert_eq!(read(&a.file(RULES)), "edit from b (newer)\n");
    drop(w);

    // Local (B's) and remote (the bucket's) on fresh buckets.
    for (strategy, winner) in [
        ("local", "edit from b (newer)\n"),
        ("remote", "edit from a\n"),
    ] {
        let moto = server().unwrap();
        let w = World::new();
        let (_a, b) = diverge(&moto, &w, "");
        let r = b.sync(&["--strategy", strategy], 0);
        assert_eq!(read(&b.file(RULES)), winner, "{strategy}: {r:#}");
        assert_eq!(
            moto.get("shared", "meta/sorting-rules.yaml"),
            winner,
            "{strategy}"
        );
    }

    // Manual: nothing overwritten until resolved, then the bucket's version is kept.
    let moto = server().unwrap();
    let w = World::new();
    let (_a, b) = diverge(&moto, &w, "strategy = \"manual\"");
    let r = b.sync(&[], 3);
    assert_eq!(r["conflicts"][0]["file"], RULES, "{r:#}");
    assert_eq!(read(&b.file(RULES)), "edit from b (newer)\n");
    assert_eq!(
        moto.get("shared", "meta/sorting-rules.yaml"),
        "edit from a\n"
    );
    let (code, r) = b.json(&["resolve", RULES, "--keep", "s3"]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(read(&b.file(RULES)), "edit from a\n");
    b.sync(&[], 0);
}

#[test]
fn row_edits_on_two_machines_merge_through_the_bucket() {
    let Some(moto) = server() else { return };
    let w = World::new();
    let (a, b) = on_bucket(&moto, &w, "strategy = \"manual\"");
    let db = "metastore.db";
    metasync::sample::create_knowledge_graph(&a.file(db), 92, 1).unwrap();
    set_age(&a.file(db), 1000);
    a.sync(&[], 0);
    b.sync(&[], 0);
    exec(
        &a.file(db),
        "UPDATE entities SET name = 'edited on a' WHERE id = 1;",
    );
    set_age(&a.file(db), 200);
    a.sync(&[], 0);
    exec(
        &b.file(db),
        "UPDATE entities SET name = 'edited on b' WHERE id = 2;",
    );
    set_age(&b.file(db), 100);
    let r = b.sync(&[], 0);
    assert!(
        r["files"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("merged row by row"),
        "{r:#}"
    );
    a.sync(&[], 0);
    let mirror = b.home.join(".metasync/stores/s3").join(db);
    for path in [a.file(db), b.file(db), mirror] {
        assert_eq!(
            name(&path, 1).as_deref(),
            Some("edited on a"),
            "{}",
            path.display()
        );
        assert_eq!(
            name(&path, 2).as_deref(),
            Some("edited on b"),
            "{}",
            path.display()
        );
    }
    // The database in the bucket is one self-contained file: no journal or WAL beside it.
    let keys = moto.keys("shared");
    assert!(
        !keys
            .iter()
            .any(|k| k.ends_with("-wal") || k.ends_with("-journal")),
        "{keys:?}"
    );
}

#[test]
fn the_bucket_together_with_a_folder_remote() {
    let Some(moto) = server() else { return };
    moto.create_bucket("shared");
    let w = World::new();
    let loc = moto.location("s3", "shared", "meta");
    // A reaches the bucket and a folder; B only the folder; C only the bucket.
    let a = w.machine("a", &[("drive", "drive")], &loc);
    let b = w.machine("b", &[("drive", "drive")], "");
    let c = w.machine("c", &[], &loc);
    write_aged(&b.file(RULES), "from b\n", 100);
    b.sync(&[], 0);
    a.sync(&[], 0);
    assert_eq!(moto.get("shared", "meta/sorting-rules.yaml"), "from b\n");
    c.sync(&[], 0);
    assert_eq!(read(&c.file(RULES)), "from b\n");
    write_aged(&c.file(RULES), "from c\n", 50);
    c.sync(&[], 0);
    a.sync(&[], 0);
    assert_eq!(read(&w.path("drive").join(RULES)), "from c\n");
    b.sync(&[], 0);
    assert_eq!(read(&b.file(RULES)), "from c\n");
}

#[test]
fn unreachable_missing_or_unauthorised_stores_are_unavailable_with_the_reason() {
    let Some(moto) = server() else { return };
    moto.create_bucket("present");
    let w = World::new();
    let unreachable = {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!(
            "[[locations]]\nname = \"gone\"\nurl = \"s3://present/m\"\nendpoint = \"http://127.0.0.1:{port}\"\nallow_http = true\n"
        )
    };
    let missing = moto.location("nobucket", "absent-bucket", "m");
    let m = w.machine(
        "m",
        &[("drive", "drive")],
        &format!("{unreachable}{missing}"),
    );
    write_aged(&m.file(RULES), "v1\n", 100);
    let r = m.sync(&[], 0);
    let text = warnings(&r);
    assert!(
        text.contains("gone unavailable: s3://present/m: endpoint unreachable (http://127.0.0.1:"),
        "{text}"
    );
    assert!(
        text.contains("nobucket unavailable: s3://absent-bucket/m: no such bucket `absent-bucket`"),
        "{text}"
    );
    // The folder remote is synced all the same.
    assert_eq!(read(&w.path("drive").join(RULES)), "v1\n");

    // No credentials anywhere (and no keychain entry): said so, with what to do.
    let n = w.machine("n", &[], &moto.location("s3", "present", "m"));
    let out = n
        .cmd(&["--json", "sync"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("METASYNC_KEYRING_FILE", w.path("keyring.ron"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        warnings(&r).contains("s3 unavailable: s3://present/m: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run `metasync login s3`"),
        "{r:#}"
    );
}

#[test]
fn a_key_the_server_does_not_know_is_access_denied() {
    if server().is_none() {
        return;
    }
    let moto = Moto::start_checking_keys().unwrap();
    moto.create_bucket("present");
    let w = World::new();
    let m = w.machine(
        "m",
        &[("drive", "drive")],
        &moto.location("s3", "present", "m"),
    );
    write_aged(&m.file(RULES), "v1\n", 100);
    let r = m.sync(&[], 0);
    assert!(
        warnings(&r)
            .contains("s3 unavailable: s3://present/m: access denied (are the credentials right?)"),
        "{r:#}"
    );
    assert!(warnings(&r).contains("InvalidAccessKeyId"), "{r:#}");
    assert_eq!(read(&w.path("drive").join(RULES)), "v1\n");
}

#[test]
fn login_stores_the_key_that_later_runs_use() {
    let Some(moto) = server() else { return };
    moto.create_bucket("present");
    let w = World::new();
    let m = w.machine("m", &[], &moto.location("s3", "present", "m"));
    let keyring = w.path("keyring.ron");
    let without_env = |args: &[&str]| {
        let mut c = m.cmd(args);
        c.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("METASYNC_KEYRING_FILE", &keyring);
        c
    };
    let mut login = without_env(&["login", "s3"]);
    login
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = login.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"AKIDTEST\nsecret-test\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    write_aged(&m.file(RULES), "v1\n", 100);
    let out = without_env(&["--json", "sync"]).output().unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["warnings"].as_array().unwrap().len(), 0, "{r:#}");
    assert_eq!(moto.get("present", "m/sorting-rules.yaml"), "v1\n");
    // A folder location has nothing to log in to.
    let f = w.machine("f", &[("drive", "drive")], "");
    let out = f.run(&["login", "drive"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_write_that_lost_the_race_overwrites_nothing_and_the_next_run_converges() {
    let Some(moto) = server() else { return };
    let w = World::new();
    let (a, _b) = pair(&moto, &w);
    write_aged(&a.file(RULES), "v2 from a\n", 100);
    // A has scanned and holds the lease; another writer (ignoring leases) replaces the object.
    let run = Paused::start(&a, "lease_taken");
    moto.put("shared", KEY, "v3 from elsewhere\n");
    let (code, r) = run.finish();
    assert_eq!(code, 0, "{r:#}");
    assert!(
        r["warnings"]
            .to_string()
            .contains("was changed in s3://shared/meta by another machine"),
        "{r:#}"
    );
    assert_eq!(
        moto.get("shared", KEY),
        "v3 from elsewhere\n",
        "not overwritten"
    );
    // The next run sees both edits: a conflict, settled by the strategy (newest: the other
    // writer's), with A's edit kept as a backup. Then everything agrees and is quiet.
    let r = a.sync(&[], 0);
    assert!(
        r["files"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("conflict"),
        "{r:#}"
    );
    assert_eq!(read(&a.file(RULES)), "v3 from elsewhere\n");
    assert!(backups_in(&a.home, RULES)
        .iter()
        .any(|p| read(p) == "v2 from a\n"));
    assert_eq!(moto.get("shared", KEY), "v3 from elsewhere\n");
    let r = a.sync(&[], 0);
    assert!(r["actions"].as_array().unwrap().is_empty(), "{r:#}");
}

#[test]
fn a_change_between_the_scan_and_the_lease_is_left_for_the_next_run() {
    let Some(moto) = server() else { return };
    let w = World::new();
    let (a, b) = pair(&moto, &w);
    write_aged(&a.file(RULES), "v2 from a\n", 200);
    write_aged(&b.file(RULES), "v2 from b\n", 100);
    // A has scanned; B syncs its edit completely before A takes the lease.
    let run = Paused::start(&a, "before_lease");
    b.sync(&[], 0);
    assert_eq!(moto.get("shared", KEY), "v2 from b\n");
    let (code, r) = run.finish();
    assert_eq!(code, 0, "{r:#}");
    assert!(
        r["warnings"]
            .to_string()
            .contains("changed in s3://shared/meta since the scan"),
        "{r:#}"
    );
    assert_eq!(moto.get("shared", KEY), "v2 from b\n", "B's version stands");
    a.sync(&[], 0);
    b.sync(&[], 0);
    for m in [&a, &b] {
        assert_eq!(read(&m.file(RULES)), "v2 from b\n");
    }
    assert!(backups_in(&a.home, RULES)
        .iter()
        .any(|p| read(p) == "v2 from a\n"));
}

#[test]
fn the_lease_keeps_a_second_machine_from_writing_during_a_run() {
    let Some(moto) = server() else { return };
    let w = World::new();
    let (a, b) = pair(&moto, &w);
    write_aged(&a.file(RULES), "v2 from a\n", 200);
    let run = Paused::start(&a, "lease_taken");
    assert!(moto
        .keys("shared")
        .contains(&"meta/.metasync-lease".to_string()));
    write_aged(&b.file(RULES), "v2 from b\n", 100);
    let r = b.sync(&[], 0);
    assert!(r["warnings"].to_string().contains("is in use by"), "{r:#}");
    assert_eq!(
        moto.get("shared", KEY),
        "v1\n",
        "B wrote nothing while A held the lease"
    );
    let (code, r) = run.finish();
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(moto.get("shared", KEY), "v2 from a\n");
    assert!(
        !moto
            .keys("shared")
            .contains(&"meta/.metasync-lease".to_string()),
        "released"
    );
    // B's next run: both changed since v1, newest (B's) wins everywhere.
    b.sync(&[], 0);
    a.sync(&[], 0);
    assert_eq!(read(&a.file(RULES)), "v2 from b\n");
    assert_eq!(moto.get("shared", KEY), "v2 from b\n");
}

/// A lease that lasts three seconds unless renewed (`METASYNC_LEASE_SECS`).
const SHORT_LEASE: [(&str, &str); 1] = [("METASYNC_LEASE_SECS", "3")];

#[test]
fn a_run_renews_its_lease_so_it_outlasts_its_span() {
    let Some(moto) = server() else { return };
    let w = World::new();
    let (a, b) = pair(&moto, &w);
    write_aged(&a.file(RULES), "v2 from a\n", 200);
    // A holds the lease and is still in its run (as in a long upload) past the lease's span.
    let run = Paused::start_with(&a, "lease_taken", &SHORT_LEASE);
    let first = lease_expiry(&moto);
    while now_secs() <= first + 1 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(lease_expiry(&moto) > first, "renewed while the run goes on");
    write_aged(&b.file(RULES), "v2 from b\n", 100);
    let r = sync_with(&b, &SHORT_LEASE);
    assert!(warnings(&r).contains("is in use by"), "{r:#}");
    assert_eq!(moto.get("shared", KEY), "v1\n", "B wrote nothing");
    let (code, r) = run.finish();
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(moto.get("shared", KEY), "v2 from a\n");
    assert!(
        !moto.keys("shared").contains(&LEASE_KEY.to_string()),
        "released"
    );
}

#[test]
fn a_run_that_lost_its_lease_writes_no_more_to_the_store() {
    let Some(moto) = server() else { return };
    let w = World::new();
    let (a, _b) = pair(&moto, &w);
    write_aged(&a.file(RULES), "v2 from a\n", 200);
    let run = Paused::start_with(&a, "lease_taken", &SHORT_LEASE);
    // Another machine takes the lease (as if A's had expired), and a renewal falls due.
    let theirs = format!("owner = other-machine\nexpires = {}\n", now_secs() + 3600);
    moto.put("shared", LEASE_KEY, &theirs);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (code, r) = run.finish();
    assert_eq!(code, 0, "unavailable for this run, a warning: {r:#}");
    assert!(
        warnings(&r).contains("s3://shared/meta: this run lost its lease to another machine"),
        "{r:#}"
    );
    assert_eq!(moto.get("shared", KEY), "v1\n", "A wrote nothing more");
    assert_eq!(moto.get("shared", LEASE_KEY), theirs, "their lease stands");
    assert_eq!(read(&a.file(RULES)), "v2 from a\n", "nothing lost here");
}

#[test]
fn two_machines_syncing_at_once_in_a_loop_lose_no_update() {
    let Some(moto) = server() else { return };
    let w = World::new();
    let (a, b) = on_bucket(&moto, &w, "files = [\"*.txt\"]");
    for i in 0..6 {
        std::fs::write(a.file("from-a.txt"), format!("a {i}\n")).unwrap();
        std::fs::write(b.file("from-b.txt"), format!("b {i}\n")).unwrap();
        let runs: Vec<_> = [&a, &b]
            .iter()
            .map(|m| m.cmd(&["--json", "sync"]).output_spawned())
            .collect();
        for run in runs {
            let out = run.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    // Runs refused by the other's lease left their changes for later: two more rounds settle.
    for _ in 0..2 {
        a.sync(&[], 0);
        b.sync(&[], 0);
    }
    for m in [&a, &b] {
        assert_eq!(read(&m.file("from-a.txt")), "a 5\n");
        assert_eq!(read(&m.file("from-b.txt")), "b 5\n");
    }
    assert_eq!(moto.get("shared", "meta/from-a.txt"), "a 5\n");
    assert_eq!(moto.get("shared", "meta/from-b.txt"), "b 5\n");
}

trait SpawnOut {
    fn output_spawned(&mut self) -> std::process::Child;
}

impl SpawnOut for std::process::Command {
    fn output_spawned(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

#[test]
fn the_server_killed_mid_run_loses_nothing_and_a_relink_repopulates_the_bucket() {
    let Some(mut moto) = server() else { return };
    let w = World::new();
    let (a, b) = pair(&moto, &w);
    write_aged(&a.file(RULES), "v2 from a\n", 100);
    let run = Paused::start(&a, "lease_taken");
    moto.kill();
    let (code, r) = run.finish();
    assert_eq!(code, 1, "the write failed: {r:#}");
    assert!(
        r["errors"].to_string().contains("endpoint unreachable"),
        "{r:#}"
    );
    assert_eq!(read(&a.file(RULES)), "v2 from a\n", "nothing lost here");
    // While it is down: unavailable, a warning, exit 0.
    let r = a.sync(&[], 0);
    assert!(
        r["warnings"].to_string().contains("s3 unavailable"),
        "{r:#}"
    );
    // moto keeps nothing across a restart: the bucket comes back empty, so the store is not
    // the one this machine knew until it is relinked; then the next run fills it again.
    moto.restart();
    moto.create_bucket("shared");
    let r = a.sync(&[], 0);
    assert!(
        r["warnings"].to_string().contains("identity marker"),
        "{r:#}"
    );
    let (code, r) = a.json(&["relink", "s3"]);
    assert_eq!(code, 0, "{r:#}");
    a.sync(&[], 0);
    assert_eq!(moto.get("shared", KEY), "v2 from a\n");
    let (code, _) = b.json(&["relink", "s3"]);
    assert_eq!(code, 0);
    b.sync(&[], 0);
    assert_eq!(read(&b.file(RULES)), "v2 from a\n");
}

#[test]
fn a_200_mb_database_goes_up_in_parts_and_comes_down_whole() {
    let Some(moto) = server() else { return };
    let w = World::new();
    let (a, b) = on_bucket(&moto, &w, "files = [\"*.db\"]");
    let db = a.file("big.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE blobs(id INTEGER PRIMARY KEY, data BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
             INSERT INTO blobs(id, data) SELECT i, randomblob(1048576) FROM n;",
        )
        .unwrap();
    }
    set_age(&db, 100);
    assert!(std::fs::metadata(&db).unwrap().len() > 200 << 20);
    a.sync(&[], 0);
    let n = requests(&a, "s3");
    assert!(n["put"].as_u64().unwrap() > 10, "in parts: {n}");
    b.sync(&[], 0);
    // The same rows (a database travels as a snapshot, not byte for byte).
    let rows = |p: &std::path::Path| {
        let c = rusqlite::Connection::open(p).unwrap();
        let ok: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok", "{}", p.display());
        let mut q = c.prepare("SELECT id, data FROM blobs ORDER BY id").unwrap();
        let all: Vec<(i64, Vec<u8>)> = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        all
    };
    let there = rows(&b.file("big.db"));
    assert_eq!(there.len(), 200);
    assert!(
        there == rows(&db),
        "the rows that came down are the rows that went up"
    );
}

#[test]
fn the_bucket_backups_are_listed_like_plain_backups() {
    let Some(moto) = server() else { return };
    let w = World::new();
    let (a, b) = two_versions(&moto, &w, "");
    let key = moto
        .keys("shared")
        .into_iter()
        .find(|k| k.starts_with("meta/sorting-rules.yaml.backup-"))
        .unwrap();
    let id = format!("s3:{}", key.strip_prefix("meta/").unwrap());
    for m in [&a, &b] {
        let (code, list) = m.json(&["backups", "--location", "s3"]);
        assert_eq!(code, 0, "{list:#}");
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 1, "one backup object: {list:#?}");
        assert_eq!(list[0]["id"], id.as_str());
        assert_eq!(list[0]["file"], RULES);
        assert_eq!(list[0]["location"], "s3");
        assert_eq!(list[0]["size"], "rules: v1\n".len());
        assert_eq!(list[0]["stored"], false);
        assert!(
            list[0]["created"].as_str().unwrap().len() >= 19,
            "{list:#?}"
        );
        let (_, by_file) = m.json(&["backups", RULES]);
        assert!(by_file.to_string().contains(&id), "{by_file:#}");
        let (code, history) = m.json(&["history", RULES]);
        assert_eq!(code, 0, "{history:#}");
        assert!(history.to_string().contains(&id), "{history:#}");
    }
    // With counts asked, the object is read for its hash: the one its bytes give.
    let (_, counted) = b.json(&["backups", "--location", "s3", "--counts"]);
    let expected = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(b"rules: v1\n");
        digest
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    };
    assert_eq!(counted[0]["sha256"], expected.as_str(), "{counted:#}");
}

#[test]
fn a_bucket_backup_is_restored_into_local_and_the_next_sync_carries_it_everywhere() {
    let Some(moto) = server() else { return };
    let w = World::new();
    let (a, b) = two_versions(&moto, &w, "");
    let (_, list) = b.json(&["backups", "--location", "s3"]);
    let id = list[0]["id"].as_str().unwrap().to_string();
    let (code, r) = b.json(&["restore", &id]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(
        r["restored_to"],
        b.file(RULES).display().to_string(),
        "restored in local, not in the store's mirror: {r:#}"
    );
    assert_eq!(read(&b.file(RULES)), "rules: v1\n");
    b.sync(&[], 0);
    assert_eq!(moto.get("shared", "meta/sorting-rules.yaml"), "rules: v1\n");
    a.sync(&[], 0);
    assert_eq!(read(&a.file(RULES)), "rules: v1\n");
    let r = b.sync(&[], 0);
    assert_eq!(r["actions"].as_array().unwrap().len(), 0, "{r:#}");

    // --to writes the version to a new file outside every location. The backup object has
    // moved into the bucket's store meanwhile (b's run made v2 a backup object too), under
    // its name.
    let stored = id.replacen("s3:", "s3:history:", 1);
    let to = w.path("restored-v1.yaml");
    let (code, r) = a.json(&["restore", &stored, "--to", to.to_str().unwrap()]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(read(&to), "rules: v1\n");
}

#[test]
fn retention_thins_the_bucket_backups_of_the_files_a_run_wrote() {
    let Some(moto) = server() else { return };
    let w = World::new();
    let extra = "[backups]\nkeep_last = 2\nretention = \"none\"\n";
    let (a, _b) = two_versions(&moto, &w, extra);
    for (v, age) in [
        ("rules: v3\n", 40),
        ("rules: v4\n", 30),
        ("rules: v5\n", 20),
    ] {
        write_aged(&a.file(RULES), v, age);
        a.sync(&[], 0);
    }
    assert_eq!(
        backup_objects(&moto),
        ["rules: v4\n"],
        "the newest backup object stays, the older ones are deleted or stored"
    );
    let keys = moto.keys("shared");
    let manifests = keys
        .iter()
        .filter(|k| k.starts_with("meta/.metasync/history/manifests/"))
        .count();
    assert_eq!(manifests, 1, "v3, the second newest, is stored: {keys:?}");
    assert!(
        keys.contains(&"meta/sorting-rules.yaml".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"meta/.metasync-location".to_string()),
        "{keys:?}"
    );
    assert_eq!(moto.get("shared", "meta/sorting-rules.yaml"), "rules: v5\n");
    // A no-op run deletes nothing and costs one listing.
    a.sync(&[], 0);
    let n = requests(&a, "s3");
    assert_eq!(
        (n["list"].as_u64(), n["delete"].as_u64()),
        (Some(1), Some(0)),
        "{n}"
    );
}
