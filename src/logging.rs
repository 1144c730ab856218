//! Logging for both faces: `<home>/logs/<prefix>.YYYY-MM-DD.log`, rotated daily, 14 kept,
//! with the engine's lines (target `metasync`) and the caller's own targets; optionally on
//! stderr too.

use std::path::Path;
use tracing_subscriber::prelude::*;

/// Keeps the log writer alive; drop it at exit to flush.
pub type LogGuard = Option<tracing_appender::non_blocking::WorkerGuard>;

/// Lines the log writer's queue holds before a logging call waits for the file.
const LOG_QUEUE_LINES: usize = 1024;

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
    let (file_layer, guard) = match file {
        Some(appender) => {
            // The default queue holds 128,000 lines, allocated and touched up front: 4 MB
            // of page faults in every short CLI run. A run logs a few dozen lines; when the
            // queue is full the writer waits (not lossy), so no line is dropped.
            let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .buffered_lines_limit(LOG_QUEUE_LINES)
                .lossy(false)
                .finish(appender);
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .with_target(false)
                .with_filter(filter());
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
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
    guard
}
