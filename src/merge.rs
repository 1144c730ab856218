//! Row-level three-way merge of SQLite databases (SPEC §6 "Row merge"): the changes each
//! side made against the last agreed version (the base), combined row by row. Rows changed on
//! one side only, or identically on several, merge silently; a row changed differently on two
//! sides is a row conflict, whose winner the strategy picks (or, with `manual`, the whole file
//! is held). Anything the merge cannot vouch for falls back to the file-level strategy.
//!
//! The merge is exact for every schema SQLite accepts (SPEC §6): a table's rows are
//! identified by its declared PRIMARY KEY, compared by type and bytes (an `INTEGER PRIMARY
//! KEY` is the rowid; a rowid table whose key is another is identified by that key, its hidden
//! rowid kept where free and fresh where another row took it; a rowid table without one is
//! left to the file-level strategy); only stored columns are read and written (`table_xinfo`;
//! generated ones are recomputed); values are compared by type and bytes, never under a
//! column's collation; the database's triggers are off while the merged rows are written,
//! foreign keys are checked once they all are, and AUTOINCREMENT counters end at the highest
//! any version reached. External-content full-text indexes are rebuilt; a change to any other
//! virtual table's rows is a fall-back.
//!
//! [`combine`] is the pure decision; [`merge_files`] does the I/O around it.

use crate::config::Strategy;
use crate::error::{Error, IoContext, Result};
use rusqlite::config::DbConfig;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// What one side did to one row, against the base.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The row is (now) these values: an insert or an update.
    Upsert(Vec<Value>),
    /// The row is gone.
    Delete,
}

/// One version taking part in a merge.
#[derive(Debug, Clone)]
pub struct MergeSide {
    /// Its location.
    pub location: String,
    /// Whether it is the local home.
    pub local: bool,
    /// Its file's modification time (ns): `newest` prefers the latest side for a row.
    pub mtime_ns: i128,
    /// A consistent snapshot of it.
    pub path: PathBuf,
}

/// A row changed differently on two or more sides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowConflict {
    /// The synced file (filled in by the engine).
    #[serde(default)]
    pub file: String,
    /// The table.
    pub table: String,
    /// The row's identity as JSON: the values of its table's PRIMARY KEY (an `INTEGER
    /// PRIMARY KEY` is the rowid; a hidden rowid is never part of it).
    pub key: String,
    /// Each changing side's value: (location, the row as JSON, or `null` for a delete).
    pub values: Vec<(String, Option<String>)>,
    /// The location whose value was kept (`None` while held for the user).
    pub winner: Option<String>,
}

/// The merged changes for one table: key → change to apply to the base.
pub type TableChanges = BTreeMap<String, (Vec<Value>, Change)>;

/// Per side, per table: key (canonical) → (key values, change).
pub type SideChanges = BTreeMap<String, BTreeMap<String, (Vec<Value>, Change)>>;

/// Combines the sides' changes (pure): the changes to apply to the base, and the row conflicts.
/// With `Strategy::Manual`, conflicting rows get no winner and are left out of the result.
pub fn combine(
    sides: &[MergeSide],
    changes: &[SideChanges],
    strategy: Strategy,
) -> (BTreeMap<String, TableChanges>, Vec<RowConflict>) {
    let mut merged: BTreeMap<String, TableChanges> = BTreeMap::new();
    let mut conflicts = Vec::new();
    let mut tables: Vec<&String> = changes.iter().flat_map(|c| c.keys()).collect();
    tables.sort();
    tables.dedup();
    for table in tables {
        let mut keys: Vec<&String> = changes
            .iter()
            .filter_map(|c| c.get(table))
            .flat_map(|t| t.keys())
            .collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let by_side: Vec<(usize, &(Vec<Value>, Change))> = changes
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.get(table).and_then(|t| t.get(key)).map(|ch| (i, ch)))
                .collect();
            let first = &by_side[0].1;
            let pick = if by_side.iter().all(|(_, ch)| same_change(&ch.1, &first.1)) {
                Some(by_side[0].0)
            } else {
                let winner = pick_row(
                    sides,
                    &by_side.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
                    strategy,
                );
                conflicts.push(RowConflict {
                    file: String::new(),
                    table: table.clone(),
                    key: values_json(&first.0),
                    values: by_side
                        .iter()
                        .map(|(i, ch)| {
                            let v = match &ch.1 {
                                Change::Upsert(row) => Some(values_json(row)),
                                Change::Delete => None,
                            };
                            (sides[*i].location.clone(), v)
                        })
                        .collect(),
                    winner: winner.map(|w| sides[w].location.clone()),
                });
                winner
            };
            if let Some(i) = pick {
                let ch = changes[i][table][key].clone();
                merged
                    .entry(table.clone())
                    .or_default()
                    .insert(key.clone(), ch);
            }
        }
    }
    (merged, conflicts)
}

fn pick_row(sides: &[MergeSide], changers: &[usize], strategy: Strategy) -> Option<usize> {
    let newest = || {
        // Ties go to the earlier side (local first, then config order).
        changers
            .iter()
            .copied()
            .fold(None, |best: Option<usize>, i| match best {
                Some(b) if sides[b].mtime_ns >= sides[i].mtime_ns => Some(b),
                _ => Some(i),
            })
    };
    match strategy {
        Strategy::Manual => None,
        Strategy::Newest => newest(),
        Strategy::Local => changers
            .iter()
            .copied()
            .find(|&i| sides[i].local)
            .or_else(newest),
        Strategy::Remote => changers
            .iter()
            .copied()
            .find(|&i| !sides[i].local)
            .or_else(newest),
    }
}

/// Canonical text of a key or row: unambiguous across types, exact for every value (`-0.0`
/// keeps its sign; infinities, which JSON numbers cannot hold, are spelled out).
pub fn values_json(values: &[Value]) -> String {
    let items: Vec<serde_json::Value> = values
        .iter()
        .map(|v| match v {
            Value::Null => serde_json::Value::Null,
            Value::Integer(i) => serde_json::json!(i),
            Value::Real(f) if f.is_finite() => serde_json::json!({ "real": f }),
            Value::Real(f) => serde_json::json!({ "real": if *f > 0.0 { "inf" } else { "-inf" } }),
            Value::Text(t) => serde_json::json!(t),
            Value::Blob(b) => serde_json::json!({ "blob": crate::ids::hex_lower(b) }),
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

/// How a merge attempt ended.
#[derive(Debug)]
pub enum MergeOutcome {
    /// The merged database is at `path`.
    Merged {
        /// The merged database (a self-contained file).
        path: PathBuf,
        /// Rows that conflicted, each with the winner the strategy picked.
        row_conflicts: Vec<RowConflict>,
        /// How many rows were changed against the base.
        rows_changed: usize,
    },
    /// `manual` and some rows conflict: the whole file waits for the user.
    Held(Vec<RowConflict>),
    /// The merge cannot be vouched for; the file-level strategy applies. The reason says why.
    Fallback(String),
}

/// How a table's rows are identified across versions.
enum Key {
    /// A rowid table whose PRIMARY KEY is an `INTEGER PRIMARY KEY` (the rowid itself), or
    /// which has none (such a table is left to the file-level strategy, but for the shadow
    /// tables watched for changes): its rowid, read and written under this name (`rowid`,
    /// `_rowid_` or `oid`, whichever no column shadows).
    Rowid(&'static str),
    /// A `WITHOUT ROWID` table: its PRIMARY KEY, at these positions among the stored columns,
    /// compared exactly (type and bytes), whatever collation it is declared with.
    Pk(Vec<usize>),
    /// A rowid table whose PRIMARY KEY is not the rowid (`id TEXT PRIMARY KEY`, a composite
    /// key, …): identified by that key, exactly, as [`Key::Pk`]. The rowid (read under this
    /// name) is hidden: no part of a row's identity nor of its values (two versions that each
    /// inserted a different row give both the same next rowid). A changed row keeps its
    /// rowid in the base; a new one keeps its side's rowid when it is still free in the merged
    /// version, else gets a fresh one from SQLite.
    HiddenRowid(&'static str, Vec<usize>),
}

/// Per table, the rowid each new or changed row of a [`Key::HiddenRowid`] table had in a
/// side (canonical key → rowid).
type RowidHints = BTreeMap<String, Rowids>;

/// Canonical key → rowid, for one table.
type Rowids = HashMap<String, i64>;

struct Table {
    name: String,
    /// The stored columns, in order: generated columns are never read nor written (SQLite
    /// recomputes them from the stored ones).
    cols: Vec<String>,
    key: Key,
    /// How many columns its declared PRIMARY KEY has (a rowid table without one has no key
    /// the user chose: SPEC §6 leaves such a table to the file-level strategy).
    pk: usize,
}

impl Table {
    /// The name the rowid is read and written under, for a rowid table.
    fn rowid(&self) -> Option<&'static str> {
        match self.key {
            Key::Rowid(r) | Key::HiddenRowid(r, _) => Some(r),
            Key::Pk(_) => None,
        }
    }

    /// The columns a row is read as: the rowid first for a rowid table, then the stored ones.
    fn select_list(&self) -> String {
        let cols = self.cols.iter().map(|c| quote(c)).collect::<Vec<_>>();
        match self.rowid() {
            Some(r) => format!("{r}, {}", cols.join(", ")),
            None => cols.join(", "),
        }
    }

    /// The condition matching the row with exactly this key (`?1`, `?2`, … are its values).
    fn key_cond(&self) -> String {
        match &self.key {
            Key::Rowid(r) => format!("{r} = ?1"),
            Key::Pk(idx) | Key::HiddenRowid(_, idx) => {
                // The first term finds the row through the key's index (under its declared
                // collation); the others keep only the exact match.
                let cond: Vec<String> = idx
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| {
                        let (c, p) = (quote(&self.cols[c]), i + 1);
                        format!("{c} IS ?{p} AND {c} IS ?{p} COLLATE BINARY AND typeof({c}) = typeof(?{p})")
                    })
                    .collect();
                cond.join(" AND ")
            }
        }
    }

    /// A statement deleting the row with exactly this key, returning its hidden rowid (for a
    /// [`Key::HiddenRowid`] table; nothing for the others).
    fn delete_sql(&self) -> String {
        let returning = match self.key {
            Key::HiddenRowid(r, _) => format!(" RETURNING {r}"),
            _ => String::new(),
        };
        format!(
            "DELETE FROM main.{} WHERE {}{returning}",
            quote(&self.name),
            self.key_cond()
        )
    }

    /// A statement inserting one row: the rowid (for a rowid table, when `with_rowid`), then
    /// the stored columns.
    fn insert_sql(&self, with_rowid: bool) -> String {
        let list = match self.rowid() {
            Some(_) if with_rowid => self.select_list(),
            _ => self
                .cols
                .iter()
                .map(|c| quote(c))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let n = self.cols.len() + usize::from(with_rowid && self.rowid().is_some());
        let marks: Vec<String> = (1..=n).map(|i| format!("?{i}")).collect();
        // OR ABORT overrides any ON CONFLICT REPLACE/IGNORE of the table's constraints: a
        // merged row must never silently replace or drop another.
        format!(
            "INSERT OR ABORT INTO main.{}({list}) VALUES ({})",
            quote(&self.name),
            marks.join(", ")
        )
    }
}

/// What the merge works on.
struct Plan {
    /// The tables diffed and written row by row.
    tables: Vec<Table>,
    /// External-content full-text tables: rebuilt from their content after the merge.
    rebuild: Vec<String>,
    /// The shadow tables of the other virtual tables, with their owner: those rows belong to a
    /// virtual table that cannot be merged row by row, so a change to them is a fallback.
    watched: Vec<(String, Table)>,
}

fn err<'a>(op: &'static str, path: &'a Path) -> impl Fn(rusqlite::Error) -> Error + 'a {
    move |e| Error::sqlite(op, path, e)
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Names SQLite keeps for itself (`sqlite_sequence`, `sqlite_stat1`, …).
const NOT_INTERNAL: &str = "lower(substr(name, 1, 7)) <> 'sqlite_'";

/// The schema's rows, then the header's `user_version` and `application_id` (which a merge
/// could not combine: a version that changed them is no row edit).
fn schema(conn: &Connection, path: &Path) -> Result<Vec<(String, String, Option<String>)>> {
    let mut header = Vec::new();
    for pragma in ["user_version", "application_id"] {
        let v: i64 = conn
            .query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))
            .map_err(err("read the header of", path))?;
        header.push((
            "pragma".to_string(),
            pragma.to_string(),
            Some(v.to_string()),
        ));
    }
    let mut stmt = conn
        .prepare(&format!(
            "SELECT type, name, sql FROM sqlite_schema WHERE {NOT_INTERNAL} ORDER BY type, name"
        ))
        .map_err(err("read the schema of", path))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(err("read the schema of", path))?;
    let rows: Vec<_> = rows
        .collect::<rusqlite::Result<_>>()
        .map_err(err("read the schema of", path))?;
    Ok(rows.into_iter().chain(header).collect())
}

/// Whether the virtual table `name` is a full-text index over external content (which a
/// `rebuild` recomputes from that content).
fn external_content(conn: &Connection, path: &Path, name: &str) -> Result<bool> {
    let sql: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .map_err(err("read the schema of", path))?;
    let lower = sql
        .unwrap_or_default()
        .to_ascii_lowercase()
        .replace(' ', "");
    Ok(lower.contains("usingfts")
        && lower.contains("content=")
        && !lower.contains("content=''")
        && !lower.contains("content=\"\""))
}

/// The tables to diff, the full-text tables to rebuild and the shadow tables to watch, or why
/// the merge cannot be done.
fn plan(conn: &Connection, path: &Path) -> Result<std::result::Result<Plan, String>> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT name, type, wr FROM pragma_table_list WHERE schema = 'main' AND {NOT_INTERNAL} ORDER BY name"
        ))
        .map_err(err("list the tables of", path))?;
    let list: Vec<(String, String, bool)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .and_then(|rows| rows.collect())
        .map_err(err("list the tables of", path))?;
    let mut vtabs = Vec::new();
    let mut plan = Plan {
        tables: Vec::new(),
        rebuild: Vec::new(),
        watched: Vec::new(),
    };
    for (name, _, _) in list.iter().filter(|t| t.1 == "virtual") {
        if external_content(conn, path, name)? {
            plan.rebuild.push(name.clone());
        }
        vtabs.push(name.as_str());
    }
    for (name, kind, without_rowid) in &list {
        if kind != "table" && kind != "shadow" {
            continue; // views, and virtual tables (whose rows live in their shadow tables)
        }
        // A shadow table belongs to the virtual table whose name is its longest prefix (an
        // ordinary table named like one is the user's own).
        let owner = vtabs
            .iter()
            .filter(|v| kind == "shadow" && name.starts_with(&format!("{v}_")))
            .max_by_key(|v| v.len());
        if owner.is_some_and(|o| plan.rebuild.iter().any(|r| r == o)) {
            continue;
        }
        let table = match table_def(conn, path, name, *without_rowid)? {
            Ok(t) => t,
            Err(why) => return Ok(Err(why)),
        };
        if owner.is_none() && table.pk == 0 {
            return Ok(Err(format!("table {name} has no primary key")));
        }
        match owner {
            Some(o) => plan.watched.push((o.to_string(), table)),
            None => plan.tables.push(table),
        }
    }
    Ok(Ok(plan))
}

