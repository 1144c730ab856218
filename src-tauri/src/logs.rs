//! The app's log: `<home>/logs/metasync-app.YYYY-MM-DD.log`, rotated daily, 14 kept, beside
//! the CLI's; the engine's own lines (target `metasync`) land there too. Also on stderr.

use std::path::Path;
use tracing_subscriber::prelude::*;

/// Keeps the log writer alive; drop it at exit to flush.
pub type LogGuard = Option<tracing_appender::non_blocking::WorkerGuard>;

/// Installs the subscriber (once; later calls do nothing).
pub fn init(home: &Path) -> LogGuard {
    let dir = home.join(metasync::names::LOGS_DIR);
    let file = std::fs::create_dir_all(&dir).ok().and_then(|_| {
        tracing_appender::rolling::Builder::new()
            .rotation(tracing_appender::rolling::Rotation::DAILY)
            .filename_prefix("metasync-app")
            .filename_suffix("log")
            .max_log_files(14)
            .build(&dir)
            .ok()
    });
    let filter = || {
        tracing_subscriber::filter::Targets::new()
            .with_target("metasync", tracing::Level::INFO)
            .with_target("metasync_app", tracing::Level::INFO)
    };
    let (file_layer, guard) = match file {
        Some(appender) => {
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .with_filter(filter());
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter());
    let _ = tracing_subscriber::registry()
        .with(file_layer)
        .with(stderr_layer)
        .try_init();
    guard
}
