//! Row-level three-way merge of SQLite databases (SPEC §6 "Row merge"): the changes each
//! side made against the last agreed version (the base), combined row by row. Rows changed on
//! one side only, or identically on several, merge silently; a row changed differently on two
//! sides is a row conflict, whose winner the strategy picks (or, with `manual`, the whole file
//! is held). Anything the merge cannot vouch for falls back to the file-level strategy.
//!
//! [`combine`] is the pure decision; [`merge_files`] does the I/O around it.

use crate::config::Strategy;
use crate::error::{Error, IoContext, Result};
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// The row's primary key, as JSON.
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
            let pick = if by_side.iter().all(|(_, ch)| ch.1 == first.1) {
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

/// Canonical text of a key or row: unambiguous across types.
pub fn values_json(values: &[Value]) -> String {
    let items: Vec<serde_json::Value> = values
        .iter()
        .map(|v| match v {
            Value::Null => serde_json::Value::Null,
            Value::Integer(i) => serde_json::json!(i),
            Value::Real(f) => serde_json::json!({ "real": f }),
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

struct Table {
    name: String,
    pk: Vec<String>,
    /// The key is the rowid (an `INTEGER PRIMARY KEY` of a rowid table): rows come in key
    /// order for free, so the diff is one merge-join pass instead of two set differences.
    rowid_key: bool,
}

/// The tables to diff, and the full-text tables to rebuild after the merge.
type Mergeable = (Vec<Table>, Vec<String>);

fn err<'a>(op: &'static str, path: &'a Path) -> impl Fn(rusqlite::Error) -> Error + 'a {
    move |e| Error::sqlite(op, path, e)
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn schema(conn: &Connection, path: &Path) -> Result<Vec<(String, String, Option<String>)>> {
    let mut stmt = conn
        .prepare("SELECT type, name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name")
        .map_err(err("read the schema of", path))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(err("read the schema of", path))?;
    rows.collect::<rusqlite::Result<_>>()
        .map_err(err("read the schema of", path))
}

/// The tables to diff (with their primary keys), the external-content full-text tables to
/// rebuild afterwards, or why the merge cannot be done.
fn tables(conn: &Connection, path: &Path) -> Result<std::result::Result<Mergeable, String>> {
    let mut stmt = conn
        .prepare("SELECT name, type, wr FROM pragma_table_list WHERE schema = 'main' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .map_err(err("list the tables of", path))?;
    let list: Vec<(String, String, bool)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .and_then(|rows| rows.collect())
        .map_err(err("list the tables of", path))?;
    let mut out = Vec::new();
    let mut rebuild = Vec::new();
    for (name, kind, without_rowid) in list {
        match kind.as_str() {
            "table" => {}
            "virtual" => {
                let sql: String = conn
                    .query_row(
                        "SELECT sql FROM sqlite_schema WHERE name = ?1",
                        [&name],
                        |r| r.get(0),
                    )
                    .map_err(err("read the schema of", path))?;
                let lower = sql.to_ascii_lowercase().replace(' ', "");
                if lower.contains("usingfts")
                    && lower.contains("content=")
                    && !lower.contains("content=''")
                {
                    rebuild.push(name);
                    continue;
                }
                return Ok(Err(format!(
                    "virtual table {name} holds its own rows and is not merged row by row"
                )));
            }
            _ => continue, // views and full-text shadow tables belong to their owners
        }
        let mut stmt = conn
            .prepare(&format!(
                "SELECT name, upper(type) FROM pragma_table_info({}) WHERE pk > 0 ORDER BY pk",
                quote_literal(&name)
            ))
            .map_err(err("read the columns of", path))?;
        let pk: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(err("read the columns of", path))?;
        if pk.is_empty() {
            return Ok(Err(format!("table {name} has no primary key")));
        }
        let rowid_key = !without_rowid && pk.len() == 1 && pk[0].1 == "INTEGER";
        let pk = pk.into_iter().map(|(c, _)| c).collect();
        out.push(Table {
            name,
            pk,
            rowid_key,
        });
    }
    Ok(Ok((out, rebuild)))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn key_of(values: &[Value]) -> String {
    values_json(values)
}

/// One side's changes against the base, computed with SQLite's own row comparison.
fn diff(conn: &Connection, tables: &[Table], out: &Path) -> Result<SideChanges> {
    let mut changes = SideChanges::new();
    for t in tables {
        let name = quote(&t.name);
        let pk_cols: Vec<String> = t.pk.iter().map(|c| quote(c)).collect();
        let pk_list = pk_cols.join(", ");
        let cols: Vec<String> = {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT name FROM pragma_table_info({})",
                    quote_literal(&t.name)
                ))
                .map_err(err("read the columns of", out))?;
            let v = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .and_then(|r| r.collect());
            v.map_err(err("read the columns of", out))?
        };
        let pk_idx: Vec<usize> =
            t.pk.iter()
                .filter_map(|p| cols.iter().position(|c| c == p))
                .collect();
        let table = changes.entry(t.name.clone()).or_default();
        if t.rowid_key {
            merge_join(
                conn,
                &name,
                &quote(&t.pk[0]),
                pk_idx[0],
                cols.len(),
                table,
                out,
            )?;
            if table.is_empty() {
                changes.remove(&t.name);
            }
            continue;
        }
        let sql = format!("SELECT * FROM side.{name} EXCEPT SELECT * FROM main.{name}");
        let mut stmt = conn.prepare(&sql).map_err(err("diff", out))?;
        let n = cols.len();
        let mut rows = stmt.query([]).map_err(err("diff", out))?;
        while let Some(r) = rows.next().map_err(err("diff", out))? {
            let row: Vec<Value> = (0..n)
                .map(|i| r.get(i))
                .collect::<rusqlite::Result<_>>()
                .map_err(err("diff", out))?;
            let key: Vec<Value> = pk_idx.iter().map(|&i| row[i].clone()).collect();
            table.insert(key_of(&key), (key, Change::Upsert(row)));
        }
        let sql =
            format!("SELECT {pk_list} FROM main.{name} EXCEPT SELECT {pk_list} FROM side.{name}");
        let mut stmt = conn.prepare(&sql).map_err(err("diff", out))?;
        let mut rows = stmt.query([]).map_err(err("diff", out))?;
        while let Some(r) = rows.next().map_err(err("diff", out))? {
            let key: Vec<Value> = (0..t.pk.len())
                .map(|i| r.get(i))
                .collect::<rusqlite::Result<_>>()
                .map_err(err("diff", out))?;
            table.insert(key_of(&key), (key, Change::Delete));
        }
        if table.is_empty() {
            changes.remove(&t.name);
        }
    }
    Ok(changes)
}

/// The diff of a rowid-keyed table: both copies read once, in key order, side by side.
/// Values are compared borrowed; only changed rows are copied out.
fn merge_join(
    conn: &Connection,
    name: &str,
    key_col: &str,
    key_idx: usize,
    n: usize,
    table: &mut BTreeMap<String, (Vec<Value>, Change)>,
    out: &Path,
) -> Result<()> {
    let e = err("diff", out);
    let mut base_stmt = conn
        .prepare(&format!("SELECT * FROM main.{name} ORDER BY {key_col}"))
        .map_err(&e)?;
    let mut side_stmt = conn
        .prepare(&format!("SELECT * FROM side.{name} ORDER BY {key_col}"))
        .map_err(&e)?;
    let mut base_rows = base_stmt.query([]).map_err(&e)?;
    let mut side_rows = side_stmt.query([]).map_err(&e)?;
    let key = |r: &rusqlite::Row<'_>| r.get::<_, i64>(key_idx);
    let owned = |r: &rusqlite::Row<'_>| {
        (0..n)
            .map(|i| r.get::<_, Value>(i))
            .collect::<rusqlite::Result<Vec<_>>>()
    };
    let same = |a: &rusqlite::Row<'_>, b: &rusqlite::Row<'_>| -> rusqlite::Result<bool> {
        for i in 0..n {
            if a.get_ref(i)? != b.get_ref(i)? {
                return Ok(false);
            }
        }
        Ok(true)
    };
    let delete = |k: i64, table: &mut BTreeMap<String, (Vec<Value>, Change)>| {
        let key = vec![Value::Integer(k)];
        table.insert(key_of(&key), (key, Change::Delete));
    };
    let upsert = |k: i64, row: Vec<Value>, table: &mut BTreeMap<String, (Vec<Value>, Change)>| {
        let key = vec![Value::Integer(k)];
        table.insert(key_of(&key), (key, Change::Upsert(row)));
    };
    let mut b = base_rows.next().map_err(&e)?;
    let mut s = side_rows.next().map_err(&e)?;
    loop {
        let (advance_base, advance_side) = match (b, s) {
            (None, None) => break,
            (Some(br), None) => {
                delete(key(br).map_err(&e)?, table);
                (true, false)
            }
            (None, Some(sr)) => {
                upsert(key(sr).map_err(&e)?, owned(sr).map_err(&e)?, table);
                (false, true)
            }
            (Some(br), Some(sr)) => {
                let (kb, ks) = (key(br).map_err(&e)?, key(sr).map_err(&e)?);
                if kb < ks {
                    delete(kb, table);
                    (true, false)
                } else if kb > ks {
                    upsert(ks, owned(sr).map_err(&e)?, table);
                    (false, true)
                } else {
                    if !same(br, sr).map_err(&e)? {
                        upsert(ks, owned(sr).map_err(&e)?, table);
                    }
                    (true, true)
                }
            }
        };
        if advance_base {
            b = base_rows.next().map_err(&e)?;
        }
        if advance_side {
            s = side_rows.next().map_err(&e)?;
        }
    }
    Ok(())
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

fn merge_inner(
    base: &Path,
    sides: &[MergeSide],
    strategy: Strategy,
    out: &Path,
) -> Result<MergeOutcome> {
    std::fs::copy(base, out).ctx("copy the base to", out)?;
    let conn = Connection::open_with_flags(out, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(err("open", out))?;
    conn.execute_batch("PRAGMA journal_mode = DELETE; PRAGMA foreign_keys = OFF;")
        .map_err(err("prepare", out))?;
    let base_schema = schema(&conn, out)?;
    let (tables, rebuild) = match tables(&conn, out)? {
        Ok(t) => t,
        Err(why) => return Ok(MergeOutcome::Fallback(why)),
    };
    let mut changes = Vec::new();
    for side in sides {
        let side_conn = Connection::open_with_flags(&side.path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(err("open", &side.path))?;
        if schema(&side_conn, &side.path)? != base_schema {
            return Ok(MergeOutcome::Fallback(format!(
                "the schema in {} differs from the last agreed version (a migration?)",
                side.location
            )));
        }
        drop(side_conn);
        conn.execute("ATTACH DATABASE ?1 AS side", [side.path.to_string_lossy()])
            .map_err(err("attach", &side.path))?;
        let d = diff(&conn, &tables, out);
        conn.execute("DETACH DATABASE side", [])
            .map_err(err("detach", &side.path))?;
        changes.push(d?);
    }
    let (merged, row_conflicts) = combine(sides, &changes, strategy);
    if strategy == Strategy::Manual && !row_conflicts.is_empty() {
        return Ok(MergeOutcome::Held(row_conflicts));
    }
    let mut rows_changed = 0;
    conn.execute_batch("BEGIN").map_err(err("write", out))?;
    for t in &tables {
        let Some(table) = merged.get(&t.name) else {
            continue;
        };
        let name = quote(&t.name);
        let cond: Vec<String> =
            t.pk.iter()
                .enumerate()
                .map(|(i, c)| format!("{} IS ?{}", quote(c), i + 1))
                .collect();
        let mut delete = conn
            .prepare(&format!(
                "DELETE FROM main.{name} WHERE {}",
                cond.join(" AND ")
            ))
            .map_err(err("write", out))?;
        let mut insert: Option<rusqlite::Statement<'_>> = None;
        for (key, change) in table.values() {
            delete
                .execute(rusqlite::params_from_iter(key.iter()))
                .map_err(err("write", out))?;
            if let Change::Upsert(row) = change {
                if insert.is_none() {
                    let marks: Vec<String> = (1..=row.len()).map(|i| format!("?{i}")).collect();
                    let sql = format!("INSERT INTO main.{name} VALUES ({})", marks.join(", "));
                    insert = Some(conn.prepare(&sql).map_err(err("write", out))?);
                }
                let Some(stmt) = insert.as_mut() else {
                    continue;
                };
                if let Err(e) = stmt.execute(rusqlite::params_from_iter(row.iter())) {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Ok(MergeOutcome::Fallback(format!(
                        "the merged rows break a constraint of {}: {e}",
                        t.name
                    )));
                }
            }
            rows_changed += 1;
        }
    }
    // AUTOINCREMENT counters: never behind any side's.
    let has_seq: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'sqlite_sequence'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(err("read", out))?
        > 0;
    if has_seq {
        for t in &tables {
            let max: Option<i64> = conn
                .query_row(
                    &format!("SELECT max(rowid) FROM main.{}", quote(&t.name)),
                    [],
                    |r| r.get(0),
                )
                .unwrap_or(None);
            if let Some(max) = max {
                conn.execute(
                    "UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = ?2",
                    rusqlite::params![max, t.name],
                )
                .map_err(err("write", out))?;
            }
        }
    }
    for fts in &rebuild {
        let q = quote(fts);
        conn.execute(&format!("INSERT INTO {q}({q}) VALUES('rebuild')"), [])
            .map_err(err("rebuild full-text index in", out))?;
    }
    conn.execute_batch("COMMIT").map_err(err("write", out))?;
    let fk: Vec<String> = {
        let mut stmt = conn
            .prepare("PRAGMA foreign_key_check")
            .map_err(err("check", out))?;
        let v = stmt
            .query_map([], |r| {
                Ok(format!(
                    "{} row {:?} → {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, String>(2)?
                ))
            })
            .and_then(|r| r.collect());
        v.map_err(err("check", out))?
    };
    if !fk.is_empty() {
        return Ok(MergeOutcome::Fallback(format!(
            "the merged version breaks foreign keys: {}",
            fk.join(", ")
        )));
    }
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(err("check", out))?;
    if check != "ok" {
        return Ok(MergeOutcome::Fallback(format!(
            "the merged version fails its integrity check: {check}"
        )));
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
/// Bases are only ever read (a merge works on a copy of its base).
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
        let tmp = dir.join(format!(".{hash}.tmp-{}", crate::ids::random_hex(6)));
        let linked = movable && std::fs::hard_link(snapshot, &tmp).is_ok();
        let kept = (|| {
            if linked {
                std::fs::remove_file(snapshot).ctx("remove", snapshot)?;
            } else {
                std::fs::copy(snapshot, &tmp).ctx("copy base snapshot to", &tmp)?;
            }
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .ctx("fsync", &tmp)?;
            std::fs::rename(&tmp, &target).ctx("rename", &target)?;
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if kept.is_err() {
            let _ = std::fs::remove_file(&tmp);
            return kept;
        }
    }
    Ok(())
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
