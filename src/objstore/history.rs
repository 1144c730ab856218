//! The compact history store in the bucket (`.metasync/history/` under the prefix, the same
//! layout as a folder's, see `crate::history::store`). The mirror keeps its own copy of the
//! store: every manifest (small: fetched at the refresh when the listing shows one the mirror
//! does not hold), and the packs it wrote or needed (a pack is fetched only when a restore,
//! a `diff` or a move into the store needs it). What the mirror's store holds that the bucket
//! does not is published under the run's lease, packs first (named by their bytes: "already
//! there" is success), then the manifest (new: created; rewritten by a repack: over the
//! version listed), and only then may a backup object it replaces be deleted. A crash between
//! two steps leaves a pack no manifest references (collected later) or a manifest whose
//! backup object is still there (the next run deletes the object after checking its bytes).
//! Packs no manifest references are collected in two steps, as in a folder: first marked by an
//! empty object `packs/<name>.<seconds since the epoch>.unused` (its time in its key: the
//! listing tells its age), then, once the mark is older than
//! [`GRACE`](crate::history::store::GRACE) (longer than a lease), deleted if still unreferenced.

use super::client::Session;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// The store's folder under the prefix (and under the mirror).
pub(super) const HISTORY: &str = ".metasync/history/";

/// A history object as the last listing gave it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Listed {
    pub(crate) etag: String,
    pub(crate) size: u64,
}

/// What the mirror holds of a manifest in the bucket: the object's version and the SHA-256 of
/// the bytes it had (different local bytes: rewritten here since, to be published).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct HeldManifest {
    pub(super) etag: String,
    pub(super) sha256: String,
}

/// Per manifest path under the prefix: what the mirror holds.
pub(super) type HistoryIndex = BTreeMap<String, HeldManifest>;

fn manifest_rel(id: &str) -> String {
    format!("{HISTORY}manifests/{id}.json")
}

fn pack_rel(name: &str) -> String {
    format!("{HISTORY}packs/{name}.pack")
}

/// A collection's mark on the pack `name`, made at `at`: the time is in the key, so the
/// listing alone tells how old a mark is.
fn mark_rel(name: &str, at: chrono::DateTime<chrono::Utc>) -> String {
    format!("{HISTORY}packs/{name}.{}.unused", at.timestamp())
}

/// The id of a manifest path (`…/manifests/<id>.json`).
fn manifest_id(rel: &str) -> Option<&str> {
    rel.strip_prefix(HISTORY)?
        .strip_prefix("manifests/")?
        .strip_suffix(".json")
        .filter(|id| !id.is_empty() && !id.contains('/') && !id.starts_with('.'))
}

/// The name of a pack path (`…/packs/<name>.pack`).
fn pack_name(rel: &str) -> Option<&str> {
    rel.strip_prefix(HISTORY)?
        .strip_prefix("packs/")?
        .strip_suffix(".pack")
        .filter(|n| !n.is_empty() && !n.contains('/'))
}

impl Session {
    /// Keeps the history objects of a listing of the whole prefix.
    pub(super) fn note_history(&mut self, listed: &[ObjectMeta]) {
        self.history = listed
            .iter()
            .filter_map(|m| {
                let rel = self.rel(&m.location)?;
                rel.starts_with(HISTORY).then(|| {
                    let l = Listed {
                        etag: m.e_tag.clone().unwrap_or_default(),
                        size: m.size,
                    };
                    (rel, l)
                })
            })
            .collect();
    }

    fn history_index_path(&self) -> PathBuf {
        self.index_path
            .with_file_name(format!("{}.history.json", self.name))
    }

