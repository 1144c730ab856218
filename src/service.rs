//! `metasync service install|uninstall|status`: the background loop set up the platform's own
//! way, so a headless machine (a server syncing to a bucket) syncs without the app — a systemd
//! user unit on Linux, a LaunchAgent on macOS. Both files are rendered on every platform (and
//! tested here); only starting and stopping them asks the platform's manager.

use crate::error::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The systemd user unit's name.
pub const UNIT_NAME: &str = "metasync.service";
/// The LaunchAgent's label (the app's identifier, `.daemon`).
pub const LABEL: &str = "app.metasync.daemon";

/// Which service manager runs the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Manager {
    /// A systemd user unit (Linux).
    Systemd,
    /// A launchd LaunchAgent (macOS).
    Launchd,
}

impl std::fmt::Display for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Manager::Systemd => "systemd",
            Manager::Launchd => "launchd",
        })
    }
}

impl Manager {
    /// This platform's manager.
    pub fn native() -> Manager {
        if cfg!(target_os = "macos") {
            Manager::Launchd
        } else {
            Manager::Systemd
        }
    }
}

/// What the service runs: this `metasync` binary's `daemon` on a home (and a config).
#[derive(Debug, Clone)]
pub struct Spec {
    /// The `metasync` executable.
    pub exe: PathBuf,
    /// The synced home (`--home`).
    pub home: PathBuf,
    /// A config outside the home's default place (`--config`), if any.
    pub config: Option<PathBuf>,
}

/// Where the user's service files live.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// The user's home directory (`$HOME`).
    pub user_home: PathBuf,
    /// `$XDG_CONFIG_HOME`, when set (systemd's user units live below it).
    pub xdg_config_home: Option<PathBuf>,
}

impl Dirs {
    /// From the environment: `$HOME` and `$XDG_CONFIG_HOME`.
    pub fn from_env() -> Result<Dirs> {
        let user_home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| Error::Usage("service: $HOME is not set".into()))?;
        let xdg_config_home = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        Ok(Dirs {
            user_home,
            xdg_config_home,
        })
    }

    /// The folder the manager reads this user's service files from.
    pub fn folder(&self, manager: Manager) -> PathBuf {
        match manager {
            Manager::Systemd => self
                .xdg_config_home
                .clone()
                .unwrap_or_else(|| self.user_home.join(".config"))
                .join("systemd/user"),
            Manager::Launchd => self.user_home.join("Library/LaunchAgents"),
        }
    }

    /// The service file's path.
    pub fn file(&self, manager: Manager) -> PathBuf {
        let name = match manager {
            Manager::Systemd => UNIT_NAME.to_string(),
            Manager::Launchd => format!("{LABEL}.plist"),
        };
        self.folder(manager).join(name)
    }
}

/// Whether the manager runs the service now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Running {
    /// Loaded and running.
    Active,
    /// Not running.
    Inactive,
    /// The manager could not be asked (no user session bus, no `systemctl`, ...).
    Unknown,
}

/// What `install`, `uninstall` and `status` report.
#[derive(Debug, Clone, Serialize)]
pub struct State {
    /// The manager.
    pub manager: Manager,
    /// The service file.
    pub path: PathBuf,
    /// The file exists.
    pub installed: bool,
    /// The file is exactly what `install` writes for this binary and home.
    pub current: bool,
    /// This command wrote or removed the file.
    pub changed: bool,
    /// Whether the manager runs it.
    pub running: Running,
    /// What the manager said, when something did not happen.
    pub detail: Option<String>,
}

/// The service file for `manager`.
pub fn render(manager: Manager, spec: &Spec) -> String {
    match manager {
        Manager::Systemd => systemd_unit(spec),
        Manager::Launchd => launch_agent(spec),
    }
}

fn arguments(spec: &Spec) -> Vec<String> {
    let mut args = vec![
        spec.exe.display().to_string(),
        "--home".to_string(),
        spec.home.display().to_string(),
    ];
    if let Some(config) = &spec.config {
        args.push("--config".to_string());
        args.push(config.display().to_string());
    }
    args.push("daemon".to_string());
    args
}

