//! The generator and oracles of the row-merge property test (issue 13), shared by
//! `tests/rowmerge_prop.rs` (library level) and `tests/merge_cli.rs` (through the engine):
//! random schemas over the SQLite features the merge must handle exactly, random SQL edits,
//! exact dumps, and the three-way model of a merge.
#![allow(dead_code)]

use metasync::merge::values_json;
use rusqlite::types::Value;
use rusqlite::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// What a column may hold (STRICT tables and full-text columns are choosy).
#[derive(Clone, Copy)]
pub enum Dom {
    Any,
    Int,
    Text,
    Real,
    Words,
    /// A text key (of a rowid table whose key is not the rowid): mostly a fresh UUID-like
    /// value (two sides' inserts are different rows), else one of `TEXTS` (the same key on
    /// both sides, keys equal under NOCASE), 1 in 400 NULL (which such a table accepts).
    Key,
    /// An integer key column: one of `INTS`, never NULL.
    IntKey,
}

pub const INTS: &[&str] = &[
    "0",
    "1",
    "-1",
    "7",
    "42",
    "9223372036854775807",
    "(-9223372036854775807 - 1)",
];
pub const REALS: &[&str] = &[
    "0.0", "-0.0", "1.5", "2.0", "1e308", "-1e308", "1e999", "-1e999",
];
pub const TEXTS: &[&str] = &[
    "'ai'", "'AI'", "'Ai'", "'ml'", "'ML'", "'1'", "'12abc'", "''", "'x''y'", "'héllo'",
];
pub const BLOBS: &[&str] = &["X''", "X'00'", "X'00ff'", "X'6169'"];
pub const WORDS: &[&str] = &[
    "'alpha beta'",
    "'gamma'",
    "'AI ml'",
    "'beta gamma'",
    "'delta'",
];
pub const TOKENS: &[&str] = &["alpha", "beta", "gamma", "ai", "ml", "delta"];

pub fn literal(rng: &mut Rng, dom: Dom) -> String {
    match dom {
        Dom::Key if rng.below(400) == 0 => return "NULL".into(),
        Dom::Key if rng.chance(65) => return format!("'{:08x}-uuid'", rng.next() as u32),
        Dom::Key => return rng.pick(TEXTS).to_string(),
        Dom::IntKey => return rng.pick(INTS).to_string(),
        _ if rng.chance(10) => return "NULL".into(),
        _ => {}
    }
    let pool = match dom {
        Dom::Int => INTS,
        Dom::Text => TEXTS,
        Dom::Real => REALS,
        Dom::Words => WORDS,
        Dom::Any => *rng.pick(&[INTS, REALS, TEXTS, BLOBS]),
        Dom::Key | Dom::IntKey => unreachable!(),
    };
    rng.pick(pool).to_string()
}

/// One table of a case's schema.
pub struct Spec {
    pub name: String,
    /// Its identity: `rowid` (an `INTEGER PRIMARY KEY`), or the PRIMARY KEY columns (of a
    /// WITHOUT ROWID table, or of a rowid table whose key is not the rowid).
    pub ident: Vec<String>,
    /// A rowid table whose key is not the rowid: its rowid is hidden (no part of a row's
    /// identity nor of its dump), inserts mostly leave it to SQLite, sometimes name it.
    pub hidden_rowid: bool,
    /// Columns a statement may set, with their domains (key columns included).
    pub cols: Vec<(String, Dom)>,
    /// Whether the random statements write it (else only triggers do).
    pub edited: bool,
    /// Whether they may update its rows (a contentless index's triggers only insert and delete).
    pub updates: bool,
    /// The rowid range of the inserted rows (rowid tables), or the key columns' domain.
    pub rowids: i64,
}

/// A case's schema: the tables, the SQL creating them, the features it exercises, the
/// full-text tables to query.
#[derive(Default)]
pub struct Schema {
    pub specs: Vec<Spec>,
    pub sql: String,
    pub features: BTreeSet<&'static str>,
    pub fts: Vec<String>,
}

pub fn rowid_spec(name: &str, cols: &[(&str, Dom)]) -> Spec {
    Spec {
        name: name.into(),
        ident: vec!["rowid".into()],
        cols: cols.iter().map(|(c, d)| (c.to_string(), *d)).collect(),
        edited: true,
        updates: true,
        rowids: 12,
        hidden_rowid: false,
    }
}

