//! A location's version history (SPEC §5 "History"): the policy deciding which versions stay
//! plain, move into the compact store or go, and the store itself (`.metasync/history/`).

pub mod hashes;
pub mod policy;
pub mod store;

use crate::error::{IoContext, Result};
use chrono::{DateTime, Timelike, Utc};
use policy::Protected;
use std::path::{Path, PathBuf};
use store::{Manifest, Protection, Store};

fn protection_path(root: &Path, rel: &str) -> PathBuf {
    Store::of_location(root)
        .dir()
        .join("protected")
        .join(format!("{}.json", Manifest::id_of(rel)))
}

/// Records that the plain backup at `rel` (relative to the location `root`) is protected,
/// for the code that makes such a backup (a conflict's loser, a version held by the shrink
/// guard, a refused corrupt version, the version a restore or resolve replaced). The note
/// lives in the location's store folder, never a synced file, and follows the version into
/// the store.
pub fn protect(root: &Path, rel: &str, reason: Protected, since: DateTime<Utc>) -> Result<()> {
    let path = protection_path(root, rel);
    let dir = path.parent().expect("a protection note has a folder");
    std::fs::create_dir_all(dir).ctx("create folder", dir)?;
    // Whole seconds: a note's size does not depend on the clock's nanoseconds.
    let since = since
        .with_nanosecond(0)
        .expect("zero nanoseconds is a valid time");
    let note = Protection { reason, since };
    let bytes = serde_json::to_vec(&note).expect("a protection note encodes");
    crate::apply::atomic::write_bytes(&path, &bytes, "note")
}

/// The protection recorded for the plain backup at `rel`, if any.
pub fn protection_of(root: &Path, rel: &str) -> Option<Protection> {
    let bytes = std::fs::read(protection_path(root, rel)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Forgets the protection note of `rel` (once its version is stored or removed).
pub fn forget_protection(root: &Path, rel: &str) {
    let _ = std::fs::remove_file(protection_path(root, rel));
}