/// One table's stored columns and key, or why it cannot be merged.
fn table_def(
    conn: &Connection,
    path: &Path,
    name: &str,
    without_rowid: bool,
) -> Result<std::result::Result<Table, String>> {
    let mut stmt = conn
        .prepare("SELECT name, pk, hidden FROM pragma_table_xinfo(?1, 'main') ORDER BY cid")
        .map_err(err("read the columns of", path))?;
    let info: Vec<(String, i64, i64)> = stmt
        .query_map([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .and_then(|rows| rows.collect())
        .map_err(err("read the columns of", path))?;
    // hidden: 0 a stored column, 2 or 3 a generated one (never written; recomputed).
    let cols: Vec<String> = info
        .iter()
        .filter(|c| c.2 == 0)
        .map(|c| c.0.clone())
        .collect();
    let pk_len = info.iter().filter(|c| c.1 > 0).count();
    let mut pk: Vec<(i64, &String)> = info
        .iter()
        .filter(|c| c.1 > 0)
        .map(|c| (c.1, &c.0))
        .collect();
    pk.sort();
    let idx: Vec<usize> = pk
        .iter()
        .filter_map(|(_, n)| cols.iter().position(|c| c == *n))
        .collect();
    if idx.len() != pk.len() || (without_rowid && idx.is_empty()) {
        return Ok(Err(format!("the primary key of {name} cannot be read")));
    }
    if without_rowid {
        return Ok(Ok(Table {
            name: name.to_string(),
            cols,
            key: Key::Pk(idx),
            pk: pk_len,
        }));
    }
    let free = ["rowid", "_rowid_", "oid"]
        .into_iter()
        .find(|r| !info.iter().any(|c| c.0.eq_ignore_ascii_case(r)));
    let Some(r) = free else {
        return Ok(Err(format!(
            "table {name} has columns named rowid, _rowid_ and oid: its rowid cannot be read"
        )));
    };
    // A PRIMARY KEY that is not the rowid has an index of its own (origin 'pk'); an
    // `INTEGER PRIMARY KEY` has none (it is the rowid; `INTEGER PRIMARY KEY DESC` is not).
    let own_index: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM pragma_index_list(?1, 'main') WHERE origin = 'pk'",
            [name],
            |r| r.get(0),
        )
        .map_err(err("read the indexes of", path))?;
    let key = if own_index {
        Key::HiddenRowid(r, idx)
    } else {
        Key::Rowid(r)
    };
    Ok(Ok(Table {
        name: name.to_string(),
        cols,
        key,
        pk: pk_len,
    }))
}

fn key_of(values: &[Value]) -> String {
    values_json(values)
}

/// Whether two values are the same exactly: type and bytes (`-0.0` is not `0.0`, `1` is not
/// `1.0` nor `'1'`, `'ai'` is not `'AI'` whatever a column's collation says).
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Real(x), Value::Real(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

fn same_ref(a: ValueRef<'_>, b: ValueRef<'_>) -> bool {
    match (a, b) {
        (ValueRef::Real(x), ValueRef::Real(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

fn same_values(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_value(x, y))
}

fn same_change(a: &Change, b: &Change) -> bool {
    match (a, b) {
        (Change::Upsert(x), Change::Upsert(y)) => same_values(x, y),
        (Change::Delete, Change::Delete) => true,
        _ => false,
    }
}

fn read_values(
    r: &rusqlite::Row<'_>,
    cols: std::ops::Range<usize>,
) -> rusqlite::Result<Vec<Value>> {
    cols.map(|i| r.get::<_, Value>(i)).collect()
}

/// One side's changes to the tables against the base (the side attached as `side`), and the
/// side's rowids of the changed rows of [`Key::HiddenRowid`] tables.
fn diff(
    conn: &Connection,
    tables: &[Table],
    files: Files<'_>,
    out: &Path,
) -> Result<(SideChanges, RowidHints)> {
    let mut changes = SideChanges::new();
    let mut hints = RowidHints::new();
    for t in tables {
        let mut table = BTreeMap::new();
        let mut rowids = HashMap::new();
        match &t.key {
            Key::Rowid(_) => merge_join(conn, t, files, &mut table, out)?,
            Key::Pk(idx) | Key::HiddenRowid(_, idx) => {
                key_diff(conn, t, idx, (&mut table, &mut rowids), out)?
            }
        }
        if !table.is_empty() {
            changes.insert(t.name.clone(), table);
        }
        if !rowids.is_empty() {
            hints.insert(t.name.clone(), rowids);
        }
    }
    Ok((changes, hints))
}

/// The diff of a table identified by its PRIMARY KEY (`WITHOUT ROWID`, or a rowid table whose
/// key is not the rowid): the base's rows by exact key, then the side's looked up among them.
/// A hidden rowid is no part of a row's values; the side's rowid of a changed row goes to
/// `rowids`.
fn key_diff(
    conn: &Connection,
    t: &Table,
    idx: &[usize],
    (table, rowids): (&mut TableChanges, &mut Rowids),
    out: &Path,
) -> Result<()> {
    let e = err("diff", out);
    let (name, list, n) = (quote(&t.name), t.select_list(), t.cols.len());
    let first = usize::from(t.rowid().is_some());
    let key = |row: &[Value]| idx.iter().map(|&i| row[i].clone()).collect::<Vec<_>>();
    let mut base: HashMap<String, Vec<Value>> = HashMap::new();
    let mut stmt = conn
        .prepare(&format!("SELECT {list} FROM main.{name}"))
        .map_err(&e)?;
    let mut rows = stmt.query([]).map_err(&e)?;
    while let Some(r) = rows.next().map_err(&e)? {
        let row = read_values(r, first..first + n).map_err(&e)?;
        base.insert(key_of(&key(&row)), row);
    }
    let mut stmt = conn
        .prepare(&format!("SELECT {list} FROM side.{name}"))
        .map_err(&e)?;
    let mut rows = stmt.query([]).map_err(&e)?;
    while let Some(r) = rows.next().map_err(&e)? {
        let row = read_values(r, first..first + n).map_err(&e)?;
        let k = key(&row);
        let canon = key_of(&k);
        match base.remove(&canon) {
            Some(old) if same_values(&old, &row) => {}
            _ => {
                if first == 1 {
                    rowids.insert(canon.clone(), r.get::<_, i64>(0).map_err(&e)?);
                }
                table.insert(canon, (k, Change::Upsert(row)));
            }
        }
    }
    for (canon, old) in base {
        table.insert(canon, (key(&old), Change::Delete));
    }
    Ok(())
}

/// The diff of a rowid table: both copies read in rowid order, side by side, over the rowid
/// ranges whose pages differ between the two files (every row when the pages cannot tell, see
/// [`crate::sqlite::changed_rowid_ranges`]). Values are compared borrowed and exactly; only
/// changed rows are copied out.
fn merge_join(
    conn: &Connection,
    t: &Table,
    files: Files<'_>,
    table: &mut BTreeMap<String, (Vec<Value>, Change)>,
    out: &Path,
) -> Result<()> {
    let e = err("diff", out);
    let Key::Rowid(rowid) = t.key else {
        return Ok(());
    };
    let ranges = match changed_ranges(conn, &t.name, files)? {
        Some(ranges) => ranges,
        None => vec![(i64::MIN, i64::MAX)],
    };
    let (name, list) = (quote(&t.name), t.select_list());
    let select = |schema: &str| {
        format!(
            "SELECT {list} FROM {schema}.{name} WHERE {rowid} BETWEEN ?1 AND ?2 ORDER BY {rowid}"
        )
    };
    let mut base_stmt = conn.prepare_cached(&select("main")).map_err(&e)?;
    let mut side_stmt = conn.prepare_cached(&select("side")).map_err(&e)?;
    for (lo, hi) in ranges {
        let base_rows = base_stmt.query([lo, hi]).map_err(&e)?;
        let side_rows = side_stmt.query([lo, hi]).map_err(&e)?;
        join_rows(base_rows, side_rows, t.cols.len(), table).map_err(&e)?;
    }
    Ok(())
}

/// The two versions' files while a side is diffed: the base (the merge's `main` is a byte
/// copy of it) and the side (attached as `side`).
#[derive(Clone, Copy)]
struct Files<'a> {
    base: &'a Path,
    side: &'a Path,
}

/// The rowid ranges of `table` whose pages differ between the base and the side, or `None`
/// when only reading every row can tell.
fn changed_ranges(
    conn: &Connection,
    table: &str,
    files: Files<'_>,
) -> Result<Option<Vec<(i64, i64)>>> {
    let root = |schema: &str, path: &Path| -> Result<Option<u32>> {
        conn.query_row(
            &format!(
                "SELECT rootpage FROM {schema}.sqlite_schema WHERE type = 'table' AND name = ?1"
            ),
            [table],
            |r| r.get::<_, Option<u32>>(0),
        )
        .map_err(err("read the schema of", path))
    };
    let (Some(a), Some(b)) = (root("main", files.base)?, root("side", files.side)?) else {
        return Ok(None);
    };
    match crate::sqlite::changed_rowid_ranges(files.base, a, files.side, b) {
        Ok(ranges) => Ok(ranges),
        Err(e) => {
            tracing::debug!(
                "pages of {} and {} not compared ({e}): every row of {table} is read",
                files.base.display(),
                files.side.display()
            );
            Ok(None)
        }
    }
}

/// Joins the base's and the side's rows (each in rowid order, the rowid first, then `n`
/// stored columns) into `table`'s changes.
fn join_rows(
    mut base_rows: rusqlite::Rows<'_>,
    mut side_rows: rusqlite::Rows<'_>,
    n: usize,
    table: &mut BTreeMap<String, (Vec<Value>, Change)>,
) -> rusqlite::Result<()> {
    let key = |r: &rusqlite::Row<'_>| r.get::<_, i64>(0);
    let same = |a: &rusqlite::Row<'_>, b: &rusqlite::Row<'_>| -> rusqlite::Result<bool> {
        for i in 1..=n {
            if !same_ref(a.get_ref(i)?, b.get_ref(i)?) {
                return Ok(false);
            }
        }
        Ok(true)
    };
    let mut record = |k: i64, change: Change| {
        let key = vec![Value::Integer(k)];
        table.insert(key_of(&key), (key, change));
    };
    let mut b = base_rows.next()?;
    let mut s = side_rows.next()?;
    loop {
        let (advance_base, advance_side) = match (b, s) {
            (None, None) => break,
            (Some(br), None) => {
                record(key(br)?, Change::Delete);
                (true, false)
            }
            (None, Some(sr)) => {
                record(key(sr)?, Change::Upsert(read_values(sr, 1..n + 1)?));
                (false, true)
            }
            (Some(br), Some(sr)) => {
                let (kb, ks) = (key(br)?, key(sr)?);
                if kb < ks {
                    record(kb, Change::Delete);
                    (true, false)
                } else if kb > ks || !same(br, sr)? {
                    record(ks, Change::Upsert(read_values(sr, 1..n + 1)?));
                    (kb == ks, true)
                } else {
                    (true, true)
                }
            }
        };
        if advance_base {
            b = base_rows.next()?;
        }
        if advance_side {
            s = side_rows.next()?;
        }
    }
    Ok(())
}

/// The `sqlite_sequence` counters of the database attached as `schema` (none without
/// `AUTOINCREMENT` tables).
fn sequences(conn: &Connection, schema: &str, path: &Path) -> Result<Vec<(String, i64)>> {
    let e = err("read the AUTOINCREMENT counters of", path);
    let exists: i64 = conn
        .query_row(
            &format!("SELECT count(*) FROM {schema}.sqlite_schema WHERE name = 'sqlite_sequence'"),
            [],
            |r| r.get(0),
        )
        .map_err(&e)?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    let mut stmt = conn
        .prepare(&format!("SELECT name, seq FROM {schema}.sqlite_sequence"))
        .map_err(&e)?;
    let v = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect());
    v.map_err(&e)
}

/// What one side brings: its row changes, its rowids of the changed rows of
/// [`Key::HiddenRowid`] tables and its AUTOINCREMENT counters, or why it cannot be merged (a
/// virtual table's own rows changed, a key that identifies no row).
type SideRead = std::result::Result<(SideChanges, RowidHints, Vec<(String, i64)>), String>;

/// The first table of `tables` identified by a PRIMARY KEY other than the rowid that has a
/// row with NULL in its key in the database attached as `schema` (a rowid table allows it,
/// and then as many such rows as one likes: the key identifies none of them).
fn null_key(
    conn: &Connection,
    tables: &[Table],
    schema: &str,
    out: &Path,
) -> Result<Option<String>> {
    for t in tables {
        let Key::HiddenRowid(_, idx) = &t.key else {
            continue;
        };
        let cond: Vec<String> = idx
            .iter()
            .map(|&c| format!("{} IS NULL", quote(&t.cols[c])))
            .collect();
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {schema}.{} WHERE {})",
            quote(&t.name),
            cond.join(" OR ")
        );
        let found: bool = conn
            .query_row(&sql, [], |r| r.get(0))
            .map_err(err("diff", out))?;
        if found {
            return Ok(Some(t.name.clone()));
        }
    }
    Ok(None)
}

/// A side and the base file it is diffed against.
#[derive(Clone, Copy)]
struct Side<'a>(&'a MergeSide, &'a Path);

/// Reads the side attached as `side`.
fn read_side(conn: &Connection, plan: &Plan, side: Side<'_>, out: &Path) -> Result<SideRead> {
    let Side(side, base) = side;
    let files = Files {
        base,
        side: &side.path,
    };
    for (owner, shadow) in &plan.watched {
        if !diff(conn, std::slice::from_ref(shadow), files, out)?
            .0
            .is_empty()
        {
            return Ok(Err(format!(
                "virtual table {owner} changed in {}: its rows are kept by its module and cannot be merged row by row",
                side.location
            )));
        }
    }
    for (schema, version) in [
        ("main", "the last agreed version"),
        ("side", &*side.location),
    ] {
        if let Some(t) = null_key(conn, &plan.tables, schema, out)? {
            return Ok(Err(format!(
                "table {t} has a row whose PRIMARY KEY holds NULL in {version}: the key identifies no row"
            )));
        }
    }
    let (changes, hints) = diff(conn, &plan.tables, files, out)?;
    Ok(Ok((changes, hints, sequences(conn, "side", &side.path)?)))
}

/// Merges `sides` against `base` into a new file `out`. Returns how it went; `out` exists only
/// for [`MergeOutcome::Merged`].
pub fn merge_files(
    base: &Path,
    sides: &[MergeSide],
    strategy: Strategy,
    out: &Path,
) -> Result<MergeOutcome> {
    let result = merge_inner(base, sides, strategy, out);
    if !matches!(result, Ok(MergeOutcome::Merged { .. })) {
        let _ = std::fs::remove_file(out);
    }
    result
}

/// Every side's changes and hidden rowids, and the highest AUTOINCREMENT counters.
struct AllSides {
    changes: Vec<SideChanges>,
    hints: Vec<RowidHints>,
    seqs: BTreeMap<String, i64>,
}

/// Reads every side, or says why the merge cannot be done.
fn read_sides(
    conn: &Connection,
    plan: &Plan,
    base: &Path,
    sides: &[MergeSide],
    out: &Path,
) -> Result<std::result::Result<AllSides, String>> {
    let base_schema = schema(conn, out)?;
    let mut all = AllSides {
        changes: Vec::new(),
        hints: Vec::new(),
        seqs: BTreeMap::new(),
    };
    for side in sides {
        let side_conn = Connection::open_with_flags(&side.path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(err("open", &side.path))?;
        if schema(&side_conn, &side.path)? != base_schema {
            return Ok(Err(format!(
                "the schema or user_version in {} differs from the last agreed version (a migration?)",
                side.location
            )));
        }
        drop(side_conn);
        conn.execute("ATTACH DATABASE ?1 AS side", [side.path.to_string_lossy()])
            .map_err(err("attach", &side.path))?;
        let read = read_side(conn, plan, Side(side, base), out);
        conn.execute("DETACH DATABASE side", [])
            .map_err(err("detach", &side.path))?;
        let (c, h, s) = match read? {
            Ok(r) => r,
            Err(why) => return Ok(Err(why)),
        };
        all.changes.push(c);
        all.hints.push(h);
        for (name, seq) in s {
            let m = all.seqs.entry(name).or_insert(seq);
            *m = (*m).max(seq);
        }
    }
    Ok(Ok(all))
}

/// The rowid each new or changed row of a [`Key::HiddenRowid`] table had in the side whose
/// change was merged (the first side, in order, with that very change).
fn merged_hints(all: &AllSides, merged: &BTreeMap<String, TableChanges>) -> RowidHints {
    let mut out: RowidHints = BTreeMap::new();
    for (table, rows) in merged {
        for (canon, (_, change)) in rows {
            let hint = all.changes.iter().zip(&all.hints).find_map(|(c, h)| {
                let theirs = c.get(table)?.get(canon)?;
                same_change(&theirs.1, change)
                    .then(|| h.get(table)?.get(canon).copied())
                    .flatten()
            });
            if let Some(rowid) = hint {
                out.entry(table.clone())
                    .or_default()
                    .insert(canon.clone(), rowid);
            }
        }
    }
    out
}

/// Deletes every replaced or deleted row of `merged` from `out`; returns how many rows change
/// and, per [`Key::HiddenRowid`] table, the base's rowid of each row deleted (canonical key →
/// rowid).
fn delete_rows(
    conn: &Connection,
    tables: &[Table],
    merged: &BTreeMap<String, TableChanges>,
    out: &Path,
) -> Result<(usize, RowidHints)> {
    let mut rows_changed = 0;
    let mut old = RowidHints::new();
    for t in tables {
        let Some(changes) = merged.get(&t.name) else {
            continue;
        };
        let mut delete = conn.prepare(&t.delete_sql()).map_err(err("write", out))?;
        let mut rowids = HashMap::new();
        for (canon, (key, _)) in changes {
            let mut rows = delete
                .query(rusqlite::params_from_iter(key.iter()))
                .map_err(err("write", out))?;
            while let Some(r) = rows.next().map_err(err("write", out))? {
                if let Ok(rowid) = r.get::<_, i64>(0) {
                    rowids.insert(canon.clone(), rowid);
                }
            }
            rows_changed += 1;
        }
        old.insert(t.name.clone(), rowids);
    }
    Ok((rows_changed, old))
}

/// The rowids the new and changed rows of `t` are written with, in the order to write them:
/// the rowid of the alias key; for a [`Key::HiddenRowid`] table, first the rows the base had
/// (each keeps its base rowid), then the new ones (their side's rowid if still free, else
/// `None`: SQLite picks a fresh one); for a `WITHOUT ROWID` table, none.
fn rowids_of<'a>(
    conn: &Connection,
    t: &Table,
    changes: &'a TableChanges,
    old: Option<&Rowids>,
    side: Option<&Rowids>,
    out: &Path,
) -> Result<Vec<(&'a [Value], Option<i64>)>> {
    let rows = changes
        .iter()
        .filter_map(|(canon, (key, change))| match change {
            Change::Upsert(row) => Some((canon, key, row.as_slice())),
            Change::Delete => None,
        });
    let Key::HiddenRowid(r, _) = t.key else {
        return Ok(rows
            .map(|(_, key, row)| match (t.rowid(), &key[0]) {
                (Some(_), Value::Integer(id)) => (row, Some(*id)),
                _ => (row, None),
            })
            .collect());
    };
    // The rows the base had go first, each with its rowid (freed by the deletes).
    let (mut list, mut new) = (Vec::new(), Vec::new());
    let mut wanted = std::collections::HashSet::new();
    for (c, _, row) in rows {
        match old.and_then(|o| o.get(c)) {
            Some(&id) => {
                wanted.insert(id);
                list.push((row, Some(id)));
            }
            None => new.push((row, side.and_then(|s| s.get(c).copied()))),
        }
    }
    let mut taken = conn
        .prepare(&format!(
            "SELECT EXISTS (SELECT 1 FROM main.{} WHERE {r} = ?1)",
            quote(&t.name)
        ))
        .map_err(err("write", out))?;
    let mut fresh = Vec::new();
    for (row, hint) in new {
        let free = match hint {
            Some(h) if wanted.insert(h) => !taken
                .query_row([h], |x| x.get::<_, bool>(0))
                .map_err(err("write", out))?,
            _ => false,
        };
        match hint.filter(|_| free) {
            Some(h) => list.push((row, Some(h))),
            None => fresh.push((row, None)),
        }
    }
    // Last, the rows whose rowid SQLite picks (above every rowid written before them).
    list.extend(fresh);
    Ok(list)
}

/// Writes the merged changes into `out` (inside its transaction): every replaced or deleted
/// row is deleted first, then the new rows are inserted, so that a row whose unique key only
/// changed case or type never meets its old self. `Err` says which constraint the merged
/// rows break (then nothing is kept).
fn write_rows(
    conn: &Connection,
    tables: &[Table],
    merged: &BTreeMap<String, TableChanges>,
    hints: &RowidHints,
    out: &Path,
) -> Result<std::result::Result<usize, String>> {
    let (rows_changed, old) = delete_rows(conn, tables, merged, out)?;
    for t in tables {
        let Some(changes) = merged.get(&t.name) else {
            continue;
        };
        let (kept, given) = (old.get(&t.name), hints.get(&t.name));
        let rows = rowids_of(conn, t, changes, kept, given, out)?;
        let mut with_rowid = conn
            .prepare(&t.insert_sql(true))
            .map_err(err("write", out))?;
        let mut fresh = conn
            .prepare(&t.insert_sql(false))
            .map_err(err("write", out))?;
        for (row, rowid) in rows {
            let done = match rowid {
                Some(id) => with_rowid.execute(rusqlite::params_from_iter(
                    std::iter::once(Value::Integer(id)).chain(row.iter().cloned()),
                )),
                None => fresh.execute(rusqlite::params_from_iter(row.iter())),
            };
            if let Err(e) = done {
                return Ok(Err(format!(
                    "the merged rows break a constraint of {} (two rows with keys equal under its collation, or a unique value taken twice?): {e}",
                    t.name
                )));
            }
        }
    }
    Ok(Ok(rows_changed))
}

/// Sets every AUTOINCREMENT counter to the highest any version reached (never lower).
fn write_sequences(conn: &Connection, seqs: &BTreeMap<String, i64>, out: &Path) -> Result<()> {
    for (name, seq) in seqs {
        let updated = conn
            .execute(
                "UPDATE main.sqlite_sequence SET seq = max(seq, ?1) WHERE name = ?2",
                rusqlite::params![seq, name],
            )
            .map_err(err("write the AUTOINCREMENT counters of", out))?;
        if updated == 0 {
            conn.execute(
                "INSERT INTO main.sqlite_sequence(name, seq) VALUES (?2, ?1)",
                rusqlite::params![seq, name],
            )
            .map_err(err("write the AUTOINCREMENT counters of", out))?;
        }
    }
    Ok(())
}

/// Why the merged database in `out` cannot be kept (foreign keys the merged rows break, a
/// failed integrity check), if so.
fn check_merged(
    conn: &Connection,
    merged: &BTreeMap<String, TableChanges>,
    out: &Path,
) -> Result<Option<String>> {
    let mut fk = Vec::new();
    for table in fk_tables_to_check(conn, merged, out)? {
        let mut stmt = conn
            .prepare("SELECT \"table\", rowid, parent FROM pragma_foreign_key_check(?1, 'main')")
            .map_err(err("check", out))?;
        let v = stmt
            .query_map([&table], |r| {
                Ok(format!(
                    "{} row {:?} → {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, String>(2)?
                ))
            })
            .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>());
        fk.extend(v.map_err(err("check", out))?);
    }
    if !fk.is_empty() {
        return Ok(Some(format!(
            "the merged version breaks foreign keys: {}",
            fk.join(", ")
        )));
    }
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(err("check", out))?;
    Ok((check != "ok").then(|| format!("the merged version fails its integrity check: {check}")))
}