/// A rowid table identified by the key `ident` (not the rowid).
pub fn keyed_spec(name: &str, ident: &[&str], cols: &[(&str, Dom)]) -> Spec {
    Spec {
        ident: ident.iter().map(|c| c.to_string()).collect(),
        hidden_rowid: true,
        ..rowid_spec(name, cols)
    }
}

/// Tables that differ in how rows are keyed and stored.
fn key_tables(s: &mut Schema, f: &str, n: &str, coll: &str) -> Option<String> {
    Some(match f {
        "plain" => {
            s.specs
                .push(rowid_spec(n, &[("a", Dom::Any), ("b", Dom::Any)]));
            format!("CREATE TABLE {n}(id INTEGER PRIMARY KEY, a, b TEXT{coll});")
        }
        "generated" => {
            s.specs
                .push(rowid_spec(n, &[("a", Dom::Any), ("b", Dom::Any)]));
            format!("CREATE TABLE {n}(id INTEGER PRIMARY KEY, a, g TEXT GENERATED ALWAYS AS (typeof(a) || ':' || typeof(b)) VIRTUAL, b, s INTEGER AS (length(b)) STORED);")
        }
        "strict" => {
            s.specs.push(rowid_spec(
                n,
                &[
                    ("a", Dom::Any),
                    ("b", Dom::Text),
                    ("c", Dom::Int),
                    ("d", Dom::Real),
                ],
            ));
            format!("CREATE TABLE {n}(id INTEGER PRIMARY KEY, a ANY, b TEXT{coll}, c INTEGER, d REAL) STRICT;")
        }
        "autoincrement" => {
            s.specs.push(rowid_spec(n, &[("a", Dom::Any)]));
            format!("CREATE TABLE {n}(id INTEGER PRIMARY KEY AUTOINCREMENT, a);")
        }
        "text_key_rowid" => {
            s.specs.push(keyed_spec(
                n,
                &["k"],
                &[("k", Dom::Key), ("a", Dom::Any), ("b", Dom::Int)],
            ));
            format!("CREATE TABLE {n}(k TEXT PRIMARY KEY{coll}, a, b INTEGER);")
        }
        "composite_rowid" => {
            s.specs.push(keyed_spec(
                n,
                &["x", "y"],
                &[("x", Dom::IntKey), ("y", Dom::Key), ("a", Dom::Any)],
            ));
            format!("CREATE TABLE {n}(x INTEGER, y TEXT{coll}, a, PRIMARY KEY(x, y));")
        }
        _ => return None,
    })
}

/// Tables with exact-key, CHECK, index and conflict-clause constraints.
fn constrained_tables(
    s: &mut Schema,
    rng: &mut Rng,
    f: &str,
    n: &str,
    coll: &str,
) -> Option<String> {
    Some(match f {
        "without_rowid" => {
            s.specs.push(Spec {
                name: n.into(),
                ident: vec!["k".into(), "j".into()],
                cols: vec![
                    ("k".into(), Dom::Text),
                    ("j".into(), Dom::Int),
                    ("a".into(), Dom::Any),
                    ("b".into(), Dom::Text),
                ],
                edited: true,
                updates: true,
                rowids: 0,
                hidden_rowid: false,
            });
            format!("CREATE TABLE {n}(k TEXT{coll}, j INTEGER, a, b TEXT COLLATE NOCASE, PRIMARY KEY(k, j)) WITHOUT ROWID;")
        }
        "any_key" => {
            s.specs.push(Spec {
                name: n.into(),
                ident: vec!["k".into()],
                cols: vec![("k".into(), Dom::Any), ("v".into(), Dom::Any)],
                edited: true,
                updates: true,
                rowids: 0,
                hidden_rowid: false,
            });
            format!("CREATE TABLE {n}(k PRIMARY KEY, v) WITHOUT ROWID;")
        }
        "check_and_indexes" => {
            s.specs
                .push(rowid_spec(n, &[("a", Dom::Int), ("b", Dom::Text)]));
            format!(
                "CREATE TABLE {n}(id INTEGER PRIMARY KEY, a INTEGER CHECK (a IS NULL OR a <> 42), b TEXT{coll});
                 CREATE UNIQUE INDEX {n}_pb ON {n}(b) WHERE length(b) > 2;
                 CREATE INDEX {n}_xb ON {n}(lower(b), a);"
            )
        }
        "conflict_clause" => {
            s.specs
                .push(rowid_spec(n, &[("a", Dom::Any), ("b", Dom::Text)]));
            let on = rng.pick(&["REPLACE", "IGNORE", "FAIL"]);
            format!("CREATE TABLE {n}(id INTEGER PRIMARY KEY ON CONFLICT REPLACE, a, b TEXT UNIQUE ON CONFLICT {on});")
        }
        _ => return None,
    })
}

