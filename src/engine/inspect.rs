//! What changed between kept versions: a file's timeline, the diff of two versions, putting
//! back chosen rows of an old version, and settling row conflicts row by row (issue 18).

use super::backups::Scratch;
use crate::error::{Error, Result};
use crate::inspect::rows::{diff_databases, DbDiff};
use crate::inspect::textdiff;
use crate::inspect::{
    ChangeSummary, Counts, Diff, HistoryEntry, RestoreRowsReport, RowChoice, TableRows,
    VersionKind, VersionRef, MAX_LISTED_ROWS,
};
use crate::report::{Event, RunReport};
use crate::Engine;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The id prefix of a location's current copy.
pub const CURRENT: &str = "current:";

/// A file of the engine's scratch folder, removed (with any journal beside it) on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
    }
}

/// One version, readable at `path` for as long as it lives.
struct Opened {
    vref: VersionRef,
    path: PathBuf,
    db: bool,
    size: u64,
    sha256: Option<String>,
    counts: Option<Counts>,
    /// For a current database: not copied yet, `path` is the live file.
    live: bool,
    _temp: Option<TempFile>,
    _scratch: Option<Scratch>,
}

impl Opened {
    /// A live database is read through a copy, made the first time its rows are needed.
    fn settle(&mut self, ctx: &crate::kind::ReadCtx) -> Result<()> {
        if !self.live {
            return Ok(());
        }
        std::fs::create_dir_all(&ctx.scratch)
            .map_err(|e| Error::io("create folder", &ctx.scratch, e))?;
        let name = format!("inspect-{}.db", crate::ids::random_hex(12));
        let tmp = TempFile(ctx.scratch.join(name));
        crate::inspect::rows::copy_database(&self.path, &tmp.0, ctx.sqlite.busy_timeout * 4)?;
        self.path = tmp.0.clone();
        self._temp = Some(tmp);
        self.live = false;
        Ok(())
    }
}

fn counts_of(t: &crate::sqlite::TableCounts) -> Counts {
    Counts {
        entities: t.entities(),
        conversations: t.conversations(),
        tables: t
            .0
            .iter()
            .map(|(table, rows)| TableRows {
                table: table.clone(),
                rows: *rows,
            })
            .collect(),
    }
}

fn parse_time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

impl Engine {
    /// Marks the backup `made` (in the location rooted at `root`) as a version a restore or
    /// resolve replaced: protected for `protect_days` whatever the schedule says.
    pub(crate) fn protect_replaced(&self, root: &Path, made: &Path) -> Result<()> {
        match made.strip_prefix(root).ok().and_then(|r| r.to_str()) {
            Some(rel) => crate::history::protect(
                root,
                rel,
                crate::history::policy::Protected::Replaced,
                self.clock().now(),
            ),
            None => Ok(()),
        }
    }

    fn check_synced(&self, file: &str) -> Result<()> {
        if self.selector().matches(file) {
            Ok(())
        } else {
            Err(Error::Usage(format!(
                "`{file}` is not a synced file (see `files` in the config)"
            )))
        }
    }

    /// The version `id` of `file` (a backup id, `current:LOCATION` or `current`), readable.
    fn open_version(&self, file: &str, id: &str) -> Result<Opened> {
        let loc = match id {
            "current" => Some(crate::location::LOCAL),
            _ => id.strip_prefix(CURRENT),
        };
        if let Some(loc) = loc {
            return self.open_current(file, loc);
        }
        let (_, of, path, entry, scratch) = self.find_version(id)?;
        if of != file {
            return Err(Error::Usage(format!(
                "`{id}` is a version of {of}, not of {file}"
            )));
        }
        if super::bucket_backups::is_object_path(&entry.path) {
            self.check_downloaded(&entry, &path)?;
        }
        let db = crate::sqlite::is_sqlite(&path)?;
        let counts = match db {
            true => crate::sqlite::table_counts(&path, &self.read_ctx().sqlite)
                .ok()
                .map(|c| counts_of(&c)),
            false => None,
        };
        let size = std::fs::metadata(&path)
            .map_err(|e| Error::io("read", &path, e))?
            .len();
        Ok(Opened {
            vref: VersionRef {
                id: entry.id.clone(),
                location: entry.location.clone(),
                created: entry.created.clone(),
            },
            path,
            db,
            size,
            sha256: entry.sha256.clone(),
            counts,
            live: false,
            _temp: None,
            _scratch: Some(scratch),
        })
    }

