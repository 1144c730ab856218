//! SQLite-aware sync through the real binary, on real databases made by the tests: a live
//! writer during syncs, the integrity gate, live-safe local writes, the shrink guard,
//! logical-hash stability and `verify`.

mod common;
use common::*;
use rusqlite::Connection;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const DB: &str = "metastore.db";

fn agent(db: &Path, mode: &str) -> Child {
    Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/dbagent.py"
        ))
        .arg(db)
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs the database agent")
}

fn count(db: &Path, table: &str) -> i64 {
    let c = Connection::open(db).unwrap();
    c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn integrity(db: &Path) -> String {
    let c = Connection::open(db).unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

fn journal_mode(db: &Path) -> String {
    let c = Connection::open(db).unwrap();
    c.query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap()
}

/// Runs `sql` on the database at `db` (another program's edit), then, when `age` is given,
/// sets its modification time that many seconds back.
fn edit(db: &Path, sql: &str, age: Option<u64>) {
    Connection::open(db).unwrap().execute_batch(sql).unwrap();
    if let Some(secs) = age {
        set_age(db, secs);
    }
}

/// Nothing is left in the home's scratch folder (`when` names the step for the message).
fn assert_scratch_empty(home: &Path, when: &str) {
    let scratch = home.join(".metasync").join("tmp");
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "{when}: left in the scratch folder: {left:?}"
    );
}

fn graph(path: &Path, entities: u64, conversations: u64) {
    metasync::sample::create_knowledge_graph(path, entities, conversations).unwrap();
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn live_wal_writer_during_syncs_every_copy_is_whole_and_complete() {
    let w = World::new();
    let a = w.machine("a", &[("icloud", "cloud")], "");
    graph(&a.file(DB), 92, 1);
    Connection::open(a.file(DB))
        .unwrap()
        .pragma_update(None, "journal_mode", "WAL")
        .unwrap();
    a.sync(&[], 0);
    let _writer = Kill(agent(&a.file(DB), "writer"));
    let marker = a.home.join(format!("{DB}.committed"));
    while !marker.exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut checked = 0;
    for _ in 0..8 {
        let committed_before: i64 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let r = a.sync(&[], 0);
        let copy = w.path("cloud").join(DB);
        assert_eq!(integrity(&copy), "ok", "{r:#}");
        let max: i64 = Connection::open(&copy)
            .unwrap()
            .query_row("SELECT max(id) FROM entities", [], |r| r.get(0))
            .unwrap();
        assert!(
            max >= committed_before,
            "a row committed before the snapshot is missing: {max} < {committed_before}"
        );
        assert_eq!(
            journal_mode(&copy),
            "delete",
            "remote copies are self-contained"
        );
        assert!(!w.path("cloud").join(format!("{DB}-wal")).exists());
        checked += 1;
        std::thread::sleep(std::time::Duration::from_millis(150));
    }
    assert_eq!(checked, 8);
    // The user's -wal is still there: reading never checkpointed or closed it away.
    assert!(a.home.join(format!("{DB}-wal")).exists());
}

#[test]
fn checkpoint_and_vacuum_are_not_changes() {
    let w = World::new();
    let a = w.machine("a", &[("icloud", "cloud")], "");
    graph(&a.file(DB), 500, 3);
    a.sync(&[], 0);
    {
        let c = Connection::open(a.file(DB)).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;")
            .unwrap();
    }
    let r = a.sync(&[], 0);
    assert_eq!(r["files"][0]["outcome"], "in_sync", "{r:#}");
    assert!(r["actions"].as_array().unwrap().is_empty());
    // One row changes: that is a change.
    Connection::open(a.file(DB))
        .unwrap()
        .execute("UPDATE entities SET name = 'renamed' WHERE id = 7", [])
        .unwrap();
    let r = a.sync(&[], 0);
    assert_eq!(r["files"][0]["outcome"], "propagated", "{r:#}");
    let copy = w.path("cloud").join(DB);
    let name: String = Connection::open(&copy)
        .unwrap()
        .query_row("SELECT name FROM entities WHERE id = 7", [], |r| r.get(0))
        .unwrap();
    assert_eq!(name, "renamed");
}

fn flip_page(db: &Path) {
    let mut bytes = std::fs::read(db).unwrap();
    let page = 4096;
    assert!(bytes.len() > 4 * page);
    // Page 3's b-tree header and cell pointers: structure that the integrity check reads.
    for b in &mut bytes[2 * page..2 * page + 64] {
        *b = !*b;
    }
    std::fs::write(db, bytes).unwrap();
}

#[test]
fn a_corrupt_remote_copy_is_refused_and_replaced_after_a_backup() {
    let w = World::new();
    let a = w.machine("a", &[("icloud", "cloud")], "");
    graph(&a.file(DB), 2000, 5);
    a.sync(&[], 0);
    let copy = w.path("cloud").join(DB);
    flip_page(&copy);
    let (code, v) = a.json(&["verify"]);
    assert_eq!(code, 1, "{v:#}");
    let icloud = v["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["location"] == "icloud")
        .unwrap();
    assert_ne!(icloud["integrity"], "ok");
    let local_hash = metasync::sqlite::logical_hash(&a.file(DB), &Default::default()).unwrap();
    let r = a.sync(&[], 0);
    assert!(
        r["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("corrupt")),
        "{r:#}"
    );
    // Local untouched, the remote healed, the corrupt version kept as a backup.
    assert_eq!(
        metasync::sqlite::logical_hash(&a.file(DB), &Default::default()).unwrap(),
        local_hash
    );
    assert_eq!(integrity(&a.file(DB)), "ok");
    assert_eq!(integrity(&copy), "ok");
    assert_eq!(count(&copy, "entities"), 2000);
    assert_eq!(backups_in(&w.path("cloud"), DB).len(), 1);
    assert!(
        backups_in(&a.home, DB).is_empty(),
        "nothing in local was overwritten"
    );
    let (code, _) = a.json(&["verify"]);
    assert_eq!(code, 0);
}

#[test]
fn a_corrupt_local_database_never_overwrites_a_healthy_remote() {
    let w = World::new();
    let a = w.machine("a", &[("icloud", "cloud")], "");
    graph(&a.file(DB), 2000, 5);
    a.sync(&[], 0);
    flip_page(&a.file(DB));
    let r = a.sync(&[], 0);
    let copy = w.path("cloud").join(DB);
    assert_eq!(integrity(&copy), "ok", "{r:#}");
    assert_eq!(count(&copy, "entities"), 2000);
    assert!(backups_in(&w.path("cloud"), DB).is_empty());
    // The healthy version came back home, the corrupt one is a backup.
    assert_eq!(integrity(&a.file(DB)), "ok");
    assert_eq!(backups_in(&a.home, DB).len(), 1);
}

#[test]
fn a_file_named_db_that_is_not_sqlite_is_never_propagated() {
    let w = World::new();
    let a = w.machine("a", &[("icloud", "cloud")], "");
    graph(&a.file(DB), 92, 1);
    a.sync(&[], 0);
    std::fs::write(w.path("cloud").join(DB), "this is not a database").unwrap();
    let r = a.sync(&[], 0);
    assert_eq!(count(&a.file(DB), "entities"), 92, "{r:#}");
    assert_eq!(count(&w.path("cloud").join(DB), "entities"), 92);
    // With no healthy version anywhere, nothing moves and the run fails.
    let w = World::new();
    let b = w.machine("b", &[("icloud", "cloud")], "");
    std::fs::write(b.file(DB), "garbage").unwrap();
    let r = b.sync(&[], 1);
    assert!(!w.path("cloud").join(DB).exists(), "{r:#}");
}

#[test]
fn local_database_open_in_another_process_is_written_live_and_its_next_commit_survives() {
    let w = World::new();
    let a = w.machine("a", &[("icloud", "cloud")], "");
    let b = w.machine("b", &[("icloud", "cloud")], "");
    graph(&a.file(DB), 92, 1);
    a.sync(&[], 0);
    b.sync(&[], 0);
    // The user's program on A holds the database open.
    let mut app = Kill(agent(&a.file(DB), "serve"));
    let mut out = BufReader::new(app.0.stdout.take().unwrap());
    let mut stdin = app.0.stdin.take().unwrap();
    let mut ready = String::new();
    out.read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    let mut ask = |cmd: &str| -> String {
        writeln!(stdin, "{cmd}").unwrap();
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        line.trim().to_string()
    };
    assert_eq!(ask("count entities"), "92");
    // B adds rows elsewhere; A syncs them in while the program is connected.
    {
        let c = Connection::open(b.file(DB)).unwrap();
        for i in 0..8 {
            c.execute(
                "INSERT INTO entities(name, kind, data, updated_at) VALUES (?1, 'k', 'd', 't')",
                [format!("b{i}")],
            )
            .unwrap();
        }
    }
    b.sync(&[], 0);
    let r = a.sync(&[], 0);
    assert_eq!(r["files"][0]["outcome"], "propagated", "{r:#}");
    assert_eq!(
        count(&a.file(DB), "entities"),
        100,
        "a fresh connection sees the new rows: {r:#}"
    );
    assert_eq!(
        ask("count entities"),
        "100",
        "the open connection sees the new rows"
    );
    let id = ask("insert from-the-app");
    assert!(id.parse::<i64>().unwrap() > 100);
    // The program's commit after the write survives the next sync, and travels.
    a.sync(&[], 0);
    assert_eq!(count(&a.file(DB), "entities"), 101);
    assert_eq!(count(&w.path("cloud").join(DB), "entities"), 101);
    b.sync(&[], 0);
    assert_eq!(count(&b.file(DB), "entities"), 101);
    assert_eq!(integrity(&a.file(DB)), "ok");
    // The version A's local had before is a consistent backup.
    let backups = backups_in(&a.home, DB);
    assert_eq!(backups.len(), 1);
    assert_eq!(count(&backups[0], "entities"), 92);
    ask("quit");
}

#[test]
fn shrink_guard_holds_back_a_version_that_lost_most_entities() {
    let w = World::new();
    let a = w.machine("a", &[("icloud", "cloud")], "");
    graph(&a.file(DB), 92, 1);
    a.sync(&[], 0);
    Connection::open(a.file(DB))
        .unwrap()
        .execute_batch("DELETE FROM relations; DELETE FROM entities WHERE id > 10;")
        .unwrap();
    let r = a.sync(&[], 3);
    assert!(
        r["conflicts"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("entities fell from 92 to 10"),
        "{r:#}"
    );
    assert_eq!(
        count(&w.path("cloud").join(DB), "entities"),
        92,
        "held back, not propagated"
    );
    // The user confirms it.
    let (code, _) = a.json(&["resolve", DB, "--keep", "local"]);
    assert_eq!(code, 0);
    assert_eq!(count(&w.path("cloud").join(DB), "entities"), 10);
    assert_eq!(count(&backups_in(&w.path("cloud"), DB)[0], "entities"), 92);
    a.sync(&[], 0);
}

#[test]
fn verify_and_status_report_counts() {
    let w = World::new();
    let a = w.machine("a", &[("icloud", "cloud")], "");
    graph(&a.file(DB), 92, 1);
    a.sync(&[], 0);
    let (code, v) = a.json(&["verify"]);
    assert_eq!(code, 0);
    let dbs = v["databases"].as_array().unwrap();
    assert_eq!(dbs.len(), 2);
    for d in dbs {
        assert_eq!(d["integrity"], "ok");
        let tables: Vec<(&String, &serde_json::Value)> =
            d["tables"].as_object().unwrap().iter().collect();
        assert_eq!(tables[0].0, "entities");
        assert_eq!(tables[0].1, 92);
        assert_eq!(tables[1].0, "conversations");
        assert_eq!(tables[1].1, 1);
    }
    let (_, st) = a.json(&["status"]);
    let f = &st["locations"][1]["files"][0];
    assert_eq!(
        (
            f["file"].as_str(),
            f["entities"].as_u64(),
            f["conversations"].as_u64()
        ),
        (Some(DB), Some(92), Some(1))
    );
    let out = a.run(&["verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("entities") && text.contains("92"), "{text}");
}

fn logical(db: &Path) -> String {
    metasync::sqlite::logical_hash(db, &Default::default()).unwrap()
}

fn nlink_ino(p: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).unwrap();
    (m.nlink(), m.ino())
}

/// Every database file of the home's bases (`<home>/.metasync/base/*/*.db`).
fn bases(home: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(dirs) = std::fs::read_dir(home.join(".metasync").join("base")) {
        for d in dirs.flatten() {
            for f in std::fs::read_dir(d.path()).unwrap().flatten() {
                if f.path().extension().is_some_and(|e| e == "db") {
                    out.push(f.path());
                }
            }
        }
    }
    out
}

/// A database propagated to two remotes, in both merge modes (row merges keep a base taken
/// from the run's snapshot; whole-file mode may move the snapshot into the last remote):
/// every copy is its own file (one link, its own inode), so writing one in place changes no
/// other, and nothing is left in the run's scratch folder.
#[test]
fn copies_in_two_remotes_and_the_base_share_no_inode() {
    for merge in ["rows", "file"] {
        let w = World::new();
        let a = w.machine(
            "a",
            &[("one", "one"), ("two", "two")],
            &format!("merge = \"{merge}\""),
        );
        graph(&a.file(DB), 500, 3);
        for round in 0..2 {
            if round == 1 {
                // A change: the remotes' old versions are kept as (hard-linked) backups.
                std::thread::sleep(std::time::Duration::from_millis(1100));
                edit(
                    &a.file(DB),
                    "UPDATE entities SET name = 'changed' WHERE id = 7",
                    None,
                );
            }
            a.sync(&[], 0);
            let want = logical(&a.file(DB));
            let mut files = vec![a.file(DB), w.path("one").join(DB), w.path("two").join(DB)];
            let kept = bases(&a.home);
            assert_eq!(
                kept.len(),
                usize::from(merge == "rows"),
                "{merge}: {kept:?}"
            );
            files.extend(kept);
            let mut inodes = std::collections::HashSet::new();
            for f in &files {
                let (nlink, ino) = nlink_ino(f);
                assert_eq!(
                    nlink,
                    1,
                    "{merge} round {round}: {} has {nlink} links",
                    f.display()
                );
                assert!(
                    inodes.insert(ino),
                    "{merge}: {} shares an inode",
                    f.display()
                );
                assert_eq!(integrity(f), "ok");
                assert_eq!(logical(f), want, "{merge}: {}", f.display());
            }
            for b in backups_in(&w.path("one"), DB) {
                assert_eq!(nlink_ino(&b).0, 1, "{}", b.display());
            }
            assert_scratch_empty(&a.home, merge);
        }
        // Writing one remote copy in place leaves the other copies as they were.
        let before = logical(&w.path("two").join(DB));
        edit(
            &w.path("one").join(DB),
            "UPDATE entities SET name = 'written in place' WHERE id = 9",
            None,
        );
        assert_ne!(logical(&w.path("one").join(DB)), before);
        assert_eq!(logical(&w.path("two").join(DB)), before);
        assert_eq!(logical(&a.file(DB)), before);
        for b in bases(&a.home) {
            assert_eq!(logical(&b), before);
        }
    }
}

/// Row-merge mode with one remote (the common setup): the run's snapshot of a new local
/// version goes into the remote, and the base is the copy made while that snapshot was
/// checked. After the first copy and after a change: remote, base and local are three files
/// (one link each, three inodes) holding the same version, nothing is left in the scratch
/// folder, and the base serves a row merge of edits made on both sides afterwards.
#[test]
fn one_remote_in_row_mode_the_remote_and_the_base_are_separate_files() {
    let w = World::new();
    let a = w.machine("a", &[("cloud", "cloud")], "");
    graph(&a.file(DB), 400, 2);
    set_age(&a.file(DB), 1000);
    let remote = w.path("cloud").join(DB);
    for round in 0..2 {
        if round == 1 {
            edit(
                &a.file(DB),
                "UPDATE entities SET name = 'changed' WHERE id = 3",
                Some(500),
            );
        }
        a.sync(&[], 0);
        let want = logical(&a.file(DB));
        let kept = bases(&a.home);
        assert_eq!(kept.len(), 1, "round {round}: {kept:?}");
        let mut inodes = std::collections::HashSet::new();
        for f in [&a.file(DB), &remote, &kept[0]] {
            let (nlink, ino) = nlink_ino(f);
            assert_eq!(nlink, 1, "round {round}: {} has {nlink} links", f.display());
            assert!(
                inodes.insert(ino),
                "round {round}: {} shares an inode",
                f.display()
            );
            assert_eq!(integrity(f), "ok", "{}", f.display());
            assert_eq!(logical(f), want, "round {round}: {}", f.display());
            assert_eq!(journal_mode(f), "delete", "{}", f.display());
        }
        assert_scratch_empty(&a.home, &format!("round {round}"));
    }
    // Edited in place in the remote (another machine's app): the base does not move.
    let base = bases(&a.home).remove(0);
    let agreed = logical(&base);
    edit(
        &remote,
        "UPDATE entities SET name = 'remote edit' WHERE id = 5",
        Some(100),
    );
    assert_eq!(logical(&base), agreed);
    // And edited locally: the two rows are merged against that base.
    edit(
        &a.file(DB),
        "UPDATE entities SET name = 'local edit' WHERE id = 6",
        Some(50),
    );
    a.sync(&[], 0);
    for f in [a.file(DB), remote.clone()] {
        let name = |id: i64| -> String { common::name(&f, id).unwrap() };
        assert_eq!(name(5), "remote edit", "{}", f.display());
        assert_eq!(name(6), "local edit", "{}", f.display());
        assert_eq!(name(3), "changed", "{}", f.display());
    }
    assert_eq!(logical(&a.file(DB)), logical(&remote));
}

/// A change whose version goes to the remote keeps its row-merge base by rewriting the
/// previous base in place, only its changed pages written (the same inode, no second full copy
/// of the database per change): the rewritten base holds exactly the remote's bytes, under the
/// new version's name, and a later merge against it is exact.
#[test]
fn a_change_rewrites_the_previous_base_in_place() {
    let w = World::new();
    let a = w.machine("a", &[("cloud", "cloud")], "");
    graph(&a.file(DB), 3000, 4);
    set_age(&a.file(DB), 1000);
    let remote = w.path("cloud").join(DB);
    a.sync(&[], 0);
    let first = bases(&a.home);
    assert_eq!(first.len(), 1, "{first:?}");
    let (_, ino) = nlink_ino(&first[0]);
    for (round, id) in [(1, 3), (2, 2900)] {
        edit(
            &a.file(DB),
            &format!("UPDATE entities SET name = 'changed {round}' WHERE id = {id}"),
            Some(900 - round * 100),
        );
        a.sync(&[], 0);
        let kept = bases(&a.home);
        assert_eq!(kept.len(), 1, "round {round}: {kept:?}");
        assert_ne!(
            kept[0], first[0],
            "round {round}: the base is named by its version"
        );
        assert_eq!(
            nlink_ino(&kept[0]),
            (1, ino),
            "round {round}: the base is not the previous one rewritten"
        );
        assert_ne!(nlink_ino(&remote).1, ino);
        assert!(
            std::fs::read(&kept[0]).unwrap() == std::fs::read(&remote).unwrap(),
            "round {round}: the base's bytes are not the remote's"
        );
        assert_eq!(logical(&kept[0]), logical(&a.file(DB)), "round {round}");
        assert_eq!(integrity(&kept[0]), "ok");
        let names: Vec<_> = std::fs::read_dir(kept[0].parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "round {round}: {names:?}");
        assert_scratch_empty(&a.home, &format!("round {round}"));
    }
    // A row changed on each side is merged against the rewritten base.
    edit(
        &remote,
        "UPDATE entities SET name = 'remote' WHERE id = 10",
        Some(100),
    );
    edit(
        &a.file(DB),
        "UPDATE entities SET name = 'local' WHERE id = 11",
        Some(50),
    );
    a.sync(&[], 0);
    for f in [a.file(DB), remote.clone()] {
        let name = |id: i64| -> String { common::name(&f, id).unwrap() };
        assert_eq!(
            (name(10), name(11), name(3), name(2900)),
            (
                "remote".into(),
                "local".into(),
                "changed 1".into(),
                "changed 2".into()
            ),
            "{}",
            f.display()
        );
    }
    // The merged version is the new base: the same file rewritten again, exactly the remote's.
    let kept = bases(&a.home);
    assert_eq!(kept.len(), 1, "after the merge: {kept:?}");
    assert_eq!(nlink_ino(&kept[0]), (1, ino), "after the merge");
    assert_eq!(logical(&kept[0]), logical(&remote), "after the merge");
    assert_eq!(logical(&remote), logical(&a.file(DB)));
}

/// With the remote on another file system (a tmpfs; needs root) the run's snapshot cannot be
/// moved there by a hard link: it is copied, and the copy is whole and healthy.
#[test]
fn a_remote_on_another_file_system_gets_a_copy() {
    let w = World::new();
    let mp = w.path("drive");
    std::fs::create_dir_all(&mp).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(&mp)
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        println!("SKIP a_remote_on_another_file_system_gets_a_copy: cannot mount a tmpfs");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mp.clone());
    for merge in ["file", "rows"] {
        let remote = format!("drive/{merge}");
        let a = w.machine(
            &format!("a-{merge}"),
            &[("drive", remote.as_str())],
            &format!("merge = \"{merge}\""),
        );
        graph(&a.file(DB), 300, 2);
        a.sync(&[], 0);
        let copy = w.path(&remote).join(DB);
        assert_eq!(integrity(&copy), "ok");
        assert_eq!(logical(&copy), logical(&a.file(DB)));
        assert_eq!(count(&copy, "entities"), 300);
        assert_eq!(nlink_ino(&copy).0, 1);
        let (code, _) = a.json(&["verify"]);
        assert_eq!(code, 0, "{merge}");
    }
}
