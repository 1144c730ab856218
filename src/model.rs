//! Value types every stage shares: what the archive remembers of a version, which way a run
//! moves versions, why a file was skipped, and the outcomes a run reports. No I/O here; the
//! outcome enums serialise as the snake_case words the `--json` output has always used.

use serde::{Deserialize, Serialize};

/// How a conflict between two or more changed versions is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The version with the latest modification time wins.
    #[default]
    Newest,
    /// The local version wins.
    Local,
    /// The first changed remote, in config order, wins.
    Remote,
    /// Nothing is overwritten; the conflict waits for `resolve`.
    Manual,
}

impl Strategy {
    /// Its config and CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Newest => "newest",
            Strategy::Local => "local",
            Strategy::Remote => "remote",
            Strategy::Manual => "manual",
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "newest" => Ok(Strategy::Newest),
            "local" => Ok(Strategy::Local),
            "remote" => Ok(Strategy::Remote),
            "manual" => Ok(Strategy::Manual),
            other => Err(format!(
                "unknown strategy `{other}` (expected newest, local, remote or manual)"
            )),
        }
    }
}

/// How a synced file is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bytes: SHA-256 of the content, copied as is.
    Plain,
    /// A SQLite database (header `SQLite format 3\0`).
    Sqlite,
}

/// Kind-specific facts about one version, kept in the scan cache.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Facts {
    /// Integrity problems, for databases (empty when healthy or not a database).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub integrity: Vec<String>,
    /// Row count of `entities`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entities: Option<u64>,
    /// Row count of `conversations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversations: Option<u64>,
}

/// A version as read: its hash, kind and facts (made by [`crate::kind`]; here, with the
/// other plain data of the model, so that `apply` can carry it without depending on `kind`).
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    /// Version hash (hex).
    pub hash: String,
    /// Its kind.
    pub kind: Kind,
    /// Kind-specific facts.
    pub facts: Facts,
    /// For a database read this run: the consistent snapshot it was hashed from, kept for the
    /// run so that propagation copies exactly the version that was hashed and checked.
    pub snapshot: Option<std::path::PathBuf>,
}

impl Kind {
    /// Its name in reports and the scan cache.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::Sqlite => "sqlite",
        }
    }
    /// Parses [`Kind::as_str`].
    pub fn parse(s: &str) -> Kind {
        if s == "sqlite" {
            Kind::Sqlite
        } else {
            Kind::Plain
        }
    }
}

/// A version as the archive remembers it: a hash, or known absence.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Recorded {
    /// The file was there with this hash.
    Present(String),
    /// The file was known not to be there.
    Absent,
}

impl Recorded {
    /// The hash, when present.
    pub fn hash(&self) -> Option<&str> {
        match self {
            Recorded::Present(h) => Some(h),
            Recorded::Absent => None,
        }
    }
}

/// The last agreed version of one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Agreed {
    /// The version.
    pub version: Recorded,
    /// Its `entities` count, for databases (the shrink guard's reference).
    pub entities: Option<u64>,
    /// Its `conversations` count, for databases.
    pub conversations: Option<u64>,
}

/// How a run decides.
#[derive(Debug, Clone, PartialEq)]
pub enum Direction {
    /// Bidirectional with a strategy for conflicts.
    Sync(Strategy),
    /// Local's version wins everywhere.
    Push,
    /// Like `Sync`, but only local is written.
    Pull(Strategy),
    /// The user chose this location's version.
    Keep(String),
}

impl Direction {
    /// The strategy that settles conflicts (and row conflicts) in this direction.
    pub fn strategy(&self) -> Strategy {
        match self {
            Direction::Sync(s) | Direction::Pull(s) => *s,
            Direction::Push | Direction::Keep(_) => Strategy::Newest,
        }
    }
}

/// Why a file cannot be used in one location this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipKind {
    /// A cloud placeholder or a dataless file: a download was asked for.
    Evicted,
    /// It kept changing while it was read.
    Changing,
    /// Anything else: it cannot be read, is not a regular file, is a link...
    Unreadable,
}

