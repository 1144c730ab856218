//! The TOML configuration (SPEC §2): built-in platform-aware defaults, strict parsing with
//! errors that name the file, line and key, and the commented template `init` writes.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use crate::model::Strategy;

/// How old backups are thinned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Retention {
    /// One per hour for a day, one per day for 30 days, one per week for a year.
    #[default]
    Staggered,
    /// Everything older than `max_age_days` goes (beyond `keep_last`).
    MaxAge,
    /// Only `keep_last` are kept.
    None,
}

/// How a conflict between database versions is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MergeMode {
    /// Row by row against the last agreed version; the file-level strategy when that cannot be done.
    #[default]
    Rows,
    /// Whole files, by the strategy.
    File,
}

/// A per-pattern exception to `merge`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeOverride {
    /// A glob pattern of synced files.
    pub pattern: String,
    /// How those are merged.
    pub merge: MergeMode,
}

/// A remote location as configured: a folder (`path`) or an object store (`url`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationConfig {
    /// Its name (`icloud`, `external`, ...); `local` is reserved.
    pub name: String,
    /// Its root folder (`~` expands to the user's home); empty for an object store.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// When set, the location is available only while this is a mounted volume.
    #[serde(default)]
    pub mount_point: Option<String>,
    /// An object store: `s3://BUCKET/PREFIX`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The object store's server, when not AWS (`https://s3.example.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The object store's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Whether the object store may be reached over plain `http://` (a server on this machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_http: Option<bool>,
}

impl LocationConfig {
    /// The object store this location is, if it is one (`None` for a folder or a bad URL,
    /// which validation refuses).
    pub fn store(&self) -> Option<crate::bucket::StoreSpec> {
        let (bucket, prefix) = crate::bucket::StoreSpec::parse_url(self.url.as_deref()?).ok()?;
        Some(crate::bucket::StoreSpec {
            bucket,
            prefix,
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            allow_http: self.allow_http.unwrap_or(false),
        })
    }

    /// Checks `path` against `url` and the object-store keys: the key at fault and why.
    fn validate_kind(
        &self,
        key: impl Fn(&str) -> String,
    ) -> std::result::Result<(), (String, String)> {
        let name = &self.name;
        let Some(url) = &self.url else {
            for (k, set) in [
                ("endpoint", self.endpoint.is_some()),
                ("region", self.region.is_some()),
                ("allow_http", self.allow_http.is_some()),
            ] {
                if set {
                    return Err((
                        key(k),
                        format!(
                            "location `{name}` has `{k}` but no `url` (it is for object stores)"
                        ),
                    ));
                }
            }
            if self.path.is_empty() {
                return Err((
                    key("path"),
                    format!(
                        "location `{name}` needs `path` (a folder) or `url` (an object store, \
                         s3://BUCKET/PREFIX)"
                    ),
                ));
            }
            if self.path.trim().is_empty() {
                return Err((key("path"), format!("location `{name}` has an empty path")));
            }
            return Ok(());
        };
        if !self.path.is_empty() {
            return Err((
                key("url"),
                format!("location `{name}` has both `path` and `url`; give one"),
            ));
        }
        if self.mount_point.is_some() {
            return Err((
                key("mount_point"),
                format!("location `{name}` is an object store: `mount_point` is for drives"),
            ));
        }
        crate::bucket::StoreSpec::parse_url(url)
            .map_err(|m| (key("url"), format!("location `{name}`: {m}")))?;
        if let Some(e) = &self.endpoint {
            let http = e.starts_with("http://");
            if !(http || e.starts_with("https://")) {
                return Err((
                    key("endpoint"),
                    format!(
                        "location `{name}`: endpoint `{e}` must start with https:// (or http://)"
                    ),
                ));
            }
            if http && self.allow_http != Some(true) {
                return Err((key("endpoint"), format!("location `{name}`: endpoint `{e}` is plain http; set `allow_http = true` if it is a server on this machine")));
            }
        }
        if self.region.as_ref().is_some_and(|r| r.trim().is_empty()) {
            return Err((
                key("region"),
                format!("location `{name}` has an empty region"),
            ));
        }
        Ok(())
    }
}

