//! The mirror of a store: brought up to the bucket before the scan, and what a run wrote in it
//! published back, each overwrite conditional on the version the mirror was made from.

use super::client::Session;
use super::{Published, LEASE};
use crate::names;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion,
};
use std::collections::BTreeMap;
use std::path::Path;

/// Above this size a file goes up in parts.
pub(super) const MULTIPART_ABOVE: u64 = 32 << 20;
const PART_SIZE: usize = 16 << 20;
/// The object metadata that carries a file's modification time (ns since the epoch).
const MTIME: &str = "mtime-ns";

/// What the mirror holds of one object: the object's version, and the mirror file's stat
/// when it was made from it (a different stat: the file is no longer that version).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct Held {
    pub(super) etag: String,
    pub(super) stat: [i64; 4],
}

/// Per path under the prefix: what the mirror holds.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Index(pub(super) BTreeMap<String, Held>);

impl Index {
    pub(super) fn load(path: &Path) -> Index {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
}

/// Size, mtime, inode and ctime of a file; `None` when it is not there.
pub(super) fn stat(path: &Path) -> Option<[i64; 4]> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
    Some([
        m.size() as i64,
        ns(m.mtime(), m.mtime_nsec()),
        m.ino() as i64,
        ns(m.ctime(), m.ctime_nsec()),
    ])
}

/// Whether a path under the prefix is mirrored: the marker and the synced files, not
/// backups, history, temp files or the lease.
pub(super) fn mirrored(rel: &str, selector: &crate::select::Selector) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    rel == names::MARKER
        || (rel != LEASE
            && selector.matches(rel)
            && !names::is_backup_name(name)
            && names::temp_machine(name).is_none()
            && !rel.starts_with(names::STATE_DIR))
}

