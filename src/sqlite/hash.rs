//! The logical hash: schema and rows in a canonical order, not the file's bytes.

use super::*;

pub(super) struct SchemaEntry {
    pub(super) kind: String,
    pub(super) name: String,
    pub(super) tbl_name: String,
    pub(super) sql: Option<String>,
    pub(super) rootpage: i64,
}

pub(super) fn is_stat_table(name: &str) -> bool {
    name.len() >= 11 && name[..11].eq_ignore_ascii_case("sqlite_stat")
}

pub(super) fn is_internal(name: &str) -> bool {
    name.len() >= 7 && name[..7].eq_ignore_ascii_case("sqlite_")
}

pub(super) fn read_schema(conn: &Connection) -> rusqlite::Result<Vec<SchemaEntry>> {
    let mut stmt =
        conn.prepare("SELECT type, name, tbl_name, sql, coalesce(rootpage, 0) FROM sqlite_schema")?;
    let rows = stmt.query_map([], |r| {
        Ok(SchemaEntry {
            kind: r.get(0)?,
            name: r.get(1)?,
            tbl_name: r.get(2)?,
            sql: r.get(3)?,
            rootpage: r.get(4)?,
        })
    })?;
    rows.collect()
}

/// Appends hash items to a SHA-256.
#[derive(Clone)]
pub(super) struct Hasher(Sha256);

impl Hasher {
    fn tag(&mut self, t: u8) {
        self.0.update([t]);
    }
    fn int(&mut self, i: i64) {
        self.tag(b'I');
        self.0.update(i.to_be_bytes());
    }
    fn bytes(&mut self, t: u8, b: &[u8]) {
        self.tag(t);
        self.0.update((b.len() as u64).to_be_bytes());
        self.0.update(b);
    }
    fn text(&mut self, s: &str) {
        self.bytes(b'T', s.as_bytes());
    }
    fn opt_text(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.text(s),
            None => self.tag(b'N'),
        }
    }
    pub(super) fn value(&mut self, v: ValueRef<'_>) {
        match v {
            ValueRef::Null => self.tag(b'N'),
            ValueRef::Integer(i) => self.int(i),
            ValueRef::Real(f) => {
                self.tag(b'F');
                self.0.update(f.to_bits().to_be_bytes());
            }
            ValueRef::Text(t) => self.bytes(b'T', t),
            ValueRef::Blob(b) => self.bytes(b'B', b),
        }
    }
}

/// The logical hash of the database on `conn`, and the row counts of its user tables (as
/// [`count_tables`] gives them), counted while the rows are hashed. With `raw`, the database
/// is a file nothing writes (a snapshot of the run, see [`super::records`]): the rows of the
/// tables whose records say all `SELECT *` gives are read from its pages.
pub(super) fn hash_connection(
    conn: &Connection,
    path: &Path,
    raw: bool,
) -> Result<(String, TableCounts)> {
    let err = |e| Error::sqlite("hash", path, e);
    let mut h = Hasher(Sha256::new());
    h.0.update(HASH_TAG);

    h.tag(b'H');
    for pragma in ["PRAGMA user_version", "PRAGMA application_id"] {
        let v: i64 = conn.query_row(pragma, [], |r| r.get(0)).map_err(err)?;
        h.int(v);
    }

    let mut schema = read_schema(conn).map_err(err)?;
    schema.retain(|e| !is_stat_table(&e.name) && !is_stat_table(&e.tbl_name));
    schema.sort_by(|a, b| {
        (a.kind.as_bytes(), a.name.as_bytes()).cmp(&(b.kind.as_bytes(), b.name.as_bytes()))
    });
    h.tag(b'S');
    h.0.update((schema.len() as u64).to_be_bytes());
    for e in &schema {
        h.text(&e.kind);
        h.text(&e.name);
        h.text(&e.tbl_name);
        h.opt_text(e.sql.as_deref());
    }

    let mut tables: Vec<&SchemaEntry> = schema
        .iter()
        .filter(|e| e.kind == "table" && e.rootpage > 0)
        .collect();
    tables.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let pages = match raw {
        true => raw_pages(path)?,
        false => None,
    };
    let mut counts = Vec::new();
    for t in tables {
        let before = pages.is_some().then(|| h.clone());
        let read = match &pages {
            Some(p) => hash_table_raw(conn, t, p, &mut h).map_err(err)?,
            None => None,
        };
        let n = match read {
            Some(n) => n,
            None => {
                if let Some(before) = before {
                    h = before;
                }
                hash_table(conn, &t.name, &mut h).map_err(err)?
            }
        };
        // The tables `count_tables` counts: those with storage, not `sqlite_*`.
        if !is_internal(&t.name) {
            counts.push((t.name.clone(), n));
        }
    }
    h.tag(b'Z');
    Ok((hex(&h.0.finalize()), sorted_counts(counts)))
}

/// The snapshot's pages, when they can be read directly (a self-contained UTF-8 database).
fn raw_pages(path: &Path) -> Result<Option<super::pages::Pages>> {
    match super::pages::Pages::open(path).ctx("read", path)? {
        Some((pages, header)) if header[56..60] == [0, 0, 0, 1] => Ok(Some(pages)),
        _ => Ok(None),
    }
}

