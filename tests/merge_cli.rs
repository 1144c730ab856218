//! Row-level three-way merge of the knowledge graph, through the real binary on real
//! databases: two machines' offline edits both survive; only a row changed differently on
//! both sides is a conflict; anything that cannot be merged safely falls back to whole files.

mod common;
mod rowmerge;
use common::*;
use rusqlite::Connection;
use std::path::Path;

const DB: &str = "metastore.db";

fn count(db: &Path) -> i64 {
    Connection::open(db)
        .unwrap()
        .query_row("SELECT count(*) FROM entities", [], |r| r.get(0))
        .unwrap()
}

/// Two machines in sync on a 92-entity graph.
fn setup(extra: &str) -> (World, Machine, Machine) {
    let w = World::new();
    let a = w.machine("a", &[("icloud", "cloud")], extra);
    let b = w.machine("b", &[("icloud", "cloud")], extra);
    metasync::sample::create_knowledge_graph(&a.file(DB), 92, 1).unwrap();
    set_age(&a.file(DB), 1000);
    a.sync(&[], 0);
    b.sync(&[], 0);
    (w, a, b)
}

/// A edits (and syncs), then B edits offline; B's edit is newer.
fn edits(a: &Machine, b: &Machine, sql_a: &str, sql_b: &str) {
    exec(&a.file(DB), sql_a);
    set_age(&a.file(DB), 200);
    a.sync(&[], 0);
    exec(&b.file(DB), sql_b);
    set_age(&b.file(DB), 100);
}

fn everywhere(w: &World, a: &Machine, b: &Machine) -> [std::path::PathBuf; 3] {
    [a.file(DB), b.file(DB), w.path("cloud").join(DB)]
}

