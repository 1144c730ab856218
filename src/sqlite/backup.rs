//! Snapshots through the online backup API, in one step, bounded when busy; rollback-journal copies for remotes.

use super::*;

/// One-step backup of `from` into `to`, retried while busy, bounded.
pub(super) fn run_backup(
    from: &Connection,
    from_path: &Path,
    to: &mut Connection,
    to_path: &Path,
    op: &'static str,
    err_path: &Path,
    opts: &SqliteOptions,
) -> Result<()> {
    let attempts = opts.max_snapshot_attempts.max(1);
    let backup = Backup::new(from, to).map_err(|e| Error::sqlite(op, to_path, e))?;
    for attempt in 1..=attempts {
        // -1: every page in one step, under one read transaction on the source, so a writer
        // cannot make it restart (FIELD-NOTES: page-by-page never ends on a busy database).
        match backup.step(-1) {
            Ok(StepResult::Done) => return Ok(()),
            // Not expected with -1; another step continues where this one stopped.
            Ok(StepResult::More) => {}
            // Busy (the busy timeout ran out) or Locked: wait a little and try again.
            Ok(_) => {
                if attempt < attempts {
                    std::thread::sleep(Duration::from_millis(50 * u64::from(attempt)));
                }
            }
            Err(e) => return Err(Error::sqlite(op, err_path, e)),
        }
    }
    Err(Error::sqlite(
        op,
        err_path,
        failure(
            ffi::SQLITE_BUSY,
            format!(
                "the database never held still: still busy after {attempts} attempts \
                 of {} ms each (copying from {})",
                opts.busy_timeout.as_millis(),
                from_path.display()
            ),
        ),
    ))
}

pub(super) fn take_snapshot(
    src_conn: &Connection,
    src: &Path,
    dest: &Path,
    opts: &SqliteOptions,
) -> Result<()> {
    let mut dst = open_read_write(dest, opts, false)?;
    // No fsync inside the backup's commit (SQLite's default, FULL, waits there for the whole
    // file to reach the disk, before the checks can start). `dest` is a new file nobody else
    // opens, removed on error, and every caller gets it only from `describe_snapshot`, which
    // fsyncs it while the checks and the hash read it, so it is as durable when handed over.
    dst.execute_batch("PRAGMA synchronous = OFF")
        .map_err(|e| Error::sqlite("snapshot", dest, e))?;
    run_backup(src_conn, src, &mut dst, dest, "snapshot", src, opts)?;
    to_rollback_journal(&dst, dest)?;
    close(dst, dest)?;
    check_self_contained(dest)
}

pub(super) fn to_rollback_journal(conn: &Connection, path: &Path) -> Result<()> {
    let op = "switch to rollback-journal mode";
    let mode: String = conn
        .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
        .map_err(|e| Error::sqlite(op, path, e))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(Error::sqlite(
            op,
            path,
            failure(
                ffi::SQLITE_ERROR,
                format!("journal mode stayed {mode} (is another program holding it open?)"),
            ),
        ));
    }
    Ok(())
}

/// Checks that `db` is one file in rollback-journal mode: header bytes 18–19 (write and read
/// format versions) are 1 and there is no `-wal` beside it.
pub(super) fn check_self_contained(db: &Path) -> Result<()> {
    let mut f = File::open(db).ctx("open", db)?;
    let mut header = [0u8; 20];
    let n = read_up_to(&mut f, &mut header).ctx("read", db)?;
    let op = "make self-contained";
    // An empty file is an empty database: nothing beside it is needed.
    if n > 0 && (n < header.len() || header[18] != 1 || header[19] != 1) {
        return Err(Error::sqlite(
            op,
            db,
            failure(
                ffi::SQLITE_ERROR,
                "the file is not in rollback-journal mode after the switch".into(),
            ),
        ));
    }
    let wal = with_suffix(db, "-wal");
    if wal.exists() {
        return Err(Error::sqlite(
            op,
            db,
            failure(
                ffi::SQLITE_ERROR,
                format!("{} is still there", wal.display()),
            ),
        ));
    }
    Ok(())
}

