//! Differential property test of the row merge (issue 13), at the library level: every case is
//! a random schema drawn from the SQLite features the merge must handle exactly, a base
//! database with random rows, and two sides made by random SQL statements on copies of it.
//! `metasync::merge::merge_files` merges the two real files against the base, and:
//!
//! - every row is what a three-way model says (a row changed on one side has that side's
//!   value; changed on both, identically: that value; differently: a row conflict, the newer
//!   side's value, the loser's value reported);
//! - when the sides changed disjoint rows, the merged database equals the result of replaying
//!   both sides' statements on the base, in either order, whenever the two orders agree
//!   (every table dumped with exact types ordered by its key, `sqlite_sequence`, and what
//!   the full-text indexes find; a table whose PRIMARY KEY is not the rowid by that key,
//!   without its hidden rowid, which the two orders give to different rows);
//! - with `manual`, conflicting rows hold the file;
//! - a fall-back always has a reason, and is counted per reason and per feature.
//!
//! Default: 500 cases (`METASYNC_PROP_CASES` for more, `METASYNC_PROP_SEED` for another
//! start). Replay one case: `METASYNC_PROP_ONE=<seed> cargo test --test rowmerge_prop -- --nocapture`.

mod rowmerge;
use metasync::config::Strategy;
use metasync::merge::{merge_files, MergeOutcome, MergeSide, RowConflict};
use rowmerge::*;
use rusqlite::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// How one case ended.
enum Ending {
    Merged,
    FellBack(String),
}

struct Case {
    features: BTreeSet<&'static str>,
    ending: Ending,
    disjoint: bool,
    /// Rows changed differently on both sides.
    conflicts: usize,
    /// Disjoint, merged, and equal to both replays (which agreed).
    replayed: bool,
    /// Both sides inserted rows (new keys) into a table whose rowid is hidden.
    keyed_inserts: bool,
}

fn conflict_set(rcs: &[RowConflict]) -> Conflicts {
    rcs.iter()
        .map(|rc| {
            let loser = rc
                .values
                .iter()
                .find(|(loc, _)| loc == "local")
                .and_then(|(_, v)| v.clone());
            ((rc.table.clone(), rc.key.clone()), loser)
        })
        .collect()
}

/// A case's files, statements and dumps (base, a, b).
struct Prepared {
    dir: tempfile::TempDir,
    s: Schema,
    sql_a: Vec<String>,
    sql_b: Vec<String>,
    dumps: [Dump; 3],
}

impl Prepared {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// What a failure message ends with: the schema and both sides' statements.
    fn ctx(&self) -> String {
        format!(
            "\n  schema: {}\n  a: {:?}\n  b: {:?}",
            self.s.sql, self.sql_a, self.sql_b
        )
    }

    /// Whether both sides inserted new keys into a table whose key is not its rowid (and so,
    /// mostly, gave different rows the same next rowid).
    fn keyed_inserts(&self) -> bool {
        let [base, a, b] = &self.dumps;
        self.s.specs.iter().filter(|t| t.hidden_rowid).any(|t| {
            let new = |d: &Dump| {
                d.tables[&t.name]
                    .keys()
                    .any(|k| !base.tables[&t.name].contains_key(k))
            };
            new(a) && new(b)
        })
    }

    /// Whether the sides changed disjoint sets of rows.
    fn disjoint(&self) -> bool {
        let [base, a, b] = &self.dumps;
        base.tables.iter().all(|(t, rows)| {
            let changed = |d: &Dump| -> BTreeSet<String> {
                let keys: BTreeSet<&String> = rows.keys().chain(d.tables[t].keys()).collect();
                keys.into_iter()
                    .filter(|k| rows.get(*k) != d.tables[t].get(*k))
                    .cloned()
                    .collect()
            };
            changed(a).is_disjoint(&changed(b))
        })
    }
}

/// The base of the case of `seed` and its two edited copies.
fn prepare(seed: u64) -> Prepared {
    let mut rng = Rng(seed);
    let s = schema(&mut rng);
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let (base, a, b) = (p("base.db"), p("a.db"), p("b.db"));
    open(&base).execute_batch(&s.sql).unwrap();
    let rows = 3 + rng.below(8);
    fill(&mut rng, &base, &s, rows * s.specs.len());
    if rng.chance(50) {
        // As the engine's snapshots may be: VACUUM moves virtual tables after their shadow
        // tables in sqlite_schema (and then SQLite no longer flags those as shadow tables).
        open(&base).execute_batch("VACUUM").unwrap();
    }
    std::fs::copy(&base, &a).unwrap();
    std::fs::copy(&base, &b).unwrap();
    let na = 1 + rng.below(5);
    let sql_a = edit(&mut rng, &a, &s, na);
    let nb = 1 + rng.below(5);
    let sql_b = edit(&mut rng, &b, &s, nb);
    let dumps = [dump(&base, &s), dump(&a, &s), dump(&b, &s)];
    Prepared {
        dir,
        s,
        sql_a,
        sql_b,
        dumps,
    }
}