/// The tables whose foreign keys the merged changes can have broken: a table with foreign
/// keys whose rows changed, or whose parent table lost a row (a delete), or changed a row
/// while the key refers to columns other than the parent's PRIMARY KEY (a changed row keeps
/// its PRIMARY KEY: it is the row's identity in the merge). Every other table's rows and the
/// rows they refer to are as in the base, so checking it again could only find what the
/// agreed version already held.
fn fk_tables_to_check(
    conn: &Connection,
    merged: &BTreeMap<String, TableChanges>,
    out: &Path,
) -> Result<Vec<String>> {
    let e = err("read the foreign keys of", out);
    let changes_of = |name: &str| {
        merged
            .iter()
            .find(|(t, _)| t.eq_ignore_ascii_case(name))
            .map(|(_, c)| c)
    };
    let mut stmt = conn
        .prepare(&format!(
            "SELECT s.name, f.id, f.\"table\", f.\"to\" FROM main.sqlite_schema s, \
             pragma_foreign_key_list(s.name, 'main') f \
             WHERE s.type = 'table' AND {NOT_INTERNAL} ORDER BY s.name, f.id, f.seq"
        ))
        .map_err(&e)?;
    let mut keys: BTreeMap<(String, i64), ForeignKey> = BTreeMap::new();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .map_err(&e)?;
    for row in rows {
        let (child, id, parent, to): (String, i64, String, Option<String>) = row.map_err(&e)?;
        keys.entry((child, id))
            .or_insert_with(|| (parent, Vec::new()))
            .1
            .push(to);
    }
    let mut tables: Vec<String> = Vec::new();
    for ((child, _), (parent, to)) in keys {
        let needed = changes_of(&child).is_some()
            || changes_of(&parent).is_some_and(|changes| {
                changes.values().any(|(_, c)| matches!(c, Change::Delete))
                    || !refers_to_primary_key(conn, &parent, &to).unwrap_or(false)
            });
        if needed && !tables.contains(&child) {
            tables.push(child);
        }
    }
    Ok(tables)
}

