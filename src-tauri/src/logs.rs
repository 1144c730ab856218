//! The app's log: `<home>/logs/metasync-app.YYYY-MM-DD.log`, rotated daily, 14 kept, beside
//! the CLI's; the engine's own lines land there too. Also on stderr.

use std::path::Path;

/// Keeps the log writer alive; drop it at exit to flush.
pub type LogGuard = metasync::logging::LogGuard;

/// Installs the subscriber (once; later calls do nothing).
pub fn init(home: &Path) -> LogGuard {
    metasync::logging::init(home, "metasync-app", &["metasync_app"], true)
}
