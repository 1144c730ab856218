//! `metasync service install|uninstall|status`: the systemd user unit and the LaunchAgent are
//! generated, checked by the platform's own validators where they exist here
//! (`systemd-analyze verify`; Python's `plistlib` for the property list), installed and
//! uninstalled idempotently, and leave nothing behind. `--files-only` keeps the tests away
//! from the real user's service manager; starting a unit needs a user systemd session, which
//! a test machine does not have.

mod common;

use common::{Machine, World};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A machine whose `$HOME` (where service files go) is a temp folder of its own; the synced
/// home has spaces and systemd/XML-special characters in its path.
fn setup() -> (World, Machine, PathBuf) {
    let w = World::new();
    let m = w.machine("home 100% a&b <x> $USER", &[("cloud", "cloud")], "");
    let user = w.path("user");
    std::fs::create_dir_all(&user).unwrap();
    (w, m, user)
}

fn service(m: &Machine, user: &Path, args: &[&str]) -> (i32, serde_json::Value) {
    let out = m
        .cmd(&[&["--json", "service"], args].concat())
        .env("HOME", user)
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap();
    let code = out.status.code().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, json)
}

fn tree(dir: &Path) -> Vec<String> {
    common::tree(dir)
}

fn unit_path(user: &Path) -> PathBuf {
    user.join(".config/systemd/user/metasync.service")
}

#[test]
fn the_systemd_unit_is_installed_once_verified_and_removed_without_a_trace() {
    let (_w, m, user) = setup();
    let (code, st) = service(&m, &user, &["status", "--manager", "systemd"]);
    assert_eq!((code, st["installed"].as_bool()), (0, Some(false)));

    let (code, st) = service(
        &m,
        &user,
        &["install", "--files-only", "--manager", "systemd"],
    );
    assert_eq!(code, 0, "{st}");
    assert_eq!(st["changed"], true);
    let path = unit_path(&user);
    assert_eq!(PathBuf::from(st["path"].as_str().unwrap()), path);
    let unit = std::fs::read_to_string(&path).unwrap();
    let exe = env!("CARGO_BIN_EXE_metasync");
    assert!(
        unit.contains(&format!("ExecStart=\"{exe}\" \"--home\" ")),
        "{unit}"
    );
    assert!(
        unit.contains("100%% a&b <x> $$USER"),
        "specifiers escaped: {unit}"
    );

    // systemd's own check of the file (present on Debian with the systemd package).
    if let Ok(out) = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
    {
        let err = String::from_utf8_lossy(&out.stderr);
        let about_unit: Vec<&str> = err.lines().filter(|l| l.contains("metasync")).collect();
        assert!(out.status.success() && about_unit.is_empty(), "{err}");
    } else {
        assert!(
            std::env::var("CI").is_err(),
            "systemd-analyze must exist in CI"
        );
        eprintln!("systemd-analyze missing: the unit's syntax was not verified");
    }

    // Idempotent: a second install writes nothing.
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    let (code, st) = service(
        &m,
        &user,
        &["install", "--files-only", "--manager", "systemd"],
    );
    assert_eq!((code, st["changed"].as_bool()), (0, Some(false)));
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        before
    );
    let (_, st) = service(&m, &user, &["status", "--manager", "systemd"]);
    assert_eq!(
        (st["installed"].as_bool(), st["current"].as_bool()),
        (Some(true), Some(true))
    );

    // A file edited by hand is reported as not current, and install puts it right.
    std::fs::write(&path, unit.replace("Nice=10", "Nice=0")).unwrap();
    let (_, st) = service(&m, &user, &["status", "--manager", "systemd"]);
    assert_eq!(st["current"], false);
    let (_, st) = service(
        &m,
        &user,
        &["install", "--files-only", "--manager", "systemd"],
    );
    assert_eq!(st["changed"], true);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), unit);

    // Uninstall removes the file and the folders it created; twice is fine.
    let (code, st) = service(
        &m,
        &user,
        &["uninstall", "--files-only", "--manager", "systemd"],
    );
    assert_eq!((code, st["changed"].as_bool()), (0, Some(true)));
    assert!(tree(&user).is_empty(), "left behind: {:?}", tree(&user));
    let (code, st) = service(
        &m,
        &user,
        &["uninstall", "--files-only", "--manager", "systemd"],
    );
    assert_eq!((code, st["changed"].as_bool()), (0, Some(false)));
}

#[test]
fn uninstall_keeps_other_units_in_the_folder() {
    let (_w, m, user) = setup();
    let other = user.join(".config/systemd/user/other.service");
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    std::fs::write(&other, "[Service]\nExecStart=/bin/true\n").unwrap();
    service(
        &m,
        &user,
        &["install", "--files-only", "--manager", "systemd"],
    );
    service(
        &m,
        &user,
        &["uninstall", "--files-only", "--manager", "systemd"],
    );
    assert_eq!(
        tree(&user),
        vec![".config/systemd/user/other.service".to_string()]
    );
}

#[test]
fn the_launch_agent_is_a_valid_property_list_running_the_daemon_niced() {
    let (_w, m, user) = setup();
    let (code, st) = service(
        &m,
        &user,
        &["install", "--files-only", "--manager", "launchd"],
    );
    assert_eq!(code, 0, "{st}");
    let path = user.join("Library/LaunchAgents/app.metasync.daemon.plist");
    assert!(path.is_file());
    // Parsed by a real property-list reader; the values come back exactly.
    let script = "import json, plistlib, sys\n\
                  print(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plist: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let home = m.home.display().to_string();
    let args: Vec<&str> = plist["ProgramArguments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        vec![env!("CARGO_BIN_EXE_metasync"), "--home", &home, "daemon"]
    );
    assert_eq!(plist["Label"], "app.metasync.daemon");
    assert_eq!(plist["Nice"], 10);
    assert_eq!(plist["RunAtLoad"], true);
    assert_eq!(
        plist["StandardErrorPath"],
        format!("{home}/logs/daemon.err.log")
    );
    assert!(
        m.home.join("logs").is_dir(),
        "launchd needs the log folder to exist"
    );

    service(
        &m,
        &user,
        &["uninstall", "--files-only", "--manager", "launchd"],
    );
    assert!(tree(&user).is_empty(), "left behind: {:?}", tree(&user));
}

#[test]
fn no_service_for_a_broken_config_and_no_foreign_manager_without_files_only() {
    let (_w, m, user) = setup();
    let foreign = if cfg!(target_os = "macos") {
        "systemd"
    } else {
        "launchd"
    };
    let out = m
        .cmd(&["service", "install", "--manager", foreign])
        .env("HOME", &user)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--files-only"));

    std::fs::write(m.home.join("metasync.toml"), "interval_secs = \"often\"\n").unwrap();
    let out = m
        .cmd(&["service", "install", "--files-only"])
        .env("HOME", &user)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("metasync.toml"));
    assert!(
        tree(&user).is_empty(),
        "nothing written for a broken config"
    );
}
