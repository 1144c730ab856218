//! Golden runs: scripted multi-machine stories through the real binary whose `--json` output,
//! step by step, is compared with the copies committed in `tests/golden/`. They pin what the
//! command line says (decisions, reasons, actions, fields) so that reshaping the engine
//! cannot change it unnoticed. What differs from run to run is masked first: the temp
//! folder, times (RFC 3339, backup stamps), random ids, and how many files were read (that
//! depends on the racy-clean window, i.e. on timing); lists are compared as sets.
//!
//! After an intended change of output: `METASYNC_BLESS=1 cargo test --test golden`, then
//! review the diff of `tests/golden/` like code.

mod common;
use common::*;
use regex::Regex;
use std::path::Path;

const RULES: &str = "sorting-rules.yaml";
const DB: &str = "metastore.db";

/// Records each step's exit code and masked JSON.
struct Story {
    name: &'static str,
    root: String,
    steps: Vec<serde_json::Value>,
}

impl Story {
    fn new(name: &'static str, w: &World) -> Story {
        Story {
            name,
            root: w.dir.path().display().to_string(),
            steps: Vec::new(),
        }
    }

    /// Runs `args` on `m` with `--json`, records it under `label`, returns (exit, JSON).
    fn step(&mut self, label: &str, m: &Machine, args: &[&str]) -> (i32, serde_json::Value) {
        let (code, v) = m.json(args);
        let masked = mask(&serde_json::to_string(&v).unwrap(), &self.root);
        let mut output: serde_json::Value = serde_json::from_str(&masked).unwrap();
        // Lists sorted by time (backups) order entries of the same second by chance: compare
        // them as sets.
        if let serde_json::Value::Array(items) = &mut output {
            items.sort_by_key(|i| i.to_string());
        }
        self.steps.push(serde_json::json!({
            "step": label,
            "args": args,
            "exit": code,
            "output": output,
        }));
        (code, v)
    }

    fn check(self) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        let path = dir.join(format!("{}.json", self.name));
        let actual = serde_json::to_string_pretty(&self.steps).unwrap() + "\n";
        if std::env::var_os("METASYNC_BLESS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &actual).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (record it with METASYNC_BLESS=1 cargo test --test golden)",
                path.display()
            )
        });
        if expected != actual {
            let out = dir.join(format!("{}.actual.json", self.name));
            std::fs::write(&out, &actual).unwrap();
            let first = expected
                .lines()
                .zip(actual.lines())
                .enumerate()
                .find(|(_, (e, a))| e != a)
                .map(|(i, (e, a))| format!("line {}:\n  expected {e}\n  actual   {a}", i + 1))
                .unwrap_or_else(|| "lengths differ".into());
            panic!(
                "golden output of `{}` changed; {first}\nactual output written to {}",
                self.name,
                out.display()
            );
        }
    }
}

/// The stories' versions stay plain backups (`plain_last` as `keep_last`): which of them a
/// run moves into the history store, and under which name, depends on whether two runs
/// fall in the same second; the history's own tests cover the store.
const PLAIN: &str = "[backups]\nplain_last = 5";

/// Masks what varies between runs of the same story.
fn mask(json: &str, root: &str) -> String {
    let s = json.replace(root, "<ROOT>");
    let rules: [(&str, &str); 4] = [
        (
            r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})",
            "<TIME>",
        ),
        (r"\d{8}-\d{6}(-\d+)?", "<STAMP>"),
        (r#""hashed":\d+"#, r#""hashed":"<N>""#),
        (r"\b[0-9a-f]{16}\b", "<ID>"),
    ];
    let mut s = s;
    for (re, with) in rules {
        s = Regex::new(re).unwrap().replace_all(&s, with).into_owned();
    }
    s
}

