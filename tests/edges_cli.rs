//! Inputs at the edges, through the CLI on real folders: file times from 1601 to 9999 (past
//! the 2262 end of i64 nanoseconds, and before 1970 with a fractional second), locations that
//! lie inside one another, config errors that must name file, line and key, and file names
//! that are not UTF-8.

mod common;
use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// A world on tmpfs when there is one (it keeps any i64 seconds; ext4 clamps to 1901-2446),
/// else in the usual temp folder.
fn wide_world() -> World {
    let shm = Path::new("/dev/shm");
    let dir = tempfile::Builder::new()
        .prefix("metasync-edges-")
        .tempdir_in(shm)
        .or_else(|_| tempfile::tempdir())
        .expect("temp dir");
    World { dir }
}

fn instant(rfc: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(rfc)
        .unwrap_or_else(|e| panic!("{rfc}: {e}"))
        .with_timezone(&chrono::Utc)
}

fn system_time(rfc: &str) -> SystemTime {
    // chrono's seconds are floored, its nanoseconds count forward, like stat's.
    let t = instant(rfc);
    let whole = if t.timestamp() >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(t.timestamp().unsigned_abs())
    };
    whole + Duration::from_nanos(t.timestamp_subsec_nanos().into())
}

fn set_mtime(path: &Path, rfc: &str) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(system_time(rfc))
        .unwrap_or_else(|e| panic!("set mtime {rfc} on {}: {e}", path.display()));
}

/// (seconds, nanoseconds) of a file's mtime as the kernel reports it.
fn mtime_of(path: &Path) -> (i64, i64) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.mtime(), m.mtime_nsec())
}

const TIMES: &[(&str, &str)] = &[
    ("t/a-1601.txt", "1601-01-01T00:00:00Z"),
    ("t/b-1969.txt", "1969-12-31T23:59:59.5Z"),
    ("t/c-2300.txt", "2300-01-01T12:00:00.123456789Z"),
    ("t/d-9999.txt", "9999-12-31T23:59:59.999999999Z"),
];

