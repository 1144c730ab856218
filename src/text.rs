//! Human-readable renderings of the engine's reports, for the CLI.

use crate::inspect::text::counts;
use crate::report::*;
use crate::words::{bytes, plural};
use std::fmt::Write;

fn short(h: &str) -> &str {
    &h[..h.len().min(12)]
}

/// One line per progress event worth showing while a run goes on.
pub fn event_line(e: &Event) -> Option<String> {
    match e {
        Event::LocationUnavailable { location, reason } => {
            Some(format!("skipping {location}: {reason}"))
        }
        Event::FileSkipped {
            file,
            location,
            reason,
        } => Some(format!("{file} in {location}: {reason}")),
        Event::CorruptRefused {
            file,
            location,
            detail,
        } => Some(format!(
            "{file} in {location} is corrupt and was refused: {detail}"
        )),
        Event::Conflict(c) => Some(format!("conflict on {}: {}", c.file, c.reason)),
        _ => None,
    }
}

/// The one-line summary of a run.
pub fn run_line(r: &RunReport) -> String {
    let written = r
        .actions
        .iter()
        .filter(|a| a.done && a.action != crate::model::ActionKind::Backup)
        .count();
    format!(
        "{} {}: {}, {written} written, {}, {}, {}",
        r.finished,
        r.command,
        plural(r.files.len() as u64, "file"),
        plural(r.conflicts.len() as u64, "conflict"),
        plural(r.warnings.len() as u64, "warning"),
        plural(r.errors.len() as u64, "error")
    )
}

