//! Object-store locations against a real S3-compatible server (`moto_server`, started on a
//! free loopback port): machines that share nothing but the bucket, conflicts, a bucket with
//! a folder remote, unreachable or wrong stores, lost races, concurrent machines.

mod common;
use common::moto::Moto;
use common::*;

const RULES: &str = "sorting-rules.yaml";

/// The server, with test credentials in the environment every `metasync` inherits (moto
/// takes any); `None`: skipped (see `Moto::start`).
fn server() -> Option<Moto> {
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    Moto::start()
}

/// The requests the last run of `m` made to the store `name`.
fn requests(m: &Machine, name: &str) -> serde_json::Value {
    let path = m.home.join(format!(".metasync/stores/{name}.stats.json"));
    serde_json::from_str(&read(&path)).unwrap()
}

#[test]
fn round_trip_between_machines_sharing_only_the_bucket() {
    let Some(moto) = server() else { return };
    moto.create_bucket("shared");
    let w = World::new();
    let loc = moto.location("s3", "shared", "meta");
    let a = w.machine("a", &[], &loc);
    let b = w.machine("b", &[], &loc);
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
