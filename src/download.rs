//! Asking iCloud to bring an evicted file back (`brctl download <file>`, macOS). The scan
//! must never wait for it, and must not leave a zombie behind either: every child is reaped
//! by a thread of its own, which logs a failure. A file is asked for at most once per
//! [`ASK_INTERVAL`], however often it is scanned. The program is a parameter, so the
//! spawning and reaping are tested anywhere with a stand-in command.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// iCloud's command-line tool, by its full path: no other `brctl` on `PATH` is ever run.
pub const BRCTL: &str = "/usr/bin/brctl";

/// A file's download is asked for at most once per this interval.
pub const ASK_INTERVAL: Duration = Duration::from_secs(600);

/// What [`Downloads::ask_at`] did.
#[derive(Debug)]
pub enum Asked {
    /// The program was started; the thread that waits for it (and logs a failure) ends with
    /// its exit status, `None` when waiting failed.
    Started {
        /// The child's process id.
        pid: u32,
        /// The thread reaping the child.
        reaper: JoinHandle<Option<ExitStatus>>,
    },
    /// This file was asked for less than the interval ago: nothing was started.
    Recently,
    /// The program could not be started (logged); the message names the file and program.
    Failed(String),
}

/// Download requests: the program to run and when each file was last asked for.
#[derive(Debug)]
pub struct Downloads {
    program: PathBuf,
    interval: Duration,
    asked: Mutex<HashMap<PathBuf, Instant>>,
}

impl Downloads {
    /// Requests run by `program download <file>`, each file at most once per `interval`.
    pub fn new(program: impl Into<PathBuf>, interval: Duration) -> Self {
        Downloads {
            program: program.into(),
            interval,
            asked: Mutex::new(HashMap::new()),
        }
    }

    /// Asks for `file` now.
    pub fn ask(&self, file: &Path) -> Asked {
        self.ask_at(file, Instant::now())
    }

    /// Asks for `file` at `now`, unless it was asked for within the interval before.
    pub fn ask_at(&self, file: &Path, now: Instant) -> Asked {
        {
            let mut asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
            // Forget what is old: the map holds only the files asked for within the interval.
            asked.retain(|_, at| now.saturating_duration_since(*at) < self.interval);
            if asked.contains_key(file) {
                return Asked::Recently;
            }
            asked.insert(file.to_path_buf(), now);
        }
        start(&self.program, file)
    }
}

/// Starts `program download <file>` and a thread that reaps it.
fn start(program: &Path, file: &Path) -> Asked {
    let spawned = Command::new(program)
        .arg("download")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let msg = format!(
                "{}: cannot start {} download: {e}",
                file.display(),
                program.display()
            );
            tracing::warn!(target: "metasync", "{msg}");
            return Asked::Failed(msg);
        }
    };
    let pid = child.id();
    let what = format!("{} download {}", program.display(), file.display());
    // The child goes to the thread through a channel, so that it is still here to be
    // reaped if no thread can be started.
    let (tx, rx) = std::sync::mpsc::channel::<Child>();
    let thread = std::thread::Builder::new()
        .name("metasync-download".into())
        .spawn(move || rx.recv().ok().and_then(|child| reap(child, &what)));
    match thread {
        Ok(reaper) => match tx.send(child) {
            Ok(()) => Asked::Started { pid, reaper },
            Err(back) => {
                // The thread ended before it got the child (only a panic does that): reap here.
                let _ = reaper.join();
                let status = reap(back.0, &format!("{} download", file.display()));
                Asked::Failed(format!(
                    "{}: the download's waiting thread ended early ({status:?})",
                    file.display()
                ))
            }
        },
        Err(e) => {
            let mut child = child;
            tracing::warn!(target: "metasync", "{}: no thread to wait for the download ({e}); stopping it", file.display());
            let _ = child.kill();
            let _ = child.wait();
            Asked::Failed(format!(
                "{}: cannot wait for the download: {e}",
                file.display()
            ))
        }
    }
}

/// Waits for the child and logs how it failed, if it did.
fn reap(mut child: Child, what: &str) -> Option<ExitStatus> {
    match child.wait() {
        Ok(status) => {
            if !status.success() {
                tracing::warn!(target: "metasync", "{what}: failed ({status})");
            }
            Some(status)
        }
        Err(e) => {
            tracing::warn!(target: "metasync", "{what}: cannot wait for it: {e}");
            None
        }
    }
}

/// The process-wide requests through [`BRCTL`].
pub fn downloads() -> &'static Downloads {
    static DOWNLOADS: OnceLock<Downloads> = OnceLock::new();
    DOWNLOADS.get_or_init(|| Downloads::new(BRCTL, ASK_INTERVAL))
}

