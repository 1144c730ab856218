//! Hostile input: fuzzed and malformed configs, damaged databases, symlinks that lead out of a
//! location, awkward file names (spaces, Unicode in NFC and NFD), and restore requests that
//! try to escape. Each group prints: cases run, faults injected, versions checked, versions lost.

mod common;
use common::*;
use std::path::{Path, PathBuf};

const RULES: &str = "sorting-rules.yaml";
const DB: &str = "metastore.db";

fn summary(group: &str, cases: u64, faults: u64, checked: u64, lost: u64) {
    println!("hostile[{group}]: cases {cases}, faults injected {faults}, versions checked {checked}, versions lost {lost}");
}

// ---------------------------------------------------------------------------------------
// Config fuzzing

const TOKENS: &[&str] = &[
    "interval_secs",
    "strategy",
    "files",
    "propagate_deletes",
    "lock_wait_secs",
    "[[locations]]",
    "[locations]",
    "name",
    "path",
    "mount_point",
    "[backups]",
    "keep_last",
    "retention",
    "max_age_days",
    "protect_days",
    "max_history_mb",
    "[sqlite]",
    "max_shrink_percent",
    "quick_check_above_mb",
    "busy_timeout_ms",
    "=",
    " = ",
    "\n",
    "\n\n",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    "[",
    "]",
    "{",
    "}",
    ",",
    ".",
    "#",
    "-1",
    "0",
    "1",
    "300",
    "18446744073709551616",
    "9223372036854775807",
    "1e999",
    "nan",
    "inf",
    "true",
    "false",
    "\"newest\"",
    "\"manual\"",
    "\"bogus\"",
    "\"staggered\"",
    "\"none\"",
    "\"max_age\"",
    "[\"metastore.db\"]",
    "[\"/abs\"]",
    "[\"../x\"]",
    "[\"**/*\"]",
    "[\"[\"]",
    "[]",
    "\"local\"",
    "\"\"",
    "\"a b\"",
    "\"~/x\"",
    "\\",
    "\\u0000",
    "\\uD800",
    "\u{0}",
    "\u{feff}",
    "é",
    "e\u{301}",
    "🎉",
    "\t",
    "\r\n",
    "2026-12-01T00:00:00Z",
    "{ a = 1 }",
    "x.y.z",
    "\"name\"",
    "name.sub",
    "[[backups]]",
    "[[sqlite]]",
];

fn random_toml(rng: &mut Rng) -> String {
    let n = rng.below(40);
    let mut s = String::new();
    for _ in 0..n {
        s.push_str(TOKENS[rng.below(TOKENS.len())]);
        if rng.below(4) == 0 {
            s.push(' ');
        }
    }
    s
}

fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut b = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            b.push(b'x');
        }
        let i = rng.below(b.len());
        match rng.below(7) {
            0 => b[i] ^= 1 << rng.below(8),
            1 => b[i] = rng.next() as u8,
            2 => {
                let j = (i + rng.below(64)).min(b.len());
                b.drain(i..j);
            }
            3 => {
                let j = (i + rng.below(64)).min(b.len());
                let chunk = b[i..j].to_vec();
                let k = rng.below(b.len());
                b.splice(k..k, chunk);
            }
            4 => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes().to_vec();
                b.splice(i..i, t);
            }
            5 => b.truncate(i),
            _ => {
                let line_start = b[..i]
                    .iter()
                    .rposition(|&c| c == b'\n')
                    .map_or(0, |p| p + 1);
                b.splice(line_start..line_start, b"zzz_unknown = 1\n".to_vec());
            }
        }
    }
    b
}

