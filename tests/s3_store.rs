//! The compact history store in the bucket (SPEC §5 "History", §7 object stores), against a
//! real S3-compatible server (`moto_server`):
//!
//! 1. A machine syncs many versions of a database (the engine's clock simulated) until
//!    retention moves them into the store: the bucket then holds packs and manifests under
//!    `.metasync/history/` and fewer backup objects; a second machine sharing only the bucket
//!    lists the stored versions and restores them byte-exact (`restore --to` and `restore`).
//! 2. A run killed between the upload of the packs and of the manifest, and between the
//!    manifest and the deletion of the backup object: the next run converges, and every
//!    version is still restorable.
//! 3. A no-op run is still one listing, with the store in the bucket.

mod common;
use common::s3::*;
use common::*;
use metasync::clock::Clock;
use std::collections::BTreeMap;

const DB: &str = "metastore.db";

/// The bucket's keys under the prefix `meta/` of the bucket `shared`, with their sizes.
fn bucket(moto: &common::moto::Moto) -> BTreeMap<String, usize> {
    moto.keys("shared")
        .into_iter()
        .map(|k| {
            let n = get_bytes(moto, "shared", &k).len();
            (k, n)
        })
        .collect()
}

fn history_keys(keys: &BTreeMap<String, usize>, ext: &str) -> Vec<String> {
    keys.keys()
        .filter(|k| k.starts_with("meta/.metasync/history/") && k.ends_with(ext))
        .cloned()
        .collect()
}

fn object_keys(keys: &BTreeMap<String, usize>, file: &str) -> Vec<String> {
    let prefix = format!("meta/{file}.backup-");
    keys.keys()
        .filter(|k| k.starts_with(&prefix))
        .cloned()
        .collect()
}

