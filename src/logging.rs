//! Logging for both faces: `<home>/logs/<prefix>.YYYY-MM-DD.log`, rotated daily, 14 kept,
//! with the engine's lines (target `metasync`) and the caller's own targets; optionally on
//! stderr too.

use std::path::Path;
use tracing_subscriber::prelude::*;

/// Kept for the callers, which hold it until exit: lines are written as they are logged, so
/// there is nothing to flush (always `None`).
pub type LogGuard = Option<tracing_appender::non_blocking::WorkerGuard>;

/// Installs the subscriber (once per process; later calls do nothing). `targets` are logged at
/// INFO besides the engine's own.
pub fn init(home: &Path, prefix: &str, targets: &[&str], to_stderr: bool) -> LogGuard {
    let dir = home.join(crate::names::LOGS_DIR);
    let file = std::fs::create_dir_all(&dir).ok().and_then(|_| {
        tracing_appender::rolling::Builder::new()
            .rotation(tracing_appender::rolling::Rotation::DAILY)
            .filename_prefix(prefix)
            .filename_suffix("log")
            .max_log_files(14)
            .build(&dir)
            .ok()
    });
    let filter = || {
        targets.iter().fold(
            tracing_subscriber::filter::Targets::new()
                .with_target("metasync", tracing::Level::INFO),
            |f, t| f.with_target(*t, tracing::Level::INFO),
        )
    };
    // Lines go straight to the file from the logging thread, one write(2) each (the file
    // appender formats a line into one buffer). The non-blocking writer this replaced handed
    // every line to a log thread: on a first sync, which logs a line per file written, that
    // hand-off (a futex wake and the log thread's spinning, ~2 syscalls a line) cost more than
    // the write itself, and with a bounded queue the run waited on it anyway.
    let file_layer = file.map(|appender| {
        tracing_subscriber::fmt::layer()
            .with_writer(appender)
            .with_ansi(false)
            .with_target(false)
            .with_filter(filter())
    });
    let stderr_layer = to_stderr.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .without_time()
            .with_target(false)
            .with_filter(filter())
    });
    let _ = tracing_subscriber::registry()
        .with(file_layer)
        .with(stderr_layer)
        .try_init();
    None
}
