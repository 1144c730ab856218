//! What changed between kept versions (issue 18), on real databases and files through the
//! engine: the row diff (composite keys, `WITHOUT ROWID`, a hidden-rowid TEXT key, a table
//! without a PRIMARY KEY, a generated column, a NOCASE key compared exactly), a file's
//! timeline, and putting back chosen rows (restored rows equal the old version's, the others
//! untouched, a foreign-key violation refused with nothing changed).

mod common;
use common::*;
use metasync::inspect::{Cell, ChangeSummary, Diff, TableDiff, VersionKind};
use metasync::{Engine, RunOptions};
use std::path::Path;

const DB: &str = "metastore.db";
const RULES: &str = "sorting-rules.yaml";

const SCHEMA: &str = "
PRAGMA foreign_keys = ON;
CREATE TABLE entities(id INTEGER PRIMARY KEY, name TEXT COLLATE NOCASE, data,
    name_len INTEGER GENERATED ALWAYS AS (length(name)) VIRTUAL);
CREATE TABLE tags(entity_id INTEGER NOT NULL REFERENCES entities(id), tag TEXT NOT NULL,
    weight, PRIMARY KEY (entity_id, tag)) WITHOUT ROWID;
CREATE TABLE conversations(id TEXT PRIMARY KEY, title TEXT);
CREATE TABLE labels(name TEXT PRIMARY KEY COLLATE NOCASE, n INTEGER);
CREATE TABLE notes(body TEXT);
CREATE TABLE odd(k PRIMARY KEY, v);
INSERT INTO odd VALUES (1, 'int'), ('1', 'text');
INSERT INTO entities(id, name, data) VALUES (1, 'Alice', 1), (2, 'bob', x'00ff'), (3, 'Carol', NULL);
INSERT INTO tags VALUES (1, 'x', 1), (1, 'y', 1), (2, 'x', 1);
INSERT INTO conversations VALUES ('c1', 'first'), ('c2', 'second');
INSERT INTO labels VALUES ('Ab', 1);
INSERT INTO notes(rowid, body) VALUES (1, 'one'), (2, 'two');
";

const EDIT: &str = "
UPDATE entities SET data = 1.0 WHERE id = 1;
UPDATE entities SET name = 'BOB' WHERE id = 2;
DELETE FROM entities WHERE id = 3;
INSERT INTO entities(id, name, data) VALUES (4, 'Dan', 'new');
DELETE FROM tags WHERE entity_id = 1 AND tag = 'y';
UPDATE tags SET weight = 2 WHERE entity_id = 1 AND tag = 'x';
INSERT INTO tags VALUES (2, 'X', 5);
UPDATE conversations SET title = 'First' WHERE id = 'c1';
UPDATE labels SET name = 'AB' WHERE name = 'Ab';
UPDATE notes SET body = 'TWO' WHERE rowid = 2;
";

fn logical(path: &Path) -> String {
    metasync::sqlite::logical_hash(path, &Default::default()).unwrap()
}

fn sync(m: &Machine) {
    let e = Engine::open(&m.home, None).unwrap();
    let r = e.run(&RunOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(r.exit_code, 0, "{r:#?}");
}

/// A home and a cloud folder: version 1 of the database and the rules synced, then version 2
/// of both, synced (the cloud keeps version 1 as a backup). Returns the machine, the cloud
/// backup of the database and version 1's logical hash.
fn two_versions(w: &World) -> (Machine, String, String) {
    let m = w.machine("a", &[("cloud", "cloud")], "");
    std::fs::create_dir_all(w.path("cloud")).unwrap();
    exec(&m.file(DB), SCHEMA);
    write_aged(&m.file(RULES), "rules:\n  - a\n  - b\n  - c\n", 100);
    sync(&m);
    let v1 = logical(&m.file(DB));
    exec(&m.file(DB), EDIT);
    write_aged(&m.file(RULES), "rules:\n  - a\n  - B\n  - c\n  - d\n", 50);
    sync(&m);
    let e = Engine::open(&m.home, None).unwrap();
    let backups = e.backups(Some(DB), None, false).unwrap();
    assert_eq!(backups.len(), 1, "{backups:#?}");
    assert_eq!(backups[0].sha256.as_deref(), Some(v1.as_str()));
    (m, backups[0].id.clone(), v1)
}

fn table<'a>(tables: &'a [TableDiff], name: &str) -> &'a TableDiff {
    tables
        .iter()
        .find(|t| t.table == name)
        .unwrap_or_else(|| panic!("no diff of {name} in {tables:#?}"))
}

fn keys<T>(rows: &[T], key: impl Fn(&T) -> &str) -> Vec<String> {
    let mut k: Vec<String> = rows.iter().map(|r| key(r).to_string()).collect();
    k.sort();
    k
}

