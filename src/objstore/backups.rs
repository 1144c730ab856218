//! The backup objects of a store (`<file>.backup-YYYYMMDD-HHMMSS` under the prefix): known from
//! the listing the refresh makes (no request of their own), read only when asked (restore, a
//! hash), and deleted by retention under the run's lease.

use super::client::Session;
use super::LEASE;
use crate::names;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use std::path::Path;

/// One backup object, as the listing gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketBackup {
    /// Its path relative to the prefix.
    pub rel: String,
    /// The synced file it is a backup of (relative to the prefix).
    pub file: String,
    /// Its size in bytes.
    pub size: u64,
    /// The local time in its name.
    pub at: chrono::NaiveDateTime,
    /// The collision suffix in its name (0 when none).
    pub n: u32,
}

/// `rel` as a backup object of a synced file, when it is one. A backup name with a
/// shortened stem (see [`names::backup_stem`]) is of the file among `siblings` (relative
/// paths, any folder) whose stem it is.
fn backup_of<'s>(
    rel: &str,
    size: u64,
    selector: Option<&crate::select::Selector>,
    siblings: impl IntoIterator<Item = &'s str>,
) -> Option<BucketBackup> {
    if rel == LEASE || rel.starts_with(names::STATE_DIR) {
        return None;
    }
    let (dir, name) = match rel.rsplit_once('/') {
        Some((d, n)) => (format!("{d}/"), n),
        None => (String::new(), rel),
    };
    if names::temp_machine(name).is_some() {
        return None;
    }
    let parsed = names::parse_backup_name(name)?;
    let stem = &parsed.file_name;
    let file = match names::may_be_shortened(stem) {
        true => names::file_of_stem(
            stem,
            siblings
                .into_iter()
                .filter_map(|r| r.strip_prefix(dir.as_str()).filter(|n| !n.contains('/'))),
        )
        .map_or_else(|| format!("{dir}{stem}"), |n| format!("{dir}{n}")),
        false => format!("{dir}{stem}"),
    };
    if selector.is_some_and(|s| !s.matches(&file)) {
        return None;
    }
    Some(BucketBackup {
        rel: rel.to_string(),
        file,
        size,
        at: parsed.at,
        n: parsed.n,
    })
}

impl Session {
    /// Keeps the backup objects of a listing of the whole prefix.
    pub(super) fn note_backups(
        &mut self,
        listed: &[ObjectMeta],
        selector: &crate::select::Selector,
    ) {
        let rels: Vec<(String, u64)> = listed
            .iter()
            .filter_map(|m| Some((self.rel(&m.location)?, m.size)))
            .collect();
        let siblings = || rels.iter().map(|(r, _)| r.as_str());
        self.backups = rels
            .iter()
            .filter_map(|(rel, size)| backup_of(rel, *size, Some(selector), siblings()))
            .map(|b| (b.rel.clone(), b))
            .collect();
    }

    /// A backup object this run put.
    pub(super) fn remember_backup(&mut self, rel: &str, size: u64) {
        let siblings = self.index.0.keys().map(String::as_str);
        if let Some(b) = backup_of(rel, size, self.selector.as_ref(), siblings) {
            self.backups.insert(rel.to_string(), b);
        }
    }

    /// The first suffix a new backup object of `file` made at `at` may take: past every one
    /// the bucket holds for that second, so a name retention freed is not taken again (it
    /// would then sort as the oldest of that second).
    pub(super) fn first_free_suffix(&self, file: &str, at: chrono::NaiveDateTime, n: u32) -> u32 {
        self.backups
            .values()
            .filter(|b| b.file == file && b.at == at)
            .map(|b| b.n + 1)
            .fold(n, u32::max)
    }

    /// Downloads the backup object `rel` to the new file `dest`.
    pub(super) fn get_backup(&mut self, rel: &str, dest: &Path) -> Result<(), String> {
        use futures_util::StreamExt;
        use std::io::Write;
        if !self.backups.contains_key(rel) {
            return Err(format!("no backup object {rel} in {}", self.spec.url()));
        }
        self.stats.get += 1;
        let (s3, key) = (self.s3.clone(), self.key(rel));
        let result = self.block(async {
            let got = s3.get_opts(&key, Default::default()).await?;
            let mut out = std::fs::File::create_new(dest).map_err(super::mirror::io_err)?;
            let mut stream = got.into_stream();
            let mut bytes = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                bytes += chunk.len() as u64;
                out.write_all(&chunk).map_err(super::mirror::io_err)?;
            }
            out.sync_all().map_err(super::mirror::io_err)?;
            Ok::<_, object_store::Error>(bytes)
        });
        match result {
            Ok(bytes) => {
                self.stats.bytes_down += bytes;
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(dest);
                Err(self.describe(&e, &format!("download {rel} to {}", dest.display())))
            }
        }
    }

    /// Deletes backup objects (only backup objects: never a synced file, the marker or the
    /// lease), under the run's lease.
    pub(super) fn delete_backups(&mut self, rels: &[String]) -> Result<(), String> {
        if rels.is_empty() {
            return Ok(());
        }
        if let Err(p) = self.ensure_lease() {
            return Err(format!("backups not thinned: {p:?}"));
        }
        for rel in rels {
            if backup_of(rel, 0, None, []).is_none() {
                return Err(format!(
                    "{rel} in {} is not a backup object",
                    self.spec.url()
                ));
            }
            if let Err(p) = self.check_lease() {
                return Err(format!("backups not thinned: {p:?}"));
            }
            self.stats.delete += 1;
            let (s3, key) = (self.s3.clone(), self.key(rel));
            match self.block(async { s3.delete(&key).await }) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    self.backups.remove(rel);
                    self.drop_protection(rel)?;
                    tracing::info!(target: "metasync", "{}: pruned the backup object {rel}", self.name);
                }
                Err(e) => return Err(self.describe(&e, &format!("delete {rel}"))),
            }
        }
        Ok(())
    }
}