/// A foreign key of a child table (keyed by the child and the key's id): its parent table,
/// and the parent columns it refers to (`None`: the parent's PRIMARY KEY).
type ForeignKey = (String, Vec<Option<String>>);

/// Whether a foreign key's parent columns `to` are exactly `parent`'s PRIMARY KEY.
fn refers_to_primary_key(
    conn: &Connection,
    parent: &str,
    to: &[Option<String>],
) -> rusqlite::Result<bool> {
    if to.iter().all(Option::is_none) {
        return Ok(true);
    }
    let mut stmt =
        conn.prepare("SELECT name FROM pragma_table_info(?1, 'main') WHERE pk > 0 ORDER BY pk")?;
    let pk: Vec<String> = stmt
        .query_map([parent], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(pk.len() == to.len()
        && pk
            .iter()
            .zip(to)
            .all(|(p, t)| t.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(p))))
}

fn merge_inner(
    base: &Path,
    sides: &[MergeSide],
    strategy: Strategy,
    out: &Path,
) -> Result<MergeOutcome> {
    std::fs::copy(base, out).ctx("copy the base to", out)?;
    let conn = Connection::open_with_flags(out, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(err("open", out))?;
    // The merge writes final values: the database's own triggers must not run again, and
    // foreign keys are checked once the whole merged version is written.
    conn.execute_batch("PRAGMA journal_mode = DELETE; PRAGMA foreign_keys = OFF;")
        .map_err(err("prepare", out))?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)
        .map_err(err("turn off the triggers of", out))?;
    let plan = match plan(&conn, out)? {
        Ok(p) => p,
        Err(why) => return Ok(MergeOutcome::Fallback(why)),
    };
    let all = match read_sides(&conn, &plan, base, sides, out)? {
        Ok(read) => read,
        Err(why) => return Ok(MergeOutcome::Fallback(why)),
    };
    let (merged, row_conflicts) = combine(sides, &all.changes, strategy);
    if strategy == Strategy::Manual && !row_conflicts.is_empty() {
        return Ok(MergeOutcome::Held(row_conflicts));
    }
    conn.execute_batch("BEGIN").map_err(err("write", out))?;
    let hints = merged_hints(&all, &merged);
    let rows_changed = match write_rows(&conn, &plan.tables, &merged, &hints, out)? {
        Ok(n) => n,
        Err(why) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Ok(MergeOutcome::Fallback(why));
        }
    };
    write_sequences(&conn, &all.seqs, out)?;
    for fts in &plan.rebuild {
        let q = quote(fts);
        conn.execute(&format!("INSERT INTO {q}({q}) VALUES('rebuild')"), [])
            .map_err(err("rebuild full-text index in", out))?;
    }
    conn.execute_batch("COMMIT").map_err(err("write", out))?;
    if let Some(why) = check_merged(&conn, &merged, out)? {
        return Ok(MergeOutcome::Fallback(why));
    }
    conn.close()
        .map_err(|(_, e)| Error::sqlite("close", out, e))?;
    std::fs::File::open(out)
        .and_then(|f| f.sync_all())
        .ctx("fsync", out)?;
    Ok(MergeOutcome::Merged {
        path: out.to_path_buf(),
        row_conflicts,
        rows_changed,
    })
}