/// A file that cannot be used in one location this run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// The kind of reason.
    pub kind: SkipKind,
    /// The reason, for people.
    pub reason: String,
}

impl Skip {
    /// A skip of `kind` for `reason`.
    pub fn new(kind: SkipKind, reason: impl Into<String>) -> Skip {
        Skip {
            kind,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Why a version is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protected {
    /// It lost a file-level conflict.
    ConflictLoser,
    /// It holds a row that lost a row-level conflict.
    RowConflictLoser,
    /// It was held back by the shrink guard.
    ShrinkHeld,
    /// It was refused as corrupt.
    RefusedCorrupt,
    /// A restore or a resolve replaced it.
    Replaced,
}

impl Protected {
    /// Its name in listings and markers.
    pub fn as_str(self) -> &'static str {
        match self {
            Protected::ConflictLoser => "conflict_loser",
            Protected::RowConflictLoser => "row_conflict_loser",
            Protected::ShrinkHeld => "shrink_held",
            Protected::RefusedCorrupt => "refused_corrupt",
            Protected::Replaced => "replaced",
        }
    }

    /// The reason named by [`Protected::as_str`].
    pub fn parse(s: &str) -> Option<Protected> {
        [
            Protected::ConflictLoser,
            Protected::RowConflictLoser,
            Protected::ShrinkHeld,
            Protected::RefusedCorrupt,
            Protected::Replaced,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// Declares a unit enum that serialises, displays and compares (with `&str`) as its
/// snake_case word.
macro_rules! word_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Its word in the JSON output.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($word => Ok($name::$variant),)+
                    other => Err(format!("unknown {} `{other}`", stringify!($name))),
                }
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

word_enum! {
    /// What happened to one synced file in a run.
    Outcome {
        /// Every location already held the winner.
        InSync => "in_sync",
        /// The winner was written where it was missing.
        Propagated => "propagated",
        /// Two or more versions and no automatic winner: nothing moved.
        Conflict => "conflict",
        /// Nothing could be done this run.
        Skipped => "skipped",
        /// A write failed.
        Failed => "failed",
    }
}

word_enum! {
    /// A step of propagation, as reported.
    ActionKind {
        /// The current version kept as a backup.
        Backup => "backup",
        /// A version written.
        Copy => "copy",
        /// A file moved to a backup (a propagated deletion).
        Delete => "delete",
    }
}

word_enum! {
    /// How a run ended.
    RunResult {
        /// Done.
        Ok => "ok",
        /// Done, with unresolved conflicts.
        Conflict => "conflict",
        /// Something failed.
        Failed => "failed",
        /// Nothing was written (`--dry-run`).
        DryRun => "dry_run",
    }
}

word_enum! {
    /// A synced file as found in one location.
    FileState {
        /// It is there.
        Present => "present",
        /// It is not there.
        Missing => "missing",
        /// A cloud placeholder or a dataless file.
        Evicted => "evicted",
        /// It cannot be read now.
        Unreadable => "unreadable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_the_json_words() {
        for (o, w) in [
            (Outcome::InSync, "in_sync"),
            (Outcome::Propagated, "propagated"),
            (Outcome::Conflict, "conflict"),
            (Outcome::Skipped, "skipped"),
            (Outcome::Failed, "failed"),
        ] {
            assert_eq!(serde_json::to_value(o).unwrap(), w);
            assert_eq!(o, w);
            assert_eq!(format!("{o}"), w);
        }
        assert_eq!(serde_json::to_value(RunResult::DryRun).unwrap(), "dry_run");
        assert_eq!("dry_run".parse::<RunResult>().unwrap(), RunResult::DryRun);
        assert_eq!(serde_json::to_value(FileState::Evicted).unwrap(), "evicted");
        assert_eq!(serde_json::to_value(ActionKind::Delete).unwrap(), "delete");
        assert_eq!(format!("{:<6}|", ActionKind::Copy), "copy  |");
    }
}
