//! The history an object store keeps as backup objects, against a real S3-compatible server
//! (`moto_server`): `prune` and its dry run thin the bucket too.

mod common;
use common::s3::*;
use common::*;

#[test]
fn prune_and_its_dry_run_thin_the_bucket_backups_too() {
    let Some(moto) = server() else { return };
    let w = World::new();
    let (a, _b) = on_bucket(
        &moto,
        &w,
        "[backups]\nkeep_last = 5\nretention = \"none\"\n",
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