fn created(b: &serde_json::Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(b["created"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc)
}

/// `n` versions of a knowledge graph synced by `a` into the bucket five simulated minutes
/// apart (one row changed before each); the logical hash each backup holds, by the time it
/// was made.
fn five_minute_versions(a: &Machine, n: u64) -> BTreeMap<chrono::DateTime<chrono::Utc>, String> {
    let entities = 700;
    metasync::sample::create_knowledge_graph(&a.file(DB), entities, entities / 10).unwrap();
    let (engine, clock) = clocked_engine(a, chrono::Duration::minutes(5 * n as i64));
    let sync = || {
        let r = run_ok(&engine);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    };
    sync();
    let mut expected = BTreeMap::new();
    let mut previous = logical(&a.file(DB));
    for rep in 0..n {
        change_one_row(&a.file(DB), rep, entities);
        clock.advance(chrono::Duration::minutes(5));
        sync();
        expected.insert(clock.now(), previous);
        previous = logical(&a.file(DB));
    }
    expected
}

#[test]
fn versions_move_into_the_bucket_store_and_another_machine_restores_them() {
    let Some(moto) = server() else { return };
    let w = World::new();
    let (a, b) = on_bucket(&moto, &w, "files = [\"metastore.db\"]\n");
    let n: u64 = std::env::var("METASYNC_S3_VERSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let expected = five_minute_versions(&a, n);

    let keys = bucket(&moto);
    let packs = history_keys(&keys, ".pack");
    let manifests = history_keys(&keys, ".json");
    let objects = object_keys(&keys, DB);
    let bytes = |ks: &[String]| ks.iter().map(|k| keys[k]).sum::<usize>();
    println!(
        "bucket after {n} versions: {} backup object(s) {} B, {} pack(s) {} B, {} manifest(s) {} B",
        objects.len(),
        bytes(&objects),
        packs.len(),
        bytes(&packs),
        manifests.len(),
        bytes(&manifests)
    );
    assert!(!packs.is_empty(), "packs in the bucket: {keys:#?}");
    assert!(manifests.len() >= 4, "the keep_last stored: {keys:#?}");
    assert!(
        objects.len() <= 1,
        "the older versions are no longer backup objects: {objects:#?}"
    );

    // Machine b shares only the bucket.
    b.sync(&[], 0);
    assert_eq!(logical(&b.file(DB)), logical(&a.file(DB)));
    let (code, list) = b.json(&["backups", DB, "--location", "s3"]);
    assert_eq!(code, 0, "{list:#}");
    let stored: Vec<&serde_json::Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["stored"] == true)
        .collect();
    assert_eq!(stored.len(), manifests.len(), "{list:#}");
    for e in &stored {
        assert_eq!(e["location"], "s3", "{e:#}");
        let want = expected
            .get(&created(e))
            .unwrap_or_else(|| panic!("made at no known time: {e:#}"));
        assert_eq!(e["sha256"].as_str(), Some(want.as_str()), "{e:#}");
        assert!(e.get("protected").is_some(), "{e:#}");
    }
    // Every one rebuilds on b from the bucket's packs (some rewritten by a repack).
    for (i, e) in stored.iter().enumerate() {
        let to = w.path(&format!("b-{i}.db"));
        let id = e["id"].as_str().unwrap();
        let out = b.run(&["restore", id, "--to", to.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(logical(&to), expected[&created(e)], "{id}");
    }
    // The oldest: its pages are spread over the most packs.
    let oldest = stored.iter().min_by_key(|e| created(e)).unwrap();
    let id = oldest["id"].as_str().unwrap();
    let on_b = w.path("on-b.db");
    let out = b.run(&["restore", id, "--to", on_b.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let on_a = w.path("on-a.db");
    let out = a.run(&["restore", id, "--to", on_a.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&on_b).unwrap(),
        std::fs::read(&on_a).unwrap(),
        "byte-exact on both machines"
    );
    assert_eq!(&logical(&on_b), &expected[&created(oldest)]);

    // Put back into b's folder (not its mirror of the bucket).
    let (code, r) = b.json(&["restore", id]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["restored_to"], b.file(DB).display().to_string(), "{r:#}");
    assert_eq!(logical(&b.file(DB)), expected[&created(oldest)]);
}

/// Versions of the rules file, each synced by `a` (real time: the `keep_last` of them
/// past the newest are stored).
const STORE_ALL: &str = "[backups]\nkeep_last = 20\nplain_last = 1\nretention = \"none\"\n";

fn version(i: usize) -> String {
    format!(
        "rules v{i}\n{}",
        format!("line {i} of the rules\n").repeat(3000)
    )
}

/// Every version of the rules file `m` lists, restored with `restore --to`.
fn restorable(m: &Machine, w: &World, tag: &str) -> Vec<String> {
    restore_each(m, w, &[RULES, "--location", "s3"], tag)
        .into_iter()
        .map(|(_, bytes)| String::from_utf8(bytes).unwrap())
        .collect()
}

/// The conflict losers `m` lists among the rules file's versions in the bucket.
fn losers_listed(m: &Machine) -> (serde_json::Value, Vec<serde_json::Value>) {
    let (_, list) = m.json(&["backups", RULES, "--location", "s3"]);
    let losers = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["protected"] == "conflict_loser")
        .cloned()
        .collect();
    (list, losers)
}

/// A crash at `point` during the run that moves a version into the bucket's store: the next
/// run converges, and every version stays restorable on another machine.
fn crash_at(point: &str) {
    let Some(moto) = server() else { return };
    let w = World::new();
    let (a, b) = on_bucket(&moto, &w, STORE_ALL);
    for i in 0..3 {
        write_aged(&a.file(RULES), &version(i), 100 - i as u64 * 10);
        a.sync(&[], 0);
    }
    write_aged(&a.file(RULES), &version(3), 50);
    let packs_before = history_keys(&bucket(&moto), ".pack").len();
    let out = a
        .cmd(&["sync"])
        .env("METASYNC_FAILPOINT", point)
        .env("METASYNC_LEASE_SECS", "2")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("failpoint {point} hit")),
        "{point}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys = bucket(&moto);
    assert!(
        history_keys(&keys, ".pack").len() > packs_before,
        "{point}: v1's pack was published: {keys:#?}"
    );
    // The crashed run's lease expires.
    while moto.keys("shared").contains(&LEASE_KEY.to_string()) && lease_expiry(&moto) >= now_secs()
    {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    a.sync(&[], 0);
    let keys = bucket(&moto);
    let manifests = history_keys(&keys, ".json");
    let objects = object_keys(&keys, RULES);
    assert_eq!(manifests.len(), 2, "{point}: v0 and v1 stored: {keys:#?}");
    assert_eq!(
        objects.len(),
        1,
        "{point}: only v2 is a backup object: {keys:#?}"
    );
    b.sync(&[], 0);
    let mut got = restorable(&b, &w, point);
    got.sort();
    let mut want: Vec<String> = (0..3).map(version).collect();
    want.sort();
    assert_eq!(got, want, "{point}: every version restorable on b");
}

#[test]
fn a_crash_between_packs_and_manifest_loses_nothing() {
    crash_at("bucket_before_manifest");
}

#[test]
fn a_crash_between_manifest_and_object_delete_loses_nothing() {
    crash_at("bucket_before_object_delete");
}

#[test]
fn a_no_op_run_is_one_listing_with_the_store_in_the_bucket() {
    let Some(moto) = server() else { return };
    let w = World::new();
    let (a, b) = on_bucket(&moto, &w, STORE_ALL);
    for i in 0..4 {
        write_aged(&a.file(RULES), &version(i), 100 - i as u64 * 10);
        a.sync(&[], 0);
    }
    assert!(
        !history_keys(&bucket(&moto), ".json").is_empty(),
        "versions stored in the bucket"
    );
    for m in [&a, &b] {
        m.sync(&[], 0);
        m.sync(&[], 0);
        let n = requests(m, "s3");
        assert_eq!(
            (n["list"].as_u64(), n["get"].as_u64(), n["put"].as_u64()),
            (Some(1), Some(0), Some(0)),
            "a no-op is one listing: {n}"
        );
    }
}

/// The pack keys of the bucket, and the unused marks.
fn packs_and_marks(moto: &common::moto::Moto) -> (Vec<String>, Vec<String>) {
    let keys = bucket(moto);
    (history_keys(&keys, ".pack"), history_keys(&keys, ".unused"))
}

#[test]
fn packs_no_version_needs_are_marked_then_deleted_after_the_grace() {
    let Some(moto) = server() else { return };
    let w = World::new();
    let keep_two = "[backups]\nkeep_last = 2\nplain_last = 1\nretention = \"none\"\n";
    let (a, b) = on_bucket(&moto, &w, keep_two);
    let (engine, clock) = clocked_engine(&a, chrono::Duration::hours(10));
    let sync = |i: usize| {
        std::fs::write(a.file(RULES), version(i)).unwrap();
        clock.advance(chrono::Duration::minutes(5));
        let r = engine
            .run(&metasync::RunOptions::default(), &mut |_| {})
            .unwrap();
        assert_eq!(r.exit_code, 0, "{:?} {:?}", r.errors, r.warnings);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    };
    // v0 and v1 become backup objects, v0 moves into the store (the second newest).
    for i in 0..3 {
        sync(i);
    }
    let (packs, marks) = packs_and_marks(&moto);
    assert_eq!((packs.len(), marks.len()), (1, 0), "v0's pack: {packs:?}");
    // v1 is stored, v0 (third newest) goes: its pack is no longer needed, and is marked.
    sync(3);
    let (after, marks) = packs_and_marks(&moto);
    assert!(
        after.contains(&packs[0]),
        "marked, not deleted yet: {after:?}"
    );
    assert_eq!(marks.len(), 1, "{after:?}");
    assert!(
        marks[0].starts_with(&packs[0].replace(".pack", ".")),
        "{after:?}"
    );
    // Within the grace it stays; past it, the next run deletes it and its mark.
    clock.advance(chrono::Duration::minutes(30));
    sync(4);
    assert!(packs_and_marks(&moto).0.contains(&packs[0]));
    clock.advance(chrono::Duration::hours(2));
    sync(5);
    let (left, marks) = packs_and_marks(&moto);
    assert!(
        !left.contains(&packs[0]),
        "deleted after the grace: {left:?}"
    );
    assert!(
        marks
            .iter()
            .all(|m| !m.starts_with(&packs[0].replace(".pack", ""))),
        "{marks:?}"
    );
    // What is left still restores on another machine.
    b.sync(&[], 0);
    let got = restorable(&b, &w, "left");
    assert_eq!(
        got,
        [version(4), version(3)],
        "v4 a backup object, v3 stored"
    );
}

#[test]
fn a_conflict_losers_protection_is_known_to_every_machine_and_follows_it_into_the_store() {
    let Some(moto) = server() else { return };
    let w = World::new();
    let (a, b) = on_bucket(
        &moto,
        &w,
        "[backups]\nkeep_last = 1\nretention = \"none\"\n",
    );
    write_aged(&a.file(RULES), "base\n", 600);
    a.sync(&[], 0);
    b.sync(&[], 0);
    write_aged(&a.file(RULES), "from a, older\n", 400);
    write_aged(&b.file(RULES), "from b, newer\n", 300);
    a.sync(&[], 0);
    b.sync(&[], 0);
    // b made the loser's backup object; a knows it is protected from the listing alone.
    let (list, losers) = losers_listed(&a);
    assert_eq!(losers.len(), 1, "{list:#}");
    assert_eq!(losers[0]["stored"], false, "{list:#}");
    // a takes b's version, then edits it: under `retention = "none"` the loser outlives
    // those ordinary versions, moved into the store by a.
    a.sync(&[], 0);
    assert_eq!(read(&a.file(RULES)), "from b, newer\n");
    for i in 0..3u64 {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        write_aged(&a.file(RULES), &format!("later edit {i}\n"), 200 - i * 20);
        a.sync(&[], 0);
    }
    let (list, losers) = losers_listed(&b);
    assert_eq!(losers.len(), 1, "{list:#}");
    assert_eq!(losers[0]["stored"], true, "{list:#}");
    let out = w.path("loser");
    let id = losers[0]["id"].as_str().unwrap();
    let r = b.run(&["restore", id, "--to", out.to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(read(&out), "from a, older\n");
}