/// Where the base snapshots of one synced file are kept.
pub fn base_dir(home: &Path, file: &str) -> PathBuf {
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut h, file.as_bytes());
    let id = crate::ids::hex_lower(&sha2::Digest::finalize(h));
    home.join(crate::names::STATE_DIR)
        .join("base")
        .join(&id[..16])
}

/// The base snapshot of version `hash` of `file`, if kept.
pub fn base_of(home: &Path, file: &str, hash: &str) -> Option<PathBuf> {
    let p = base_dir(home, file).join(format!("{hash}.db"));
    p.is_file().then_some(p)
}

/// Keeps `snapshot` (a consistent, checked copy of version `hash`) as the base of `file`
/// (the caller drops the bases no longer needed, [`drop_bases_except`]). With `movable` (a file of the run's own that nothing
/// reads afterwards), `snapshot` itself becomes the base when it can be hard-linked there (its
/// name `snapshot` is then removed, so the base has one name only); otherwise it is copied.
/// Bases are only ever read (a merge works on a copy of its base), except by [`patch_base`],
/// which rewrites one under another name once no merge needs it.
pub fn keep_base(
    home: &Path,
    file: &str,
    hash: &str,
    snapshot: &Path,
    movable: bool,
) -> Result<()> {
    let dir = base_dir(home, file);
    std::fs::create_dir_all(&dir).ctx("create folder", &dir)?;
    let target = dir.join(format!("{hash}.db"));
    if !target.exists() {
        let temp = crate::apply::Temp::beside(&target, "base")?;
        if movable && std::fs::hard_link(snapshot, temp.path()).is_ok() {
            std::fs::remove_file(snapshot).ctx("remove", snapshot)?;
        } else {
            std::fs::copy(snapshot, temp.path()).ctx("copy base snapshot to", temp.path())?;
        }
        std::fs::File::open(temp.path())
            .and_then(|f| f.sync_all())
            .ctx("fsync", temp.path())?;
        temp.put_own_file_in_place(&target)?;
    }
    Ok(())
}

/// Keeps version `hash` of `file` as its base without a full copy: the base of version
/// `old_hash`, which the caller knows no later merge needs, is renamed aside and rewritten in
/// place from `source` (a file holding version `hash`), only its differing pages written
/// ([`crate::sqlite::rewrite_to_match`]), fsynced, then renamed to `hash`'s name. `holds` says
/// whether `source` is still exactly what was verified (its stat signature); it is asked
/// before and after the rewrite. `Ok(false)`, with the old base untouched, when there is no
/// base of `old_hash` or `source` moved before the rewrite; `Ok(false)` with it gone when
/// `source` moved during it (the caller keeps the base another way). A crash midway leaves
/// the old base under a temp name, which is no base (and is dropped by
/// [`drop_bases_except`]): never a base whose bytes are not its version's.
pub fn patch_base(
    home: &Path,
    file: &str,
    (old_hash, hash): (&str, &str),
    source: &Path,
    holds: &dyn Fn() -> bool,
) -> Result<bool> {
    let dir = base_dir(home, file);
    let target = dir.join(format!("{hash}.db"));
    if target.exists() {
        return Ok(true);
    }
    let old = dir.join(format!("{old_hash}.db"));
    if old_hash == hash || !old.is_file() || !holds() {
        return Ok(false);
    }
    let temp = crate::apply::Temp::beside(&target, "base")?;
    std::fs::rename(&old, temp.path()).ctx("rename base", &old)?;
    crate::failpoint::hit(crate::failpoint::BASE_PATCH);
    let done = crate::sqlite::rewrite_to_match(temp.path(), source)?;
    if !holds() {
        return Ok(false);
    }
    temp.put_own_file_in_place(&target)?;
    tracing::debug!(
        "base of {file} rewritten from {}: {} of {} pages written",
        source.display(),
        done.written,
        done.pages
    );
    Ok(true)
}