    /// A backup object downloaded to `path` passes the check `restore` makes before putting
    /// it back (a database's integrity check).
    fn check_downloaded(&self, entry: &crate::report::BackupEntry, path: &Path) -> Result<()> {
        let content = crate::kind::read_content(path, &self.read_ctx())?;
        if content.facts.integrity.is_empty() {
            return Ok(());
        }
        Err(Error::Refused(format!(
            "backup {} fails its integrity check ({}); not compared",
            entry.path,
            content.facts.integrity.join("; ")
        )))
    }

    /// The current copy of `file` in location `loc`: a database through a consistent snapshot.
    fn open_current(&self, file: &str, loc: &str) -> Result<Opened> {
        let (places, _) = self.available_places()?;
        let place = places
            .iter()
            .find(|p| p.loc.name == loc)
            .ok_or_else(|| Error::Usage(format!("no available location named `{loc}`")))?;
        let path = place.loc.path_of(file);
        let meta = std::fs::metadata(&path).map_err(|e| Error::io("read", &path, e))?;
        let mtime = meta.modified().map_err(|e| Error::io("read", &path, e))?;
        let vref = VersionRef {
            id: format!("{CURRENT}{loc}"),
            location: loc.to_string(),
            created: super::rfc3339(DateTime::<Utc>::from(mtime)),
        };
        // The version hash as a sync sees it: from the scan cache while the file is unchanged.
        let cache = match crate::archive::Archive::open_existing(self.home())? {
            Some(a) => a.cache(loc)?,
            None => Default::default(),
        };
        let sha256 = match crate::scan::scan_file(&path, cache.get(file), &self.read_ctx()) {
            crate::scan::Found::Present { content, .. } => Some(content.hash),
            _ => None,
        };
        let mut opened = Opened {
            vref,
            sha256,
            path: path.clone(),
            db: crate::sqlite::is_sqlite(&path)?,
            size: meta.len(),
            counts: None,
            live: false,
            _temp: None,
            _scratch: None,
        };
        if opened.db {
            // Counted in place, in one short read transaction; copied only when diffed.
            opened.counts = crate::sqlite::table_counts(&path, &self.read_ctx().sqlite)
                .ok()
                .map(|c| counts_of(&c));
            opened.live = true;
        }
        Ok(opened)
    }

    /// Every kept version of `file` in every available location (current copies, plain
    /// backups, stored versions), newest first, each with what changed against the next
    /// older one.
    pub fn history(&self, file: &str) -> Result<Vec<HistoryEntry>> {
        self.check_synced(file)?;
        let mut listed: Vec<(DateTime<Utc>, HistoryEntry)> = Vec::new();
        let (places, _) = self.available_places()?;
        for p in &places {
            let path = p.loc.path_of(file);
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let mtime = meta.modified().map_err(|e| Error::io("read", &path, e))?;
            let created = DateTime::<Utc>::from(mtime);
            listed.push((
                created,
                HistoryEntry {
                    id: format!("{CURRENT}{}", p.loc.name),
                    file: file.to_string(),
                    location: p.loc.name.clone(),
                    path: path.display().to_string(),
                    created: super::rfc3339(created),
                    size: meta.len(),
                    sha256: None,
                    protected: None,
                    counts: None,
                    kind: VersionKind::Current,
                    summary: ChangeSummary::First,
                },
            ));
        }
        for b in self.backups(Some(file), None, false)? {
            let kind = match b.stored {
                true => VersionKind::Stored,
                false => VersionKind::Plain,
            };
            listed.push((
                parse_time(&b.created),
                HistoryEntry {
                    id: b.id,
                    file: b.file,
                    location: b.location,
                    path: b.path,
                    created: b.created,
                    size: b.size,
                    sha256: b.sha256,
                    protected: b.protected,
                    counts: None,
                    kind,
                    summary: ChangeSummary::First,
                },
            ));
        }
        // Newest first: the current copies (each newer than any backup of its location, which
        // holds only versions it replaced), then the backups by when they were made.
        listed.sort_by_key(|(t, e)| (e.kind != VersionKind::Current, std::cmp::Reverse(*t)));
        let mut out: Vec<HistoryEntry> = listed.into_iter().map(|(_, e)| e).collect();
        self.summarise(file, &mut out);
        Ok(out)
    }