/// Tables with something attached: triggers, a view, a foreign key, full-text indexes.
fn linked_tables(s: &mut Schema, f: &str, n: &str) -> Option<String> {
    Some(match f {
        "trigger_counter" => {
            // The counter's table sorts before the counted one and the log is written by an
            // update: a trigger that ran again during the merge would show in either.
            s.specs.push(rowid_spec(n, &[("a", Dom::Any)]));
            for t in [format!("a{n}_count"), format!("{n}_log")] {
                s.specs.push(Spec {
                    edited: false,
                    ..rowid_spec(&t, &[])
                });
            }
            format!(
                "CREATE TABLE {n}(id INTEGER PRIMARY KEY, a);
                 CREATE TABLE a{n}_count(id INTEGER PRIMARY KEY, n INTEGER);
                 CREATE TABLE {n}_log(id INTEGER PRIMARY KEY, what TEXT);
                 INSERT INTO a{n}_count VALUES (1, 0);
                 CREATE TRIGGER {n}_i AFTER INSERT ON {n} BEGIN UPDATE a{n}_count SET n = n + 1; END;
                 CREATE TRIGGER {n}_d AFTER DELETE ON {n} BEGIN UPDATE a{n}_count SET n = n - 1; END;
                 CREATE TRIGGER {n}_u AFTER UPDATE ON {n} BEGIN
                   INSERT INTO {n}_log(what) VALUES ('updated ' || new.id); END;"
            )
        }
        "view" => {
            s.specs.push(rowid_spec(n, &[("a", Dom::Any)]));
            format!("CREATE TABLE {n}(id INTEGER PRIMARY KEY, a); CREATE VIEW {n}_v AS SELECT id, typeof(a) FROM {n};")
        }
        "foreign_key" => {
            s.specs.push(rowid_spec(n, &[("a", Dom::Any)]));
            s.specs.push(rowid_spec(
                &format!("{n}_c"),
                &[("p", Dom::Int), ("a", Dom::Any)],
            ));
            format!(
                "CREATE TABLE {n}(id INTEGER PRIMARY KEY, a);
                 CREATE TABLE {n}_c(id INTEGER PRIMARY KEY, p INTEGER REFERENCES {n}(id), a);"
            )
        }
        _ => return fts_tables(s, f, n),
    })
}

