//! The bounded pool that writes a batch's temp files ([`super::batch`]): 2 to 4 threads
//! (`std::thread::scope`, as many as the cores within that), each with its own buffer kept
//! from batch to batch, take runs of consecutive files (mostly of one folder, held open for the
//! run) and write each temp: created new in its folder, the source streamed into it with its
//! hash computed on the way, its modification time set on the open file, the hash checked.
//! Nothing is made durable or put in place here: the batch does that once all its temps are
//! written, so a crash during the pool leaves at worst temp files, which the next run removes.

use super::atomic::Folder;
use super::batch::Pending;
use crate::error::{IoContext, Result};
use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Files a thread takes at a time (consecutive files mostly share their folder).
const RUN: usize = 32;
/// Each thread's buffer (a batch takes files of up to 4 MiB).
const BUFFER: usize = 256 << 10;
/// The most threads a batch is written with.
const THREADS_MAX: usize = 4;

/// Threads for `files` files: 2 to 4, as many as the cores within that; fewer for a small batch.
fn threads(files: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    cores.clamp(2, THREADS_MAX).min(files.div_ceil(RUN)).max(1)
}

/// Writes the temp of every pending file (module doc); how each went, in their order.
/// `buffers` keeps the threads' buffers for the next batch.
pub(super) fn write_temps(pending: &[Pending], buffers: &mut Vec<Vec<u8>>) -> Vec<Result<()>> {
    let n = threads(pending.len());
    if buffers.len() < n {
        buffers.resize_with(n, || vec![0u8; BUFFER]);
    }
    let next = &AtomicUsize::new(0);
    let mut done = Vec::with_capacity(pending.len());
    std::thread::scope(|s| {
        let (first, rest) = buffers.split_at_mut(1);
        let workers: Vec<_> = rest[..n - 1]
            .iter_mut()
            .map(|buf| s.spawn(move || work(pending, next, buf)))
            .collect();
        done.extend(work(pending, next, &mut first[0]));
        for w in workers {
            match w.join() {
                Ok(d) => done.extend(d),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// One thread's share: runs of files taken in turn until none is left.
fn work(pending: &[Pending], next: &AtomicUsize, buf: &mut [u8]) -> Vec<(usize, Result<()>)> {
    let mut out = Vec::new();
    let mut folder = None;
    loop {
        let start = next.fetch_add(RUN, Ordering::Relaxed);
        if start >= pending.len() {
            return out;
        }
        for (i, p) in pending.iter().enumerate().skip(start).take(RUN) {
            out.push((i, write_one(p, &mut folder, buf)));
        }
    }
}

/// Writes one file's temp, in `folder` (opened again when the file's folder is another).
fn write_one(p: &Pending, folder: &mut Option<Folder>, buf: &mut [u8]) -> Result<()> {
    let dir = p.temp.path().parent().unwrap_or(p.temp.path());
    let held = match folder.take() {
        Some(f) if f.path() == dir => f,
        _ => Folder::open(dir)?,
    };
    let held = folder.insert(held);
    let src = &p.copy.src;
    let mut input = File::open(src).ctx("open source", src)?;
    let mut out = p.temp.create_in(held)?;
    let (hash, _) = super::stream(&mut input, &mut out, buf, src, p.temp.path())?;
    out.set_modified(p.copy.mtime)
        .ctx("set modification time", p.temp.path())?;
    drop(out);
    super::check_hash(src, &p.copy.expected, &hash)?;
    crate::failpoint::hit("after_temp_write");
    Ok(())
}