    /// Fills in each entry's counts and its change against the next older one (oldest first,
    /// holding two versions open at a time).
    fn summarise(&self, file: &str, entries: &mut [HistoryEntry]) {
        let mut older: Option<std::result::Result<Opened, String>> = None;
        for e in entries.iter_mut().rev() {
            let mut this = self
                .open_version(file, &e.id)
                .map_err(|err| err.to_string());
            if let Ok(o) = &mut this {
                e.counts = o.counts.clone();
                // The listing hashed the plain backups already.
                o.sha256 = o.sha256.take().or_else(|| e.sha256.clone());
                e.sha256 = o.sha256.clone();
            }
            e.summary = match (&mut older, &mut this) {
                (None, _) => ChangeSummary::First,
                (Some(Err(why)), _) | (_, Err(why)) => ChangeSummary::Unreadable {
                    reason: why.clone(),
                },
                (Some(Ok(a)), Ok(b)) => summary(a, b, &self.read_ctx()),
            };
            older = Some(this);
        }
    }

    /// The differences between versions `a` (default: the newest backup) and `b` (default:
    /// the current local copy) of `file`, ids as `history` and `backups` give them; `table`
    /// keeps only that table's rows.
    pub fn diff(
        &self,
        file: &str,
        a: Option<&str>,
        b: Option<&str>,
        table: Option<&str>,
    ) -> Result<Diff> {
        self.check_synced(file)?;
        let a = match a {
            Some(a) => a.to_string(),
            None => self
                .newest_backup_id(file)?
                .ok_or_else(|| Error::Usage(format!("{file} has no backup to compare with")))?,
        };
        let mut va = self.open_version(file, &a)?;
        let mut vb = self.open_version(file, b.unwrap_or("current"))?;
        va.settle(&self.read_ctx())?;
        vb.settle(&self.read_ctx())?;
        version_diff(file, &va, &vb, table)
    }

    /// Puts back only the rows of `table` with `keys` from version `id` into the current
    /// local database (see [`crate::inspect`] for the key format).
    pub fn restore_rows(
        &self,
        id: &str,
        table: &str,
        keys: &[String],
    ) -> Result<RestoreRowsReport> {
        if keys.is_empty() {
            return Err(Error::Usage(
                "give at least one key: --rows TABLE:KEY[,KEY...]".into(),
            ));
        }
        let _lock = self.lock("metasync restore --rows")?;
        let (_, file, old, entry, _scratch) = self.find_version(id)?;
        let (places, _) = self.available_places()?;
        let local = places
            .iter()
            .find(|p| p.loc.is_local())
            .ok_or_else(|| Error::Refused("the local home is not available".into()))?;
        let live = local.loc.path_of(&file);
        for (p, what) in [(&old, "the version"), (&live, "the current local copy")] {
            if !p.exists() || !crate::sqlite::is_sqlite(p)? {
                return Err(Error::Refused(format!(
                    "{what} of {file} ({}) is not a SQLite database; rows can only be restored into one",
                    p.display()
                )));
            }
        }
        let opts = crate::sqlite::SqliteOptions::from(&self.config().sqlite);
        let at = self.clock().now_local().naive_local();
        let made = crate::apply::backup(&live, at, crate::apply::BackupMethod::Snapshot, &opts)?;
        let put = match crate::inspect::restore::put_rows(&live, &old, table, keys, &opts) {
            Ok(put) => put,
            Err(e) => {
                // The backup holds the very version still in place: not worth keeping.
                let _ = std::fs::remove_file(&made);
                return Err(e);
            }
        };
        self.protect_replaced(&local.loc.root, &made)?;
        tracing::info!(target: "metasync", "{file} in local: {} of {table} restored from {}", crate::words::plural(keys.len() as u64, "row"), entry.id);
        Ok(RestoreRowsReport {
            backup: entry,
            restored_to: live.display().to_string(),
            table: table.to_string(),
            replaced: put.replaced,
            reinserted: put.reinserted,
            deleted: put.deleted,
            previous_backup: Some(made.display().to_string()),
        })
    }