/// Removes every base of `file` but those of the versions in `keep`.
pub fn drop_bases_except(home: &Path, file: &str, keep: &[&str]) {
    let dir = base_dir(home, file);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let kept = name
                .to_str()
                .and_then(|n| n.strip_suffix(".db"))
                .is_some_and(|h| keep.contains(&h));
            if !kept {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// How a table's rows are identified and read, as the merge identifies them: what the version
/// diff and the row restore of [`crate::inspect`] use.
pub(crate) struct RowIdentity {
    /// The stored columns, in order (generated columns left out).
    pub(crate) cols: Vec<String>,
    /// The positions of the declared PRIMARY KEY among `cols`; empty when the rowid is the
    /// key (an `INTEGER PRIMARY KEY`, or no PRIMARY KEY at all).
    pub(crate) key: Vec<usize>,
    /// The name the rowid is read and written under, for a rowid table.
    pub(crate) rowid: Option<&'static str>,
    /// The condition matching the row with exactly this key, by type and bytes (`?1`, `?2`,
    /// … are the key's values; the rowid's alone when `key` is empty).
    pub(crate) key_cond: String,
}

/// The [`RowIdentity`] of table `name` of the database on `conn` (`main`), or why its rows
/// cannot be identified.
pub(crate) fn row_identity(
    conn: &Connection,
    path: &Path,
    name: &str,
    without_rowid: bool,
) -> Result<std::result::Result<RowIdentity, String>> {
    Ok(
        table_def(conn, path, name, without_rowid)?.map(|t| RowIdentity {
            key: match &t.key {
                Key::Rowid(_) => Vec::new(),
                Key::Pk(idx) | Key::HiddenRowid(_, idx) => idx.clone(),
            },
            rowid: t.rowid(),
            key_cond: t.key_cond(),
            cols: t.cols,
        }),
    )
}

/// The external-content full-text tables of the database on `conn` (`main`): a `rebuild`
/// recomputes them from their content after rows were written with the triggers off.
pub(crate) fn full_text_to_rebuild(conn: &Connection, path: &Path) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'virtual'")
        .map_err(err("list the tables of", path))?;
    let names: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(err("list the tables of", path))?;
    let mut out = Vec::new();
    for n in names {
        if external_content(conn, path, &n)? {
            out.push(n);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(loc: &str, local: bool, mtime: i128) -> MergeSide {
        MergeSide {
            location: loc.into(),
            local,
            mtime_ns: mtime,
            path: PathBuf::new(),
        }
    }

    fn up(id: i64, name: &str) -> (String, (Vec<Value>, Change)) {
        let key = vec![Value::Integer(id)];
        (
            key_of(&key),
            (
                key,
                Change::Upsert(vec![Value::Integer(id), Value::Text(name.into())]),
            ),
        )
    }

    fn del(id: i64) -> (String, (Vec<Value>, Change)) {
        let key = vec![Value::Integer(id)];
        (key_of(&key), (key, Change::Delete))
    }

    fn changes(rows: Vec<(String, (Vec<Value>, Change))>) -> SideChanges {
        let mut t = BTreeMap::new();
        t.insert("entities".to_string(), rows.into_iter().collect());
        t
    }

    fn names(merged: &BTreeMap<String, TableChanges>) -> Vec<String> {
        merged
            .get("entities")
            .map(|t| {
                t.values()
                    .map(|(k, c)| match c {
                        Change::Upsert(row) => {
                            format!("{}={}", values_json(k), values_json(&row[1..]))
                        }
                        Change::Delete => format!("{}=deleted", values_json(k)),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A base is rewritten only from a source that holds still: a source that moved before
    /// the rewrite leaves the old base as it was; one that moved during it leaves no base
    /// of either version (and no temp file), never one whose bytes are not its name's.
    #[test]
    fn a_base_is_rewritten_only_from_a_source_that_held_still() {
        let home = tempfile::tempdir().unwrap();
        let dir = base_dir(home.path(), "m.db");
        std::fs::create_dir_all(&dir).unwrap();
        let (old, new) = (dir.join("old.db"), dir.join("new.db"));
        let source = home.path().join("source.db");
        std::fs::write(&source, vec![7u8; 3 * 4096]).unwrap();
        let names = || -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        std::fs::write(&old, vec![1u8; 2 * 4096]).unwrap();
        let patch = |holds: &dyn Fn() -> bool| {
            patch_base(home.path(), "m.db", ("old", "new"), &source, holds).unwrap()
        };
        assert!(!patch(&|| false));
        assert_eq!(names(), ["old.db"]);
        assert_eq!(std::fs::read(&old).unwrap(), vec![1u8; 2 * 4096]);
        // Holds when asked first, not when asked again after the rewrite.
        let asked = std::cell::Cell::new(0);
        assert!(!patch(&|| {
            asked.set(asked.get() + 1);
            asked.get() == 1
        }));
        assert_eq!(asked.get(), 2);
        assert!(names().is_empty(), "{:?}", names());
        // Holding still: the old base becomes the new one, same inode, the source's bytes.
        std::fs::write(&old, vec![1u8; 2 * 4096]).unwrap();
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = ino(&old);
        assert!(patch(&|| true));
        assert_eq!(names(), ["new.db"]);
        assert_eq!(ino(&new), before);
        assert_eq!(std::fs::read(&new).unwrap(), vec![7u8; 3 * 4096]);
        // No base of the old version: nothing to rewrite.
        assert!(!patch_base(home.path(), "m.db", ("gone", "other"), &source, &|| true).unwrap());
    }

    #[test]
    fn combine_table() {
        let sides = [side("local", true, 10), side("icloud", false, 20)];
        struct Case {
            name: &'static str,
            local: Vec<(String, (Vec<Value>, Change))>,
            remote: Vec<(String, (Vec<Value>, Change))>,
            strategy: Strategy,
            merged: Vec<&'static str>,
            conflicts: usize,
            winner: Option<&'static str>,
        }
        let cases = vec![
            Case {
                name: "disjoint edits both survive",
                local: vec![up(1, "a1")],
                remote: vec![up(2, "b2")],
                strategy: Strategy::Manual,
                merged: vec!["[1]=[\"a1\"]", "[2]=[\"b2\"]"],
                conflicts: 0,
                winner: None,
            },
            Case {
                name: "the same edit on both sides is no conflict",
                local: vec![up(1, "x")],
                remote: vec![up(1, "x")],
                strategy: Strategy::Manual,
                merged: vec!["[1]=[\"x\"]"],
                conflicts: 0,
                winner: None,
            },
            Case {
                name: "a delete of a row the other side did not touch",
                local: vec![del(3)],
                remote: vec![up(4, "new")],
                strategy: Strategy::Manual,
                merged: vec!["[3]=deleted", "[4]=[\"new\"]"],
                conflicts: 0,
                winner: None,
            },
            Case {
                name: "the same row changed differently: newest side wins",
                local: vec![up(1, "mine"), up(5, "five")],
                remote: vec![up(1, "theirs")],
                strategy: Strategy::Newest,
                merged: vec!["[1]=[\"theirs\"]", "[5]=[\"five\"]"],
                conflicts: 1,
                winner: Some("icloud"),
            },
            Case {
                name: "local strategy",
                local: vec![up(1, "mine")],
                remote: vec![up(1, "theirs")],
                strategy: Strategy::Local,
                merged: vec!["[1]=[\"mine\"]"],
                conflicts: 1,
                winner: Some("local"),
            },
            Case {
                name: "update against delete",
                local: vec![del(2)],
                remote: vec![up(2, "edited")],
                strategy: Strategy::Local,
                merged: vec!["[2]=deleted"],
                conflicts: 1,
                winner: Some("local"),
            },
            Case {
                name: "insert/insert with the same key and different values",
                local: vec![up(93, "from a")],
                remote: vec![up(93, "from b")],
                strategy: Strategy::Remote,
                merged: vec!["[93]=[\"from b\"]"],
                conflicts: 1,
                winner: Some("icloud"),
            },
            Case {
                name: "manual: conflicting rows are held, the rest is still computed",
                local: vec![up(1, "mine"), up(7, "seven")],
                remote: vec![up(1, "theirs")],
                strategy: Strategy::Manual,
                merged: vec!["[7]=[\"seven\"]"],
                conflicts: 1,
                winner: None,
            },
        ];
        for c in cases {
            let (merged, conflicts) =
                combine(&sides, &[changes(c.local), changes(c.remote)], c.strategy);
            assert_eq!(names(&merged), c.merged, "{}", c.name);
            assert_eq!(conflicts.len(), c.conflicts, "{}", c.name);
            if let Some(rc) = conflicts.first() {
                assert_eq!(rc.winner.as_deref(), c.winner, "{}", c.name);
                assert_eq!(rc.table, "entities");
                assert_eq!(rc.values.len(), 2, "{}: both values are recorded", c.name);
            }
        }
    }

    fn db(path: &Path, sql: &str) {
        let c = Connection::open(path).unwrap();
        c.execute_batch(sql).unwrap();
    }

    /// A base database and two sides copied from it: `local` edited by `sql_a` (older),
    /// `icloud` by `sql_b` (newer).
    struct Fixture {
        _dir: tempfile::TempDir,
        base: PathBuf,
        out: PathBuf,
        sides: [MergeSide; 2],
    }

    fn fixture(base_sql: &str, sql_a: &str, sql_b: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n);
        let (base, a, b, out) = (path("base.db"), path("a.db"), path("b.db"), path("out.db"));
        db(&base, base_sql);
        std::fs::copy(&base, &a).unwrap();
        std::fs::copy(&base, &b).unwrap();
        db(&a, sql_a);
        db(&b, sql_b);
        let side = |location: &str, local, mtime_ns, path| MergeSide {
            location: location.into(),
            local,
            mtime_ns,
            path,
        };
        let sides = [side("local", true, 1, a), side("icloud", false, 2, b)];
        Fixture {
            _dir: dir,
            base,
            out,
            sides,
        }
    }

    const SCHEMA: &str = "CREATE TABLE entities(id INTEGER PRIMARY KEY, name TEXT);
        CREATE TABLE conversations(id INTEGER PRIMARY KEY, title TEXT);
        INSERT INTO entities VALUES (1,'one'),(2,'two'),(3,'three');
        INSERT INTO conversations VALUES (1,'c1');";

    fn rows(path: &Path) -> Vec<(i64, String)> {
        let c = Connection::open(path).unwrap();
        let mut s = c
            .prepare("SELECT id, name FROM entities ORDER BY id")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    #[test]
    fn merge_files_disjoint_and_fallbacks() {
        let d = tempfile::tempdir().unwrap();
        let (base, a, b, out) = (
            d.path().join("base.db"),
            d.path().join("a.db"),
            d.path().join("b.db"),
            d.path().join("out.db"),
        );
        db(&base, SCHEMA);
        std::fs::copy(&base, &a).unwrap();
        std::fs::copy(&base, &b).unwrap();
        db(
            &a,
            "UPDATE entities SET name='ONE' WHERE id=1; INSERT INTO entities VALUES (10,'ten');",
        );
        db(
            &b,
            "DELETE FROM entities WHERE id=3; UPDATE conversations SET title='C1' WHERE id=1;",
        );
        let sides = [
            MergeSide {
                location: "local".into(),
                local: true,
                mtime_ns: 1,
                path: a.clone(),
            },
            MergeSide {
                location: "icloud".into(),
                local: false,
                mtime_ns: 2,
                path: b.clone(),
            },
        ];
        match merge_files(&base, &sides, Strategy::Manual, &out).unwrap() {
            MergeOutcome::Merged {
                row_conflicts,
                rows_changed,
                ..
            } => {
                assert!(row_conflicts.is_empty());
                assert_eq!(rows_changed, 4);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            rows(&out),
            vec![(1, "ONE".into()), (2, "two".into()), (10, "ten".into())]
        );
        let title: String = Connection::open(&out)
            .unwrap()
            .query_row("SELECT title FROM conversations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(title, "C1");

        // A schema change on one side: fallback, no output left.
        db(&b, "ALTER TABLE entities ADD COLUMN extra TEXT;");
        match merge_files(&base, &sides, Strategy::Newest, &out).unwrap() {
            MergeOutcome::Fallback(why) => assert!(why.contains("schema"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(!out.exists());

        // A table without a primary key: fallback.
        let base2 = d.path().join("base2.db");
        db(
            &base2,
            "CREATE TABLE log(msg TEXT); INSERT INTO log VALUES ('x');",
        );
        let s2 = [MergeSide {
            location: "local".into(),
            local: true,
            mtime_ns: 1,
            path: base2.clone(),
        }];
        match merge_files(&base2, &s2, Strategy::Newest, &out).unwrap() {
            MergeOutcome::Fallback(why) => assert!(why.contains("no primary key"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn merge_refuses_broken_foreign_keys() {
        let f = fixture(
            "CREATE TABLE entities(id INTEGER PRIMARY KEY, name TEXT);
             CREATE TABLE relations(id INTEGER PRIMARY KEY, src INTEGER REFERENCES entities(id));
             INSERT INTO entities VALUES (1,'one'),(2,'two');",
            "DELETE FROM entities WHERE id=2;",
            "INSERT INTO relations VALUES (1, 2);",
        );
        let (base, out, sides) = (f.base.clone(), f.out.clone(), f.sides.clone());
        match merge_files(&base, &sides, Strategy::Newest, &out).unwrap() {
            MergeOutcome::Fallback(why) => assert!(why.contains("foreign keys"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_broken_foreign_key_the_agreed_version_already_held_does_not_stop_a_merge() {
        // `notes` points at an entity that never existed, in the base already (SQLite does
        // not enforce foreign keys unless asked): the merge, which touches neither `notes`
        // nor any entity a note refers to, breaks nothing and is kept.
        let f = fixture(
            "PRAGMA foreign_keys = OFF;
             CREATE TABLE entities(id INTEGER PRIMARY KEY, name TEXT);
             CREATE TABLE notes(id INTEGER PRIMARY KEY, entity INTEGER REFERENCES entities(id));
             INSERT INTO entities VALUES (1,'one'),(2,'two'),(3,'three');
             INSERT INTO notes VALUES (1, 1), (2, 99);",
            "UPDATE entities SET name='ONE' WHERE id=1;",
            "UPDATE entities SET name='TWO' WHERE id=2;",
        );
        let (base, out, sides) = (f.base.clone(), f.out.clone(), f.sides.clone());
        match merge_files(&base, &sides, Strategy::Newest, &out).unwrap() {
            MergeOutcome::Merged { rows_changed, .. } => assert_eq!(rows_changed, 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn foreign_keys_to_a_changed_unique_column_or_from_changed_rows_are_checked() {
        // The parent's changed row keeps its PRIMARY KEY but not the UNIQUE code a child
        // refers to.
        let f = fixture(
            "CREATE TABLE kinds(id INTEGER PRIMARY KEY, code TEXT UNIQUE);
             CREATE TABLE things(id INTEGER PRIMARY KEY, kind TEXT REFERENCES kinds(code));
             INSERT INTO kinds VALUES (1,'a'),(2,'b');
             INSERT INTO things VALUES (1,'a');",
            "PRAGMA foreign_keys = OFF; UPDATE kinds SET code='z' WHERE id=1;",
            "UPDATE kinds SET code='y' WHERE id=2;",
        );
        let (base, out, sides) = (f.base.clone(), f.out.clone(), f.sides.clone());
        match merge_files(&base, &sides, Strategy::Newest, &out).unwrap() {
            MergeOutcome::Fallback(why) => assert!(why.contains("foreign keys"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A child row changed to point nowhere, while its parent table is untouched.
        let f = fixture(
            "CREATE TABLE entities(id INTEGER PRIMARY KEY, name TEXT);
             CREATE TABLE relations(id INTEGER PRIMARY KEY, src INTEGER REFERENCES entities(id));
             INSERT INTO entities VALUES (1,'one');
             INSERT INTO relations VALUES (1, 1), (2, 1);",
            "PRAGMA foreign_keys = OFF; UPDATE relations SET src = 7 WHERE id = 1;",
            "UPDATE relations SET src = 1 WHERE id = 2;",
        );
        let (base, out, sides) = (f.base.clone(), f.out.clone(), f.sides.clone());
        match merge_files(&base, &sides, Strategy::Newest, &out).unwrap() {
            MergeOutcome::Fallback(why) => assert!(why.contains("foreign keys"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn external_content_full_text_index_is_rebuilt_not_diffed() {
        let f = fixture(
            "CREATE TABLE entities(id INTEGER PRIMARY KEY, name TEXT);
             CREATE VIRTUAL TABLE entities_fts USING fts5(name, content='entities', content_rowid='id');
             INSERT INTO entities VALUES (1,'alpha'),(2,'beta');
             INSERT INTO entities_fts(entities_fts) VALUES('rebuild');",
            "UPDATE entities SET name='gamma' WHERE id=1; INSERT INTO entities_fts(entities_fts) VALUES('rebuild');",
            "UPDATE entities SET name='delta' WHERE id=2; INSERT INTO entities_fts(entities_fts) VALUES('rebuild');",
        );
        let (base, out, sides) = (f.base.clone(), f.out.clone(), f.sides.clone());
        match merge_files(&base, &sides, Strategy::Manual, &out).unwrap() {
            MergeOutcome::Merged { row_conflicts, .. } => {
                assert!(row_conflicts.is_empty(), "{row_conflicts:?}")
            }
            other => panic!("{other:?}"),
        }
        let c = Connection::open(&out).unwrap();
        let hits = |q: &str| -> Vec<i64> {
            let mut st = c
                .prepare(
                    "SELECT rowid FROM entities_fts WHERE entities_fts MATCH ?1 ORDER BY rowid",
                )
                .unwrap();
            st.query_map([q], |r| r.get(0))
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
        };
        assert_eq!(hits("gamma"), vec![1]);
        assert_eq!(hits("delta"), vec![2]);
        assert!(
            hits("alpha").is_empty() && hits("beta").is_empty(),
            "the index follows the merged rows"
        );
    }

    #[test]
    fn composite_and_text_keys_are_diffed_too() {
        let f = fixture(
            "CREATE TABLE links(src INTEGER, dst INTEGER, kind TEXT, PRIMARY KEY(src, dst));
             CREATE TABLE tags(name TEXT PRIMARY KEY, color TEXT) WITHOUT ROWID;
             INSERT INTO links VALUES (1,2,'x'),(2,3,'y');
             INSERT INTO tags VALUES ('red','#f00'),('blue','#00f');",
            "UPDATE links SET kind='X' WHERE src=1 AND dst=2; DELETE FROM tags WHERE name='blue';",
            "INSERT INTO links VALUES (3,4,'z'); UPDATE tags SET color='#e00' WHERE name='red';",
        );
        let (base, out, sides) = (f.base.clone(), f.out.clone(), f.sides.clone());
        match merge_files(&base, &sides, Strategy::Manual, &out).unwrap() {
            MergeOutcome::Merged { rows_changed, .. } => assert_eq!(rows_changed, 4),
            other => panic!("{other:?}"),
        }
        let c = Connection::open(&out).unwrap();
        let links: Vec<(i64, i64, String)> = c
            .prepare("SELECT src, dst, kind FROM links ORDER BY src")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(
            links,
            vec![(1, 2, "X".into()), (2, 3, "y".into()), (3, 4, "z".into())]
        );
        let tags: Vec<(String, String)> = c
            .prepare("SELECT name, color FROM tags ORDER BY name")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(tags, vec![("red".into(), "#e00".into())]);
    }
}

/// Regression tests for the row merge's exactness (issue 13): each failed on the merge that
/// read columns with `table_info`, compared rows under the columns' collations and let the
/// database's triggers run.
#[cfg(test)]
mod exact {
    use super::*;

    struct Merged {
        _dir: tempfile::TempDir,
        conn: Connection,
    }

    /// Merges `sql_a` (local, older) and `sql_b` (icloud, newer) made on `base_sql` (newest).
    fn run(base_sql: &str, sql_a: &str, sql_b: &str) -> (tempfile::TempDir, MergeOutcome) {
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n);
        Connection::open(path("base.db"))
            .unwrap()
            .execute_batch(base_sql)
            .unwrap();
        let mut sides = Vec::new();
        for (i, (loc, sql)) in [("local", sql_a), ("icloud", sql_b)].iter().enumerate() {
            let p = path(&format!("{loc}.db"));
            std::fs::copy(path("base.db"), &p).unwrap();
            Connection::open(&p).unwrap().execute_batch(sql).unwrap();
            sides.push(MergeSide {
                location: loc.to_string(),
                local: i == 0,
                mtime_ns: i as i128,
                path: p,
            });
        }
        let outcome = merge_files(&path("base.db"), &sides, Strategy::Newest, &path("out.db"));
        (dir, outcome.unwrap())
    }

    /// [`run`], which must merge without a row conflict.
    fn merge(base_sql: &str, sql_a: &str, sql_b: &str) -> Merged {
        let (dir, outcome) = run(base_sql, sql_a, sql_b);
        match outcome {
            MergeOutcome::Merged { row_conflicts, .. } => {
                assert!(row_conflicts.is_empty(), "{row_conflicts:?}")
            }
            other => panic!("{other:?}"),
        }
        let conn = Connection::open(dir.path().join("out.db")).unwrap();
        Merged { _dir: dir, conn }
    }

    /// [`run`], which must fall back; the reason.
    fn fallback(base_sql: &str, sql_a: &str, sql_b: &str) -> String {
        match run(base_sql, sql_a, sql_b).1 {
            MergeOutcome::Fallback(why) => why,
            other => panic!("{other:?}"),
        }
    }

    /// Every row of `sql`, each value with its exact type (`Real(-0.0)` keeps its sign).
    fn rows(m: &Merged, sql: &str) -> Vec<String> {
        let mut st = m.conn.prepare(sql).unwrap();
        let n = st.column_count();
        st.query_map([], |r| {
            let v: Vec<String> = (0..n)
                .map(|i| format!("{:?}", r.get::<_, Value>(i).unwrap()))
                .collect();
            Ok(v.join(" "))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
    }

    #[test]
    fn generated_columns_between_stored_ones_are_recomputed_not_shifted() {
        let m = merge(
            "CREATE TABLE items(id INTEGER PRIMARY KEY, a TEXT,
                 g TEXT GENERATED ALWAYS AS (a || '!') VIRTUAL,
                 s TEXT GENERATED ALWAYS AS (upper(a)) STORED, b TEXT);
             INSERT INTO items(id, a, b) VALUES (1, 'a1', 'b1'), (2, 'a2', 'b2');",
            "UPDATE items SET b = 'B1' WHERE id = 1;",
            "UPDATE items SET a = 'x2' WHERE id = 2; INSERT INTO items(id, a, b) VALUES (3, 'a3', 'b3');",
        );
        assert_eq!(
            rows(&m, "SELECT id, a, g, s, b FROM items ORDER BY id"),
            [
                r#"Integer(1) Text("a1") Text("a1!") Text("A1") Text("B1")"#,
                r#"Integer(2) Text("x2") Text("x2!") Text("X2") Text("b2")"#,
                r#"Integer(3) Text("a3") Text("a3!") Text("A3") Text("b3")"#,
            ]
        );
    }

    #[test]
    fn a_case_only_rename_in_a_nocase_key_survives() {
        let m = merge(
            "CREATE TABLE tags(name TEXT PRIMARY KEY COLLATE NOCASE, n INTEGER) WITHOUT ROWID;
             CREATE TABLE terms(name TEXT PRIMARY KEY COLLATE NOCASE, n INTEGER);
             INSERT INTO tags VALUES ('ai', 1), ('ml', 2);
             INSERT INTO terms VALUES ('ai', 1), ('ml', 2);",
            "UPDATE tags SET name = 'AI' WHERE name = 'ai'; UPDATE terms SET name = 'AI' WHERE name = 'ai';",
            "UPDATE tags SET n = 20 WHERE name = 'ml'; UPDATE terms SET n = 20 WHERE name = 'ml';",
        );
        let want = [r#"Text("AI") Integer(1)"#, r#"Text("ml") Integer(20)"#];
        assert_eq!(rows(&m, "SELECT name, n FROM tags ORDER BY name"), want);
        assert_eq!(rows(&m, "SELECT name, n FROM terms ORDER BY rowid"), want);
    }

    #[test]
    fn a_case_only_change_in_a_nocase_column_survives() {
        let m = merge(
            "CREATE TABLE tags(name TEXT PRIMARY KEY, label TEXT COLLATE NOCASE) WITHOUT ROWID;
             INSERT INTO tags VALUES ('a', 'ai'), ('b', 'ml');",
            "UPDATE tags SET label = 'AI' WHERE name = 'a';",
            "UPDATE tags SET label = 'ML!' WHERE name = 'b';",
        );
        assert_eq!(
            rows(&m, "SELECT name, label FROM tags ORDER BY name"),
            [r#"Text("a") Text("AI")"#, r#"Text("b") Text("ML!")"#]
        );
    }

    #[test]
    fn the_databases_triggers_do_not_run_again() {
        let m = merge(
            "CREATE TABLE entities(id INTEGER PRIMARY KEY, name TEXT);
             CREATE TABLE counters(name TEXT PRIMARY KEY, n INTEGER);
             CREATE TRIGGER e_ins AFTER INSERT ON entities
                 BEGIN UPDATE counters SET n = n + 1 WHERE name = 'entities'; END;
             CREATE TRIGGER e_del AFTER DELETE ON entities
                 BEGIN UPDATE counters SET n = n - 1 WHERE name = 'entities'; END;
             INSERT INTO counters VALUES ('entities', 0);
             INSERT INTO entities VALUES (1, 'one'), (2, 'two');",
            "INSERT INTO entities VALUES (3, 'three');",
            "UPDATE entities SET name = 'TWO' WHERE id = 2;",
        );
        assert_eq!(rows(&m, "SELECT n FROM counters"), ["Integer(3)"]);
        assert_eq!(rows(&m, "SELECT count(*) FROM entities"), ["Integer(3)"]);
    }

    #[test]
    fn autoincrement_counters_end_at_the_highest_of_the_sides() {
        let m = merge(
            "CREATE TABLE log(id INTEGER PRIMARY KEY AUTOINCREMENT, msg TEXT);
             INSERT INTO log(msg) VALUES ('one'), ('two');",
            "INSERT INTO log VALUES (10, 'ten'); DELETE FROM log WHERE id = 10;",
            "INSERT INTO log VALUES (5, 'five');",
        );
        assert_eq!(
            rows(&m, "SELECT seq FROM sqlite_sequence WHERE name = 'log'"),
            ["Integer(10)"]
        );
        assert_eq!(rows(&m, "SELECT id FROM log ORDER BY id").len(), 3);
    }

    #[test]
    fn values_are_compared_by_type_and_bytes() {
        let m = merge(
            "CREATE TABLE kv(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
             CREATE TABLE nums(id INTEGER PRIMARY KEY, v);
             CREATE TABLE inf(k PRIMARY KEY, v) WITHOUT ROWID;
             INSERT INTO kv VALUES ('a', 1), ('b', 2);
             INSERT INTO nums VALUES (1, 0.0), (2, 0.0);
             INSERT INTO inf VALUES (1e999, 'plus'), (-1e999, 'minus');",
            "UPDATE kv SET v = 1.0 WHERE k = 'a'; UPDATE nums SET v = -0.0 WHERE id = 1;
             UPDATE inf SET v = 'PLUS' WHERE k = 1e999;",
            "UPDATE kv SET v = '2' WHERE k = 'b'; UPDATE nums SET v = 1 WHERE id = 2;
             UPDATE inf SET v = 'MINUS' WHERE k = -1e999;",
        );
        assert_eq!(
            rows(&m, "SELECT k, v FROM kv ORDER BY k"),
            [r#"Text("a") Real(1.0)"#, r#"Text("b") Text("2")"#]
        );
        assert_eq!(
            rows(&m, "SELECT id, v FROM nums ORDER BY id"),
            ["Integer(1) Real(-0.0)", "Integer(2) Integer(1)"]
        );
        assert_eq!(
            rows(&m, "SELECT k, v FROM inf ORDER BY k"),
            [r#"Real(-inf) Text("MINUS")"#, r#"Real(inf) Text("PLUS")"#]
        );
    }

    #[test]
    fn unique_values_swapped_between_rows_merge() {
        let m = merge(
            "CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT UNIQUE, n INTEGER);
             INSERT INTO users VALUES (1, 'a@x', 0), (2, 'b@x', 0), (3, 'c@x', 0);",
            "UPDATE users SET email = 'tmp' WHERE id = 1; UPDATE users SET email = 'a@x' WHERE id = 2;
             UPDATE users SET email = 'b@x' WHERE id = 1;",
            "UPDATE users SET n = 3 WHERE id = 3;",
        );
        assert_eq!(
            rows(&m, "SELECT id, email, n FROM users ORDER BY id"),
            [
                r#"Integer(1) Text("b@x") Integer(0)"#,
                r#"Integer(2) Text("a@x") Integer(0)"#,
                r#"Integer(3) Text("c@x") Integer(3)"#,
            ]
        );
    }

    #[test]
    fn keys_equal_under_nocase_but_not_in_bytes_fall_back() {
        let why = fallback(
            "CREATE TABLE tags(name TEXT PRIMARY KEY COLLATE NOCASE, n INTEGER) WITHOUT ROWID;
             INSERT INTO tags VALUES ('ai', 1);",
            "UPDATE tags SET name = 'AI' WHERE name = 'ai';",
            "UPDATE tags SET name = 'Ai' WHERE name = 'ai';",
        );
        assert!(why.contains("constraint of tags"), "{why}");
    }

    #[test]
    fn a_replace_conflict_clause_never_drops_a_merged_row() {
        let why = fallback(
            "CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT UNIQUE ON CONFLICT REPLACE);
             INSERT INTO users VALUES (1, 'a@x');",
            "INSERT INTO users VALUES (3, 'new@x');",
            "INSERT INTO users VALUES (4, 'new@x');",
        );
        assert!(why.contains("UNIQUE"), "{why}");
    }

    #[test]
    fn a_changed_contentless_index_falls_back_an_unchanged_one_merges() {
        let schema = "CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT);
             CREATE TABLE notes(id INTEGER PRIMARY KEY, t TEXT);
             CREATE VIRTUAL TABLE docs_fts USING fts5(body, content = '');
             CREATE TRIGGER docs_i AFTER INSERT ON docs BEGIN
                 INSERT INTO docs_fts(rowid, body) VALUES (new.id, new.body); END;
             INSERT INTO docs VALUES (1, 'alpha'); INSERT INTO notes VALUES (1, 'n');";
        let why = fallback(
            schema,
            "INSERT INTO docs VALUES (2, 'beta');",
            "UPDATE notes SET t = 'N' WHERE id = 1;",
        );
        assert!(
            why.contains("virtual table docs_fts changed in local"),
            "{why}"
        );
        let m = merge(
            schema,
            "INSERT INTO notes VALUES (2, 'm');",
            "UPDATE notes SET t = 'N' WHERE id = 1;",
        );
        assert_eq!(
            rows(
                &m,
                "SELECT rowid FROM docs_fts WHERE docs_fts MATCH 'alpha'"
            ),
            ["Integer(1)"]
        );
        assert_eq!(rows(&m, "SELECT count(*) FROM notes"), ["Integer(2)"]);
    }

    #[test]
    fn a_table_named_like_a_full_text_index_is_still_merged() {
        let m = merge(
            "CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT);
             CREATE VIRTUAL TABLE docs_fts USING fts5(body, content = 'docs', content_rowid = 'id');
             CREATE TABLE docs_fts_notes(id INTEGER PRIMARY KEY, t TEXT);
             INSERT INTO docs VALUES (1, 'alpha'); INSERT INTO docs_fts_notes VALUES (1, 'n');",
            "INSERT INTO docs_fts_notes VALUES (2, 'from a');",
            "INSERT INTO docs VALUES (2, 'beta');",
        );
        assert_eq!(
            rows(&m, "SELECT t FROM docs_fts_notes ORDER BY id"),
            [r#"Text("n")"#, r#"Text("from a")"#]
        );
        assert_eq!(
            rows(&m, "SELECT rowid FROM docs_fts WHERE docs_fts MATCH 'beta'"),
            ["Integer(2)"]
        );
    }

    /// A text-keyed rowid table with an external-content full-text index over its hidden
    /// rowid: the sides' auto-assigned rowids of their new rows are the same.
    const NOTES: &str = "CREATE TABLE notes(id TEXT PRIMARY KEY, body TEXT);
         CREATE VIRTUAL TABLE notes_fts USING fts5(body, content = 'notes');
         CREATE TRIGGER notes_i AFTER INSERT ON notes BEGIN
             INSERT INTO notes_fts(rowid, body) VALUES (new.rowid, new.body); END;
         CREATE TRIGGER notes_d AFTER DELETE ON notes BEGIN
             INSERT INTO notes_fts(notes_fts, rowid, body) VALUES ('delete', old.rowid, old.body); END;
         INSERT INTO notes VALUES ('0b7e', 'alpha');";

    #[test]
    fn different_rows_inserted_into_a_text_keyed_rowid_table_both_survive() {
        let m = merge(
            NOTES,
            "INSERT INTO notes VALUES ('5f1c-uuid-a', 'beta');",
            "INSERT INTO notes VALUES ('9a3d-uuid-b', 'gamma');",
        );
        assert_eq!(
            rows(&m, "SELECT id, body FROM notes ORDER BY id"),
            [
                r#"Text("0b7e") Text("alpha")"#,
                r#"Text("5f1c-uuid-a") Text("beta")"#,
                r#"Text("9a3d-uuid-b") Text("gamma")"#,
            ]
        );
        // Each word is found in the row holding it (the index is rebuilt over the rowids the
        // merged rows got), and the index agrees with its content.
        for (word, id) in [
            ("alpha", "0b7e"),
            ("beta", "5f1c-uuid-a"),
            ("gamma", "9a3d-uuid-b"),
        ] {
            let sql = format!(
                "SELECT id FROM notes WHERE rowid IN (SELECT rowid FROM notes_fts WHERE notes_fts MATCH '{word}')"
            );
            assert_eq!(rows(&m, &sql), [format!("Text({id:?})")], "{word}");
        }
        m.conn
            .execute_batch("INSERT INTO notes_fts(notes_fts) VALUES ('integrity-check')")
            .unwrap();
    }

    #[test]
    fn different_rows_inserted_into_a_composite_keyed_rowid_table_both_survive() {
        let m = merge(
            "CREATE TABLE members(team INTEGER, user TEXT, role TEXT, PRIMARY KEY(team, user));
             INSERT INTO members VALUES (1, 'ann', 'owner');",
            "INSERT INTO members VALUES (1, 'bob', 'editor'); UPDATE members SET role = 'admin' WHERE user = 'ann';",
            "INSERT INTO members VALUES (2, 'ann', 'viewer');",
        );
        assert_eq!(
            rows(
                &m,
                "SELECT team, user, role FROM members ORDER BY team, user"
            ),
            [
                r#"Integer(1) Text("ann") Text("admin")"#,
                r#"Integer(1) Text("bob") Text("editor")"#,
                r#"Integer(2) Text("ann") Text("viewer")"#,
            ]
        );
    }

    #[test]
    fn the_same_key_inserted_with_different_values_is_one_conflict_reported_by_the_key() {
        let (dir, outcome) = run(
            NOTES,
            "INSERT INTO notes VALUES ('7c2e', 'from local');",
            "INSERT INTO notes VALUES ('7c2e', 'from icloud');",
        );
        let MergeOutcome::Merged { row_conflicts, .. } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(row_conflicts.len(), 1, "{row_conflicts:?}");
        let rc = &row_conflicts[0];
        assert_eq!(
            (rc.table.as_str(), rc.key.as_str()),
            ("notes", r#"["7c2e"]"#)
        );
        assert_eq!(rc.winner.as_deref(), Some("icloud"));
        assert!(
            rc.values
                .contains(&("local".into(), Some(r#"["7c2e","from local"]"#.into()))),
            "{rc:?}"
        );
        let m = Merged {
            conn: Connection::open(dir.path().join("out.db")).unwrap(),
            _dir: dir,
        };
        assert_eq!(
            rows(&m, "SELECT id, body FROM notes ORDER BY id"),
            [
                r#"Text("0b7e") Text("alpha")"#,
                r#"Text("7c2e") Text("from icloud")"#
            ]
        );
    }

    #[test]
    fn hidden_rowids_are_kept_where_free_and_fresh_where_taken() {
        let m = merge(
            "CREATE TABLE notes(id TEXT PRIMARY KEY, body TEXT);
             INSERT INTO notes VALUES ('a', 'one'), ('b', 'two');",
            "UPDATE notes SET body = 'ONE' WHERE id = 'a'; INSERT INTO notes VALUES ('c', 'three');",
            "UPDATE notes SET body = 'TWO' WHERE id = 'b'; INSERT INTO notes VALUES ('d', 'four');",
        );
        // Changed rows keep their rowids, 'c' its side's (3), 'd' (3 on its side too) gets a
        // fresh one.
        assert_eq!(
            rows(&m, "SELECT rowid, id, body FROM notes ORDER BY rowid"),
            [
                r#"Integer(1) Text("a") Text("ONE")"#,
                r#"Integer(2) Text("b") Text("TWO")"#,
                r#"Integer(3) Text("c") Text("three")"#,
                r#"Integer(4) Text("d") Text("four")"#,
            ]
        );
    }

    #[test]
    fn a_null_in_the_key_of_a_rowid_table_falls_back() {
        let why = fallback(
            "CREATE TABLE notes(id TEXT PRIMARY KEY, body TEXT); INSERT INTO notes VALUES ('a', 'x');",
            "INSERT INTO notes VALUES (NULL, 'from local');",
            "INSERT INTO notes VALUES (NULL, 'from icloud');",
        );
        assert!(
            why.contains("table notes has a row whose PRIMARY KEY holds NULL in local"),
            "{why}"
        );
    }

    #[test]
    fn a_changed_user_version_falls_back() {
        let why = fallback(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v); INSERT INTO t VALUES (1, 'a');",
            "PRAGMA user_version = 2; UPDATE t SET v = 'b' WHERE id = 1;",
            "INSERT INTO t VALUES (2, 'c');",
        );
        assert!(why.contains("user_version in local"), "{why}");
    }
}
