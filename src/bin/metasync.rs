//! The `metasync` command line: argument parsing and printing only.

use clap::{Parser, Subcommand};
use metasync::{Config, Engine, Error, Event, Mode, RunOptions, Strategy};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "metasync",
    version,
    about = "Keeps ~/.metasystem identical across your machines, losing nothing"
)]
struct Cli {
    /// The home folder (default ~/.metasystem).
    #[arg(long, global = true, env = "METASYNC_HOME")]
    home: Option<PathBuf>,
    /// The config file (default <home>/metasync.toml).
    #[arg(long, global = true, env = "METASYNC_CONFIG")]
    config: Option<PathBuf>,
    /// Print one JSON document on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Print every action as it happens.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    verbose: bool,
    /// Print only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the default config (refuses to overwrite).
    Init,
    /// Bidirectional sync.
    Sync {
        /// newest | local | remote | manual
        #[arg(long)]
        strategy: Option<Strategy>,
        /// Decide and report, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Local's version wins everywhere.
    Push {
        /// Decide and report, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Only local is written.
    Pull {
        /// newest | local | remote | manual
        #[arg(long)]
        strategy: Option<Strategy>,
        /// Decide and report, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Locations, availability, files, conflicts, last run.
    Status,
    /// SQLite integrity and table counts in every available location.
    Verify,
    /// List backups, newest first.
    Backups {
        /// Only backups of this synced file.
        file: Option<String>,
        /// Only backups in this location.
        #[arg(long)]
        location: Option<String>,
        /// Add entity/conversation counts for databases.
        #[arg(long)]
        counts: bool,
    },
    /// Put a backup back in place (the current version is backed up first).
    Restore {
        /// A backup id (from `backups`) or its path.
        backup: String,
        /// Check and report, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Write the version to this new file instead, touching no location.
        #[arg(long, value_name = "PATH")]
        to: Option<std::path::PathBuf>,
        /// Put back only these rows into the local database: a one-column key bare
        /// (`entities:12,13`), any key as the JSON array `history`/`diff` show
        /// (`tags:[1,"x"],[2,"y"]`).
        #[arg(long, value_name = "TABLE:KEY[,KEY...]", conflicts_with_all = ["to", "dry_run"])]
        rows: Option<String>,
    },
    /// Every kept version of a file, newest first, with what changed in each.
    History {
        /// The synced file.
        file: String,
    },
    /// Rows (databases) or lines (text) that differ between two versions.
    Diff {
        /// The synced file.
        file: String,
        /// The older version (an id from `history` or `backups`; default: the newest backup).
        a: Option<String>,
        /// The newer version (default: `current:local`, the local copy).
        b: Option<String>,
        /// Only this table's rows.
        #[arg(long)]
        table: Option<String>,
    },
    /// Unresolved conflicts (exit 3 while any remain).
    Conflicts,
    /// Settle a conflict with one location's version.
    Resolve {
        /// The synced file.
        file: String,
        /// The location whose version wins.
        #[arg(
            long,
            required_unless_present = "keep_rows",
            conflicts_with = "keep_rows"
        )]
        keep: Option<String>,
        /// Settle a row conflict row by row: the rows named (all, or those of --table, or
        /// those --keys of it) keep this location's value, the others the other side's.
        #[arg(long, value_name = "LOCATION")]
        keep_rows: Option<String>,
        /// With --keep-rows: only rows of this table.
        #[arg(long, requires = "keep_rows")]
        table: Option<String>,
        /// With --keep-rows: only rows with these keys (bare, or JSON arrays).
        #[arg(long, num_args = 1.., requires = "table")]
        keys: Vec<String>,
    },
    /// Apply the backup retention now.
    Prune {
        /// List what would be deleted or moved into the store, and the bytes freed; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Accept a remote whose identity marker is missing or different.
    Relink {
        /// The location.
        location: String,
    },
    /// Run the background loop, headless.
    Daemon {
        /// Seconds between runs (default: interval_secs from the config).
        #[arg(long)]
        interval: Option<u64>,
    },
    /// A self-contained walk-through in a temporary folder.
    Demo,
    /// Store an object store's access key in the system keychain (read from stdin: the key
    /// id on the first line, the secret on the second; prompted for on a terminal).
    Login {
        /// The object-store location.
        location: String,
    },
    /// Set the background loop up as a service (systemd user unit, LaunchAgent on macOS).
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
}

#[derive(Subcommand)]
enum ServiceAction {
    /// Write the service file and start it (again, if it was running).
    Install {
        /// Write the file only; don't ask the service manager to start it.
        #[arg(long)]
        files_only: bool,
        /// systemd | launchd (default: this platform's; another only with --files-only).
        #[arg(long)]
        manager: Option<ServiceManager>,
    },
    /// Stop the service and remove its file.
    Uninstall {
        /// Remove the file only; don't ask the service manager to stop it.
        #[arg(long)]
        files_only: bool,
        /// systemd | launchd (default: this platform's; another only with --files-only).
        #[arg(long)]
        manager: Option<ServiceManager>,
    },
    /// Whether the service is installed, current and running.
    Status {
        /// systemd | launchd (default: this platform's).
        #[arg(long)]
        manager: Option<ServiceManager>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ServiceManager {
    Systemd,
    Launchd,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({ "error": e.to_string(), "exit_code": e.exit_code() })
                );
            }
            eprintln!("metasync: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn init_logging(home: &std::path::Path, verbose: bool) -> metasync::logging::LogGuard {
    metasync::logging::init(home, "metasync", &[], verbose)
}

fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    );
}

fn run(cli: &Cli) -> Result<i32, Error> {
    let home = cli
        .home
        .clone()
        .unwrap_or_else(metasync::config::default_home);
    match &cli.command {
        Command::Init => return init(&home, cli),
        Command::Demo => {
            let mut out = std::io::stdout();
            return metasync::demo::run(&mut out).map(|_| 0);
        }
        _ => {}
    }
    let engine = Engine::open(&home, cli.config.as_deref())?;
    if let Command::Service { action } = &cli.command {
        // The config was checked by opening the engine: no service for a broken one.
        return service(&home, cli, action);
    }
    let _guard = init_logging(&home, cli.verbose);
    let human = !cli.json && !cli.quiet;
    let mut on_event = |e: &Event| {
        if human && !cli.verbose {
            if let Some(line) = metasync::text::event_line(e) {
                eprintln!("{line}");
            }
        }
    };
    dispatch(&engine, cli, &mut on_event)
}

/// Prints `value`: one JSON document with `--json`, else `human(value)` unless `--quiet`.
fn show<T: serde::Serialize>(cli: &Cli, value: &T, human: impl FnOnce(&T) -> String) {
    if cli.json {
        print_json(value);
    } else if !cli.quiet {
        print!("{}", human(value));
    }
}

/// Like [`show`], with `--json` printing `json(value)` (a command whose JSON is not the engine
/// type's own shape).
fn show_as<T: ?Sized>(
    cli: &Cli,
    value: &T,
    json: impl FnOnce(&T) -> serde_json::Value,
    human: impl FnOnce(&T) -> String,
) {
    if cli.json {
        print_json(&json(value));
    } else if !cli.quiet {
        print!("{}", human(value));
    }
}

/// Runs one engine command and shows what it returned; the exit code.
fn dispatch(engine: &Engine, cli: &Cli, on_event: &mut dyn FnMut(&Event)) -> Result<i32, Error> {
    use metasync::text;
    match &cli.command {
        Command::Init | Command::Demo | Command::Service { .. } => {
            Err(Error::Usage("handled before the engine".into()))
        }
        Command::Sync { strategy, dry_run } => {
            run_sync(engine, cli, Mode::Sync, *strategy, *dry_run, on_event)
        }
        Command::Push { dry_run } => run_sync(engine, cli, Mode::Push, None, *dry_run, on_event),
        Command::Pull { strategy, dry_run } => {
            run_sync(engine, cli, Mode::Pull, *strategy, *dry_run, on_event)
        }
        Command::Status => {
            show(cli, &engine.status_with_history()?, text::status);
            Ok(0)
        }
        Command::Verify => {
            let v = engine.verify()?;
            show(cli, &v, text::verify);
            Ok(v.exit_code)
        }
        Command::Backups {
            file,
            location,
            counts,
        } => {
            let list = engine.backups(file.as_deref(), location.as_deref(), *counts)?;
            show(cli, &list, |l| text::backups(l));
            Ok(0)
        }
        Command::Restore {
            backup,
            rows: Some(rows),
            ..
        } => restore_rows(engine, cli, backup, rows),
        Command::History { .. } | Command::Diff { .. } => versions(engine, cli),
        Command::Restore {
            backup,
            to: Some(to),
            ..
        } => {
            let b = engine.restore_to_path(backup, to)?;
            let written = serde_json::json!({ "backup": b, "written_to": to });
            show(cli, &written, |_| {
                format!("wrote {} to {}\n", b.id, to.display())
            });
            Ok(0)
        }
        Command::Restore {
            backup, dry_run, ..
        } => {
            let r = engine.restore(backup, *dry_run, on_event)?;
            show(cli, &r, text::restore);
            Ok(0)
        }
        Command::Conflicts => {
            let list = engine.conflicts()?;
            show(cli, &list, |l| text::conflicts(l));
            Ok(if list.is_empty() { 0 } else { 3 })
        }
        Command::Resolve {
            keep_rows: Some(location),
            file,
            table,
            keys,
            ..
        } => resolve_rows(
            engine,
            cli,
            file,
            location,
            (table.as_deref(), keys),
            on_event,
        ),
        Command::Resolve { file, keep, .. } => {
            let keep = keep.as_deref().unwrap_or_default();
            let r = engine.resolve(file, keep, on_event)?;
            show(cli, &r, text::run);
            Ok(r.exit_code)
        }
        Command::Prune { dry_run } => {
            show(cli, &engine.prune(*dry_run)?, text::prune);
            Ok(0)
        }
        Command::Relink { location } => {
            let r = engine.relink(location)?;
            show(cli, &r, |r| {
                format!(
                    "{} relinked (id {}); its files are compared afresh at the next sync\n",
                    r.location, r.id
                )
            });
            Ok(0)
        }
        Command::Daemon { interval } => daemon(engine, cli, *interval, on_event),
        Command::Login { location } => login(engine, cli, location),
    }
}

/// `history FILE` and `diff FILE [A] [B]`: a file's kept versions and what differs between two.
fn versions(engine: &Engine, cli: &Cli) -> Result<i32, Error> {
    use metasync::inspect::{json, text};
    match &cli.command {
        Command::History { file } => {
            let h = engine.history(file)?;
            show_as(cli, h.as_slice(), json::history_json, text::history);
        }
        Command::Diff { file, a, b, table } => {
            let d = engine.diff(file, a.as_deref(), b.as_deref(), table.as_deref())?;
            show_as(cli, &d, json::diff_json, text::diff);
        }
        _ => return Err(Error::Usage("not a history or diff command".into())),
    }
    Ok(0)
}

/// `restore ID --rows TABLE:KEY[,KEY...]`: only those rows, into the local database.
fn restore_rows(engine: &Engine, cli: &Cli, backup: &str, rows: &str) -> Result<i32, Error> {
    let (table, keys) = metasync::inspect::text::parse_rows_arg(rows)
        .ok_or_else(|| Error::Usage(format!("--rows {rows}: give TABLE:KEY[,KEY...]")))?;
    let r = engine.restore_rows(backup, &table, &keys)?;
    show(cli, &r, metasync::inspect::text::restore_rows);
    Ok(0)
}

/// `resolve FILE --keep-rows LOCATION [--table T [--keys K...]]`: a row conflict settled row
/// by row.
fn resolve_rows(
    engine: &Engine,
    cli: &Cli,
    file: &str,
    location: &str,
    (table, keys): (Option<&str>, &[String]),
    on_event: &mut dyn FnMut(&Event),
) -> Result<i32, Error> {
    let choices = engine.keep_rows_choices(file, location, table, keys)?;
    let r = engine.resolve_rows(file, &choices, on_event)?;
    show(cli, &r, metasync::text::run);
    Ok(r.exit_code)
}

/// `login NAME`: the key id and secret from stdin (or prompts), into the system keychain.
fn login(engine: &Engine, cli: &Cli, location: &str) -> Result<i32, Error> {
    use std::io::{BufRead, IsTerminal, Write};
    let configured = engine
        .config()
        .locations
        .iter()
        .find(|l| l.name == location);
    match configured {
        Some(l) if l.url.is_some() => {}
        Some(_) => {
            return Err(Error::Usage(format!(
            "location `{location}` is a folder; `login` is for object stores (`url = \"s3://…\"`)"
        )))
        }
        None => return Err(Error::Usage(format!("no location named `{location}`"))),
    }
    let stdin = std::io::stdin();
    let prompt = stdin.is_terminal();
    let mut lines = stdin.lock().lines();
    let mut ask = |what: &str| -> Result<String, Error> {
        if prompt {
            eprint!("{what} for {location}: ");
            let _ = std::io::stderr().flush();
        }
        match lines.next() {
            Some(Ok(l)) if !l.trim().is_empty() => Ok(l.trim().to_string()),
            Some(Err(e)) => Err(Error::Usage(format!(
                "cannot read the {what} from stdin: {e}"
            ))),
            _ => Err(Error::Usage(format!("no {what} given on stdin"))),
        }
    };
    let key_id = ask("access key id")?;
    let secret = ask("secret access key")?;
    metasync::objstore::login(location, &key_id, &secret).map_err(Error::Usage)?;
    let done = serde_json::json!({ "location": location, "stored": true });
    show(cli, &done, |_| {
        format!("the key for {location} is in the keychain\n")
    });
    Ok(0)
}

/// The background loop, headless: one line (or JSON document) per run.
fn daemon(
    engine: &Engine,
    cli: &Cli,
    interval: Option<u64>,
    on_event: &mut dyn FnMut(&Event),
) -> Result<i32, Error> {
    let secs = interval.unwrap_or(engine.config().interval_secs).max(1);
    loop {
        match engine.run(&RunOptions::default(), on_event) {
            Ok(r) if cli.json => println!("{}", serde_json::to_string(&r).unwrap_or_default()),
            Ok(r) if !cli.quiet => println!("{}", metasync::text::run_line(&r)),
            Ok(_) => {}
            Err(e) => eprintln!("metasync: {e}"),
        }
        std::thread::sleep(std::time::Duration::from_secs(secs));
    }
}

fn run_sync(
    engine: &Engine,
    cli: &Cli,
    mode: Mode,
    strategy: Option<Strategy>,
    dry_run: bool,
    on_event: &mut dyn FnMut(&Event),
) -> Result<i32, Error> {
    let r = engine.run(
        &RunOptions {
            mode,
            strategy,
            dry_run,
            summary_only: cli.quiet && !cli.json,
        },
        on_event,
    )?;
    if cli.json {
        print_json(&r);
    } else if !cli.quiet {
        print!("{}", metasync::text::run(&r));
    }
    Ok(r.exit_code)
}

fn init(home: &std::path::Path, cli: &Cli) -> Result<i32, Error> {
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| metasync::config::default_path(home));
    if path.exists() {
        return Err(Error::Usage(format!(
            "{} exists already; not overwriting it",
            path.display()
        )));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create folder", dir, e))?;
    }
    std::fs::write(&path, Config::template()).map_err(|e| Error::io("write config", &path, e))?;
    // A drive location whose volume this machine never saw (the built-in default's is the
    // seed's own): offer the volumes mounted now instead of a location never available.
    let (config, _) = Config::load(home, Some(&path))?;
    let offers = metasync::volumes::offers_for(home, &config)?;
    if cli.json {
        print_json(&serde_json::json!({
            "config": path.display().to_string(),
            "volume_offers": offers,
        }));
    } else if !cli.quiet {
        println!("wrote {}", path.display());
        for offer in &offers {
            println!("note: {}", offer.describe());
        }
    }
    Ok(0)
}