    /// Settles a database conflict held by `manual` row by row: each held row takes the value
    /// of the location its choice names (one choice for every held row). The chosen values of
    /// other locations are first put into the local database (backed up before, the same
    /// checked transaction as `restore --rows`); then a row merge of the file where the local
    /// value wins every row still in conflict settles it and propagates the result.
    pub fn resolve_rows(
        &self,
        file: &str,
        choices: &[RowChoice],
        events: &mut dyn FnMut(&Event),
    ) -> Result<RunReport> {
        self.check_synced(file)?;
        let _lock = self.lock("metasync resolve")?;
        let conflict = self
            .conflicts()?
            .into_iter()
            .find(|c| c.file == file)
            .ok_or_else(|| Error::Refused(format!("no unresolved conflict on {file}")))?;
        if conflict.rows.is_empty() {
            return Err(Error::Refused(format!(
                "the conflict on {file} is not held row by row ({}); settle it with resolve --keep",
                conflict.reason
            )));
        }
        let picks = picks_for(file, &conflict.rows, choices)?;
        if !picks.is_empty() {
            self.put_chosen_rows(file, &picks)?;
        }
        let ask = super::run::Ask {
            command: "resolve",
            direction: crate::plan::Direction::Sync(crate::Strategy::Local),
            strategy: crate::Strategy::Local,
            only: Some(file),
            dry_run: false,
            summary_only: false,
        };
        self.execute(ask, events)
    }

    /// The choices `resolve FILE --keep-rows LOCATION [--table T] [--keys K...]` stands for:
    /// the held rows it names (all of them, those of table T, or those keys of T; keys as
    /// [`crate::inspect`] spells them, or bare) keep LOCATION's value; every other held row
    /// keeps the value of the one other location that changed it (refused when there are
    /// several).
    pub fn keep_rows_choices(
        &self,
        file: &str,
        keep: &str,
        table: Option<&str>,
        keys: &[String],
    ) -> Result<Vec<RowChoice>> {
        let conflict = self
            .conflicts()?
            .into_iter()
            .find(|c| c.file == file)
            .ok_or_else(|| Error::Refused(format!("no unresolved conflict on {file}")))?;
        let named = |r: &crate::merge::RowConflict| {
            table.is_none_or(|t| t == r.table)
                && (keys.is_empty() || keys.iter().any(|k| key_named(k, &r.key)))
        };
        let mut out = Vec::new();
        for r in &conflict.rows {
            let location = if named(r) {
                keep.to_string()
            } else {
                let others: Vec<&String> = r
                    .values
                    .iter()
                    .map(|(l, _)| l)
                    .filter(|l| *l != keep)
                    .collect();
                match others.as_slice() {
                    [one] => (*one).clone(),
                    _ => {
                        return Err(Error::Refused(format!(
                            "row {} {} of {file} was changed in more than two locations; name it with --table and --keys",
                            r.table, r.key
                        )))
                    }
                }
            };
            out.push(RowChoice {
                table: r.table.clone(),
                key: r.key.clone(),
                location,
            });
        }
        if !keys.is_empty() && !conflict.rows.iter().any(named) {
            return Err(Error::Refused(format!(
                "no held row of {file} has the keys {}",
                keys.join(", ")
            )));
        }
        Ok(out)
    }

    /// Puts the rows chosen from other locations (location → table → keys) into the local
    /// database, after one backup of it.
    fn put_chosen_rows(&self, file: &str, picks: &Picks) -> Result<()> {
        let (places, _) = self.available_places()?;
        let local = places
            .iter()
            .find(|p| p.loc.is_local())
            .ok_or_else(|| Error::Refused("the local home is not available".into()))?;
        let live = local.loc.path_of(file);
        let opts = crate::sqlite::SqliteOptions::from(&self.config().sqlite);
        let at = self.clock().now_local().naive_local();
        let made = crate::apply::backup(&live, at, crate::apply::BackupMethod::Snapshot, &opts)?;
        self.protect_replaced(&local.loc.root, &made)?;
        for (loc, tables) in picks {
            let source = self.open_current(file, loc)?;
            for (table, keys) in tables {
                crate::inspect::restore::put_rows(&live, &source.path, table, keys, &opts)?;
            }
        }
        Ok(())
    }
}

/// The rows to take from locations other than local: location → table → keys.
type Picks = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// Whether `wanted` (a JSON array of key values, or one bare value) names the key `canon`.
fn key_named(wanted: &str, canon: &str) -> bool {
    if same_key(wanted, canon) {
        return true;
    }
    match serde_json::from_str::<serde_json::Value>(canon) {
        Ok(serde_json::Value::Array(v)) if v.len() == 1 => match &v[0] {
            serde_json::Value::Number(n) => n.to_string() == wanted,
            serde_json::Value::String(t) => t == wanted,
            _ => false,
        },
        _ => false,
    }
}

