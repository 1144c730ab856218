//! The engine's SQLite primitives (SPEC §6): recognising a database, taking a consistent
//! snapshot of a live one through the online backup API, its logical hash, the integrity
//! gate, table counts, live-safe writes into a database another program holds open, and the
//! shrink guard.
//!
//! Every function opens its own connection and closes it before returning. The user's
//! database is only ever opened read-only for reading (`SQLITE_OPEN_READONLY`, with
//! checkpoint-on-close disabled as well), so closing Metasync's connection never checkpoints
//! it or removes its `-wal`. One caveat of SQLite itself: a read-only connection to a
//! WAL-mode database whose `-wal`/`-shm` do not exist creates them (empty) when the folder is
//! writable; it never writes database content.
//!
//! # The logical hash
//!
//! [`logical_hash`] is a SHA-256 (hex) over a byte stream built like SQLite's `dbhash`, read
//! in one read transaction:
//!
//! 1. the tag `metasync-logical-hash-v1\0`;
//! 2. `PRAGMA user_version` and `PRAGMA application_id` (applications use them to mark schema
//!    migrations; both survive VACUUM and backup copies);
//! 3. the schema: every `sqlite_schema` row (`type`, `name`, `tbl_name`, `sql` — `rootpage`
//!    is left out because VACUUM changes it), sorted by (`type`, `name`) bytewise, the `sql`
//!    text exactly as stored (nothing normalised);
//! 4. the rows of every table with storage, tables sorted by name bytewise. Included:
//!    every ordinary table and `sqlite_sequence` (it decides the next AUTOINCREMENT id, so it
//!    is part of what the database means), and the shadow tables of virtual tables (FTS
//!    indexes are stored there). Left out: `sqlite_stat1`…`sqlite_stat4` (ANALYZE /
//!    `PRAGMA optimize` statistics, rewritten without any data changing) and the virtual
//!    tables themselves (their content is their shadow tables', and their module may be
//!    missing). Rows of a rowid table are taken in rowid order; the rowid itself is hashed
//!    only when it is a column (`INTEGER PRIMARY KEY`), because VACUUM may renumber the
//!    rowids of other tables. Rows of a `WITHOUT ROWID` table are taken in PRIMARY KEY order
//!    (with the key's own collations and directions). Indexes are not hashed: they follow
//!    from the rows.
//!
//! Every item is length-prefixed and type-tagged, so no two different databases give the same
//! stream: `N` NULL; `I` + 8-byte big-endian i64; `F` + the 8 big-endian bytes of the IEEE-754
//! double (exact); `T` + u64 length + UTF-8 bytes; `B` + u64 length + bytes. So integer `1`,
//! text `'1'` and real `1.0` differ, and NULL differs from an empty blob or text.

mod backup;
mod conn;
mod counts;
mod files;
mod hash;
mod pages;
mod patch;
mod records;

use backup::*;
use conn::*;
use counts::*;
pub(crate) use files::read_up_to;
use files::*;
use hash::*;
pub(crate) use pages::changed_rowid_ranges;
pub use patch::{rewrite_to_match, Rewritten};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::config::DbConfig;
use rusqlite::types::ValueRef;
use rusqlite::{ffi, Connection, ErrorCode, OpenFlags};
use sha2::{Digest, Sha256};

use crate::config::SqliteConfig;
use crate::error::{Error, IoContext, Result};

/// The 16 bytes every SQLite database file begins with.
pub const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Tag that starts the logical hash's byte stream; bump it when the stream's format changes.
const HASH_TAG: &[u8] = b"metasync-logical-hash-v1\0";

/// Options for SQLite handling (built by the engine from config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// How long one attempt waits for another connection's lock.
    pub busy_timeout: Duration,
    /// Above this file size `quick_check` replaces `integrity_check`.
    pub quick_check_above_bytes: u64,
    /// How many times a backup step that found the database busy is attempted in all.
    pub max_snapshot_attempts: u32,
    /// Run snapshots ([`scratch_snapshot`] with a `base_copy`) of databases under this folder
    /// (the home, whose new versions go to the remotes) get their second, independent copy.
    /// Set by [`crate::kind::ReadCtx::new`] when row merges keep bases; `None`: never.
    pub base_copy_under: Option<PathBuf>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            busy_timeout: Duration::from_secs(5),
            quick_check_above_bytes: 512 * 1024 * 1024,
            max_snapshot_attempts: 5,
            base_copy_under: None,
        }
    }
}

impl From<&SqliteConfig> for SqliteOptions {
    fn from(c: &SqliteConfig) -> Self {
        SqliteOptions {
            busy_timeout: Duration::from_millis(c.busy_timeout_ms),
            quick_check_above_bytes: c.quick_check_above_mb.saturating_mul(1024 * 1024),
            ..SqliteOptions::default()
        }
    }
}

/// What [`snapshot`] learnt about the snapshot it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The snapshot's [`logical_hash`] (hex SHA-256). For a snapshot that fails its integrity
    /// check and cannot be read row by row, a domain-separated SHA-256 of its bytes instead.
    pub logical_hash: String,
    /// The snapshot's integrity check.
    pub integrity: Integrity,
    /// Row counts of its user tables (empty when a corrupt snapshot cannot be counted).
    pub counts: TableCounts,
    /// The snapshot file's size in bytes.
    pub size: u64,
}

/// The result of SQLite's integrity check on a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integrity {
    /// Whether the check reported `ok`.
    pub ok: bool,
    /// What the check reported when not ok (empty when ok).
    pub messages: Vec<String>,
    /// Whether `quick_check` ran instead of the full `integrity_check`.
    pub quick: bool,
}

impl Integrity {
    /// `"ok"`, or the messages joined by `"; "` (for reports).
    pub fn summary(&self) -> String {
        if self.ok {
            "ok".to_string()
        } else {
            self.messages.join("; ")
        }
    }

    fn failed(message: impl Into<String>, quick: bool) -> Self {
        Integrity {
            ok: false,
            messages: vec![message.into()],
            quick,
        }
    }
}

/// Row counts of every user table (not `sqlite_*`), `entities` and `conversations` first when
/// present, then the rest by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableCounts(pub Vec<(String, u64)>);

impl TableCounts {
    /// The row count of `table` (table names compare ASCII-case-insensitively, as in SQLite).
    pub fn get(&self, table: &str) -> Option<u64> {
        self.0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(table))
            .map(|&(_, n)| n)
    }

    /// The row count of `entities`, when the table exists.
    pub fn entities(&self) -> Option<u64> {
        self.get("entities")
    }

    /// The row count of `conversations`, when the table exists.
    pub fn conversations(&self) -> Option<u64> {
        self.get("conversations")
    }
}

/// Creates a new database at `path` (absent or empty) filled by `fill`, closed and fsynced;
/// on failure no half-made database is left behind.
pub(crate) fn create_with(
    path: &Path,
    fill: impl FnOnce(&mut Connection) -> rusqlite::Result<()>,
) -> Result<()> {
    let mut conn = open_read_write(path, &SqliteOptions::default(), true)?;
    if let Err(e) = fill(&mut conn) {
        drop(conn);
        remove_with_side_files(path);
        return Err(Error::sqlite("fill", path, e));
    }
    close(conn, path)?;
    fsync_file_and_dir(path)
}

/// Whether the file begins with the 16-byte header `SQLite format 3\0` (false for shorter or
/// other files and for a missing file; Err only on another I/O error).
pub fn is_sqlite(path: &Path) -> Result<bool> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let mut buf = [0u8; 16];
    let n = read_up_to(&mut f, &mut buf).ctx("read", path)?;
    Ok(n == buf.len() && &buf == SQLITE_HEADER)
}

