//! The steady state: what a run that found every file in sync saw, kept so that the next run
//! can tell by stat alone that nothing has changed since (SPEC §4.1's no-op, made cheap).
//!
//! A run is *steady* when it wrote nothing and reported every file in sync, with no warning,
//! error or conflict, every location available and every location's version vouched for by
//! its scan cache. It then stores, in the same archive transaction, which files each location
//! held and the stat that vouched for each: a plain file's own, a database's with its `-wal`
//! and `-journal` (or their absence), so a write through either leaves the steady path.
//!
//! The next run may replay that run's outcome instead of loading the archive's records and
//! scan caches when all of these hold, which are everything a full run's decisions depend on:
//! - the archive is unchanged since: any write to its records, agreed versions, scan caches,
//!   conflicts or location ids drops the steady state (SQLite triggers do it, so it holds for
//!   every writer, older Metasyncs included);
//! - the same configuration, machine and locations (their [`key`]);
//! - every location lists exactly the files it held, and each is still what its cache entry
//!   says (same size, mtime, inode and ctime, not racy) or still absent
//!   ([`Steady::changed_in`]);
//! - no temp files to clean and no backups for retention to thin out;
//! - every database's base for row merges is still kept (else it is planned, and kept again).
//!
//! Then a full run would find every file through its cache entry, plan each as in sync and do
//! nothing; a test runs both and compares them. Anything else: the full run, as always.

use crate::archive::{CacheEntry, FileMap};
use crate::config::Config;
use crate::kind::Kind;
use crate::report::FileOutcome;
use crate::scan::{self, Beside, Found, Held, StillIn};
use sha2::{Digest, Sha256};
use std::path::Path;

const MAGIC: &[u8] = b"metasync-steady-4\n";

/// What a steady run saw, borrowed from its stored form (see [`Steady::decode`]).
#[derive(Debug)]
pub struct Steady<'a> {
    /// How many locations, in run order.
    pub locations: usize,
    /// Per file, sorted by name.
    pub files: Vec<SteadyFile<'a>>,
    /// What each file was in each location (see [`Steady::at`]).
    at: At<'a>,
}

/// Each file of a [`Steady`] by name (see [`Steady::names`]).
pub struct Names<'s>(rustc_hash::FxHashMap<&'s str, usize>);

/// Where a [`Steady`] keeps what each file was in each location, `file * locations +
/// location` for each.
#[derive(Debug)]
enum At<'a> {
    /// As a run found them.
    Built(Vec<Option<Held>>),
    /// In the stored form (checked whole by [`Steady::decode`]), at these offsets: each is
    /// decoded when asked for. Decoded up front they took 160 bytes each, most of a no-op's
    /// memory; an offset takes 4.
    Stored { bytes: &'a [u8], offsets: Vec<u32> },
}

impl PartialEq for Steady<'_> {
    fn eq(&self, other: &Self) -> bool {
        let cells = self.files.len() * self.locations;
        self.locations == other.locations
            && self.files == other.files
            && (0..cells).all(|c| {
                let (f, l) = (c / self.locations, c % self.locations);
                self.at(f, l) == other.at(f, l)
            })
    }
}

/// One file of a steady run, with the outcome the run reported for it.
#[derive(Debug, PartialEq)]
pub struct SteadyFile<'a> {
    /// Path relative to the location root.
    pub name: &'a str,
    /// The version every location holds (`None` when it is absent everywhere).
    pub sha256: Option<&'a str>,
    /// The reported reason.
    pub reason: &'a str,
}

impl<'a> Steady<'a> {
    /// A steady state of `files` in `locations`, with `at[file * locations + location]` what
    /// the file was there (the stat its cache entry vouched for), or `None`: absent there.
    pub fn new(locations: usize, files: Vec<SteadyFile<'a>>, at: Vec<Option<Held>>) -> Self {
        Steady {
            locations,
            files,
            at: At::Built(at),
        }
    }

    /// What file `file` was in location `location`.
    pub fn at(&self, file: usize, location: usize) -> Option<Held> {
        let cell = file * self.locations + location;
        match &self.at {
            At::Built(held) => held.get(cell).copied().flatten(),
            At::Stored { bytes, offsets } => {
                let from = *offsets.get(cell)? as usize;
                Reader(bytes.get(from..)?).held().flatten()
            }
        }
    }