/// `service install|uninstall|status`: the daemon on this home as a systemd user unit or a
/// LaunchAgent.
fn service(home: &std::path::Path, cli: &Cli, action: &ServiceAction) -> Result<i32, Error> {
    use metasync::service::{self, Manager};
    let native = Manager::native();
    let pick = |m: &Option<ServiceManager>, files_only: bool| -> Result<Manager, Error> {
        let chosen = match m {
            None => native,
            Some(ServiceManager::Systemd) => Manager::Systemd,
            Some(ServiceManager::Launchd) => Manager::Launchd,
        };
        if chosen != native && !files_only {
            return Err(Error::Usage(format!(
                "service: this machine uses {native}; --manager {chosen} needs --files-only"
            )));
        }
        Ok(chosen)
    };
    let absolute =
        |p: &std::path::Path| std::path::absolute(p).map_err(|e| Error::io("resolve path", p, e));
    let exe = std::env::current_exe().map_err(|e| Error::io("find", "the metasync binary", e))?;
    let spec = service::Spec {
        exe,
        home: absolute(home)?,
        config: cli.config.as_deref().map(absolute).transpose()?,
    };
    let dirs = service::Dirs::from_env()?;
    let state = match action {
        ServiceAction::Install {
            files_only,
            manager,
        } => service::install(pick(manager, *files_only)?, &spec, &dirs, !files_only)?,
        ServiceAction::Uninstall {
            files_only,
            manager,
        } => service::uninstall(pick(manager, *files_only)?, &dirs, !files_only)?,
        ServiceAction::Status { manager } => service::status(pick(manager, true)?, &spec, &dirs),
    };
    show(cli, &state, metasync::text::service);
    Ok(0)
}