#[test]
fn fuzzed_configs_never_panic_and_errors_name_the_file() {
    let path = Path::new("/somewhere/fuzz-config.toml");
    let template = metasync::Config::template();
    // The template itself with remotes uncommented, so mutations hit location tables too.
    let with_locations = format!(
        "{template}\n[[locations]]\nname = \"cloud\"\npath = \"/tmp/x\"\n\n[[locations]]\nname = \"external\"\npath = \"/media/d/.metasystem\"\nmount_point = \"/media/d\"\n"
    );
    assert!(metasync::Config::parse(&with_locations, path).is_ok());
    let mut rng = Rng(0xC0FF1E);
    let cases = std::env::var("METASYNC_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000u64);
    let (mut ok, mut err) = (0u64, 0u64);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..cases {
        let bytes: Vec<u8> = match i % 3 {
            0 => random_toml(&mut rng).into_bytes(),
            1 => mutate(&mut rng, template.as_bytes()),
            _ => mutate(&mut rng, with_locations.as_bytes()),
        };
        let text = String::from_utf8_lossy(&bytes).to_string();
        let result = std::panic::catch_unwind(|| metasync::Config::parse(&text, path));
        match result {
            Err(_) => panic!("Config::parse panicked on case {i}: {text:?}"),
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) => {
                err += 1;
                assert!(
                    matches!(e, metasync::Error::Config(_)),
                    "case {i}: not a config error: {e:?}"
                );
                assert!(
                    e.to_string().contains("fuzz-config.toml"),
                    "case {i}: error does not name the file: {e}\n{text:?}"
                );
            }
        }
        // Every 50th case goes through the file loader as raw bytes (invalid UTF-8 included).
        if i % 50 == 0 {
            let p = dir.path().join("metasync.toml");
            std::fs::write(&p, &bytes).unwrap();
            let r = std::panic::catch_unwind(|| metasync::Config::load(dir.path(), Some(&p)));
            match r {
                Err(_) => panic!("Config::load panicked on case {i}"),
                Ok(Err(e)) => assert!(e.to_string().contains("metasync.toml"), "{e}"),
                Ok(Ok(_)) => {}
            }
        }
    }
    println!("hostile[config-fuzz]: cases {cases}, accepted {ok}, rejected with a named error {err}, panics 0");
    assert!(
        err > cases / 2,
        "the fuzzer should mostly produce invalid configs"
    );
}