    /// Whether file `file` was in location `location`: 0 absent, 1 a plain file, 2 a database
    /// (the stored form's tag, read without decoding the rest).
    fn tag(&self, file: usize, location: usize) -> u8 {
        let cell = file * self.locations + location;
        match &self.at {
            At::Built(held) => match held.get(cell) {
                Some(Some(h)) if h.database.is_some() => 2,
                Some(Some(_)) => 1,
                _ => 0,
            },
            At::Stored { bytes, offsets } => offsets
                .get(cell)
                .and_then(|&from| bytes.get(from as usize).copied())
                .unwrap_or(0),
        }
    }

    /// Whether file `file` was a database in some location.
    pub fn is_database(&self, file: usize) -> bool {
        (0..self.locations).any(|l| self.tag(file, l) == 2)
    }

    /// Each file by name, to look up a listing's names in (made once for every location).
    /// A listing comes in directory order, not sorted: one hash lookup per listed name costs
    /// a tenth of a binary search over the sorted names (whose compares miss the cache).
    pub fn names(&self) -> Names<'_> {
        Names(
            self.files
                .iter()
                .enumerate()
                .map(|(i, f)| (f.name, i))
                .collect(),
        )
    }

    /// What changed in location `location` (at `root`) since the run, given its listing (its
    /// synced files, in any order) and [`Steady::names`]: the files listed that it did not
    /// hold, the ones it held that are not listed or no longer what their stat was, and the
    /// ones it did not hold that are there after all. Empty: the location is as the run saw it.
    pub fn changed_in<'l>(
        &'l self,
        names: &Names<'_>,
        location: usize,
        root: &Path,
        listed: &'l [String],
    ) -> Vec<&'l str> {
        let mut here = StillIn::new(root);
        let mut seen = vec![false; self.files.len()];
        let mut changed = Vec::new();
        for name in listed {
            match names.0.get(name.as_str()).copied() {
                Some(i) if !seen[i] => {
                    seen[i] = true;
                    // Listed where it was absent, or no longer as it was.
                    let still = self
                        .at(i, location)
                        .is_some_and(|h| here.still(name, Some(&h)));
                    if !still {
                        changed.push(name.as_str());
                    }
                }
                _ => changed.push(name.as_str()),
            }
        }
        for (i, f) in self.files.iter().enumerate() {
            if !seen[i] && (self.tag(i, location) != 0 || !here.still(f.name, None)) {
                changed.push(f.name);
            }
        }
        changed
    }

    /// The stored form: a small length-prefixed binary record (each distinct reason once).
    pub fn encode(&self) -> Vec<u8> {
        let mut reasons: Vec<&str> = self.files.iter().map(|f| f.reason).collect();
        reasons.sort_unstable();
        reasons.dedup();
        let mut out = Vec::with_capacity(64 + self.files.len() * (96 + 41 * self.locations));
        out.extend_from_slice(MAGIC);
        put_u32(&mut out, self.locations);
        put_u32(&mut out, reasons.len());
        for r in &reasons {
            put_str(&mut out, r);
        }
        put_u32(&mut out, self.files.len());
        for (i, f) in self.files.iter().enumerate() {
            put_str(&mut out, f.name);
            match f.sha256 {
                Some(h) => {
                    out.push(1);
                    put_str(&mut out, h);
                }
                None => out.push(0),
            }
            put_u32(&mut out, reasons.binary_search(&f.reason).unwrap_or(0));
            for l in 0..self.locations {
                put_held(&mut out, self.at(i, l).as_ref());
            }
        }
        out
    }

    /// Reads the stored form back; `None` when it is not one (then the full run decides).
    pub fn decode(bytes: &'a [u8]) -> Option<Steady<'a>> {
        let mut r = Reader(bytes.strip_prefix(MAGIC)?);
        let locations = r.u32()?;
        let reasons: Vec<&str> = (0..r.u32()?.min(bytes.len()))
            .map(|_| r.str())
            .collect::<Option<_>>()?;
        let count = r.u32()?;
        let mut files = Vec::with_capacity(count.min(bytes.len()));
        let mut offsets = Vec::with_capacity(count.saturating_mul(locations).min(bytes.len()));
        for _ in 0..count {
            let name = r.str()?;
            let sha256 = match r.u8()? {
                0 => None,
                1 => Some(r.str()?),
                _ => return None,
            };
            let reason = reasons.get(r.u32()?)?;
            files.push(SteadyFile {
                name,
                sha256,
                reason,
            });
            for _ in 0..locations {
                offsets.push(u32::try_from(bytes.len() - r.0.len()).ok()?);
                r.skip_held()?;
            }
        }
        let sorted = files.windows(2).all(|w| w[0].name < w[1].name);
        (r.0.is_empty() && sorted).then_some(Steady {
            locations,
            files,
            at: At::Stored { bytes, offsets },
        })
    }
}

