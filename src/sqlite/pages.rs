//! Page-level change detection between two versions of one database: which rowid ranges of a
//! table can differ, found by comparing the table's b-tree leaves byte for byte instead of
//! reading every row.
//!
//! Both files must be self-contained databases that nothing writes while they are read (the
//! run's own snapshots, the archive's bases): one file, rollback-journal mode, no `-wal` or
//! `-journal` beside it. Anything this module cannot vouch for (another page size or text
//! encoding, a page of an unexpected type, a pointer out of the file) gives `None`, and the
//! caller diffs every row.
//!
//! Why the ranges are exact: a rowid outside every returned range lies, in each version that
//! holds it, on a leaf page that the other version's b-tree of the same table also holds at
//! the same page number with the same bytes, with the same overflow pages; so both versions
//! hold that row with the same record, or neither holds it. Every rowid on a leaf that differs
//! (or is a leaf of one tree only) is inside the range of that leaf's first and last rowid.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Page type bytes of table b-trees.
const TABLE_INTERIOR: u8 = 0x05;
const TABLE_LEAF: u8 = 0x0d;

/// One database file read page by page.
pub(super) struct Pages {
    file: File,
    pub(super) page_size: usize,
    /// Usable bytes per page (page size minus the reserved bytes at each page's end).
    pub(super) usable: usize,
    pub(super) count: u64,
}

impl Pages {
    /// Opens a self-contained database file; `None` when it is not one this module can read
    /// as it stands (a `-wal` or `-journal` beside it, WAL mode, a short header).
    pub(super) fn open(path: &Path) -> std::io::Result<Option<(Pages, [u8; 100])>> {
        for side in ["-wal", "-journal"] {
            let mut s = path.as_os_str().to_owned();
            s.push(side);
            if Path::new(&s).exists() {
                return Ok(None);
            }
        }
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut header = [0u8; 100];
        if len < 100 {
            return Ok(None);
        }
        file.read_exact_at(&mut header, 0)?;
        let raw = u16::from_be_bytes([header[16], header[17]]);
        let page_size = if raw == 1 { 65_536 } else { usize::from(raw) };
        let reserved = usize::from(header[20]);
        if page_size < 512
            || !page_size.is_power_of_two()
            || (header[18], header[19]) != (1, 1)
            || reserved >= page_size - 480
            || len % page_size as u64 != 0
        {
            return Ok(None);
        }
        let pages = Pages {
            file,
            page_size,
            usable: page_size - reserved,
            count: len / page_size as u64,
        };
        Ok(Some((pages, header)))
    }

    /// Page `n` (1-based) into `buf`; `Ok(false)` when it is not in the file.
    pub(super) fn read(&self, n: u32, buf: &mut Vec<u8>) -> std::io::Result<bool> {
        if n == 0 || u64::from(n) > self.count {
            return Ok(false);
        }
        buf.resize(self.page_size, 0);
        self.file
            .read_exact_at(buf, (u64::from(n) - 1) * self.page_size as u64)?;
        Ok(true)
    }
}

/// A varint as SQLite writes it, from `b[at..]`: (value, bytes used), `None` past the end.
pub(super) fn varint(b: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let byte = *b.get(at + i)?;
        if i == 8 {
            return Some(((v << 8) | u64::from(byte), 9));
        }
        v = (v << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn u16_at(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
    ])))
}

pub(super) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Where the b-tree page header starts (page 1 holds the file header first).
pub(super) fn header_at(n: u32) -> usize {
    if n == 1 {
        100
    } else {
        0
    }
}

/// The cell offsets of a b-tree page whose header starts at `h`, with `header_len` bytes.
pub(super) fn cells(page: &[u8], h: usize, header_len: usize) -> Option<Vec<usize>> {
    let n = u16_at(page, h + 3)?;
    (0..n)
        .map(|i| u16_at(page, h + header_len + 2 * i))
        .collect()
}

/// The leaf pages of the table b-tree rooted at `root`, in key order; `None` when the tree is
/// not a table b-tree this module can walk.
pub(super) fn leaves(pages: &Pages, root: u32) -> std::io::Result<Option<Vec<u32>>> {
    let mut out = Vec::new();
    let walked = walk(pages, root, &mut |n, _| {
        out.push(n);
        Ok(true)
    })?;
    Ok(walked.then_some(out))
}

