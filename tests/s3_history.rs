//! The history an object store keeps as backup objects, against a real S3-compatible server
//! (`moto_server`): `prune` and its dry run thin the bucket too, `max_history_mb` counts the
//! objects, `status` shows their bytes, and a dry-run restore reads nothing from the bucket.

mod common;
use common::s3::*;
use common::*;

/// The sizes of the backup objects of the rules file, oldest first.
fn backup_sizes(moto: &common::moto::Moto) -> Vec<usize> {
    moto.keys("shared")
        .iter()
        .filter(|k| k.starts_with("meta/sorting-rules.yaml.backup-"))
        .map(|k| moto.get("shared", k).len())
        .collect()
}

/// The rules file at version `v`, about 600 kB.
fn big(v: u32) -> String {
    format!("rules: v{v}\n{}\n", "x".repeat(600_000))
}

#[test]
fn prune_and_its_dry_run_thin_the_bucket_backups_too() {
    let Some(moto) = server() else { return };
    let w = World::new();
    // All the kept versions plain: they stay backup objects (none moves into the store).
    let (a, _b) = on_bucket(
        &moto,
        &w,
        "[backups]\nkeep_last = 5\nplain_last = 5\nretention = \"none\"\n",
    );
    for (v, age) in [(1, 100), (2, 80), (3, 60), (4, 40)] {
        write_aged(&a.file(RULES), &format!("rules: v{v}\n"), age);
        a.sync(&[], 0);
    }
    assert_eq!(
        backup_objects(&moto).len(),
        3,
        "v1, v2 and v3 kept as objects"
    );
    // Retention tightened: only the newest backup is kept from now on.
    let config = a.file("metasync.toml");
    std::fs::write(
        &config,
        read(&config).replace("keep_last = 5", "keep_last = 1"),
    )
    .unwrap();
    let before = moto.keys("shared");

    let (code, r) = a.json(&["prune", "--dry-run"]);
    assert_eq!(code, 0, "{r:#}");
    let ids: Vec<&str> = r["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "the two older backup objects: {r:#}");
    assert!(
        ids.iter()
            .all(|id| id.starts_with("s3:sorting-rules.yaml.backup-")),
        "{r:#}"
    );
    assert_eq!(r["bytes_freed"], 2 * "rules: v1\n".len(), "{r:#}");
    assert_eq!(moto.keys("shared"), before, "a dry run deletes nothing");
    let out = a.run(&["prune", "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("would delete s3:sorting-rules.yaml.backup-"),
        "{text}"
    );

    let (code, r) = a.json(&["prune"]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["deleted"].as_array().unwrap().len(), 2, "{r:#}");
    assert_eq!(
        backup_objects(&moto),
        ["rules: v3\n"],
        "the newest backup object stays"
    );
    let keys = moto.keys("shared");
    assert!(keys.contains(&KEY.to_string()), "{keys:?}");
    assert!(
        !keys.contains(&LEASE_KEY.to_string()),
        "the lease is released: {keys:?}"
    );
}

#[test]
fn max_history_mb_counts_the_bucket_objects_and_status_shows_their_bytes() {
    let Some(moto) = server() else { return };
    let w = World::new();
    let extra = "[backups]\nkeep_last = 1\nretention = \"max_age\"\nmax_age_days = 365\n\
                 max_history_mb = 1\n";
    let (a, b) = on_bucket(&moto, &w, extra);
    for (v, age) in [(1, 100), (2, 80), (3, 60)] {
        write_aged(&a.file(RULES), &big(v), age);
        a.sync(&[], 0);
    }
    // v1 and v2 as objects would take 1.2 MB, over the 1 MB cap: the oldest went.
    assert_eq!(backup_sizes(&moto), [big(2).len()]);
    // Any machine's status shows the bucket's history.
    for m in [&a, &b] {
        let (code, s) = m.json(&["status"]);
        assert_eq!(code, 0, "{s:#}");
        let h = s["history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["location"] == "s3")
            .unwrap_or_else(|| panic!("{s:#}"))
            .clone();
        let bucket = h["bucket_bytes"].as_u64().unwrap_or(0);
        let total = h["plain_bytes"].as_u64().unwrap() + bucket;
        assert_eq!(total, big(2).len() as u64, "{h:#}");
        if m.home == b.home {
            assert_eq!(bucket, big(2).len() as u64, "b holds no plain copy: {h:#}");
        }
        assert_eq!(h["versions"], 1, "{h:#}");
    }
}

#[test]
fn a_dry_run_restore_of_a_bucket_backup_downloads_nothing() {
    let Some(moto) = server() else { return };
    let w = World::new();
    let (_a, b) = two_versions(&moto, &w, "");
    let (_, list) = b.json(&["backups", "--location", "s3"]);
    let id = list[0]["id"].as_str().unwrap().to_string();
    let (code, r) = b.json(&["restore", &id, "--dry-run"]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["dry_run"], true, "{r:#}");
    assert_eq!(r["backup"]["id"], id.as_str(), "{r:#}");
    assert_eq!(
        r["backup"]["size"],
        "rules: v1\n".len(),
        "from the listing: {r:#}"
    );
    assert_eq!(
        r["restored_to"],
        b.file(RULES).display().to_string(),
        "{r:#}"
    );
    assert_eq!(read(&b.file(RULES)), "rules: v2\n", "nothing restored");
    let n = requests(&b, "s3");
    assert_eq!(
        (n["get"].as_u64(), n["bytes_down"].as_u64()),
        (Some(0), Some(0)),
        "one listing, no download: {n}"
    );
    let out = b.run(&["restore", &id, "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("would restore {id} to")), "{text}");
    assert!(
        text.contains("downloaded and checked only when restored"),
        "{text}"
    );
}

/// A machine whose only remote is the bucket, joined after v1 was replaced by v2: it holds no
/// backup of its own, only the bucket's v1 object.
fn newcomer(moto: &common::moto::Moto, w: &World) -> Machine {
    let c = w.machine(
        "c",
        &[],
        &format!("\n{}", moto.location("s3", "shared", "meta")),
    );
    c.sync(&[], 0);
    assert_eq!(read(&c.file(RULES)), "rules: v2\n");
    c
}

#[test]
fn diff_by_default_compares_with_the_newest_bucket_backup() {
    let Some(moto) = server() else { return };
    let w = World::new();
    let (_a, _b) = two_versions(&moto, &w, "");
    let c = newcomer(&moto, &w);
    let (_, list) = c.json(&["backups", "--location", "s3"]);
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("s3:sorting-rules.yaml.backup-"), "{list:#}");

    let (code, d) = c.json(&["diff", RULES]);
    assert_eq!(code, 0, "{d:#}");
    assert_eq!(d["a"]["id"], id.as_str(), "the bucket's v1: {d:#}");
    assert_eq!(d["a"]["location"], "s3", "{d:#}");
    assert_eq!(d["b"]["id"], "current:local", "{d:#}");
    let unified = d["unified"].as_str().unwrap_or_default();
    assert!(
        unified.contains("-rules: v1") && unified.contains("+rules: v2"),
        "{d:#}"
    );
    let scratch = c.home.join(".metasync/tmp");
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "the download is scratch only: {left:?}");
    // Named explicitly, on either side.
    let (code, d) = c.json(&["diff", RULES, &id, "current"]);
    assert_eq!(code, 0, "{d:#}");
    assert_eq!(d["a"]["id"], id.as_str(), "{d:#}");
    let (code, d) = c.json(&["diff", RULES, "current", &id]);
    assert_eq!(code, 0, "{d:#}");
    let unified = d["unified"].as_str().unwrap_or_default();
    assert!(unified.contains("+rules: v1"), "{d:#}");
}

#[test]
fn diff_refuses_a_bucket_backup_that_fails_its_integrity_check() {
    let Some(moto) = server() else { return };
    let w = World::new();
    let extra = "files = [\"*.db\"]\n";
    let (a, _b) = on_bucket(&moto, &w, extra);
    let db = "kg.db";
    metasync::sample::create_knowledge_graph(&a.file(db), 92, 1).unwrap();
    set_age(&a.file(db), 1000);
    a.sync(&[], 0);
    exec(&a.file(db), "UPDATE entities SET name = 'v2' WHERE id = 1;");
    set_age(&a.file(db), 100);
    a.sync(&[], 0);
    let key = moto
        .keys("shared")
        .into_iter()
        .find(|k| k.starts_with("meta/kg.db.backup-"))
        .expect("v1 kept as a backup object");
    // Cut in half: the header still says SQLite, the integrity check fails.
    let mut bytes = get_bytes(&moto, "shared", &key);
    bytes.truncate(bytes.len() / 2);
    put_bytes(&moto, "shared", &key, bytes);
    let c = w.machine(
        "c",
        &[],
        &format!("{extra}\n{}", moto.location("s3", "shared", "meta")),
    );
    c.sync(&[], 0);
    let id = format!("s3:{}", key.strip_prefix("meta/").unwrap());
    for args in [vec!["diff", db], vec!["diff", db, &id, "current"]] {
        let (code, r) = c.json(&args);
        assert_ne!(code, 0, "{args:?}: {r:#}");
        let error = r["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("fails its integrity check") && error.contains(&key),
            "{args:?}: {r:#}"
        );
    }
}
