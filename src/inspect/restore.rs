//! The write of `restore --rows` (issue 18), kept beside the row reads it shares (in `apply` it
//! would close a module cycle through `merge`): putting back chosen rows of an old database
//! version into the live database. One transaction on the live file under SQLite's own
//! locking (open connections see the change, nothing another writer commits is lost), the
//! database's triggers off as in the row merge, and foreign keys and integrity checked before
//! the commit (else nothing is kept).

use super::rows::{key_columns, open_read_only, quote, user_tables};
use crate::error::{Error, Result};
use crate::merge::{row_identity, values_json, RowIdentity};
use rusqlite::config::DbConfig;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};
use std::collections::BTreeSet;
use std::path::Path;

/// What was put back, by key.
#[derive(Debug, Default)]
pub(crate) struct RowsPut {
    pub(crate) replaced: Vec<String>,
    pub(crate) reinserted: Vec<String>,
    pub(crate) deleted: Vec<String>,
}

fn err<'a>(op: &'static str, path: &'a Path) -> impl Fn(rusqlite::Error) -> Error + 'a {
    move |e| Error::sqlite(op, path, e)
}

/// A `file:` URI opening `path` read-only.
fn read_only_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for b in path.to_string_lossy().bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                uri.push(b as char)
            }
            _ => uri.push_str(&format!("%{b:02X}")),
        }
    }
    uri.push_str("?mode=ro");
    uri
}

/// A key as asked: the JSON array of its values, or one bare value.
enum Wanted {
    Json(serde_json::Value),
    Bare(String),
}

impl Wanted {
    fn parse(s: &str) -> Wanted {
        match serde_json::from_str::<serde_json::Value>(s) {
            Ok(v @ serde_json::Value::Array(_)) => Wanted::Json(v),
            _ => Wanted::Bare(s.to_string()),
        }
    }

    fn matches(&self, key: &[Value], canon: &str) -> bool {
        match self {
            Wanted::Json(v) => {
                serde_json::from_str::<serde_json::Value>(canon).is_ok_and(|c| &c == v)
            }
            Wanted::Bare(s) => match key {
                [Value::Integer(n)] => n.to_string() == *s,
                [Value::Text(t)] => t == s,
                _ => false,
            },
        }
    }
}