impl Session {
    /// One listing; each mirrored object the mirror does not hold is downloaded, each file
    /// of the mirror that is not (or no longer) in the bucket goes.
    pub(crate) fn refresh(
        &mut self,
        root: &Path,
        selector: &crate::select::Selector,
    ) -> Result<(), String> {
        self.selector = Some(selector.clone());
        std::fs::create_dir_all(root)
            .map_err(|e| format!("cannot create its mirror {}: {e}", root.display()))?;
        let listed = self.listed_versions(selector)?;
        for (rel, etag) in &listed {
            let holds = self
                .index
                .0
                .get(rel)
                .is_some_and(|h| &h.etag == etag && stat(&root.join(rel)) == Some(h.stat));
            if !holds {
                self.download(root, rel)?;
            }
        }
        let gone: Vec<String> = self
            .index
            .0
            .keys()
            .filter(|k| !listed.contains_key(*k))
            .cloned()
            .collect();
        let mut leftovers = selector.list(root).files;
        leftovers.push(names::MARKER.to_string());
        leftovers.retain(|f| !listed.contains_key(f));
        for rel in gone.iter().chain(&leftovers) {
            let path = root.join(rel);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(target: "metasync", "{}: {rel} is no longer in the bucket", self.name)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(format!(
                        "cannot remove {} from its mirror: {e}",
                        path.display()
                    ))
                }
            }
            self.index.0.remove(rel);
        }
        self.save_index()?;
        self.pull_manifests(root)
    }

    /// The ETag of each mirrored object under the prefix.
    pub(super) fn listed_versions(
        &mut self,
        selector: &crate::select::Selector,
    ) -> Result<BTreeMap<String, String>, String> {
        let listed = self.list_all()?;
        self.note_backups(&listed, selector);
        self.note_history(&listed);
        Ok(listed
            .into_iter()
            .filter_map(|m| {
                let rel = self.rel(&m.location)?;
                mirrored(&rel, selector).then(|| (rel, m.e_tag.unwrap_or_default()))
            })
            .collect())
    }

    /// Saves the index when it changed (a no-op run writes nothing).
    pub(super) fn save_index(&self) -> Result<(), String> {
        let text = serde_json::to_vec(&self.index).map_err(|e| e.to_string())?;
        if std::fs::read(&self.index_path).is_ok_and(|old| old == text) {
            return Ok(());
        }
        crate::apply::atomic::write_bytes(&self.index_path, &text, "objstore")
            .map_err(|e| format!("cannot save the store's index: {e}"))
    }

    /// Downloads one object into the mirror (a temp file renamed into place), with the
    /// modification time it was published with.
    fn download(&mut self, root: &Path, rel: &str) -> Result<(), String> {
        use futures_util::StreamExt;
        use std::io::Write;
        let dest = root.join(rel);
        let dir = dest.parent().unwrap_or(root);
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let file_name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let temp = dir.join(names::temp_name(
            file_name,
            "objstore",
            &crate::ids::random_hex(8),
        ));
        self.stats.get += 1;
        let (s3, key) = (self.s3.clone(), self.key(rel));
        let result = self.block(async {
            let got = s3.get_opts(&key, Default::default()).await?;
            let (meta, attributes) = (got.meta.clone(), got.attributes.clone());
            let mut out = std::fs::File::create(&temp).map_err(io_err)?;
            let mut stream = got.into_stream();
            let mut bytes = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                bytes += chunk.len() as u64;
                out.write_all(&chunk).map_err(io_err)?;
            }
            let mtime = attributes
                .get(&Attribute::Metadata(MTIME.into()))
                .and_then(|v| v.as_ref().parse::<i128>().ok())
                .map(crate::times::system_time)
                .unwrap_or_else(|| meta.last_modified.into());
            out.set_modified(mtime).map_err(io_err)?;
            out.sync_all().map_err(io_err)?;
            Ok::<_, object_store::Error>((meta, bytes))
        });
        let (meta, bytes) = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(self.describe(&e, &format!("download {rel}")));
            }
        };
        std::fs::rename(&temp, &dest).map_err(|e| {
            format!(
                "cannot rename {} to {}: {e}",
                temp.display(),
                dest.display()
            )
        })?;
        self.stats.bytes_down += bytes;
        let stat = stat(&dest).unwrap_or_default();
        self.index.0.insert(
            rel.to_string(),
            Held {
                etag: meta.e_tag.unwrap_or_default(),
                stat,
            },
        );
        Ok(())
    }

    /// Publishes what a run wrote for `file` in the mirror: new backups of it, the marker if
    /// new, then the file (conditional on the version scanned) or its deletion.
    pub(crate) fn publish(&mut self, file: &str) -> Published {
        if let Err(p) = self.ensure_lease() {
            return p;
        }
        if self.moved.contains(file) {
            return Published::Raced(format!(
                "{file} changed in {} since the scan",
                self.spec.url()
            ));
        }
        self.touched.insert(file.to_string());
        let root = self.mirror.clone();
        let outcome = self.publish_backups(&root, file).and_then(|()| {
            let marker_new = !self.index.0.contains_key(names::MARKER);
            if file != names::MARKER && marker_new && root.join(names::MARKER).is_file() {
                self.put_file(&root, names::MARKER)?;
            }
            if root.join(file).is_file() {
                self.put_file(&root, file)
            } else {
                self.delete_object(file)
            }
        });
        if outcome.is_err() {
            // The mirror may hold what the bucket does not: the next run downloads it again.
            if let Some(h) = self.index.0.get_mut(file) {
                h.stat = [0; 4];
            }
        }
        let saved = self.save_index();
        match (outcome, saved) {
            (Ok(()), Ok(())) => Published::Done,
            (Err(p), _) => p,
            (Ok(()), Err(e)) => Published::Failed(e),
        }
    }

    /// The backups of `file` beside it that are not in the bucket yet (new names: created).
    fn publish_backups(&mut self, root: &Path, file: &str) -> Result<(), Published> {
        let path = root.join(file);
        let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        else {
            return Ok(());
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        let base = file
            .rsplit_once('/')
            .map(|(d, _)| format!("{d}/"))
            .unwrap_or_default();
        for e in entries.flatten() {
            let Some(n) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let rel = format!("{base}{n}");
            match names::parse_backup_name(&n) {
                Some(b)
                    if b.file_name == names::backup_stem(name)
                        && !self.index.0.contains_key(&rel) =>
                {
                    self.put_backup(root, &rel, &base, &b)?
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A backup, as a new object: under the next free name when another machine made one of
    /// the same name (the same file backed up in the same second).
    fn put_backup(
        &mut self,
        root: &Path,
        rel: &str,
        base: &str,
        b: &names::BackupName,
    ) -> Result<(), Published> {
        let mut last = String::new();
        let first = self.first_free_suffix(&format!("{base}{}", b.file_name), b.at, b.n);
        for n in first..first + 100 {
            let key = format!("{base}{}", names::backup_name(&b.file_name, b.at, n));
            // Nor the name of a version moved into the store: one name, one version.
            if self.lists_manifest(&crate::history::store::Manifest::id_of(&key)) {
                continue;
            }
            match self.put_as(root, rel, &key) {
                Err(Published::Raced(why)) => last = why,
                Ok(()) => {
                    let size = stat(&root.join(rel)).map_or(0, |s| s[0] as u64);
                    self.remember_backup(&key, size);
                    self.put_backups.push((rel.to_string(), key));
                    return Ok(());
                }
                failed => return failed,
            }
        }
        Err(Published::Failed(format!(
            "no free backup name for {rel} in {} ({last})",
            self.spec.url()
        )))
    }

    /// Puts one mirror file: over the version the mirror holds, or as a new object.
    pub(super) fn put_file(&mut self, root: &Path, rel: &str) -> Result<(), Published> {
        self.put_as(root, rel, rel)
    }

    /// Puts the mirror file `rel` at `key` (both relative to the prefix).
    fn put_as(&mut self, root: &Path, rel: &str, key: &str) -> Result<(), Published> {
        self.check_lease()?;
        let path = root.join(rel);
        let before = stat(&path);
        let mode = match self.index.0.get(key) {
            Some(h) => PutMode::Update(UpdateVersion {
                e_tag: Some(h.etag.clone()),
                version: None,
            }),
            None => PutMode::Create,
        };
        let size = before.map_or(0, |s| s[0] as u64);
        let etag = if size > MULTIPART_ABOVE {
            self.put_parts(&path, key, &mode)?
        } else {
            let bytes = std::fs::read(&path)
                .map_err(|e| Published::Failed(format!("read {}: {e}", path.display())))?;
            let opts = PutOptions {
                mode,
                attributes: mtime_attributes(before),
                ..Default::default()
            };
            self.stats.put += 1;
            let (s3, object) = (self.s3.clone(), self.key(key));
            let put = self.block(async move { s3.put_opts(&object, bytes.into(), opts).await });
            self.stats.bytes_up += size;
            put.map_err(|e| self.lost_or_failed(&e, key))?
                .e_tag
                .unwrap_or_default()
        };
        self.index.0.insert(
            rel.to_string(),
            Held {
                etag,
                stat: before.unwrap_or_default(),
            },
        );
        Ok(())
    }

    /// A large file in parts. `object_store` cannot make a multipart upload conditional, so
    /// the version is checked right before it starts.
    // RACE: another writer that ignores the lease could replace the object between that check
    // and the upload's completion; every Metasync run holds the lease while it writes.
    fn put_parts(&mut self, path: &Path, rel: &str, mode: &PutMode) -> Result<String, Published> {
        use std::io::Read;
        let key = self.key(rel);
        self.stats.head += 1;
        let s3 = self.s3.clone();
        let now = self.block(async { s3.head(&key).await });
        let current = match now {
            Ok(m) => Some(m.e_tag.unwrap_or_default()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => {
                return Err(Published::Failed(
                    self.describe(&e, &format!("check {rel}")),
                ))
            }
        };
        let expected = match mode {
            PutMode::Update(v) => v.e_tag.clone(),
            _ => None,
        };
        if current != expected {
            return Err(Published::Raced(format!(
                "{rel} changed in {} since the scan",
                self.spec.url()
            )));
        }
        let mut file = std::fs::File::open(path)
            .map_err(|e| Published::Failed(format!("open {}: {e}", path.display())))?;
        let opts = object_store::PutMultipartOptions {
            attributes: mtime_attributes(stat(path)),
            ..Default::default()
        };
        let s3 = self.s3.clone();
        let mut parts = 0u64;
        let watch = self.lease_watch();
        let done = self.block(async {
            let upload = s3.put_multipart_opts(&key, opts).await?;
            let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let mut buf = vec![0u8; PART_SIZE];
            loop {
                // A run that lost its lease writes no more: the upload is given up.
                if let Some(why) = watch.lost() {
                    writer.abort().await?;
                    return Err(object_store::Error::Precondition {
                        path: rel.to_string(),
                        source: why.into(),
                    });
                }
                let n = file.read(&mut buf).map_err(io_err)?;
                if n == 0 {
                    break;
                }
                writer.wait_for_capacity(4).await?;
                writer.write(&buf[..n]);
                parts += 1;
            }
            writer.finish().await
        });
        // Each part, and the upload's start and completion.
        self.stats.put += parts + 2;
        self.stats.bytes_up += stat(path).map_or(0, |s| s[0] as u64);
        done.map(|r| r.e_tag.unwrap_or_default())
            .map_err(|e| match (e, watch.lost()) {
                (object_store::Error::Precondition { .. }, Some(why)) => Published::Raced(why),
                (e, _) => Published::Failed(self.describe(&e, &format!("upload {rel}"))),
            })
    }

    /// Deletes the object of a file the run deleted, if it is still the version scanned.
    fn delete_object(&mut self, rel: &str) -> Result<(), Published> {
        let Some(held) = self.index.0.get(rel).cloned() else {
            return Ok(());
        };
        self.check_lease()?;
        let key = self.key(rel);
        self.stats.head += 1;
        let s3 = self.s3.clone();
        match self.block(async { s3.head(&key).await }) {
            Ok(m) if m.e_tag.as_deref() == Some(held.etag.as_str()) => {}
            Ok(_) => {
                return Err(Published::Raced(format!(
                    "{rel} changed in {} since the scan",
                    self.spec.url()
                )))
            }
            Err(object_store::Error::NotFound { .. }) => {
                self.index.0.remove(rel);
                return Ok(());
            }
            Err(e) => {
                return Err(Published::Failed(
                    self.describe(&e, &format!("check {rel}")),
                ))
            }
        }
        self.stats.delete += 1;
        let s3 = self.s3.clone();
        self.block(async { s3.delete(&key).await })
            .map_err(|e| Published::Failed(self.describe(&e, &format!("delete {rel}"))))?;
        self.index.0.remove(rel);
        Ok(())
    }

    /// A failed put: lost to another writer (the precondition), or failed.
    fn lost_or_failed(&mut self, e: &object_store::Error, rel: &str) -> Published {
        match e {
            object_store::Error::Precondition { .. }
            | object_store::Error::AlreadyExists { .. } => {
                // The mirror no longer holds what the bucket has: the next run downloads it.
                if let Some(h) = self.index.0.get_mut(rel) {
                    h.stat = [0; 4];
                }
                Published::Raced(format!(
                    "{rel} was changed in {} by another machine since the scan; it will be synced \
                     next run ({e})",
                    self.spec.url()
                ))
            }
            e => Published::Failed(self.describe(e, &format!("upload {rel}"))),
        }
    }
}

fn mtime_attributes(stat: Option<[i64; 4]>) -> Attributes {
    let mut a = Attributes::new();
    if let Some(s) = stat {
        a.insert(Attribute::Metadata(MTIME.into()), s[1].to_string().into());
    }
    a
}

pub(super) fn io_err(e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "mirror",
        source: Box::new(e),
    }
}