/// The steady state a run leaves, when it is one: every file reported in sync, and held in
/// each location as a file its cache entry vouches for (read this run: the entry it recorded
/// at `scan_time`), or absent. `found[location][file]` is the run's scan of `files`; `caches`
/// the scan caches it loaded; `roots` the locations' folders (a database's `-journal` is
/// looked at there). The run-wide conditions are the caller's: not a dry run, nothing
/// written, no warning, error or conflict, every location available, and for each database
/// the base its row merges need kept.
pub(crate) fn of_run<'a>(
    files: &'a [String],
    found: &'a [Vec<Found>],
    caches: &'a [FileMap<CacheEntry>],
    outcomes: &'a [FileOutcome],
    scan_time: i64,
    roots: &[&Path],
) -> Option<Steady<'a>> {
    let locations = found.len();
    if outcomes.len() != files.len()
        || caches.len() != locations
        || roots.len() != locations
        || locations == 0
    {
        return None;
    }
    let mut steady_files = Vec::with_capacity(files.len());
    let mut steady_at = Vec::with_capacity(files.len() * locations);
    for (fi, (file, outcome)) in files.iter().zip(outcomes).enumerate() {
        if outcome.file != *file
            || outcome.outcome != crate::model::Outcome::InSync
            || outcome.winner.is_some()
        {
            return None;
        }
        steady_files.push(SteadyFile {
            name: file,
            sha256: outcome.sha256.as_deref(),
            reason: &outcome.reason,
        });
        for (li, cache) in caches.iter().enumerate() {
            let at = Vouched {
                scan_time,
                root: roots[li],
            };
            steady_at.push(at.held(file, found[li].get(fi)?, cache)?);
        }
    }
    Some(Steady::new(locations, steady_files, steady_at))
}

/// Where and when a location was scanned, for [`Vouched::held`].
struct Vouched<'r> {
    scan_time: i64,
    root: &'r Path,
}

impl Vouched<'_> {
    /// What the scan `found` of `file` (with its `cache`) holds for the next run: `Some(None)`
    /// absent, `Some(Some(_))` a file its cache entry vouches for; `None`: nothing to vouch
    /// with (read while racy, skipped), so the run is not steady.
    fn held(&self, file: &str, found: &Found, cache: &FileMap<CacheEntry>) -> Option<Option<Held>> {
        let Found::Present {
            stat,
            content,
            hashed,
        } = found
        else {
            return matches!(found, Found::Absent).then_some(None);
        };
        let (at, vouched) = if *hashed {
            let sig = stat.signature();
            let ok = scan::signature_holds(&sig, self.scan_time, content.kind, stat);
            (self.scan_time, ok)
        } else {
            let e = cache.get(file)?;
            let ok = e.kind == content.kind
                && scan::signature_holds(&e.signature, e.scanned_ns, e.kind, stat);
            (e.scanned_ns, ok)
        };
        let held = match content.kind {
            Kind::Plain => Held::of(stat, at),
            Kind::Sqlite => Held::of_database(stat, at, &self.root.join(file)),
        };
        // A -journal written within the racy window of this scan vouches for nothing either.
        let settled = held
            .database
            .is_none_or(|b| b.journal_settled(self.scan_time));
        (vouched && settled).then_some(Some(held))
    }
}

/// What the next run does with a stored steady state, once each location is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Nothing changed: the steady run is replayed.
    Unchanged,
    /// Only the changed files are planned (from point lookups in the archive); every other
    /// file is in sync as the steady run saw it.
    Changed,
    /// Every file is planned, as without a steady state.
    All,
}

/// The [`Scope`] of a run that found `changed` of the steady run's `files` changed, with
/// `prunable` when retention could thin out some backup and `temps` when stale temp files
/// are to be cleaned. Point lookups beat loading the whole archive while few files changed:
/// up to an eighth of them, and never fewer than 64.
pub fn scope(changed: usize, files: usize, prunable: bool, temps: bool) -> Scope {
    if prunable || changed > (files / 8).max(64) {
        Scope::All
    } else if changed > 0 || temps {
        Scope::Changed
    } else {
        Scope::Unchanged
    }
}