/// One word of an `ExecStart=` line: quoted, with systemd's specifiers (`%`) and variable
/// expansion (`$`) escaped so a path is taken literally.
fn systemd_word(word: &str) -> String {
    let mut out = String::from("\"");
    for c in word.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

fn systemd_unit(spec: &Spec) -> String {
    let exec: Vec<String> = arguments(spec).iter().map(|a| systemd_word(a)).collect();
    format!(
        "# Written by `metasync service install`; removed by `metasync service uninstall`.\n\
         [Unit]\n\
         Description=Metasync background sync of {home}\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exec}\n\
         Nice=10\n\
         IOSchedulingClass=idle\n\
         Restart=on-failure\n\
         RestartSec=30\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        home = spec.home.display().to_string().replace('%', "%%"),
        exec = exec.join(" "),
    )
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn launch_agent(spec: &Spec) -> String {
    let args: String = arguments(spec)
        .iter()
        .map(|a| format!("    <string>{}</string>\n", xml(a)))
        .collect();
    let logs = spec.home.join("logs");
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n\
         <dict>\n\
         \x20 <key>Label</key>\n\
         \x20 <string>{LABEL}</string>\n\
         \x20 <key>ProgramArguments</key>\n\
         \x20 <array>\n{args}\x20 </array>\n\
         \x20 <key>RunAtLoad</key>\n\
         \x20 <true/>\n\
         \x20 <key>KeepAlive</key>\n\
         \x20 <dict>\n\
         \x20   <key>SuccessfulExit</key>\n\
         \x20   <false/>\n\
         \x20 </dict>\n\
         \x20 <key>ThrottleInterval</key>\n\
         \x20 <integer>30</integer>\n\
         \x20 <key>Nice</key>\n\
         \x20 <integer>10</integer>\n\
         \x20 <key>ProcessType</key>\n\
         \x20 <string>Background</string>\n\
         \x20 <key>LowPriorityIO</key>\n\
         \x20 <true/>\n\
         \x20 <key>StandardOutPath</key>\n\
         \x20 <string>{out}</string>\n\
         \x20 <key>StandardErrorPath</key>\n\
         \x20 <string>{err}</string>\n\
         </dict>\n\
         </plist>\n",
        out = xml(&logs.join("daemon.out.log").display().to_string()),
        err = xml(&logs.join("daemon.err.log").display().to_string()),
    )
}

/// Writes the service file (only if it differs) and, with `start`, has the manager run it.
pub fn install(manager: Manager, spec: &Spec, dirs: &Dirs, start: bool) -> Result<State> {
    let path = dirs.file(manager);
    let text = render(manager, spec);
    let changed = std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str());
    if changed {
        let folder = dirs.folder(manager);
        std::fs::create_dir_all(&folder).map_err(|e| Error::io("create folder", &folder, e))?;
        let tmp = path.with_extension("metasync-tmp");
        std::fs::write(&tmp, &text).map_err(|e| Error::io("write service file", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename into place", &path, e))?;
    }
    if manager == Manager::Launchd {
        let logs = spec.home.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| Error::io("create folder", &logs, e))?;
    }
    let detail = if start {
        control::start(manager, &path, dirs).err()
    } else {
        Some("not started (--files-only)".to_string())
    };
    let running = control::running(manager, dirs);
    Ok(State {
        manager,
        path,
        installed: true,
        current: true,
        changed,
        running,
        detail,
    })
}

/// Has the manager stop the service (with `stop`) and removes its file; nothing else is left:
/// the folders below the config root (and the root itself) are removed when empty.
pub fn uninstall(manager: Manager, dirs: &Dirs, stop: bool) -> Result<State> {
    let path = dirs.file(manager);
    let installed = path.exists();
    let detail = if installed && stop {
        control::stop(manager, &path, dirs).err()
    } else {
        None
    };
    if installed {
        std::fs::remove_file(&path).map_err(|e| Error::io("remove service file", &path, e))?;
        let root = match (manager, &dirs.xdg_config_home) {
            (Manager::Systemd, Some(xdg)) => xdg,
            _ => &dirs.user_home,
        };
        remove_empty_folders(&dirs.folder(manager), root);
        if manager == Manager::Systemd && stop {
            let _ = control::reload(dirs);
        }
    }
    Ok(State {
        manager,
        path,
        installed: false,
        current: false,
        changed: installed,
        running: if installed && stop {
            control::running(manager, dirs)
        } else {
            Running::Inactive
        },
        detail,
    })
}

/// Removes `folder` and its parents up to (not including) `stop_at` while they are empty:
/// `remove_dir` refuses a folder with anything in it, and that ends the walk.
fn remove_empty_folders(folder: &Path, stop_at: &Path) {
    let mut dir = Some(folder);
    while let Some(d) = dir {
        if d == stop_at || !d.starts_with(stop_at) || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// Whether the service file is there, current for this binary and home, and running.
pub fn status(manager: Manager, spec: &Spec, dirs: &Dirs) -> State {
    let path = dirs.file(manager);
    let text = std::fs::read_to_string(&path).ok();
    let installed = text.is_some();
    let running = if installed {
        control::running(manager, dirs)
    } else {
        Running::Inactive
    };
    State {
        manager,
        current: text.as_deref() == Some(render(manager, spec).as_str()),
        path,
        installed,
        changed: false,
        running,
        detail: None,
    }
}

/// Asking the platform's manager: `systemctl --user` or `launchctl`.
mod control {
    use super::{Command, Dirs, Manager, Path, Running, LABEL, UNIT_NAME};

    fn call(program: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(program)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(format!(
                "`{program} {}` failed: {}",
                args.join(" "),
                err.trim()
            ))
        }
    }

    /// launchd's domain for this user: `gui/<uid>`, the uid read from the home folder's owner.
    fn domain(dirs: &Dirs) -> Result<String, String> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&dirs.user_home)
            .map_err(|e| format!("cannot stat {}: {e}", dirs.user_home.display()))?;
        Ok(format!("gui/{}", meta.uid()))
    }

    pub(super) fn reload(_dirs: &Dirs) -> Result<String, String> {
        call("systemctl", &["--user", "daemon-reload"])
    }

    pub(super) fn start(manager: Manager, path: &Path, dirs: &Dirs) -> Result<(), String> {
        match manager {
            Manager::Systemd => {
                reload(dirs)?;
                call("systemctl", &["--user", "enable", "--now", UNIT_NAME]).map(|_| ())
            }
            Manager::Launchd => {
                let domain = domain(dirs)?;
                // bootstrap refuses an agent already loaded: unload the old definition first.
                let _ = call("launchctl", &["bootout", &format!("{domain}/{LABEL}")]);
                let plist = path.display().to_string();
                call("launchctl", &["bootstrap", &domain, &plist]).map(|_| ())
            }
        }
    }

    pub(super) fn stop(manager: Manager, _path: &Path, dirs: &Dirs) -> Result<(), String> {
        match manager {
            Manager::Systemd => {
                call("systemctl", &["--user", "disable", "--now", UNIT_NAME]).map(|_| ())
            }
            Manager::Launchd => {
                let domain = domain(dirs)?;
                call("launchctl", &["bootout", &format!("{domain}/{LABEL}")]).map(|_| ())
            }
        }
    }

    pub(super) fn running(manager: Manager, dirs: &Dirs) -> Running {
        match manager {
            Manager::Systemd => {
                let out = Command::new("systemctl")
                    .args(["--user", "is-active", UNIT_NAME])
                    .output();
                match out {
                    Ok(o) => match String::from_utf8_lossy(&o.stdout).trim() {
                        "active" | "activating" | "reloading" => Running::Active,
                        "inactive" | "failed" | "deactivating" => Running::Inactive,
                        _ => Running::Unknown,
                    },
                    Err(_) => Running::Unknown,
                }
            }
            Manager::Launchd => match domain(dirs) {
                Ok(d) => match call("launchctl", &["print", &format!("{d}/{LABEL}")]) {
                    Ok(text) if text.contains("state = running") => Running::Active,
                    Ok(_) => Running::Inactive,
                    Err(_) => Running::Unknown,
                },
                Err(_) => Running::Unknown,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(home: &str) -> Spec {
        Spec {
            exe: PathBuf::from("/usr/local/bin/metasync"),
            home: PathBuf::from(home),
            config: None,
        }
    }

    #[test]
    fn exec_words_are_quoted_and_specifiers_escaped() {
        assert_eq!(systemd_word("/a b/c"), "\"/a b/c\"");
        assert_eq!(systemd_word("100%"), "\"100%%\"");
        assert_eq!(systemd_word("$HOME"), "\"$$HOME\"");
        assert_eq!(systemd_word("say \"hi\" \\"), "\"say \\\"hi\\\" \\\\\"");
    }

    #[test]
    fn the_unit_runs_the_daemon_on_the_home_and_its_config() {
        let mut s = spec("/home/ann/.metasystem");
        s.config = Some(PathBuf::from("/etc/metasync.toml"));
        let unit = render(Manager::Systemd, &s);
        assert!(unit.contains(
            "ExecStart=\"/usr/local/bin/metasync\" \"--home\" \"/home/ann/.metasystem\" \
             \"--config\" \"/etc/metasync.toml\" \"daemon\"\n"
        ));
        assert!(unit.contains("Nice=10\n"));
        assert!(unit.contains("WantedBy=default.target\n"));
    }

    #[test]
    fn plist_text_is_escaped() {
        let agent = render(Manager::Launchd, &spec("/Users/a&b/<home>"));
        assert!(agent.contains("<string>/Users/a&amp;b/&lt;home&gt;</string>"));
        assert!(agent.contains("/Users/a&amp;b/&lt;home&gt;/logs/daemon.err.log"));
        assert!(!agent.contains("a&b"));
    }

    #[test]
    fn unit_folders_follow_xdg_config_home() {
        let dirs = Dirs {
            user_home: PathBuf::from("/home/ann"),
            xdg_config_home: None,
        };
        assert_eq!(
            dirs.file(Manager::Systemd),
            PathBuf::from("/home/ann/.config/systemd/user/metasync.service")
        );
        assert_eq!(
            dirs.file(Manager::Launchd),
            PathBuf::from("/home/ann/Library/LaunchAgents/app.metasync.daemon.plist")
        );
        let xdg = Dirs {
            xdg_config_home: Some(PathBuf::from("/cfg")),
            ..dirs
        };
        assert_eq!(
            xdg.file(Manager::Systemd),
            PathBuf::from("/cfg/systemd/user/metasync.service")
        );
    }
}
