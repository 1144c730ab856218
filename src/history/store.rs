//! A location's compact version store, `.metasync/history/` (SPEC §5 "History").
//!
//! # Layout
//!
//! - `packs/<sha256>.pack`: chunks end to end, then the pack's own index (each chunk's
//!   stored length and hash, in order) and a trailer (index length, chunk count,
//!   `MSPACK2\n`); named by the hash of its own bytes, so a name is written once and always
//!   means the same bytes (two machines writing the same pack write the same file).
//! - `manifests/<id>.json` (format 4; 3 had XOR deltas only, 2 no LZ4 chunks and no
//!   BLAKE3; both still read):
//!   one per version (file, created, size, byte hash —
//!   SHA-256, and BLAKE3 since chunks are LZ4 —, logical hash for databases, counts,
//!   protection, its packs, and its chunks as *runs*:
//!   pack, first chunk number in that pack's index, count). A version that shares most of
//!   its pages with an earlier one is a few runs of the earlier one's chunks, not a line per
//!   page, and every manifest still stands alone (no manifest refers to another; its byte
//!   hash checks the rebuilt whole). Its id is the hash of the plain backup's relative path the version had, so moving
//!   the same backup twice (two machines, a retried run) names the same manifest.
//! - `packs/<sha256>.unused`: a collection's note that this pack was found unreferenced,
//!   and when.
//!
//! Each chunk is kept compressed when that makes it smaller (a leading byte says how: 0 raw,
//! 3 LZ4 block; 1, deflate, as earlier versions wrote, still reads); its hash (the first 128
//! bits of SHA-256, in hex) is of its content.
//!
//! A database page that changed since the version stored before it (of the same file) is
//! kept as a *delta* when that is at most a quarter ([`REBASE`]; format 4 as first written:
//! half) of the page as stored whole, else stored whole again, the base of the pages after
//! it. A delta is a leading 4, the hash of its base, and the page compressed by zstd with
//! the base as its dictionary (a page changed by a row costs about that row, even when the
//! rows after it moved; format 3's deltas, a leading 2 and the deflated XOR of page and
//! base, still read). The base is always a full chunk — the same page of the previous
//! version, or that page's own base (chains of depth 1) — and the manifest lists it among
//! its `bases`, so collection keeps it and a restore reads it first. Index entries of
//! deltas carry [`DELTA_BIT`] in their length.
//!
//! A database version is stored as its pages (the backup file read in page-size blocks: a
//! backup-API snapshot keeps page numbers, so consecutive versions share almost every
//! page); any other file as content-defined chunks (FastCDC). A chunk already in a pack
//! that no collection has marked unused is not written again.
//!
//! # Crash safety
//!
//! Writes go to a temp file in the same folder, fsynced, renamed, then the folder is
//! fsynced: packs first, the manifest last. A crash leaves at worst a temp file or a pack
//! no manifest references, which a later collection removes.
//!
//! # Collection, shared by several machines
//!
//! [`Store::collect`] removes only packs that no manifest references, in two steps at least
//! [`GRACE`] apart: first it marks such a pack `.unused`; a later collection that finds
//! the mark old enough re-reads every manifest and deletes the pack only if still none
//! references it (a referenced pack loses its mark). A writer never references a marked
//! pack, and finishes within seconds, well inside the grace: so a manifest being written by
//! another machine while a pack is marked either avoids that pack or is seen by the
//! re-read. Packs more than a quarter dead, or many small ones, are repacked: their live
//! chunks are written into a new pack, every manifest is rewritten (by rename) to point at
//! it, and only then are the old packs left unreferenced. An interrupted collection loses
//! nothing: every manifest always points at packs that exist. An unreadable manifest stops
//! a collection from deleting anything.

use crate::error::{Error, IoContext, Result};
use crate::failpoint;
use crate::history::policy::Protected;
use chrono::{DateTime, Duration, Utc};
use miniz_oxide::inflate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The manifest layout: 2 lists runs of chunks, each pack holding the index of its chunks;
/// 3 may refer to LZ4 chunks and records a BLAKE3; 4 may refer to zstd deltas. A manifest of a later format (a newer
/// Metasync on another machine) is left alone: not listed, and it stops collection, as an
/// unreadable one does, so nothing it refers to is deleted.
pub const FORMAT: u32 = 4;
/// The store's folder inside a location's state folder.
pub const HISTORY_DIR: &str = "history";
/// A pack is closed once it holds this many bytes.
pub const PACK_TARGET: usize = 4 << 20;
/// How long a pack stays marked unused before a collection may delete it.
pub const GRACE: Duration = Duration::hours(1);
/// Repacking starts once this many packs are smaller than a quarter of [`PACK_TARGET`].
const SMALL_PACKS: usize = 8;
/// Packs below this size count as small.
const SMALL_PACK_BYTES: u64 = 128 << 10;
const CDC_MIN: u32 = 2048;
const CDC_AVG: u32 = 8192;
const CDC_MAX: u32 = 65536;

/// Why a version is protected, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Protection {
    /// Why.
    pub reason: Protected,
    /// Since when.
    pub since: DateTime<Utc>,
}

/// A run of a version's chunks: `.2` consecutive chunks of one pack (`.0`, its slot in the
/// manifest's packs) from its chunk number `.1` (in the pack's own index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run(pub usize, pub u32, pub u32);

/// One chunk in a pack's index: where it is, and the hash of its content.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    off: u64,
    len: u32,
    hash: String,
    /// A delta against a base chunk (named in its stored bytes).
    delta: bool,
}

/// The end of every pack: `MSPACK2\n` after its index.
const PACK_MAGIC: &[u8; 8] = b"MSPACK2\n";
/// Bytes of an index entry: stored length (u32, little-endian), then 16 bytes of hash.
const ENTRY_BYTES: usize = 20;
/// In an index entry's length, the bit saying the chunk is a delta against a base chunk.
const DELTA_BIT: u32 = 1 << 31;

/// What is known of a version before it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The synced file it is a version of.
    pub file: String,
    /// The relative path of the plain backup it was (its identity).
    pub name: String,
    /// When it was made.
    pub created: DateTime<Utc>,
    /// Whether it is a SQLite database (stored by pages).
    pub database: bool,
    /// Its logical hash (databases), checked on every restore.
    pub logical: Option<String>,
    /// Row count of `entities`, for databases.
    pub entities: Option<u64>,
    /// Row count of `conversations`, for databases.
    pub conversations: Option<u64>,
    /// When protected: why and since when.
    pub protected: Option<Protection>,
}

/// A stored version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The layout version.
    pub format: u32,
    /// What was known of it.
    #[serde(flatten)]
    pub info: VersionInfo,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// BLAKE3 of the same bytes, taken with the SHA-256 when it was stored: what a restore
    /// checks the rebuilt bytes against (several times faster to compute); a version stored
    /// without one (by an earlier version) is checked against its SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// The packs its chunks are in (names without `.pack`).
    pub packs: Vec<String>,
    /// Its chunks in order, as runs of consecutive chunks of a pack: a version sharing most
    /// pages with an earlier one lists a few runs, not every page.
    pub runs: Vec<Run>,
    /// The base chunks its delta chunks are stored against (runs, as `runs`): listed so that
    /// collection keeps them and a restore reads them first; never deltas themselves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bases: Vec<Run>,
}

impl Manifest {
    /// The manifest id of the plain backup at relative path `name`.
    pub fn id_of(name: &str) -> String {
        crate::ids::hex_lower(&Sha256::digest(name.as_bytes()))[..32].to_string()
    }
}

/// The store of one location.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// What a collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// Packs written by repacking.
    pub repacked: usize,
    /// Packs marked unused this time.
    pub marked: usize,
    /// Packs deleted.
    pub deleted: usize,
}

fn sha_hex(bytes: &[u8]) -> String {
    crate::ids::sha256_hex(bytes)
}

/// A chunk's hash: the first 128 bits of its SHA-256.
fn chunk_hash(bytes: &[u8]) -> String {
    crate::ids::hex_lower(&Sha256::digest(bytes)[..16])
}

/// A chunk as stored: LZ4-compressed when that is smaller, behind a byte saying which (3
/// LZ4, 0 raw). LZ4 inflates several times faster than deflate, which a restore of a large
/// database spends most of its time on; chunks deflated by earlier versions (1) still read.
fn encode(chunk: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 1 + lz4_flex::block::get_maximum_output_size(chunk.len())];
    match lz4_flex::block::compress_into(chunk, &mut out[1..]) {
        Ok(n) if n < chunk.len() => {
            out[0] = 3;
            out.truncate(1 + n);
        }
        _ => {
            out.truncate(1);
            out.extend_from_slice(chunk);
        }
    }
    out
}

/// A stored chunk's content.
fn decode(stored: &[u8]) -> Option<Vec<u8>> {
    match stored.split_first()? {
        (0, raw) => Some(raw.to_vec()),
        (1, deflated) => {
            let mut out = Vec::new();
            flate2::read::DeflateDecoder::new(deflated)
                .read_to_end(&mut out)
                .ok()?;
            Some(out)
        }
        (3, lz4) => {
            let mut out = vec![0u8; MAX_CHUNK];
            let n = lz4_flex::block::decompress_into(lz4, &mut out).ok()?;
            out.truncate(n);
            Some(out)
        }
        _ => None,
    }
}

/// Where a chunk is stored: pack slot (in its manifest), offset, stored length.
type Place = (usize, u64, u32);

/// Chunks per batch when a version is rebuilt (256 KB of 4 KB pages). Each batch in flight
/// holds a buffer of its own (a worker's, one waiting to be written, one being hashed):
/// small batches keep few of them, and fresh memory (zeroed by the kernel as it is first
/// touched) was a tenth of a restore's time with a megabyte each.
const BATCH: usize = 64;
/// Threads inflating a version's chunks at most.
const MAX_WORKERS: usize = 4;
/// The largest chunk content: a page (64 KB at most) or a CDC chunk ([`CDC_MAX`]).
const MAX_CHUNK: usize = 65536;

fn mismatch(m: &Manifest) -> Error {
    Error::Refused(format!(
        "the rebuilt {} does not match its hash",
        m.info.name
    ))
}

/// A worker's decompressors, kept for all the chunks it decodes: one for deflated chunks
/// and deltas of format 3, one for the zstd deltas of format 4.
pub(crate) struct Decoders {
    inflate: inflate::core::DecompressorOxide,
    zstd: zstd::zstd_safe::DCtx<'static>,
}

impl Decoders {
    fn new() -> Decoders {
        Decoders {
            inflate: inflate::core::DecompressorOxide::new(),
            zstd: zstd::zstd_safe::DCtx::create(),
        }
    }
}