/// Checks, hashes and counts a snapshot just taken (which nothing writes any more), while its
/// pages are written to disk: fsynced (with its folder when `durable`). The fsync of a scratch
/// snapshot is what makes it cheap to put in place later by a rename or a hard link (its data
/// is then already on disk); for one that is only read, it costs disk time that overlaps the
/// reads here. A `base_copy` is made and fsynced at the same time (see [`scratch_snapshot`]).
pub(super) fn describe_snapshot(
    dest: &Path,
    opts: &SqliteOptions,
    durable: bool,
    base_copy: Option<&Path>,
) -> Result<SnapshotInfo> {
    let size = std::fs::metadata(dest).ctx("read", dest)?.len();
    // The integrity check and the logical hash each read the whole snapshot: on two
    // connections at once they take the time of the longer one; the writeback, a third
    // thread that mostly waits for the disk, runs under both. The base copy (in-kernel, from
    // the page cache) fits in the time the hash finishes before the integrity check.
    let (copied, synced, integrity, hashed) = std::thread::scope(|s| {
        let copy = base_copy.map(|copy| s.spawn(move || copy_durably(dest, copy)));
        let sync = s.spawn(|| {
            if durable {
                fsync_file_and_dir(dest)
            } else {
                File::open(dest)
                    .and_then(|f| f.sync_all())
                    .ctx("fsync", dest)
            }
        });
        let check = s.spawn(|| integrity(dest, opts));
        // The snapshot was just taken and nothing writes it: its pages are read directly.
        let hashed = explained(hash_and_count(dest, opts, true));
        let panicked =
            |what: &str| Error::Refused(format!("the {what} of {} panicked", dest.display()));
        let integrity = check
            .join()
            .unwrap_or_else(|_| Err(panicked("integrity check")));
        let synced = sync.join().unwrap_or_else(|_| Err(panicked("fsync")));
        let copied = copy.map(|c| c.join().map_err(|_| panicked("base copy")));
        (copied, synced, integrity, hashed)
    });
    let described = describe_results(dest, opts, size, synced, integrity, hashed);
    if let (Some(copy), Some(made)) = (base_copy, copied) {
        match made {
            Ok(Ok(true)) if described.is_ok() => {}
            // Only a file this call created is removed (a panic may have left one half-made).
            Ok(Ok(true)) | Err(_) => {
                let _ = std::fs::remove_file(copy);
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::debug!("no base copy of {}: {e}", dest.display()),
        }
    }
    described
}

/// [`describe_snapshot`] of a database file at rest (nobody writes it: a plain backup), read
/// where it is, read-only and without a snapshot: its integrity check and its logical hash
/// (from its pages) at once, on two connections.
pub(super) fn describe_in_place(path: &Path, opts: &SqliteOptions) -> Result<SnapshotInfo> {
    let size = std::fs::metadata(path).ctx("read", path)?.len();
    let (integrity, hashed) = std::thread::scope(|s| {
        let check = s.spawn(|| integrity(path, opts));
        let hashed = explained(hash_and_count(path, opts, true));
        let integrity = check.join().unwrap_or_else(|_| {
            Err(Error::Refused(format!(
                "the integrity check of {} panicked",
                path.display()
            )))
        });
        (integrity, hashed)
    });
    describe_results(path, opts, size, Ok(()), integrity, hashed)
}

pub(super) fn describe_results(
    dest: &Path,
    opts: &SqliteOptions,
    size: u64,
    synced: Result<()>,
    integrity: Result<Integrity>,
    hashed: Result<(String, TableCounts)>,
) -> Result<SnapshotInfo> {
    synced?;
    let integrity = integrity?;
    let (logical_hash, counts) = if integrity.ok {
        hashed?
    } else {
        let hashed = hashed.map(|(h, _)| h);
        // A corrupt snapshot still needs a stable name: its rows if they can be read, else
        // its bytes.
        let hash = match hashed {
            Ok(h) => h,
            Err(e) if is_corruption(&e) => corrupt_file_hash(dest)?,
            Err(e) => return Err(e),
        };
        let counts = match table_counts(dest, opts) {
            Ok(c) => c,
            Err(e) if is_corruption(&e) => TableCounts::default(),
            Err(e) => return Err(e),
        };
        (hash, counts)
    };
    Ok(SnapshotInfo {
        logical_hash,
        integrity,
        counts,
        size,
    })
}

/// A byte copy of `from` into the new file `to`, fsynced. `Ok(true)` when made; `Ok(false)`
/// when `to` already existed (left alone); on any other error, nothing is left at `to`.
pub(super) fn copy_durably(from: &Path, to: &Path) -> std::io::Result<bool> {
    let mut out = match OpenOptions::new().write(true).create_new(true).open(to) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    };
    let copied = File::open(from)
        .and_then(|mut src| std::io::copy(&mut src, &mut out))
        .and_then(|_| out.sync_all());
    if let Err(e) = copied {
        let _ = std::fs::remove_file(to);
        return Err(e);
    }
    Ok(true)
}

pub(super) fn corrupt_file_hash(path: &Path) -> Result<String> {
    let mut f = File::open(path).ctx("open", path)?;
    let mut h = Sha256::new();
    h.update(b"metasync-corrupt-database-bytes-v1\0");
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = read_up_to(&mut f, &mut buf).ctx("read", path)?;
        h.update(&buf[..n]);
        if n < buf.len() {
            break;
        }
    }
    Ok(hex(&h.finalize()))
}

/// A read-only connection to a copy of `src` whose page size is `page_size`, in a temporary
/// folder beside `src` (dropped with the returned `TempDir`).
pub(super) fn with_page_size(
    src: &Path,
    page_size: i64,
    opts: &SqliteOptions,
) -> Result<(tempfile::TempDir, PathBuf, Connection)> {
    let parent = parent_dir(src);
    let dir = tempfile::Builder::new()
        .prefix(".metasync-pagesize-")
        .tempdir_in(&parent)
        .ctx("create a temporary folder in", &parent)?;
    let copy = dir.path().join("copy.db");
    snapshot(src, &copy, opts)?;
    let conn = open_read_write(&copy, opts, false)?;
    conn.execute_batch(&format!("PRAGMA page_size={page_size}; VACUUM;"))
        .map_err(|e| Error::sqlite("change the page size of", &copy, e))?;
    close(conn, &copy)?;
    let conn = open_read_only(&copy, opts)?;
    Ok((dir, copy, conn))
}