/// Whether an error is SQLite saying the database is corrupt or not a database at all
/// (`SQLITE_CORRUPT`, `SQLITE_NOTADB`), as opposed to an I/O, lock or usage problem.
pub fn is_corruption(err: &Error) -> bool {
    match err {
        Error::Sqlite { source, .. } => is_corrupt_code(source),
        _ => false,
    }
}

/// Takes a consistent snapshot of the database at `src` into a new file `dest` (which must
/// not exist), through the online backup API in one step (all pages at once) with the busy
/// timeout, `src` opened read-only. A step that finds the database busy is retried up to
/// `max_snapshot_attempts` times in all, after which the error says the database never held
/// still. The snapshot is then converted to one self-contained file in rollback-journal mode
/// (`journal_mode=DELETE`), fsynced, and described. On error no `dest` is left behind.
///
/// A damaged source is usually copied as it is and described with `integrity.ok == false`;
/// one SQLite cannot even copy (not a database, truncated) gives an error for which
/// [`is_corruption`] is true — [`integrity`] of the source then says what is wrong.
pub fn snapshot(src: &Path, dest: &Path, opts: &SqliteOptions) -> Result<SnapshotInfo> {
    explained(snapshot_into(src, dest, opts, true, None))
}

/// [`snapshot`] for a scratch snapshot of the run (hashed, checked, then copied, or moved by
/// a hard link, somewhere else by the caller): the same, but its folder is not fsynced (a
/// crash discards scratch snapshots anyway). The file itself is fsynced while it is checked
/// and hashed (the disk writes overlap the reads), so that moving it into place later needs no
/// further data writes.
///
/// With `base_copy`, a second file (which must not exist) gets a byte copy of the snapshot,
/// also fsynced, made while the snapshot is checked: one full copy that would otherwise be
/// made (and waited for) later, when the snapshot itself goes into a remote and the row-merge
/// base needs a file of its own. The copy is best effort: when it cannot be made, `base_copy`
/// does not exist afterwards (never half-written), and the snapshot is unaffected.
pub fn scratch_snapshot(
    src: &Path,
    dest: &Path,
    opts: &SqliteOptions,
    base_copy: Option<&Path>,
) -> Result<SnapshotInfo> {
    explained(snapshot_into(src, dest, opts, false, base_copy))
}

fn snapshot_into(
    src: &Path,
    dest: &Path,
    opts: &SqliteOptions,
    durable: bool,
    base_copy: Option<&Path>,
) -> Result<SnapshotInfo> {
    for side in side_files(dest) {
        if side.exists() {
            return Err(Error::Refused(format!(
                "cannot snapshot into {}: {} already exists",
                dest.display(),
                side.display()
            )));
        }
    }
    let src_conn = open_read_only(src, opts)?;
    // Created exclusively: an existing file is never overwritten, even in a race.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .ctx("create snapshot", dest)?;
    let taken = take_snapshot(&src_conn, src, dest, opts)
        .and_then(|()| close(src_conn, src))
        .and_then(|()| describe_snapshot(dest, opts, durable, base_copy));
    if taken.is_err() {
        remove_with_side_files(dest);
    }
    taken
}

/// Describes the database file `path` as it is at rest — a file nobody writes, such as a
/// plain backup — like a [`snapshot`] describes its copy, but reading the file itself
/// (read-only; no copy, nothing written). A damaged file gives `integrity.ok == false`.
pub fn describe_at_rest(path: &Path, opts: &SqliteOptions) -> Result<SnapshotInfo> {
    explained(backup::describe_in_place(path, opts))
}

/// Logical hash (hex SHA-256) over the schema and rows of the database at `db`, read-only and
/// in one read transaction; see the [module documentation](self) for its exact definition.
pub fn logical_hash(db: &Path, opts: &SqliteOptions) -> Result<String> {
    explained(logical_hash_inner(db, opts))
}

fn logical_hash_inner(db: &Path, opts: &SqliteOptions) -> Result<String> {
    hash_and_count(db, opts, false).map(|(hash, _)| hash)
}

/// [`logical_hash`] and, from the same pass over the rows, [`table_counts`]: one read of the
/// database instead of two.
pub fn logical_hash_and_counts(db: &Path, opts: &SqliteOptions) -> Result<(String, TableCounts)> {
    explained(hash_and_count(db, opts, false))
}

/// The logical hash and, from the same pass over the rows, the table counts (what
/// [`table_counts`] gives), read-only and in one read transaction.
/// With `raw`, `db` is a snapshot nothing writes, whose rows may be read from its pages (see
/// [`hash_connection`]).
fn hash_and_count(db: &Path, opts: &SqliteOptions, raw: bool) -> Result<(String, TableCounts)> {
    let conn = open_read_only(db, opts)?;
    let hashed = in_read_txn(&conn, db, "hash", |c| hash_connection(c, db, raw))?;
    close(conn, db)?;
    Ok(hashed)
}

/// `PRAGMA integrity_check` (`quick_check` when the file is larger than
/// `quick_check_above_bytes`). A file that is not a database, is truncated or has a damaged
/// page gives `Ok` with `ok == false` and SQLite's messages; `Err` only for I/O problems such
/// as a missing file, or a lock that outlasted the busy timeout.
pub fn integrity(db: &Path, opts: &SqliteOptions) -> Result<Integrity> {
    explained(integrity_inner(db, opts))
}

fn integrity_inner(db: &Path, opts: &SqliteOptions) -> Result<Integrity> {
    let meta = std::fs::metadata(db).ctx("check integrity of", db)?;
    let quick = meta.len() > opts.quick_check_above_bytes;
    if !is_sqlite(db)? {
        return Ok(Integrity::failed(
            "file is not a database (no SQLite header)",
            quick,
        ));
    }
    let conn = open_read_only(db, opts)?;
    let pragma = if quick {
        "PRAGMA quick_check"
    } else {
        "PRAGMA integrity_check"
    };
    let checked = (|| -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare(pragma)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut messages = Vec::new();
        for row in rows {
            // Newer SQLite returns several problems in one row, one per line, under a
            // "*** in database main ***" heading.
            messages.extend(
                row?.lines()
                    .filter(|l| !l.trim().is_empty() && !l.starts_with("*** in database "))
                    .map(str::to_string),
            );
        }
        Ok(messages)
    })();
    let result = match checked {
        Ok(messages) if messages.len() == 1 && messages[0] == "ok" => Integrity {
            ok: true,
            messages: Vec::new(),
            quick,
        },
        Ok(messages) if messages.is_empty() => {
            Integrity::failed("integrity check returned nothing", quick)
        }
        Ok(messages) => Integrity {
            ok: false,
            messages,
            quick,
        },
        Err(e) if is_corrupt_code(&e) => Integrity::failed(e.to_string(), quick),
        Err(e) => return Err(Error::sqlite("check integrity of", db, e)),
    };
    // A corrupt file can make closing complain too; the verdict above is what matters.
    let _ = conn.close();
    Ok(result)
}

/// Row counts of every user table of `db` (not `sqlite_*`, not virtual tables; the shadow
/// tables of virtual tables count as user tables), read-only in one read transaction,
/// `entities` and `conversations` first, then the rest by name.
pub fn table_counts(db: &Path, opts: &SqliteOptions) -> Result<TableCounts> {
    explained(table_counts_inner(db, opts))
}

fn table_counts_inner(db: &Path, opts: &SqliteOptions) -> Result<TableCounts> {
    let conn = open_read_only(db, opts)?;
    let counts = in_read_txn(&conn, db, "count rows of", |c| count_tables(c, db))?;
    close(conn, db)?;
    Ok(counts)
}