/// Backup settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// The newest versions always kept per file and location, each exactly restorable.
    pub keep_last: usize,
    /// How many of the `keep_last` newest stay plain `<file>.backup-…` files (a person can
    /// `cp` one back); the others live in the location's history store.
    pub plain_last: usize,
    /// A file larger than this many MiB keeps no plain copy: all its versions are stored.
    pub plain_max_mb: u64,
    /// How older backups are thinned.
    pub retention: Retention,
    /// With `retention = "max_age"`: how old a backup may get, in days.
    pub max_age_days: u32,
    /// Protected versions (a conflict's loser, a version held by the shrink guard, a refused
    /// corrupt version, the version a restore or resolve replaced) are kept at least this
    /// many days, whatever the schedule says.
    pub protect_days: u32,
    /// When set: the history of a location (plain backups and stored versions) is kept
    /// within this many MiB, the oldest unprotected versions going first.
    pub max_history_mb: Option<u64>,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            keep_last: 5,
            plain_last: 1,
            plain_max_mb: 100,
            retention: Retention::Staggered,
            max_age_days: 90,
            protect_days: 30,
            max_history_mb: None,
        }
    }
}

/// SQLite handling settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqliteConfig {
    /// A version whose `entities` or `conversations` count fell by more than this is held back.
    pub max_shrink_percent: u32,
    /// Above this size (MiB) `quick_check` replaces `integrity_check`.
    pub quick_check_above_mb: u64,
    /// How long to wait for another program's lock on a database, in milliseconds.
    pub busy_timeout_ms: u64,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            max_shrink_percent: 50,
            quick_check_above_mb: 512,
            busy_timeout_ms: 5000,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Background sync period in seconds.
    pub interval_secs: u64,
    /// Default conflict strategy.
    pub strategy: Strategy,
    /// Glob patterns of synced files, relative to each location's root.
    pub files: Vec<String>,
    /// Whether a file missing in one place is deleted everywhere (default: restored).
    pub propagate_deletes: bool,
    /// How long a run waits for another run's lock, in seconds.
    pub lock_wait_secs: u64,
    /// How database conflicts are settled.
    pub merge: MergeMode,
    /// Exceptions to `merge`, first match wins.
    pub merge_overrides: Vec<MergeOverride>,
    /// The remotes, in order.
    pub locations: Vec<LocationConfig>,
    /// Backup settings.
    pub backups: BackupConfig,
    /// SQLite settings.
    pub sqlite: SqliteConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval_secs: 300,
            strategy: Strategy::Newest,
            files: vec!["metastore.db".into(), "sorting-rules.yaml".into()],
            propagate_deletes: false,
            lock_wait_secs: 60,
            merge: MergeMode::Rows,
            merge_overrides: Vec::new(),
            locations: default_locations(),
            backups: BackupConfig::default(),
            sqlite: SqliteConfig::default(),
        }
    }
}

#[cfg(target_os = "macos")]
fn default_locations() -> Vec<LocationConfig> {
    vec![
        LocationConfig {
            name: "icloud".into(),
            path: "~/Library/Mobile Documents/com~apple~CloudDocs/.metasystem".into(),
            mount_point: None,
            ..Default::default()
        },
        LocationConfig {
            name: "external".into(),
            path: "/Volumes/4444-iivii/.metasystem".into(),
            mount_point: Some("/Volumes/4444-iivii".into()),
            ..Default::default()
        },
    ]
}

#[cfg(not(target_os = "macos"))]
fn default_locations() -> Vec<LocationConfig> {
    Vec::new()
}

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigSource {
    /// No file at the default path: built-in defaults.
    Defaults,
    /// Read from this file.
    File(PathBuf),
}