/// Writes a stored chunk's content at `out[*pos..]` and moves `pos` past it: deflated
/// chunks are inflated straight into `out` (a non-wrapping output buffer: no window copied,
/// nothing zeroed per chunk), `out` growing when a chunk might not fit.
fn decode_at(
    stored: &[u8],
    d: &mut Decoders,
    bases: &HashMap<String, Vec<u8>>,
    out: &mut Vec<u8>,
    pos: &mut usize,
) -> Option<()> {
    if out.len() < *pos + MAX_CHUNK {
        out.resize((*pos + MAX_CHUNK).max(out.len() * 2), 0);
    }
    match stored.split_first()? {
        (0, raw) => {
            out.get_mut(*pos..*pos + raw.len())?.copy_from_slice(raw);
            *pos += raw.len();
        }
        (1, deflated) => {
            let z = &mut d.inflate;
            z.init();
            let flags = inflate::core::inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
            let window = &mut out[*pos..*pos + MAX_CHUNK];
            let (status, read, written) = inflate::core::decompress(z, deflated, window, 0, flags);
            if status != inflate::TINFLStatus::Done || read != deflated.len() {
                return None;
            }
            *pos += written;
        }
        (3, lz4) => {
            let window = &mut out[*pos..*pos + MAX_CHUNK];
            *pos += lz4_flex::block::decompress_into(lz4, window).ok()?;
        }
        (2, delta) => {
            let (base_hash, deflated) = delta.split_at_checked(16)?;
            let base = bases.get(&crate::ids::hex_lower(base_hash))?;
            let z = &mut d.inflate;
            z.init();
            let flags = inflate::core::inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
            let window = &mut out[*pos..*pos + MAX_CHUNK];
            let (status, read, written) = inflate::core::decompress(z, deflated, window, 0, flags);
            if status != inflate::TINFLStatus::Done || read != deflated.len() {
                return None;
            }
            if written != base.len() {
                return None;
            }
            for (o, b) in window[..written].iter_mut().zip(base) {
                *o ^= b;
            }
            *pos += written;
        }
        (4, delta) => {
            let (base_hash, frame) = delta.split_at_checked(16)?;
            let base = bases.get(&crate::ids::hex_lower(base_hash))?;
            let window = &mut out[*pos..*pos + MAX_CHUNK];
            let written = d.zstd.decompress_using_dict(window, frame, base).ok()?;
            if written != base.len() {
                return None;
            }
            *pos += written;
        }
        _ => return None,
    }
    Some(())
}

/// Decodes a batch of chunks, in order, into `out[..n]`; returns `n`. Runs of chunks
/// adjacent in one pack are read with one positioned read into `stored`. Both buffers are
/// the caller's, kept from batch to batch: they only grow, so nothing is zeroed again.
fn decode_batch(
    batch: &[Place],
    packs: &[(PathBuf, std::fs::File)],
    d: &mut Decoders,
    bases: &HashMap<String, Vec<u8>>,
    (out, stored): (&mut Vec<u8>, &mut Vec<u8>),
) -> Result<usize> {
    let need = batch.len() * 4096 + MAX_CHUNK;
    if out.len() < need {
        out.resize(need, 0);
    }
    let mut pos = 0;
    let mut i = 0;
    while i < batch.len() {
        let (slot, start, _) = batch[i];
        let mut end = i;
        let mut to = start;
        while end < batch.len() && batch[end].0 == slot && batch[end].1 == to {
            to += u64::from(batch[end].2);
            end += 1;
        }
        let (path, file) = &packs[slot];
        stored.resize((to - start) as usize, 0);
        read_at(file, stored, start).ctx("read pack", path)?;
        let mut at = 0;
        for &(_, _, len) in &batch[i..end] {
            let piece = &stored[at..at + len as usize];
            at += len as usize;
            decode_at(piece, d, bases, out, &mut pos).ok_or_else(|| {
                Error::Refused(format!("{} is damaged at {}", path.display(), start))
            })?;
        }
        i = end;
    }
    Ok(pos)
}

/// Decoded bytes: a buffer and how much of it holds them.
type Decoded = (Vec<u8>, usize);

/// Hashes the decoded batches received, in order (BLAKE3 when `quick`, else SHA-256), and
/// hands each buffer back to the decoders; the hex digest.
fn hash_batches(
    quick: bool,
    batches: std::sync::mpsc::Receiver<Decoded>,
    recycle: std::sync::mpsc::Sender<Vec<u8>>,
) -> String {
    let mut b3 = quick.then(blake3::Hasher::new);
    let mut sha = (!quick).then(Sha256::new);
    for (buf, n) in batches {
        if let Some(h) = b3.as_mut() {
            h.update(&buf[..n]);
        }
        if let Some(h) = sha.as_mut() {
            h.update(&buf[..n]);
        }
        let _ = recycle.send(buf);
    }
    match (b3, sha) {
        (Some(h), _) => h.finalize().to_hex().to_string(),
        (_, Some(h)) => crate::ids::hex_lower(&h.finalize()),
        _ => String::new(),
    }
}

/// The file a version is rebuilt into. The rebuilt bytes come in large pieces (a batch of
/// chunks each), so they are written as they come, with no buffer between. Every [`KICK`]
/// bytes the kernel is asked to start writing the ones before to disk, so that the closing
/// fsync finds little left to write and the disk works while later chunks are decoded.
struct Output {
    file: std::fs::File,
    written: u64,
    kicked: u64,
}

/// Bytes written between two requests to start writing them to disk.
const KICK: u64 = 8 << 20;

impl Output {
    /// `file`, new and empty, which will hold `size` bytes: on Linux the blocks are reserved
    /// up front (one allocation instead of one per writeback); where that is not supported
    /// nothing is (the writes still allocate as they go).
    fn new(file: std::fs::File, size: u64) -> Output {
        #[cfg(target_os = "linux")]
        if size > 0 {
            let _ = rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::KEEP_SIZE, 0, size);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = size;
        Output {
            file,
            written: 0,
            kicked: 0,
        }
    }

    /// Asks the kernel to start writing back the bytes written since the last request
    /// (Linux: `posix_fadvise(DONTNEED)` starts the writeback of a range without waiting for
    /// it; pages still being written stay cached). Elsewhere the closing fsync does it all.
    fn kick(&mut self) {
        #[cfg(target_os = "linux")]
        {
            let len = std::num::NonZeroU64::new(self.written - self.kicked);
            let advice = rustix::fs::Advice::DontNeed;
            let _ = rustix::fs::fadvise(&self.file, self.kicked, len, advice);
        }
        self.kicked = self.written;
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.kicked >= KICK {
            self.kick();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Reads exactly `buf.len()` bytes of `file` at `offset`, without moving a shared cursor.
fn read_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            let n = std::os::windows::fs::FileExt::seek_read(
                file,
                &mut buf[done..],
                offset + done as u64,
            )?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
        Ok(())
    }
}

/// A chunk hash's 16 bytes, from its hex.
fn raw_hash(hash: &str) -> [u8; 16] {
    let mut raw = [0u8; 16];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = hash
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
    }
    raw
}

/// The zstd level of deltas: they are small (a page or so), so a high level costs little.
const DELTA_LEVEL: i32 = 19;

/// A page is stored whole again, as the base of the versions after it, once its delta
/// against its base exceeds this fraction (1/4) of the page stored whole. Rows that all
/// drift (every row rewritten within a few days, as five-minute edits do) leave a base
/// whose every row differs from today's; a half-page threshold kept such bases for good
/// and made every later kept version pay the whole drift again (~23 KB a daily version
/// of the database, against ~13 KB from a base renewed after the drift).
const REBASE: usize = 4;

/// A page stored as a delta against `base` (same size): a leading 4, the base's hash, then
/// the page compressed by zstd with the base as its dictionary. A row rewritten with a
/// different length moves the cells after it; the compressor finds them in the base
/// where they were, so the delta stays about the size of what changed. (Format 3 stored
/// the deflated XOR of page and base, a leading 2, which a moved cell turned into noise.)
fn encode_delta(page: &[u8], base: &[u8], base_hash: &str) -> Option<Vec<u8>> {
    let mut frame = Vec::with_capacity(zstd::zstd_safe::compress_bound(page.len()));
    zstd::zstd_safe::CCtx::create()
        .compress_using_dict(&mut frame, page, base, DELTA_LEVEL)
        .ok()?;
    let mut out = Vec::with_capacity(17 + frame.len());
    out.push(4u8);
    out.extend_from_slice(&raw_hash(base_hash));
    out.extend_from_slice(&frame);
    Some(out)
}

/// Appends a pack's index and trailer to its chunks: per chunk its stored length and hash
/// ([`ENTRY_BYTES`]), then the index's length and the chunk count (u32, little-endian)
/// and [`PACK_MAGIC`]. A pack thus describes itself, and a manifest names its chunks by
/// their numbers in it.
fn seal_pack(buf: &mut Vec<u8>, entries: &[(u32, String)]) {
    for (len, hash) in entries {
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&raw_hash(hash));
    }
    let index = (entries.len() * ENTRY_BYTES) as u32;
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    buf.extend_from_slice(PACK_MAGIC);
}

/// The entries of a pack's index, from the pack's trailer and index (`tail`, the pack's last
/// bytes) and the pack's length; `None` when they do not describe the pack.
fn parse_index(tail: &[u8], pack_len: u64) -> Option<Vec<Entry>> {
    let (body, trailer) = tail.split_at(tail.len().checked_sub(16)?);
    if &trailer[8..] != PACK_MAGIC {
        return None;
    }
    let index = u32::from_le_bytes(trailer[..4].try_into().ok()?) as usize;
    let count = u32::from_le_bytes(trailer[4..8].try_into().ok()?) as usize;
    if index != count.checked_mul(ENTRY_BYTES)? || body.len() < index {
        return None;
    }
    let mut off = 0u64;
    let mut out = Vec::with_capacity(count);
    for raw in body[body.len() - index..].chunks_exact(ENTRY_BYTES) {
        let raw_len = u32::from_le_bytes(raw[..4].try_into().ok()?);
        let len = raw_len & !DELTA_BIT;
        out.push(Entry {
            off,
            len,
            hash: crate::ids::hex_lower(&raw[4..]),
            delta: raw_len & DELTA_BIT != 0,
        });
        off += u64::from(len);
    }
    (off + index as u64 + 16 == pack_len).then_some(out)
}

/// Fsyncs a folder, so that a rename in it survives a crash.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("fsync folder", dir)
}

/// Writes `bytes` to `dest` durably: temp file, fsync, rename, fsync of the folder.
fn write_durably(dest: &Path, bytes: &[u8]) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).ctx("create folder", dir)?;
    let tmp = dir.join(format!(".tmp-{}", crate::ids::random_hex(12)));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
        .ctx("write", &tmp);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, dest).ctx("rename into place", dest)?;
    sync_dir(dir)
}