/// Writes the database `src` (a snapshot file) into the database file `dest` through the
/// backup API — `dest` opened read-write in place (created when missing), under SQLite's own
/// locking, busy timeout, one step — so that another process holding `dest` open sees the new
/// content and nothing it commits afterwards is lost. Works when `dest` is in WAL mode and
/// open elsewhere (its journal mode is kept); when a WAL `dest` has another page size, `src`
/// is first converted to it in a temporary copy beside `src`.
///
/// Afterwards `logical_hash(dest)` must equal `logical_hash(src)`, else `Err`. The one
/// exception: when another connection committed to `dest` around the write (between just
/// before it and the check, as seen through `PRAGMA data_version` on Metasync's connection),
/// the hashes cannot be compared; then a passing `quick_check` of `dest` is required instead,
/// and a warning is logged.
///
/// A `dest` that SQLite cannot read as a database at all (not a database, damaged first page)
/// cannot be written this way: the error then satisfies [`is_corruption`] and `dest` is left
/// as it was. A `dest` with damage further in is overwritten whole and healthy afterwards.
pub fn write_live(src: &Path, dest: &Path, opts: &SqliteOptions) -> Result<()> {
    let expected = logical_hash(src, opts)?;
    let created = match std::fs::symlink_metadata(dest) {
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(Error::io("write into", dest, e)),
    };
    let written = explained(write_live_inner(src, dest, &expected, opts));
    if written.is_err() && created {
        // Never leave an empty or half-written database where there was none.
        remove_with_side_files(dest);
    }
    written
}

fn write_live_inner(src: &Path, dest: &Path, expected: &str, opts: &SqliteOptions) -> Result<()> {
    let src_conn = open_read_only(src, opts)?;
    let mut dst = open_read_write(dest, opts, true)?;
    let err = |e| Error::sqlite("write into", dest, e);

    let dest_mode: String = dst
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(err)?;
    let dest_page_size: i64 = dst
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(err)?;
    let src_page_size: i64 = src_conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(|e| Error::sqlite("read", src, e))?;

    // The backup API cannot change the page size of a WAL destination: convert a copy.
    let converted = if dest_mode.eq_ignore_ascii_case("wal") && dest_page_size != src_page_size {
        Some(with_page_size(src, dest_page_size, opts)?)
    } else {
        None
    };
    let (from_conn, from_path) = match &converted {
        Some((_dir, path, conn)) => (conn, path.as_path()),
        None => (&src_conn, src),
    };

    let version_before = data_version(&dst).map_err(err)?;
    run_backup(
        from_conn,
        from_path,
        &mut dst,
        dest,
        "write into",
        dest,
        opts,
    )?;
    let (version_after, actual) = in_read_txn(&dst, dest, "verify", |c| {
        let v = data_version(c).map_err(|e| Error::sqlite("verify", dest, e))?;
        Ok((v, hash_connection(c, dest, false)?.0))
    })?;
    close(dst, dest)?;
    drop(converted);
    close(src_conn, src)?;

    if actual == expected {
        return Ok(());
    }
    if version_after != version_before {
        let check = integrity(
            dest,
            &SqliteOptions {
                quick_check_above_bytes: 0,
                ..opts.clone()
            },
        )?;
        if check.ok {
            tracing::warn!(
                dest = %dest.display(),
                "another program wrote to the database right after Metasync did; \
                 its logical hash could not be compared (quick_check passed)"
            );
            return Ok(());
        }
        return Err(Error::Refused(format!(
            "{} failed its check after being written: {}",
            dest.display(),
            check.summary()
        )));
    }
    Err(Error::Refused(format!(
        "{} does not hold what was written into it: logical hash {actual}, expected {expected} (from {})",
        dest.display(),
        src.display()
    )))
}

/// Converts the database file `db` (e.g. a temp copy about to be renamed into a remote) to
/// rollback-journal mode (`journal_mode=DELETE`) so that it is one self-contained file, and
/// fsyncs it. Fails when another connection keeps it in WAL mode.
pub fn make_self_contained(db: &Path, opts: &SqliteOptions) -> Result<()> {
    std::fs::metadata(db).ctx("open", db)?;
    let conn = open_read_write(db, opts, false)?;
    to_rollback_journal(&conn, db)?;
    close(conn, db)?;
    check_self_contained(db)?;
    fsync_file_and_dir(db)
}

