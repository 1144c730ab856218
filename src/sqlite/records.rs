//! A table's rows read straight from the b-tree pages of a snapshot, in rowid order, for the
//! logical hash: the same values `SELECT *` gives, without SQLite's statement machinery
//! around every column of every row.
//!
//! Only for files no one writes while they are read (the run's own snapshots) and only where
//! the records alone say what `SELECT *` returns: a UTF-8 database, a rowid table without
//! generated columns, every record holding every column (a column added by `ALTER TABLE …
//! ADD COLUMN` takes its default in older records: read through SQL instead). Two things are
//! done as SQLite does them: an `INTEGER PRIMARY KEY` column, stored as NULL, is the rowid; a
//! column with REAL affinity returns a real for an integer stored in it. Anything else gives
//! `None`, and the caller reads the table through SQL.

use super::pages::{cells, header_at, u32_at, varint, walk, Pages};
use rusqlite::types::ValueRef;

/// What the records of one table need to be read as `SELECT *` reads them.
pub(super) struct Layout {
    /// How many columns each record holds.
    pub(super) columns: usize,
    /// The `INTEGER PRIMARY KEY` column, whose value is the rowid.
    pub(super) alias: Option<usize>,
    /// The columns with REAL affinity.
    pub(super) real: Vec<bool>,
}

/// Whether a declared column type has REAL affinity (SQLite's rules, in their order: `INT`
/// anywhere is INTEGER; `CHAR`, `CLOB`, `TEXT` are TEXT; `BLOB` is BLOB; then `REAL`, `FLOA`,
/// `DOUB` are REAL).
pub(super) fn real_affinity(declared: &str) -> bool {
    let t = declared.to_ascii_uppercase();
    let has = |w: &str| t.contains(w);
    !has("INT")
        && !has("CHAR")
        && !has("CLOB")
        && !has("TEXT")
        && !has("BLOB")
        && (has("REAL") || has("FLOA") || has("DOUB"))
}

/// Calls `row` with every row of the table rooted at `root`, in rowid order; the number of
/// rows, or `None` when a record cannot be read exactly (then `row` may have been called for
/// some rows already: the caller starts the table again through SQL).
pub(super) fn for_each_row(
    pages: &Pages,
    root: u32,
    layout: &Layout,
    row: &mut dyn FnMut(&[ValueRef<'_>]),
) -> std::io::Result<Option<u64>> {
    let (mut payload, mut overflow) = (Vec::new(), Vec::new());
    let mut count = 0u64;
    let walked = walk(pages, root, &mut |n, page| {
        let Some(offsets) = cells(page, header_at(n), 8) else {
            return Ok(false);
        };
        for c in offsets {
            let Some(rowid) = cell_payload(pages, page, c, &mut payload, &mut overflow)? else {
                return Ok(false);
            };
            match decode(&payload, rowid, layout) {
                Some(values) => row(&values),
                None => return Ok(false),
            }
            count += 1;
        }
        Ok(true)
    })?;
    Ok(walked.then_some(count))
}

/// The payload of the leaf cell at `c` into `payload` (its overflow pages followed); its
/// rowid, or `None` when malformed.
fn cell_payload(
    pages: &Pages,
    page: &[u8],
    c: usize,
    payload: &mut Vec<u8>,
    overflow: &mut Vec<u8>,
) -> std::io::Result<Option<i64>> {
    let u = pages.usable;
    let Some((size, a)) = varint(page, c) else {
        return Ok(None);
    };
    let Some((rowid, b)) = varint(page, c + a) else {
        return Ok(None);
    };
    let Ok(size) = usize::try_from(size) else {
        return Ok(None);
    };
    let start = c + a + b;
    let (max_local, min_local) = (u - 35, (u - 12) * 32 / 255 - 23);
    let local = if size <= max_local {
        size
    } else {
        let k = min_local + (size - min_local) % (u - 4);
        if k <= max_local {
            k
        } else {
            min_local
        }
    };
    let Some(bytes) = page.get(start..start + local) else {
        return Ok(None);
    };
    payload.clear();
    payload.extend_from_slice(bytes);
    let mut next = if local < size {
        u32_at(page, start + local).unwrap_or(0)
    } else {
        0
    };
    let mut hops = 0u64;
    while payload.len() < size {
        hops += 1;
        if next == 0 || hops > pages.count || !pages.read(next, overflow)? {
            return Ok(None);
        }
        let take = (size - payload.len()).min(u - 4);
        payload.extend_from_slice(&overflow[4..4 + take]);
        next = u32_at(overflow, 0).unwrap_or(0);
    }
    Ok(Some(rowid as i64))
}

/// A record's values as `SELECT *` gives them; `None` when it cannot be told exactly.
fn decode<'a>(record: &'a [u8], rowid: i64, layout: &Layout) -> Option<Vec<ValueRef<'a>>> {
    let (header_len, mut at) = varint(record, 0)?;
    let header_len = usize::try_from(header_len).ok()?;
    let mut body = header_len;
    let mut values = Vec::with_capacity(layout.columns);
    while at < header_len {
        let (serial, n) = varint(record, at)?;
        at += n;
        let i = values.len();
        if i >= layout.columns {
            return None;
        }
        let (value, len) = value(record, body, serial)?;
        body = body.checked_add(len)?;
        let value = match value {
            ValueRef::Null if layout.alias == Some(i) => ValueRef::Integer(rowid),
            ValueRef::Integer(v) if layout.real[i] => ValueRef::Real(v as f64),
            v => v,
        };
        values.push(value);
    }
    (values.len() == layout.columns && at == header_len && body <= record.len()).then_some(values)
}

/// The value of serial type `serial` at `record[at..]`, and how many bytes it takes.
fn value(record: &[u8], at: usize, serial: u64) -> Option<(ValueRef<'_>, usize)> {
    let int = |n: usize| -> Option<(ValueRef<'_>, usize)> {
        let bytes = record.get(at..at + n)?;
        let mut v: i64 = if bytes[0] & 0x80 != 0 { -1 } else { 0 };
        for &b in bytes {
            v = (v << 8) | i64::from(b);
        }
        Some((ValueRef::Integer(v), n))
    };
    match serial {
        0 => Some((ValueRef::Null, 0)),
        1..=4 => int(serial as usize),
        5 => int(6),
        6 => int(8),
        7 => {
            let bytes: [u8; 8] = record.get(at..at + 8)?.try_into().ok()?;
            Some((ValueRef::Real(f64::from_bits(u64::from_be_bytes(bytes))), 8))
        }
        8 => Some((ValueRef::Integer(0), 0)),
        9 => Some((ValueRef::Integer(1), 0)),
        10 | 11 => None,
        n => {
            let len = usize::try_from((n - 12) / 2).ok()?;
            let bytes = record.get(at..at.checked_add(len)?)?;
            Some(if n % 2 == 0 {
                (ValueRef::Blob(bytes), len)
            } else {
                (ValueRef::Text(bytes), len)
            })
        }
    }
}