/// Tables with a full-text index kept up to date by triggers.
fn fts_tables(s: &mut Schema, f: &str, n: &str) -> Option<String> {
    Some(match f {
        "fts_external" => {
            s.specs.push(rowid_spec(n, &[("body", Dom::Words)]));
            s.fts.push(format!("{n}_fts"));
            format!(
                "CREATE TABLE {n}(id INTEGER PRIMARY KEY, body TEXT);
                 CREATE VIRTUAL TABLE {n}_fts USING fts5(body, content='{n}', content_rowid='id');
                 CREATE TRIGGER {n}_i AFTER INSERT ON {n} BEGIN
                   INSERT INTO {n}_fts(rowid, body) VALUES (new.id, new.body); END;
                 CREATE TRIGGER {n}_d AFTER DELETE ON {n} BEGIN
                   INSERT INTO {n}_fts({n}_fts, rowid, body) VALUES ('delete', old.id, old.body); END;
                 CREATE TRIGGER {n}_u AFTER UPDATE ON {n} BEGIN
                   INSERT INTO {n}_fts({n}_fts, rowid, body) VALUES ('delete', old.id, old.body);
                   INSERT INTO {n}_fts(rowid, body) VALUES (new.id, new.body); END;"
            )
        }
        "fts_text_key" => {
            // An external-content index over the hidden rowid of a text-keyed table.
            s.specs.push(keyed_spec(
                n,
                &["k"],
                &[("k", Dom::Key), ("body", Dom::Words)],
            ));
            s.fts.push(format!("{n}_fts"));
            format!(
                "CREATE TABLE {n}(k TEXT PRIMARY KEY, body TEXT);
                 CREATE VIRTUAL TABLE {n}_fts USING fts5(body, content='{n}');
                 CREATE TRIGGER {n}_i AFTER INSERT ON {n} BEGIN
                   INSERT INTO {n}_fts(rowid, body) VALUES (new.rowid, new.body); END;
                 CREATE TRIGGER {n}_d AFTER DELETE ON {n} BEGIN
                   INSERT INTO {n}_fts({n}_fts, rowid, body) VALUES ('delete', old.rowid, old.body); END;
                 CREATE TRIGGER {n}_u AFTER UPDATE ON {n} BEGIN
                   INSERT INTO {n}_fts({n}_fts, rowid, body) VALUES ('delete', old.rowid, old.body);
                   INSERT INTO {n}_fts(rowid, body) VALUES (new.rowid, new.body); END;"
            )
        }
        "fts_contentless" => {
            s.specs.push(Spec {
                updates: false,
                ..rowid_spec(n, &[("body", Dom::Words)])
            });
            s.fts.push(format!("{n}_fts"));
            format!(
                "CREATE TABLE {n}(id INTEGER PRIMARY KEY, body TEXT);
                 CREATE VIRTUAL TABLE {n}_fts USING fts5(body, content='');
                 CREATE TRIGGER {n}_i AFTER INSERT ON {n} BEGIN
                   INSERT INTO {n}_fts(rowid, body) VALUES (new.id, new.body); END;
                 CREATE TRIGGER {n}_d AFTER DELETE ON {n} BEGIN
                   INSERT INTO {n}_fts({n}_fts, rowid, body) VALUES ('delete', old.id, old.body); END;"
            )
        }
        _ => return None,
    })
}

/// Adds one table (or group of tables) of feature `f` to the schema, named from `n`.
pub fn add_feature(s: &mut Schema, rng: &mut Rng, f: &'static str, n: &str) {
    let coll = if rng.chance(50) {
        " COLLATE NOCASE"
    } else {
        ""
    };
    let sql = key_tables(s, f, n, coll)
        .or_else(|| constrained_tables(s, rng, f, n, coll))
        .or_else(|| linked_tables(s, f, n))
        .unwrap_or_else(|| unreachable!("{f}"));
    s.sql.push_str(&sql);
    s.sql.push('\n');
    s.features.insert(f);
}

pub const FEATURES: &[&str] = &[
    "plain",
    "generated",
    "strict",
    "autoincrement",
    "text_key_rowid",
    "composite_rowid",
    "without_rowid",
    "any_key",
    "check_and_indexes",
    "trigger_counter",
    "conflict_clause",
    "view",
    "foreign_key",
    "fts_external",
    "fts_text_key",
    "fts_contentless",
];

/// The features whose table is a rowid table identified by a key that is not the rowid.
pub const HIDDEN_ROWID: &[&str] = &["text_key_rowid", "composite_rowid", "fts_text_key"];

pub fn schema(rng: &mut Rng) -> Schema {
    let mut s = Schema::default();
    for i in 0..1 + rng.below(3) {
        // One case in three starts with such a table: concurrent inserts into it (two rows
        // given the same next rowid on each side) are the common case of real applications.
        let f = if i == 0 && rng.chance(33) {
            *rng.pick(HIDDEN_ROWID)
        } else {
            *rng.pick(FEATURES)
        };
        add_feature(&mut s, rng, f, &format!("t{i}"));
    }
    s
}

