//! Crash injection for the reliability tests: `METASYNC_FAILPOINT=<name>` makes the process
//! abort (as a crash would: no destructors, no cleanup) when it reaches that point.
//! `METASYNC_FAILPOINT=<name>:<n>` aborts at the n-th time (1-based). Unset: one relaxed
//! atomic load per point.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The points a run passes through while writing, in order.
pub const POINTS: &[&str] = &[
    "after_backup",
    "after_temp_write",
    "before_rename",
    "after_rename",
    "before_archive_commit",
];

fn armed() -> &'static Option<(String, u32)> {
    static ARMED: OnceLock<Option<(String, u32)>> = OnceLock::new();
    ARMED.get_or_init(|| {
        let v = std::env::var("METASYNC_FAILPOINT").ok()?;
        let (name, n) = match v.split_once(':') {
            Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
            None => (v, 1),
        };
        Some((name, n.max(1)))
    })
}

/// Passed only by a database change whose row-merge base is rewritten in place
/// ([`crate::merge::patch_base`]): after the old base was renamed aside, before its rewrite.
pub const BASE_PATCH: &str = "base_patch";

/// Passed only when a plain database backup is described (integrity check, logical hash and
/// counts) on its way into the history store, not when the run that made it vouched for it.
pub const DESCRIBE_BACKUP: &str = "history_describe_backup";

static HITS: AtomicU32 = AtomicU32::new(0);

/// Aborts the process here if this point is armed.
pub fn hit(name: &str) {
    if let Some((armed, n)) = armed() {
        if armed == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("metasync: failpoint {name} hit: aborting");
            std::process::abort();
        }
    }
}