impl Config {
    /// Loads the config: `explicit` must exist; otherwise `<home>/metasync.toml` if present,
    /// else the defaults.
    pub fn load(home: &Path, explicit: Option<&Path>) -> Result<(Config, ConfigSource)> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => {
                let p = default_path(home);
                if !p.exists() {
                    return Ok((Config::default(), ConfigSource::Defaults));
                }
                p
            }
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::Config(format!("{}: cannot read config: {e}", path.display())))?;
        let config = Config::parse(&text, &path)?;
        Ok((config, ConfigSource::File(path)))
    }

    /// Parses and validates config text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let config: Config =
            toml::from_str(text).map_err(|e| describe_toml_error(text, path, &e))?;
        config.validate().map_err(|(key, msg)| {
            let line = key_line(text, &key)
                .map(|l| format!(":{l}"))
                .unwrap_or_default();
            Error::Config(format!("{}{line}: key `{key}`: {msg}", path.display()))
        })?;
        Ok(config)
    }

    fn validate(&self) -> std::result::Result<(), (String, String)> {
        if self.interval_secs == 0 {
            return Err(("interval_secs".into(), "must be at least 1".into()));
        }
        if self.files.is_empty() {
            return Err(("files".into(), "must name at least one file pattern".into()));
        }
        for pattern in &self.files {
            crate::select::check_pattern(pattern).map_err(|m| ("files".to_string(), m))?;
        }
        for (i, o) in self.merge_overrides.iter().enumerate() {
            crate::select::check_pattern(&o.pattern)
                .map_err(|m| (format!("merge_overrides[{i}].pattern"), m))?;
        }
        let mut seen = std::collections::HashSet::new();
        for (i, loc) in self.locations.iter().enumerate() {
            let key = |k: &str| format!("locations[{i}].{k}");
            let ok = !loc.name.is_empty()
                && loc
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return Err((
                    key("name"),
                    format!(
                        "location name `{}` must be letters, digits, `-` or `_`",
                        loc.name
                    ),
                ));
            }
            if loc.name == "local" {
                return Err((
                    key("name"),
                    "`local` is reserved for the home folder".into(),
                ));
            }
            if !seen.insert(loc.name.clone()) {
                return Err((
                    key("name"),
                    format!("location `{}` is configured twice", loc.name),
                ));
            }
            loc.validate_kind(key)?;
            if loc
                .mount_point
                .as_ref()
                .is_some_and(|m| m.trim().is_empty())
            {
                return Err((
                    key("mount_point"),
                    format!("location `{}` has an empty mount point", loc.name),
                ));
            }
        }
        if self.sqlite.max_shrink_percent > 100 {
            return Err((
                "sqlite.max_shrink_percent".into(),
                "must be between 0 and 100".into(),
            ));
        }
        if self.backups.max_history_mb == Some(0) {
            return Err((
                "backups.max_history_mb".into(),
                "must be at least 1 (leave it out for no cap)".into(),
            ));
        }
        Ok(())
    }

    /// How conflicts on `file` are settled when it is a database.
    pub fn merge_mode_for(&self, file: &str) -> MergeMode {
        for o in &self.merge_overrides {
            if crate::select::Selector::new(std::slice::from_ref(&o.pattern))
                .is_ok_and(|s| s.matches(file))
            {
                return o.merge;
            }
        }
        self.merge
    }

    /// Whether any file can be merged row by row (the default, or an override): then runs
    /// keep row-merge bases.
    pub fn any_row_merge(&self) -> bool {
        self.merge == MergeMode::Rows
            || self
                .merge_overrides
                .iter()
                .any(|o| o.merge == MergeMode::Rows)
    }

    /// The commented default config that `init` writes.
    pub fn template() -> String {
        let mut out = String::from(
            "# Metasync configuration. Every key is optional; these are the defaults.\n\
             interval_secs = 300              # background sync period, seconds\n\
             strategy = \"newest\"              # newest | local | remote | manual\n\
             files = [\"metastore.db\", \"sorting-rules.yaml\"]   # glob patterns, relative to each location\n\
             propagate_deletes = false        # a file missing in one place is restored from the others\n\
             lock_wait_secs = 60              # how long a run waits for another run to finish\n\
             merge = \"rows\"                   # rows | file: database conflicts merged row by row, or whole files\n\
             # [[merge_overrides]]            # exceptions, first match wins\n\
             # pattern = \"archive/*.db\"\n\
             # merge = \"file\"\n\n",
        );
        let locs = default_locations();
        if locs.is_empty() {
            out.push_str(
                "# No remote is configured by default on this platform. Add one per synced folder:\n\
                 # [[locations]]\n\
                 # name = \"cloud\"\n\
                 # path = \"~/Dropbox/.metasystem\"\n\
                 #\n\
                 # [[locations]]\n\
                 # name = \"external\"\n\
                 # path = \"/media/me/drive/.metasystem\"\n\
                 # mount_point = \"/media/me/drive\"   # available only while mounted\n\n",
            );
        }
        for loc in locs {
            out.push_str(&format!(
                "[[locations]]\nname = \"{}\"\npath = \"{}\"\n",
                loc.name, loc.path
            ));
            if let Some(mp) = loc.mount_point {
                out.push_str(&format!(
                    "mount_point = \"{mp}\"   # available only while this is a mounted volume\n"
                ));
            }
            out.push('\n');
        }
        out.push_str(
            "[backups]\n\
             keep_last = 5                    # newest versions always kept per file and location\n\
             plain_last = 1                   # of those, how many stay plain .backup- files (the rest are stored)\n\
             plain_max_mb = 100               # a file larger than this keeps no plain copy\n\
             retention = \"staggered\"          # staggered | max_age | none\n\
             max_age_days = 90                # with retention = \"max_age\"\n\
             protect_days = 30                # conflict losers, held and replaced versions: kept at least this long\n\
             # max_history_mb = 500           # cap on a location's history (oldest unprotected go first)\n\n\
             [sqlite]\n\
             max_shrink_percent = 50          # hold back a version whose entities/conversations fell by more\n\
             quick_check_above_mb = 512       # quick_check instead of integrity_check above this size\n\
             busy_timeout_ms = 5000           # wait this long for another program's lock\n",
        );
        out
    }
}

