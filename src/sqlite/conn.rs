//! Connections: read-only and read-write opens with the busy timeout, read transactions, errors explained.

use super::*;

pub(super) fn open_read_only(path: &Path, opts: &SqliteOptions) -> Result<Connection> {
    // SQLite's own message for a missing file is "unable to open database file"; say it
    // plainly instead.
    std::fs::metadata(path).ctx("open", path)?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::sqlite("open read-only", path, e))?;
    configure(&conn, path, opts)?;
    Ok(conn)
}

pub(super) fn open_read_write(
    path: &Path,
    opts: &SqliteOptions,
    create: bool,
) -> Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn =
        Connection::open_with_flags(path, flags).map_err(|e| Error::sqlite("open", path, e))?;
    configure(&conn, path, opts)?;
    Ok(conn)
}

pub(super) fn configure(conn: &Connection, path: &Path, opts: &SqliteOptions) -> Result<()> {
    conn.busy_timeout(opts.busy_timeout)
        .map_err(|e| Error::sqlite("set the busy timeout of", path, e))?;
    // Belt and braces for read-only connections (whose O_RDONLY file cannot take the lock a
    // checkpoint needs anyway); for ours, closing must never checkpoint someone else's WAL.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(|e| Error::sqlite("configure", path, e))?;
    Ok(())
}

pub(super) fn close(conn: Connection, path: &Path) -> Result<()> {
    conn.close()
        .map_err(|(_, e)| Error::sqlite("close", path, e))
}

/// Runs `f` inside one (deferred, hence read-only unless `f` writes) transaction so that it
/// sees one consistent state of the database.
pub(super) fn in_read_txn<T>(
    conn: &Connection,
    path: &Path,
    op: &'static str,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    conn.execute_batch("BEGIN")
        .map_err(|e| Error::sqlite(op, path, e))?;
    match f(conn) {
        Ok(v) => {
            conn.execute_batch("COMMIT")
                .map_err(|e| Error::sqlite(op, path, e))?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

pub(super) fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
}

/// A rusqlite error carrying our own message (shown as is by its `Display`).
pub(super) fn failure(code: i32, message: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(ffi::Error::new(code), Some(message))
}

/// `SQLITE_READONLY_ROLLBACK`: a hot journal that a read-only connection may not roll back.
pub(super) const READONLY_ROLLBACK: i32 = ffi::SQLITE_READONLY | (3 << 8);

/// Replaces SQLite's misleading "attempt to write a readonly database" for a hot journal.
pub(super) fn explained<T>(r: Result<T>) -> Result<T> {
    r.map_err(|e| match e {
        Error::Sqlite {
            op,
            path,
            source: rusqlite::Error::SqliteFailure(f, _),
        } if f.extended_code == READONLY_ROLLBACK => Error::sqlite(
            op,
            &path,
            failure(
                READONLY_ROLLBACK,
                format!(
                    "{} holds a hot journal left by a program that stopped mid-write; \
                     Metasync reads databases read-only and does not roll it back \
                     (the next program to open it read-write will)",
                    with_suffix(&path, "-journal").display()
                ),
            ),
        ),
        e => e,
    })
}

pub(super) fn is_corrupt_code(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}
