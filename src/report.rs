//! What the engine returns and emits: plain serialisable values with stable snake_case
//! field names (SPEC §3). The CLI prints them; the app shows them.

use serde::{Deserialize, Serialize};

/// A location and whether it can be used now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LocationReport {
    /// `local`, `icloud`, `external`, ...
    pub name: String,
    /// Its root folder.
    pub path: String,
    /// Whether this run may read and write it.
    pub available: bool,
    /// Why not, when unavailable (or a note, such as "new: created on first use").
    pub reason: Option<String>,
}

/// One synced file as found in one location.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileReport {
    /// Path relative to the location's root.
    pub file: String,
    /// `present`, `missing`, `evicted` (cloud placeholder or dataless), `unreadable`.
    pub state: crate::model::FileState,
    /// Size in bytes, when present.
    pub size: Option<u64>,
    /// Modification time, RFC 3339, when present.
    pub mtime: Option<String>,
    /// The version hash (byte SHA-256; for databases, the logical hash), when known.
    pub sha256: Option<String>,
    /// `sqlite` or `plain`.
    pub kind: Option<String>,
    /// For databases: row count of `entities`, when the table exists.
    pub entities: Option<u64>,
    /// For databases: row count of `conversations`, when the table exists.
    pub conversations: Option<u64>,
    /// Why the file could not be used, when it could not.
    pub note: Option<String>,
}

/// A location with the synced files it holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LocationStatus {
    /// The location.
    #[serde(flatten)]
    pub location: LocationReport,
    /// Each synced file there.
    pub files: Vec<FileReport>,
    /// iCloud's own conflict copies (`metastore 2.db`) found beside synced files.
    pub conflict_copies: Vec<String>,
    /// Files the patterns select that cannot be synced (a name that is not UTF-8), and why.
    #[serde(default)]
    pub skipped: Vec<SkippedFile>,
}

pub use crate::select::SkippedFile;

/// One version that takes part in a conflict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Candidate {
    /// Where it is.
    pub location: String,
    /// Its hash; `None` for a deletion.
    pub sha256: Option<String>,
    /// Size in bytes.
    pub size: Option<u64>,
    /// Modification time, RFC 3339.
    pub mtime: Option<String>,
    /// For databases.
    pub entities: Option<u64>,
    /// For databases.
    pub conversations: Option<u64>,
}

/// An unresolved conflict on one file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConflictReport {
    /// The synced file.
    pub file: String,
    /// When it was first seen, RFC 3339.
    pub detected: String,
    /// Why it is a conflict ("changed in local and icloud", "entities fell by 80%", ...).
    pub reason: String,
    /// Every version in play.
    pub candidates: Vec<Candidate>,
    /// For databases held by `manual`: the rows changed differently on both sides.
    #[serde(default)]
    pub rows: Vec<crate::merge::RowConflict>,
}

/// One thing a run did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActionReport {
    /// The synced file.
    pub file: String,
    /// The location written.
    pub location: String,
    /// `backup`, `copy`, `delete`.
    pub action: crate::model::ActionKind,
    /// Where the content came from (for `copy`), or the backup's path (for `backup`).
    pub detail: String,
    /// Whether it was carried out and verified (false in a dry run or on failure).
    pub done: bool,
    /// The error, when it failed.
    pub error: Option<String>,
}

/// What happened to one synced file in a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileOutcome {
    /// The synced file.
    pub file: String,
    /// `in_sync`, `propagated`, `conflict`, `skipped`, `failed`.
    pub outcome: crate::model::Outcome,
    /// The winning version's location and hash, when there is one.
    pub winner: Option<String>,
    /// The winning hash.
    pub sha256: Option<String>,
    /// Human explanation of the decision.
    pub reason: String,
}

/// The result of `sync`, `push`, `pull` or `resolve`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunReport {
    /// `sync`, `push`, `pull`, `resolve`.
    pub command: String,
    /// Whether nothing was written on purpose.
    pub dry_run: bool,
    /// The strategy in force.
    pub strategy: String,
    /// Start, RFC 3339.
    pub started: String,
    /// End, RFC 3339.
    pub finished: String,
    /// Every location and its availability.
    pub locations: Vec<LocationReport>,
    /// Per-file decisions.
    pub files: Vec<FileOutcome>,
    /// Everything done.
    pub actions: Vec<ActionReport>,
    /// Conflicts left unresolved after this run.
    pub conflicts: Vec<ConflictReport>,
    /// Things the user should know that did not fail the run.
    pub warnings: Vec<String>,
    /// Failures (the run exits 1 when non-empty).
    pub errors: Vec<String>,
    /// Rows changed differently on two sides and settled by the strategy in a row merge.
    #[serde(default)]
    pub row_conflicts: Vec<crate::merge::RowConflict>,
    /// How many (file, location) versions had to be read and hashed (0 on a no-op re-sync).
    pub hashed: u64,
    /// The CLI exit code this run maps to (0, 1 or 3).
    pub exit_code: i32,
}

/// A run as kept in the archive's history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunSummary {
    /// Sequence number.
    pub id: i64,
    /// `sync`, `push`, ...
    pub command: String,
    /// Start, RFC 3339.
    pub started: String,
    /// End, RFC 3339.
    pub finished: String,
    /// `ok`, `conflict`, `failed`, `dry_run`.
    pub result: crate::model::RunResult,
    /// How many files were written.
    pub written: u64,
    /// One line for people.
    pub summary: String,
}