#[test]
fn golden_text_files_round_trip_and_conflicts() {
    let w = World::new();
    let a = w.machine("a", &[("icloud", "cloud")], PLAIN);
    let b = w.machine("b", &[("icloud", "cloud")], PLAIN);
    let mut s = Story::new("text_files", &w);
    write_aged(&a.file(RULES), "rules: v1\n", 500);
    s.step("a first sync", &a, &["sync"]);
    s.step("b first sync", &b, &["sync"]);
    s.step("b no-op", &b, &["sync"]);
    write_aged(&b.file(RULES), "rules: v2 from b\n", 400);
    s.step("b dry run", &b, &["sync", "--dry-run"]);
    s.step("b propagates", &b, &["sync"]);
    s.step("a receives", &a, &["sync"]);
    s.step("a backups", &a, &["backups"]);
    // Both edit: manual holds the conflict, then the user settles it.
    write_aged(&a.file(RULES), "rules: v3 from a\n", 300);
    write_aged(&b.file(RULES), "rules: v3 from b\n", 200);
    s.step("a propagates", &a, &["sync"]);
    s.step("b manual conflict", &b, &["sync", "--strategy", "manual"]);
    s.step("b conflicts", &b, &["conflicts"]);
    s.step("b status", &b, &["status"]);
    s.step("b resolve", &b, &["resolve", RULES, "--keep", "icloud"]);
    s.step("b conflicts after", &b, &["conflicts"]);
    // Newest settles the next one by itself.
    write_aged(&a.file(RULES), "rules: v4 from a\n", 150);
    write_aged(&b.file(RULES), "rules: v4 from b\n", 100);
    s.step("a propagates v4", &a, &["sync"]);
    s.step("b newest wins", &b, &["sync", "--strategy", "newest"]);
    s.step("a pull", &a, &["pull"]);
    write_aged(&a.file(RULES), "rules: v5 pushed\n", 50);
    s.step("a push", &a, &["push"]);
    s.step("b prune dry run", &b, &["prune", "--dry-run"]);
    s.check();
}

#[test]
fn golden_databases_merge_and_verify() {
    let w = World::new();
    let a = w.machine("a", &[("icloud", "cloud")], PLAIN);
    let b = w.machine("b", &[("icloud", "cloud")], PLAIN);
    let mut s = Story::new("databases", &w);
    metasync::sample::create_knowledge_graph(&a.file(DB), 92, 7).unwrap();
    set_age(&a.file(DB), 1000);
    s.step("a first sync", &a, &["sync"]);
    s.step("b first sync", &b, &["sync"]);
    // Different rows on each side: merged, no conflict.
    exec(&a.file(DB), "UPDATE entities SET name = 'a1' WHERE id = 1;");
    set_age(&a.file(DB), 800);
    s.step("a edits row 1", &a, &["sync"]);
    exec(&b.file(DB), "UPDATE entities SET name = 'b2' WHERE id = 2;");
    set_age(&b.file(DB), 700);
    s.step("b merges", &b, &["sync"]);
    s.step("a receives the merge", &a, &["sync"]);
    // The same row on both sides: a row conflict, settled by newest.
    exec(
        &a.file(DB),
        "UPDATE entities SET name = 'a says' WHERE id = 5;",
    );
    set_age(&a.file(DB), 600);
    s.step("a edits row 5", &a, &["sync"]);
    exec(
        &b.file(DB),
        "UPDATE entities SET name = 'b says' WHERE id = 5;",
    );
    set_age(&b.file(DB), 500);
    s.step("b row conflict", &b, &["sync"]);
    s.step("b verify", &b, &["verify"]);
    s.step("b status", &b, &["status"]);
    s.step("b backups", &b, &["backups", DB, "--counts"]);
    // A version that lost most of its rows is held back.
    exec(
        &a.file(DB),
        "DELETE FROM relations; DELETE FROM entities WHERE id > 10;",
    );
    set_age(&a.file(DB), 400);
    s.step("a shrink guard", &a, &["sync"]);
    s.step("a conflicts", &a, &["conflicts"]);
    s.check();
}

#[test]
fn golden_unavailable_places() {
    let w = World::new();
    let a = w.machine(
        "a",
        &[("icloud", "cloud")],
        &format!(
            "[[locations]]\nname = \"external\"\npath = \"{}\"\nmount_point = \"{}\"\n",
            w.path("vol/drive/.metasystem").display(),
            w.path("vol/drive").display()
        ),
    );
    let mut s = Story::new("unavailable", &w);
    write_aged(&a.file(RULES), "rules: offline\n", 300);
    s.step("a drive not mounted", &a, &["sync"]);
    std::fs::create_dir_all(w.path("cloud")).unwrap();
    s.step("a status", &a, &["status"]);
    // The shared folder, once used, goes missing: unavailable, never re-created.
    std::fs::rename(w.path("cloud"), w.path("cloud-away")).unwrap();
    write_aged(&a.file(RULES), "rules: while away\n", 200);
    s.step("a folder missing", &a, &["sync"]);
    std::fs::rename(w.path("cloud-away"), w.path("cloud")).unwrap();
    s.step("a catches up", &a, &["sync"]);
    // Its marker replaced: a different folder under the same name.
    std::fs::write(
        w.path("cloud/.metasync-location"),
        "id = \"0000000000000000\"\n",
    )
    .unwrap();
    s.step("a other marker", &a, &["sync"]);
    s.step("a relink", &a, &["relink", "icloud"]);
    s.step("a after relink", &a, &["sync"]);
    s.check();
}
