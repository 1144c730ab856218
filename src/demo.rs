//! `metasync demo`: the product's story, told step by step in a temporary folder with two
//! machines, an iCloud-like folder and an external drive that comes and goes.

use crate::config::{Config, ConfigSource, LocationConfig, Strategy};
use crate::engine::{Engine, RunOptions};
use crate::error::{Error, IoContext, Result};
use crate::model::Outcome;
use crate::report::RunReport;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

struct Demo<'a> {
    out: &'a mut dyn Write,
    root: PathBuf,
    step: u32,
}

impl Demo<'_> {
    fn say(&mut self, text: &str) -> Result<()> {
        self.step += 1;
        writeln!(self.out, "\n{}. {text}", self.step).ctx("write", "stdout")
    }

    fn note(&mut self, text: &str) -> Result<()> {
        writeln!(self.out, "   {text}").ctx("write", "stdout")
    }

    fn engine(&self, machine: &str, external: bool) -> Result<Engine> {
        let mut locations = vec![LocationConfig {
            name: "icloud".into(),
            path: self
                .root
                .join("iCloud Drive/.metasystem")
                .display()
                .to_string(),
            mount_point: None,
            ..Default::default()
        }];
        if external {
            locations.push(LocationConfig {
                name: "external".into(),
                path: self.root.join("drive/.metasystem").display().to_string(),
                mount_point: None,
                ..Default::default()
            });
        }
        let config = Config {
            locations,
            strategy: Strategy::Newest,
            ..Config::default()
        };
        Engine::with_config(self.root.join(machine), config, ConfigSource::Defaults)
    }

    fn sync(&mut self, machine: &str, external: bool) -> Result<RunReport> {
        let engine = self.engine(machine, external)?;
        let report = engine.run(&RunOptions::default(), &mut |_| {})?;
        for a in report.actions.iter().filter(|a| a.done) {
            let line = format!(
                "{machine}: {} {} in {} {}",
                a.action, a.file, a.location, a.detail
            );
            self.note(&line)?;
        }
        // Why each written file won (a conflict settled by the strategy says so).
        for f in report
            .files
            .iter()
            .filter(|f| f.outcome == Outcome::Propagated)
        {
            let line = format!("{machine}: {} — {}", f.file, f.reason);
            self.note(&line)?;
        }
        for w in &report.warnings {
            let line = format!("{machine}: warning: {w}");
            self.note(&line)?;
        }
        if report.actions.is_empty() && report.warnings.is_empty() {
            self.note(&format!("{machine}: nothing to do, everything in sync"))?;
        }
        Ok(report)
    }
}

fn write_rules(path: &Path, text: &str, secs_ago: u64) -> Result<()> {
    std::fs::write(path, text).ctx("write", path)?;
    let f = std::fs::File::options()
        .write(true)
        .open(path)
        .ctx("open", path)?;
    f.set_modified(SystemTime::now() - Duration::from_secs(secs_ago))
        .ctx("set modification time", path)
}

/// Runs the walk-through, printing each step to `out`; everything lives in a temp folder.
pub fn run(out: &mut dyn Write) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("metasync-demo-")
        .tempdir()
        .ctx("create temp folder", std::env::temp_dir())?;
    let root = tmp.path().to_path_buf();
    for d in ["machine-a", "machine-b", "iCloud Drive", "drive"] {
        std::fs::create_dir_all(root.join(d)).ctx("create folder", root.join(d))?;
    }
    let mut demo = Demo {
        out,
        root: root.clone(),
        step: 0,
    };
    writeln!(demo.out, "Metasync demo in {}", root.display()).ctx("write", "stdout")?;

    let a_home = root.join("machine-a");
    let b_home = root.join("machine-b");
    demo.say(
        "Machine A has a knowledge graph (92 entities, 1 conversation) and its sorting rules.",
    )?;
    crate::sample::create_knowledge_graph(&a_home.join("metastore.db"), 92, 1)?;
    write_rules(&a_home.join("sorting-rules.yaml"), "inbox: triage\n", 3600)?;
    demo.sync("machine-a", true)?;

    demo.say("Machine B syncs for the first time and gets both files.")?;
    demo.sync("machine-b", false)?;

    demo.say("A edits the rules and syncs; B syncs and gets the edit.")?;
    write_rules(
        &a_home.join("sorting-rules.yaml"),
        "inbox: triage\nprojects: weekly\n",
        1800,
    )?;
    demo.sync("machine-a", true)?;
    demo.sync("machine-b", false)?;
    let got = std::fs::read_to_string(b_home.join("sorting-rules.yaml"))
        .ctx("read", b_home.join("sorting-rules.yaml"))?;
    demo.note(&format!("B's rules now: {}", got.replace('\n', " | ")))?;

    demo.say("The external drive is unplugged. Both machines edit the rules while apart (B's edit is newer).")?;
    std::fs::rename(root.join("drive"), root.join("drive-unplugged"))
        .ctx("rename", root.join("drive"))?;
    write_rules(
        &a_home.join("sorting-rules.yaml"),
        "inbox: triage\nprojects: daily   # A\n",
        600,
    )?;
    write_rules(
        &b_home.join("sorting-rules.yaml"),
        "inbox: triage\nprojects: monthly # B\n",
        300,
    )?;
    demo.sync("machine-a", true)?;
    demo.say("B syncs: both changed — a conflict. `newest` picks B's edit; A's version is kept as a backup.")?;
    demo.sync("machine-b", false)?;
    demo.sync("machine-a", true)?;
    let engine = demo.engine("machine-a", true)?;
    for b in engine.backups(Some("sorting-rules.yaml"), None, false)? {
        let text = std::fs::read_to_string(&b.path).unwrap_or_default();
        demo.note(&format!(
            "backup {} holds: {}",
            b.id,
            text.replace('\n', " | ")
        ))?;
    }

    demo.say("The drive is plugged back in: it catches up, without a false conflict.")?;
    std::fs::rename(root.join("drive-unplugged"), root.join("drive"))
        .ctx("rename", root.join("drive-unplugged"))?;
    let report = demo.sync("machine-a", true)?;
    if !report.conflicts.is_empty() {
        return Err(Error::Refused("the demo ended with a conflict".into()));
    }

    demo.say("`metasync status` on machine A:")?;
    let status = engine.status()?;
    let text = crate::text::status(&status);
    for line in text.lines() {
        demo.note(line)?;
    }
    writeln!(demo.out, "\nDone; the temporary folder is removed.").ctx("write", "stdout")?;
    Ok(())
}