/// The page size in a SQLite header, when it is a valid one.
fn page_size(header: &[u8]) -> Option<usize> {
    let raw = u16::from_be_bytes([*header.get(16)?, *header.get(17)?]);
    let size = if raw == 1 { 65536 } else { usize::from(raw) };
    (size >= 512 && size.is_power_of_two()).then_some(size)
}

/// Where a chunk already is: its pack, its number there, and whether it is a delta.
type Index = HashMap<String, (String, u32, bool)>;

/// A manifest being built: its packs, runs, bases, and the pack being filled.
struct Builder<'s> {
    store: &'s Store,
    index: Index,
    packs: Vec<String>,
    runs: Runs,
    /// Chunks of the pack being filled: hash → number.
    open: HashMap<String, u32>,
    /// The index of the pack being filled: stored length (with [`DELTA_BIT`]) and hash.
    entries: Vec<(u32, String)>,
    open_at: Option<usize>,
    buf: Vec<u8>,
    bytes: Sha256,
    quick: blake3::Hasher,
    size: u64,
    /// The pages of the version stored before this one (pack, number), for deltas.
    parent: Vec<(String, u32)>,
    /// The number of the next page added.
    page: usize,
    /// The base chunks of this version's deltas.
    bases: BTreeSet<(String, u32)>,
    /// Pack indexes read so far.
    read: HashMap<String, Vec<Entry>>,
}

impl<'s> Builder<'s> {
    fn new(store: &'s Store, index: Index, parent: Vec<(String, u32)>) -> Self {
        Builder {
            store,
            index,
            packs: Vec::new(),
            runs: Runs(Vec::new()),
            open: HashMap::new(),
            entries: Vec::new(),
            open_at: None,
            buf: Vec::new(),
            bytes: Sha256::new(),
            quick: blake3::Hasher::new(),
            size: 0,
            parent,
            page: 0,
            bases: BTreeSet::new(),
            read: HashMap::new(),
        }
    }

    fn pack_slot(&mut self, name: &str) -> usize {
        match self.packs.iter().position(|p| p == name) {
            Some(i) => i,
            None => {
                self.packs.push(name.to_string());
                self.packs.len() - 1
            }
        }
    }

    /// The index entry of chunk `n` of the written pack `pack`.
    fn entry(&mut self, pack: &str, n: u32) -> Option<Entry> {
        if !self.read.contains_key(pack) {
            let entries = self.store.pack_index(pack).ok()?;
            self.read.insert(pack.to_string(), entries);
        }
        self.read.get(pack)?.get(n as usize).cloned()
    }

    /// The stored bytes of chunk `n` of the written pack `pack`.
    fn stored(&mut self, pack: &str, n: u32) -> Option<(Entry, Vec<u8>)> {
        let e = self.entry(pack, n)?;
        let file = std::fs::File::open(self.store.pack_path(pack)).ok()?;
        let mut bytes = vec![0u8; e.len as usize];
        read_at(&file, &mut bytes, e.off).ok()?;
        Some((e, bytes))
    }

    /// The full chunk a chunk stands on: itself, or the base of a delta — found through the
    /// index, so never in a pack marked unused (a writer never references one) or unreadable.
    fn full_of(&mut self, pack: &str, n: u32) -> Option<(String, u32)> {
        let (e, bytes) = self.stored(pack, n)?;
        let base = match e.delta {
            false => e.hash,
            true => crate::ids::hex_lower(bytes.get(1..17)?),
        };
        match self.index.get(&base) {
            Some((p, m, false)) => Some((p.clone(), *m)),
            _ => None,
        }
    }

    /// The page stored as a delta against the same page of the parent version (its full
    /// chunk), when that is at most [`REBASE`] of `full` (the page stored whole); and that
    /// base.
    fn delta_for(&mut self, page: &[u8], full: &[u8]) -> Option<(Vec<u8>, (String, u32))> {
        let (pack, n) = self.parent.get(self.page)?.clone();
        let (bp, bn) = self.full_of(&pack, n)?;
        let (e, bytes) = self.stored(&bp, bn)?;
        let base = decode(&bytes).filter(|b| b.len() == page.len() && chunk_hash(b) == e.hash)?;
        let delta = encode_delta(page, &base, &e.hash)?;
        (delta.len() * REBASE <= full.len()).then_some((delta, (bp, bn)))
    }

    fn add(&mut self, chunk: &[u8]) -> Result<()> {
        self.bytes.update(chunk);
        self.quick.update(chunk);
        self.size += chunk.len() as u64;
        let hash = chunk_hash(chunk);
        let known = self.index.get(&hash).cloned();
        let reuse = match known {
            Some((pack, n, true)) => self.full_of(&pack, n).map(|base| ((pack, n), Some(base))),
            Some((pack, n, false)) => Some(((pack, n), None)),
            None => None,
        };
        if let Some(((pack, n), base)) = reuse {
            self.bases.extend(base);
            let slot = self.pack_slot(&pack);
            self.runs.push(slot, n);
        } else if !self.open.contains_key(&hash) {
            let full = encode(chunk);
            match self.delta_for(chunk, &full) {
                Some((delta, base)) => {
                    self.bases.insert(base);
                    self.add_stored(hash, |_| delta, chunk, DELTA_BIT)?;
                }
                None => {
                    self.add_stored(hash, |_| full, chunk, 0)?;
                }
            }
        } else {
            self.add_stored(hash, encode, chunk, 0)?;
        }
        self.page += 1;
        Ok(())
    }

    /// Adds a chunk of hash `hash` to the pack being filled (once), stored as
    /// `stored(content)` with `flag` in its index entry; returns where it is (slot, number).
    fn add_stored(
        &mut self,
        hash: String,
        stored: impl FnOnce(&[u8]) -> Vec<u8>,
        content: &[u8],
        flag: u32,
    ) -> Result<(usize, u32)> {
        let slot = *self.open_at.get_or_insert_with(|| {
            self.packs.push(String::new());
            self.packs.len() - 1
        });
        let n = match self.open.get(&hash) {
            Some(n) => *n,
            None => {
                let bytes = stored(content);
                self.buf.extend_from_slice(&bytes);
                self.entries.push((bytes.len() as u32 | flag, hash.clone()));
                let n = (self.entries.len() - 1) as u32;
                self.open.insert(hash, n);
                n
            }
        };
        self.runs.push(slot, n);
        if self.buf.len() >= PACK_TARGET {
            self.flush()?;
        }
        Ok((slot, n))
    }

    /// Writes the pack being filled, with its index, under its own hash.
    fn flush(&mut self) -> Result<()> {
        let Some(slot) = self.open_at.take() else {
            return Ok(());
        };
        seal_pack(&mut self.buf, &self.entries);
        let name = self.store.write_pack(&self.buf)?;
        for (hash, n) in self.open.drain() {
            let delta = self.entries[n as usize].0 & DELTA_BIT != 0;
            self.index.insert(hash, (name.clone(), n, delta));
        }
        self.packs[slot] = name;
        self.buf.clear();
        self.entries.clear();
        Ok(())
    }

    fn finish(mut self, info: VersionInfo) -> Result<Manifest> {
        self.flush()?;
        let mut bases = Runs(Vec::new());
        for (pack, n) in std::mem::take(&mut self.bases) {
            let slot = self.pack_slot(&pack);
            bases.push(slot, n);
        }
        Ok(Manifest {
            format: FORMAT,
            info,
            size: self.size,
            sha256: crate::ids::hex_lower(&self.bytes.finalize()),
            blake3: Some(self.quick.finalize().to_hex().to_string()),
            packs: self.packs,
            runs: self.runs.0,
            bases: bases.0,
        })
    }
}

impl Store {
    /// The store of the location rooted at `root`.
    pub fn of_location(root: &Path) -> Store {
        Store {
            dir: root.join(crate::names::STATE_DIR).join(HISTORY_DIR),
        }
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn packs_dir(&self) -> PathBuf {
        self.dir.join("packs")
    }

    fn manifests_dir(&self) -> PathBuf {
        self.dir.join("manifests")
    }

    fn pack_path(&self, name: &str) -> PathBuf {
        self.packs_dir().join(format!("{name}.pack"))
    }

    fn mark_path(&self, name: &str) -> PathBuf {
        self.packs_dir().join(format!("{name}.unused"))
    }

    /// The path of the manifest with this id.
    pub fn manifest_path(&self, id: &str) -> PathBuf {
        self.manifests_dir().join(format!("{id}.json"))
    }

    /// Writes a pack durably under its own hash (a pack of those bytes already there and not
    /// marked unused is used as it is; a marked one is never reused, its name may be about to
    /// be deleted: the new pack then gets a fresh name); returns its name.
    fn write_pack(&self, bytes: &[u8]) -> Result<String> {
        let mut name = sha_hex(bytes);
        let path = self.pack_path(&name);
        match std::fs::metadata(&path) {
            Ok(m) if m.len() == bytes.len() as u64 && !self.mark_path(&name).exists() => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_durably(&path, bytes)?,
            _ => {
                name = format!("{name}-{}", crate::ids::random_hex(8));
                write_durably(&self.pack_path(&name), bytes)?;
            }
        }
        failpoint::hit("history_pack_written");
        Ok(name)
    }

    fn unmark(&self, name: &str) -> Result<()> {
        match std::fs::remove_file(self.mark_path(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("remove mark", self.mark_path(name), e))
            }
            _ => Ok(()),
        }
    }

