//! Rewriting a file in place so that its bytes equal another's, writing only the pages that
//! differ (how a row-merge base follows a one-row change without a second full copy).

use super::*;
use std::os::unix::fs::FileExt;

/// What [`rewrite_to_match`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rewritten {
    /// The 4096-byte pages of the new content compared (the last may be shorter).
    pub pages: u64,
    /// How many of them differed and were written.
    pub written: u64,
}

/// The unit compared and written: SQLite's default page size (any page size works: this is
/// only how finely the bytes are compared).
const PAGE: usize = 4096;
/// How much of each file is read at once.
const BLOCK: usize = 1 << 20;

/// Makes the existing file `target` hold exactly the bytes of `from`: each page of `from` is
/// compared with the same page of `target` and written only when it differs, then `target` is
/// cut (or grown) to the length read, and fsynced. Both files are read front to back once;
/// nothing is allocated in the page cache for the pages that were equal.
///
/// `target` is torn while this runs: the caller gives it a name nobody reads first. `from`
/// must hold still; the caller checks that it did (its stat signature before and after).
pub fn rewrite_to_match(target: &Path, from: &Path) -> Result<Rewritten> {
    let mut src = File::open(from).ctx("open", from)?;
    let out = OpenOptions::new()
        .read(true)
        .write(true)
        .open(target)
        .ctx("open", target)?;
    let (mut new, mut old) = (vec![0u8; BLOCK], vec![0u8; BLOCK]);
    let (mut offset, mut done) = (0u64, Rewritten::default());
    loop {
        let n = read_up_to(&mut src, &mut new).ctx("read", from)?;
        let m = read_at_up_to(&out, &mut old[..n], offset).ctx("read", target)?;
        for start in (0..n).step_by(PAGE) {
            let end = (start + PAGE).min(n);
            done.pages += 1;
            if end > m || new[start..end] != old[start..end] {
                out.write_all_at(&new[start..end], offset + start as u64)
                    .ctx("write", target)?;
                done.written += 1;
            }
        }
        offset += n as u64;
        if n < BLOCK {
            break;
        }
    }
    out.set_len(offset).ctx("set the length of", target)?;
    out.sync_all().ctx("fsync", target)?;
    Ok(done)
}

/// Reads from `offset` until `buf` is full or the file ends; how many bytes were read.
fn read_at_up_to(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn a_rewritten_file_holds_the_new_bytes_and_only_differing_pages_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let (target, from) = (dir.path().join("t"), dir.path().join("f"));
        let old = bytes(3 * BLOCK + 5000, 7);
        // (the new content's length, the pages changed in it, pages expected written)
        let cases: &[(usize, &[usize], u64)] = &[
            (old.len(), &[], 0),
            (old.len(), &[0, 300, 769], 3),
            // Shorter: only the edited page; the tail is cut.
            (2 * BLOCK + 100, &[5], 1),
            // Longer: the edited page, the old last (partial) page and the 254 new ones.
            (4 * BLOCK, &[1], 1 + 1 + (BLOCK / PAGE) as u64 - 2),
        ];
        for &(len, changed, expect) in cases {
            std::fs::write(&target, &old).unwrap();
            let mut new = bytes(len.max(old.len()), 7);
            new.truncate(len);
            for &p in changed {
                new[p * PAGE + 10] ^= 0x5a;
            }
            std::fs::write(&from, &new).unwrap();
            let done = rewrite_to_match(&target, &from).unwrap();
            assert_eq!(std::fs::read(&target).unwrap(), new, "len {len}");
            assert_eq!(done.pages, len.div_ceil(PAGE) as u64);
            assert_eq!(done.written, expect, "len {len}, changed {changed:?}");
        }
        let err = rewrite_to_match(&dir.path().join("missing"), &from).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
