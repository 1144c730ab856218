//! Each location's health in the words the panel and the tray show: what kind of place it
//! is (the home, a folder, a drive, an object store), available or not with a short reason
//! (the engine's full message kept as the detail), and how much its history takes.

use metasync::config::Config;
use metasync::{Engine, HistoryUsage, LocationReport, StatusReport};
use serde::Serialize;

/// What kind of place a location is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaceKind {
    /// The home folder (`local`).
    Home,
    /// A folder (a synced cloud folder such as iCloud Drive, a network share...).
    Folder,
    /// A folder on a removable drive (`mount_point` set).
    Drive,
    /// An S3-compatible bucket (`url` set).
    Store,
}

/// One location's health for people.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocationHealth {
    /// The location's name.
    pub location: String,
    /// What kind of place it is.
    pub kind: PlaceKind,
    /// Its folder, or its `s3://` URL for a store.
    pub place: String,
    /// Whether the engine may read and write it.
    pub available: bool,
    /// Why not (or a note when available), short enough for a menu line.
    pub reason: Option<String>,
    /// The engine's whole message, when `reason` leaves part of it out.
    pub detail: Option<String>,
    /// What its history takes ("12 KB in the bucket · 3 versions"), when known.
    pub history: Option<String>,
}

/// `status` with the bytes each available location's history takes; without them (and a
/// line in the log) when they cannot be read.
pub fn with_history(engine: &Engine, mut status: StatusReport) -> StatusReport {
    match engine.history_usage() {
        Ok(h) => status.history = h,
        Err(e) => tracing::warn!("history usage in {}: {e}", engine.home().display()),
    }
    status
}

/// The health of every location of a status report, in its order.
pub fn of_status(status: &StatusReport, config: &Config) -> Vec<LocationHealth> {
    status
        .locations
        .iter()
        .map(|l| {
            let usage = status
                .history
                .iter()
                .find(|h| h.location == l.location.name);
            of_location(&l.location, kind(&l.location.name, config), usage)
        })
        .collect()
}

/// The kind of the location `name` in `config`.
pub fn kind(name: &str, config: &Config) -> PlaceKind {
    if name == "local" {
        return PlaceKind::Home;
    }
    match config.locations.iter().find(|l| l.name == name) {
        Some(l) if l.url.is_some() => PlaceKind::Store,
        Some(l) if l.mount_point.is_some() => PlaceKind::Drive,
        _ => PlaceKind::Folder,
    }
}

fn of_location(
    loc: &LocationReport,
    kind: PlaceKind,
    usage: Option<&HistoryUsage>,
) -> LocationHealth {
    let (reason, detail) = match loc.reason.as_deref() {
        Some(r) => {
            let short = short_reason(&loc.path, r);
            let detail = (short != r).then(|| r.to_string());
            (Some(short), detail)
        }
        None => (None, None),
    };
    LocationHealth {
        location: loc.name.clone(),
        kind,
        place: loc.path.clone(),
        available: loc.available,
        reason,
        detail,
        history: usage.map(history_words),
    }
}

/// A store's reason without its URL (shown beside it) and the error chain after the
/// cause: "s3://b/p: endpoint unreachable (http://…): Generic S3 error: …" →
/// "endpoint unreachable (http://…)". Other reasons are kept whole.
pub fn short_reason(place: &str, reason: &str) -> String {
    if !place.contains("://") {
        return reason.to_string();
    }
    let rest = reason
        .strip_prefix(place)
        .and_then(|r| r.strip_prefix(": "))
        .unwrap_or(reason);
    match rest.split_once(": ") {
        Some((cause, _)) => cause.to_string(),
        None => rest.to_string(),
    }
}

/// "12 KB in the bucket · 3 versions", "4.1 KB · 2 versions", "none yet".
pub fn history_words(h: &HistoryUsage) -> String {
    if h.versions == 0 && h.plain_bytes + h.stored_bytes + h.bucket_bytes == 0 {
        return "none yet".to_string();
    }
    let mut parts = Vec::new();
    let on_disk = h.plain_bytes + h.stored_bytes;
    if on_disk > 0 || h.bucket_bytes == 0 {
        parts.push(metasync::words::bytes(on_disk));
    }
    if h.bucket_bytes > 0 {
        parts.push(format!(
            "{} in the bucket",
            metasync::words::bytes(h.bucket_bytes)
        ));
    }
    let mut text = format!(
        "{} · {}",
        parts.join(" + "),
        metasync::words::plural(h.versions as u64, "version")
    );
    if h.over_budget {
        text.push_str(" · over max_history_mb");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stores_reason_loses_its_url_and_the_error_chain() {
        let url = "s3://shared/meta";
        assert_eq!(
            short_reason(
                url,
                "s3://shared/meta: endpoint unreachable (http://127.0.0.1:9): Generic S3 error: \
                 error sending request: tcp connect error: Connection refused"
            ),
            "endpoint unreachable (http://127.0.0.1:9)"
        );
        assert_eq!(
            short_reason(
                url,
                "s3://shared/meta: no such bucket `shared`: NoSuchBucket"
            ),
            "no such bucket `shared`"
        );
        assert_eq!(
            short_reason(url, "no credentials: set AWS_ACCESS_KEY_ID …"),
            "no credentials"
        );
        // A folder's reason is its own business: kept whole.
        assert_eq!(
            short_reason("/Volumes/usb", "drive not mounted: /Volumes/usb"),
            "drive not mounted: /Volumes/usb"
        );
    }

    fn usage(plain: u64, bucket: u64, versions: usize) -> HistoryUsage {
        HistoryUsage {
            location: "x".into(),
            plain_bytes: plain,
            stored_bytes: 0,
            bucket_bytes: bucket,
            versions,
            over_budget: false,
        }
    }

    #[test]
    fn history_in_words() {
        assert_eq!(history_words(&usage(0, 0, 0)), "none yet");
        assert_eq!(history_words(&usage(4100, 0, 2)), "4.1 KB · 2 versions");
        assert_eq!(
            history_words(&usage(0, 12_000, 3)),
            "12 KB in the bucket · 3 versions"
        );
        assert_eq!(
            history_words(&usage(10, 2000, 1)),
            "10 bytes + 2 KB in the bucket · 1 version"
        );
    }
}
