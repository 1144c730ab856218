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
