//! One object-store location's session: its S3 client (the `object_store` crate, driven by a
//! small runtime of its own), the mirror's index, the run's lease, and request counts.

use super::mirror::Index;
use super::{credentials, lease, StoreSpec};
use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum, S3ConditionalPut};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectMeta, RetryConfig};
use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Requests a run made, by kind (a benchmark's measure: S3 bills and limits per request).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    pub list: u64,
    pub get: u64,
    pub head: u64,
    pub put: u64,
    pub delete: u64,
    pub bytes_down: u64,
    pub bytes_up: u64,
}

pub(crate) struct Session {
    pub(super) spec: StoreSpec,
    pub(super) name: String,
    runtime: tokio::runtime::Runtime,
    pub(super) s3: Arc<AmazonS3>,
    /// What built `s3`: the lease's renewer builds its own client from it (a client's
    /// connections belong to the runtime that made them).
    pub(super) builder: AmazonS3Builder,
    pub(super) stats: Stats,
    pub(super) index: Index,
    pub(super) index_path: PathBuf,
    pub(super) mirror: PathBuf,
    /// Who this run is, in the lease.
    pub(super) owner: String,
    pub(super) lease: lease::Lease,
    /// Synced keys that changed in the bucket between the scan and the lease.
    pub(super) moved: HashSet<String>,
    pub(super) selector: Option<crate::select::Selector>,
    /// The backup objects under the prefix, by path relative to it (from the last listing,
    /// and the ones this run put).
    pub(super) backups: std::collections::BTreeMap<String, super::BucketBackup>,
    /// The synced files this run published.
    pub(super) touched: std::collections::BTreeSet<String>,
    /// The history store's objects under the prefix (from the last listing, and this run's).
    pub(super) history: std::collections::BTreeMap<String, super::history::Listed>,
    /// The backups this run put: the mirror's name, and the object's.
    pub(super) put_backups: Vec<(String, String)>,
    /// The bucket's manifests the mirror holds, as fetched or published.
    pub(super) history_index: super::history::HistoryIndex,
    /// Between `begin_run` and `end_run`.
    running: bool,
}