/// A random statement on one table of the schema: an insert (`inserts` times in 10), a delete
/// or an update of an existing row (found by its exact identity).
pub fn statement(rng: &mut Rng, conn: &Connection, spec: &Spec, inserts: usize) -> String {
    let t = &spec.name;
    let existing = |rng: &mut Rng| -> Option<String> {
        let cols: Vec<String> = spec.ident.iter().map(|c| format!("quote({c})")).collect();
        let sql = format!("SELECT {} FROM {t}", cols.join(", "));
        let mut st = conn.prepare(&sql).unwrap();
        let keys: Vec<Vec<String>> = st
            .query_map([], |r| {
                (0..spec.ident.len())
                    .map(|i| r.get::<_, String>(i))
                    .collect()
            })
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        if keys.is_empty() {
            return None;
        }
        let k = rng.pick(&keys);
        let cond: Vec<String> = spec
            .ident
            .iter()
            .zip(k)
            .map(|(c, v)| format!("{c} = {v} COLLATE BINARY"))
            .collect();
        Some(cond.join(" AND "))
    };
    let roll = rng.below(10);
    if roll < inserts || spec.cols.is_empty() {
        let (mut names, mut vals) = (Vec::new(), Vec::new());
        if spec.ident == ["rowid"] || (spec.hidden_rowid && rng.chance(20)) {
            names.push("rowid".to_string());
            vals.push((1 + rng.below(spec.rowids as usize)).to_string());
        }
        for (c, d) in &spec.cols {
            names.push(c.clone());
            vals.push(literal(rng, *d));
        }
        return format!(
            "INSERT INTO {t}({}) VALUES ({})",
            names.join(", "),
            vals.join(", ")
        );
    }
    let Some(cond) = existing(rng) else {
        return format!("DELETE FROM {t} WHERE 0");
    };
    if roll < inserts + (10 - inserts) / 3 || !spec.updates {
        return format!("DELETE FROM {t} WHERE {cond}");
    }
    let (c, d) = rng.pick(&spec.cols);
    format!("UPDATE {t} SET {c} = {} WHERE {cond}", literal(rng, *d))
}

/// Runs `n` random statements on `db` (4 in 10 inserts); returns those that succeeded (a
/// statement a constraint refuses is dropped, as an application's would fail).
pub fn edit(rng: &mut Rng, db: &Path, s: &Schema, n: usize) -> Vec<String> {
    edit_with(rng, db, s, n, 4)
}

/// Fills a new base with `n` random statements, 8 in 10 of them inserts.
pub fn fill(rng: &mut Rng, db: &Path, s: &Schema, n: usize) {
    edit_with(rng, db, s, n, 8);
}

fn edit_with(rng: &mut Rng, db: &Path, s: &Schema, n: usize, inserts: usize) -> Vec<String> {
    let conn = open(db);
    let edited: Vec<&Spec> = s.specs.iter().filter(|t| t.edited).collect();
    let mut done = Vec::new();
    for _ in 0..n {
        let spec = *rng.pick(&edited);
        let sql = statement(rng, &conn, spec, inserts);
        if conn.execute_batch(&sql).is_ok() {
            done.push(sql);
        }
    }
    done
}

pub fn open(db: &Path) -> Connection {
    let c = Connection::open(db).unwrap();
    c.execute_batch("PRAGMA synchronous = OFF; PRAGMA foreign_keys = ON;")
        .unwrap();
    c
}

/// One table's rows: identity → (every column, exactly; the stored columns' values).
pub type Rows = BTreeMap<String, (String, Vec<Value>)>;

/// A database, dumped: every table's rows (a table whose rowid is hidden: by its key, without
/// the rowid, which two orders of the same inserts need not agree on), `sqlite_sequence`,
/// what each full-text query finds (the identities of the content rows the hits' rowids are
/// in that version, or `missing rowid N`).
#[derive(PartialEq, Debug, Default)]
pub struct Dump {
    pub tables: BTreeMap<String, Rows>,
    pub seq: Vec<(String, i64)>,
    pub fts: Vec<(String, String, Vec<String>)>,
}

pub fn exact(v: &Value) -> String {
    match v {
        Value::Real(f) => format!("Real({f:?}/{:x})", f.to_bits()),
        other => format!("{other:?}"),
    }
}

pub fn dump(db: &Path, s: &Schema) -> Dump {
    let c = Connection::open(db).unwrap();
    let mut d = Dump::default();
    for spec in &s.specs {
        let stored: Vec<String> = c
            .prepare(&format!(
                "SELECT name FROM pragma_table_xinfo('{}') WHERE hidden = 0",
                spec.name
            ))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let (ni, ns) = (spec.ident.len(), stored.len());
        let sql = format!(
            "SELECT {}, {}, * FROM {}",
            spec.ident.join(", "),
            stored.join(", "),
            spec.name
        );
        let mut st = c.prepare(&sql).unwrap();
        let n = st.column_count();
        let rows: Rows = st
            .query_map([], |r| {
                let v: Vec<Value> = (0..n).map(|i| r.get(i).unwrap()).collect();
                let ident = values_json(&v[..ni]);
                let all: Vec<String> = v[ni + ns..].iter().map(exact).collect();
                Ok((ident, (all.join(" "), v[ni..ni + ns].to_vec())))
            })
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        d.tables.insert(spec.name.clone(), rows);
    }
    if let Ok(mut st) = c.prepare("SELECT name, seq FROM sqlite_sequence ORDER BY name") {
        d.seq = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
    }
    d.fts = fts_hits(&c, s);
    d
}