    pub(super) fn load_history_index(&mut self) {
        self.history_index = std::fs::read(self.history_index_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
    }

    fn save_history_index(&self) -> Result<(), String> {
        let path = self.history_index_path();
        let text = serde_json::to_vec(&self.history_index).map_err(|e| e.to_string())?;
        if std::fs::read(&path).is_ok_and(|old| old == text) {
            return Ok(());
        }
        crate::apply::atomic::write_bytes(&path, &text, "objstore")
            .map_err(|e| format!("cannot save the store's history index: {e}"))
    }

    /// Brings the mirror's manifests up to the bucket's (as last listed): each one the mirror
    /// does not hold at its listed version is fetched; each one the mirror had from the bucket
    /// and the bucket no longer lists goes (another machine removed it). A manifest only the
    /// mirror has, never published, stays (it is published under the next lease).
    pub(super) fn pull_manifests(&mut self, root: &Path) -> Result<(), String> {
        let wanted: Vec<(String, String)> = self
            .history
            .iter()
            .filter(|(rel, _)| manifest_id(rel).is_some())
            .filter(|(rel, l)| {
                !self
                    .history_index
                    .get(*rel)
                    .is_some_and(|h| h.etag == l.etag && root.join(rel).is_file())
            })
            .map(|(rel, l)| (rel.clone(), l.etag.clone()))
            .collect();
        for (rel, _) in wanted {
            let (bytes, etag) = self.get_bytes(&rel)?;
            let dest = root.join(&rel);
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            crate::apply::atomic::write_bytes(&dest, &bytes, "objstore")
                .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
            let sha256 = crate::ids::sha256_hex(&bytes);
            self.history_index
                .insert(rel, HeldManifest { etag, sha256 });
        }
        let gone: Vec<String> = self
            .history_index
            .keys()
            .filter(|k| !self.history.contains_key(*k))
            .cloned()
            .collect();
        for rel in gone {
            let path = root.join(&rel);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(format!("cannot remove {}: {e}", path.display()))
                }
                _ => {}
            }
            self.history_index.remove(&rel);
        }
        self.save_history_index()
    }

    /// One object's bytes and version.
    fn get_bytes(&mut self, rel: &str) -> Result<(Vec<u8>, String), String> {
        self.stats.get += 1;
        let (s3, key) = (self.s3.clone(), self.key(rel));
        let got = self.block(async move {
            let got = s3.get_opts(&key, Default::default()).await?;
            let etag = got.meta.e_tag.clone().unwrap_or_default();
            Ok::<_, object_store::Error>((got.bytes().await?.to_vec(), etag))
        });
        let (bytes, etag) = got.map_err(|e| self.describe(&e, &format!("download {rel}")))?;
        self.stats.bytes_down += bytes.len() as u64;
        Ok((bytes, etag))
    }

    /// Puts `bytes` at `rel`; `Ok(None)`: the precondition failed (created: it exists
    /// already; an update: the object changed).
    fn put_bytes(
        &mut self,
        rel: &str,
        bytes: Vec<u8>,
        mode: PutMode,
    ) -> Result<Option<String>, String> {
        if let Err(p) = self.check_lease() {
            return Err(format!("history not published: {p:?}"));
        }
        self.stats.put += 1;
        self.stats.bytes_up += bytes.len() as u64;
        let (s3, key) = (self.s3.clone(), self.key(rel));
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        match self.block(async move { s3.put_opts(&key, bytes.into(), opts).await }) {
            Ok(r) => Ok(Some(r.e_tag.unwrap_or_default())),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(None),
            Err(e) => Err(self.describe(&e, &format!("upload {rel}"))),
        }
    }

    fn delete_key(&mut self, rel: &str) -> Result<(), String> {
        if let Err(p) = self.check_lease() {
            return Err(format!("history not thinned: {p:?}"));
        }
        self.stats.delete += 1;
        let (s3, key) = (self.s3.clone(), self.key(rel));
        match self.block(async move { s3.delete(&key).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                self.history.remove(rel);
                Ok(())
            }
            Err(e) => Err(self.describe(&e, &format!("delete {rel}"))),
        }
    }

    /// Publishes the mirror's manifest `id` (at `root`'s store) if the bucket does not hold
    /// it as it is: its packs the bucket lacks first (and their marks removed), then the
    /// manifest. `Ok(false)`: another writer changed it meanwhile (left for the next run).
    pub(super) fn push_manifest(&mut self, root: &Path, id: &str) -> Result<bool, String> {
        let rel = manifest_rel(id);
        let path = root.join(&rel);
        let bytes = std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let sha256 = crate::ids::sha256_hex(&bytes);
        let listed = self.history.get(&rel).cloned();
        let held = self.history_index.get(&rel).cloned();
        if listed.is_some() && held.as_ref().is_some_and(|h| h.sha256 == sha256) {
            return Ok(true);
        }
        let m: crate::history::store::Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| format!("unreadable manifest {}: {e}", path.display()))?;
        for pack in &m.packs {
            self.push_pack(root, pack)?;
        }
        crate::failpoint::hit("bucket_before_manifest");
        let mode = match (&listed, &held) {
            (Some(l), Some(h)) if l.etag == h.etag => PutMode::Update(UpdateVersion {
                e_tag: Some(l.etag.clone()),
                version: None,
            }),
            // Listed but not held as listed: another machine's, rewritten since the refresh.
            (Some(_), _) => return Ok(false),
            (None, _) => PutMode::Create,
        };
        let size = bytes.len() as u64;
        let Some(etag) = self.put_bytes(&rel, bytes, mode)? else {
            return Ok(false);
        };
        self.history.insert(
            rel.clone(),
            Listed {
                etag: etag.clone(),
                size,
            },
        );
        self.history_index
            .insert(rel, HeldManifest { etag, sha256 });
        self.save_history_index()?;
        crate::failpoint::hit("bucket_manifest_published");
        tracing::info!(target: "metasync", "{}: published the stored version {} ({})", self.name, m.info.name, id);
        Ok(true)
    }

    /// Puts one pack the bucket does not list (a pack of those bytes already there is
    /// success), and removes a collection's mark on it.
    fn push_pack(&mut self, root: &Path, name: &str) -> Result<(), String> {
        let rel = pack_rel(name);
        if !self.history.contains_key(&rel) {
            let path = root.join(&rel);
            let bytes =
                std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
            let size = bytes.len() as u64;
            let etag = self
                .put_bytes(&rel, bytes, PutMode::Create)?
                .unwrap_or_default();
            self.history.insert(rel, Listed { etag, size });
            crate::failpoint::hit("bucket_pack_published");
        }
        for (mark, _) in self.marks_of(name) {
            self.delete_key(&mark)?;
        }
        Ok(())
    }

    /// The marks on the pack `name` the bucket lists, with their times.
    fn marks_of(&self, name: &str) -> Vec<(String, chrono::DateTime<chrono::Utc>)> {
        let prefix = format!("{HISTORY}packs/{name}.");
        self.history
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, _)| {
                let secs = k.strip_prefix(&prefix)?.strip_suffix(".unused")?;
                let at = chrono::DateTime::from_timestamp(secs.parse().ok()?, 0)?;
                Some((k.clone(), at))
            })
            .collect()
    }

    /// Removes the manifest `id` from the bucket (its packs go at a later collection).
    pub(super) fn drop_manifest(&mut self, id: &str) -> Result<(), String> {
        let rel = manifest_rel(id);
        if self.history.contains_key(&rel) {
            self.delete_key(&rel)?;
        }
        self.history_index.remove(&rel);
        self.save_history_index()
    }

    /// Fetches the packs among `packs` the mirror's store (at `root`) does not hold.
    pub(super) fn fetch_packs(&mut self, root: &Path, packs: &[String]) -> Result<(), String> {
        for name in packs {
            let rel = pack_rel(name);
            let dest = root.join(&rel);
            if dest.is_file() || !self.history.contains_key(&rel) {
                continue;
            }
            let (bytes, _) = self.get_bytes(&rel)?;
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            crate::apply::atomic::write_bytes(&dest, &bytes, "objstore")
                .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
        }
        Ok(())
    }

    /// Collection in the bucket (under the lease): each listed pack none of `referenced`
    /// names is marked, or deleted once marked for longer than the grace; a referenced
    /// pack loses its mark. The caller passes the packs of every manifest the bucket holds.
    pub(super) fn collect_packs(
        &mut self,
        referenced: &HashSet<String>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, String> {
        let packs: Vec<String> = self
            .history
            .keys()
            .filter_map(|k| pack_name(k).map(str::to_string))
            .collect();
        let mut deleted = 0;
        for name in packs {
            let marks = self.marks_of(&name);
            if referenced.contains(&name) {
                for (mark, _) in marks {
                    self.delete_key(&mark)?;
                }
                continue;
            }
            let Some(at) = marks.iter().map(|m| m.1).min() else {
                let mark = mark_rel(&name, now);
                if let Some(etag) = self.put_bytes(&mark, Vec::new(), PutMode::Create)? {
                    self.history.insert(mark, Listed { etag, size: 0 });
                }
                continue;
            };
            if now.signed_duration_since(at) >= crate::history::store::GRACE {
                crate::failpoint::hit("bucket_before_pack_delete");
                self.delete_key(&pack_rel(&name))?;
                for (mark, _) in marks {
                    self.delete_key(&mark)?;
                }
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Bytes the bucket's history store takes (as last listed).
    pub(super) fn history_bytes(&self) -> u64 {
        self.history.values().map(|l| l.size).sum()
    }

    /// Whether the bucket lists the manifest `id`.
    pub(super) fn lists_manifest(&self, id: &str) -> bool {
        self.history.contains_key(&manifest_rel(id))
    }
}

impl Session {
    /// Whether the history needs work even after a run that published nothing: the mirror's
    /// store holds a manifest the bucket does not list (a run stopped before publishing it),
    /// or a backup object is still beside the stored version of its name (a run stopped
    /// before deleting it). Read from the listing and the mirror's folder: no request.
    pub(super) fn history_pending(&self, root: &Path) -> bool {
        let dir = root.join(HISTORY).join("manifests");
        let unpublished = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".json")
                    .filter(|id| !id.starts_with('.'))
                    .is_some_and(|id| !self.history.contains_key(&manifest_rel(id)))
            });
        let beside = self.backups.keys().any(|rel| {
            let id = crate::history::store::Manifest::id_of(rel);
            self.history.contains_key(&manifest_rel(&id))
        });
        unpublished || beside
    }
}