impl Session {
    /// A client for `spec` with the location's credentials; `Err`: why it cannot be used.
    pub(super) fn open(home: &Path, name: &str, spec: &StoreSpec) -> Result<Session, String> {
        let creds = credentials::for_location(name).map_err(|e| format!("{}: {e}", spec.url()))?;
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&spec.bucket)
            .with_region(spec.region.as_deref().unwrap_or("us-east-1"))
            .with_access_key_id(&creds.key_id)
            .with_secret_access_key(&creds.secret)
            .with_checksum_algorithm(Checksum::SHA256)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(20),
                ..RetryConfig::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(600)),
            )
            // After the client options, which would reset it.
            .with_allow_http(spec.allow_http);
        if let Some(t) = &creds.token {
            b = b.with_token(t);
        }
        if let Some(e) = &spec.endpoint {
            b = b.with_endpoint(e);
        }
        let s3 = b
            .clone()
            .build()
            .map_err(|e| format!("{}: cannot set up the client: {e}", spec.url()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("{}: cannot start its runtime: {e}", spec.url()))?;
        let stores = home.join(crate::names::STATE_DIR).join("stores");
        let index_path = stores.join(format!("{name}.index.json"));
        Ok(Session {
            spec: spec.clone(),
            name: name.to_string(),
            runtime,
            s3: Arc::new(s3),
            builder: b,
            stats: Stats::default(),
            index: Index::load(&index_path),
            index_path,
            mirror: super::mirror_root(home, name),
            owner: format!("{}-{}", host_name(), crate::ids::random_hex(8)),
            lease: lease::Lease::None,
            moved: HashSet::new(),
            selector: None,
            backups: Default::default(),
            touched: Default::default(),
            history: Default::default(),
            put_backups: Vec::new(),
            history_index: Default::default(),
            running: false,
        })
        .map(|mut s| {
            s.load_history_index();
            s
        })
    }

    /// Runs a request to completion (on a thread of its own when called from inside an
    /// async runtime, where blocking on one is not allowed).
    pub(super) fn block<F>(&self, f: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                s.spawn(|| self.runtime.block_on(f))
                    .join()
                    .expect("an object-store request panicked")
            })
        } else {
            self.runtime.block_on(f)
        }
    }

    /// The object key of a path relative to the prefix.
    pub(super) fn key(&self, rel: &str) -> ObjectPath {
        let parts = self.spec.prefix.split('/').chain(rel.split('/'));
        ObjectPath::from_iter(parts.filter(|p| !p.is_empty()))
    }

    /// A key relative to the prefix; `None` for one outside it.
    pub(super) fn rel(&self, key: &ObjectPath) -> Option<String> {
        let key = key.as_ref();
        if self.spec.prefix.is_empty() {
            return Some(key.to_string());
        }
        key.strip_prefix(self.spec.prefix.as_str())?
            .strip_prefix('/')
            .map(str::to_string)
    }

    /// Every object under the prefix (one listing: a request per 1000 objects).
    pub(super) fn list_all(&mut self) -> Result<Vec<ObjectMeta>, String> {
        use futures_util::TryStreamExt;
        self.stats.list += 1;
        let prefix = (!self.spec.prefix.is_empty()).then(|| self.key(""));
        let s3 = self.s3.clone();
        let listed = self.block(async move {
            object_store::ObjectStore::list(s3.as_ref(), prefix.as_ref())
                .try_collect::<Vec<_>>()
                .await
        });
        listed.map_err(|e| self.describe(&e, "list"))
    }

    /// What went wrong with a request, in words a person can act on.
    pub(super) fn describe(&self, e: &object_store::Error, op: &str) -> String {
        let text = format!("{e:?}");
        let has = |s: &str| text.contains(s);
        let what = if has("NoSuchBucket")
            || (op == "list" && matches!(e, object_store::Error::NotFound { .. }))
        {
            format!("no such bucket `{}`", self.spec.bucket)
        } else if has("InvalidAccessKeyId")
            || has("SignatureDoesNotMatch")
            || has("AccessDenied")
            || matches!(
                e,
                object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
            )
        {
            "access denied (are the credentials right?)".to_string()
        } else if has("Connect") || has("connect") || has("dns error") || has("timed out") {
            let endpoint = self.spec.endpoint.as_deref().unwrap_or("AWS S3");
            format!("endpoint unreachable ({endpoint})")
        } else {
            format!("{op} failed")
        };
        format!("{}: {what}: {}", self.spec.url(), chain(e))
    }

    /// Starts a run: counts from zero, no lease, nothing moved.
    pub(super) fn begin_run(&mut self) {
        // A lease still held (a run that did not end through `end_run`) is given back.
        self.release_lease();
        self.stats = Stats::default();
        self.moved.clear();
        self.touched.clear();
        self.put_backups.clear();
        self.running = true;
    }

    /// Ends a run: the lease released, the run's request counts written beside the mirror.
    pub(super) fn end_run(&mut self) {
        if !std::mem::replace(&mut self.running, false) {
            return;
        }
        self.release_lease();
        let path = self
            .index_path
            .with_file_name(format!("{}.stats.json", self.name));
        // Diagnostics, not state: written plainly, without an fsync.
        if let Ok(text) = serde_json::to_vec_pretty(&self.stats) {
            let _ = std::fs::write(&path, text);
        }
        let s = &self.stats;
        let total = s.list + s.get + s.head + s.put + s.delete;
        tracing::info!(target: "metasync", "{}: {total} request(s) to {} ({s:?})", self.name, self.spec.url());
    }
}

/// An error with its causes, innermost last (deduplicated: clients repeat their sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut at = e.source();
    while let Some(s) = at {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        at = s.source();
    }
    out
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "machine".into())
}
