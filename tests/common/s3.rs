//! Set-up shared by the object-store tests: the server with test credentials, machines on
//! one bucket, a run paused at a point of its lease, and what the bucket and a run say.

use super::moto::Moto;
use super::*;

pub const RULES: &str = "sorting-rules.yaml";

/// The server, with test credentials in the environment every `metasync` inherits (moto
/// takes any); `None`: skipped (see `Moto::start`).
pub fn server() -> Option<Moto> {
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    Moto::start()
}

/// The requests the last run of `m` made to the store `name`.
pub fn requests(m: &Machine, name: &str) -> serde_json::Value {
    let path = m.home.join(format!(".metasync/stores/{name}.stats.json"));
    serde_json::from_str(&read(&path)).unwrap()
}

/// The contents of the backup objects of the rules file.
pub fn backup_objects(moto: &Moto) -> Vec<String> {
    moto.keys("shared")
        .iter()
        .filter(|k| k.starts_with("meta/sorting-rules.yaml.backup-"))
        .map(|k| moto.get("shared", k))
        .collect()
}

/// The run's warnings, joined.
pub fn warnings(r: &serde_json::Value) -> String {
    r["warnings"].to_string()
}

/// `sync --json` on `m`, stopped at `point` (see `METASYNC_STORE_PAUSE`) until `go`.
pub struct Paused {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Paused {
    pub fn start(m: &Machine, point: &str) -> Paused {
        Paused::start_with(m, point, &[])
    }

    /// [`Paused::start`] with more environment for the run.
    pub fn start_with(m: &Machine, point: &str, env: &[(&str, &str)]) -> Paused {
        let dir = tempfile::tempdir().unwrap();
        let child = m
            .cmd(&["--json", "sync"])
            .envs(env.iter().copied())
            .env(
                "METASYNC_STORE_PAUSE",
                format!("{point}:{}", dir.path().display()),
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut p = Paused { child, dir };
        while !p.dir.path().join("reached").exists() {
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!("the run ended ({status}) before it reached {point}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        p
    }

    /// Lets it go on; its exit code and report.
    pub fn finish(self) -> (i32, serde_json::Value) {
        std::fs::write(self.dir.path().join("go"), "").unwrap();
        let out = self.child.wait_with_output().unwrap();
        let r = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap_or(-1), r)
    }
}

/// Two machines in sync on `v1` through one bucket.
pub fn pair(moto: &Moto, w: &World) -> (Machine, Machine) {
    let (a, b) = on_bucket(moto, w, "");
    write_aged(&a.file(RULES), "v1\n", 1000);
    a.sync(&[], 0);
    b.sync(&[], 0);
    (a, b)
}

pub const KEY: &str = "meta/sorting-rules.yaml";

/// Machines `a` and `b` on the bucket `shared`, with the rules file at v1 then v2 synced
/// through it by `a` (and `b` up to date): the bucket keeps v1 as a backup object.
pub fn two_versions(moto: &Moto, w: &World, extra: &str) -> (Machine, Machine) {
    let (a, b) = on_bucket(moto, w, extra);
    write_aged(&a.file(RULES), "rules: v1\n", 100);
    a.sync(&[], 0);
    b.sync(&[], 0);
    write_aged(&a.file(RULES), "rules: v2\n", 50);
    a.sync(&[], 0);
    b.sync(&[], 0);
    assert_eq!(read(&b.file(RULES)), "rules: v2\n");
    assert_eq!(backup_objects(moto), ["rules: v1\n"]);
    (a, b)
}

/// Machines `a` and `b` sharing nothing but the new bucket `shared` (the location `s3` on
/// its prefix `meta`), with `extra` config lines before it.
pub fn on_bucket(moto: &Moto, w: &World, extra: &str) -> (Machine, Machine) {
    moto.create_bucket("shared");
    let loc = format!("{extra}\n{}", moto.location("s3", "shared", "meta"));
    (w.machine("a", &[], &loc), w.machine("b", &[], &loc))
}

/// `sync --json` on `m` with more environment; asserts it exits 0.
pub fn sync_with(m: &Machine, env: &[(&str, &str)]) -> serde_json::Value {
    let out = m
        .cmd(&["--json", "sync"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{r:#}");
    r
}

/// The lease object of the location `s3` on `shared/meta`.
pub const LEASE_KEY: &str = "meta/.metasync-lease";

/// The expiry (seconds since the epoch) the lease in the bucket says.
pub fn lease_expiry(moto: &Moto) -> u64 {
    let text = moto.get("shared", LEASE_KEY);
    text.lines()
        .find_map(|l| l.strip_prefix("expires = "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no lease in the bucket: {text:?}"))
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A signed client of `bucket` on `moto` (it takes any key).
fn client(moto: &Moto, bucket: &str) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .with_endpoint(moto.endpoint())
        .with_allow_http(true)
        .build()
        .expect("an S3 client")
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

/// The bytes of the object at `key` of `bucket`.
pub fn get_bytes(moto: &Moto, bucket: &str, key: &str) -> Vec<u8> {
    use object_store::ObjectStoreExt;
    let s3 = client(moto, bucket);
    block(async move { s3.get(&key.into()).await?.bytes().await })
        .expect("get")
        .to_vec()
}

/// Another writer: puts the bytes `body` at `key` of `bucket`.
pub fn put_bytes(moto: &Moto, bucket: &str, key: &str, body: Vec<u8>) {
    use object_store::ObjectStoreExt;
    let s3 = client(moto, bucket);
    block(async move { s3.put(&key.into(), body.into()).await }).expect("put");
}
