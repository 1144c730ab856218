//! A real S3-compatible server for the object-store tests: `moto_server` (PyPI
//! `moto[server]`, installed by `scripts/deps`) on a free loopback port, killed on drop.
//! Without it the tests skip with a loud message, unless `CI` is set: there they must run.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `moto_server`.
pub struct Moto {
    child: Option<Child>,
    pub port: u16,
    env: Vec<(String, String)>,
}

impl Moto {
    /// Starts one; `None` (after saying so on stderr) when `moto_server` is missing outside CI.
    pub fn start() -> Option<Moto> {
        Moto::start_with(&[])
    }

    /// One that checks credentials: after the first (unsigned) request, which may create a
    /// bucket, only keys it knows (none) are accepted.
    pub fn start_checking_keys() -> Option<Moto> {
        Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "1")])
    }

    fn start_with(env: &[(&str, &str)]) -> Option<Moto> {
        let found = Command::new("moto_server")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            if std::env::var_os("CI").is_some() {
                panic!("moto_server is missing: run scripts/deps (pip install 'moto[server]')");
            }
            eprintln!(
                "\n*** SKIPPED: moto_server is not installed (pip install 'moto[server]'); \
                 the object-store tests did not run ***\n"
            );
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut m = Moto {
            child: None,
            port,
            env,
        };
        m.restart();
        Some(m)
    }

    /// (Re)starts the server on its port and waits until it answers.
    pub fn restart(&mut self) {
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        self.child = Some(child);
        for _ in 0..600 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("moto_server did not listen on port {}", self.port);
    }

    /// Kills the server (its buckets are gone with it).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (moto takes unsigned requests).
    pub fn create_bucket(&self, bucket: &str) {
        let reply = self.request("PUT", &format!("/{bucket}"));
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "create bucket {bucket}: {reply}"
        );
    }

    /// The keys in `bucket` (unsigned ListObjectsV2), sorted.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let reply = self.request("GET", &format!("/{bucket}?list-type=2"));
        let mut keys: Vec<String> = reply
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect();
        keys.sort();
        keys
    }

    /// Another writer, paying no heed to leases: puts `body` at `key` of `bucket`.
    pub fn put(&self, bucket: &str, key: &str, body: &str) {
        use object_store::ObjectStoreExt;
        let s3 = self.client(bucket);
        let body = body.as_bytes().to_vec();
        block(async move { s3.put(&key.into(), body.into()).await }).expect("put");
    }

    /// The object at `key` of `bucket` ("" when there is none).
    pub fn get(&self, bucket: &str, key: &str) -> String {
        use object_store::ObjectStoreExt;
        let s3 = self.client(bucket);
        let got = block(async move {
            match s3.get(&key.into()).await {
                Ok(r) => r.bytes().await.map(|b| b.to_vec()),
                Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
                Err(e) => Err(e),
            }
        });
        String::from_utf8_lossy(&got.expect("get")).into_owned()
    }

    /// A signed client of `bucket` (moto takes any key).
    fn client(&self, bucket: &str) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .build()
            .expect("an S3 client")
    }

    /// One plain HTTP request; the whole reply.
    fn request(&self, method: &str, path: &str) -> String {
        self.send(method, path, "")
    }

    fn send(&self, method: &str, path: &str, body: &str) -> String {
        // Unsigned: moto takes these for buckets and listings, not for objects.
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// The config lines of a location `name` on `s3://bucket/prefix` at this server.
    pub fn location(&self, name: &str, bucket: &str, prefix: &str) -> String {
        format!(
            "[[locations]]\nname = \"{name}\"\nurl = \"s3://{bucket}/{prefix}\"\nendpoint = \"{}\"\n\
             region = \"us-east-1\"\nallow_http = true\n",
            self.endpoint()
        )
    }
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}