/// A run report.
pub fn run(r: &RunReport) -> String {
    let mut s = String::new();
    if r.dry_run {
        let _ = writeln!(s, "dry run: nothing was written");
    }
    for f in &r.files {
        let winner = match (&f.winner, &f.sha256) {
            (Some(w), Some(h)) => format!(" ← {w} ({})", short(h)),
            (Some(w), None) => format!(" ← {w}"),
            _ => String::new(),
        };
        let _ = writeln!(s, "{:<11} {}{winner}: {}", f.outcome, f.file, f.reason);
    }
    for a in &r.actions {
        let state = if a.done {
            "done"
        } else if r.dry_run {
            "would"
        } else {
            "FAILED"
        };
        let err = a
            .error
            .as_ref()
            .map(|e| format!(" — {e}"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "  {state:<6} {} {} in {}: {}{err}",
            a.action, a.file, a.location, a.detail
        );
    }
    for c in &r.conflicts {
        let _ = writeln!(
            s,
            "conflict on {}: {} — settle with `metasync resolve {} --keep LOCATION`",
            c.file, c.reason, c.file
        );
    }
    for w in &r.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    for e in &r.errors {
        let _ = writeln!(s, "error: {e}");
    }
    let _ = writeln!(s, "{}", run_line(r));
    s
}

/// A status report.
pub fn status(st: &StatusReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "home {}  (config: {})", st.home, st.config);
    for l in &st.locations {
        let health = if l.location.available {
            "available".to_string()
        } else {
            "UNAVAILABLE".to_string()
        };
        let reason = l
            .location
            .reason
            .as_ref()
            .map(|r| format!(" — {r}"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "\n{} [{health}] {}{reason}",
            l.location.name, l.location.path
        );
        for f in &l.skipped {
            let _ = writeln!(s, "  {:<24} {}", f.name, f.reason);
        }
        for f in &l.files {
            let mut line = format!("  {:<24} {:<8}", f.file, f.state);
            if let (Some(size), Some(h)) = (f.size, &f.sha256) {
                let _ = write!(
                    line,
                    " {:>10}  {}  {}",
                    bytes(size),
                    f.mtime.as_deref().unwrap_or(""),
                    short(h)
                );
            }
            if let Some(c) = counts(f.entities, f.conversations) {
                let _ = write!(line, "  {c}");
            }
            if let Some(n) = &f.note {
                let _ = write!(line, "  ({n})");
            }
            let _ = writeln!(s, "{line}");
        }
    }
    if st.conflicts.is_empty() {
        let _ = writeln!(s, "\nno conflicts");
    } else {
        let _ = writeln!(s);
        s.push_str(&conflicts(&st.conflicts));
    }
    if !st.row_conflicts.is_empty() {
        let _ = writeln!(s, "recent row conflicts settled by the strategy:");
        for r in st.row_conflicts.iter().take(5) {
            let winner = r.winner.as_deref().unwrap_or("?");
            let _ = writeln!(s, "  {} {} {}: kept {winner}", r.file, r.table, r.key);
        }
    }
    match &st.last_run {
        Some(r) => {
            let _ = writeln!(
                s,
                "last run: {} {} at {}: {}",
                r.command, r.result, r.finished, r.summary
            );
        }
        None => {
            let _ = writeln!(s, "last run: never");
        }
    }
    for h in &st.history {
        let over = if h.over_budget {
            "  OVER max_history_mb (only plain and protected versions left)"
        } else {
            ""
        };
        let bucket = if h.bucket_bytes > 0 {
            format!(", {} in the bucket", bytes(h.bucket_bytes))
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "history in {}: {}, {} ({} plain backups, {} stored{bucket}){over}",
            h.location,
            plural(h.versions as u64, "version"),
            bytes(h.plain_bytes + h.stored_bytes + h.bucket_bytes),
            bytes(h.plain_bytes),
            bytes(h.stored_bytes)
        );
    }
    for w in &st.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}

/// The conflicts list.
pub fn conflicts(list: &[ConflictReport]) -> String {
    let mut s = String::new();
    if list.is_empty() {
        let _ = writeln!(s, "no unresolved conflicts");
    }
    for c in list {
        let _ = writeln!(
            s,
            "conflict on {} (since {}): {}",
            c.file, c.detected, c.reason
        );
        for v in &c.candidates {
            let counts = counts(v.entities, v.conversations)
                .map(|c| format!("  {c}"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "  {:<10} {:>10}  {}  {}{counts}",
                v.location,
                v.size.map(bytes).unwrap_or_else(|| "-".into()),
                v.mtime.as_deref().unwrap_or("(missing)"),
                v.sha256.as_deref().map(short).unwrap_or("-")
            );
        }
        if !c.rows.is_empty() {
            let _ = writeln!(
                s,
                "  {} changed differently:",
                plural(c.rows.len() as u64, "row")
            );
        }
        for r in &c.rows {
            let _ = writeln!(s, "  row {} {}:", r.table, r.key);
            for (loc, v) in &r.values {
                let _ = writeln!(s, "    {loc:<10} {}", v.as_deref().unwrap_or("(deleted)"));
            }
        }
        let _ = writeln!(
            s,
            "  settle it with: metasync resolve {} --keep LOCATION",
            c.file
        );
        if !c.rows.is_empty() {
            let _ = writeln!(
                s,
                "  or row by row: metasync resolve {} --keep-rows LOCATION [--table T --keys K...]",
                c.file
            );
        }
    }
    s
}

/// The backups list.
pub fn backups(list: &[BackupEntry]) -> String {
    let mut s = String::new();
    if list.is_empty() {
        let _ = writeln!(s, "no backups");
    }
    for b in list {
        let counts = counts(b.entities, b.conversations)
            .map(|c| format!("  {c}"))
            .unwrap_or_default();
        let protected = b
            .protected
            .as_ref()
            .map(|p| format!("  protected: {p}"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "{}  {:>10}  {}{counts}{protected}",
            b.created,
            bytes(b.size),
            b.id
        );
    }
    s
}

/// The verify report.
pub fn verify(v: &VerifyReport) -> String {
    let mut s = String::new();
    for d in &v.databases {
        let _ = writeln!(s, "{} in {}: integrity {}", d.file, d.location, d.integrity);
        for (t, n) in &d.tables {
            let _ = writeln!(s, "  {t:<24} {n}");
        }
    }
    for l in &v.skipped {
        let _ = writeln!(
            s,
            "skipped {}: {}",
            l.name,
            l.reason.as_deref().unwrap_or("")
        );
    }
    if v.databases.is_empty() {
        let _ = writeln!(s, "no databases found");
    }
    s
}

/// What `restore` did (or, with `--dry-run`, would do).
pub fn restore(r: &RestoreReport) -> String {
    let verb = if r.dry_run {
        "would restore"
    } else {
        "restored"
    };
    let mut s = format!("{verb} {} to {}\n", r.backup.id, r.restored_to);
    if let Some(p) = &r.previous_backup {
        let _ = writeln!(s, "the version it replaced is kept as {p}");
    }
    if !r.dry_run {
        s.push_str("the next sync propagates it to the other locations\n");
    } else if r.backup.path.starts_with("s3://") {
        let hash = r
            .backup
            .sha256
            .as_deref()
            .map_or(String::new(), |h| format!(", sha256 {h} as recorded"));
        let _ = writeln!(
            s,
            "{}{hash}: the object {} is downloaded and checked only when restored",
            bytes(r.backup.size),
            r.backup.path
        );
    }
    s
}

/// What `prune` removed and moved into the store (or, with `--dry-run`, would).
pub fn prune(r: &PruneReport) -> String {
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    let moves = if r.dry_run { "would move" } else { "moved" };
    let mut s = String::new();
    for b in &r.deleted {
        let _ = writeln!(s, "{verb} {}", b.id);
    }
    for b in &r.stored {
        let _ = writeln!(s, "{moves} {} into the history store", b.id);
    }
    let _ = writeln!(
        s,
        "{} {verb} ({} freed), {} {moves} into the store, {} kept",
        plural(r.deleted.len() as u64, "backup"),
        bytes(r.bytes_freed),
        r.stored.len(),
        r.kept
    );
    s
}

/// `service install|uninstall|status`.
pub fn service(s: &crate::service::State) -> String {
    use crate::service::Running;
    let what = match (s.installed, s.changed) {
        (true, true) => "installed",
        (true, false) => "installed (unchanged)",
        (false, true) => "uninstalled",
        (false, false) => "not installed",
    };
    let mut out = format!("{what}: {}\n", s.path.display());
    if s.installed && !s.current {
        out.push_str(
            "note: the file is not what `metasync service install` writes now; run it again\n",
        );
    }
    out.push_str(match s.running {
        Running::Active => "running\n",
        Running::Inactive => "not running\n",
        Running::Unknown => "running: unknown (the service manager could not be asked)\n",
    });
    if let Some(d) = &s.detail {
        out.push_str(&format!("note: {d}\n"));
    }
    out
}
