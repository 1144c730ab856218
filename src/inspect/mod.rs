//! What changed between kept versions of a synced file (issue 18): a file's timeline
//! ([`HistoryEntry`]), the diff of two versions ([`Diff`]: rows for a database, lines for text),
//! and putting back chosen rows of an old version ([`RestoreRowsReport`]).
//!
//! Rows are identified as the row merge identifies them ([`crate::merge`]): by the table's
//! declared PRIMARY KEY (an `INTEGER PRIMARY KEY` is the rowid; a table without one by its
//! rowid), and values are compared by type and bytes, never under a column's collation.
//!
//! **Keys.** A row's key is written as the JSON array of its key values, exactly as
//! [`crate::merge::values_json`] spells them (`[42]`, `["ai",3]`, `[{"real":1.5}]`,
//! `[{"blob":"00ff"}]`): the `key` of every [`Row`] and [`RowChange`]. [`crate::Engine::restore_rows`]
//! takes that form, or for a one-column key the bare value (`42`, `ai`), which matches an
//! integer or a text key spelled so (refused when it matches more than one row).

pub mod json;
pub(crate) mod restore;
pub(crate) mod rows;
pub mod text;
pub(crate) mod textdiff;

use serde::{Deserialize, Serialize};

/// How many rows each list of a [`TableDiff`] holds at most (the counts are always exact).
pub const MAX_LISTED_ROWS: usize = 10_000;

/// Where a kept version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionKind {
    /// The file as it is now in a location.
    Current,
    /// A plain backup beside the file.
    Plain,
    /// A version in the location's history store.
    Stored,
}

/// Row counts of a database version.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Rows of `entities`, when it has that table.
    pub entities: Option<u64>,
    /// Rows of `conversations`, when it has that table.
    pub conversations: Option<u64>,
    /// Every user table's rows.
    pub tables: Vec<TableRows>,
}

/// One table's row count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    /// The table.
    pub table: String,
    /// How many rows it has.
    pub rows: u64,
}

/// One kept version of a file, as the timeline shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The backup id (for `restore`, `diff`), or `current:LOCATION` for a current copy.
    pub id: String,
    /// The synced file.
    pub file: String,
    /// The location holding it.
    pub location: String,
    /// Its full path (a stored version's manifest).
    pub path: String,
    /// When it was made (a current copy: its modification time), RFC 3339.
    pub created: String,
    /// Size in bytes.
    pub size: u64,
    /// Its version hash (the logical hash for databases), when it could be read.
    pub sha256: Option<String>,
    /// Why it is protected from retention, or null.
    pub protected: Option<String>,
    /// Row counts, for a database.
    pub counts: Option<Counts>,
    /// Current copy, plain backup or stored version.
    pub kind: VersionKind,
    /// What changed against the version listed after it (the next older one).
    pub summary: ChangeSummary,
}

/// What changed in a version against the one before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChangeSummary {
    /// The oldest kept version: nothing to compare it with.
    First,
    /// The same content as the version before it.
    Same,
    /// A database: rows per table, and the schema.
    Database {
        /// Tables with changed rows (only those).
        tables: Vec<TableSummary>,
        /// Schema changes.
        schema: Vec<SchemaChange>,
    },
    /// A text file: lines added and removed.
    Text {
        /// Lines added.
        lines_added: usize,
        /// Lines removed.
        lines_removed: usize,
    },
    /// Another file: only its size can be compared.
    Binary {
        /// Size of the version before, in bytes.
        size_before: u64,
        /// Size of this version, in bytes.
        size_after: u64,
    },
    /// One of the two versions could not be read (the reason).
    Unreadable {
        /// Why.
        reason: String,
    },
}

/// One table's row changes, counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSummary {
    /// The table.
    pub table: String,
    /// Rows only the newer version has.
    pub added: usize,
    /// Rows only the older version has.
    pub removed: usize,
    /// Rows both have, with different values.
    pub changed: usize,
}

/// What kind of change a schema object went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaChangeKind {
    /// Only the newer version has it.
    Added,
    /// Only the older version has it.
    Removed,
    /// Both have it, with different definitions.
    Changed,
}

/// One schema object (table, index, view, trigger, or a header value such as `user_version`)
/// that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaChange {
    /// Added, removed or changed.
    pub change: SchemaChangeKind,
    /// `table`, `index`, `view`, `trigger` or `pragma`.
    pub object: String,
    /// Its name.
    pub name: String,
    /// Its definition in the older version.
    pub old: Option<String>,
    /// Its definition in the newer version.
    pub new: Option<String>,
}

/// One value, exactly as stored: its type, and its value spelled without loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Cell {
    /// NULL.
    Null,
    /// An INTEGER.
    Integer(i64),
    /// A REAL, spelled so that it reads back to the same bits (`-0.0`, `inf`, `NaN`).
    Real(String),
    /// TEXT.
    Text(String),
    /// A BLOB: its length and its first bytes in hex.
    Blob(BlobCell),
}