    /// Every manifest, with its id; and whether any could not be read.
    pub fn manifests(&self) -> Result<(Vec<(String, Manifest)>, bool)> {
        let dir = self.manifests_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), false)),
            Err(e) => return Err(Error::io("list", &dir, e)),
        };
        let mut out = Vec::new();
        let mut unreadable = false;
        for e in entries {
            let e = e.ctx("list", &dir)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name
                .strip_suffix(".json")
                .filter(|_| !name.starts_with('.'))
            else {
                continue;
            };
            let parsed = std::fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok());
            match parsed {
                Some(m) if m.format > FORMAT => {
                    tracing::warn!(target: "metasync", "history manifest {} was stored by a newer Metasync (format {}, this one reads up to {FORMAT}): update Metasync to list or restore it", e.path().display(), m.format);
                    unreadable = true;
                }
                Some(m) => out.push((id.to_string(), m)),
                None => {
                    tracing::warn!(target: "metasync", "unreadable history manifest {}", e.path().display());
                    unreadable = true;
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((out, unreadable))
    }

    /// The index of the pack `name`: where each of its chunks is, and its hash.
    fn pack_index(&self, name: &str) -> Result<Vec<Entry>> {
        let path = self.pack_path(name);
        let file = std::fs::File::open(&path).ctx("open pack", &path)?;
        let len = file.metadata().ctx("read pack", &path)?.len();
        let damaged = || Error::Refused(format!("pack {} has no valid index", path.display()));
        let mut trailer = [0u8; 16];
        if len < 16 {
            return Err(damaged());
        }
        read_at(&file, &mut trailer, len - 16).ctx("read pack", &path)?;
        let index = u64::from(u32::from_le_bytes(
            trailer[..4].try_into().expect("4 bytes"),
        ));
        let mut tail = vec![0u8; (index.min(len - 16) + 16) as usize];
        let at = len - tail.len() as u64;
        read_at(&file, &mut tail, at).ctx("read pack", &path)?;
        parse_index(&tail, len).ok_or_else(damaged)
    }

    /// The indexes of the packs `names`, each read once.
    fn pack_indexes<'n>(
        &self,
        names: impl Iterator<Item = &'n String>,
    ) -> Result<HashMap<String, Vec<Entry>>> {
        let mut out = HashMap::new();
        for n in names {
            if !out.contains_key(n) {
                out.insert(n.clone(), self.pack_index(n)?);
            }
        }
        Ok(out)
    }

    /// Where each chunk of a pack referenced by a manifest is, in packs that exist, are not
    /// marked and have a readable index (a chunk is stored again rather than referenced in a
    /// pack that cannot be read).
    fn index(&self, manifests: &[(String, Manifest)]) -> Index {
        let mut index = Index::new();
        for pack in referenced_packs(manifests) {
            if self.mark_path(&pack).exists() {
                continue;
            }
            let Ok(entries) = self.pack_index(&pack) else {
                continue;
            };
            for (n, e) in entries.into_iter().enumerate() {
                index
                    .entry(e.hash)
                    .or_insert((pack.clone(), n as u32, e.delta));
            }
        }
        index
    }

    /// The manifest with this id, when there is a readable one.
    pub fn manifest(&self, id: &str) -> Option<Manifest> {
        let bytes = std::fs::read(self.manifest_path(id)).ok()?;
        serde_json::from_slice::<Manifest>(&bytes)
            .ok()
            .filter(|m| m.format <= FORMAT)
    }

    /// The name to store the version of bytes `sha256` that was the plain backup `rel`
    /// under: `rel` itself, unless a stored version of other bytes already has that name (a
    /// backup name freed when its file moved into the store, and made again in the same
    /// second); then `rel.1`, `rel.2`, … The same bytes keep the same name, so a retried or
    /// concurrent move of one backup still names one manifest.
    pub fn free_name(&self, rel: &str, sha256: &str) -> String {
        (0..)
            .map(|k| match k {
                0 => rel.to_string(),
                k => format!("{rel}.{k}"),
            })
            .find(|name| {
                let id = Manifest::id_of(name);
                match self.manifest(&id) {
                    Some(m) => m.sha256 == sha256,
                    // An unreadable manifest keeps its name: it may be another's version.
                    None => !self.manifest_path(&id).exists(),
                }
            })
            .expect("some name is free")
    }

    /// Stores the version at `src` (a plain backup nobody writes to); returns its id and
    /// manifest. Packs are written first, the manifest last.
    pub fn put(&self, src: &Path, info: VersionInfo) -> Result<(String, Manifest)> {
        let builder = self.read_chunks(src, &info)?;
        self.seal(builder, info)
    }

    /// [`put`](Self::put) of the plain backup at relative path `rel`, read by pages when
    /// `guess.database` (else as bytes) while `describe` runs beside the reading on a thread of
    /// its own and gives what is known of it (its [`VersionInfo`]). Named (see
    /// [`free_name`](Self::free_name)) by the SHA-256 of its bytes taken while they are read
    /// and stored: one read of the file, not a separate pass to hash it first. When `describe`
    /// says otherwise than `guess` whether it is a database, nothing is recorded (chunks
    /// written meanwhile are collected as unreferenced) and that description is given back:
    /// put it again with it.
    pub fn put_backup<D>(
        &self,
        src: &Path,
        rel: &str,
        guess: &VersionInfo,
        describe: D,
    ) -> Result<std::result::Result<(String, Manifest), VersionInfo>>
    where
        D: FnOnce() -> Result<VersionInfo> + Send,
    {
        let (read, described) = std::thread::scope(|s| {
            let described = s.spawn(describe);
            let read = self.read_chunks(src, guess);
            let described = described.join().unwrap_or_else(|_| {
                Err(Error::Refused(format!(
                    "describing {} panicked",
                    src.display()
                )))
            });
            (read, described)
        });
        let mut info = described?;
        let builder = read?;
        if info.database != guess.database {
            return Ok(Err(info));
        }
        let sha256 = crate::ids::hex_lower(&builder.bytes.clone().finalize());
        info.name = self.free_name(rel, &sha256);
        self.seal(builder, info).map(Ok)
    }

    /// Checks that the stored version `m` rebuilds to the bytes it was stored from (its byte
    /// hash), rebuilding into nothing: the same proof as a restore, without writing a file.
    pub fn verify(&self, m: &Manifest) -> Result<()> {
        self.read_into(m, &mut std::io::sink())
    }

    /// Reads the file at `src` into new chunks (packs written as they fill): by pages when
    /// `info` says it is a database, else by content-defined chunks.
    fn read_chunks(&self, src: &Path, info: &VersionInfo) -> Result<Builder<'_>> {
        let (existing, _) = self.manifests()?;
        let parent = match info.database {
            true => parent_pages(&existing, info),
            false => Vec::new(),
        };
        let mut builder = Builder::new(self, self.index(&existing), parent);
        let mut f = std::fs::File::open(src).ctx("open to store", src)?;
        let mut head = vec![0u8; 100];
        let got = crate::sqlite::read_up_to(&mut f, &mut head).ctx("read to store", src)?;
        head.truncate(got);
        let pages = if info.database {
            page_size(&head)
        } else {
            None
        };
        match pages {
            Some(size) => {
                let mut page = head;
                page.resize(size, 0);
                let more = crate::sqlite::read_up_to(&mut f, &mut page[got..])
                    .ctx("read to store", src)?;
                page.truncate(got + more);
                while !page.is_empty() {
                    builder.add(&page)?;
                    page.resize(size, 0);
                    let n =
                        crate::sqlite::read_up_to(&mut f, &mut page).ctx("read to store", src)?;
                    page.truncate(n);
                }
            }
            None => {
                let reader = std::io::Cursor::new(head).chain(f);
                for chunk in fastcdc::v2020::StreamCDC::new(reader, CDC_MIN, CDC_AVG, CDC_MAX) {
                    let chunk = chunk
                        .map_err(|e| Error::io("read to store", src, std::io::Error::other(e)))?;
                    builder.add(&chunk.data)?;
                }
            }
        }
        Ok(builder)
    }

    /// Writes the last pack of `builder` and then the manifest of `info`.
    fn seal(&self, builder: Builder<'_>, info: VersionInfo) -> Result<(String, Manifest)> {
        let id = Manifest::id_of(&info.name);
        let manifest = builder.finish(info)?;
        failpoint::hit("history_before_manifest");
        self.write_manifest(&id, &manifest)?;
        failpoint::hit("history_manifest_written");
        Ok((id, manifest))
    }

    fn write_manifest(&self, id: &str, m: &Manifest) -> Result<()> {
        let bytes = serde_json::to_vec(m)
            .map_err(|e| Error::Refused(format!("cannot encode manifest {id}: {e}")))?;
        write_durably(&self.manifest_path(id), &bytes)
    }

    /// Where each chunk of `m` is stored, in order: (pack slot, offset, stored length).
    fn places_of(&self, m: &Manifest) -> Result<Vec<Place>> {
        Ok(self
            .entries_of(m, &m.runs)?
            .into_iter()
            .map(|(slot, e)| (slot, e.off, e.len))
            .collect())
    }

    /// The contents of the base chunks of `m`'s deltas, by hash.
    fn bases_of(&self, m: &Manifest) -> Result<HashMap<String, Vec<u8>>> {
        let mut out = HashMap::new();
        for (slot, e) in self.entries_of(m, &m.bases)? {
            let path = self.pack_path(&m.packs[slot]);
            let file = std::fs::File::open(&path).ctx("open pack", &path)?;
            let mut stored = vec![0u8; e.len as usize];
            read_at(&file, &mut stored, e.off).ctx("read pack", &path)?;
            let content = decode(&stored)
                .filter(|c| chunk_hash(c) == e.hash)
                .ok_or_else(|| mismatch(m))?;
            out.insert(e.hash, content);
        }
        Ok(out)
    }

    /// The index entries of `runs` (of `m`), in order, with their pack slots.
    fn entries_of(&self, m: &Manifest, runs: &[Run]) -> Result<Vec<(usize, Entry)>> {
        let indexes = self.pack_indexes(runs.iter().filter_map(|r| m.packs.get(r.0)))?;
        let mut out = Vec::new();
        for &Run(slot, first, count) in runs {
            let entries = m
                .packs
                .get(slot)
                .and_then(|p| indexes.get(p))
                .and_then(|e| e.get(first as usize..first as usize + count as usize))
                .ok_or_else(|| {
                    Error::Refused(format!(
                        "history manifest of {} names chunks its packs do not hold",
                        m.info.name
                    ))
                })?;
            out.extend(entries.iter().map(|e| (slot, e.clone())));
        }
        Ok(out)
    }

    /// Rebuilds a version's bytes into `out`, in order, and tells whether they match its
    /// byte hash (BLAKE3 when the manifest has one, else SHA-256). Batches of chunks are
    /// read and decompressed by worker threads, each with one decompressor for all its
    /// chunks; the caller writes them in order and passes them to a thread of its own that
    /// hashes them and hands the buffers back to the workers (no buffer zeroed twice).
    fn rebuild(&self, m: &Manifest, out: &mut dyn Write) -> Result<bool> {
        let places = self.places_of(m)?;
        let bases = self.bases_of(m)?;
        let mut packs = Vec::with_capacity(m.packs.len());
        for name in &m.packs {
            let path = self.pack_path(name);
            let file = std::fs::File::open(&path).ctx("open pack", &path)?;
            packs.push((path, file));
        }
        let batches: Vec<&[Place]> = places.chunks(BATCH).collect();
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_WORKERS)
            .min(batches.len().max(1));
        let stopped = || Error::Refused(format!("rebuilding {} stopped", m.info.name));
        let (recycle, recycled) = std::sync::mpsc::channel::<Vec<u8>>();
        let recycled = std::sync::Mutex::new(recycled);
        let digest = std::thread::scope(|s| -> Result<String> {
            let mut from = Vec::with_capacity(workers);
            for w in 0..workers {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Decoded>>(1);
                from.push(rx);
                let (batches, packs, bases, recycled) = (&batches, &packs, &bases, &recycled);
                s.spawn(move || {
                    let mut d = Decoders::new();
                    let mut stored = Vec::new();
                    for batch in batches.iter().skip(w).step_by(workers) {
                        let mut buf = recycled
                            .lock()
                            .ok()
                            .and_then(|r| r.try_recv().ok())
                            .unwrap_or_default();
                        let decoded =
                            decode_batch(batch, packs, &mut d, bases, (&mut buf, &mut stored));
                        let failed = decoded.is_err();
                        if tx.send(decoded.map(|n| (buf, n))).is_err() || failed {
                            return;
                        }
                    }
                });
            }
            let (to_hash, hash_rx) = std::sync::mpsc::sync_channel::<Decoded>(2);
            let quick = m.blake3.is_some();
            let hasher = s.spawn(move || hash_batches(quick, hash_rx, recycle));
            for i in 0..batches.len() {
                let (buf, n) = from[i % workers].recv().map_err(|_| stopped())??;
                out.write_all(&buf[..n])
                    .map_err(|e| Error::io("write rebuilt version of", &m.info.name, e))?;
                to_hash.send((buf, n)).map_err(|_| stopped())?;
            }
            drop(to_hash);
            hasher.join().map_err(|_| stopped())
        })?;
        Ok(Some(&digest) == m.blake3.as_ref().or(Some(&m.sha256)))
    }

    /// Rebuilds a version's bytes into `out`, checked against its byte hash.
    pub fn read_into(&self, m: &Manifest, out: &mut dyn Write) -> Result<()> {
        if self.rebuild(m, out)? {
            Ok(())
        } else {
            Err(mismatch(m))
        }
    }

    /// Rebuilds a version into the new file `dest` (fsynced), verified: its bytes equal to
    /// the byte hash prove it (a database's logical hash was taken of those very bytes);
    /// only a database whose bytes differ is checked against its logical hash, and kept when
    /// that matches (SPEC: databases restore logical-hash exact).
    pub fn restore_to(
        &self,
        m: &Manifest,
        dest: &Path,
        sqlite: &crate::sqlite::SqliteOptions,
    ) -> Result<()> {
        let result = (|| {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(dest)
                .ctx("create", dest)?;
            let mut w = Output::new(f, m.size);
            let exact = self.rebuild(m, &mut w)?;
            w.file.sync_all().ctx("fsync", dest)?;
            drop(w);
            match (&m.info.logical, exact) {
                (_, true) => Ok(()),
                (Some(want), false) if &crate::sqlite::logical_hash(dest, sqlite)? == want => {
                    Ok(())
                }
                (Some(_), false) => Err(Error::Refused(format!(
                    "the rebuilt {} does not match its hash nor its logical hash",
                    m.info.name
                ))),
                (None, false) => Err(mismatch(m)),
            }
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        result
    }

    /// Removes a stored version (its chunks go at a later collection).
    pub fn remove(&self, id: &str) -> Result<()> {
        let path = self.manifest_path(id);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("remove history manifest", &path, e))
            }
            _ => Ok(()),
        }
    }

    /// Bytes the store takes on disk.
    pub fn bytes_used(&self) -> u64 {
        walkdir::WalkDir::new(&self.dir)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    }
}