/// What a run's decisions depend on besides the files and the archive: this Metasync, the
/// whole configuration, the machine, and each location with its availability. A steady state
/// stored under another key is not used.
pub fn key<'p>(
    config: &Config,
    machine: &str,
    places: impl IntoIterator<
        Item = (
            &'p crate::location::Location,
            &'p crate::location::Availability,
        ),
    >,
) -> String {
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION"));
    h.update(format!("\n{config:?}\n{machine}\n"));
    for (loc, availability) in places {
        h.update(format!("{loc:?} {availability:?}\n"));
    }
    crate::ids::hex_lower(&h.finalize())
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// A location's file: 0 absent, 1 a plain file, 2 a database (then its `-wal` and `-journal`).
fn put_held(out: &mut Vec<u8>, held: Option<&Held>) {
    let Some(h) = held else {
        out.push(0);
        return;
    };
    out.push(if h.database.is_some() { 2 } else { 1 });
    // File times are i128 (crate::times), the rest 64-bit.
    out.extend_from_slice(&h.size.to_le_bytes());
    out.extend_from_slice(&h.mtime_ns.to_le_bytes());
    out.extend_from_slice(&h.ino.to_le_bytes());
    out.extend_from_slice(&h.ctime_ns.to_le_bytes());
    out.extend_from_slice(&h.scanned_ns.to_le_bytes());
    if let Some(b) = h.database {
        for side in [b.wal, b.journal] {
            match side {
                Some((size, mtime)) => {
                    out.push(1);
                    out.extend_from_slice(&size.to_le_bytes());
                    out.extend_from_slice(&mtime.to_le_bytes());
                }
                None => out.push(0),
            }
        }
    }
}

/// Reads the stored form front to back.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<usize> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes(b.try_into().ok()?) as usize)
    }

    fn i64(&mut self) -> Option<i64> {
        let b = self.take(8)?;
        Some(i64::from_le_bytes(b.try_into().ok()?))
    }

    fn i128(&mut self) -> Option<i128> {
        let b = self.take(16)?;
        Some(i128::from_le_bytes(b.try_into().ok()?))
    }

    fn str(&mut self) -> Option<&'a str> {
        let n = self.u32()?;
        std::str::from_utf8(self.take(n)?).ok()
    }

    /// Steps over what [`put_held`] wrote, checking its tags (what [`Reader::held`] checks).
    fn skip_held(&mut self) -> Option<()> {
        // size, mtime, inode, ctime, when scanned; a side: size and mtime.
        const HELD: usize = 8 + 16 + 8 + 16 + 8;
        const SIDE: usize = 8 + 16;
        let sides = match self.u8()? {
            0 => return Some(()),
            1 => 0,
            2 => 2,
            _ => return None,
        };
        self.take(HELD)?;
        for _ in 0..sides {
            match self.u8()? {
                0 => {}
                1 => {
                    self.take(SIDE)?;
                }
                _ => return None,
            }
        }
        Some(())
    }

    /// What [`put_held`] wrote.
    fn held(&mut self) -> Option<Option<Held>> {
        let tag = self.u8()?;
        if tag == 0 {
            return Some(None);
        }
        let mut held = Held {
            size: self.i64()? as u64,
            mtime_ns: self.i128()?,
            ino: self.i64()? as u64,
            ctime_ns: self.i128()?,
            scanned_ns: self.i64()?,
            database: None,
        };
        match tag {
            1 => {}
            2 => {
                held.database = Some(Beside {
                    wal: self.side()?,
                    journal: self.side()?,
                })
            }
            _ => return None,
        }
        Some(Some(held))
    }

    fn side(&mut self) -> Option<Option<(u64, i128)>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some((self.i64()? as u64, self.i128()?))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_of_a_run_after_a_steady_one() {
        let cases = [
            // (changed, files, prunable, temps) -> scope
            ((0, 10_000, false, false), Scope::Unchanged),
            ((0, 10_000, false, true), Scope::Changed),
            ((1, 10_000, false, false), Scope::Changed),
            ((1_250, 10_000, false, false), Scope::Changed),
            ((1_251, 10_000, false, false), Scope::All),
            ((64, 2, false, false), Scope::Changed),
            ((65, 2, false, false), Scope::All),
            ((0, 10_000, true, false), Scope::All),
            ((1, 10_000, true, true), Scope::All),
        ];
        for ((changed, files, prunable, temps), want) in cases {
            assert_eq!(
                scope(changed, files, prunable, temps),
                want,
                "{changed} of {files}, prunable {prunable}, temps {temps}"
            );
        }
    }

    fn held(n: i64) -> Option<Held> {
        Some(Held {
            size: n as u64,
            mtime_ns: -i128::from(n) * 1_000_000_000_000,
            ino: 7 + n as u64,
            ctime_ns: i128::from(n) * 1_000 + i128::from(i64::MAX),
            scanned_ns: i64::MAX - n,
            database: None,
        })
    }

    /// A database's stat set, its -wal and -journal present or not by `n`'s bits.
    fn held_database(n: i64) -> Option<Held> {
        let side = |bit: i64| (n & bit != 0).then_some((n as u64 * 4_096, -i128::from(n)));
        Some(Held {
            database: Some(Beside {
                wal: side(1),
                journal: side(2),
            }),
            ..held(n)?
        })
    }

    fn sample() -> Steady<'static> {
        Steady::new(
            2,
            vec![
                SteadyFile {
                    name: "a/one.txt",
                    sha256: Some("11aa"),
                    reason: "every location holds it",
                },
                SteadyFile {
                    name: "gone.txt",
                    sha256: None,
                    reason: "deleted everywhere",
                },
                SteadyFile {
                    name: "z.txt",
                    sha256: Some("22bb"),
                    reason: "every location holds it",
                },
            ],
            vec![
                held(1),
                held(2),
                None,
                None,
                held_database(3),
                held_database(4),
            ],
        )
    }

    #[test]
    fn the_stored_form_reads_back_the_same() {
        let s = sample();
        let bytes = s.encode();
        assert_eq!(Steady::decode(&bytes), Some(s));
    }

    #[test]
    fn damaged_or_foreign_bytes_are_no_steady_state() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert_eq!(Steady::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Steady::decode(&longer), None);
        assert_eq!(Steady::decode(b"something else"), None);
        let mut unsorted = sample();
        unsorted.files.swap(0, 2);
        assert_eq!(Steady::decode(&unsorted.encode()), None);
    }

    /// A location at `root` holding `files` as they are now, vouched for.
    fn seen_now(root: &Path, files: &[&'static str], absent: &[&'static str]) -> Steady<'static> {
        let mut all: Vec<&'static str> = files.iter().chain(absent).copied().collect();
        all.sort_unstable();
        let at = all
            .iter()
            .map(|f| {
                let (stat, _) = scan::Stat::of_kind(&root.join(f), false).unwrap()?;
                Some(Held::of(
                    &stat,
                    i64::try_from(stat.ctime_ns).unwrap() + scan::RACY_NS + 1,
                ))
            })
            .collect();
        let files = all
            .into_iter()
            .map(|name| SteadyFile {
                name,
                sha256: None,
                reason: "r",
            })
            .collect();
        Steady::new(1, files, at)
    }

    #[test]
    fn a_location_is_still_only_with_the_same_files_as_they_were() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir(root.join("a")).unwrap();
        for f in ["a/one.txt", "z.txt"] {
            std::fs::write(root.join(f), f).unwrap();
        }
        let s = seen_now(root, &["a/one.txt", "z.txt"], &["gone.txt"]);
        let list = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let changed = |listed: &[&str]| {
            let listed = list(listed);
            let mut c: Vec<String> = s
                .changed_in(&s.names(), 0, root, &listed)
                .into_iter()
                .map(String::from)
                .collect();
            c.sort();
            c
        };
        let none: Vec<String> = Vec::new();
        assert_eq!(changed(&["z.txt", "a/one.txt"]), none);
        assert_eq!(changed(&["a/one.txt"]), ["z.txt"], "held, not listed");
        assert_eq!(changed(&["a/one.txt", "a/one.txt", "z.txt"]), ["a/one.txt"]);
        assert_eq!(changed(&["a/one.txt", "new.txt", "z.txt"]), ["new.txt"]);
        assert_eq!(
            changed(&["a/one.txt", "gone.txt", "z.txt"]),
            ["gone.txt"],
            "listed, was absent"
        );
        // A file not listed (say, under an unreadable folder) that is there after all.
        std::fs::write(root.join("gone.txt"), "back").unwrap();
        assert_eq!(changed(&["z.txt", "a/one.txt"]), ["gone.txt"]);
        std::fs::remove_file(root.join("gone.txt")).unwrap();
        // Rewritten with the same size: its ctime moved.
        std::fs::write(root.join("z.txt"), "Z.TXT").unwrap();
        assert_eq!(changed(&["z.txt", "a/one.txt"]), ["z.txt"]);
    }
}
