//! The lease: one object at the prefix's root that serialises the writing runs of different
//! machines on one store. Taken only when a run has something to publish (a no-op run writes
//! nothing), created only if absent (or over an expired lease's version), released at the
//! end of the run, and it expires so that a crashed machine never blocks the others.

use super::client::Session;
use super::{Published, LEASE};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a lease holds when its run does not release it.
const TTL: Duration = Duration::from_secs(15 * 60);

/// This run's lease on the store.
#[derive(Debug, Clone)]
pub(crate) enum Lease {
    /// Not asked for yet.
    None,
    /// Held, at this object version.
    Held(String),
    /// Another machine holds it (or it could not be taken): why.
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

impl Session {
    /// Takes the lease on first need; then the synced objects that moved since the scan are
    /// known (their writes are left for the next run).
    pub(super) fn ensure_lease(&mut self) -> Result<(), Published> {
        match &self.lease {
            Lease::Held(_) => return Ok(()),
            Lease::Refused(why) => return Err(Published::Raced(why.clone())),
            Lease::None => super::pause("before_lease"),
        }
        self.lease = match self.take_lease() {
            Ok(etag) => Lease::Held(etag),
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

    /// Creates the lease object, or replaces an expired one; its version.
    fn take_lease(&mut self) -> Result<String, String> {
        let body = format!(
            "# Metasync: a run is writing to this store.\nowner = {}\nexpires = {}\n",
            self.owner,
            now_secs() + TTL.as_secs()
        );
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

    /// Deletes the lease if it is still this run's.
    pub(super) fn release_lease(&mut self) {
        let Lease::Held(etag) = std::mem::replace(&mut self.lease, Lease::None) else {
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