/// Checks a merged output against the model and, when the sides' rows are disjoint, against
/// both replays. Returns whether the replays were compared (they agreed with each other).
fn check_merged(c: &Prepared, row_conflicts: &[RowConflict]) -> std::result::Result<bool, String> {
    let [base, a, b] = &c.dumps;
    let (want_rows, want_conflicts) = model(base, a, b);
    let out = c.path("out.db");
    let got = dump(&out, &c.s);
    if got.tables != want_rows {
        let got = &got.tables;
        return Err(format!(
            "rows differ from the model:\n  got  {got:?}\n  want {want_rows:?}{}",
            c.ctx()
        ));
    }
    if got.seq != max_seq(&[base, a, b]) {
        return Err(format!(
            "sqlite_sequence {:?}, sides {:?} {:?}{}",
            got.seq,
            a.seq,
            b.seq,
            c.ctx()
        ));
    }
    let wrong_winner = row_conflicts
        .iter()
        .any(|rc| rc.winner.as_deref() != Some("icloud"));
    if conflict_set(row_conflicts) != want_conflicts || wrong_winner {
        return Err(format!(
            "row conflicts {row_conflicts:?}, want {want_conflicts:?}{}",
            c.ctx()
        ));
    }
    if got.fts != fts_expected(&got, &c.s) {
        let want = fts_expected(&got, &c.s);
        return Err(format!(
            "full-text hits {:?}, want {want:?}{}",
            got.fts,
            c.ctx()
        ));
    }
    let conn = Connection::open(&out).unwrap();
    for f in &c.s.fts {
        let check = format!("INSERT INTO {f}({f}) VALUES ('integrity-check')");
        if let Err(e) = conn.execute_batch(&check) {
            return Err(format!("{f}: {e}{}", c.ctx()));
        }
    }
    if !want_conflicts.is_empty() || !c.disjoint() {
        return Ok(false);
    }
    // Both orders of the statements, when they agree: statements may touch a row the other
    // side changed and come back to the base's value (no net change), and then the order
    // decides, as it does not for the merge.
    let (base_db, r1, r2) = (
        c.path("base.db"),
        c.path("replay1.db"),
        c.path("replay2.db"),
    );
    if !replay(&base_db, &r1, &c.sql_a, &c.sql_b) || !replay(&base_db, &r2, &c.sql_b, &c.sql_a) {
        return Ok(false);
    }
    let want = dump(&r1, &c.s);
    if want != dump(&r2, &c.s) {
        return Ok(false);
    }
    if got != want {
        return Err(format!(
            "differs from the replay:\n  got  {got:?}\n  want {want:?}{}",
            c.ctx()
        ));
    }
    Ok(true)
}

/// Runs the case of `seed`; `Err` describes a mismatch.
fn run_case(seed: u64) -> std::result::Result<Case, String> {
    let c = prepare(seed);
    let [base, a, b] = &c.dumps;
    let (_, want_conflicts) = model(base, a, b);
    let side = |loc: &str, local: bool, mtime_ns: i64, path: PathBuf| MergeSide {
        location: loc.into(),
        local,
        mtime_ns: mtime_ns.into(),
        path,
    };
    let sides = [
        side("local", true, 1, c.path("a.db")),
        side("icloud", false, 2, c.path("b.db")),
    ];
    let (base_db, out) = (c.path("base.db"), c.path("out.db"));
    let outcome = merge_files(&base_db, &sides, Strategy::Newest, &out)
        .map_err(|e| format!("{e}{}", c.ctx()))?;
    let (ending, replayed) = match outcome {
        MergeOutcome::Fallback(why) if why.trim().is_empty() || out.exists() => {
            return Err(format!(
                "a fall-back without a reason or with an output{}",
                c.ctx()
            ))
        }
        MergeOutcome::Fallback(why) => (Ending::FellBack(why), false),
        MergeOutcome::Held(_) => return Err(format!("held under newest{}", c.ctx())),
        MergeOutcome::Merged { row_conflicts, .. } => {
            (Ending::Merged, check_merged(&c, &row_conflicts)?)
        }
    };
    if !want_conflicts.is_empty() {
        match merge_files(&base_db, &sides, Strategy::Manual, &out).map_err(|e| e.to_string())? {
            MergeOutcome::Held(rcs) if conflict_set(&rcs) == want_conflicts => {}
            MergeOutcome::Fallback(_) if matches!(ending, Ending::FellBack(_)) => {}
            other => {
                return Err(format!(
                    "manual: {other:?}, want held {want_conflicts:?}{}",
                    c.ctx()
                ))
            }
        }
    }
    Ok(Case {
        keyed_inserts: c.keyed_inserts(),
        conflicts: want_conflicts.len(),
        disjoint: want_conflicts.is_empty() && c.disjoint(),
        replayed,
        features: c.s.features,
        ending,
    })
}

