//! The lease: one object at the prefix's root that serialises the writing runs of different
//! machines on one store. Taken only when a run has something to publish (a no-op run writes
//! nothing), created only if absent (or over an expired lease's version), renewed while the
//! run holds it (a conditional put on the version it last wrote, every third of its span),
//! released at the end of the run, and it expires so that a crashed machine never blocks the
//! others. A run whose renewal finds the lease changed (another machine took it) writes no
//! more to the store. A renewal whose reply is lost after the server applied it looks like a
//! lost lease to the next one: the run then stops writing (the safe side).

use super::client::Session;
use super::{Published, LEASE};
use object_store::aws::AmazonS3;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a lease holds when its run does not renew or release it: 15 minutes, or
/// `METASYNC_LEASE_SECS` (for tests: a lease that expires, and is renewed, within seconds).
fn ttl() -> Duration {
    std::env::var("METASYNC_LEASE_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map_or(Duration::from_secs(15 * 60), Duration::from_secs)
}

/// This run's lease on the store.
pub(crate) enum Lease {
    /// Not asked for yet.
    None,
    /// Held, and renewed while held.
    Held(Renewer),
    /// Another machine holds it (or it could not be taken, or it was lost): why.
    Refused(String),
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The owner and expiry (seconds since the epoch) a lease object says.
fn parse(text: &str) -> Option<(String, u64)> {
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
    };
    Some((field("owner = ")?, field("expires = ")?.parse().ok()?))
}

/// The text of a lease held by `owner` from now on.
fn body(owner: &str) -> String {
    format!(
        "# Metasync: a run is writing to this store.\nowner = {owner}\nexpires = {}\n",
        now_secs() + ttl().as_secs()
    )
}

/// A held lease's state, shared by the run and its renewing thread.
struct State {
    /// The lease object's version this run last wrote.
    etag: String,
    /// Why the lease is no longer this run's (another machine took it).
    lost: Option<String>,
    /// When the next renewal is due.
    next: Instant,
    /// Renewals made (requests, for the run's counts).
    puts: u64,
    stop: bool,
}

/// Renews a held lease: a thread that puts it again, over the version it last wrote, every
/// third of its span; and the run itself, before a write, when a renewal is due.
pub(crate) struct Renewer {
    shared: Arc<(Mutex<State>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// What a renewal puts at, as whom, for which store (messages).
    key: ObjectPath,
    owner: String,
    url: String,
}

impl Renewer {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }

    /// Why the lease is lost, if it is.
    pub(super) fn lost(&self) -> Option<String> {
        self.lock().lost.clone()
    }

    fn signal_stop(&self) {
        self.lock().stop = true;
        self.shared.1.notify_all();
    }

    /// Stops the thread; the lease's last version and the renewals made.
    fn stop(mut self) -> (String, u64) {
        self.signal_stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let st = self.lock();
        (st.etag.clone(), st.puts)
    }
}

impl Drop for Renewer {
    /// A lease dropped unreleased (its session replaced) is renewed no more.
    fn drop(&mut self) {
        self.signal_stop();
    }
}

fn lock(shared: &(Mutex<State>, Condvar)) -> MutexGuard<'_, State> {
    shared.0.lock().unwrap_or_else(|e| e.into_inner())
}

/// One renewal, with the state locked (so the run and the thread never renew over the same
/// version at once): a conditional put over the version last written.
fn renew(st: &mut State, put: impl FnOnce(String) -> object_store::Result<String>, url: &str) {
    if st.lost.is_some() {
        return;
    }
    st.puts += 1;
    match put(st.etag.clone()) {
        Ok(etag) => {
            st.etag = etag;
            st.next = Instant::now() + ttl() / 3;
        }
        Err(
            object_store::Error::Precondition { .. }
            | object_store::Error::NotFound { .. }
            | object_store::Error::AlreadyExists { .. },
        ) => {
            st.lost = Some(format!(
                "{url}: this run lost its lease to another machine; it writes no more to this \
                 store now, and its files are synced next run"
            ));
        }
        // Tried again soon; the lease holds until it expires.
        Err(e) => {
            st.next = Instant::now() + ttl() / 12;
            tracing::warn!(target: "metasync", "{url}: cannot renew its lease: {e}");
        }
    }
}

