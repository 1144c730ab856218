//! The background scheduler on the mock runtime with real folders: the first run soon after
//! start, no run from the app's own writes, a run a few seconds after a synced file
//! changes, and (where this machine lets a test mount a tmpfs) a run when a drive mounts.

use metasync_app::state::{AppState, EngineHandle};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tauri::test::{mock_builder, MockRuntime};
use tauri::{App, Manager};

const RULES: &str = "sorting-rules.yaml";

struct Fixture {
    _dir: tempfile::TempDir,
    home: PathBuf,
    remote: PathBuf,
    usb: PathBuf,
    app: App<MockRuntime>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let remote = dir.path().join("remote");
    let usb = dir.path().join("usb");
    for d in [&home, &remote, &usb] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let config = format!(
        "interval_secs = 3600\nfiles = [\"{RULES}\"]\n\n\
         [[locations]]\nname = \"drive\"\npath = {:?}\n\n\
         [[locations]]\nname = \"usb\"\npath = {:?}\nmount_point = {:?}\n",
        remote.display().to_string(),
        usb.join(".metasystem").display().to_string(),
        usb.display().to_string(),
    );
    std::fs::write(home.join("metasync.toml"), config).expect("config");
    std::fs::write(home.join(RULES), "rules: v1\n").expect("rules");
    let app = mock_builder()
        .plugin(tauri_plugin_notification::init())
        .manage(AppState::new(EngineHandle::new(&home, None)))
        .invoke_handler(metasync_app::handler())
        .build(metasync_app::context())
        .expect("mock app");
    Fixture {
        _dir: dir,
        home,
        remote,
        usb,
        app,
    }
}

impl Fixture {
    fn runs(&self) -> usize {
        let engine = self
            .app
            .state::<AppState>()
            .engine
            .open()
            .unwrap_or_else(|e| panic!("{e}"));
        engine.runs(100).map(|h| h.len()).unwrap_or(0)
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn runs_at_start_not_on_its_own_writes_and_after_an_edit() {
    let f = fixture();
    metasync_app::scheduler::start(f.app.handle().clone());
    wait_until("the first run", Duration::from_secs(15), || {
        read(&f.remote.join(RULES)) == "rules: v1\n"
    });
    wait_until("the first run to finish", Duration::from_secs(10), || {
        !f.app.state::<AppState>().is_running()
    });
    let after_first = f.runs();
    assert_eq!(after_first, 1);
    // The run's own copy must not start another run.
    std::thread::sleep(metasync_app::scheduler::DEBOUNCE * 3);
    assert_eq!(f.runs(), 1, "a run triggered by the app's own writes");

    std::fs::write(f.home.join(RULES), "rules: v2, edited\n").expect("edit");
    wait_until("the edit to be synced", Duration::from_secs(15), || {
        read(&f.remote.join(RULES)) == "rules: v2, edited\n"
    });
    wait_until("that run to finish", Duration::from_secs(10), || {
        !f.app.state::<AppState>().is_running()
    });
    std::thread::sleep(metasync_app::scheduler::DEBOUNCE * 3);
    assert_eq!(f.runs(), 2, "one run per edit, none for its echo");
}

#[test]
fn a_drive_mounting_starts_a_run() {
    let f = fixture();
    metasync_app::scheduler::start(f.app.handle().clone());
    wait_until("the first run", Duration::from_secs(15), || {
        read(&f.remote.join(RULES)) == "rules: v1\n"
    });
    assert!(
        !f.usb.join(".metasystem").exists(),
        "unmounted: never written"
    );
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&f.usb)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: this machine does not let the test mount a tmpfs");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&f.usb);
    wait_until(
        "a run after the mount",
        metasync_app::scheduler::POLL * 3,
        || read(&f.usb.join(".metasystem").join(RULES)) == "rules: v1\n",
    );
    wait_until("that run to finish", Duration::from_secs(10), || {
        !f.app.state::<AppState>().is_running()
    });
}

/// The tray's "Sync now" only pokes the queue: the scheduler's loop hears it and runs, even
/// while scheduled runs are paused.
#[test]
fn a_manual_trigger_runs_through_the_scheduler_even_while_paused() {
    use metasync_app::queue::Trigger;
    let f = fixture();
    metasync_app::scheduler::start(f.app.handle().clone());
    wait_until("the first run", Duration::from_secs(15), || f.runs() == 1);
    wait_until("the first run to finish", Duration::from_secs(10), || {
        !f.app.state::<AppState>().is_running()
    });
    let state = f.app.state::<AppState>();
    // Paused as the tray and the panel pause (the queue's flag follows the pause settings
    // at every poll of the loop).
    state.pause_for(metasync_app::pause::PauseFor::Resumed, chrono::Local::now());
    assert!(state.is_paused());
    std::fs::write(f.home.join(RULES), "rules: v2, edited\n").expect("edit");
    state.queue().trigger(Trigger::Manual);
    wait_until("the manual run", Duration::from_secs(15), || {
        read(&f.remote.join(RULES)) == "rules: v2, edited\n"
    });
    wait_until("that run to finish", Duration::from_secs(10), || {
        !state.is_running()
    });
    std::thread::sleep(metasync_app::scheduler::DEBOUNCE * 3);
    assert_eq!(f.runs(), 2, "the click made one run; the paused edit none");
}