fn value<'a>(cells: &'a metasync::inspect::Cells, col: &str) -> &'a Cell {
    &cells.0.iter().find(|(c, _)| c == col).unwrap().1
}

#[test]
fn database_diff_is_exact_by_key_type_and_bytes() {
    let w = World::new();
    let (m, backup, _) = two_versions(&w);
    let e = Engine::open(&m.home, None).unwrap();
    // Default: the newest backup (version 1) against the current local copy (version 2).
    let Diff::Database {
        a,
        b,
        tables,
        schema,
        counts,
        ..
    } = e.diff(DB, None, None, None).unwrap()
    else {
        panic!("not a database diff")
    };
    assert_eq!(
        (a.id.as_str(), b.id.as_str()),
        (backup.as_str(), "current:local")
    );
    assert!(schema.is_empty(), "{schema:#?}");

    let ent = table(&tables, "entities");
    assert_eq!(ent.key_columns, ["id"]);
    // The generated column is no stored column: never compared nor shown.
    assert_eq!(ent.columns, ["id", "name", "data"]);
    assert_eq!(keys(&ent.added, |r| &r.key), ["[4]"]);
    assert_eq!(keys(&ent.removed, |r| &r.key), ["[3]"]);
    // 1 → 1.0 is a change (type), 'bob' → 'BOB' too (bytes, whatever NOCASE says).
    assert_eq!(keys(&ent.changed, |r| &r.key), ["[1]", "[2]"]);
    let one = ent.changed.iter().find(|c| c.key == "[1]").unwrap();
    assert_eq!(one.changed_columns, ["data"]);
    assert_eq!(value(&one.old, "data"), &Cell::Integer(1));
    assert_eq!(value(&one.new, "data"), &Cell::Real("1.0".into()));
    let two = ent.changed.iter().find(|c| c.key == "[2]").unwrap();
    assert_eq!(two.changed_columns, ["name"]);
    assert_eq!(value(&two.old, "name"), &Cell::Text("bob".into()));
    match value(&two.old, "data") {
        Cell::Blob(b) => assert_eq!((b.len, b.hex.as_str()), (2, "00ff")),
        other => panic!("{other:?}"),
    }

    // WITHOUT ROWID, composite key: (2,'X') is a new row beside (2,'x').
    let tags = table(&tables, "tags");
    assert_eq!(tags.key_columns, ["entity_id", "tag"]);
    assert_eq!(keys(&tags.added, |r| &r.key), [r#"[2,"X"]"#]);
    assert_eq!(keys(&tags.removed, |r| &r.key), [r#"[1,"y"]"#]);
    assert_eq!(keys(&tags.changed, |r| &r.key), [r#"[1,"x"]"#]);
    assert_eq!(tags.changed[0].changed_columns, ["weight"]);

    // A TEXT PRIMARY KEY (hidden rowid) and a NOCASE key whose case changed: another row.
    let conv = table(&tables, "conversations");
    assert_eq!(keys(&conv.changed, |r| &r.key), [r#"["c1"]"#]);
    let labels = table(&tables, "labels");
    assert_eq!(keys(&labels.added, |r| &r.key), [r#"["AB"]"#]);
    assert_eq!(keys(&labels.removed, |r| &r.key), [r#"["Ab"]"#]);
    assert!(labels.changed.is_empty());

    // No PRIMARY KEY: rows by rowid.
    let notes = table(&tables, "notes");
    assert_eq!(notes.key_columns, ["rowid"]);
    assert_eq!(keys(&notes.changed, |r| &r.key), ["[2]"]);

    let ent_counts = counts.iter().find(|c| c.table == "entities").unwrap();
    assert_eq!((ent_counts.a, ent_counts.b), (Some(3), Some(3)));

    // --table keeps one table.
    let Diff::Database { tables, counts, .. } = e.diff(DB, None, None, Some("tags")).unwrap()
    else {
        panic!("not a database diff")
    };
    assert_eq!(tables.len(), 1);
    assert_eq!(tables[0].table, "tags");
    assert_eq!(counts.len(), 1);

    // The same version on both sides: nothing differs.
    let Diff::Database { tables, .. } = e
        .diff(DB, Some("current:cloud"), Some("current:local"), None)
        .unwrap()
    else {
        panic!("not a database diff")
    };
    assert!(tables.is_empty(), "{tables:#?}");
}

#[test]
fn schema_changes_are_listed() {
    let w = World::new();
    let (m, backup, _) = two_versions(&w);
    exec(
        &m.file(DB),
        "ALTER TABLE notes ADD COLUMN at TEXT; CREATE INDEX by_name ON entities(name); PRAGMA user_version = 7;",
    );
    let e = Engine::open(&m.home, None).unwrap();
    let Diff::Database { tables, schema, .. } = e.diff(DB, Some(&backup), None, None).unwrap()
    else {
        panic!("not a database diff")
    };
    let mut seen: Vec<(String, String, String)> = schema
        .iter()
        .map(|s| {
            let kind = serde_json::to_value(s.change).unwrap();
            (
                s.object.clone(),
                s.name.clone(),
                kind.as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("index".into(), "by_name".into(), "added".into()),
            ("pragma".into(), "user_version".into(), "changed".into()),
            ("table".into(), "notes".into(), "changed".into()),
        ]
    );
    // A table whose columns changed is named, its rows not compared.
    let notes = table(&tables, "notes");
    assert!(
        notes.note.as_deref().unwrap_or("").contains("columns"),
        "{notes:#?}"
    );
}

#[test]
fn text_diff_is_unified() {
    let w = World::new();
    let (m, _, _) = two_versions(&w);
    let e = Engine::open(&m.home, None).unwrap();
    let Diff::Text {
        unified,
        added,
        removed,
        ..
    } = e.diff(RULES, None, None, None).unwrap()
    else {
        panic!("not a text diff")
    };
    assert_eq!((added, removed), (2, 1), "{unified}");
    assert!(unified.contains("\n-  - b\n+  - B\n"), "{unified}");
    assert!(unified.contains("\n+  - d\n"), "{unified}");
    let _ = m;
}

#[test]
fn history_lists_every_version_with_its_change() {
    let w = World::new();
    let (m, backup, v1) = two_versions(&w);
    let e = Engine::open(&m.home, None).unwrap();
    let h = e.history(DB).unwrap();
    let ids: Vec<&str> = h.iter().map(|x| x.id.as_str()).collect();
    assert_eq!(
        ids,
        ["current:local", "current:cloud", backup.as_str()],
        "{h:#?}"
    );
    assert_eq!(h[0].kind, VersionKind::Current);
    assert_eq!(h[2].kind, VersionKind::Plain);
    assert_eq!(h[2].sha256.as_deref(), Some(v1.as_str()));
    assert_eq!(h[2].summary, ChangeSummary::First);
    assert_eq!(
        h[0].summary,
        ChangeSummary::Same,
        "local and cloud hold version 2"
    );
    let ChangeSummary::Database { tables, schema } = &h[1].summary else {
        panic!("{:?}", h[1].summary)
    };
    assert!(schema.is_empty());
    let ent = tables.iter().find(|t| t.table == "entities").unwrap();
    assert_eq!((ent.added, ent.removed, ent.changed), (1, 1, 2));
    let counts = h[2].counts.as_ref().unwrap();
    assert_eq!(counts.entities, Some(3));
    assert_eq!(counts.conversations, Some(2));

    let t = e.history(RULES).unwrap();
    assert_eq!(t.len(), 3, "{t:#?}");
    assert_eq!(
        t[1].summary,
        ChangeSummary::Text {
            lines_added: 2,
            lines_removed: 1
        }
    );
    assert!(e.history("elsewhere.txt").is_err(), "not a synced file");
}

#[test]
fn restored_rows_equal_the_old_version_and_nothing_else_moves() {
    let w = World::new();
    let (m, backup, _) = two_versions(&w);
    let e = Engine::open(&m.home, None).unwrap();
    let before = logical(&m.file(DB));
    let r = e
        .restore_rows(&backup, "entities", &["2".into(), "3".into(), "[4]".into()])
        .unwrap();
    assert_eq!(r.replaced, ["[2]"]);
    assert_eq!(r.reinserted, ["[3]"]);
    assert_eq!(r.deleted, ["[4]"]);
    // The version replaced was backed up first.
    let prev = r.previous_backup.expect("a backup of the current version");
    assert_eq!(logical(Path::new(&prev)), before);

    let conn = rusqlite::Connection::open(m.file(DB)).unwrap();
    let rows: Vec<(i64, String, rusqlite::types::Value)> = conn
        .prepare("SELECT id, name, data FROM entities ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    use rusqlite::types::Value as V;
    assert_eq!(
        rows,
        [
            (1, "Alice".into(), V::Real(1.0)), // untouched: still version 2's
            (2, "bob".into(), V::Blob(vec![0, 255])),
            (3, "Carol".into(), V::Null),
        ]
    );
    // Composite key, WITHOUT ROWID.
    let r = e
        .restore_rows(&backup, "tags", &[r#"[1,"y"]"#.into()])
        .unwrap();
    assert_eq!(r.reinserted, [r#"[1,"y"]"#]);
    let n: i64 = conn
        .query_row(
            "SELECT weight FROM tags WHERE entity_id = 1 AND tag = 'x'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 2, "the row not asked for keeps version 2's value");
    // A hidden-rowid TEXT key, exact: the old label 'Ab' comes back beside nothing else.
    let r = e
        .restore_rows(&backup, "conversations", &["c1".into()])
        .unwrap();
    assert_eq!(r.replaced, [r#"["c1"]"#]);
    let title: String = conn
        .query_row("SELECT title FROM conversations WHERE id = 'c1'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(title, "first");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn a_restore_breaking_a_foreign_key_changes_nothing() {
    let w = World::new();
    let (m, backup, _) = two_versions(&w);
    // Entity 2 and its tags are gone now; its old tag (2,'x') would point at nothing.
    exec(
        &m.file(DB),
        "DELETE FROM tags WHERE entity_id = 2; DELETE FROM entities WHERE id = 2;",
    );
    let before = logical(&m.file(DB));
    let backups_before = backups_in(&m.home, DB).len();
    let e = Engine::open(&m.home, None).unwrap();
    let err = e
        .restore_rows(&backup, "tags", &[r#"[2,"x"]"#.into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("foreign key"), "{err}");
    assert!(err.contains("nothing changed"), "{err}");
    assert_eq!(logical(&m.file(DB)), before);
    assert_eq!(
        backups_in(&m.home, DB).len(),
        backups_before,
        "no backup left behind"
    );
    // A key no version has, and an ambiguous bare key, are refused too.
    assert!(e.restore_rows(&backup, "entities", &["99".into()]).is_err());
    assert_eq!(logical(&m.file(DB)), before);
}

/// The command line: `history` and `diff`, human and JSON.
#[test]
fn cli_history_and_diff_human_and_json() {
    let w = World::new();
    let (m, backup, _) = two_versions(&w);
    let out = m.run(&["diff", DB]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (head, body) = text.split_once('\n').unwrap();
    assert!(head.starts_with(&format!("{DB}: {backup} (")), "{head}");
    assert!(head.contains(") → current:local ("), "{head}");
    let expected = r#"
conversations (key id): 0 rows added, 0 removed, 1 changed
  ~ ["c1"]  title: 'first' → 'First'

entities (key id): 1 row added, 1 removed, 2 changed
  + [4]  id=4  name='Dan'  data='new'
  - [3]  id=3  name='Carol'  data=NULL
  ~ [1]  data: 1 → 1.0
  ~ [2]  name: 'bob' → 'BOB'

labels (key name): 1 row added, 1 removed, 0 changed
  + ["AB"]  name='AB'  n=1
  - ["Ab"]  name='Ab'  n=1

notes (key rowid): 0 rows added, 0 removed, 1 changed
  ~ [2]  body: 'two' → 'TWO'

tags (key entity_id, tag): 1 row added, 1 removed, 1 changed
  + [2,"X"]  entity_id=2  tag='X'  weight=5
  - [1,"y"]  entity_id=1  tag='y'  weight=1
  ~ [1,"x"]  weight: 1 → 2
"#;
    assert_eq!(body, expected);

    let (code, d) = m.json(&["diff", DB, &backup, "current:local", "--table", "entities"]);
    assert_eq!(code, 0);
    assert_eq!(d["type"], "database");
    let tables = d["tables"].as_object().unwrap();
    assert_eq!(tables.keys().collect::<Vec<_>>(), ["entities"]);
    let t = &tables["entities"];
    assert_eq!(t["key"], serde_json::json!(["id"]));
    let one = t["changed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == serde_json::json!([1]))
        .unwrap();
    assert_eq!(
        one["columns"],
        serde_json::json!({"data": {"old": 1, "new": 1.0}})
    );
    assert_eq!(one["restore_key"], "[1]");
    assert_eq!(
        t["removed"],
        serde_json::json!([{"id": 3, "name": "Carol", "data": null}])
    );
    assert_eq!(t["removed_keys"], serde_json::json!(["[3]"]));

    let out = m.run(&["diff", RULES]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("-  - b\n+  - B\n"), "{text}");
    assert!(
        text.starts_with("--- cloud:sorting-rules.yaml.backup-"),
        "{text}"
    );

    let out = m.run(&["history", DB]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!("{DB}: 3 kept versions, newest first\n")),
        "{text}"
    );
    assert!(
        text.contains("\n  conversations +0 −0 ~1, entities +1 −1 ~2, labels +1 −1 ~0, notes +0 −0 ~1, tags +1 −1 ~1\n"),
        "{text}"
    );
    assert!(text.contains("3 entities, 2 conversations"), "{text}");
    assert!(
        text.contains("\n  same content as the version before\n"),
        "{text}"
    );
    let (code, h) = m.json(&["history", RULES]);
    assert_eq!(code, 0);
    assert_eq!(h[0]["id"], "current:local");
    assert_eq!(h[0]["kind"], "current");
    assert_eq!(
        h[1]["change"],
        serde_json::json!({"lines_added": 2, "lines_removed": 1})
    );
    assert_eq!(h[2]["kind"], "plain");
    assert_eq!(h[2]["change"], serde_json::Value::Null);
    let text = String::from_utf8(m.run(&["history", RULES]).stdout).unwrap();
    assert!(
        text.contains("\n  2 lines added, 1 line removed\n"),
        "{text}"
    );
}

const SPEC_SCHEMA: &str = "
CREATE TABLE tags(entity_id INTEGER NOT NULL, tag TEXT NOT NULL, weight,
    PRIMARY KEY (entity_id, tag)) WITHOUT ROWID;
CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB, big INTEGER);
CREATE TABLE readings(at REAL PRIMARY KEY, v TEXT) WITHOUT ROWID;
INSERT INTO tags VALUES (1, 'x', 1), (1, 'y', 0.5);
INSERT INTO items VALUES (1, 'a', 1.5, x'00ff', 1), (2, 'b', 2.0, NULL, NULL);
INSERT INTO readings VALUES (1.5, 'low'), (2.0, 'same');
";

const SPEC_EDIT: &str = "
DELETE FROM tags WHERE entity_id = 1 AND tag = 'y';
INSERT INTO tags VALUES (2, 'z', 2.5);
UPDATE tags SET weight = 1.25 WHERE entity_id = 1 AND tag = 'x';
UPDATE items SET score = 1e300, data = x'0102' WHERE id = 1;
DELETE FROM items WHERE id = 2;
INSERT INTO items VALUES (3, 'c', 9e999, x'ab', 9007199254740993);
UPDATE readings SET v = 'high' WHERE at = 1.5;
CREATE INDEX items_name ON items(name);
";

/// The SPEC §3 fields every `history` entry carries.
fn assert_backup_fields(entry: &serde_json::Value, file: &str) {
    for field in ["id", "location", "path", "created"] {
        assert!(entry[field].is_string(), "{field} in {entry:#}");
    }
    assert_eq!(entry["file"], file, "{entry:#}");
    assert!(entry["size"].is_u64(), "{entry:#}");
    let protected = entry.get("protected").expect("protected");
    assert!(protected.is_null() || protected.is_string(), "{entry:#}");
    assert!(entry.get("change").is_some(), "{entry:#}");
}

/// `history --json` and `diff --json` carry every SPEC §3 field with its name and shape: a
/// database (a composite key of a WITHOUT ROWID table, a REAL key, BLOBs, REALs, an integer
/// past 2^53, a non-finite REAL, a schema change) and a text file; `change` is null for the
/// oldest version.
#[test]
fn cli_history_and_diff_json_follow_the_spec() {
    let w = World::new();
    let m = w.machine("a", &[("cloud", "cloud")], "");
    std::fs::create_dir_all(w.path("cloud")).unwrap();
    exec(&m.file(DB), SPEC_SCHEMA);
    write_aged(&m.file(RULES), "rules:\n  - a\n  - b\n", 100);
    sync(&m);
    exec(&m.file(DB), SPEC_EDIT);
    write_aged(&m.file(RULES), "rules:\n  - a\n  - B\n  - c\n", 50);
    sync(&m);

    let (code, d) = m.json(&["diff", DB]);
    assert_eq!(code, 0);
    let tables = d["tables"].as_object().expect("tables is an object");
    assert_eq!(
        tables.keys().collect::<Vec<_>>(),
        ["items", "readings", "tags"]
    );
    let tags = &tables["tags"];
    assert_eq!(tags["key"], serde_json::json!(["entity_id", "tag"]));
    assert_eq!(
        tags["added"],
        serde_json::json!([{"entity_id": 2, "tag": "z", "weight": 2.5}])
    );
    assert_eq!(
        tags["removed"],
        serde_json::json!([{"entity_id": 1, "tag": "y", "weight": 0.5}])
    );
    assert_eq!(tags["changed"].as_array().unwrap().len(), 1);
    assert_eq!(tags["changed"][0]["key"], serde_json::json!([1, "x"]));
    assert_eq!(
        tags["changed"][0]["columns"],
        serde_json::json!({"weight": {"old": 1, "new": 1.25}})
    );

    let items = &tables["items"];
    assert_eq!(items["key"], serde_json::json!(["id"]));
    assert_eq!(
        items["added"],
        serde_json::json!([{"id": 3, "name": "c", "score": "inf", "data": {"blob": "ab"},
                            "big": 9007199254740993_i64}])
    );
    assert_eq!(
        items["removed"],
        serde_json::json!([{"id": 2, "name": "b", "score": 2.0, "data": null, "big": null}])
    );
    assert_eq!(items["changed"][0]["key"], serde_json::json!([1]));
    assert_eq!(
        items["changed"][0]["columns"],
        serde_json::json!({"score": {"old": 1.5, "new": 1e300},
                           "data": {"old": {"blob": "00ff"}, "new": {"blob": "0102"}}})
    );

    let readings = &tables["readings"];
    assert_eq!(readings["key"], serde_json::json!(["at"]));
    assert_eq!(readings["changed"][0]["key"], serde_json::json!([1.5]));
    assert_eq!(
        readings["changed"][0]["columns"],
        serde_json::json!({"v": {"old": "low", "new": "high"}})
    );
    assert_eq!(readings["changed"][0]["restore_key"], r#"[{"real":1.5}]"#);

    let schema = d["schema"].as_array().expect("schema is a list");
    assert!(
        schema.iter().any(|s| s["name"] == "items_name"),
        "{schema:#?}"
    );

    // The stdout spells an integer past 2^53 exactly, and a REAL with its point.
    let out = String::from_utf8(m.run(&["--json", "diff", DB]).stdout).unwrap();
    assert!(out.contains("\"big\": 9007199254740993"), "{out}");
    assert!(out.contains("\"score\": 2.0,"), "{out}");

    let (code, t) = m.json(&["diff", RULES]);
    assert_eq!(code, 0);
    let unified = t["unified"].as_str().expect("unified is a string");
    assert!(unified.contains("-  - b\n+  - B\n+  - c\n"), "{unified}");

    // Newest first: local's copy, the cloud's copy (the same), the backup (the oldest).
    let (code, h) = m.json(&["history", DB]);
    assert_eq!(code, 0);
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 3, "{h:#?}");
    for e in h {
        assert_backup_fields(e, DB);
    }
    assert_eq!(
        h[0]["change"],
        serde_json::json!({"tables": {}, "schema_changed": false, "schema": []})
    );
    let change = &h[1]["change"];
    assert_eq!(
        change["tables"],
        serde_json::json!({
            "items": {"added": 1, "removed": 1, "changed": 1},
            "readings": {"added": 0, "removed": 0, "changed": 1},
            "tags": {"added": 1, "removed": 1, "changed": 1},
        })
    );
    assert_eq!(change["schema_changed"], true);
    assert_eq!(h[2]["change"], serde_json::Value::Null);

    let (code, h) = m.json(&["history", RULES]);
    assert_eq!(code, 0);
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 3, "{h:#?}");
    for e in h {
        assert_backup_fields(e, RULES);
    }
    assert_eq!(
        h[0]["change"],
        serde_json::json!({"lines_added": 0, "lines_removed": 0})
    );
    assert_eq!(
        h[1]["change"],
        serde_json::json!({"lines_added": 2, "lines_removed": 1})
    );
    assert_eq!(h[2]["change"], serde_json::Value::Null);
}

/// `restore ID --rows TABLE:KEY,...`, and its refusals.
#[test]
fn cli_restore_rows() {
    let w = World::new();
    let (m, backup, _) = two_versions(&w);
    let out = m.run(&["restore", &backup, "--rows", "entities:2,3"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!("put back 2 rows of entities from {backup} into ")),
        "{text}"
    );
    assert!(
        text.contains(": 1 replaced, 1 re-inserted, 0 deleted\n"),
        "{text}"
    );
    assert_eq!(name(&m.file(DB), 2).as_deref(), Some("bob"));
    let (code, r) = m.json(&["restore", &backup, "--rows", r#"tags:[1,"y"]"#]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["reinserted"], serde_json::json!([r#"[1,"y"]"#]));
    // No key, or a row in neither version: refused (usage 2, refused 1).
    assert_eq!(
        m.run(&["restore", &backup, "--rows", "entities"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        m.run(&["restore", &backup, "--rows", "entities:77"])
            .status
            .code(),
        Some(1)
    );
}

/// A row conflict held by `manual`: `conflicts` shows both values of each row, `resolve
/// --keep-rows` settles it row by row and the result goes everywhere.
#[test]
fn cli_row_conflicts_settled_row_by_row() {
    let w = World::new();
    let a = w.machine("a", &[("icloud", "cloud")], "strategy = \"manual\"");
    let b = w.machine("b", &[("icloud", "cloud")], "strategy = \"manual\"");
    metasync::sample::create_knowledge_graph(&a.file(DB), 20, 1).unwrap();
    set_age(&a.file(DB), 1000);
    a.sync(&[], 0);
    b.sync(&[], 0);
    exec(&a.file(DB), "UPDATE entities SET name = 'a3' WHERE id = 3; UPDATE entities SET name = 'a5' WHERE id = 5;");
    set_age(&a.file(DB), 200);
    a.sync(&[], 0);
    exec(&b.file(DB), "UPDATE entities SET name = 'b3' WHERE id = 3; UPDATE entities SET name = 'b5' WHERE id = 5; UPDATE entities SET name = 'b7' WHERE id = 7;");
    set_age(&b.file(DB), 100);
    b.sync(&[], 3);
    let out = b.run(&["conflicts"]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("  2 rows changed differently:\n  row entities [3]:\n"),
        "{text}"
    );
    assert!(text.contains("\"b3\"") && text.contains("\"a3\""), "{text}");
    assert!(
        text.contains(&format!("metasync resolve {DB} --keep-rows LOCATION")),
        "{text}"
    );

    // Every held row needs a choice, from a location that changed it: else nothing moves.
    let e = Engine::open(&b.home, None).unwrap();
    let one = |location: &str| metasync::inspect::RowChoice {
        table: "entities".into(),
        key: "[3]".into(),
        location: location.into(),
    };
    let err = e
        .resolve_rows(DB, &[one("icloud")], &mut |_| {})
        .unwrap_err();
    assert!(
        err.to_string().contains("not chosen: entities [5]"),
        "{err}"
    );
    let err = e
        .resolve_rows(DB, &[one("elsewhere")], &mut |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("not in elsewhere"), "{err}");
    assert_eq!(name(&b.file(DB), 3).as_deref(), Some("b3"));
    assert_eq!(b.run(&["conflicts"]).status.code(), Some(3));

    // Row 3 keeps icloud's value (A's edit), row 5 the other side's (local, B's edit).
    let (code, r) = b.json(&[
        "resolve",
        DB,
        "--keep-rows",
        "icloud",
        "--table",
        "entities",
        "--keys",
        "3",
    ]);
    assert_eq!(code, 0, "{r:#}");
    for db in [b.file(DB), w.path("cloud").join(DB)] {
        assert_eq!(name(&db, 3).as_deref(), Some("a3"), "{}", db.display());
        assert_eq!(name(&db, 5).as_deref(), Some("b5"), "{}", db.display());
        assert_eq!(name(&db, 7).as_deref(), Some("b7"), "{}", db.display());
    }
    assert_eq!(b.run(&["conflicts"]).status.code(), Some(0));
    a.sync(&[], 0);
    assert_eq!(name(&a.file(DB), 5).as_deref(), Some("b5"));
}

/// Counts and sizes in words in the CLI's human output.
#[test]
fn cli_words() {
    let w = World::new();
    let m = w.machine("a", &[("cloud", "cloud")], "");
    std::fs::create_dir_all(w.path("cloud")).unwrap();
    write_aged(&m.file(RULES), &"x".repeat(287_000), 100);
    let text = String::from_utf8(m.run(&["sync"]).stdout).unwrap();
    assert!(
        text.contains(" sync: 1 file, 1 written, 0 conflicts, 0 warnings, 0 errors\n"),
        "{text}"
    );
    let text = String::from_utf8(m.run(&["status"]).stdout).unwrap();
    assert!(text.contains("    287 KB  "), "{text}");
}

/// Rows are put back as the old version had them: the database's triggers do not run (an
/// audit trigger adds nothing), and an external-content full-text index is rebuilt so that it
/// finds the restored text and no longer the replaced one.
#[test]
fn restored_rows_run_no_trigger_and_keep_full_text_in_step() {
    let w = World::new();
    let m = w.machine("a", &[("cloud", "cloud")], "");
    std::fs::create_dir_all(w.path("cloud")).unwrap();
    exec(
        &m.file(DB),
        "CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT);
         CREATE VIRTUAL TABLE docs_fts USING fts5(body, content='docs', content_rowid='id');
         CREATE TRIGGER docs_ai AFTER INSERT ON docs BEGIN
           INSERT INTO docs_fts(rowid, body) VALUES (new.id, new.body); END;
         CREATE TRIGGER docs_ad AFTER DELETE ON docs BEGIN
           INSERT INTO docs_fts(docs_fts, rowid, body) VALUES ('delete', old.id, old.body); END;
         CREATE TRIGGER docs_au AFTER UPDATE ON docs BEGIN
           INSERT INTO docs_fts(docs_fts, rowid, body) VALUES ('delete', old.id, old.body);
           INSERT INTO docs_fts(rowid, body) VALUES (new.id, new.body); END;
         CREATE TABLE audit(doc INTEGER);
         CREATE TRIGGER docs_audit AFTER INSERT ON docs BEGIN INSERT INTO audit VALUES (new.id); END;
         INSERT INTO docs VALUES (1, 'apple pie'), (2, 'banana bread');",
    );
    set_age(&m.file(DB), 100);
    sync(&m);
    exec(
        &m.file(DB),
        "UPDATE docs SET body = 'cherry tart' WHERE id = 1;",
    );
    sync(&m);
    let e = Engine::open(&m.home, None).unwrap();
    let backup = e.backups(Some(DB), None, false).unwrap()[0].id.clone();
    let Diff::Database { tables, .. } = e.diff(DB, None, None, None).unwrap() else {
        panic!("not a database diff")
    };
    assert_eq!(tables.len(), 1, "only docs changed: {tables:#?}");
    assert_eq!(table(&tables, "docs").changed[0].key, "[1]");

    let r = e.restore_rows(&backup, "docs", &["1".into()]).unwrap();
    assert_eq!(r.replaced, ["[1]"]);
    let conn = rusqlite::Connection::open(m.file(DB)).unwrap();
    let find = |word: &str| -> Vec<i64> {
        conn.prepare("SELECT rowid FROM docs_fts WHERE docs_fts MATCH ?1")
            .unwrap()
            .query_map([word], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(find("apple"), [1]);
    assert!(find("cherry").is_empty());
    let audited: i64 = conn
        .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    assert_eq!(audited, 2, "no trigger ran for the restored row");
}

/// A version moved into the history store is on the timeline too (kind `stored`), compared
/// with its neighbours, diffed, and a source of rows to put back.
#[test]
fn stored_versions_are_on_the_timeline_and_restore_rows() {
    use metasync::clock::FixedClock;
    use std::sync::Arc;
    let w = World::new();
    let m = w.machine(
        "a",
        &[("cloud", "cloud")],
        "[backups]\nkeep_last = 1\nretention = \"max_age\"\n",
    );
    std::fs::create_dir_all(w.path("cloud")).unwrap();
    let clock = Arc::new(FixedClock::new(
        chrono::Utc::now() - chrono::Duration::hours(3),
    ));
    let engine = || {
        Engine::open(&m.home, None)
            .unwrap()
            .with_clock(clock.clone())
    };
    let run = || {
        let r = engine().run(&RunOptions::default(), &mut |_| {}).unwrap();
        assert_eq!(r.exit_code, 0, "{r:#?}");
        clock.advance(chrono::Duration::minutes(10));
    };
    exec(&m.file(DB), SCHEMA);
    set_age(&m.file(DB), 100);
    run();
    exec(&m.file(DB), "UPDATE entities SET name = 'v2' WHERE id = 1;");
    run();
    exec(
        &m.file(DB),
        "UPDATE entities SET name = 'v3' WHERE id = 1; DELETE FROM notes WHERE rowid = 1;",
    );
    run();
    let e = engine();
    let h = e.history(DB).unwrap();
    let kinds: Vec<VersionKind> = h.iter().map(|x| x.kind).collect();
    assert_eq!(
        kinds,
        [
            VersionKind::Current,
            VersionKind::Current,
            VersionKind::Plain,
            VersionKind::Stored
        ],
        "{h:#?}"
    );
    let (plain, stored) = (&h[2], &h[3]);
    assert!(stored.id.starts_with("cloud:history:"), "{}", stored.id);
    assert_eq!(stored.summary, ChangeSummary::First);
    let ChangeSummary::Database { tables, .. } = &plain.summary else {
        panic!("{:?}", plain.summary)
    };
    assert_eq!(tables.len(), 1);
    assert_eq!(
        (tables[0].table.as_str(), tables[0].changed),
        ("entities", 1)
    );
    let Diff::Database { tables, .. } = e.diff(DB, Some(&stored.id), None, None).unwrap() else {
        panic!("not a database diff")
    };
    assert_eq!(table(&tables, "notes").summary.removed, 1);
    let r = e.restore_rows(&stored.id, "notes", &["1".into()]).unwrap();
    assert_eq!(r.reinserted, ["[1]"]);
    assert_eq!(
        name(&m.file(DB), 1).as_deref(),
        Some("v3"),
        "other rows untouched"
    );
}

/// A bare key that names two rows (the integer 1 and the text '1' of an untyped key) is
/// refused; the JSON array names one exactly.
#[test]
fn an_ambiguous_bare_key_is_refused_and_a_json_key_is_exact() {
    let w = World::new();
    let (m, backup, _) = two_versions(&w);
    exec(&m.file(DB), "UPDATE odd SET v = 'edited';");
    let e = Engine::open(&m.home, None).unwrap();
    let err = e
        .restore_rows(&backup, "odd", &["1".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("matches several rows"), "{err}");
    let r = e.restore_rows(&backup, "odd", &["[1]".into()]).unwrap();
    assert_eq!(r.replaced, ["[1]"]);
    let conn = rusqlite::Connection::open(m.file(DB)).unwrap();
    let rows: Vec<(String, String)> = conn
        .prepare("SELECT typeof(k), v FROM odd ORDER BY typeof(k)")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        [
            ("integer".into(), "int".into()),
            ("text".into(), "edited".into())
        ]
    );
}