/// The key that says a backup object is protected: `protected/<id>.<reason>.<since>` (the
/// id of its name, the reason, seconds since the epoch), empty, so that the listing alone
/// tells every machine, not only the one that made it.
fn protection_rel(id: &str, p: &crate::history::store::Protection) -> String {
    format!(
        "{HISTORY}protected/{id}.{}.{}",
        p.reason.as_str(),
        p.since.timestamp()
    )
}

impl Session {
    /// The protection the bucket records for the backup object `rel`, if any.
    pub(super) fn bucket_protection(&self, rel: &str) -> Option<crate::history::store::Protection> {
        let id = crate::history::store::Manifest::id_of(rel);
        let prefix = format!("{HISTORY}protected/{id}.");
        let (key, _) = self
            .history
            .range(prefix.clone()..)
            .next()
            .filter(|(k, _)| k.starts_with(&prefix))?;
        let (reason, since) = key.strip_prefix(&prefix)?.split_once('.')?;
        Some(crate::history::store::Protection {
            reason: crate::history::policy::Protected::parse(reason)?,
            since: chrono::DateTime::from_timestamp(since.parse().ok()?, 0)?,
        })
    }

    /// Records in the bucket which backup objects this run put are protected (the notes are
    /// written once the file's writes are done, so after the objects).
    pub(super) fn publish_protections(&mut self) -> Result<(), String> {
        for (local, rel) in std::mem::take(&mut self.put_backups) {
            self.publish_protection(&local, &rel)?;
        }
        Ok(())
    }

    /// Records in the bucket that the backup object `rel` is protected (as the mirror's note
    /// for its copy `local` says), when it is.
    fn publish_protection(&mut self, local: &str, rel: &str) -> Result<(), String> {
        let Some(p) = crate::history::protection_of(&self.mirror, local) else {
            return Ok(());
        };
        let key = protection_rel(&crate::history::store::Manifest::id_of(rel), &p);
        if let Some(etag) = self.put_bytes(&key, Vec::new(), PutMode::Create)? {
            self.history.insert(key, Listed { etag, size: 0 });
        }
        Ok(())
    }

    /// Removes the bucket's protection record of the backup object `rel` (once it is gone).
    pub(super) fn drop_protection(&mut self, rel: &str) -> Result<(), String> {
        let id = crate::history::store::Manifest::id_of(rel);
        let prefix = format!("{HISTORY}protected/{id}.");
        let keys: Vec<String> = self
            .history
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.delete_key(&k)?;
        }
        Ok(())
    }
}
