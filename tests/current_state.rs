//! The current state, not only the backups: after every run, each location's file is what its
//! writers committed (merged with the others' edits), or a conflict says why not. These are
//! the ways a run was once seen to drop an edit from the current state with exit 0 (issue 13):
//! a local database busy during one run, and a drive returning with the agreed version.

mod common;
use common::*;
use rusqlite::Connection;
use std::path::Path;

const DB: &str = "metastore.db";

/// Two machines in sync on a 92-entity graph through one shared folder.
fn setup(extra: &str) -> (World, Machine, Machine) {
    let w = World::new();
    let extra = format!("{extra}\n[sqlite]\nbusy_timeout_ms = 200\n");
    let a = w.machine("a", &[("icloud", "cloud")], &extra);
    let b = w.machine("b", &[("icloud", "cloud")], &extra);
    metasync::sample::create_knowledge_graph(&a.file(DB), 92, 1).unwrap();
    set_age(&a.file(DB), 1000);
    a.sync(&[], 0);
    b.sync(&[], 0);
    (w, a, b)
}

/// After B's run: both edits are in every current copy (merged row by row against the
/// version B last synced, whose base is kept while B is behind).
fn both_edits_survive(w: &World, b: &Machine, report: &serde_json::Value) {
    assert_eq!(report["exit_code"], 0, "{report:#}");
    assert!(
        report["files"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("merged row by row"),
        "{report:#}"
    );
    for db in [b.file(DB), w.path("cloud").join(DB)] {
        assert_eq!(
            name(&db, 5).as_deref(),
            Some("edited on a"),
            "A's edit is gone from {}: {report:#}",
            db.display()
        );
        assert_eq!(
            name(&db, 7).as_deref(),
            Some("edited on b"),
            "B's edit is gone from {}: {report:#}",
            db.display()
        );
    }
}

/// Holds `db` busy the way another program would, until dropped.
enum Hold {
    /// Rollback journal: an EXCLUSIVE lock (no reader gets in).
    Exclusive(Connection),
    /// WAL: a write transaction left open (a snapshot can read; a write cannot get in).
    WalWriter(Connection),
}

impl Hold {
    fn exclusive(db: &Path) -> Hold {
        let c = Connection::open(db).unwrap();
        c.execute_batch("PRAGMA journal_mode=DELETE; BEGIN EXCLUSIVE; UPDATE entities SET name = name WHERE id = 1;")
            .unwrap();
        Hold::Exclusive(c)
    }

    fn wal_writer(db: &Path) -> Hold {
        let c = Connection::open(db).unwrap();
        c.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
            .unwrap();
        c.execute_batch("BEGIN IMMEDIATE; UPDATE entities SET name = name WHERE id = 1;")
            .unwrap();
        Hold::WalWriter(c)
    }

    fn release(self) {
        match self {
            Hold::Exclusive(c) | Hold::WalWriter(c) => c.execute_batch("ROLLBACK").unwrap(),
        }
    }
}

fn busy_local_run_then_local_edit(hold: fn(&Path) -> Hold, strategy: &str) {
    let (w, a, b) = setup(&format!("strategy = \"{strategy}\""));
    exec(
        &a.file(DB),
        "UPDATE entities SET name = 'edited on a' WHERE id = 5;",
    );
    set_age(&a.file(DB), 300);
    a.sync(&[], 0);

    // B's database is busy for the whole run: the run fails, writing nothing into it.
    let h = hold(&b.file(DB));
    let (code, r) = b.json(&["sync"]);
    assert_ne!(
        code, 0,
        "a run that could not write local must not say done: {r:#}"
    );
    h.release();
    assert_ne!(
        name(&b.file(DB), 5).as_deref(),
        Some("edited on a"),
        "nothing was written"
    );

    // B's program then commits its own change; B's next run must not forget A's edit.
    exec(
        &b.file(DB),
        "UPDATE entities SET name = 'edited on b' WHERE id = 7;",
    );
    set_age(&b.file(DB), 100);
    let (_, r) = b.json(&["sync"]);
    both_edits_survive(&w, &b, &r);
    // And once settled, A sees both too.
    if r["exit_code"] == 0 {
        a.sync(&[], 0);
        assert_eq!(name(&a.file(DB), 7).as_deref(), Some("edited on b"));
        assert_eq!(name(&a.file(DB), 5).as_deref(), Some("edited on a"));
    }
}

#[test]
fn an_exclusive_lock_during_one_run_loses_no_edit_under_newest() {
    busy_local_run_then_local_edit(Hold::exclusive, "newest");
}

#[test]
fn an_exclusive_lock_during_one_run_loses_no_edit_under_manual() {
    busy_local_run_then_local_edit(Hold::exclusive, "manual");
}

#[test]
fn an_open_wal_write_during_one_run_loses_no_edit_under_newest() {
    busy_local_run_then_local_edit(Hold::wal_writer, "newest");
}

#[test]
fn an_open_wal_write_during_one_run_loses_no_edit_under_manual() {
    busy_local_run_then_local_edit(Hold::wal_writer, "manual");
}

/// The busy run is retried as soon as the database is free: A's edit arrives.
#[test]
fn after_a_busy_run_the_next_run_delivers_the_remote_edit() {
    let (_w, a, b) = setup("");
    exec(
        &a.file(DB),
        "UPDATE entities SET name = 'edited on a' WHERE id = 5;",
    );
    set_age(&a.file(DB), 300);
    a.sync(&[], 0);
    let h = Hold::exclusive(&b.file(DB));
    let (code, _) = b.json(&["sync"]);
    assert_ne!(code, 0);
    h.release();
    b.sync(&[], 0);
    assert_eq!(name(&b.file(DB), 5).as_deref(), Some("edited on a"));
    let r = b.sync(&[], 0);
    assert!(r["actions"].as_array().unwrap().is_empty(), "{r:#}");
}

/// A drive last seen by B long ago comes back holding the version every machine agreed on
/// since (A wrote it there). A and B edited different rows: the drive has not changed, so
/// the two edits merge row by row, and the drive gets the merged version.
#[test]
fn a_returning_drive_with_the_agreed_version_does_not_block_the_merge() {
    let w = World::new();
    let remotes = [("icloud", "cloud"), ("external", "drive")];
    let a = w.machine("a", &remotes, "");
    let b = w.machine("b", &remotes, "");
    metasync::sample::create_knowledge_graph(&a.file(DB), 92, 1).unwrap();
    set_age(&a.file(DB), 2000);
    a.sync(&[], 0);
    b.sync(&[], 0);
    // The drive goes with A: B no longer sees it.
    let drive = w.path("drive");
    let away = w.path("drive-away");
    // A first agrees a new version, with the drive plugged in on A's side only.
    exec(
        &a.file(DB),
        "UPDATE entities SET name = 'agreed later' WHERE id = 3;",
    );
    set_age(&a.file(DB), 1500);
    std::fs::rename(&drive, &away).unwrap();
    b.sync(&[], 0); // B: drive unavailable
    std::fs::rename(&away, &drive).unwrap();
    a.sync(&[], 0); // A: icloud and drive get "agreed later"
    std::fs::rename(&drive, &away).unwrap();
    b.sync(&[], 0); // B gets it through icloud; the drive is away
    assert_eq!(name(&b.file(DB), 3).as_deref(), Some("agreed later"));

    // Now A and B edit different rows; A syncs (drive away from A too).
    exec(
        &a.file(DB),
        "UPDATE entities SET name = 'edited on a' WHERE id = 5;",
    );
    set_age(&a.file(DB), 300);
    a.sync(&[], 0);
    exec(
        &b.file(DB),
        "UPDATE entities SET name = 'edited on b' WHERE id = 7;",
    );
    set_age(&b.file(DB), 100);
    // The drive returns to B, holding the agreed version B never recorded there.
    std::fs::rename(&away, &drive).unwrap();
    let r = b.sync(&[], 0);
    assert!(
        r["conflicts"].as_array().unwrap().is_empty(),
        "the drive's agreed version is no change: {r:#}"
    );
    for db in [b.file(DB), w.path("cloud").join(DB), drive.join(DB)] {
        assert_eq!(
            name(&db, 5).as_deref(),
            Some("edited on a"),
            "{}: {r:#}",
            db.display()
        );
        assert_eq!(
            name(&db, 7).as_deref(),
            Some("edited on b"),
            "{}: {r:#}",
            db.display()
        );
    }
}

/// A plain file B could not write (immutable, as a read-only disk would be) and then edited:
/// its edit was made without A's, so the next run says so as a conflict (manual: nothing is
/// overwritten) instead of replacing A's edit as the only change.
#[test]
fn a_failed_local_write_of_a_text_file_then_a_local_edit_is_a_conflict() {
    const RULES: &str = "sorting-rules.yaml";
    let w = World::new();
    let a = w.machine("a", &[("icloud", "cloud")], "strategy = \"manual\"");
    let b = w.machine("b", &[("icloud", "cloud")], "strategy = \"manual\"");
    write_aged(&a.file(RULES), "rules: 1\n", 1000);
    a.sync(&[], 0);
    b.sync(&[], 0);
    write_aged(&a.file(RULES), "rules: edited on a\n", 300);
    a.sync(&[], 0);
    let chattr = |flag: &str| {
        std::process::Command::new("chattr")
            .arg(flag)
            .arg(b.file(RULES))
            .status()
            .is_ok_and(|s| s.success())
    };
    if !chattr("+i") {
        println!("SKIP a_failed_local_write_of_a_text_file: chattr +i is not available here");
        return;
    }
    let (code, r) = b.json(&["sync"]);
    assert!(chattr("-i"));
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(read(&b.file(RULES)), "rules: 1\n");
    write_aged(&b.file(RULES), "rules: edited on b\n", 100);
    let (code, r) = b.json(&["sync"]);
    assert_eq!(code, 3, "{r:#}");
    assert!(
        r["conflicts"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("changed a version older than the agreed one"),
        "{r:#}"
    );
    assert_eq!(read(&w.path("cloud").join(RULES)), "rules: edited on a\n");
    assert_eq!(read(&b.file(RULES)), "rules: edited on b\n");
    // Settled by the user: B's version, A's kept as a backup in the shared folder.
    let (code, r) = b.json(&["resolve", RULES, "--keep", "local"]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(read(&w.path("cloud").join(RULES)), "rules: edited on b\n");
    assert!(backups_in(&w.path("cloud"), RULES)
        .iter()
        .any(|p| read(p) == "rules: edited on a\n"));
}