fn status_mtime(status: &serde_json::Value, location: &str, file: &str) -> String {
    let loc = status["locations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == location)
        .unwrap_or_else(|| panic!("no {location} in {status:#}"));
    let f = loc["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == file)
        .unwrap_or_else(|| panic!("no {file} in {loc:#}"));
    f["mtime"].as_str().unwrap_or_default().to_string()
}

#[test]
fn file_times_from_1601_to_9999_are_copied_exactly_and_ordered() {
    let w = wide_world();
    let m = w.machine("home", &[("remote", "remote")], "files = [\"t/*\"]");
    for (file, rfc) in TIMES {
        write_aged(&m.file(file), file, 0);
        set_mtime(&m.file(file), rfc);
    }
    let r = m.sync(&[], 0);
    assert_eq!(r["actions"].as_array().unwrap().len(), TIMES.len(), "{r:#}");
    let (_, status) = m.json(&["status"]);
    for (file, rfc) in TIMES {
        let here = mtime_of(&m.file(file));
        let there = mtime_of(&w.path("remote").join(file));
        assert_eq!(there, here, "{file}: the copy's mtime (s, ns)");
        println!("edges[times]: {file} set {rfc}, held {here:?}, copy {there:?}");
        if w.dir.path().starts_with("/dev/shm") {
            let t = instant(rfc);
            let set = (t.timestamp(), i64::from(t.timestamp_subsec_nanos()));
            assert_eq!(here, set, "{file}: tmpfs keeps any time");
        }
        // status shows the instant the file holds, whole seconds, as RFC 3339.
        let held = chrono::DateTime::from_timestamp(here.0, 0).unwrap();
        for loc in ["local", "remote"] {
            let shown = status_mtime(&status, loc, file);
            assert_eq!(instant(&shown), held, "{file} in {loc}: {shown}");
        }
    }
    // The second run has nothing to do.
    let r = m.sync(&[], 0);
    assert!(r["actions"].as_array().unwrap().is_empty(), "{r:#}");

    // `newest` orders the far future and the far past right.
    let (later, earlier) = (
        ("t/c-2300.txt", "t/d-9999.txt"),
        ("t/b-1969.txt", "t/a-1601.txt"),
    );
    std::fs::write(m.file(later.0), "home, 2300").unwrap();
    set_mtime(&m.file(later.0), "2300-06-01T00:00:00Z");
    std::fs::write(w.path("remote").join(later.0), "remote, 9999").unwrap();
    set_mtime(&w.path("remote").join(later.0), "9999-06-01T00:00:00Z");
    std::fs::write(m.file(earlier.0), "home, 1969").unwrap();
    set_mtime(&m.file(earlier.0), "1969-12-31T23:59:59.5Z");
    std::fs::write(w.path("remote").join(earlier.0), "remote, 1601").unwrap();
    set_mtime(&w.path("remote").join(earlier.0), "1601-06-01T00:00:00Z");
    let r = m.sync(&[], 0);
    for (file, want) in [(later.0, "remote, 9999"), (earlier.0, "home, 1969")] {
        assert_eq!(read(&m.file(file)), want, "{file}: {r:#}");
        assert_eq!(read(&w.path("remote").join(file)), want, "{file}: {r:#}");
        assert_eq!(
            mtime_of(&m.file(file)),
            mtime_of(&w.path("remote").join(file)),
            "{file}"
        );
    }
    let r = m.sync(&[], 0);
    assert!(r["actions"].as_array().unwrap().is_empty(), "{r:#}");
}

/// How many times this home's logs say `saying`.
fn log_count(m: &Machine, saying: &str) -> usize {
    let Ok(dir) = std::fs::read_dir(m.home.join("logs")) else {
        return 0;
    };
    dir.flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .map(|log| log.matches(saying).count())
        .sum()
}

#[test]
fn a_selected_name_that_is_not_utf8_is_reported_as_skipped() {
    use std::os::unix::ffi::OsStrExt;
    let w = World::new();
    let m = w.machine("home", &[("remote", "remote")], "files = [\"t/*\"]");
    write_aged(&m.file("t/ok.txt"), "fine", 60);
    // In sync and steady first (past the racy window): the steady replay must not hide the
    // new name either.
    m.sync(&[], 0);
    std::thread::sleep(Duration::from_millis(2_300));
    m.sync(&[], 0);
    m.sync(&[], 0);
    assert_eq!(
        log_count(&m, "(unchanged since the last run)"),
        1,
        "a steady replay"
    );
    let bad = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    std::fs::write(m.file("t").join(bad), "latin-1 name").unwrap();
    // Not selected by the patterns: not a word about it.
    std::fs::create_dir_all(m.file("u")).unwrap();
    std::fs::write(m.file("u").join(bad), "elsewhere").unwrap();
    let shown = "t/caf\u{FFFD}.txt";
    for run in 0..2 {
        let r = m.sync(&[], 0);
        let warnings: Vec<&str> = r["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x.as_str())
            .collect();
        let about: Vec<&&str> = warnings.iter().filter(|x| x.contains("caf")).collect();
        assert_eq!(about.len(), 1, "run {run}: {r:#}");
        assert!(
            about[0].contains(shown) && about[0].contains("UTF-8") && about[0].contains("local"),
            "run {run}: {r:#}"
        );
        assert_eq!(
            tree(&w.path("remote"))
                .iter()
                .filter(|f| f.starts_with("t/"))
                .count(),
            1
        );
    }
    let (code, status) = m.json(&["status"]);
    assert_eq!(code, 0, "{status:#}");
    let local = &status["locations"][0];
    assert_eq!(local["name"], "local", "{status:#}");
    let skipped = local["skipped"].as_array().expect("skipped list");
    assert_eq!(skipped.len(), 1, "{status:#}");
    assert_eq!(skipped[0]["name"], shown, "{status:#}");
    assert!(
        skipped[0]["reason"]
            .as_str()
            .unwrap()
            .contains("caf\\xe9.txt"),
        "{status:#}"
    );
    let out = m.run(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(shown) && text.contains("not valid UTF-8"),
        "{text}"
    );
}

/// A full config, one line per key (`""` for headers and blank lines), with remotes in `w`.
fn full_config(w: &World) -> Vec<(&'static str, String)> {
    let one = w.path("one").display().to_string();
    let two = w.path("two").display().to_string();
    let mnt = w.path("mnt").display().to_string();
    [
        ("interval_secs", "interval_secs = 300".to_string()),
        ("strategy", "strategy = \"newest\"".into()),
        ("files", "files = [\"a.txt\", \"t/*\"]".into()),
        ("propagate_deletes", "propagate_deletes = false".into()),
        ("lock_wait_secs", "lock_wait_secs = 5".into()),
        ("merge", "merge = \"rows\"".into()),
        ("", String::new()),
        ("", "[[merge_overrides]]".into()),
        ("merge_overrides[0].pattern", "pattern = \"x/*.db\"".into()),
        ("merge_overrides[0].merge", "merge = \"file\"".into()),
        ("", String::new()),
        ("", "[[locations]]".into()),
        ("locations[0].name", "name = \"one\"".into()),
        ("locations[0].path", format!("path = \"{one}\"")),
        ("", String::new()),
        ("", "[[locations]]".into()),
        ("locations[1].name", "name = \"two\"".into()),
        ("locations[1].path", format!("path = \"{two}\"")),
        (
            "locations[1].mount_point",
            format!("mount_point = \"{mnt}\""),
        ),
        ("", String::new()),
        ("", "[backups]".into()),
        ("backups.keep_last", "keep_last = 5".into()),
        ("backups.plain_last", "plain_last = 1".into()),
        ("backups.plain_max_mb", "plain_max_mb = 100".into()),
        ("backups.retention", "retention = \"staggered\"".into()),
        ("backups.max_age_days", "max_age_days = 90".into()),
        ("backups.protect_days", "protect_days = 30".into()),
        ("backups.max_history_mb", "max_history_mb = 500".into()),
        ("", String::new()),
        ("", "[sqlite]".into()),
        (
            "sqlite.max_shrink_percent",
            "max_shrink_percent = 50".into(),
        ),
        (
            "sqlite.quick_check_above_mb",
            "quick_check_above_mb = 512".into(),
        ),
        ("sqlite.busy_timeout_ms", "busy_timeout_ms = 5000".into()),
    ]
    .into_iter()
    .collect()
}

/// For a key: a value of the wrong type and wrong values of the right type.
fn wrong_values(key: &str) -> (&'static str, &'static [&'static str]) {
    match key {
        "interval_secs" => ("\"300\"", &["-300", "0"]),
        "strategy" => ("1", &["\"oldest\""]),
        "files" => (
            "\"a.txt\"",
            &["[]", "[\"/etc/passwd\"]", "[\"../x\"]", "[\"a/[b\"]"],
        ),
        "propagate_deletes" => ("\"no\"", &["1"]),
        "lock_wait_secs" => ("true", &["-1"]),
        "merge" => ("[]", &["\"row\""]),
        "merge_overrides[0].pattern" => ("5", &["\"/abs/*.db\""]),
        "merge_overrides[0].merge" => ("{}", &["\"rows2\""]),
        "locations[0].name" => ("2", &["\"local\"", "\"a.b\""]),
        "locations[0].path" => ("3", &["\"  \""]),
        "locations[1].name" => ("2", &["\"local\"", "\"one\"", "\"a b\""]),
        "locations[1].path" => ("[\"/x\"]", &["\"\""]),
        "locations[1].mount_point" => ("false", &["\"\""]),
        "backups.keep_last" => ("\"5\"", &["-1"]),
        "backups.plain_last" => ("\"1\"", &["-1"]),
        "backups.plain_max_mb" => ("1.5", &["-1"]),
        "backups.retention" => ("5", &["\"weekly\""]),
        "backups.max_age_days" => ("1.5", &["-1"]),
        "backups.protect_days" => ("\"30\"", &["-1"]),
        "backups.max_history_mb" => ("\"big\"", &["0", "-1"]),
        "sqlite.max_shrink_percent" => ("\"50\"", &["101", "-1"]),
        "sqlite.quick_check_above_mb" => ("\"x\"", &["-1"]),
        "sqlite.busy_timeout_ms" => ("1979-05-27", &["-5000"]),
        other => panic!("no wrong values for {other}"),
    }
}

#[test]
fn every_config_error_names_the_file_line_and_key() {
    let w = World::new();
    let m = w.machine("home", &[], "");
    let config = m.file("metasync.toml");
    let lines = full_config(&w);
    let text = |lines: &[(&str, String)]| {
        lines
            .iter()
            .map(|(_, l)| format!("{l}\n"))
            .collect::<String>()
    };
    std::fs::write(&config, text(&lines)).unwrap();
    let out = m.run(&["status"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut cases, mut named) = (0, 0);
    for (at, (key, line)) in lines.iter().enumerate().filter(|(_, (k, _))| !k.is_empty()) {
        let (wrong_type, wrong) = wrong_values(key);
        let head = line.split_once(" = ").unwrap().0;
        for value in std::iter::once(&wrong_type).chain(wrong) {
            let mut bad = lines.clone();
            bad[at].1 = format!("{head} = {value}");
            std::fs::write(&config, text(&bad)).unwrap();
            let out = m.run(&["status"]);
            let err = String::from_utf8_lossy(&out.stderr);
            cases += 1;
            assert_eq!(out.status.code(), Some(2), "{key} = {value}: {err}");
            let file_line = format!("{}:{}:", config.display(), at + 1);
            let file_line_end = format!("{}:{}: ", config.display(), at + 1);
            assert!(
                (err.contains(&file_line) || err.contains(&file_line_end))
                    && err.contains(&format!("`{key}`")),
                "{key} = {value}: wants file, line {} and key `{key}`: {err}",
                at + 1
            );
            named += 1;
            println!("edges[config-keys]: {key} = {value} -> {}", err.trim());
        }
    }
    println!("edges[config-keys]: cases {cases}, errors naming file, line and key {named}");
}

#[test]
fn overlapping_locations_are_a_config_error_naming_both() {
    let w = World::new();
    std::fs::create_dir_all(w.path("h/home")).unwrap();
    std::os::unix::fs::symlink(w.path("h/home"), w.path("link")).unwrap();
    let config_for = |remotes: &[(&str, String)]| {
        let mut t = String::from("files = [\"**/*\"]\n");
        for (n, p) in remotes {
            t.push_str(&format!("[[locations]]\nname = \"{n}\"\npath = \"{p}\"\n"));
        }
        t
    };
    let abs = |rel: &str| w.path(rel).display().to_string();
    // (case, home, remotes, the two names the error must give)
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, String)>, [&'a str; 2]);
    let cases: Vec<Case> = vec![
        (
            "remote in home",
            "h/home",
            vec![("inner", abs("h/home/remote"))],
            ["local", "inner"],
        ),
        (
            "home in remote",
            "h/home",
            vec![("outer", abs("h"))],
            ["local", "outer"],
        ),
        (
            "same folder",
            "h/home",
            vec![("same", format!("{}/", abs("h/home")))],
            ["local", "same"],
        ),
        (
            "nested remotes",
            "h/home",
            vec![("a", abs("r")), ("b", abs("r/sub/deeper"))],
            ["a", "b"],
        ),
        (
            "through ..",
            "h/home",
            vec![("dots", abs("r/../h/home/x"))],
            ["local", "dots"],
        ),
        (
            "through a symlink",
            "h/home",
            vec![("linked", abs("link/not-yet"))],
            ["local", "linked"],
        ),
        (
            "through ~",
            "h/home",
            vec![("tilde", "~/h/home/t".to_string())],
            ["local", "tilde"],
        ),
    ];
    for (case, home, remotes, names) in &cases {
        let m = Machine { home: w.path(home) };
        std::fs::write(m.file("metasync.toml"), config_for(remotes)).unwrap();
        write_aged(&m.file("notes.txt"), "x", 60);
        let out = m
            .cmd(&["--json", "sync"])
            .env("HOME", w.path(""))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{case}: {err}");
        let config = m.file("metasync.toml").display().to_string();
        assert!(
            err.contains(&config),
            "{case}: names the config file: {err}"
        );
        for n in names {
            assert!(
                err.contains(&format!("`{n}`")),
                "{case}: names `{n}`: {err}"
            );
        }
        assert!(err.contains("locations["), "{case}: names the key: {err}");
        println!("edges[overlap]: {case}: {}", err.trim());
        assert!(
            !m.file("remote").exists() && !m.file("x").exists() && !w.path("h/home/t").exists()
        );
    }
    // Folders side by side, even with a name that starts like the other's, are fine.
    let m = Machine {
        home: w.path("h/home"),
    };
    std::fs::write(
        m.file("metasync.toml"),
        config_for(&[("beside", abs("h/home2")), ("other", abs("r/x"))]),
    )
    .unwrap();
    m.sync(&[], 0);
    assert_eq!(read(&w.path("h/home2/notes.txt")), "x");
}

/// Names as long as a file system allows (255 bytes, in ASCII and in three-byte characters):
/// created, updated (a backup name would be longer than 255 bytes, so it is shortened with a
/// hash of the whole name), listed as that file's backups, and restored. Before, the temp
/// name of a first copy and the backup name of an update were too long for the file system:
/// such a file could never sync.
#[test]
fn names_as_long_as_a_file_system_allows_sync_update_and_restore() {
    let w = World::new();
    let m = w.machine("home", &[("remote", "remote")], "files = [\"t/*\"]");
    let names = [
        "L".repeat(255),
        "日".repeat(85),
        "a".repeat(230),
        "a".repeat(229),
    ];
    for (i, n) in names.iter().enumerate() {
        write_aged(&m.file(&format!("t/{n}")), &format!("first {i}\n"), 60);
    }
    m.sync(&[], 0);
    for (i, n) in names.iter().enumerate() {
        assert_eq!(
            read(&w.path("remote").join("t").join(n)),
            format!("first {i}\n")
        );
        write_aged(&m.file(&format!("t/{n}")), &format!("second {i}\n"), 30);
    }
    let r = m.sync(&[], 0);
    assert!(r["errors"].as_array().unwrap().is_empty(), "{r:#}");
    for (i, n) in names.iter().enumerate() {
        let file = format!("t/{n}");
        assert_eq!(read(&w.path("remote").join(&file)), format!("second {i}\n"));
        let (code, list) = m.json(&["backups", &file, "--location", "remote"]);
        assert_eq!(code, 0, "{list:#}");
        let list = list.as_array().unwrap();
        assert_eq!(
            list.len(),
            1,
            "{file}: one backup, of this file only: {list:#?}"
        );
        assert_eq!(list[0]["file"], file.as_str());
        let id = list[0]["id"].as_str().unwrap();
        let (code, done) = m.json(&["restore", id]);
        assert_eq!(code, 0, "{done:#}");
        assert_eq!(read(&w.path("remote").join(&file)), format!("first {i}\n"));
    }
}