fn same_key(a: &str, b: &str) -> bool {
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
    a == b || parse(a).is_some_and(|x| parse(b).is_some_and(|y| x == y))
}

/// Checks that `choices` name every held row once, each a location that changed it; the rows
/// to take from other locations than local.
fn picks_for(
    file: &str,
    rows: &[crate::merge::RowConflict],
    choices: &[RowChoice],
) -> Result<Picks> {
    let mut picks = Picks::new();
    let mut missing = Vec::new();
    for row in rows {
        let Some(c) = choices
            .iter()
            .find(|c| c.table == row.table && same_key(&c.key, &row.key))
        else {
            missing.push(format!("{} {}", row.table, row.key));
            continue;
        };
        if !row.values.iter().any(|(l, _)| *l == c.location) {
            let locs: Vec<&str> = row.values.iter().map(|(l, _)| l.as_str()).collect();
            return Err(Error::Refused(format!(
                "row {} {} of {file} was changed in {}, not in {}",
                row.table,
                row.key,
                locs.join(" and "),
                c.location
            )));
        }
        if c.location != crate::location::LOCAL {
            picks
                .entry(c.location.clone())
                .or_default()
                .entry(row.table.clone())
                .or_default()
                .push(row.key.clone());
        }
    }
    if !missing.is_empty() {
        return Err(Error::Refused(format!(
            "choose a location for every held row of {file}; not chosen: {}",
            missing.join(", ")
        )));
    }
    Ok(picks)
}

/// What changed from `a` to `b`, counted.
fn summary(a: &mut Opened, b: &mut Opened, ctx: &crate::kind::ReadCtx) -> ChangeSummary {
    if a.sha256.is_some() && a.sha256 == b.sha256 {
        return ChangeSummary::Same;
    }
    if let Err(e) = a.settle(ctx).and_then(|()| b.settle(ctx)) {
        return ChangeSummary::Unreadable {
            reason: e.to_string(),
        };
    }
    if a.db && b.db {
        return match diff_databases(&a.path, &b.path, None, 0) {
            Ok(d) => ChangeSummary::Database {
                tables: d.tables.into_iter().map(|t| t.summary).collect(),
                schema: d.schema,
            },
            Err(e) => ChangeSummary::Unreadable {
                reason: e.to_string(),
            },
        };
    }
    match (read_text(&a.path), read_text(&b.path)) {
        (Ok(Some(x)), Ok(Some(y))) if !a.db && !b.db => {
            let (lines_added, lines_removed) = textdiff::line_counts(&x, &y);
            ChangeSummary::Text {
                lines_added,
                lines_removed,
            }
        }
        (Err(e), _) | (_, Err(e)) => ChangeSummary::Unreadable {
            reason: e.to_string(),
        },
        _ => ChangeSummary::Binary {
            size_before: a.size,
            size_after: b.size,
        },
    }
}

/// The file's content as text, when it is text.
fn read_text(path: &Path) -> Result<Option<String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    Ok(textdiff::as_text(&bytes).map(str::to_string))
}

/// The diff of two opened versions.
fn version_diff(file: &str, va: &Opened, vb: &Opened, table: Option<&str>) -> Result<Diff> {
    let (a, b, file) = (va.vref.clone(), vb.vref.clone(), file.to_string());
    if va.db && vb.db {
        let DbDiff {
            tables,
            schema,
            counts,
        } = diff_databases(&va.path, &vb.path, table, MAX_LISTED_ROWS)?;
        return Ok(Diff::Database {
            file,
            a,
            b,
            tables,
            schema,
            counts,
        });
    }
    if let (false, false, Some(x), Some(y)) =
        (va.db, vb.db, read_text(&va.path)?, read_text(&vb.path)?)
    {
        let (added, removed) = textdiff::line_counts(&x, &y);
        let unified = textdiff::unified(&x, &y, &a.id, &b.id);
        return Ok(Diff::Text {
            file,
            a,
            b,
            unified,
            added,
            removed,
        });
    }
    let same = match (&va.sha256, &vb.sha256) {
        (Some(x), Some(y)) if va.db == vb.db => x == y,
        _ => crate::kind::sha256_file(&va.path)? == crate::kind::sha256_file(&vb.path)?,
    };
    Ok(Diff::Binary {
        file,
        a,
        b,
        size_a: va.size,
        size_b: vb.size,
        same,
    })
}