/// Puts the lease object over `etag`: its new version.
async fn put_over(
    s3: &AmazonS3,
    key: &ObjectPath,
    owner: &str,
    etag: String,
) -> object_store::Result<String> {
    let opts = PutOptions {
        mode: PutMode::Update(UpdateVersion {
            e_tag: Some(etag),
            version: None,
        }),
        ..Default::default()
    };
    let r = s3
        .put_opts(key, body(owner).into_bytes().into(), opts)
        .await?;
    Ok(r.e_tag.unwrap_or_default())
}

/// The renewing thread: renews when a renewal is due, until stopped or the lease is lost.
fn renew_loop(shared: Arc<(Mutex<State>, Condvar)>, s3: AmazonS3, r: (ObjectPath, String, String)) {
    let (key, owner, url) = r;
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let mut st = lock(&shared);
    loop {
        if st.stop || st.lost.is_some() {
            return;
        }
        let due = st.next;
        let now = Instant::now();
        if now < due {
            st = shared
                .1
                .wait_timeout(st, due - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            continue;
        }
        renew(
            &mut st,
            |etag| rt.block_on(put_over(&s3, &key, &owner, etag)),
            &url,
        );
    }
}

/// Tells whether a held lease has been lost meanwhile.
pub(super) struct LeaseWatch(Option<Arc<(Mutex<State>, Condvar)>>);

impl LeaseWatch {
    /// Why the lease is lost, if it is.
    pub(super) fn lost(&self) -> Option<String> {
        self.0.as_ref().and_then(|s| lock(s).lost.clone())
    }
}

impl Renewer {
    /// Starts renewing the lease `session` just wrote at `etag`.
    fn start(session: &Session, etag: String) -> Renewer {
        let shared = Arc::new((
            Mutex::new(State {
                etag,
                lost: None,
                next: Instant::now() + ttl() / 3,
                puts: 0,
                stop: false,
            }),
            Condvar::new(),
        ));
        let (key, owner, url) = (
            session.key(LEASE),
            session.owner.clone(),
            session.spec.url(),
        );
        let thread = match session.builder.clone().build() {
            Ok(s3) => {
                let (sh, r) = (shared.clone(), (key.clone(), owner.clone(), url.clone()));
                Some(std::thread::spawn(move || renew_loop(sh, s3, r)))
            }
            // Renewed by the run alone then, before each write.
            Err(_) => None,
        };
        Renewer {
            shared,
            thread,
            key,
            owner,
            url,
        }
    }
}

impl Session {
    /// Takes the lease on first need (then the synced objects that moved since the scan are
    /// known: their writes are left for the next run); renews it when due; refuses once it is
    /// lost.
    pub(super) fn ensure_lease(&mut self) -> Result<(), Published> {
        if matches!(self.lease, Lease::None) {
            self.take_and_look()?;
        }
        self.check_lease()
    }

    /// Before a write: the lease renewed when due, and refused once it is lost.
    pub(super) fn check_lease(&mut self) -> Result<(), Published> {
        self.renew_if_due();
        let lost = match &self.lease {
            Lease::Held(r) => r.lost(),
            Lease::Refused(why) => return Err(Published::Raced(why.clone())),
            Lease::None => None,
        };
        let Some(why) = lost else {
            return Ok(());
        };
        tracing::warn!(target: "metasync", "{}: {why}", self.name);
        self.drop_lease();
        self.lease = Lease::Refused(why.clone());
        Err(Published::Raced(why))
    }

    /// Takes the lease; then the synced objects that moved since the scan are known.
    fn take_and_look(&mut self) -> Result<(), Published> {
        super::pause("before_lease");
        self.lease = match self.take_lease() {
            Ok(etag) => Lease::Held(Renewer::start(self, etag)),
            Err(why) => Lease::Refused(why),
        };
        if let Lease::Refused(why) = &self.lease {
            return Err(Published::Raced(why.clone()));
        }
        let Some(selector) = self.selector.clone() else {
            super::pause("lease_taken");
            return Ok(());
        };
        let now = self.listed_versions(&selector).map_err(Published::Failed)?;
        let index = &self.index.0;
        let moved = now
            .iter()
            .filter(|(rel, etag)| index.get(*rel).is_none_or(|h| &h.etag != *etag))
            .map(|(rel, _)| rel.clone())
            .chain(index.keys().filter(|k| !now.contains_key(*k)).cloned());
        self.moved = moved.collect();
        super::pause("lease_taken");
        Ok(())
    }

    /// Renews the held lease now when a renewal is due (the thread may be late).
    fn renew_if_due(&self) {
        let Lease::Held(r) = &self.lease else {
            return;
        };
        let mut st = r.lock();
        if Instant::now() < st.next {
            return;
        }
        let s3 = self.s3.clone();
        let put = |etag| self.block(put_over(&s3, &r.key, &r.owner, etag));
        renew(&mut st, put, &r.url);
    }

    /// A watch on this run's lease, for a long upload to stop on when it is lost.
    pub(super) fn lease_watch(&self) -> LeaseWatch {
        match &self.lease {
            Lease::Held(r) => LeaseWatch(Some(r.shared.clone())),
            _ => LeaseWatch(None),
        }
    }

    /// Creates the lease object, or replaces an expired one; its version.
    fn take_lease(&mut self) -> Result<String, String> {
        let body = body(&self.owner);
        match self.put_lease(&body, PutMode::Create) {
            Ok(etag) => return Ok(etag),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {}
            Err(e) => return Err(self.describe(&e, "take the lease")),
        }
        self.stats.get += 1;
        let (s3, key) = (self.s3.clone(), self.key(LEASE));
        let current = self.block(async move {
            let got = s3.get(&key).await?;
            let etag = got.meta.e_tag.clone();
            Ok::<_, object_store::Error>((got.bytes().await?, etag))
        });
        let (text, etag) = current.map_err(|e| self.describe(&e, "read the lease"))?;
        let (owner, expires) = parse(&String::from_utf8_lossy(&text)).unwrap_or_default();
        if expires > now_secs() {
            let until = crate::times::rfc3339(i128::from(expires) * 1_000_000_000);
            return Err(format!(
                "{} is in use by {owner} until {until} (its lease); its files are synced next run",
                self.spec.url()
            ));
        }
        let mode = PutMode::Update(UpdateVersion {
            e_tag: etag,
            version: None,
        });
        self.put_lease(&body, mode).map_err(|e| match e {
            object_store::Error::Precondition { .. } => format!(
                "{}: another machine took its expired lease first; its files are synced next run",
                self.spec.url()
            ),
            e => self.describe(&e, "take the lease"),
        })
    }

    fn put_lease(&mut self, body: &str, mode: PutMode) -> object_store::Result<String> {
        self.stats.put += 1;
        let (s3, key) = (self.s3.clone(), self.key(LEASE));
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        let payload = body.as_bytes().to_vec().into();
        let put = self.block(async move { s3.put_opts(&key, payload, opts).await });
        put.map(|r| r.e_tag.unwrap_or_default())
    }

    /// Stops renewing the lease; the version it was last written at.
    fn drop_lease(&mut self) -> Option<String> {
        let Lease::Held(r) = std::mem::replace(&mut self.lease, Lease::None) else {
            return None;
        };
        let lost = r.lost().is_some();
        let (etag, puts) = r.stop();
        self.stats.put += puts;
        (!lost).then_some(etag)
    }

    /// Deletes the lease if it is still this run's.
    pub(super) fn release_lease(&mut self) {
        let Some(etag) = self.drop_lease() else {
            return;
        };
        self.stats.head += 1;
        let (s3, key) = (self.s3.clone(), self.key(LEASE));
        let same = self
            .block(async { s3.head(&key).await })
            .is_ok_and(|m| m.e_tag == Some(etag));
        if same {
            self.stats.delete += 1;
            let (s3, key) = (self.s3.clone(), self.key(LEASE));
            if let Err(e) = self.block(async move { s3.delete(&key).await }) {
                tracing::warn!(target: "metasync", "{}: cannot release its lease: {e}", self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lease_text_parses() {
        assert_eq!(
            super::parse("# x\nowner = m1-ab\nexpires = 42\n"),
            Some(("m1-ab".into(), 42))
        );
        assert_eq!(super::parse("owner = m1\n"), None);
    }
}