/// Calls `leaf` with every leaf page (number, bytes) of the table b-tree rooted at `root`, in
/// key order; `false` when the tree is not a table b-tree this module can walk, or `leaf`
/// returned `false`.
pub(super) fn walk(
    pages: &Pages,
    root: u32,
    leaf: &mut dyn FnMut(u32, &[u8]) -> std::io::Result<bool>,
) -> std::io::Result<bool> {
    let (mut stack, mut buf) = (vec![root], Vec::new());
    let mut visited: u64 = 0;
    while let Some(n) = stack.pop() {
        visited += 1;
        if visited > pages.count || !pages.read(n, &mut buf)? {
            return Ok(false);
        }
        let h = header_at(n);
        match buf[h] {
            TABLE_LEAF => {
                if !leaf(n, &buf)? {
                    return Ok(false);
                }
            }
            TABLE_INTERIOR => {
                let (Some(offsets), Some(right)) = (cells(&buf, h, 12), u32_at(&buf, h + 8)) else {
                    return Ok(false);
                };
                // Pushed right to left, so that the leaves come out in key order.
                stack.push(right);
                for &c in offsets.iter().rev() {
                    match u32_at(&buf, c) {
                        Some(child) => stack.push(child),
                        None => return Ok(false),
                    }
                }
            }
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// A leaf's cells: (rowid, first overflow page or 0) each; `None` when malformed.
fn leaf_cells(pages: &Pages, page: &[u8], n: u32) -> Option<Vec<(i64, u32)>> {
    let u = pages.usable;
    let (max_local, min_local) = (u - 35, (u - 12) * 32 / 255 - 23);
    cells(page, header_at(n), 8)?
        .into_iter()
        .map(|c| {
            let (payload, a) = varint(page, c)?;
            let (rowid, b) = varint(page, c + a)?;
            let payload = usize::try_from(payload).ok()?;
            if payload <= max_local {
                return Some((rowid as i64, 0));
            }
            let k = min_local + (payload - min_local) % (u - 4);
            let local = if k <= max_local { k } else { min_local };
            Some((rowid as i64, u32_at(page, c + a + b + local)?))
        })
        .collect()
}

/// Whether the overflow chains starting at `first` hold the same bytes in both files.
fn same_overflow(a: &Pages, b: &Pages, first: u32) -> std::io::Result<bool> {
    let (mut x, mut y, mut n, mut hops) = (Vec::new(), Vec::new(), first, 0u64);
    while n != 0 {
        hops += 1;
        if hops > a.count || !a.read(n, &mut x)? || !b.read(n, &mut y)? || x != y {
            return Ok(false);
        }
        n = u32_at(&x, 0).unwrap_or(0);
    }
    Ok(true)
}

/// The rowid ranges (inclusive, sorted, not overlapping) of the table whose b-tree is rooted
/// at `root_a` in `a` and at `root_b` in `b` outside which both versions hold the same rows;
/// `None` when this cannot be told from the pages (see the [module documentation](self)).
pub(crate) fn changed_rowid_ranges(
    a: &Path,
    root_a: u32,
    b: &Path,
    root_b: u32,
) -> std::io::Result<Option<Vec<(i64, i64)>>> {
    let (Some((pa, ha)), Some((pb, hb))) = (Pages::open(a)?, Pages::open(b)?) else {
        return Ok(None);
    };
    // Page size, reserved bytes and text encoding: equal bytes mean equal rows only then.
    if pa.page_size != pb.page_size || ha[20] != hb[20] || ha[56..60] != hb[56..60] {
        return Ok(None);
    }
    let (Some(la), Some(lb)) = (leaves(&pa, root_a)?, leaves(&pb, root_b)?) else {
        return Ok(None);
    };
    let in_b: HashMap<u32, ()> = lb.iter().map(|&n| (n, ())).collect();
    let mut shared: HashMap<u32, ()> = HashMap::new();
    let mut ranges = Vec::new();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for &n in &la {
        if !pa.read(n, &mut x)? {
            return Ok(None);
        }
        let Some(cells) = leaf_cells(&pa, &x, n) else {
            return Ok(None);
        };
        let same = in_b.contains_key(&n) && pb.read(n, &mut y)? && x == y && {
            let mut all = true;
            for &(_, first) in cells.iter().filter(|c| c.1 != 0) {
                if !same_overflow(&pa, &pb, first)? {
                    all = false;
                    break;
                }
            }
            all
        };
        if same {
            shared.insert(n, ());
        } else {
            ranges.extend(span(&cells));
        }
    }
    for &n in lb.iter().filter(|n| !shared.contains_key(n)) {
        if !pb.read(n, &mut y)? {
            return Ok(None);
        }
        let Some(cells) = leaf_cells(&pb, &y, n) else {
            return Ok(None);
        };
        ranges.extend(span(&cells));
    }
    Ok(Some(merge_ranges(ranges)))
}

/// The smallest and largest rowid of a leaf's cells (none for an empty leaf).
fn span(cells: &[(i64, u32)]) -> Option<(i64, i64)> {
    let lo = cells.iter().map(|c| c.0).min()?;
    let hi = cells.iter().map(|c| c.0).max()?;
    Some((lo, hi))
}

/// Sorts ranges and joins those that overlap or touch.
fn merge_ranges(mut ranges: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    ranges.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi.max(lo))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn root(db: &Path, table: &str) -> u32 {
        Connection::open(db)
            .unwrap()
            .query_row(
                "SELECT rootpage FROM sqlite_schema WHERE name = ?1",
                [table],
                |r| r.get(0),
            )
            .unwrap()
    }

    fn ranges(a: &Path, b: &Path, table: &str) -> Vec<(i64, i64)> {
        changed_rowid_ranges(a, root(a, table), b, root(b, table))
            .unwrap()
            .expect("pages comparable")
    }

    /// 20,000 rows of ~100 bytes in `t`, 50 rows with 20 KB blobs (overflow pages) in `big`.
    fn make(db: &Path) {
        let c = Connection::open(db).unwrap();
        c.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
             CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
             INSERT INTO t SELECT i, printf('row %d %s', i, hex(randomblob(40))) FROM n;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50)
             INSERT INTO big SELECT i, randomblob(20000) || x'4d41524b4552' || printf('%04d', i) FROM n;",
        )
        .unwrap();
    }

    #[test]
    fn one_changed_row_gives_the_rowids_of_one_leaf_and_nothing_elsewhere() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a.db"), d.path().join("b.db"));
        make(&a);
        std::fs::copy(&a, &b).unwrap();
        assert_eq!(ranges(&a, &b, "t"), vec![], "byte copies: nothing differs");
        Connection::open(&b)
            .unwrap()
            .execute("UPDATE t SET v = 'changed' WHERE id = 12345", [])
            .unwrap();
        let r = ranges(&a, &b, "t");
        assert_eq!(r.len(), 1, "{r:?}");
        let (lo, hi) = r[0];
        assert!(lo <= 12345 && 12345 <= hi, "{r:?}");
        assert!(hi - lo < 100, "one leaf's rows, not the table's: {r:?}");
        assert_eq!(
            ranges(&a, &b, "big"),
            vec![],
            "the other table is untouched"
        );
    }

    #[test]
    fn a_change_inside_an_overflow_page_alone_is_found() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a.db"), d.path().join("b.db"));
        make(&a);
        // Flip one byte of row 37's blob where it lies in an overflow page: its leaf page
        // stays byte for byte the same.
        let mut bytes = std::fs::read(&a).unwrap();
        let marker = b"MARKER0037";
        let at = bytes
            .windows(marker.len())
            .position(|w| w == marker)
            .expect("marker in the file");
        bytes[at - 1] ^= 0xff;
        std::fs::write(&b, &bytes).unwrap();
        let c = Connection::open(&b).unwrap();
        c.execute("ATTACH ?1 AS other", [a.to_string_lossy()])
            .unwrap();
        let changed: i64 = c
            .query_row(
                "SELECT count(*) FROM main.big x JOIN other.big o USING (id) WHERE x.b <> o.b",
                [],
                |r| r.get(0),
            )
            .unwrap();
        drop(c);
        assert_eq!(changed, 1, "exactly one blob differs");
        let r = ranges(&a, &b, "big");
        assert!(r.iter().any(|&(lo, hi)| lo <= 37 && 37 <= hi), "{r:?}");
        assert_eq!(ranges(&a, &b, "t"), vec![]);
    }

    #[test]
    fn after_a_vacuum_every_moved_row_is_inside_the_ranges() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a.db"), d.path().join("b.db"));
        make(&a);
        Connection::open(&a)
            .unwrap()
            .execute_batch("DELETE FROM t WHERE id % 3 = 0")
            .unwrap();
        std::fs::copy(&a, &b).unwrap();
        Connection::open(&b)
            .unwrap()
            .execute_batch(
                "DELETE FROM t WHERE id = 5; VACUUM; UPDATE t SET v = 'x' WHERE id = 19999",
            )
            .unwrap();
        let r = ranges(&a, &b, "t");
        for id in [5, 19999] {
            assert!(
                r.iter().any(|&(lo, hi)| lo <= id && id <= hi),
                "{id}: {r:?}"
            );
        }
    }

    #[test]
    fn another_page_size_or_a_wal_is_not_compared() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a.db"), d.path().join("b.db"));
        make(&a);
        std::fs::copy(&a, &b).unwrap();
        Connection::open(&b)
            .unwrap()
            .execute_batch("PRAGMA page_size = 8192; VACUUM;")
            .unwrap();
        let got = changed_rowid_ranges(&a, root(&a, "t"), &b, root(&b, "t")).unwrap();
        assert_eq!(got, None);
        std::fs::copy(&a, &b).unwrap();
        let c = Connection::open(&b).unwrap();
        c.execute_batch("PRAGMA journal_mode = WAL; UPDATE t SET v = 'w' WHERE id = 2;")
            .unwrap();
        let got = changed_rowid_ranges(&a, root(&a, "t"), &b, root(&b, "t")).unwrap();
        assert_eq!(got, None, "a WAL database's file alone is not its content");
    }

    #[test]
    fn ranges_that_touch_are_joined() {
        assert_eq!(
            merge_ranges(vec![(10, 20), (1, 3), (4, 6), (15, 30), (40, 40)]),
            vec![(1, 6), (10, 30), (40, 40)]
        );
    }
}
