//! What changed between kept versions: a file's timeline, the diff of two versions, putting
//! back chosen rows of an old version, and settling row conflicts row by row (issue 18).

use crate::error::{Error, Result};
use crate::inspect::{Diff, HistoryEntry, RestoreRowsReport, RowChoice};
use crate::report::{Event, RunReport};
use crate::Engine;

impl Engine {
    /// Every kept version of `file` in every available location (current copies, plain
    /// backups, stored versions), newest first, each with what changed against the next
    /// older one.
    pub fn history(&self, file: &str) -> Result<Vec<HistoryEntry>> {
        Err(Error::Usage(format!("history of {file}: not built yet")))
    }

    /// The differences between versions `a` (default: the newest backup) and `b` (default:
    /// the current local copy) of `file`, ids as `history` and `backups` give them; `table`
    /// keeps only that table's rows.
    pub fn diff(
        &self,
        file: &str,
        a: Option<&str>,
        b: Option<&str>,
        table: Option<&str>,
    ) -> Result<Diff> {
        let _ = (a, b, table);
        Err(Error::Usage(format!("diff of {file}: not built yet")))
    }

    /// Puts back only the rows of `table` with `keys` from version `id` into the current
    /// local database (see [`crate::inspect`] for the key format).
    pub fn restore_rows(&self, id: &str, table: &str, keys: &[String]) -> Result<RestoreRowsReport> {
        let _ = (table, keys);
        Err(Error::Usage(format!("restore of rows from {id}: not built yet")))
    }

    /// Settles a database conflict held by `manual` row by row: each held row takes the value
    /// of the location its choice names.
    pub fn resolve_rows(
        &self,
        file: &str,
        choices: &[RowChoice],
        events: &mut dyn FnMut(&Event),
    ) -> Result<RunReport> {
        let _ = (choices, events);
        Err(Error::Usage(format!("row resolve of {file}: not built yet")))
    }
}