/// A configuration error about `key` with `message`, naming the file and the key's line.
pub fn key_error(source: &ConfigSource, key: &str, message: &str) -> Error {
    let (file, line) = match source {
        ConfigSource::File(p) => {
            let line = std::fs::read_to_string(p)
                .ok()
                .and_then(|text| key_line(&text, key))
                .map(|l| format!(":{l}"))
                .unwrap_or_default();
            (p.display().to_string(), line)
        }
        ConfigSource::Defaults => ("(built-in defaults)".to_string(), String::new()),
    };
    Error::Config(format!("{file}{line}: key `{key}`: {message}"))
}

/// `<home>/metasync.toml`.
pub fn default_path(home: &Path) -> PathBuf {
    home.join("metasync.toml")
}

/// Expands a leading `~` to the user's home directory.
pub fn expand_tilde(path: &str) -> PathBuf {
    if path == "~" || path.starts_with("~/") {
        if let Some(h) = std::env::var_os("HOME") {
            return PathBuf::from(h).join(path.trim_start_matches('~').trim_start_matches('/'));
        }
    }
    PathBuf::from(path)
}

/// The default home: `~/.metasystem`.
pub fn default_home() -> PathBuf {
    expand_tilde("~/.metasystem")
}

fn describe_toml_error(text: &str, path: &Path, e: &toml::de::Error) -> Error {
    let msg = match e.message().trim() {
        // serde's words for an enum given another type.
        "wanted string or table" => "invalid type: expected a string".to_string(),
        other => other.to_string(),
    };
    let Some(span) = e.span() else {
        return Error::Config(format!("{}: invalid config: {msg}", path.display()));
    };
    let (line, col) = line_col(text, span.start);
    match key_at(text, &span) {
        Some(key) => Error::Config(format!(
            "{}:{line}:{col}: key `{key}`: {msg}",
            path.display()
        )),
        None => Error::Config(format!(
            "{}:{line}:{col}: invalid config: {msg}",
            path.display()
        )),
    }
}