/// A BLOB as a diff shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobCell {
    /// Its length in bytes.
    pub len: usize,
    /// Its first [`BLOB_HEX_BYTES`] bytes, hex.
    pub hex: String,
    /// Whether `hex` holds only the first bytes.
    pub truncated: bool,
}

/// How many bytes of a BLOB a [`Cell`] shows.
pub const BLOB_HEX_BYTES: usize = 64;

/// One row: its key (see the module documentation) and its stored columns' values, in the
/// table's column order (serialised as an object, column → value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The row's key, for `restore --rows`.
    pub key: String,
    /// Column → value.
    pub values: Cells,
}

/// Column → value, in column order (an ordered JSON object).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cells(pub Vec<(String, Cell)>);

impl Serialize for Cells {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Cells {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        map.into_iter()
            .map(|(k, v)| {
                Ok((
                    k,
                    serde_json::from_value(v).map_err(serde::de::Error::custom)?,
                ))
            })
            .collect::<Result<Vec<_>, D::Error>>()
            .map(Cells)
    }
}

/// A row both versions have, with different values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowChange {
    /// The row's key (see the module documentation).
    pub key: String,
    /// Its values in the older version (A).
    pub old: Cells,
    /// Its values in the newer version (B).
    pub new: Cells,
    /// The columns whose values differ.
    pub changed_columns: Vec<String>,
}

/// One table's row differences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDiff {
    /// The table.
    pub table: String,
    /// The columns identifying a row (`rowid` for a table without a PRIMARY KEY).
    pub key_columns: Vec<String>,
    /// Its stored columns, in order.
    pub columns: Vec<String>,
    /// Rows only B has (at most [`MAX_LISTED_ROWS`]).
    pub added: Vec<Row>,
    /// Rows only A has (at most [`MAX_LISTED_ROWS`]).
    pub removed: Vec<Row>,
    /// Rows whose values differ (at most [`MAX_LISTED_ROWS`]).
    pub changed: Vec<RowChange>,
    /// The exact numbers of rows added, removed and changed.
    pub summary: TableSummary,
    /// Why its rows were not compared (its columns or key differ between the versions), or
    /// null.
    pub note: Option<String>,
}

/// One table's row count in each version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountChange {
    /// The table.
    pub table: String,
    /// Rows in A (null: A has no such table).
    pub a: Option<u64>,
    /// Rows in B (null: B has no such table).
    pub b: Option<u64>,
}

/// Which version a diff side is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRef {
    /// The id it was asked by (a backup id or `current:LOCATION`).
    pub id: String,
    /// The location holding it.
    pub location: String,
    /// When it was made (a current copy: its modification time), RFC 3339.
    pub created: String,
}

/// The differences between two versions A (older) and B (newer) of a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Diff {
    /// Two databases: rows per table, schema, counts.
    Database {
        /// The file.
        file: String,
        /// Version A.
        a: VersionRef,
        /// Version B.
        b: VersionRef,
        /// Tables whose rows differ (only those).
        tables: Vec<TableDiff>,
        /// Schema changes.
        schema: Vec<SchemaChange>,
        /// Every table's row count in A and in B.
        counts: Vec<CountChange>,
    },
    /// Two text files: a unified diff.
    Text {
        /// The file.
        file: String,
        /// Version A.
        a: VersionRef,
        /// Version B.
        b: VersionRef,
        /// The unified diff (empty when the same).
        unified: String,
        /// Lines added.
        added: usize,
        /// Lines removed.
        removed: usize,
    },
    /// Anything else (or a database against a non-database): sizes and hashes.
    Binary {
        /// The file.
        file: String,
        /// Version A.
        a: VersionRef,
        /// Version B.
        b: VersionRef,
        /// A's size in bytes.
        size_a: u64,
        /// B's size in bytes.
        size_b: u64,
        /// Whether the bytes are the same.
        same: bool,
    },
}

/// The result of `restore ID --rows TABLE:KEY,..`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreRowsReport {
    /// The version the rows came from.
    pub backup: crate::report::BackupEntry,
    /// The database written (the local copy).
    pub restored_to: String,
    /// The table.
    pub table: String,
    /// Keys of rows put back that the current version still had (replaced).
    pub replaced: Vec<String>,
    /// Keys of rows put back that the current version no longer had (re-inserted).
    pub reinserted: Vec<String>,
    /// Keys of rows the old version did not have, removed from the current one.
    pub deleted: Vec<String>,
    /// The backup made of the current version first.
    pub previous_backup: Option<String>,
}

/// One row's choice when a row conflict is settled row by row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowChoice {
    /// The table.
    pub table: String,
    /// The row's key, as the conflict lists it.
    pub key: String,
    /// The location whose value is kept.
    pub location: String,
}