#[test]
fn malformed_config_through_the_cli_exits_2_naming_the_file() {
    let w = World::new();
    let home = w.path("h");
    std::fs::create_dir_all(&home).unwrap();
    let m = Machine { home: home.clone() };
    for (i, text) in [
        &b"strategy = \"sideways\"\n"[..],
        b"interval_secs = -5\n",
        b"[[locations]]\nname = \"local\"\npath = \"/x\"\n",
        b"files = [\"/etc/passwd\"]\n",
        b"\xff\xfe\x00garbage",
        b"[backups]\nkeep_last = \"many\"\n",
        b"[[locations]]\nname = \"a\"\n",
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(home.join("metasync.toml"), text).unwrap();
        let out = m.run(&["sync"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "case {i}: {stderr}");
        assert!(stderr.contains("metasync.toml"), "case {i}: {stderr}");
    }
}

// ---------------------------------------------------------------------------------------
// Damaged databases

fn ctx(dir: &Path) -> metasync::kind::ReadCtx {
    metasync::kind::ReadCtx {
        sqlite: Default::default(),
        scratch: dir.join("scratch"),
        keep_snapshots: None,
    }
}

fn db_version(p: &Path, scratch: &Path) -> (String, bool) {
    let c = metasync::kind::read_content(p, &ctx(scratch)).expect("read");
    (c.hash, c.facts.integrity.is_empty())
}

fn damage(p: &Path, how: &str) {
    let bytes = std::fs::read(p).unwrap();
    let out = match how {
        "not-sqlite" => b"this is not a database, just text\n".repeat(200),
        "truncated" => bytes[..bytes.len() / 3].to_vec(),
        "flipped" => {
            // The b-tree page-type byte of page 1 (the schema): SQLite must call it malformed.
            let mut b = bytes.clone();
            b[100] ^= 0xff;
            b
        }
        "zeroed-page" => {
            let mut b = bytes.clone();
            let page = u16::from_be_bytes([b[16], b[17]]) as usize;
            let page = if page == 1 { 65536 } else { page };
            for x in &mut b[page..2 * page] {
                *x = 0x5a;
            }
            b
        }
        _ => unreachable!(),
    };
    std::fs::write(p, out).unwrap();
    // Newer than everything else: a strategy based on time would pick it if it were allowed.
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
        .unwrap();
}

#[test]
fn damaged_databases_never_overwrite_healthy_ones() {
    let mut cases = 0;
    let mut checked = 0;
    for how in ["not-sqlite", "truncated", "flipped", "zeroed-page"] {
        for where_ in ["cloud", "local"] {
            let w = World::new();
            let a = w.machine("a", &[("icloud", "cloud")], "");
            let b = w.machine("b", &[("icloud", "cloud")], "");
            let scratch = w.path("scratch");
            metasync::sample::create_knowledge_graph(&a.file(DB), 3000, 20).unwrap();
            set_age(&a.file(DB), 500);
            let (healthy, ok) = db_version(&a.file(DB), &scratch);
            assert!(ok);
            a.sync(&[], 0);
            b.sync(&[], 0);
            let victim = if where_ == "cloud" {
                w.path("cloud").join(DB)
            } else {
                a.file(DB)
            };
            damage(&victim, how);
            let damaged_bytes = std::fs::read(&victim).unwrap();
            let (damaged_version, _) = db_version(&victim, &scratch);
            let label = format!("{how} in {where_}");
            // Reported by verify (exit 1).
            let (code, v) = a.json(&["verify"]);
            assert_eq!(code, 1, "{label}: verify must fail: {v:#}");
            // The sync refuses it, keeps it as a backup and heals it from the healthy copy.
            for (i, strategy) in ["newest", "manual", "local", "remote"]
                .into_iter()
                .enumerate()
            {
                let (code, v) = a.json(&["sync", "--strategy", strategy]);
                assert!(code == 0, "{label} {strategy}: exit {code}: {v:#}");
                if i == 0 {
                    assert!(
                        v["warnings"].to_string().contains("corrupt"),
                        "{label}: the refusal is not reported: {v:#}"
                    );
                }
            }
            let (code, v) = b.json(&["sync"]);
            assert_eq!(code, 0, "{label}: b: {v:#}");
            for loc in [a.file(DB), b.file(DB), w.path("cloud").join(DB)] {
                let (h, ok) = db_version(&loc, &scratch);
                assert!(
                    ok && h == healthy,
                    "{label}: {} is not the healthy version",
                    loc.display()
                );
                checked += 1;
            }
            let dir = victim.parent().unwrap();
            // Kept as a backup: byte for byte, or (a local database is backed up through a
            // snapshot, which rewrites the header) as the same version.
            let backups = backups_in(dir, DB);
            let kept = backups.iter().any(|p| {
                std::fs::read(p).unwrap() == damaged_bytes
                    || db_version(p, &scratch).0 == damaged_version
            });
            let sizes: Vec<(u64, String)> = backups
                .iter()
                .map(|p| {
                    (
                        std::fs::metadata(p).unwrap().len(),
                        db_version(p, &scratch).0,
                    )
                })
                .collect();
            assert!(
                kept,
                "{label}: the damaged file ({} bytes, {damaged_version}) was not kept as a backup: {sizes:?}",
                damaged_bytes.len()
            );
            cases += 1;
        }
    }
    summary("damaged-db", cases, cases, checked, 0);
}

#[test]
fn with_no_healthy_version_nothing_moves_and_the_run_fails() {
    let w = World::new();
    let a = w.machine("a", &[("icloud", "cloud")], "");
    metasync::sample::create_knowledge_graph(&a.file(DB), 100, 2).unwrap();
    a.sync(&[], 0);
    damage(&a.file(DB), "flipped");
    damage(&w.path("cloud").join(DB), "truncated");
    let a_bytes = std::fs::read(a.file(DB)).unwrap();
    let c_bytes = std::fs::read(w.path("cloud").join(DB)).unwrap();
    let (code, v) = a.json(&["sync"]);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(std::fs::read(a.file(DB)).unwrap(), a_bytes);
    assert_eq!(std::fs::read(w.path("cloud").join(DB)).unwrap(), c_bytes);
    summary("no-healthy-db", 1, 2, 2, 0);
}

// ---------------------------------------------------------------------------------------
// Symlinks

#[test]
fn symlinked_file_in_a_location_is_not_followed_nor_written_through() {
    let w = World::new();
    let a = w.machine("a", &[("icloud", "cloud")], "");
    let b = w.machine("b", &[("icloud", "cloud")], "");
    write_aged(&a.file(RULES), "rules: mine\n", 100);
    a.sync(&[], 0);
    let outside = w.path("outside/secret.yaml");
    write_aged(&outside, "SECRET\n", 10);
    let cloud_rules = w.path("cloud").join(RULES);
    std::fs::remove_file(&cloud_rules).unwrap();
    std::os::unix::fs::symlink(&outside, &cloud_rules).unwrap();
    write_aged(&a.file(RULES), "rules: newer\n", 5);
    let (code, v) = a.json(&["sync"]);
    assert!(code == 0 || code == 1, "{v:#}");
    assert_eq!(read(&outside), "SECRET\n", "written through a symlink");
    assert!(std::fs::symlink_metadata(&cloud_rules)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(read(&a.file(RULES)), "rules: newer\n");
    b.json(&["sync"]);
    assert_ne!(
        std::fs::read_to_string(b.file(RULES)).unwrap_or_default(),
        "SECRET\n",
        "the link's target was read as a version"
    );
    summary("symlinked-file", 1, 1, 2, 0);
}

#[test]
fn symlinked_folder_in_a_location_is_not_written_through() {
    let w = World::new();
    let extra = "files = [\"**/*\"]";
    let a = w.machine("a", &[("icloud", "cloud")], extra);
    write_aged(&a.file("sub/x.txt"), "mine\n", 100);
    a.sync(&[], 0);
    // The cloud's `sub` is replaced by a link to a folder outside every location.
    let outside = w.path("outside");
    write_aged(&outside.join("x.txt"), "OUTSIDE\n", 50);
    std::fs::remove_dir_all(w.path("cloud/sub")).unwrap();
    std::os::unix::fs::symlink(&outside, w.path("cloud/sub")).unwrap();
    write_aged(&a.file("sub/x.txt"), "mine, edited\n", 10);
    write_aged(&a.file("sub/new.txt"), "new\n", 10);
    let (code, v) = a.json(&["sync"]);
    assert_eq!(
        read(&outside.join("x.txt")),
        "OUTSIDE\n",
        "written through a symlinked folder: {v:#}"
    );
    assert!(
        !outside.join("new.txt").exists(),
        "created through a symlinked folder: {v:#}"
    );
    assert_eq!(tree(&outside), vec!["x.txt".to_string()], "{v:#}");
    assert!(code == 0 || code == 1);
    // The local versions are untouched.
    assert_eq!(read(&a.file("sub/x.txt")), "mine, edited\n");
    assert_eq!(read(&a.file("sub/new.txt")), "new\n");
    summary("symlinked-folder", 1, 1, 2, 0);
}

#[test]
fn symlink_in_home_is_not_followed_out() {
    let w = World::new();
    let extra = "files = [\"**/*\"]";
    let a = w.machine("a", &[("icloud", "cloud")], extra);
    let outside = w.path("outside");
    write_aged(&outside.join("private.txt"), "PRIVATE\n", 50);
    write_aged(&a.file("ok.txt"), "ok\n", 50);
    std::os::unix::fs::symlink(&outside, a.file("linked")).unwrap();
    std::os::unix::fs::symlink(outside.join("private.txt"), a.file("linked-file.txt")).unwrap();
    let (code, v) = a.json(&["sync"]);
    assert_eq!(code, 0, "{v:#}");
    let t = tree(&w.path("cloud"));
    assert!(t.contains(&"ok.txt".to_string()), "{t:?}");
    assert!(
        !t.iter()
            .any(|f| f.contains("private") || f.contains("linked")),
        "followed a link out of home: {t:?}"
    );
    summary("symlink-in-home", 1, 2, 1, 0);
}

// ---------------------------------------------------------------------------------------
// Names

#[test]
fn names_with_spaces_and_unicode_nfc_and_nfd_are_kept_byte_for_byte() {
    let w = World::new();
    let extra = "files = [\"**/*\"]";
    let a = w.machine("a", &[("icloud", "cloud")], extra);
    let b = w.machine("b", &[("icloud", "cloud")], extra);
    let names: Vec<String> = vec![
        "my notes/rule file.yaml".into(),
        "caf\u{e9}.txt".into(),   // NFC, as Linux and most apps write it
        "cafe\u{301}.txt".into(), // NFD, as macOS's HFS+ and some apps produce
        "\u{65e5}\u{672c}\u{8a9e}/\u{30e1}\u{30e2}.txt".into(),
        "emoji \u{1f389}.md".into(),
        " leading space.txt".into(),
        "trailing space .txt".into(),
        "Stra\u{df}e/\u{c5}ngstr\u{f6}m \u{212b}.txt".into(),
    ];
    for (i, n) in names.iter().enumerate() {
        write_aged(&a.file(n), &format!("content {i} of {n}\n"), 100);
    }
    a.sync(&[], 0);
    b.sync(&[], 0);
    let mut checked = 0;
    for dir in [w.path("cloud"), b.home.clone()] {
        let t = tree(&dir);
        for (i, n) in names.iter().enumerate() {
            assert!(t.contains(n), "{n:?} missing in {}: {t:?}", dir.display());
            assert_eq!(read(&dir.join(n)), format!("content {i} of {n}\n"));
            checked += 1;
        }
        // NFC and NFD stay two files; nothing else was made up.
        let extra_files: Vec<&String> = t
            .iter()
            .filter(|f| {
                !names.contains(f)
                    && !f.starts_with('.')
                    && !f.starts_with("logs/")
                    && *f != "metasync.toml"
            })
            .collect();
        assert!(
            extra_files.is_empty(),
            "unexpected files in {}: {extra_files:?}",
            dir.display()
        );
    }
    // A second round is a no-op: the names round-trip through the archive unchanged.
    let r = a.sync(&[], 0);
    assert_eq!(r["actions"].as_array().unwrap().len(), 0, "{r:#}");
    let r = b.sync(&[], 0);
    assert_eq!(r["actions"].as_array().unwrap().len(), 0, "{r:#}");
    // An edit to the NFD one reaches only the NFD one.
    write_aged(&b.file(&names[2]), "nfd edited\n", 10);
    b.sync(&[], 0);
    a.sync(&[], 0);
    assert_eq!(read(&a.file(&names[2])), "nfd edited\n");
    assert_eq!(
        read(&a.file(&names[1])),
        format!("content 1 of {}\n", names[1])
    );
    summary("names", names.len() as u64, 0, checked, 0);
}

// ---------------------------------------------------------------------------------------
// Restore requests that try to escape

#[test]
fn restore_refuses_escapes_and_links() {
    let w = World::new();
    let extra = "files = [\"sorting-rules.yaml\", \"sub/*.txt\"]";
    let a = w.machine("a", &[("icloud", "cloud")], extra);
    write_aged(&a.file(RULES), "v1\n", 100);
    a.sync(&[], 0);
    write_aged(&a.file(RULES), "v2\n", 50);
    std::fs::write(w.path("cloud").join(RULES), "v0 in cloud\n").unwrap();
    set_age(&w.path("cloud").join(RULES), 10);
    a.sync(&[], 0);
    let real_backups = backups_in(&a.home, RULES);
    // Things outside every location, named like backups.
    let outside = w.path("outside");
    let stamp = "20260101-000000";
    write_aged(
        &outside.join(format!("{RULES}.backup-{stamp}")),
        "EVIL\n",
        5,
    );
    write_aged(&outside.join(format!("f.txt.backup-{stamp}")), "EVIL\n", 5);
    write_aged(&outside.join("secret"), "SECRET\n", 5);
    // A symlink named like a backup, and a symlinked folder holding a "backup".
    std::os::unix::fs::symlink(
        outside.join("secret"),
        a.file(&format!("{RULES}.backup-20260102-000000")),
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, a.file("sub")).unwrap();
    let before_current = read(&a.file(RULES));
    let before_tree = tree(&a.home);
    let home = a.home.display().to_string();
    let o = outside.display().to_string();
    let specs = vec![
        format!("local:../outside/{RULES}.backup-{stamp}"),
        format!("local:../../{RULES}.backup-{stamp}"),
        format!("local:sub/../../outside/{RULES}.backup-{stamp}"),
        format!("local:/{o}/{RULES}.backup-{stamp}"),
        format!("{o}/{RULES}.backup-{stamp}"),
        format!("{home}/../outside/{RULES}.backup-{stamp}"),
        "/etc/passwd".to_string(),
        format!("local:{RULES}.backup-20260102-000000"),
        format!("{home}/{RULES}.backup-20260102-000000"),
        format!("local:sub/f.txt.backup-{stamp}"),
        format!("{home}/sub/f.txt.backup-{stamp}"),
        format!("local:{RULES}"),
        "local:".to_string(),
        format!("nowhere:{RULES}.backup-{stamp}"),
        format!("relative/{RULES}.backup-{stamp}"),
    ];
    for spec in &specs {
        let out = a.run(&["restore", spec]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "restore {spec:?} must be refused: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            read(&a.file(RULES)),
            before_current,
            "{spec}: current changed"
        );
        assert_eq!(tree(&a.home), before_tree, "{spec}: home changed");
        assert_eq!(read(&outside.join("secret")), "SECRET\n");
    }
    // The control: a real backup restores.
    let spec = real_backups[0].display().to_string();
    let out = a.run(&["restore", &spec]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    summary(
        "restore-escapes",
        specs.len() as u64 + 1,
        specs.len() as u64,
        1,
        0,
    );
}

#[allow(dead_code)]
fn unused(_: PathBuf) {}