/// Asks iCloud for `file` (at most once per [`ASK_INTERVAL`]); never waits for the download.
pub fn request(file: &Path) {
    if let Asked::Started { pid, .. } = downloads().ask(file) {
        tracing::info!(target: "metasync", "{}: download requested from iCloud (pid {pid})", file.display());
    }
}

// The stand-ins are /bin/true and /bin/false, and a zombie is told from /proc: Linux.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The process state letter of `pid` (`Z` for a zombie), `None` once it is gone.
    fn state_of(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name is in parentheses and may hold anything: the state follows the last.
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    /// Whether `pid` is still a process of ours that nobody reaped or is running.
    fn is_our_zombie(pid: u32) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let mut rest = stat
            .rsplit_once(')')
            .map(|r| r.1)
            .unwrap_or("")
            .split_whitespace();
        let state = rest.next();
        let ppid = rest.next().and_then(|p| p.parse::<u32>().ok());
        state == Some("Z") && ppid == Some(std::process::id())
    }

    fn started(asked: Asked) -> (u32, JoinHandle<Option<ExitStatus>>) {
        match asked {
            Asked::Started { pid, reaper } => (pid, reaper),
            other => panic!("expected a started download, got {other:?}"),
        }
    }

    #[test]
    fn every_child_is_reaped_and_a_failure_is_reported() {
        let ok = Downloads::new("/bin/true", ASK_INTERVAL);
        let bad = Downloads::new("/bin/false", ASK_INTERVAL);
        let mut children = Vec::new();
        for i in 0..5 {
            children.push((true, started(ok.ask(Path::new(&format!("/x/ok-{i}"))))));
            children.push((false, started(bad.ask(Path::new(&format!("/x/bad-{i}"))))));
        }
        for (succeeds, (pid, reaper)) in children {
            let status = reaper.join().expect("reaper thread").expect("exit status");
            assert_eq!(status.success(), succeeds, "pid {pid}");
            assert!(!is_our_zombie(pid), "pid {pid} is left a zombie");
        }
    }

    #[test]
    fn the_caller_never_waits_and_a_slow_child_is_reaped_when_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let go = dir.path().join("go");
        let script = dir.path().join("slow-brctl");
        // Runs until the test lets it go: `$2` is the file asked for.
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nwhile [ ! -e {:?} ]; do sleep 0.01; done\n[ \"$1\" = download ] && [ \"$2\" = /x/slow ]\n",
                go.display().to_string()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = Downloads::new(&script, ASK_INTERVAL);
        let (pid, reaper) = started(d.ask(Path::new("/x/slow")));
        // `ask` came back while the child still runs.
        assert!(!reaper.is_finished());
        assert!(
            matches!(state_of(pid), Some(s) if s != 'Z'),
            "{:?}",
            state_of(pid)
        );
        std::fs::write(&go, "").unwrap();
        let status = reaper.join().unwrap().expect("exit status");
        assert!(
            status.success(),
            "the script got `download /x/slow`: {status}"
        );
        assert!(!is_our_zombie(pid));
    }

    #[test]
    fn a_file_is_asked_for_at_most_once_per_interval() {
        let d = Downloads::new("/bin/true", Duration::from_secs(60));
        let t0 = Instant::now();
        let f = Path::new("/x/evicted.db");
        let (_, r) = started(d.ask_at(f, t0));
        r.join().unwrap();
        assert!(matches!(d.ask_at(f, t0), Asked::Recently));
        assert!(matches!(
            d.ask_at(f, t0 + Duration::from_secs(59)),
            Asked::Recently
        ));
        // Another file is asked for at once.
        let (_, r) = started(d.ask_at(Path::new("/x/other"), t0 + Duration::from_secs(59)));
        r.join().unwrap();
        // Once the interval has passed, the file is asked for again.
        let (_, r) = started(d.ask_at(f, t0 + Duration::from_secs(60)));
        r.join().unwrap();
        assert!(matches!(
            d.ask_at(f, t0 + Duration::from_secs(61)),
            Asked::Recently
        ));
    }

    #[test]
    fn a_program_that_cannot_start_is_reported_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-brctl");
        let d = Downloads::new(&missing, ASK_INTERVAL);
        match d.ask(Path::new("/x/f.db")) {
            Asked::Failed(msg) => {
                assert!(msg.contains("/x/f.db"), "{msg}");
                assert!(msg.contains("no-brctl"), "{msg}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        assert!(matches!(d.ask(Path::new("/x/f.db")), Asked::Recently));
    }

    #[test]
    fn brctl_is_run_by_its_full_path() {
        assert_eq!(downloads().program, Path::new("/usr/bin/brctl"));
        assert!(Path::new(BRCTL).is_absolute());
    }
}
