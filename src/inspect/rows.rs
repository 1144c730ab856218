//! The row diff of two database versions: each table's rows matched by the row merge's
//! identity ([`crate::merge::row_identity`]) and compared by type and bytes
//! ([`crate::merge::same_value`]), the schema compared object by object, and the row counts.

use super::{
    BlobCell, Cell, Cells, CountChange, Row, RowChange, SchemaChange, SchemaChangeKind, TableDiff,
    TableSummary, BLOB_HEX_BYTES,
};
use crate::error::{Error, Result};
use crate::merge::{row_identity, same_value, values_json, RowIdentity};
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The row, schema and count differences of two databases.
#[derive(Debug, Default)]
pub(crate) struct DbDiff {
    pub(crate) tables: Vec<TableDiff>,
    pub(crate) schema: Vec<SchemaChange>,
    pub(crate) counts: Vec<CountChange>,
}

pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn err<'a>(op: &'static str, path: &'a Path) -> impl Fn(rusqlite::Error) -> Error + 'a {
    move |e| Error::sqlite(op, path, e)
}

/// Opens a database version read-only.
pub(crate) fn open_read_only(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(err("open", path))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(err("open", path))?;
    Ok(conn)
}

/// Copies the database `src` (possibly live) into the new file `dst` through SQLite's backup
/// API in one step under a read lock: a consistent copy to read, nothing more (no integrity
/// check, no hash: a diff only reads it). Busy steps are retried for up to `busy`.
pub(crate) fn copy_database(src: &Path, dst: &Path, busy: std::time::Duration) -> Result<()> {
    let from = open_read_only(src)?;
    from.busy_timeout(busy).map_err(err("open", src))?;
    let mut to = Connection::open(dst).map_err(err("create", dst))?;
    let backup = rusqlite::backup::Backup::new(&from, &mut to).map_err(err("copy", src))?;
    let started = std::time::Instant::now();
    loop {
        use rusqlite::backup::StepResult;
        match backup.step(-1).map_err(err("copy", src))? {
            StepResult::Done => return Ok(()),
            StepResult::More => {}
            _ if started.elapsed() > busy => {
                return Err(Error::Refused(format!(
                    "{} stayed busy for {} s; try again",
                    src.display(),
                    busy.as_secs()
                )))
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

/// A value as a diff shows it: exact type, lossless spelling.
pub(crate) fn cell(v: &Value) -> Cell {
    match v {
        Value::Null => Cell::Null,
        Value::Integer(i) => Cell::Integer(*i),
        Value::Real(f) => Cell::Real(format!("{f:?}")),
        Value::Text(t) => Cell::Text(t.clone()),
        Value::Blob(b) => Cell::Blob(BlobCell {
            len: b.len(),
            hex: crate::ids::hex_lower(&b[..b.len().min(BLOB_HEX_BYTES)]),
            truncated: b.len() > BLOB_HEX_BYTES,
        }),
    }
}

fn cells(cols: &[String], row: &[Value]) -> Cells {
    Cells(cols.iter().cloned().zip(row.iter().map(cell)).collect())
}

/// The user tables (`table` objects, not `sqlite_*`) of schema `db` on `conn`, with whether
/// each is `WITHOUT ROWID`.
pub(crate) fn user_tables(
    conn: &Connection,
    db: &str,
    path: &Path,
) -> Result<BTreeMap<String, bool>> {
    let mut stmt = conn
        .prepare(
            "SELECT name, wr FROM pragma_table_list WHERE schema = ?1 AND type = 'table' \
             AND lower(substr(name, 1, 7)) <> 'sqlite_'",
        )
        .map_err(err("list the tables of", path))?;
    let rows = stmt
        .query_map([db], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))
        .and_then(|rows| rows.collect::<rusqlite::Result<BTreeMap<_, _>>>());
    rows.map_err(err("list the tables of", path))
}

/// The names of a table's key columns: its declared PRIMARY KEY, or `rowid` without one.
pub(crate) fn key_columns(conn: &Connection, path: &Path, table: &str) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_xinfo(?1, 'main') WHERE pk > 0 ORDER BY pk")
        .map_err(err("read the columns of", path))?;
    let cols: Vec<String> = stmt
        .query_map([table], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(err("read the columns of", path))?;
    Ok(if cols.is_empty() {
        vec!["rowid".to_string()]
    } else {
        cols
    })
}

/// Diffs database `a` (older) against `b` (newer); `only` keeps one table; each list holds at
/// most `limit` rows (0: counts only).
pub(crate) fn diff_databases(
    a: &Path,
    b: &Path,
    only: Option<&str>,
    limit: usize,
) -> Result<DbDiff> {
    let conn_a = open_read_only(a)?;
    let conn_b = open_read_only(b)?;
    conn_a
        .execute("ATTACH DATABASE ?1 AS side", [b.to_string_lossy()])
        .map_err(err("open", b))?;
    let keep = |t: &str| only.is_none_or(|o| o == t);
    let tables_a = user_tables(&conn_a, "main", a)?;
    let tables_b = user_tables(&conn_a, "side", b)?;
    let mut out = DbDiff {
        schema: schema_changes(&conn_a, a)?
            .into_iter()
            .filter(|s| only.is_none_or(|o| s.name == o || s.table.as_deref() == Some(o)))
            .map(|s| s.change)
            .collect(),
        ..DbDiff::default()
    };
    let mut names: Vec<&String> = tables_a.keys().chain(tables_b.keys()).collect();
    names.sort();
    names.dedup();
    for name in names.into_iter().filter(|t| keep(t)) {
        let count = |db: &str| -> Result<u64> {
            conn_a
                .query_row(
                    &format!("SELECT count(*) FROM {db}.{}", quote(name)),
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n as u64)
                .map_err(err("count rows of", a))
        };
        let ca = tables_a
            .contains_key(name)
            .then(|| count("main"))
            .transpose()?;
        let cb = tables_b
            .contains_key(name)
            .then(|| count("side"))
            .transpose()?;
        out.counts.push(CountChange {
            table: name.clone(),
            a: ca,
            b: cb,
        });
        if let (Some(&wa), Some(&wb)) = (tables_a.get(name), tables_b.get(name)) {
            if let Some(t) = table_diff(&conn_a, &conn_b, (a, b), (name, wa, wb), limit)? {
                out.tables.push(t);
            }
        }
    }
    Ok(out)
}

/// One table's diff (`None` when its rows are the same).
fn table_diff(
    conn: &Connection,
    conn_b: &Connection,
    (a, b): (&Path, &Path),
    (name, wa, wb): (&str, bool, bool),
    limit: usize,
) -> Result<Option<TableDiff>> {
    let ida = row_identity(conn, a, name, wa)?;
    let idb = row_identity(conn_b, b, name, wb)?;
    let mut t = TableDiff {
        table: name.to_string(),
        key_columns: key_columns(conn, a, name)?,
        columns: Vec::new(),
        added: Vec::new(),
        removed: Vec::new(),
        changed: Vec::new(),
        summary: TableSummary {
            table: name.to_string(),
            added: 0,
            removed: 0,
            changed: 0,
        },
        note: None,
    };
    let id = match (ida, idb) {
        (Ok(x), Ok(y)) if x.cols == y.cols && x.key == y.key && wa == wb => x,
        (Err(why), _) | (_, Err(why)) => {
            t.note = Some(format!("its rows cannot be compared: {why}"));
            return Ok(Some(t));
        }
        _ => {
            t.note =
                Some("its columns or key differ between the versions: rows not compared".into());
            return Ok(Some(t));
        }
    };
    t.columns = id.cols.clone();
    let mut lists = Lists { t, limit };
    if id.key.is_empty() {
        rowid_join(conn, &id, name, &mut lists, a)?;
    } else {
        key_join(conn, &id, name, &mut lists, a)?;
    }
    let t = lists.t;
    let s = &t.summary;
    Ok((s.added + s.removed + s.changed > 0).then_some(t))
}

/// Collects a table's differences, listing at most `limit` of each.
struct Lists {
    t: TableDiff,
    limit: usize,
}

impl Lists {
    fn added(&mut self, key: &[Value], row: &[Value]) {
        self.t.summary.added += 1;
        let row = self.listed(self.t.added.len(), key, row);
        self.t.added.extend(row);
    }

    fn removed(&mut self, key: &[Value], row: &[Value]) {
        self.t.summary.removed += 1;
        let row = self.listed(self.t.removed.len(), key, row);
        self.t.removed.extend(row);
    }

    /// The row to list after `listed` others, while under the limit.
    fn listed(&self, listed: usize, key: &[Value], row: &[Value]) -> Option<Row> {
        (listed < self.limit).then(|| Row {
            key: values_json(key),
            values: cells(&self.t.columns, row),
        })
    }

    /// Records the pair when it differs.
    fn compare(&mut self, key: &[Value], old: &[Value], new: &[Value]) {
        let changed: Vec<String> = self
            .t
            .columns
            .iter()
            .zip(old.iter().zip(new))
            .filter(|(_, (x, y))| !same_value(x, y))
            .map(|(c, _)| c.clone())
            .collect();
        if changed.is_empty() {
            return;
        }
        self.t.summary.changed += 1;
        if self.t.changed.len() < self.limit {
            self.t.changed.push(RowChange {
                key: values_json(key),
                old: cells(&self.t.columns, old),
                new: cells(&self.t.columns, new),
                changed_columns: changed,
            });
        }
    }
}

fn read_values(
    r: &rusqlite::Row<'_>,
    cols: std::ops::Range<usize>,
) -> rusqlite::Result<Vec<Value>> {
    cols.map(|i| r.get::<_, Value>(i)).collect()
}

/// A rowid-keyed table: both versions read in rowid order, side by side, values compared
/// borrowed (only rows that differ are copied out).
fn rowid_join(
    conn: &Connection,
    id: &RowIdentity,
    name: &str,
    lists: &mut Lists,
    a: &Path,
) -> Result<()> {
    let e = err("diff", a);
    let rowid = id.rowid.unwrap_or("rowid");
    let cols: Vec<String> = id.cols.iter().map(|c| quote(c)).collect();
    let n = cols.len();
    let sql = |db: &str| {
        format!(
            "SELECT {rowid}, {} FROM {db}.{} ORDER BY {rowid}",
            cols.join(", "),
            quote(name)
        )
    };
    let mut sa = conn.prepare(&sql("main")).map_err(&e)?;
    let mut sb = conn.prepare(&sql("side")).map_err(&e)?;
    let mut ra = sa.query([]).map_err(&e)?;
    let mut rb = sb.query([]).map_err(&e)?;
    let key = |r: &rusqlite::Row<'_>| r.get::<_, i64>(0);
    let k = |n: i64| [Value::Integer(n)];
    let values = |r: &rusqlite::Row<'_>| read_values(r, 1..n + 1);
    let same = |x: &rusqlite::Row<'_>, y: &rusqlite::Row<'_>| -> rusqlite::Result<bool> {
        for i in 1..=n {
            if !same_ref(x.get_ref(i)?, y.get_ref(i)?) {
                return Ok(false);
            }
        }
        Ok(true)
    };
    let mut x = ra.next().map_err(&e)?;
    let mut y = rb.next().map_err(&e)?;
    loop {
        let (next_a, next_b) = match (x, y) {
            (None, None) => break,
            (Some(r), None) => {
                lists.removed(&k(key(r).map_err(&e)?), &values(r).map_err(&e)?);
                (true, false)
            }
            (None, Some(r)) => {
                lists.added(&k(key(r).map_err(&e)?), &values(r).map_err(&e)?);
                (false, true)
            }
            (Some(ra_), Some(rb_)) => {
                let (ka, kb) = (key(ra_).map_err(&e)?, key(rb_).map_err(&e)?);
                if ka == kb {
                    if !same(ra_, rb_).map_err(&e)? {
                        let (old, new) = (values(ra_).map_err(&e)?, values(rb_).map_err(&e)?);
                        lists.compare(&k(ka), &old, &new);
                    }
                    (true, true)
                } else if ka < kb {
                    lists.removed(&k(ka), &values(ra_).map_err(&e)?);
                    (true, false)
                } else {
                    lists.added(&k(kb), &values(rb_).map_err(&e)?);
                    (false, true)
                }
            }
        };
        if next_a {
            x = ra.next().map_err(&e)?;
        }
        if next_b {
            y = rb.next().map_err(&e)?;
        }
    }
    Ok(())
}

/// Whether two borrowed values are the same exactly ([`crate::merge::same_value`]).
fn same_ref(a: rusqlite::types::ValueRef<'_>, b: rusqlite::types::ValueRef<'_>) -> bool {
    use rusqlite::types::ValueRef;
    match (a, b) {
        (ValueRef::Real(x), ValueRef::Real(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

/// A table keyed by its PRIMARY KEY: A's rows by exact key, then B's looked up among them.
fn key_join(
    conn: &Connection,
    id: &RowIdentity,
    name: &str,
    lists: &mut Lists,
    a: &Path,
) -> Result<()> {
    let e = err("diff", a);
    let cols: Vec<String> = id.cols.iter().map(|c| quote(c)).collect();
    let n = cols.len();
    let key = |row: &[Value]| id.key.iter().map(|&i| row[i].clone()).collect::<Vec<_>>();
    let sql = |db: &str| format!("SELECT {} FROM {db}.{}", cols.join(", "), quote(name));
    let mut old: HashMap<String, Vec<Value>> = HashMap::new();
    let mut stmt = conn.prepare(&sql("main")).map_err(&e)?;
    let mut rows = stmt.query([]).map_err(&e)?;
    while let Some(r) = rows.next().map_err(&e)? {
        let row = read_values(r, 0..n).map_err(&e)?;
        old.insert(values_json(&key(&row)), row);
    }
    let mut stmt = conn.prepare(&sql("side")).map_err(&e)?;
    let mut rows = stmt.query([]).map_err(&e)?;
    while let Some(r) = rows.next().map_err(&e)? {
        let row = read_values(r, 0..n).map_err(&e)?;
        let k = key(&row);
        match old.remove(&values_json(&k)) {
            Some(before) => lists.compare(&k, &before, &row),
            None => lists.added(&k, &row),
        }
    }
    let mut gone: Vec<(String, Vec<Value>)> = old.into_iter().collect();
    gone.sort_by(|x, y| x.0.cmp(&y.0));
    for (_, row) in gone {
        lists.removed(&key(&row), &row);
    }
    Ok(())
}

/// A schema change, with the table it belongs to.
pub(crate) struct Owned {
    pub(crate) change: SchemaChange,
    pub(crate) name: String,
    pub(crate) table: Option<String>,
}

type SchemaRows = BTreeMap<(String, String), (Option<String>, Option<String>)>;

fn schema_of(conn: &Connection, db: &str, path: &Path) -> Result<SchemaRows> {
    let e = err("read the schema of", path);
    let mut stmt = conn
        .prepare(&format!(
            "SELECT type, name, tbl_name, sql FROM {db}.sqlite_schema \
             WHERE lower(substr(name, 1, 7)) <> 'sqlite_'"
        ))
        .map_err(&e)?;
    let mut out: SchemaRows = stmt
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?))))
        .and_then(|rows| rows.collect())
        .map_err(&e)?;
    for pragma in ["user_version", "application_id"] {
        let v: i64 = conn
            .query_row(&format!("PRAGMA {db}.{pragma}"), [], |r| r.get(0))
            .map_err(&e)?;
        out.insert(
            ("pragma".into(), pragma.into()),
            (None, Some(v.to_string())),
        );
    }
    Ok(out)
}

/// The schema objects (and header values) that differ between `main` and `side` on `conn`.
fn schema_changes(conn: &Connection, path: &Path) -> Result<Vec<Owned>> {
    let a = schema_of(conn, "main", path)?;
    let b = schema_of(conn, "side", path)?;
    let mut keys: Vec<&(String, String)> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for k in keys {
        let (old, new) = (a.get(k), b.get(k));
        let change = match (old, new) {
            (Some(x), Some(y)) if x.1 == y.1 => continue,
            (Some(_), Some(_)) => SchemaChangeKind::Changed,
            (Some(_), None) => SchemaChangeKind::Removed,
            _ => SchemaChangeKind::Added,
        };
        let table = old.or(new).and_then(|x| x.0.clone());
        out.push(Owned {
            name: k.1.clone(),
            table,
            change: SchemaChange {
                change,
                object: k.0.clone(),
                name: k.1.clone(),
                old: old.and_then(|x| x.1.clone()),
                new: new.and_then(|x| x.1.clone()),
            },
        });
    }
    Ok(out)
}