/// The chunks of each pack that manifests reference: pack → chunk numbers.
type Live = BTreeMap<String, BTreeSet<u32>>;

/// The pages, in order, of the newest stored database version of `info`'s file made no
/// later than it: what its pages are stored as deltas against.
fn parent_pages(existing: &[(String, Manifest)], info: &VersionInfo) -> Vec<(String, u32)> {
    let parent = existing
        .iter()
        .map(|(_, m)| m)
        .filter(|m| m.info.database && m.info.file == info.file && m.info.created <= info.created)
        .max_by_key(|m| m.info.created);
    let Some(m) = parent else {
        return Vec::new();
    };
    m.runs
        .iter()
        .filter_map(|&Run(slot, first, count)| {
            let pack = m.packs.get(slot)?;
            Some((first..first + count).map(move |n| (pack.clone(), n)))
        })
        .flatten()
        .collect()
}

/// Every (pack, chunk number) `m` references, once each.
fn refs_of(m: &Manifest) -> BTreeSet<(&str, u32)> {
    m.runs
        .iter()
        .chain(&m.bases)
        .filter_map(|&Run(slot, first, count)| {
            let pack = m.packs.get(slot)?;
            Some((first..first + count).map(move |n| (pack.as_str(), n)))
        })
        .flatten()
        .collect()
}