/// Every key of table `name` in schema `db` on `conn`, with its canonical spelling.
fn keys_of(
    conn: &Connection,
    db: &str,
    id: &RowIdentity,
    name: &str,
    path: &Path,
) -> Result<Vec<(String, Vec<Value>)>> {
    let e = err("read the keys of", path);
    let list = if id.key.is_empty() {
        id.rowid.unwrap_or("rowid").to_string()
    } else {
        id.key
            .iter()
            .map(|&i| quote(&id.cols[i]))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let n = id.key.len().max(1);
    let mut stmt = conn
        .prepare(&format!("SELECT {list} FROM {db}.{}", quote(name)))
        .map_err(&e)?;
    let rows = stmt
        .query_map([], |r| {
            (0..n)
                .map(|i| r.get::<_, Value>(i))
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(&e)?;
    Ok(rows.into_iter().map(|k| (values_json(&k), k)).collect())
}

/// The keys asked for, each found in the old version, the live one, or both: (canonical
/// spelling, values); refused when one names no row or more than one.
fn resolve_keys(
    conn: &Connection,
    id: &RowIdentity,
    table: &str,
    keys: &[String],
    live: &Path,
) -> Result<Vec<(String, Vec<Value>)>> {
    let mut all = keys_of(conn, "old", id, table, live)?;
    all.extend(keys_of(conn, "main", id, table, live)?);
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    for k in keys {
        let w = Wanted::parse(k);
        let mut found: Vec<&(String, Vec<Value>)> =
            all.iter().filter(|(c, v)| w.matches(v, c)).collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found.dedup_by(|a, b| a.0 == b.0);
        match found.as_slice() {
            [] => {
                return Err(Error::Refused(format!(
                "no row of {table} has the key {k}, neither in {} nor in the version restored from",
                live.display()
            )))
            }
            [one] => {
                if !out.iter().any(|o| o.0 == one.0) {
                    out.push((*one).clone());
                }
            }
            many => {
                let list: Vec<&str> = many.iter().map(|m| m.0.as_str()).collect();
                return Err(Error::Refused(format!(
                    "the key {k} of {table} in {} matches several rows ({}); give it as a JSON array",
                    live.display(),
                    list.join(", ")
                )));
            }
        }
    }
    Ok(out)
}

fn fk_violations(conn: &Connection, live: &Path) -> Result<BTreeSet<String>> {
    let mut stmt = conn
        .prepare("PRAGMA main.foreign_key_check")
        .map_err(err("check", live))?;
    let v = stmt
        .query_map([], |r| {
            Ok(format!(
                "{} row {} → {}",
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?
                    .map_or("?".into(), |n| n.to_string()),
                r.get::<_, String>(2)?
            ))
        })
        .and_then(|rows| rows.collect());
    v.map_err(err("check", live))
}

/// Opens the live database for the restore, the old version attached read-only as `old`.
fn open_live(live: &Path, old: &Path, opts: &crate::sqlite::SqliteOptions) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(live, flags).map_err(err("open", live))?;
    conn.busy_timeout(opts.busy_timeout)
        .map_err(err("open", live))?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)
        .map_err(err("turn the triggers off for", live))?;
    conn.execute_batch("PRAGMA foreign_keys = OFF")
        .map_err(err("open", live))?;
    conn.execute("ATTACH DATABASE ?1 AS old", [read_only_uri(old)])
        .map_err(err("open", old))?;
    Ok(conn)
}

/// The identity of `table` in the live database, refused unless the old version's is the same.
fn identity(conn: &Connection, live: &Path, old: &Path, table: &str) -> Result<RowIdentity> {
    let refuse = |why: String| Error::Refused(format!("rows of {table} cannot be restored: {why}"));
    let wr = *user_tables(conn, "main", live)?.get(table).ok_or_else(|| {
        refuse(format!(
            "the current version of {} has no such table",
            live.display()
        ))
    })?;
    let old_conn = open_read_only(old)?;
    let old_wr = *user_tables(&old_conn, "main", old)?
        .get(table)
        .ok_or_else(|| refuse("the old version has no such table".into()))?;
    let id = row_identity(conn, live, table, wr)?.map_err(refuse)?;
    let id_old = row_identity(&old_conn, old, table, old_wr)?.map_err(refuse)?;
    if id.cols != id_old.cols || id.key != id_old.key || wr != old_wr {
        return Err(refuse(
            "its columns or key differ between the two versions".into(),
        ));
    }
    Ok(id)
}

/// Puts the rows of `table` with `keys` from the database `old` into the live database `live`
/// in one transaction: a row the old version has replaces or re-creates the current one, a row
/// it lacks is deleted. Refused, with nothing changed, when the result breaks a foreign key
/// (one that held before), a constraint, or the integrity check.
pub(crate) fn put_rows(
    live: &Path,
    old: &Path,
    table: &str,
    keys: &[String],
    opts: &crate::sqlite::SqliteOptions,
) -> Result<RowsPut> {
    let mut conn = open_live(live, old, opts)?;
    let id = identity(&conn, live, old, table)?;
    let wanted = resolve_keys(&conn, &id, table, keys, live)?;
    let no_pk = key_columns(&conn, live, table)? == ["rowid"];
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(err("begin a transaction on", live))?;
    let before = fk_violations(&tx, live)?;
    let mut put = RowsPut::default();
    for (canon, values) in &wanted {
        write_row(&tx, &id, (table, no_pk), values, live)
            .map_err(|e| match e {
                Error::Sqlite { source, .. } => Error::Refused(format!(
                    "row {canon} of {table} cannot be put back into {}: {source}; nothing changed",
                    live.display()
                )),
                other => other,
            })?
            .record(canon.clone(), &mut put);
    }
    for fts in crate::merge::full_text_to_rebuild(&tx, live)? {
        tx.execute(
            &format!("INSERT INTO main.{0}({0}) VALUES ('rebuild')", quote(&fts)),
            [],
        )
        .map_err(err("rebuild a full-text index of", live))?;
    }
    let broken: Vec<String> = fk_violations(&tx, live)?
        .difference(&before)
        .cloned()
        .collect();
    if !broken.is_empty() {
        return Err(Error::Refused(format!(
            "restoring these rows of {table} would break foreign keys in {} ({}); nothing changed",
            live.display(),
            broken.join(", ")
        )));
    }
    let check: String = tx
        .query_row("PRAGMA main.integrity_check", [], |r| r.get(0))
        .map_err(err("check", live))?;
    if check != "ok" {
        return Err(Error::Refused(format!(
            "{} would fail its integrity check after the restore ({check}); nothing changed",
            live.display()
        )));
    }
    tx.commit()
        .map_err(err("commit the restored rows into", live))?;
    Ok(put)
}

/// What happened to one row.
enum Put {
    Replaced,
    Reinserted,
    Deleted,
}

impl Put {
    fn record(self, key: String, put: &mut RowsPut) {
        match self {
            Put::Replaced => put.replaced.push(key),
            Put::Reinserted => put.reinserted.push(key),
            Put::Deleted => put.deleted.push(key),
        }
    }
}

/// Deletes the live row with this key and inserts the old version's, if it has one.
fn write_row(
    tx: &Connection,
    id: &RowIdentity,
    (table, no_pk): (&str, bool),
    key: &[Value],
    live: &Path,
) -> Result<Put> {
    let e = err("write", live);
    let name = quote(table);
    let params = rusqlite::params_from_iter(key.iter());
    let rowid = id.rowid.unwrap_or("rowid");
    // A table keyed by a PRIMARY KEY other than the rowid keeps its current hidden rowid.
    let kept: Option<i64> = match (id.rowid, id.key.is_empty()) {
        (Some(r), false) => tx
            .query_row(
                &format!("SELECT {r} FROM main.{name} WHERE {}", id.key_cond),
                params.clone(),
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .map_err(&e)?,
        _ => None,
    };
    let deleted = tx
        .execute(
            &format!("DELETE FROM main.{name} WHERE {}", id.key_cond),
            params.clone(),
        )
        .map_err(&e)?;
    let cols = id
        .cols
        .iter()
        .map(|c| quote(c))
        .collect::<Vec<_>>()
        .join(", ");
    let (list, select) = match kept {
        Some(r) => (format!("{rowid}, {cols}"), format!("{r}, {cols}")),
        None if no_pk => (format!("{rowid}, {cols}"), format!("{rowid}, {cols}")),
        None => (cols.clone(), cols.clone()),
    };
    // OR ABORT overrides any ON CONFLICT REPLACE/IGNORE: a restored row never silently
    // replaces or drops another.
    let inserted = tx
        .execute(
            &format!(
                "INSERT OR ABORT INTO main.{name}({list}) SELECT {select} FROM old.{name} WHERE {}",
                id.key_cond
            ),
            params,
        )
        .map_err(&e)?;
    Ok(match (deleted > 0, inserted > 0) {
        (_, false) => Put::Deleted,
        (true, true) => Put::Replaced,
        (false, true) => Put::Reinserted,
    })
}