#[test]
fn disjoint_row_edits_on_two_machines_both_survive_everywhere() {
    let (w, a, b) = setup("strategy = \"manual\"");
    edits(&a, &b, "UPDATE entities SET name = 'edited on a' WHERE id = 1;", "UPDATE entities SET name = 'edited on b' WHERE id = 2; INSERT INTO entities(id, name, kind, data, updated_at) VALUES (500, 'new on b', 'k', 'd', 't');");
    let r = b.sync(&[], 0);
    assert!(
        r["files"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("merged row by row"),
        "{r:#}"
    );
    assert!(r["row_conflicts"].as_array().unwrap().is_empty());
    a.sync(&[], 0);
    for db in everywhere(&w, &a, &b) {
        assert_eq!(
            name(&db, 1).as_deref(),
            Some("edited on a"),
            "{}",
            db.display()
        );
        assert_eq!(
            name(&db, 2).as_deref(),
            Some("edited on b"),
            "{}",
            db.display()
        );
        assert_eq!(name(&db, 500).as_deref(), Some("new on b"));
        assert_eq!(count(&db), 93);
    }
    // Both whole input versions are kept as backups.
    assert_eq!(backups_in(&b.home, DB).len(), 1);
    assert!(!backups_in(&w.path("cloud"), DB).is_empty());
    // And everything is quiet afterwards.
    let r = b.sync(&[], 0);
    assert!(r["actions"].as_array().unwrap().is_empty(), "{r:#}");
    let r = a.sync(&[], 0);
    assert!(r["actions"].as_array().unwrap().is_empty(), "{r:#}");
}

#[test]
fn the_same_row_on_both_sides_newest_wins_and_the_other_value_is_recorded() {
    let (w, a, b) = setup("");
    edits(&a, &b, "UPDATE entities SET name = 'a says' WHERE id = 5; UPDATE entities SET name = 'only a' WHERE id = 6;", "UPDATE entities SET name = 'b says' WHERE id = 5; UPDATE entities SET name = 'only b' WHERE id = 7;");
    let r = b.sync(&[], 0);
    let rc = &r["row_conflicts"][0];
    assert_eq!(rc["table"], "entities", "{r:#}");
    assert_eq!(rc["key"], "[5]");
    assert_eq!(rc["winner"], "local", "B's edit is newer");
    let values = rc["values"].as_array().unwrap();
    assert_eq!(values.len(), 2);
    assert!(values
        .iter()
        .any(|v| v[1].as_str().unwrap().contains("a says")));
    a.sync(&[], 0);
    for db in everywhere(&w, &a, &b) {
        assert_eq!(name(&db, 5).as_deref(), Some("b says"));
        assert_eq!(name(&db, 6).as_deref(), Some("only a"));
        assert_eq!(name(&db, 7).as_deref(), Some("only b"));
    }
    // The losing value survives in a backup.
    let cloud_backups = backups_in(&w.path("cloud"), DB);
    assert!(cloud_backups
        .iter()
        .any(|p| name(p, 5).as_deref() == Some("a says")));
    // And on record.
    let (_, st) = b.json(&["status"]);
    assert_eq!(st["row_conflicts"][0]["key"], "[5]", "{st:#}");
}

#[test]
fn insert_insert_with_the_same_key_is_a_row_conflict() {
    let (w, a, b) = setup("strategy = \"remote\"");
    edits(
        &a,
        &b,
        "INSERT INTO entities(id, name, kind, data, updated_at) VALUES (93, 'from a', 'k', 'd', 't');",
        "INSERT INTO entities(id, name, kind, data, updated_at) VALUES (93, 'from b', 'k', 'd', 't');",
    );
    let r = b.sync(&[], 0);
    assert_eq!(r["row_conflicts"][0]["key"], "[93]", "{r:#}");
    assert_eq!(r["row_conflicts"][0]["winner"], "icloud");
    assert_eq!(name(&b.file(DB), 93).as_deref(), Some("from a"));
    assert_eq!(
        name(&w.path("cloud").join(DB), 93).as_deref(),
        Some("from a")
    );
}

#[test]
fn update_against_delete() {
    let (_w, a, b) = setup("strategy = \"local\"");
    edits(
        &a,
        &b,
        "UPDATE entities SET name = 'kept alive' WHERE id = 9;",
        "DELETE FROM relations WHERE src = 9 OR dst = 9; DELETE FROM entities WHERE id = 9;",
    );
    let r = b.sync(&[], 0);
    let conflicts = r["row_conflicts"].as_array().unwrap();
    assert!(
        conflicts
            .iter()
            .any(|c| c["key"] == "[9]" && c["winner"] == "local"),
        "{r:#}"
    );
    assert_eq!(name(&b.file(DB), 9), None);
}

#[test]
fn manual_holds_the_file_with_the_row_list() {
    let (w, a, b) = setup("strategy = \"manual\"");
    edits(
        &a,
        &b,
        "UPDATE entities SET name = 'a' WHERE id = 3;",
        "UPDATE entities SET name = 'b' WHERE id = 3;",
    );
    let r = b.sync(&[], 3);
    let c = &r["conflicts"][0];
    assert_eq!(c["rows"][0]["key"], "[3]", "{r:#}");
    assert!(c["rows"][0]["winner"].is_null());
    assert_eq!(
        name(&b.file(DB), 3).as_deref(),
        Some("b"),
        "nothing overwritten"
    );
    assert_eq!(name(&w.path("cloud").join(DB), 3).as_deref(), Some("a"));
    let (code, list) = b.json(&["conflicts"]);
    assert_eq!(code, 3);
    assert_eq!(list[0]["rows"][0]["table"], "entities");
    let (code, _) = b.json(&["resolve", DB, "--keep", "local"]);
    assert_eq!(code, 0);
    assert_eq!(name(&w.path("cloud").join(DB), 3).as_deref(), Some("b"));
}

#[test]
fn a_schema_change_on_one_side_falls_back_to_the_file_level_strategy() {
    let (w, a, b) = setup("");
    edits(
        &a,
        &b,
        "ALTER TABLE entities ADD COLUMN tags TEXT; UPDATE entities SET tags = 'x' WHERE id = 1;",
        "UPDATE entities SET name = 'b' WHERE id = 2;",
    );
    let r = b.sync(&[], 0);
    let warned = r["warnings"].as_array().unwrap().iter().any(|w| {
        w.as_str().unwrap().contains("row merge not possible")
            && w.as_str().unwrap().contains("schema")
    });
    assert!(warned, "{r:#}");
    // newest at file level: B's whole file wins; A's is a backup in the cloud.
    assert_eq!(name(&w.path("cloud").join(DB), 2).as_deref(), Some("b"));
    assert!(backups_in(&w.path("cloud"), DB).iter().any(|p| {
        Connection::open(p)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM pragma_table_info('entities') WHERE name = 'tags'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
            == 1
    }));
}

#[test]
fn a_table_without_a_primary_key_falls_back() {
    let w = World::new();
    let a = w.machine("a", &[("icloud", "cloud")], "");
    let b = w.machine("b", &[("icloud", "cloud")], "");
    exec(&a.file(DB), "CREATE TABLE entities(id INTEGER PRIMARY KEY, name TEXT); CREATE TABLE log(msg TEXT); INSERT INTO entities VALUES (1, 'one'), (2, 'two');");
    set_age(&a.file(DB), 1000);
    a.sync(&[], 0);
    b.sync(&[], 0);
    exec(&a.file(DB), "UPDATE entities SET name = 'a' WHERE id = 1;");
    set_age(&a.file(DB), 200);
    a.sync(&[], 0);
    exec(&b.file(DB), "INSERT INTO log VALUES ('b');");
    set_age(&b.file(DB), 100);
    let r = b.sync(&[], 0);
    assert!(
        r["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("no primary key")),
        "{r:#}"
    );
}

#[test]
fn merge_file_mode_keeps_whole_files() {
    let (w, a, b) = setup("merge = \"file\"");
    edits(
        &a,
        &b,
        "UPDATE entities SET name = 'a' WHERE id = 1;",
        "UPDATE entities SET name = 'b' WHERE id = 2;",
    );
    let r = b.sync(&[], 0);
    assert!(
        !r["files"][0]["reason"].as_str().unwrap().contains("merged"),
        "{r:#}"
    );
    // B's newer whole file won: A's edit of row 1 survives only in a backup.
    assert_ne!(name(&w.path("cloud").join(DB), 1).as_deref(), Some("a"));
    assert!(backups_in(&w.path("cloud"), DB)
        .iter()
        .any(|p| name(p, 1).as_deref() == Some("a")));
    assert!(
        !a.home.join(".metasync/base").exists(),
        "no base snapshots with merge = \"file\""
    );
}

#[test]
fn the_shrink_guard_applies_to_the_merged_version() {
    let (w, a, b) = setup("");
    // Each side deletes a third of the entities (fine on its own); merged, two thirds are gone.
    edits(
        &a,
        &b,
        "DELETE FROM relations; DELETE FROM entities WHERE id <= 30;",
        "DELETE FROM relations; DELETE FROM entities WHERE id BETWEEN 31 AND 60;",
    );
    let r = b.sync(&[], 3);
    assert!(
        r["conflicts"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("held back"),
        "{r:#}"
    );
    assert_eq!(
        count(&w.path("cloud").join(DB)),
        62,
        "the merged version was not propagated"
    );
    assert_eq!(count(&b.file(DB)), 62);
}

/// One seeded case of the row-merge property test's generator (`tests/rowmerge`), through the
/// engine: A edits and syncs, B edits offline (newer) and syncs, A syncs again. Every copy must
/// then hold what the three-way model says, with B winning each row conflict and A's value
/// reported; or the engine must say why the row merge was not possible.
fn engine_case(seed: u64) -> Result<EngineCase, String> {
    let mut rng = rowmerge::Rng(seed);
    let s = rowmerge::schema(&mut rng);
    let w = World::new();
    let a = w.machine("a", &[("icloud", "cloud")], "");
    let b = w.machine("b", &[("icloud", "cloud")], "");
    let (fa, fb) = (a.file(DB), b.file(DB));
    rowmerge::open(&fa).execute_batch(&s.sql).unwrap();
    let rows = 3 + rng.below(8);
    rowmerge::fill(&mut rng, &fa, &s, rows * s.specs.len());
    set_age(&fa, 1000);
    a.sync(&[], 0);
    b.sync(&[], 0);
    let base = rowmerge::dump(&fa, &s);
    let n = 1 + rng.below(5);
    let sql_a = rowmerge::edit(&mut rng, &fa, &s, n);
    set_age(&fa, 200);
    a.sync(&[], 0);
    let n = 1 + rng.below(5);
    let sql_b = rowmerge::edit(&mut rng, &fb, &s, n);
    set_age(&fb, 100);
    let (da, db) = (rowmerge::dump(&fa, &s), rowmerge::dump(&fb, &s));
    let (want, conflicts) = rowmerge::model(&base, &da, &db);
    let ctx = || format!("\n  schema: {}\n  a: {sql_a:?}\n  b: {sql_b:?}", s.sql);
    let r = b.sync(&[], 0);
    let warnings = r["warnings"].as_array().unwrap();
    if let Some(why) = warnings
        .iter()
        .filter_map(|w| w.as_str())
        .find(|w| w.contains("row merge not possible"))
    {
        return Ok(EngineCase::FellBack(why.to_string()));
    }
    let row_merged = r["files"][0]["reason"]
        .as_str()
        .is_some_and(|why| why.contains("merged row by row"));
    let mut got = rowmerge::Conflicts::new();
    for rc in r["row_conflicts"].as_array().unwrap() {
        let loser = rc["values"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v[0] == "icloud");
        let loser = loser.and_then(|v| v[1].as_str()).map(String::from);
        got.insert(
            (
                rc["table"].as_str().unwrap().into(),
                rc["key"].as_str().unwrap().into(),
            ),
            loser,
        );
        if rc["winner"] != "local" {
            return Err(format!("winner {rc} (B is newer){}", ctx()));
        }
    }
    if got != conflicts {
        return Err(format!(
            "row conflicts {got:?}, want {conflicts:?}{}",
            ctx()
        ));
    }
    a.sync(&[], 0);
    let seq = rowmerge::max_seq(&[&base, &da, &db]);
    for copy in everywhere(&w, &a, &b) {
        let d = rowmerge::dump(&copy, &s);
        if d.fts != rowmerge::fts_expected(&d, &s) {
            return Err(format!(
                "{}: full-text hits {:?}{}",
                copy.display(),
                d.fts,
                ctx()
            ));
        }
        if d.tables != want || d.seq != seq {
            return Err(format!(
                "{}: {d:?}\n  want {want:?} {seq:?}{}",
                copy.display(),
                ctx()
            ));
        }
    }
    Ok(if row_merged {
        EngineCase::Merged
    } else {
        EngineCase::OneSided
    })
}

/// How an engine case ended.
enum EngineCase {
    /// Both sides changed and the engine merged them row by row.
    Merged,
    /// Only one side's version changed in the end: no merge needed.
    OneSided,
    /// The engine fell back to the file-level strategy, saying why.
    FellBack(String),
}

#[test]
fn random_schemas_merge_through_the_engine_as_the_model_says() {
    let cases = std::env::var("METASYNC_PROP_CLI_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20u64);
    let mut seeder = rowmerge::Rng(0x13c1);
    let (mut merged, mut one_sided, mut fell_back, mut failures) = (0, 0, Vec::new(), Vec::new());
    for _ in 0..cases {
        let seed = seeder.next();
        match engine_case(seed) {
            Ok(EngineCase::Merged) => merged += 1,
            Ok(EngineCase::OneSided) => one_sided += 1,
            Ok(EngineCase::FellBack(why)) => fell_back.push(why),
            Err(e) => failures.push(format!("seed {seed:#x}: {e}")),
        }
    }
    println!(
        "rowmerge[cli]: cases {cases}, merged {merged}, one side changed {one_sided}, fell back {} ({}), mismatches {}",
        fell_back.len(),
        fell_back.join("; "),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