impl Store {
    /// Collects unreferenced packs and repacks wasteful ones (see the module documentation).
    pub fn collect(&self, now: DateTime<Utc>) -> Result<Collected> {
        let mut done = Collected::default();
        let (manifests, unreadable) = self.manifests()?;
        if unreadable {
            return Ok(done);
        }
        done.repacked = self.repack(&manifests)?;
        let (manifests, unreadable) = self.manifests()?;
        if unreadable {
            return Ok(done);
        }
        let referenced = referenced_packs(&manifests);
        for name in self.pack_names()? {
            if referenced.contains(&name) {
                self.unmark(&name)?;
                continue;
            }
            match self.marked_at(&name) {
                None => {
                    write_durably(&self.mark_path(&name), now.to_rfc3339().as_bytes())?;
                    failpoint::hit("history_pack_marked");
                    done.marked += 1;
                }
                Some(at) if now.signed_duration_since(at) >= GRACE => {
                    // Another machine may have referenced it since: read every manifest again.
                    let (fresh, unreadable) = self.manifests()?;
                    if unreadable || referenced_packs(&fresh).contains(&name) {
                        continue;
                    }
                    failpoint::hit("history_before_pack_delete");
                    let path = self.pack_path(&name);
                    match std::fs::remove_file(&path) {
                        // Another machine's collection deleted it first.
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(Error::io("delete unused pack", &path, e))
                        }
                        _ => {}
                    }
                    self.unmark(&name)?;
                    done.deleted += 1;
                }
                Some(_) => {}
            }
        }
        self.remove_strays()?;
        Ok(done)
    }

    fn marked_at(&self, name: &str) -> Option<DateTime<Utc>> {
        let text = std::fs::read_to_string(self.mark_path(name)).ok()?;
        // An unreadable mark counts as made now: the grace starts over.
        Some(
            DateTime::parse_from_rfc3339(text.trim())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        )
    }

    fn pack_names(&self) -> Result<Vec<String>> {
        let dir = self.packs_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", &dir, e)),
        };
        let mut names = Vec::new();
        for e in entries {
            let e = e.ctx("list", &dir)?;
            if let Some(n) = e.file_name().to_str().and_then(|n| n.strip_suffix(".pack")) {
                names.push(n.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Removes marks whose pack is gone, and temp files older than the grace.
    fn remove_strays(&self) -> Result<()> {
        for dir in [self.packs_dir(), self.manifests_dir()] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let stray = match name.strip_suffix(".unused") {
                    Some(pack) => !self.pack_path(pack).exists(),
                    None => {
                        name.starts_with(".tmp-")
                            && e.metadata()
                                .and_then(|m| m.modified())
                                .ok()
                                .and_then(|t| t.elapsed().ok())
                                .is_some_and(|age| age.as_secs() >= 3600)
                    }
                };
                if stray {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }

    /// For each manifest id: the stored bytes of the chunks no other manifest references
    /// (what removing that version alone frees). A pack whose index cannot be read counts
    /// for nothing.
    pub fn exclusive_bytes(&self, manifests: &[(String, Manifest)]) -> HashMap<String, u64> {
        let indexes: HashMap<String, Vec<Entry>> = referenced_packs(manifests)
            .into_iter()
            .filter_map(|p| Some((p.clone(), self.pack_index(&p).ok()?)))
            .collect();
        let refs: Vec<BTreeSet<(&str, u32)>> = manifests.iter().map(|(_, m)| refs_of(m)).collect();
        let mut users: HashMap<(&str, u32), usize> = HashMap::new();
        for r in &refs {
            for k in r {
                *users.entry(*k).or_insert(0) += 1;
            }
        }
        let len = |(p, n): &(&str, u32)| {
            indexes
                .get(*p)
                .and_then(|e| e.get(*n as usize))
                .map_or(0, |e| u64::from(e.len))
        };
        manifests
            .iter()
            .zip(&refs)
            .map(|((id, _), r)| {
                let only = r.iter().filter(|k| users.get(*k) == Some(&1)).map(len);
                (id.clone(), only.sum())
            })
            .collect()
    }

    /// The packs worth repacking, with their live chunks: more than a quarter dead, or one of
    /// many small ones.
    fn wasteful(
        &self,
        manifests: &[(String, Manifest)],
        indexes: &HashMap<String, Vec<Entry>>,
    ) -> Live {
        let mut live = Live::new();
        for (_, m) in manifests {
            for (p, n) in refs_of(m) {
                live.entry(p.to_string()).or_default().insert(n);
            }
        }
        let size = |p: &str| std::fs::metadata(self.pack_path(p)).map_or(0, |m| m.len());
        let live_bytes = |p: &str, c: &BTreeSet<u32>| -> u64 {
            let e = indexes.get(p).map(Vec::as_slice).unwrap_or_default();
            c.iter()
                .filter_map(|n| e.get(*n as usize))
                .map(|e| u64::from(e.len))
                .sum()
        };
        let small: Vec<String> = live
            .keys()
            .filter(|p| size(p) < SMALL_PACK_BYTES)
            .cloned()
            .collect();
        let many_small = small.len() >= SMALL_PACKS;
        live.retain(|p, c| {
            let total = size(p);
            total > 0
                && indexes.contains_key(p)
                && !self.mark_path(p).exists()
                && (live_bytes(p, c) * 4 < total * 3 || (many_small && small.contains(p)))
        });
        live
    }

    /// Copies the live chunks of wasteful packs into new packs and points every manifest at
    /// them; the old packs are then unreferenced. Returns the number of packs written.
    fn repack(&self, manifests: &[(String, Manifest)]) -> Result<usize> {
        let indexes: HashMap<String, Vec<Entry>> = referenced_packs(manifests)
            .into_iter()
            .filter_map(|p| Some((p.clone(), self.pack_index(&p).ok()?)))
            .collect();
        let live = self.wasteful(manifests, &indexes);
        if live.is_empty() {
            return Ok(0);
        }
        let mut builder = Builder::new(self, Index::new(), Vec::new());
        // (old pack, chunk number) → (slot in `builder.packs`, new number).
        let mut moved: HashMap<(String, u32), (usize, u32)> = HashMap::new();
        for (pack, chunks) in &live {
            let path = self.pack_path(pack);
            let bytes = std::fs::read(&path).ctx("read pack", &path)?;
            for n in chunks {
                let e = indexes[pack].get(*n as usize);
                let piece = e
                    .and_then(|e| bytes.get(e.off as usize..e.off as usize + e.len as usize))
                    .filter(|p| intact(p, e.map(|e| e.hash.as_str())))
                    .ok_or_else(|| {
                        Error::Refused(format!("pack {} is damaged at chunk {n}", path.display()))
                    })?;
                let e = e.expect("checked above");
                let flag = if e.delta { DELTA_BIT } else { 0 };
                let new = builder.add_stored(e.hash.clone(), |p| p.to_vec(), piece, flag)?;
                moved.insert((pack.clone(), *n), new);
            }
        }
        builder.flush()?;
        let new_packs = builder.packs.clone();
        failpoint::hit("history_repacked");
        for (id, m) in manifests {
            if let Some(rewritten) = rewrite(m, &moved, &new_packs) {
                self.write_manifest(id, &rewritten)?;
                failpoint::hit("history_manifest_rewritten");
            }
        }
        Ok(new_packs.len())
    }
}

/// Whether a stored chunk is whole: a full one decodes to its hash; a delta (checked
/// against its base when a version is rebuilt) has its kind and base.
fn intact(stored: &[u8], hash: Option<&str>) -> bool {
    match stored.first() {
        Some(2 | 4) => stored.len() > 17,
        _ => decode(stored).is_some_and(|c| Some(chunk_hash(&c).as_str()) == hash),
    }
}

fn referenced_packs(manifests: &[(String, Manifest)]) -> HashSet<String> {
    manifests
        .iter()
        .flat_map(|(_, m)| m.packs.iter().cloned())
        .collect()
}

/// `m` with its chunks in repacked packs pointing at their new places; `None` when none moved.
fn rewrite(
    m: &Manifest,
    moved: &HashMap<(String, u32), (usize, u32)>,
    new_packs: &[String],
) -> Option<Manifest> {
    let mut out = m.clone();
    out.packs.clear();
    let mut any = false;
    let mut remap = |runs: &[Run], packs: &mut Vec<String>| -> Option<Vec<Run>> {
        let mut b = Runs(Vec::new());
        for &Run(slot, first, count) in runs {
            let old = m.packs.get(slot)?;
            for n in first..first + count {
                let (pack, n) = match moved.get(&(old.clone(), n)) {
                    Some((s, new)) => {
                        any = true;
                        (new_packs.get(*s)?, *new)
                    }
                    None => (old, n),
                };
                let slot = match packs.iter().position(|p| p == pack) {
                    Some(i) => i,
                    None => {
                        packs.push(pack.clone());
                        packs.len() - 1
                    }
                };
                b.push(slot, n);
            }
        }
        Some(b.0)
    };
    out.runs = remap(&m.runs, &mut out.packs)?;
    out.bases = remap(&m.bases, &mut out.packs)?;
    any.then_some(out)
}

/// Runs being built from chunk references in order.
struct Runs(Vec<Run>);

impl Runs {
    fn push(&mut self, slot: usize, n: u32) {
        match self.0.last_mut() {
            Some(Run(s, first, count)) if *s == slot && *first + *count == n => *count += 1,
            _ => self.0.push(Run(slot, n, 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap()
    }

    fn info(name: &str, database: bool, logical: Option<String>) -> VersionInfo {
        VersionInfo {
            file: name.split(".backup-").next().unwrap_or(name).to_string(),
            name: name.to_string(),
            created: t0(),
            database,
            logical,
            entities: None,
            conversations: None,
            protected: None,
        }
    }

    fn make_db(path: &Path, rows: u32, changed: u32) {
        let c = rusqlite::Connection::open(path).unwrap();
        c.execute_batch("CREATE TABLE IF NOT EXISTS entities(id INTEGER PRIMARY KEY, body TEXT)")
            .unwrap();
        c.execute_batch("BEGIN").unwrap();
        for i in 0..rows {
            c.execute(
                "INSERT OR REPLACE INTO entities VALUES (?1, ?2)",
                rusqlite::params![i, format!("entity {i} {}", "x".repeat(200))],
            )
            .unwrap();
        }
        c.execute_batch("COMMIT").unwrap();
        c.execute(
            "UPDATE entities SET body = ?1 WHERE id = ?2",
            rusqlite::params![format!("changed {changed}"), changed],
        )
        .unwrap();
    }

    fn round_trip(store: &Store, src: &Path, info: VersionInfo, scratch: &Path) -> Manifest {
        let (_, m) = store.put(src, info).unwrap();
        let out = scratch.join(format!("out-{}", crate::ids::random_hex(6)));
        store.restore_to(&m, &out, &Default::default()).unwrap();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(src).unwrap(),
            "{src:?}"
        );
        assert_eq!(m.sha256, crate::kind::sha256_file(src).unwrap());
        let bytes = std::fs::read(src).unwrap();
        assert_eq!(m.blake3, Some(blake3::hash(&bytes).to_hex().to_string()));
        m
    }

    /// A restore checks the rebuilt bytes against the BLAKE3 recorded with the version; a
    /// version stored without one (by an earlier version) against its SHA-256. Either
    /// differing refuses the restore and leaves no file.
    #[test]
    fn a_restore_checks_blake3_or_else_sha256() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::of_location(&d.path().join("loc"));
        let src = d.path().join("notes");
        std::fs::write(&src, "some notes\n".repeat(5000)).unwrap();
        let (_, m) = store
            .put(&src, info("notes.backup-1", false, None))
            .unwrap();
        let out = d.path().join("out");
        let mut old = m.clone();
        old.blake3 = None;
        old.sha256 = "0".repeat(64);
        let mut tampered = m.clone();
        tampered.blake3 = Some("0".repeat(64));
        for bad in [old.clone(), tampered] {
            let err = store
                .restore_to(&bad, &out, &Default::default())
                .unwrap_err();
            assert!(err.to_string().contains("does not match"), "{err}");
            assert!(!out.exists());
        }
        old.sha256 = m.sha256.clone();
        store.restore_to(&old, &out, &Default::default()).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&src).unwrap());
    }

    #[test]
    fn every_kind_of_file_round_trips_byte_exact() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::of_location(&d.path().join("loc"));
        let db = d.path().join("metastore.db");
        make_db(&db, 500, 1);
        let logical = crate::sqlite::logical_hash(&db, &Default::default()).unwrap();
        let m = round_trip(
            &store,
            &db,
            info("a.db.backup-1", true, Some(logical)),
            d.path(),
        );
        assert_eq!(
            m.runs.iter().map(|r| u64::from(r.2)).sum::<u64>() * 4096,
            m.size,
            "a database is stored by its pages"
        );

        let text = d.path().join("rules.yaml");
        let body: String = (0..5000).map(|i| format!("rule {i}: keep\n")).collect();
        std::fs::write(&text, body).unwrap();
        round_trip(
            &store,
            &text,
            info("rules.yaml.backup-1", false, None),
            d.path(),
        );

        let empty = d.path().join("empty");
        std::fs::write(&empty, "").unwrap();
        let m = round_trip(
            &store,
            &empty,
            info("empty.backup-1", false, None),
            d.path(),
        );
        assert!(m.runs.is_empty());

        let big = d.path().join("big.bin");
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let bytes: Vec<u8> = (0..(12 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(&big, &bytes).unwrap();
        let m = round_trip(
            &store,
            &big,
            info("big.bin.backup-1", false, None),
            d.path(),
        );
        assert!(m.packs.len() >= 3, "packs of a few MB: {:?}", m.packs);
        // A not-quite-database (header but torn) stored as a database still round-trips.
        let torn = d.path().join("torn.db");
        std::fs::write(&torn, &std::fs::read(&db).unwrap()[..5000]).unwrap();
        round_trip(
            &store,
            &torn,
            info("torn.db.backup-1", true, None),
            d.path(),
        );
    }

    #[test]
    fn consecutive_database_versions_share_their_pages() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::of_location(&d.path().join("loc"));
        let db = d.path().join("metastore.db");
        make_db(&db, 1000, 1);
        let mut sizes = Vec::new();
        for v in 0..5 {
            let copy = d.path().join(format!("v{v}"));
            crate::sqlite::snapshot(&db, &copy, &Default::default()).unwrap();
            store
                .put(&copy, info(&format!("m.db.backup-{v}"), true, None))
                .unwrap();
            sizes.push(store.bytes_used());
            make_db(&db, 0, v + 10);
        }
        let db_size = std::fs::metadata(&db).unwrap().len();
        let growth = sizes[4] - sizes[0];
        assert!(
            growth < db_size / 4,
            "4 one-row versions added {growth} bytes to {sizes:?}"
        );
    }

    /// A version sharing most pages with a stored one has a manifest of a few runs, not a
    /// line per page: its size does not grow with the database.
    #[test]
    fn a_version_sharing_its_pages_has_a_small_manifest() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::of_location(&d.path().join("loc"));
        let db = d.path().join("metastore.db");
        make_db(&db, 5000, 1);
        let mut sizes = Vec::new();
        for v in 0..3 {
            let copy = d.path().join(format!("v{v}"));
            crate::sqlite::snapshot(&db, &copy, &Default::default()).unwrap();
            let (id, m) = store
                .put(&copy, info(&format!("m.db.backup-{v}"), true, None))
                .unwrap();
            let out = d.path().join(format!("out{v}"));
            store.restore_to(&m, &out, &Default::default()).unwrap();
            assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&copy).unwrap());
            sizes.push(std::fs::metadata(store.manifest_path(&id)).unwrap().len());
            make_db(&db, 0, v * 2000 + 7);
        }
        let pages = std::fs::metadata(&db).unwrap().len() / 4096;
        assert!(pages > 250, "{pages} pages");
        assert!(
            sizes[1] < 2048 && sizes[2] < 2048,
            "manifests of {pages}-page versions one row apart: {sizes:?} bytes"
        );
    }

    /// Bytes of the store's packs.
    fn pack_bytes(store: &Store) -> u64 {
        store
            .pack_names()
            .unwrap()
            .iter()
            .map(|p| std::fs::metadata(store.pack_path(p)).unwrap().len())
            .sum()
    }

    /// A page changed by one row is stored as a delta against the same page of the version
    /// stored before it (its differing bytes, not the page again), its base referenced by the
    /// manifest: every version restores byte-exact, also after the version that first stored
    /// the base is removed and collected.
    /// Per version of [`one_row_versions`]: its snapshot, the pack bytes it added, its id
    /// and manifest.
    type Stored = Vec<(PathBuf, u64, String, Manifest)>;

    /// A table of `rows` rows holding `text(i, 0)`, stored as `versions` versions of a
    /// database: before each but the first, row `pick(v)` is rewritten to `text(row, v)`.
    fn one_row_versions(
        dir: &Path,
        store: &Store,
        (rows, versions): (u64, u64),
        text: &dyn Fn(u64, u64) -> String,
        pick: &dyn Fn(u64) -> u64,
    ) -> Stored {
        let picks = |v: u64| vec![pick(v)];
        changed_versions(dir, store, (rows, versions), text, &picks)
    }

    /// As [`one_row_versions`], the rows `picks(v)` rewritten before version `v`.
    fn changed_versions(
        dir: &Path,
        store: &Store,
        (rows, versions): (u64, u64),
        text: &dyn Fn(u64, u64) -> String,
        picks: &dyn Fn(u64) -> Vec<u64>,
    ) -> Stored {
        let db = dir.join("m.db");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("CREATE TABLE entities(id INTEGER PRIMARY KEY, body TEXT); BEGIN")
            .unwrap();
        for i in 0..rows {
            c.execute(
                "INSERT INTO entities VALUES (?1, ?2)",
                rusqlite::params![i as i64, text(i, 0)],
            )
            .unwrap();
        }
        c.execute_batch("COMMIT").unwrap();
        let mut out = Vec::new();
        for v in 0..versions {
            for id in picks(v).into_iter().filter(|_| v > 0) {
                c.execute(
                    "UPDATE entities SET body = ?1 WHERE id = ?2",
                    rusqlite::params![text(id, v), id as i64],
                )
                .unwrap();
            }
            let copy = dir.join(format!("v{v}"));
            crate::sqlite::snapshot(&db, &copy, &Default::default()).unwrap();
            let before = pack_bytes(store);
            let mut i = info(&format!("m.db.backup-{v}"), true, None);
            i.created = t0() + Duration::minutes(v as i64);
            let (id, m) = store.put(&copy, i).unwrap();
            out.push((copy, pack_bytes(store) - before, id, m));
        }
        out
    }

    /// Every version `store` lists rebuilds to its snapshot's bytes.
    fn all_restore(dir: &Path, store: &Store, stored: &Stored) {
        for (id, m) in store.manifests().unwrap().0 {
            let (copy, ..) = stored.iter().find(|s| s.2 == id).unwrap();
            let out = dir.join(format!("out-{id}"));
            store.restore_to(&m, &out, &Default::default()).unwrap();
            assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(copy).unwrap());
        }
    }

    #[test]
    fn a_page_changed_by_a_row_is_stored_as_a_small_delta_and_its_base_kept() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::of_location(&d.path().join("loc"));
        let body = |i: u64, v: u64| sha_hex(format!("{i}/{v}").as_bytes()).repeat(3);
        let stored = one_row_versions(d.path(), &store, (2000, 5), &body, &|v| (v * 389) % 2000);
        assert!(
            stored[1..].iter().all(|s| !s.3.bases.is_empty()),
            "versions have bases"
        );
        let growth: Vec<u64> = stored.iter().map(|s| s.1).collect();
        // The pack's trailer and index (20 B a chunk) aside, a changed row costs its delta.
        assert!(
            growth[1..].iter().all(|g| *g < 400),
            "bytes added per one-row version: {growth:?}"
        );
        store.remove(&stored[0].2).unwrap();
        store.collect(t0()).unwrap();
        store.collect(t0() + GRACE).unwrap();
        all_restore(d.path(), &store, &stored);
    }

    /// Rows rewritten with other lengths move the cells of their page, and the page drifts
    /// from its base version by version: a zstd delta (the base as its dictionary) stays
    /// about the size of what changed, where the XOR of page and base turned into noise.
    #[test]
    fn a_page_whose_cells_move_stays_a_small_delta_as_it_drifts_from_its_base() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::of_location(&d.path().join("loc"));
        let text = |i: u64, v: u64| {
            let pad = "lorem ipsum dolor sit amet ".repeat(6);
            format!(
                "{{\"summary\":\"entity {i} edited in repetition {v}\",\"note\":\"{}\"}}",
                &pad[..(v as usize * 13) % 120]
            )
        };
        // Rows of the same few pages, each rewritten with another length.
        let stored = one_row_versions(d.path(), &store, (400, 40), &text, &|v| (v * 7) % 40);
        let growth: Vec<u64> = stored.iter().map(|s| s.1).collect();
        // Measured: 22 KB as zstd deltas, 39 KB as deflated XORs (format 3).
        let later: u64 = growth[1..].iter().sum();
        assert!(
            later < 39 * 700,
            "{later} bytes for 39 one-row versions: {growth:?}"
        );
        all_restore(d.path(), &store, &stored);
    }

    /// Versions kept a day apart of a table whose rows are each rewritten every day or two
    /// (the five-minute edits, thinned): between two kept versions most rows differ,
    /// by a few bytes each, but from the first version every row differs entirely. A page
    /// whose delta against its base has grown past [`REBASE`] of the page is stored whole
    /// again, so later versions cost their few bytes a row, not every row since the first.
    #[test]
    fn versions_whose_rows_all_drift_stay_small_once_their_pages_are_stored_whole_again() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::of_location(&d.path().join("loc"));
        let text = |i: u64, v: u64| match v {
            0 => format!("{{\"summary\":\"{}\"}}", sha_hex(&i.to_le_bytes())),
            v => format!(
                "{{\"summary\":\"edited in repetition {}\"}}",
                1000 + (i * 7 + v * 3) % 9000
            ),
        };
        // Before each version after the first, two rows in three are rewritten.
        let picks = |v: u64| {
            (0..300)
                .filter(|i: &u64| !(i + v).is_multiple_of(3))
                .collect()
        };
        let stored = changed_versions(d.path(), &store, (300, 16), &text, &picks);
        let growth: Vec<u64> = stored.iter().map(|s| s.1).collect();
        let later: u64 = growth[4..].iter().sum();
        assert!(
            later < 12 * 1500,
            "{later} bytes for 12 versions of drifted rows: {growth:?}"
        );
        all_restore(d.path(), &store, &stored);
    }

    #[test]
    fn collection_deletes_only_unreferenced_packs_after_the_grace() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::of_location(&d.path().join("loc"));
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::write(&a, vec![1u8; 100_000]).unwrap();
        std::fs::write(
            &b,
            (0..100_000u32)
                .map(|i| (i * 7 % 251) as u8)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let (ida, _) = store.put(&a, info("a.backup-1", false, None)).unwrap();
        let (_, mb) = store.put(&b, info("b.backup-1", false, None)).unwrap();
        store.remove(&ida).unwrap();
        let first = store.collect(t0()).unwrap();
        assert_eq!((first.marked, first.deleted), (1, 0));
        let early = store.collect(t0() + GRACE - Duration::seconds(1)).unwrap();
        assert_eq!((early.marked, early.deleted), (0, 0));
        let late = store.collect(t0() + GRACE).unwrap();
        assert_eq!((late.marked, late.deleted), (0, 1));
        assert_eq!(store.pack_names().unwrap(), mb.packs);
        let out = d.path().join("out");
        store
            .restore_to(
                &store.manifests().unwrap().0[0].1,
                &out,
                &Default::default(),
            )
            .unwrap();
        assert_eq!(std::fs::read(out).unwrap(), std::fs::read(&b).unwrap());
    }

    #[test]
    fn a_manifest_of_a_later_format_is_left_alone_and_keeps_its_packs() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::of_location(&d.path().join("loc"));
        let a = d.path().join("a");
        std::fs::write(&a, vec![5u8; 80_000]).unwrap();
        let (id, m) = store.put(&a, info("a.backup-1", false, None)).unwrap();
        // A newer Metasync on another machine rewrote it in a format this one cannot read.
        let path = store.manifest_path(&id);
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        json["format"] = serde_json::json!(FORMAT + 1);
        std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        let (listed, unreadable) = store.manifests().unwrap();
        assert!(listed.is_empty() && unreadable);
        assert!(store.manifest(&id).is_none());
        for later in [t0(), t0() + GRACE, t0() + GRACE * 2] {
            let done = store.collect(later).unwrap();
            assert_eq!((done.marked, done.deleted), (0, 0));
        }
        assert_eq!(store.pack_names().unwrap(), m.packs);
    }

    #[test]
    fn a_pack_referenced_again_loses_its_mark_and_stays() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::of_location(&d.path().join("loc"));
        let a = d.path().join("a");
        std::fs::write(&a, vec![3u8; 50_000]).unwrap();
        let (id, m) = store.put(&a, info("a.backup-1", false, None)).unwrap();
        // Another machine's manifest naming the pack appears after the mark was made.
        store.remove(&id).unwrap();
        assert_eq!(store.collect(t0()).unwrap().marked, 1);
        store.write_manifest(&id, &m).unwrap();
        let late = store.collect(t0() + GRACE * 2).unwrap();
        assert_eq!(late.deleted, 0);
        assert!(!store.mark_path(&m.packs[0]).exists());
        // A writer never reuses a marked pack: the same bytes go to a fresh name.
        store.remove(&id).unwrap();
        store.collect(t0()).unwrap();
        let (_, again) = store.put(&a, info("a.backup-2", false, None)).unwrap();
        assert_ne!(again.packs, m.packs);
    }

    #[test]
    fn many_small_packs_are_repacked_into_one_and_every_version_still_restores() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::of_location(&d.path().join("loc"));
        let mut files = Vec::new();
        for v in 0..(SMALL_PACKS as u32 + 2) {
            let f = d.path().join(format!("f{v}"));
            std::fs::write(
                &f,
                (0..30_000u32)
                    .map(|i| (i * (v + 3) % 253) as u8)
                    .collect::<Vec<_>>(),
            )
            .unwrap();
            store
                .put(&f, info(&format!("f.backup-{v}"), false, None))
                .unwrap();
            files.push(f);
        }
        let before = store.pack_names().unwrap().len();
        let done = store.collect(t0()).unwrap();
        assert_eq!(done.repacked, 1);
        assert_eq!(done.marked, before);
        store.collect(t0() + GRACE).unwrap();
        assert_eq!(store.pack_names().unwrap().len(), 1);
        for (id, m) in store.manifests().unwrap().0 {
            let out = d.path().join(format!("out-{id}"));
            store.restore_to(&m, &out, &Default::default()).unwrap();
            let v: usize = m.info.name.rsplit('-').next().unwrap().parse().unwrap();
            assert_eq!(
                std::fs::read(out).unwrap(),
                std::fs::read(&files[v]).unwrap()
            );
        }
    }

    /// A pack a third of which no manifest references any longer (its version removed,
    /// the rest shared with a later one) is repacked: dead bytes stay under a quarter of a
    /// pack, not half, and the later version still restores.
    #[test]
    fn a_pack_a_third_dead_is_repacked() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::of_location(&d.path().join("loc"));
        let noise = |seed: &str, n: usize| -> Vec<u8> {
            (0..n / 32)
                .flat_map(|i| Sha256::digest(format!("{seed}{i}").as_bytes()))
                .collect()
        };
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let old = noise("a", 600_000);
        std::fs::write(&a, &old).unwrap();
        let mut new = old[..400_000].to_vec();
        new.extend(noise("b", 200_000));
        std::fs::write(&b, &new).unwrap();
        let (ida, _) = store.put(&a, info("a.backup-1", false, None)).unwrap();
        store.put(&b, info("a.backup-2", false, None)).unwrap();
        let before = pack_bytes(&store);
        store.remove(&ida).unwrap();
        assert_eq!(store.collect(t0()).unwrap().repacked, 1);
        store.collect(t0() + GRACE).unwrap();
        let after = pack_bytes(&store);
        assert!(after < before * 4 / 5, "{before} → {after} bytes of packs");
        let (listed, _) = store.manifests().unwrap();
        let out = d.path().join("out");
        store
            .restore_to(&listed[0].1, &out, &Default::default())
            .unwrap();
        assert_eq!(std::fs::read(out).unwrap(), new);
    }

    #[test]
    fn an_unreadable_manifest_stops_every_deletion() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::of_location(&d.path().join("loc"));
        let a = d.path().join("a");
        std::fs::write(&a, vec![5u8; 10_000]).unwrap();
        let (id, _) = store.put(&a, info("a.backup-1", false, None)).unwrap();
        std::fs::write(store.manifest_path(&id), "{ torn").unwrap();
        store.collect(t0()).unwrap();
        let done = store.collect(t0() + GRACE * 2).unwrap();
        assert_eq!(done, Collected::default());
        assert_eq!(store.pack_names().unwrap().len(), 1);
    }

    #[test]
    fn a_damaged_pack_is_refused_not_restored() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::of_location(&d.path().join("loc"));
        let a = d.path().join("a");
        std::fs::write(&a, b"hello history").unwrap();
        let (_, m) = store.put(&a, info("a.backup-1", false, None)).unwrap();
        let pack = store.pack_path(&m.packs[0]);
        let good = std::fs::read(&pack).unwrap();
        // A byte of the chunk (after its leading kind byte), then a byte of the trailer.
        for (at, says) in [(5, "does not match"), (good.len() - 1, "no valid index")] {
            let mut bytes = good.clone();
            bytes[at] ^= 0xff;
            std::fs::write(&pack, bytes).unwrap();
            let out = d.path().join("out");
            let err = store.restore_to(&m, &out, &Default::default()).unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
            assert!(!out.exists());
        }
    }

    fn put_backup(store: &Store, src: &Path) -> (String, Manifest) {
        let guess = info("ignored", false, None);
        let described = guess.clone();
        store
            .put_backup(src, "a.backup-1", &guess, || Ok(described))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_backup_is_named_by_its_bytes_read_once_and_verified_without_a_file() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::of_location(&d.path().join("loc"));
        let a = d.path().join("a");
        std::fs::write(&a, b"hello history").unwrap();
        let (id, m) = put_backup(&store, &a);
        assert_eq!(m.info.name, "a.backup-1");
        assert_eq!(id, Manifest::id_of("a.backup-1"));
        assert_eq!(m.sha256, sha_hex(b"hello history"));
        store.verify(&m).unwrap();
        // The same bytes again keep the name; other bytes under a taken name get the next.
        let (again, _) = put_backup(&store, &a);
        assert_eq!(again, id);
        std::fs::write(&a, b"other bytes").unwrap();
        let (_, other) = put_backup(&store, &a);
        assert_eq!(other.info.name, "a.backup-1.1");
        store.verify(&other).unwrap();
        // Read by pages but described as no database (damaged): nothing recorded, the
        // description handed back.
        let guess = info("ignored", true, None);
        let said = info("ignored", false, None);
        let back = store
            .put_backup(&a, "b.backup-1", &guess, || Ok(said.clone()))
            .unwrap()
            .unwrap_err();
        assert_eq!(back, said);
        assert!(!store.manifest_path(&Manifest::id_of("b.backup-1")).exists());
        // A damaged chunk fails the check, and nothing is written anywhere.
        let pack = store.pack_path(&m.packs[0]);
        let mut bytes = std::fs::read(&pack).unwrap();
        bytes[5] ^= 0xff;
        std::fs::write(&pack, bytes).unwrap();
        let listed = |dir: &Path| walkdir::WalkDir::new(dir).into_iter().count();
        let files = listed(d.path());
        let err = store.verify(&m).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        assert_eq!(listed(d.path()), files);
    }

    /// A chunk as versions before LZ4 stored it: deflated, behind a 1.
    fn deflated(chunk: &[u8]) -> Vec<u8> {
        let mut z = flate2::write::DeflateEncoder::new(vec![1u8], flate2::Compression::fast());
        z.write_all(chunk).unwrap();
        z.finish().unwrap()
    }

    /// Pages are stored LZ4-compressed (much faster to rebuild than deflate), and chunks
    /// deflated by earlier versions, raw ones and LZ4 ones read alike, in one pack.
    #[test]
    fn chunks_of_every_codec_read_back_byte_exact() {
        let page: Vec<u8> = (0..4096u32).map(|i| (i % 7 * 31 + i / 512) as u8).collect();
        let stored = encode(&page);
        assert_eq!(stored[0], 3, "compressible pages are stored as LZ4");
        assert!(stored.len() < page.len() / 2);
        assert_eq!(encode(b"xyz")[0], 0, "incompressible chunks stay raw");
        let chunks = [
            deflated(&page),
            stored,
            encode(b"xyz"),
            deflated(b"old chunk"),
        ];
        let mut pack = Vec::new();
        let mut places = Vec::new();
        for c in &chunks {
            places.push((0, pack.len() as u64, c.len() as u32));
            pack.extend_from_slice(c);
        }
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("p.pack");
        std::fs::write(&path, &pack).unwrap();
        let packs = [(path.clone(), std::fs::File::open(&path).unwrap())];
        let mut dec = Decoders::new();
        let (mut out, mut stored) = (Vec::new(), Vec::new());
        let n = decode_batch(
            &places,
            &packs,
            &mut dec,
            &HashMap::new(),
            (&mut out, &mut stored),
        );
        out.truncate(n.unwrap());
        let want = [&page[..], &page[..], b"xyz", b"old chunk"].concat();
        assert_eq!(out, want);
        for (c, content) in chunks
            .iter()
            .zip([&page[..], &page[..], b"xyz", b"old chunk"])
        {
            assert_eq!(decode(c).unwrap(), content);
        }
        // A damaged LZ4 chunk is refused, never read past.
        let mut bad = chunks[1].clone();
        bad.truncate(bad.len() / 2);
        assert!(decode(&bad).is_none_or(|b| b != page));
    }

    /// A delta as format 3 stored it: a 2, the base's hash, the deflated XOR of page and base.
    fn xor_delta(page: &[u8], base: &[u8], base_hash: &str) -> Vec<u8> {
        let xor: Vec<u8> = page.iter().zip(base).map(|(a, b)| a ^ b).collect();
        let mut out = vec![2u8];
        out.extend_from_slice(&raw_hash(base_hash));
        let mut z = flate2::write::DeflateEncoder::new(out, flate2::Compression::fast());
        z.write_all(&xor).unwrap();
        z.finish().unwrap()
    }

    /// Deltas of both formats rebuild their page from its base, one after the other with
    /// the same decompressors; a delta whose base is missing, or of another size, is refused.
    #[test]
    fn deltas_of_format_3_and_4_rebuild_their_page() {
        let base: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut page = base.clone();
        page.splice(100..100, b"a row that grew".iter().copied());
        page.truncate(base.len());
        let hash = chunk_hash(&base);
        let new = encode_delta(&page, &base, &hash).unwrap();
        assert_eq!(new[0], 4);
        assert!(
            new.len() < 100,
            "a moved row costs little: {} bytes",
            new.len()
        );
        let old = xor_delta(&page, &base, &hash);
        let bases = HashMap::from([(hash.clone(), base.clone())]);
        let mut dec = Decoders::new();
        let (mut out, mut pos) = (Vec::new(), 0);
        for delta in [&new, &old, &new] {
            decode_at(delta, &mut dec, &bases, &mut out, &mut pos).unwrap();
        }
        assert_eq!(&out[..pos], [&page[..], &page[..], &page[..]].concat());
        let mut pos = 0;
        assert!(decode_at(&new, &mut dec, &HashMap::new(), &mut out, &mut pos).is_none());
        let short = HashMap::from([(hash, base[..2048].to_vec())]);
        assert!(decode_at(&new, &mut dec, &short, &mut out, &mut pos).is_none());
    }

    /// The byte hash proves a rebuilt version; a database whose bytes differ from it is
    /// checked against its logical hash instead, and refused only when that differs too.
    #[test]
    fn a_database_with_other_bytes_is_kept_only_when_its_rows_match() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::of_location(&d.path().join("loc"));
        let db = d.path().join("m.db");
        make_db(&db, 300, 1);
        let logical = crate::sqlite::logical_hash(&db, &Default::default()).unwrap();
        let (_, m) = store
            .put(&db, info("m.db.backup-1", true, Some(logical)))
            .unwrap();
        // The rebuilt bytes differ from the recorded ones (as after a page rewritten with
        // the same rows): the rows decide.
        let mut other = m.clone();
        other.blake3 = Some("0".repeat(64));
        let out = d.path().join("same-rows");
        store.restore_to(&other, &out, &Default::default()).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&db).unwrap());
        other.info.logical = Some("1".repeat(64));
        let refused = d.path().join("other-rows");
        let err = store
            .restore_to(&other, &refused, &Default::default())
            .unwrap_err();
        assert!(err.to_string().contains("logical hash"), "{err}");
        assert!(!refused.exists());
    }

    /// The store is never a synced file, whatever the patterns: not listed, not eligible.
    #[test]
    fn the_store_is_never_scanned_as_synced_files() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("loc");
        let store = Store::of_location(&root);
        let a = d.path().join("a");
        std::fs::write(&a, "some version").unwrap();
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("notes.txt"), "x").unwrap();
        store.put(&a, info("a.backup-1", false, None)).unwrap();
        let all = crate::select::Selector::new(&["**/*".to_string(), "**".to_string()]).unwrap();
        let listing = all.list(&root);
        assert_eq!(listing.files, vec!["notes.txt"], "{:?}", listing.files);
        for rel in [
            ".metasync/history/packs/x.pack",
            ".metasync/history/manifests/x.json",
        ] {
            assert!(!crate::select::is_eligible(rel), "{rel}");
        }
    }
}