/// Every key of a TOML document with its full name (`backups.keep_last`,
/// `locations[1].path`; an array's items as `files[0]`), the span of the key and the span of
/// its value. Parsed with recovery: a document with a syntax error still names its keys.
fn spanned_keys(text: &str) -> Vec<(String, Range<usize>, Range<usize>)> {
    fn walk(
        t: &toml::de::DeTable<'_>,
        prefix: &str,
        out: &mut Vec<(String, Range<usize>, Range<usize>)>,
    ) {
        for (k, v) in t.iter() {
            let name = if prefix.is_empty() {
                k.get_ref().to_string()
            } else {
                format!("{prefix}.{}", k.get_ref())
            };
            out.push((name.clone(), k.span(), v.span()));
            value(v, &name, out);
        }
    }
    fn value(
        v: &toml::Spanned<toml::de::DeValue<'_>>,
        name: &str,
        out: &mut Vec<(String, Range<usize>, Range<usize>)>,
    ) {
        match v.get_ref() {
            toml::de::DeValue::Table(t) => walk(t, name, out),
            toml::de::DeValue::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    let n = format!("{name}[{i}]");
                    out.push((n.clone(), item.span(), item.span()));
                    value(item, &n, out);
                }
            }
            _ => {}
        }
    }
    let (doc, _) = toml::de::DeTable::parse_recoverable(text);
    let mut out = Vec::new();
    walk(doc.get_ref(), "", &mut out);
    out
}

/// The key an error at `span` is about: the innermost one whose key or value holds it, else
/// the last key before it on its line.
fn key_at(text: &str, span: &Range<usize>) -> Option<String> {
    let keys = spanned_keys(text);
    let holds = |r: &Range<usize>| r.start <= span.start && span.end <= r.end.max(r.start + 1);
    keys.iter()
        .filter(|(_, k, v)| holds(k) || holds(v))
        .min_by_key(|(name, _, v)| (v.len(), usize::MAX - name.len()))
        .or_else(|| {
            let line = line_col(text, span.start).0;
            keys.iter()
                .filter(|(_, k, _)| k.start <= span.start && line_col(text, k.start).0 == line)
                .max_by_key(|(_, k, _)| k.start)
        })
        .map(|(name, _, _)| name.clone())
}

/// The line of `key` (a full name as [`spanned_keys`] gives it), or of the first line that
/// sets it when the document cannot say.
fn key_line(text: &str, key: &str) -> Option<usize> {
    let keys = spanned_keys(text);
    let line_of = |key: &str| {
        keys.iter()
            .find(|(name, _, _)| name == key)
            .map(|(_, k, _)| line_col(text, k.start).0)
    };
    // A key left out of an array's item (`locations[1].path`): the item's line.
    let item = || {
        key.rsplit_once('.')
            .filter(|(parent, _)| parent.ends_with(']'))
            .and_then(|(parent, _)| line_of(parent))
    };
    line_of(key)
        .or_else(item)
        .or_else(|| find_key_line(text, key.rsplit('.').next().unwrap_or(key)))
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

fn find_key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/h/metasync.toml"))
    }

    #[test]
    fn empty_file_means_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.interval_secs, 300);
        assert_eq!(c.files, vec!["metastore.db", "sorting-rules.yaml"]);
    }

    #[test]
    fn template_parses_back_to_defaults() {
        assert_eq!(parse(&Config::template()).unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = parse("interval_secs = 10\nstrategyy = \"local\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/h/metasync.toml:2:"), "{err}");
        assert!(err.contains("strategyy"), "{err}");
    }

    #[test]
    fn bad_value_names_line_and_key() {
        let err = parse("strategy = \"oldest\"\n").unwrap_err().to_string();
        assert!(err.starts_with("/h/metasync.toml:1:"), "{err}");
        assert!(err.contains("oldest"), "{err}");
        let err = parse("\n\n[backups]\nkeep_last = -1\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/h/metasync.toml:4:"), "{err}");
    }

    #[test]
    fn unknown_key_in_location_is_an_error() {
        let err =
            parse("[[locations]]\nname = \"a\"\npath = \"/x\"\nmount = \"/y\"\n").unwrap_err();
        assert!(err.to_string().contains(":4:"), "{err}");
    }

    #[test]
    fn validation_errors_name_the_key() {
        let err = parse("interval_secs = 0\n").unwrap_err().to_string();
        assert_eq!(
            err,
            "/h/metasync.toml:1: key `interval_secs`: must be at least 1"
        );
        let err = parse("[[locations]]\nname = \"local\"\npath = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("reserved"), "{err}");
        let err = parse("[[locations]]\nname = \"a\"\npath = \"/x\"\n[[locations]]\nname = \"a\"\npath = \"/y\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("twice"), "{err}");
        let err = parse("files = [\"a/[b\"]\n").unwrap_err().to_string();
        assert!(err.contains("key `files`"), "{err}");
    }

    #[test]
    fn type_and_value_errors_name_the_full_key() {
        for (text, want) in [
            ("interval_secs = -300\n", "/h/metasync.toml:1:17: key `interval_secs`:"),
            ("\n[backups]\nkeep_last = \"5\"\n", ":3:13: key `backups.keep_last`:"),
            (
                "[[locations]]\nname = \"a\"\npath = \"/a\"\n[[locations]]\nname = \"b\"\npath = 3\n",
                ":6:8: key `locations[1].path`:",
            ),
            (
                "[[locations]]\nname = \"a\"\npath = \"/a\"\n[[locations]]\nname = \"b\"\n",
                ":4: key `locations[1].path`: location `b` needs `path` (a folder) or `url`",
            ),
            ("files = [\"a\", 3]\n", ":1:15: key `files[1]`:"),
            ("strategy = 1\n", ":1:12: key `strategy`: invalid type: expected a string"),
            ("[sqlite]\nmax_shrink_percent = 101\n", ":2: key `sqlite.max_shrink_percent`:"),
            ("[backups]\nmax_history_mb = 0\n", ":2: key `backups.max_history_mb`: must be at least 1"),
            ("[backups]\nprotect_days = -1\n", ":2:16: key `backups.protect_days`:"),
            (
                "[[locations]]\nname = \"a\"\npath = \"/a\"\n[[locations]]\nname = \"a\"\npath = \"/b\"\n",
                ":5: key `locations[1].name`: location `a` is configured twice",
            ),
            // A syntax error still names the key of its line.
            ("interval_secs = 1\nlock_wait_secs = \n", ":2:18: key `lock_wait_secs`:"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(err.starts_with("/h/metasync.toml:"), "{err}");
        }
    }

    #[test]
    fn explicit_missing_config_is_an_error_default_missing_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (c, src) = Config::load(dir.path(), None).unwrap();
        assert_eq!(src, ConfigSource::Defaults);
        assert_eq!(c, Config::default());
        let err = Config::load(dir.path(), Some(&dir.path().join("nope.toml"))).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("nope.toml"));
    }
}