/// The kind of a fall-back's reason, for the summary.
fn reason_kind(why: &str) -> &'static str {
    if why.contains("virtual table") {
        "virtual table changed"
    } else if why.contains("foreign keys") {
        "foreign keys"
    } else if why.contains("constraint") {
        "constraint"
    } else if why.contains("integrity") {
        "integrity"
    } else if why.contains("holds NULL") {
        "NULL in a key"
    } else {
        "other"
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| {
        let v = v.trim();
        v.strip_prefix("0x")
            .map(|h| u64::from_str_radix(h, 16).ok())
            .unwrap_or_else(|| v.parse().ok())
    })
}

#[test]
fn row_merge_matches_the_model_and_the_replay() {
    if let Some(seed) = env_u64("METASYNC_PROP_ONE") {
        let case = run_case(seed).unwrap_or_else(|e| panic!("seed {seed:#x}: {e}"));
        println!(
            "seed {seed:#x}: features {:?}, disjoint {}, {}",
            case.features,
            case.disjoint,
            match &case.ending {
                Ending::Merged => "merged".to_string(),
                Ending::FellBack(why) => format!("fell back: {why}"),
            }
        );
        return;
    }
    let cases = env_u64("METASYNC_PROP_CASES").unwrap_or(500);
    let start = env_u64("METASYNC_PROP_SEED").unwrap_or(0x13);
    let mut seeder = Rng(start);
    let (mut merged, mut disjoint, mut replayed, mut conflicts) = (0, 0, 0, 0);
    let (mut keyed, mut keyed_merged) = (0, 0);
    let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
    let mut per_feature: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut failures = Vec::new();
    for _ in 0..cases {
        let seed = seeder.next();
        match run_case(seed) {
            Ok(case) => {
                disjoint += u64::from(case.disjoint);
                replayed += u64::from(case.replayed);
                conflicts += case.conflicts;
                keyed += u64::from(case.keyed_inserts);
                keyed_merged +=
                    u64::from(case.keyed_inserts && matches!(case.ending, Ending::Merged));
                let fell = match &case.ending {
                    Ending::Merged => {
                        merged += 1;
                        false
                    }
                    Ending::FellBack(why) => {
                        *reasons.entry(reason_kind(why)).or_default() += 1;
                        true
                    }
                };
                for f in &case.features {
                    let e = per_feature.entry(f).or_default();
                    if fell {
                        e.1 += 1;
                    } else {
                        e.0 += 1;
                    }
                }
            }
            Err(e) => failures.push(format!(
                "seed {seed:#x} (replay: METASYNC_PROP_ONE={seed:#x}): {e}"
            )),
        }
    }
    let features: Vec<String> = per_feature
        .iter()
        .map(|(f, (m, b))| format!("{f} {m}/{b}"))
        .collect();
    let why: Vec<String> = reasons.iter().map(|(r, n)| format!("{r}: {n}")).collect();
    println!(
        "rowmerge[prop]: cases {cases}, merged {merged}, fell back {} ({}), disjoint {disjoint} ({replayed} equal to both replays), row conflicts {conflicts}, both sides inserting into a table keyed apart from its rowid {keyed} ({keyed_merged} merged), mismatches {}",
        cases - merged - failures.len() as u64,
        why.join(", "),
        failures.len()
    );
    println!(
        "rowmerge[prop] per feature (merged/fell back): {}",
        features.join(", ")
    );
    assert!(
        failures.is_empty(),
        "{}",
        failures
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
}