/// Shrink guard (pure): `Some(reason)` when `entities` or `conversations` fell from
/// `previous` to `new` by more than `max_shrink_percent` percent (e.g. `"entities fell from
/// 92 to 10 (-89%)"`), `None` otherwise. A table absent from `previous`, or with 0 rows there,
/// is never a shrink; a table absent from `new` counts as 0 rows.
pub fn shrink_reason(
    previous: &TableCounts,
    new: &TableCounts,
    max_shrink_percent: u32,
) -> Option<String> {
    let reasons: Vec<String> = ["entities", "conversations"]
        .iter()
        .filter_map(|&table| {
            let before = previous.get(table).filter(|&n| n > 0)?;
            let after = new.get(table).unwrap_or(0);
            if after >= before {
                return None;
            }
            let fell = u128::from(before - after);
            // fell / before > max / 100, exactly, in integers.
            if fell * 100 <= u128::from(max_shrink_percent) * u128::from(before) {
                return None;
            }
            let percent = (before - after) as f64 * 100.0 / before as f64;
            let shown = if percent.round() <= f64::from(max_shrink_percent) {
                format!("{percent:.1}")
            } else {
                format!("{percent:.0}")
            };
            Some(format!("{table} fell from {before} to {after} (-{shown}%)"))
        })
        .collect();
    if reasons.is_empty() {
        None
    } else {
        Some(reasons.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{create_knowledge_graph, Rng};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    fn opts() -> SqliteOptions {
        SqliteOptions::default()
    }

    fn rw(path: &Path) -> Connection {
        let c = Connection::open(path).expect("open");
        c.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        c
    }

    fn count(path: &Path, table: &str) -> i64 {
        rw(path)
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .expect("count")
    }

    fn file_sha(path: &Path) -> String {
        hex(&Sha256::digest(std::fs::read(path).expect("read")))
    }

    fn journal_mode(path: &Path) -> String {
        rw(path)
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("journal_mode")
    }

    /// Closes `c` without the checkpoint-on-close, so its committed frames stay in the -wal.
    fn close_keeping_wal(c: Connection) {
        c.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .expect("no ckpt on close");
        c.close().map_err(|(_, e)| e).expect("close");
    }

    /// A database with every kind of table the hash treats differently, in WAL mode, with
    /// its rows still in the -wal when the returned connection is closed with
    /// `close_keeping_wal`.
    fn rich_wal_db(path: &Path) -> Connection {
        let c = rw(path);
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
             CREATE TABLE e(id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB);
             CREATE TABLE plain(a TEXT, b INTEGER);
             CREATE TABLE kv(k TEXT COLLATE NOCASE, n INTEGER, v, PRIMARY KEY(k, n DESC)) WITHOUT ROWID;
             CREATE TABLE seq(id INTEGER PRIMARY KEY AUTOINCREMENT, x);
             CREATE INDEX e_name ON e(name);
             CREATE INDEX plain_b ON plain(b);
             CREATE VIEW ev AS SELECT id, name FROM e;
             CREATE TRIGGER e_touch AFTER UPDATE ON e BEGIN SELECT 1; END;",
        )
        .expect("schema");
        c.execute_batch("BEGIN").expect("begin");
        for i in 0..600i64 {
            c.execute(
                "INSERT INTO e(id, name, score, data) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![
                    i * 3,
                    format!("n{i}"),
                    i as f64 / 7.0,
                    vec![i as u8; (i % 50) as usize]
                ],
            )
            .expect("e");
            c.execute(
                "INSERT INTO plain(a, b) VALUES (?1, ?2)",
                rusqlite::params![format!("{}", "p".repeat((i % 40) as usize)), i % 17],
            )
            .expect("plain");
            c.execute(
                "INSERT INTO kv(k, n, v) VALUES (?1, ?2, ?3)",
                rusqlite::params![
                    format!("K{}", i % 13),
                    i,
                    if i % 2 == 0 { None } else { Some(i) }
                ],
            )
            .expect("kv");
            c.execute("INSERT INTO seq(x) VALUES (?1)", [i])
                .expect("seq");
        }
        // Holes, so that VACUUM really moves pages (and may renumber `plain`'s rowids).
        c.execute_batch(
            "DELETE FROM e WHERE id % 4 = 0; DELETE FROM plain WHERE rowid % 3 = 0;
             DELETE FROM seq WHERE id > 590; COMMIT;",
        )
        .expect("delete");
        c
    }

    #[test]
    fn hash_is_stable_across_checkpoint_vacuum_journal_mode_page_size_and_backup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("rich.db");
        let c = rich_wal_db(&db);
        let wal = with_suffix(&db, "-wal");
        assert!(
            std::fs::metadata(&wal).expect("wal").len() > 0,
            "rows sit in the -wal"
        );
        let h0 = logical_hash(&db, &opts()).expect("hash in wal");

        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .expect("checkpoint");
        assert_eq!(std::fs::metadata(&wal).expect("wal").len(), 0);
        assert_eq!(
            logical_hash(&db, &opts()).expect("hash"),
            h0,
            "after wal_checkpoint(TRUNCATE)"
        );

        let bytes_before_vacuum = file_sha(&db);
        c.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
            .expect("vacuum");
        assert_ne!(
            file_sha(&db),
            bytes_before_vacuum,
            "VACUUM changed the bytes"
        );
        assert_eq!(
            logical_hash(&db, &opts()).expect("hash"),
            h0,
            "after VACUUM"
        );

        let mode: String = c
            .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
            .expect("delete mode");
        assert_eq!(mode, "delete");
        assert_eq!(
            logical_hash(&db, &opts()).expect("hash"),
            h0,
            "after WAL -> DELETE"
        );

        c.execute_batch("PRAGMA page_size=8192; VACUUM;")
            .expect("page size");
        let ps: i64 = c
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .expect("ps");
        assert_eq!(ps, 8192);
        assert_eq!(
            logical_hash(&db, &opts()).expect("hash"),
            h0,
            "after page_size + VACUUM"
        );
        drop(c);

        let snap = dir.path().join("snap.db");
        let info = snapshot(&db, &snap, &opts()).expect("snapshot");
        assert_eq!(info.logical_hash, h0, "backup-API snapshot");
        assert_eq!(logical_hash(&snap, &opts()).expect("hash"), h0);
    }

    #[test]
    fn hash_changes_when_one_row_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("rich.db");
        let c = rich_wal_db(&db);
        let h0 = logical_hash(&db, &opts()).expect("hash");
        for (change, undo) in [
            (
                "UPDATE e SET score = 1.5 WHERE id = 3",
                "UPDATE e SET score = 1.0 / 7.0 WHERE id = 3",
            ),
            (
                "UPDATE plain SET b = 99 WHERE rowid = 5",
                "UPDATE plain SET b = 4 WHERE rowid = 5",
            ),
            (
                "UPDATE kv SET v = 'x' WHERE n = 7",
                "UPDATE kv SET v = 7 WHERE n = 7",
            ),
            (
                "UPDATE e SET data = x'00' WHERE id = 3",
                "UPDATE e SET data = x'01' WHERE id = 3",
            ),
        ] {
            c.execute_batch(change).expect("change");
            assert_ne!(logical_hash(&db, &opts()).expect("hash"), h0, "{change}");
            c.execute_batch(undo).expect("undo");
            assert_eq!(logical_hash(&db, &opts()).expect("hash"), h0, "{undo}");
        }
        // AUTOINCREMENT's memory is part of the database.
        c.execute_batch("UPDATE sqlite_sequence SET seq = seq + 1")
            .expect("seq");
        assert_ne!(
            logical_hash(&db, &opts()).expect("hash"),
            h0,
            "sqlite_sequence"
        );
    }

    #[test]
    fn hash_tells_value_types_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let values = ["1", "'1'", "1.0", "NULL", "x''", "''", "x'31'", "-0.0", "0"];
        let mut seen: Vec<(String, &str)> = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let db = dir.path().join(format!("v{i}.db"));
            rw(&db)
                .execute_batch(&format!("CREATE TABLE t(x); INSERT INTO t VALUES ({v});"))
                .expect("db");
            let h = logical_hash(&db, &opts()).expect("hash");
            if let Some((_, other)) = seen.iter().find(|(seen_h, _)| *seen_h == h) {
                panic!("{v} and {other} hash the same");
            }
            seen.push((h, v));
        }
        // Same rows split differently across two columns must differ too.
        let a = dir.path().join("a.db");
        let b = dir.path().join("b.db");
        rw(&a)
            .execute_batch("CREATE TABLE t(x, y); INSERT INTO t VALUES ('ab', 'c');")
            .expect("a");
        rw(&b)
            .execute_batch("CREATE TABLE t(x, y); INSERT INTO t VALUES ('a', 'bc');")
            .expect("b");
        assert_ne!(
            logical_hash(&a, &opts()).expect("a"),
            logical_hash(&b, &opts()).expect("b")
        );
    }

    #[test]
    fn hash_ignores_analyze_statistics_but_not_user_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("kg.db");
        create_knowledge_graph(&db, 300, 5).expect("create");
        let h0 = logical_hash(&db, &opts()).expect("hash");
        let c = rw(&db);
        c.execute_batch("ANALYZE").expect("analyze");
        let stat: i64 = c
            .query_row("SELECT count(*) FROM sqlite_stat1", [], |r| r.get(0))
            .expect("stat1");
        assert!(stat > 0);
        assert_eq!(logical_hash(&db, &opts()).expect("hash"), h0, "ANALYZE");
        c.execute_batch("PRAGMA user_version = 7")
            .expect("user_version");
        assert_ne!(
            logical_hash(&db, &opts()).expect("hash"),
            h0,
            "user_version"
        );
        c.execute_batch("PRAGMA user_version = 0; CREATE INDEX e_kind ON entities(kind);")
            .expect("index");
        assert_ne!(
            logical_hash(&db, &opts()).expect("hash"),
            h0,
            "schema change"
        );
    }

    #[test]
    fn snapshot_of_wal_database_reads_the_wal_and_leaves_it_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("metastore.db");
        let c = rich_wal_db(&db);
        let rows: i64 = c
            .query_row("SELECT count(*) FROM e", [], |r| r.get(0))
            .expect("rows");
        close_keeping_wal(c);
        let wal = with_suffix(&db, "-wal");
        let wal_sha = file_sha(&wal);
        let db_sha = file_sha(&db);
        assert!(std::fs::metadata(&wal).expect("wal").len() > 0);

        let snap = dir.path().join("snap.db");
        let info = snapshot(&db, &snap, &opts()).expect("snapshot");

        // Reading never wrote: the -wal is still there, unchanged, and so is the database.
        assert!(wal.exists(), "the source's -wal survived");
        assert_eq!(file_sha(&wal), wal_sha, "the -wal was not checkpointed");
        assert_eq!(file_sha(&db), db_sha, "the database file was not written");

        assert!(info.integrity.ok, "{:?}", info.integrity);
        assert_eq!(info.counts.get("e"), Some(rows as u64));
        assert_eq!(count(&snap, "e"), rows);
        assert_eq!(info.size, std::fs::metadata(&snap).expect("snap").len());
        assert_eq!(info.logical_hash, logical_hash(&db, &opts()).expect("hash"));
        assert!(
            !with_suffix(&snap, "-wal").exists(),
            "no -wal beside the snapshot"
        );
        let header = std::fs::read(&snap).expect("read");
        assert_eq!((header[18], header[19]), (1, 1), "rollback-journal header");
        assert_eq!(journal_mode(&snap), "delete");
    }

    #[test]
    fn snapshot_refuses_an_existing_destination_and_leaves_nothing_on_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("kg.db");
        create_knowledge_graph(&db, 10, 1).expect("create");
        let dest = dir.path().join("taken.db");
        std::fs::write(&dest, b"keep me").expect("write");
        assert!(snapshot(&db, &dest, &opts()).is_err());
        assert_eq!(std::fs::read(&dest).expect("read"), b"keep me");

        let missing = dir.path().join("missing.db");
        let dest2 = dir.path().join("snap.db");
        let err = snapshot(&missing, &dest2, &opts()).expect_err("missing source");
        assert!(err.to_string().contains("missing.db"), "{err}");
        assert!(!dest2.exists());
    }

    #[test]
    fn a_scratch_snapshot_with_a_base_copy_gets_an_independent_identical_file() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("kg.db");
        create_knowledge_graph(&db, 300, 3).expect("create");
        let snap = dir.path().join("snap.db");
        let copy = dir.path().join("snap.base.db");
        let info = scratch_snapshot(&db, &snap, &opts(), Some(&copy)).expect("snapshot");
        assert!(info.integrity.ok);
        assert_eq!(file_sha(&copy), file_sha(&snap));
        assert_eq!(
            logical_hash(&copy, &opts()).expect("hash"),
            info.logical_hash
        );
        assert_eq!(journal_mode(&copy), "delete");
        let (s, c) = (
            std::fs::metadata(&snap).expect("stat"),
            std::fs::metadata(&copy).expect("stat"),
        );
        assert_ne!(s.ino(), c.ino());
        assert_eq!((s.nlink(), c.nlink()), (1, 1));
        // Written in place, the snapshot leaves the copy as it was.
        rw(&snap)
            .execute("UPDATE entities SET name = 'moved on' WHERE id = 1", [])
            .expect("update");
        assert_eq!(
            logical_hash(&copy, &opts()).expect("hash"),
            info.logical_hash
        );

        // Without a base copy: the snapshot alone.
        let alone = dir.path().join("alone.db");
        let info2 = scratch_snapshot(&db, &alone, &opts(), None).expect("snapshot");
        assert_eq!(info2.logical_hash, info.logical_hash);
        assert!(!dir.path().join("alone.base.db").exists());

        // A file already at the copy's name is left alone; the snapshot is still taken.
        let taken = dir.path().join("taken.base.db");
        std::fs::write(&taken, b"keep me").expect("write");
        let snap3 = dir.path().join("taken.db");
        scratch_snapshot(&db, &snap3, &opts(), Some(&taken)).expect("snapshot");
        assert_eq!(std::fs::read(&taken).expect("read"), b"keep me");

        // A failed snapshot leaves neither file.
        let missing = dir.path().join("missing.db");
        let (snap4, copy4) = (dir.path().join("m.db"), dir.path().join("m.base.db"));
        assert!(scratch_snapshot(&missing, &snap4, &opts(), Some(&copy4)).is_err());
        assert!(!snap4.exists() && !copy4.exists());
    }

    #[test]
    fn snapshot_gives_up_when_the_database_never_holds_still() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("kg.db");
        create_knowledge_graph(&db, 10, 1).expect("create");
        // A rollback-journal writer holding an EXCLUSIVE lock keeps every reader out.
        let holder = rw(&db);
        holder
            .execute_batch("BEGIN EXCLUSIVE; INSERT INTO conversations(title) VALUES ('x');")
            .expect("lock");
        let quick = SqliteOptions {
            busy_timeout: Duration::from_millis(20),
            max_snapshot_attempts: 3,
            ..opts()
        };
        let dest = dir.path().join("snap.db");
        let started = std::time::Instant::now();
        let err = snapshot(&db, &dest, &quick).expect_err("busy");
        assert!(err.to_string().contains("never held still"), "{err}");
        assert!(err.to_string().contains("after 3 attempts"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!dest.exists(), "no partial snapshot left");
        holder.execute_batch("COMMIT").expect("commit");
        snapshot(&db, &dest, &quick).expect("snapshot once released");
    }

    #[test]
    fn snapshots_under_a_concurrent_writer_are_complete_and_healthy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("metastore.db");
        create_knowledge_graph(&db, 2000, 10).expect("create");
        rw(&db)
            .execute_batch("PRAGMA journal_mode=WAL")
            .expect("wal");
        let initial = 2000u64;
        let committed = Arc::new(AtomicU64::new(initial));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (db, committed, stop) = (db.clone(), committed.clone(), stop.clone());
            std::thread::spawn(move || -> rusqlite::Result<u64> {
                let c = Connection::open(&db)?;
                c.busy_timeout(Duration::from_secs(5))?;
                let mut insert = c.prepare(
                    "INSERT INTO entities(name, kind, data, updated_at) VALUES (?1, 'event', ?2, '2026-12-01T00:00:00Z')",
                )?;
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    // Each insert is its own transaction; it is counted once committed.
                    insert.execute(rusqlite::params![format!("live-{n}"), "y".repeat(200)])?;
                    n += 1;
                    committed.fetch_add(1, Ordering::SeqCst);
                }
                Ok(n)
            })
        };
        while committed.load(Ordering::SeqCst) < initial + 20 && !writer.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut grew = 0;
        for k in 0..20 {
            let before = committed.load(Ordering::SeqCst);
            let snap = dir.path().join(format!("snap-{k}.db"));
            let info = snapshot(&db, &snap, &opts()).expect("snapshot");
            assert!(info.integrity.ok, "snapshot {k}: {:?}", info.integrity);
            let rows = info.counts.entities().expect("entities");
            assert!(
                rows >= before,
                "snapshot {k} has {rows} rows, {before} were committed before it began"
            );
            assert_eq!(rows, count(&snap, "entities") as u64);
            if rows > initial {
                grew += 1;
            }
        }
        stop.store(true, Ordering::SeqCst);
        let inserted = writer.join().expect("writer thread").expect("writer");
        assert!(inserted >= 20, "the writer kept writing ({inserted} rows)");
        assert_eq!(grew, 20, "every snapshot saw the writer's rows");
        assert_eq!(count(&db, "entities") as u64, initial + inserted);
    }

    /// Overwrites `len` bytes at `offset` with deterministic garbage.
    fn scribble(path: &Path, offset: u64, len: usize, seed: u64) {
        use std::io::{Seek, SeekFrom, Write};
        let mut rng = Rng::new(seed);
        let garbage: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let mut f = OpenOptions::new().write(true).open(path).expect("open");
        f.seek(SeekFrom::Start(offset)).expect("seek");
        f.write_all(&garbage).expect("write");
        f.sync_all().expect("sync");
    }

    /// A database of 3000 dense rows (and an index on them) with garbage written over the
    /// middle of pages 3 to 6 — inside the cells, where the integrity check must see it.
    /// (Garbage in a page's unused gap is invisible to `integrity_check`, and harmless.)
    fn damaged_db(path: &Path) {
        let c = rw(path);
        c.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); CREATE INDEX t_v ON t(v); BEGIN;",
        )
        .expect("schema");
        for i in 0..3000 {
            c.execute(
                "INSERT INTO t(v) VALUES (?1)",
                [format!("value-{i:06}-{}", "x".repeat(80))],
            )
            .expect("insert");
        }
        c.execute_batch("COMMIT").expect("commit");
        drop(c);
        assert!(integrity(path, &opts()).expect("integrity").ok);
        for page in 3..=6u64 {
            scribble(path, (page - 1) * 4096 + 1500, 600, page);
        }
    }

    #[test]
    fn a_database_at_rest_is_described_as_its_snapshot_is_without_a_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("kg.db.backup-1");
        create_knowledge_graph(&db, 3000, 20).expect("create");
        let before = std::fs::read(&db).expect("read");
        let snap = dir.path().join("snap.db");
        let want = scratch_snapshot(&db, &snap, &opts(), None).expect("snapshot");
        let got = describe_at_rest(&db, &opts()).expect("describe at rest");
        assert!(got.integrity.ok, "{:?}", got.integrity);
        assert_eq!(got.logical_hash, want.logical_hash);
        assert_eq!(got.logical_hash, logical_hash(&db, &opts()).expect("hash"));
        assert_eq!(got.counts, want.counts);
        assert_eq!(got.size, before.len() as u64);
        assert_eq!(
            std::fs::read(&db).expect("read"),
            before,
            "the file is untouched"
        );
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["kg.db.backup-1", "snap.db"],
            "no side file, no copy"
        );

        let flipped = dir.path().join("flipped.db");
        damaged_db(&flipped);
        let bad = describe_at_rest(&flipped, &opts()).expect("a damaged file is described");
        assert!(!bad.integrity.ok && !bad.integrity.messages.is_empty());
    }

    #[test]
    fn corrupt_inputs_are_reported_not_errors() {
        let dir = tempfile::tempdir().expect("tempdir");

        let text = dir.path().join("notes.db");
        std::fs::write(&text, "just some notes\nnot a database\n").expect("write");
        assert!(!is_sqlite(&text).expect("is_sqlite"));
        let i = integrity(&text, &opts()).expect("integrity of a text file");
        assert!(!i.ok && i.messages[0].contains("not a database"), "{i:?}");

        // A header followed by garbage: SQLite's own verdict.
        let fake = dir.path().join("fake.db");
        let mut bytes = SQLITE_HEADER.to_vec();
        bytes.extend((0..4080u32).map(|i| (i * 7 + 3) as u8));
        std::fs::write(&fake, &bytes).expect("write");
        assert!(is_sqlite(&fake).expect("is_sqlite"));
        let i = integrity(&fake, &opts()).expect("integrity of a fake database");
        assert!(!i.ok && !i.messages.is_empty(), "{i:?}");

        let good = dir.path().join("good.db");
        create_knowledge_graph(&good, 3000, 20).expect("create");
        assert!(integrity(&good, &opts()).expect("integrity").ok);

        let truncated = dir.path().join("truncated.db");
        let all = std::fs::read(&good).expect("read");
        std::fs::write(&truncated, &all[..all.len() / 2]).expect("write");
        let i = integrity(&truncated, &opts()).expect("integrity of a truncated database");
        assert!(!i.ok && !i.messages.is_empty(), "{i:?}");

        let flipped = dir.path().join("flipped.db");
        damaged_db(&flipped);
        assert!(is_sqlite(&flipped).expect("is_sqlite"));
        let i = integrity(&flipped, &opts()).expect("integrity of a damaged database");
        assert!(!i.ok && !i.messages.is_empty(), "{i:?}");
        assert!(!i.summary().is_empty() && i.summary() != "ok");
        assert!(
            i.messages
                .iter()
                .all(|m| !m.contains('\n') && !m.starts_with("***")),
            "{i:?}"
        );

        // Neither hashing nor snapshotting a damaged database panics; a snapshot says so.
        let _ = logical_hash(&flipped, &opts());
        let _ = table_counts(&flipped, &opts());
        for (k, bad) in [&truncated, &flipped, &fake].into_iter().enumerate() {
            let snap = dir.path().join(format!("bad-snap-{k}.db"));
            match snapshot(bad, &snap, &opts()) {
                Ok(info) => {
                    assert!(!info.integrity.ok, "{}: {info:?}", bad.display());
                    assert_eq!(info.logical_hash.len(), 64);
                }
                Err(e) => assert!(is_corruption(&e), "{}: {e}", bad.display()),
            }
        }
    }

    #[test]
    fn integrity_of_a_missing_file_is_an_error_and_quick_check_above_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.db");
        let err = integrity(&missing, &opts()).expect_err("missing");
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(err.to_string().contains("missing.db"), "{err}");
        assert!(!missing.exists(), "checking did not create the file");

        let db = dir.path().join("kg.db");
        create_knowledge_graph(&db, 100, 2).expect("create");
        let full = integrity(&db, &opts()).expect("full");
        assert!(full.ok && !full.quick && full.messages.is_empty());
        let small = SqliteOptions {
            quick_check_above_bytes: 1024,
            ..opts()
        };
        let quick = integrity(&db, &small).expect("quick");
        assert!(quick.ok && quick.quick);
    }

    #[test]
    fn write_live_reaches_an_open_wal_connection_and_loses_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("metastore.db");
        create_knowledge_graph(&dest, 10, 1).expect("dest");
        let a = rw(&dest);
        a.execute_batch("PRAGMA journal_mode=WAL").expect("wal");
        let n: i64 = a
            .query_row("SELECT count(*) FROM entities", [], |r| r.get(0))
            .expect("n");
        assert_eq!(n, 10);

        let other = dir.path().join("other.db");
        create_knowledge_graph(&other, 50, 3).expect("other");
        rw(&other)
            .execute_batch("UPDATE entities SET name = 'from elsewhere' WHERE id = 1")
            .expect("edit");
        let snap = dir.path().join("snap.db");
        let info = snapshot(&other, &snap, &opts()).expect("snapshot");

        write_live(&snap, &dest, &opts()).expect("write_live");

        // A, open all along, sees the new content.
        let n: i64 = a
            .query_row("SELECT count(*) FROM entities", [], |r| r.get(0))
            .expect("n");
        assert_eq!(n, 50);
        let name: String = a
            .query_row("SELECT name FROM entities WHERE id = 1", [], |r| r.get(0))
            .expect("name");
        assert_eq!(name, "from elsewhere");
        assert_eq!(
            logical_hash(&dest, &opts()).expect("hash"),
            info.logical_hash
        );
        // A commits afterwards; nothing is lost.
        a.execute(
            "INSERT INTO entities(name, kind) VALUES ('after', 'event')",
            [],
        )
        .expect("insert after");
        let b = rw(&dest);
        let n: i64 = b
            .query_row("SELECT count(*) FROM entities", [], |r| r.get(0))
            .expect("n");
        assert_eq!(n, 51);
        let after: i64 = b
            .query_row(
                "SELECT count(*) FROM entities WHERE name = 'after'",
                [],
                |r| r.get(0),
            )
            .expect("after");
        assert_eq!(after, 1);
        let mode: String = b
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "wal", "the destination keeps its journal mode");
        drop(b);
        assert!(integrity(&dest, &opts()).expect("integrity").ok);
        drop(a);
        assert!(integrity(&dest, &opts()).expect("integrity").ok);
        assert_eq!(count(&dest, "entities"), 51);
    }

    #[test]
    fn write_live_creates_a_missing_destination() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src.db");
        create_knowledge_graph(&src, 40, 2).expect("src");
        let dest = dir.path().join("new.db");
        write_live(&src, &dest, &opts()).expect("write_live");
        assert_eq!(count(&dest, "entities"), 40);
        assert_eq!(
            logical_hash(&dest, &opts()).expect("dest"),
            logical_hash(&src, &opts()).expect("src")
        );
    }

    #[test]
    fn write_live_into_a_wal_destination_with_another_page_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src.db");
        {
            let c = rw(&src);
            c.execute_batch(
                "PRAGMA page_size=8192; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);",
            )
            .expect("src");
            for i in 0..500 {
                c.execute("INSERT INTO t(v) VALUES (?1)", [format!("v{i}")])
                    .expect("insert");
            }
        }
        let dest = dir.path().join("dest.db");
        let a = rw(&dest);
        a.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);")
            .expect("dest");
        write_live(&src, &dest, &opts()).expect("write_live");
        let n: i64 = a
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("n");
        assert_eq!(n, 500);
        let ps: i64 = a
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .expect("ps");
        assert_eq!(ps, 4096);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read_dir")
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .contains("metasync-pagesize")
            })
            .collect();
        assert!(leftovers.is_empty(), "temporary copy removed");
    }

    #[test]
    fn make_self_contained_folds_the_wal_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("copy.db");
        let c = rich_wal_db(&db);
        let h0 = logical_hash(&db, &opts()).expect("hash");
        close_keeping_wal(c);
        assert!(with_suffix(&db, "-wal").exists());
        make_self_contained(&db, &opts()).expect("self-contained");
        assert!(!with_suffix(&db, "-wal").exists());
        let header = std::fs::read(&db).expect("read");
        assert_eq!((header[18], header[19]), (1, 1));
        assert_eq!(logical_hash(&db, &opts()).expect("hash"), h0);
        assert!(make_self_contained(&dir.path().join("missing.db"), &opts()).is_err());
        assert!(!dir.path().join("missing.db").exists());
    }

    #[test]
    fn table_counts_put_entities_and_conversations_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("kg.db");
        create_knowledge_graph(&db, 92, 1).expect("create");
        rw(&db)
            .execute_batch(
                "CREATE TABLE aaa(id INTEGER PRIMARY KEY AUTOINCREMENT, x);
                 INSERT INTO aaa(x) VALUES (1), (2);
                 CREATE TABLE other(x); INSERT INTO other VALUES (1), (2), (3);
                 ANALYZE;",
            )
            .expect("more tables");
        let counts = table_counts(&db, &opts()).expect("counts");
        assert_eq!(
            counts.0,
            vec![
                ("entities".to_string(), 92),
                ("conversations".to_string(), 1),
                ("aaa".to_string(), 2),
                ("other".to_string(), 3),
                ("relations".to_string(), 91),
            ]
        );
        assert_eq!(counts.entities(), Some(92));
        assert_eq!(counts.conversations(), Some(1));
        assert_eq!(counts.get("OTHER"), Some(3));
        assert_eq!(counts.get("sqlite_sequence"), None);
        assert_eq!(counts.get("missing"), None);
    }

    #[test]
    fn shrink_reason_cases() {
        fn counts(e: Option<u64>, c: Option<u64>) -> TableCounts {
            let mut v = Vec::new();
            if let Some(e) = e {
                v.push(("entities".to_string(), e));
            }
            if let Some(c) = c {
                v.push(("conversations".to_string(), c));
            }
            v.push(("relations".to_string(), 5));
            TableCounts(v)
        }
        let cases: &[(TableCounts, TableCounts, u32, Option<&str>)] = &[
            (
                counts(Some(92), Some(1)),
                counts(Some(10), Some(1)),
                50,
                Some("entities fell from 92 to 10 (-89%)"),
            ),
            (
                counts(Some(92), Some(1)),
                counts(Some(92), Some(1)),
                50,
                None,
            ),
            (
                counts(Some(92), Some(1)),
                counts(Some(200), Some(3)),
                50,
                None,
            ),
            (counts(Some(100), None), counts(Some(50), None), 50, None),
            (
                counts(Some(100), None),
                counts(Some(49), None),
                50,
                Some("entities fell from 100 to 49 (-51%)"),
            ),
            (
                counts(Some(1000), None),
                counts(Some(496), None),
                50,
                Some("entities fell from 1000 to 496 (-50.4%)"),
            ),
            (
                counts(Some(10), Some(4)),
                counts(Some(10), Some(1)),
                50,
                Some("conversations fell from 4 to 1 (-75%)"),
            ),
            (
                counts(Some(10), Some(4)),
                counts(Some(1), Some(0)),
                50,
                Some("entities fell from 10 to 1 (-90%); conversations fell from 4 to 0 (-100%)"),
            ),
            (
                counts(Some(10), Some(4)),
                counts(None, None),
                50,
                Some("entities fell from 10 to 0 (-100%); conversations fell from 4 to 0 (-100%)"),
            ),
            (counts(Some(0), Some(0)), counts(Some(0), Some(0)), 50, None),
            (counts(None, None), counts(Some(0), Some(0)), 50, None),
            (
                counts(Some(10), None),
                counts(Some(9), None),
                0,
                Some("entities fell from 10 to 9 (-10%)"),
            ),
            (counts(Some(10), None), counts(Some(0), None), 100, None),
            (TableCounts::default(), TableCounts::default(), 50, None),
        ];
        for (i, (prev, new, max, want)) in cases.iter().enumerate() {
            assert_eq!(shrink_reason(prev, new, *max).as_deref(), *want, "case {i}");
        }
    }

    #[test]
    fn is_sqlite_cases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("kg.db");
        create_knowledge_graph(&db, 1, 0).expect("create");
        assert!(is_sqlite(&db).expect("db"));
        let short = dir.path().join("short");
        std::fs::write(&short, &SQLITE_HEADER[..15]).expect("write");
        assert!(!is_sqlite(&short).expect("short"));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").expect("write");
        assert!(!is_sqlite(&empty).expect("empty"));
        let yaml = dir.path().join("sorting-rules.yaml");
        std::fs::write(&yaml, "rules:\n  - match: '*'\n").expect("write");
        assert!(!is_sqlite(&yaml).expect("yaml"));
        assert!(!is_sqlite(&dir.path().join("missing")).expect("missing"));
    }

    #[test]
    fn create_knowledge_graph_is_deterministic_and_refuses_existing_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.db");
        let b = dir.path().join("b.db");
        create_knowledge_graph(&a, 500, 7).expect("a");
        create_knowledge_graph(&b, 500, 7).expect("b");
        assert_eq!(
            logical_hash(&a, &opts()).expect("a"),
            logical_hash(&b, &opts()).expect("b")
        );
        let counts = table_counts(&a, &opts()).expect("counts");
        assert_eq!(counts.entities(), Some(500));
        assert_eq!(counts.conversations(), Some(7));
        assert_eq!(counts.get("relations"), Some(499));
        let avg: f64 = rw(&a)
            .query_row(
                "SELECT avg(length(name) + length(kind) + length(data) + length(updated_at) + 8) FROM entities",
                [],
                |r| r.get(0),
            )
            .expect("avg");
        assert!(
            (200.0..=300.0).contains(&avg),
            "about 250 bytes per entity, got {avg}"
        );
        assert_eq!(journal_mode(&a), "delete");
        assert!(matches!(
            create_knowledge_graph(&a, 1, 1),
            Err(Error::Refused(_))
        ));
        assert_eq!(
            table_counts(&a, &opts()).expect("counts"),
            counts,
            "left untouched"
        );
    }

    #[test]
    fn write_live_over_damaged_destinations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src.db");
        create_knowledge_graph(&src, 300, 4).expect("src");

        let text = dir.path().join("text.db");
        std::fs::write(
            &text,
            "not a database at all, but long enough to look like one....",
        )
        .expect("write");
        let before = std::fs::read(&text).expect("read");
        let err = write_live(&src, &text, &opts()).expect_err("not a database");
        assert!(is_corruption(&err), "{err}");
        assert!(err.to_string().contains("text.db"), "{err}");
        assert_eq!(
            std::fs::read(&text).expect("read"),
            before,
            "left as it was"
        );

        let damaged = dir.path().join("damaged.db");
        damaged_db(&damaged);
        assert!(!integrity(&damaged, &opts()).expect("integrity").ok);
        write_live(&src, &damaged, &opts()).expect("write over damage");
        assert!(integrity(&damaged, &opts()).expect("integrity").ok);
        assert_eq!(
            logical_hash(&damaged, &opts()).expect("hash"),
            logical_hash(&src, &opts()).expect("hash")
        );
    }

    #[test]
    fn options_follow_the_config() {
        let from_config = SqliteOptions::from(&SqliteConfig::default());
        assert_eq!(from_config, SqliteOptions::default());
        let custom = SqliteOptions::from(&SqliteConfig {
            max_shrink_percent: 10,
            quick_check_above_mb: 1,
            busy_timeout_ms: 250,
        });
        assert_eq!(custom.busy_timeout, Duration::from_millis(250));
        assert_eq!(custom.quick_check_above_bytes, 1024 * 1024);
        assert_eq!(custom.max_snapshot_attempts, 5);
    }

    #[test]
    fn a_hot_journal_is_an_explained_error_not_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("live.db");
        create_knowledge_graph(&db, 2000, 2).expect("create");
        // Copy the database and its journal mid-transaction: the copy looks like a program
        // crashed while writing it (a hot journal).
        let c = rw(&db);
        c.execute_batch("PRAGMA cache_size=10; BEGIN; UPDATE entities SET data = data || 'x';")
            .expect("write");
        let copy = dir.path().join("crashed.db");
        std::fs::copy(&db, &copy).expect("copy");
        std::fs::copy(with_suffix(&db, "-journal"), with_suffix(&copy, "-journal"))
            .expect("copy journal");
        c.execute_batch("ROLLBACK").expect("rollback");
        let journal = std::fs::read(with_suffix(&copy, "-journal")).expect("journal");
        for result in [
            integrity(&copy, &opts()).map(|_| ()),
            logical_hash(&copy, &opts()).map(|_| ()),
            snapshot(&copy, &dir.path().join("snap.db"), &opts()).map(|_| ()),
        ] {
            let err = result.expect_err("hot journal");
            assert!(err.to_string().contains("hot journal"), "{err}");
            assert!(err.to_string().contains("crashed.db-journal"), "{err}");
            assert!(!is_corruption(&err), "{err}");
        }
        assert_eq!(
            std::fs::read(with_suffix(&copy, "-journal")).expect("journal"),
            journal,
            "the journal is left for its owner"
        );
        assert!(!dir.path().join("snap.db").exists());
    }

    /// A database whose records `SELECT *` does not return as stored: integers in REAL
    /// columns, `INTEGER PRIMARY KEY` stored as NULL, every integer width, rows spilling into
    /// overflow pages, a column added by ALTER TABLE (older records lack it), generated
    /// columns, WITHOUT ROWID, `INTEGER PRIMARY KEY DESC`, all aliases of the rowid taken.
    fn tricky_records_db(path: &Path) {
        let c = rw(path);
        c.execute_batch(
            "CREATE TABLE r(id INTEGER PRIMARY KEY, x REAL, f FLOAT, d DOUBLE PRECISION, n NUMERIC, t TEXT, b BLOB, any);
             CREATE TABLE big(id INTEGER PRIMARY KEY, body TEXT, data BLOB);
             CREATE TABLE added(id INTEGER PRIMARY KEY, a TEXT);
             CREATE TABLE gen(id INTEGER PRIMARY KEY, a INTEGER, twice INTEGER GENERATED ALWAYS AS (a * 2));
             CREATE TABLE wr(k TEXT PRIMARY KEY, v REAL) WITHOUT ROWID;
             CREATE TABLE descpk(id INTEGER PRIMARY KEY DESC, v REAL);
             CREATE TABLE shadowed(rowid INTEGER, _rowid_ TEXT, oid REAL);
             CREATE TABLE noalias(a TEXT, b REAL);",
        )
        .expect("schema");
        let ints = [
            0i64,
            1,
            -1,
            127,
            -128,
            255,
            32767,
            -32768,
            8_388_607,
            -8_388_608,
            2_147_483_647,
            -2_147_483_648,
            140_737_488_355_327,
            -140_737_488_355_328,
            i64::MAX,
            i64::MIN,
        ];
        for (i, v) in ints.iter().enumerate() {
            c.execute(
                "INSERT INTO r VALUES (?1, ?2, ?2, ?3, ?2, ?4, ?5, ?2)",
                rusqlite::params![
                    i as i64 * 1000 - 7,
                    v,
                    *v as f64 + 0.5,
                    format!("t{v}"),
                    v.to_be_bytes()
                ],
            )
            .expect("r");
        }
        c.execute_batch(
            "INSERT INTO r VALUES (100, NULL, 2.0, -0.0, 3.25, '', x'', 1e300);
             INSERT INTO r(x) VALUES (7);
             INSERT INTO added VALUES (1, 'old'), (2, 'older');
             ALTER TABLE added ADD COLUMN extra TEXT DEFAULT 'filled in';
             INSERT INTO added VALUES (3, 'new', 'given');
             INSERT INTO gen(id, a) VALUES (1, 5), (2, 6);
             INSERT INTO wr VALUES ('a', 1), ('b', 2.5);
             INSERT INTO descpk VALUES (5, 1), (9, 2);
             INSERT INTO shadowed VALUES (1, 'x', 3), (2, 'y', 4);
             INSERT INTO noalias VALUES ('p', 1), ('q', 2.5);",
        )
        .expect("rows");
        for i in 0..40i64 {
            let len = (i as usize * 997) % 30_000;
            c.execute(
                "INSERT INTO big VALUES (?1, ?2, ?3)",
                rusqlite::params![i, "w".repeat(len), vec![i as u8; len * 2]],
            )
            .expect("big");
        }
        c.execute_batch(
            "DELETE FROM big WHERE id % 7 = 0; UPDATE big SET body = body || 'x' WHERE id % 5 = 0",
        )
        .expect("holes");
    }

    #[test]
    fn the_hash_read_from_a_snapshots_pages_is_the_hash_read_through_sql() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, make) in [
            ("rich.db", (|p: &Path| drop(rich_wal_db(p))) as fn(&Path)),
            ("tricky.db", tricky_records_db),
        ] {
            let db = dir.path().join(name);
            make(&db);
            let through_sql = logical_hash(&db, &opts()).expect("hash");
            let snap = dir.path().join(format!("snap-{name}"));
            let info = snapshot(&db, &snap, &opts()).expect("snapshot");
            assert_eq!(info.logical_hash, through_sql, "{name}: snapshot's hash");
            let (raw, counts) = hash_and_count(&snap, &opts(), true).expect("raw");
            let (sql, sql_counts) = hash_and_count(&snap, &opts(), false).expect("sql");
            assert_eq!((&raw, &counts), (&sql, &sql_counts), "{name}");
        }
    }

    #[test]
    fn the_tables_whose_records_say_it_all_are_read_from_the_pages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("tricky.db");
        tricky_records_db(&db);
        let snap = dir.path().join("snap.db");
        snapshot(&db, &snap, &opts()).expect("snapshot");
        let conn = open_read_only(&snap, &opts()).expect("open");
        let (pages, _) = pages::Pages::open(&snap).expect("open").expect("pages");
        let mut read = Vec::new();
        for e in read_schema(&conn).expect("schema") {
            if e.kind != "table" || is_internal(&e.name) {
                continue;
            }
            let layout = hash::raw_layout(&conn, &e.name).expect("layout");
            let n = match layout {
                Some(l) => {
                    records::for_each_row(&pages, e.rootpage as u32, &l, &mut |_| {}).expect("read")
                }
                None => None,
            };
            read.push((e.name.clone(), n));
        }
        read.sort();
        assert_eq!(
            read,
            vec![
                ("added".to_string(), None),
                ("big".to_string(), Some(34)),
                ("descpk".to_string(), Some(2)),
                ("gen".to_string(), None),
                ("noalias".to_string(), Some(2)),
                ("r".to_string(), Some(18)),
                ("shadowed".to_string(), Some(2)),
                ("wr".to_string(), None),
            ]
        );
    }
}