/// [`hash_table`] from the pages, for a rowid table whose records hold every column as
/// `SELECT *` returns it; `None` (with `h` half-fed: the caller restores it) otherwise.
fn hash_table_raw(
    conn: &Connection,
    t: &SchemaEntry,
    pages: &super::pages::Pages,
    h: &mut Hasher,
) -> rusqlite::Result<Option<u64>> {
    let Some(layout) = raw_layout(conn, &t.name)? else {
        return Ok(None);
    };
    let Ok(root) = u32::try_from(t.rootpage) else {
        return Ok(None);
    };
    let stmt = conn.prepare(&format!("SELECT * FROM main.{}", quote(&t.name)))?;
    if stmt.column_count() != layout.columns {
        return Ok(None);
    }
    h.tag(b'T');
    h.text(&t.name);
    h.0.update((layout.columns as u64).to_be_bytes());
    for name in stmt.column_names() {
        h.text(name);
    }
    let mut row = |values: &[ValueRef<'_>]| {
        h.tag(b'R');
        for &v in values {
            h.value(v);
        }
    };
    let read = super::records::for_each_row(pages, root, &layout, &mut row);
    let Ok(Some(count)) = read else {
        return Ok(None);
    };
    h.tag(b'E');
    h.0.update(count.to_be_bytes());
    Ok(Some(count))
}

/// How `table`'s records are read as `SELECT *` reads them; `None` for a `WITHOUT ROWID`
/// table or one with generated columns.
pub(super) fn raw_layout(
    conn: &Connection,
    table: &str,
) -> rusqlite::Result<Option<super::records::Layout>> {
    let without_rowid: bool = conn.query_row(
        "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1",
        [table],
        |r| r.get(0),
    )?;
    let mut stmt =
        conn.prepare("SELECT type, pk, hidden FROM pragma_table_xinfo(?1, 'main') ORDER BY cid")?;
    let cols: Vec<(String, i64, i64)> = stmt
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    if without_rowid || cols.is_empty() || cols.iter().any(|c| c.2 != 0) {
        return Ok(None);
    }
    // An `INTEGER PRIMARY KEY` is the rowid unless it has an index of its own (`DESC`).
    let own_index: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_index_list(?1, 'main') WHERE origin = 'pk'",
        [table],
        |r| r.get(0),
    )?;
    let pk: Vec<usize> = (0..cols.len()).filter(|&i| cols[i].1 > 0).collect();
    let alias = match pk.as_slice() {
        [i] if !own_index && cols[*i].0.eq_ignore_ascii_case("INTEGER") => Some(*i),
        _ => None,
    };
    Ok(Some(super::records::Layout {
        columns: cols.len(),
        alias,
        real: cols
            .iter()
            .map(|c| super::records::real_affinity(&c.0))
            .collect(),
    }))
}

/// Hashes one table's rows into `h`; returns how many there were.
pub(super) fn hash_table(conn: &Connection, table: &str, h: &mut Hasher) -> rusqlite::Result<u64> {
    let without_rowid: bool = conn.query_row(
        "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1",
        [table],
        |r| r.get(0),
    )?;
    let order = if without_rowid {
        primary_key_order(conn, table)?
    } else {
        rowid_order(conn, table)?
    };
    let sql = match &order {
        Some(order) => format!("SELECT * FROM main.{} ORDER BY {order}", quote(table)),
        // Every rowid alias is shadowed by a column: a table scan is still in rowid order.
        None => format!("SELECT * FROM main.{} NOT INDEXED", quote(table)),
    };
    let mut stmt = conn.prepare(&sql)?;
    let columns = stmt.column_count();
    h.tag(b'T');
    h.text(table);
    h.0.update((columns as u64).to_be_bytes());
    for name in stmt.column_names() {
        h.text(name);
    }
    let mut rows = stmt.query([])?;
    let mut count: u64 = 0;
    while let Some(row) = rows.next()? {
        h.tag(b'R');
        for i in 0..columns {
            h.value(row.get_ref(i)?);
        }
        count += 1;
    }
    h.tag(b'E');
    h.0.update(count.to_be_bytes());
    Ok(count)
}

pub(super) fn column_names(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_xinfo(?1, 'main')")?;
    let rows = stmt.query_map([table], |r| r.get(0))?;
    rows.collect()
}

/// `ORDER BY` for a rowid table: the first rowid alias no column shadows.
pub(super) fn rowid_order(conn: &Connection, table: &str) -> rusqlite::Result<Option<String>> {
    let columns = column_names(conn, table)?;
    Ok(["rowid", "_rowid_", "oid"]
        .into_iter()
        .find(|alias| !columns.iter().any(|c| c.eq_ignore_ascii_case(alias)))
        .map(str::to_string))
}

/// `ORDER BY` for a WITHOUT ROWID table: its PRIMARY KEY columns with their collations and
/// directions, i.e. the table's own b-tree order.
pub(super) fn primary_key_order(
    conn: &Connection,
    table: &str,
) -> rusqlite::Result<Option<String>> {
    let index: Option<String> = conn
        .query_row(
            "SELECT name FROM pragma_index_list(?1, 'main') WHERE origin = 'pk'",
            [table],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    let Some(index) = index else {
        return Ok(None);
    };
    let mut stmt = conn.prepare(
        "SELECT name, \"desc\", coll FROM pragma_index_xinfo(?1, 'main') WHERE key = 1 ORDER BY seqno",
    )?;
    let terms = stmt.query_map([&index], |r| {
        let name: Option<String> = r.get(0)?;
        let desc: bool = r.get(1)?;
        let coll: Option<String> = r.get(2)?;
        Ok((name, desc, coll))
    })?;
    let mut order = Vec::new();
    for term in terms {
        let (name, desc, coll) = term?;
        let Some(name) = name else {
            return Ok(None);
        };
        let mut t = quote(&name);
        if let Some(coll) = coll {
            t.push_str(" COLLATE ");
            t.push_str(&quote(&coll));
        }
        if desc {
            t.push_str(" DESC");
        }
        order.push(t);
    }
    Ok(if order.is_empty() {
        None
    } else {
        Some(order.join(", "))
    })
}

pub(super) fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