#[cfg(test)]
mod store_tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, Path::new("/h/metasync.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn object_store_locations_parse_and_validate() {
        let ok = "[[locations]]\nname = \"s3\"\nurl = \"s3://bkt/meta\"\nendpoint = \"http://127.0.0.1:9000\"\nallow_http = true\nregion = \"eu-central-1\"\n";
        let c = Config::parse(ok, Path::new("/h/metasync.toml")).unwrap();
        let spec = c.locations[0].store().unwrap();
        assert_eq!(
            (spec.bucket.as_str(), spec.prefix.as_str()),
            ("bkt", "meta")
        );
        assert_eq!(spec.region.as_deref(), Some("eu-central-1"));
        assert!(spec.allow_http);
        for (text, want) in [
            (
                "[[locations]]\nname = \"b\"\n",
                "/h/metasync.toml:1: key `locations[0].path`: location `b` needs `path` (a folder) or `url`",
            ),
            (
                "[[locations]]\nname = \"b\"\npath = \"/x\"\nurl = \"s3://bkt/p\"\n",
                ":4: key `locations[0].url`: location `b` has both `path` and `url`",
            ),
            (
                "[[locations]]\nname = \"b\"\nurl = \"https://bkt/p\"\n",
                ":3: key `locations[0].url`: location `b`: `https://bkt/p` is not an s3:// URL",
            ),
            (
                "[[locations]]\nname = \"b\"\nurl = \"s3://bkt/p\"\nendpoint = \"http://h:9000\"\n",
                ":4: key `locations[0].endpoint`: location `b`: endpoint `http://h:9000` is plain http; set `allow_http = true`",
            ),
            (
                "[[locations]]\nname = \"b\"\npath = \"/x\"\nregion = \"x\"\n",
                ":4: key `locations[0].region`: location `b` has `region` but no `url`",
            ),
            (
                "[[locations]]\nname = \"b\"\nurl = \"s3://bkt/p\"\nmount_point = \"/m\"\n",
                ":4: key `locations[0].mount_point`: location `b` is an object store",
            ),
        ] {
            let e = err(text);
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