/// What each full-text query finds in `c`: the identities of the content rows its hits'
/// rowids are (or `missing rowid N`).
fn fts_hits(c: &Connection, s: &Schema) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for f in &s.fts {
        let content = f.trim_end_matches("_fts");
        let spec = s.specs.iter().find(|t| t.name == content).unwrap();
        let ident = format!(
            "SELECT {} FROM {content} WHERE rowid = ?1",
            spec.ident.join(", ")
        );
        for tok in TOKENS {
            let sql = format!("SELECT rowid FROM {f} WHERE {f} MATCH ?1 ORDER BY rowid");
            let rowids: Vec<i64> = c
                .prepare(&sql)
                .unwrap()
                .query_map([tok], |r| r.get(0))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            let mut hits: Vec<String> = rowids
                .iter()
                .map(|id| {
                    let n = spec.ident.len();
                    c.query_row(&ident, [id], |r| {
                        (0..n)
                            .map(|i| r.get(i))
                            .collect::<rusqlite::Result<Vec<Value>>>()
                    })
                    .map(|k| values_json(&k))
                    .unwrap_or_else(|_| format!("missing rowid {id}"))
                })
                .collect();
            hits.sort();
            out.push((f.clone(), tok.to_string(), hits));
        }
    }
    out
}

/// The three-way model: the merged rows, and the (table, key) of every row conflict with the
/// local (older, losing) side's row as the merge reports it.
pub type Conflicts = BTreeMap<(String, String), Option<String>>;

pub fn model(base: &Dump, a: &Dump, b: &Dump) -> (BTreeMap<String, Rows>, Conflicts) {
    let mut merged = BTreeMap::new();
    let mut conflicts = Conflicts::new();
    for (t, rows) in &base.tables {
        let (ra, rb) = (&a.tables[t], &b.tables[t]);
        let keys: BTreeSet<&String> = rows.keys().chain(ra.keys()).chain(rb.keys()).collect();
        let mut out = Rows::new();
        for k in keys {
            let (o, x, y) = (rows.get(k), ra.get(k), rb.get(k));
            let row = match (x != o, y != o) {
                (false, _) => y,
                (true, false) => x,
                (true, true) => {
                    if x != y {
                        let loser = x.map(|r| values_json(&r.1));
                        conflicts.insert((t.clone(), k.clone()), loser);
                    }
                    y
                }
            };
            if let Some(r) = row {
                out.insert(k.clone(), r.clone());
            }
        }
        merged.insert(t.clone(), out);
    }
    (merged, conflicts)
}

pub fn max_seq(dumps: &[&Dump]) -> Vec<(String, i64)> {
    let mut m = BTreeMap::new();
    for d in dumps {
        for (n, s) in &d.seq {
            let e = m.entry(n.clone()).or_insert(*s);
            *e = (*e).max(*s);
        }
    }
    m.into_iter().collect()
}

pub fn replay(base: &Path, to: &Path, first: &[String], then: &[String]) -> bool {
    std::fs::copy(base, to).unwrap();
    let c = open(to);
    first
        .iter()
        .chain(then)
        .all(|sql| c.execute_batch(sql).is_ok())
}

/// What each full-text query must find, from the rows of the index's content table
/// (`{name}_fts` indexes `body`, the last stored column, of `{name}`; the default tokenizer
/// splits on spaces and folds case): the identities of the rows holding the word. An index
/// that does not follow its content, or whose rowids point at other rows, is caught.
pub fn fts_expected(d: &Dump, s: &Schema) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for f in &s.fts {
        let content = &d.tables[f.trim_end_matches("_fts")];
        for tok in TOKENS {
            let mut hits: Vec<String> = content
                .iter()
                .filter_map(|(ident, (_, stored))| match stored.last() {
                    Some(Value::Text(body))
                        if body.to_lowercase().split_whitespace().any(|w| w == *tok) =>
                    {
                        Some(ident.clone())
                    }
                    _ => None,
                })
                .collect();
            hits.sort();
            out.push((f.clone(), tok.to_string(), hits));
        }
    }
    out
}