/// The result of `status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    /// The home folder.
    pub home: String,
    /// The config file in force (or "(defaults)").
    pub config: String,
    /// Every location with its files.
    pub locations: Vec<LocationStatus>,
    /// Unresolved conflicts.
    pub conflicts: Vec<ConflictReport>,
    /// The most recent row conflicts settled by a strategy, newest first.
    #[serde(default)]
    pub row_conflicts: Vec<crate::merge::RowConflict>,
    /// The last run, if any.
    pub last_run: Option<RunSummary>,
    /// Notes such as "no remote configured: add a [[locations]] entry to metasync.toml".
    pub warnings: Vec<String>,
    /// Bytes used by the history of each available location (plain backups and the store).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryUsage>,
}

/// The history of one location: what it takes on disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryUsage {
    /// The location.
    pub location: String,
    /// Bytes of the plain backups of synced files.
    pub plain_bytes: u64,
    /// Bytes of its store (`.metasync/history/`).
    pub stored_bytes: u64,
    /// Bytes of its backup objects, for an object-store location (0, and left out, for a
    /// folder).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bucket_bytes: u64,
    /// Versions kept, plain and stored.
    pub versions: usize,
    /// Whether it is over `max_history_mb` with only protected and plain versions left.
    pub over_budget: bool,
}

/// One backup: a plain file beside its synced file, or a version in a location's store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackupEntry {
    /// Stable id: `<location>:<path relative to the location root>`.
    pub id: String,
    /// The location holding it.
    pub location: String,
    /// The synced file it is a backup of.
    pub file: String,
    /// Its full path.
    pub path: String,
    /// When it was made, RFC 3339 with offset (from its name).
    pub created: String,
    /// Size in bytes.
    pub size: u64,
    /// For databases, when asked for.
    pub entities: Option<u64>,
    /// For databases, when asked for.
    pub conversations: Option<u64>,
    /// Its version hash (the logical hash for databases), when it could be read.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Why it is protected (`conflict_loser`, `shrink_held`, ...), or null.
    #[serde(default)]
    pub protected: Option<String>,
    /// Whether it is in the location's store (else a plain file).
    #[serde(default)]
    pub stored: bool,
}

/// The result of `restore`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RestoreReport {
    /// The backup restored.
    pub backup: BackupEntry,
    /// The file it was restored to.
    pub restored_to: String,
    /// The backup made of the version it replaced (none in a dry run or when the file was missing).
    pub previous_backup: Option<String>,
    /// Whether nothing was written on purpose.
    pub dry_run: bool,
}

/// The result of `relink`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RelinkReport {
    /// The location.
    pub location: String,
    /// Its identity from now on.
    pub id: String,
    /// The id this machine knew before, if any.
    pub previous_id: Option<String>,
}

/// One database checked by `verify`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatabaseCheck {
    /// The location.
    pub location: String,
    /// The synced file.
    pub file: String,
    /// `"ok"` or the integrity messages joined by newlines.
    pub integrity: String,
    /// Table name → row count, `entities` and `conversations` first.
    pub tables: serde_json::Map<String, serde_json::Value>,
}

/// The result of `verify`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerifyReport {
    /// Every database in every available location.
    pub databases: Vec<DatabaseCheck>,
    /// Locations that could not be checked.
    pub skipped: Vec<LocationReport>,
    /// 0, or 1 when any database is corrupt.
    pub exit_code: i32,
}

/// The result of `prune`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PruneReport {
    /// Backups deleted (or, in a dry run, that would be).
    pub deleted: Vec<BackupEntry>,
    /// How many backups were kept.
    pub kept: usize,
    /// Whether nothing was deleted on purpose.
    pub dry_run: bool,
    /// Plain backups moved into their location's store (or, in a dry run, that would be).
    #[serde(default)]
    pub stored: Vec<BackupEntry>,
    /// Bytes the deletions free (for a stored version: the chunks only it uses).
    #[serde(default)]
    pub bytes_freed: u64,
}

/// Progress of a run, for the app's tray and notifications and the CLI's `-v` lines.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A run began.
    RunStarted {
        /// `sync`, `push`, ...
        command: String,
    },
    /// A location cannot be used this run.
    LocationUnavailable {
        /// The location.
        location: String,
        /// Why.
        reason: String,
    },
    /// A file was skipped in one location (evicted, changed while read, ...).
    FileSkipped {
        /// The synced file.
        file: String,
        /// The location.
        location: String,
        /// Why.
        reason: String,
    },
    /// Something was written.
    Action(ActionReport),
    /// A new conflict was found.
    Conflict(ConflictReport),
    /// A corrupt database version was refused.
    CorruptRefused {
        /// The synced file.
        file: String,
        /// Where the corrupt version is.
        location: String,
        /// What the integrity check said.
        detail: String,
    },
    /// A backup was put back.
    BackupRestored {
        /// The backup's id.
        id: String,
        /// The file it now is.
        file: String,
    },
    /// A run ended.
    RunFinished {
        /// `ok`, `conflict`, `failed`, `dry_run`.
        result: crate::model::RunResult,
        /// One line for people.
        summary: String,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
