//! The TOML configuration (SPEC §2): built-in platform-aware defaults, strict parsing with
//! errors that name the file, line and key, and the commented template `init` writes.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How a conflict between two or more changed versions is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The version with the latest modification time wins.
    #[default]
    Newest,
    /// The local version wins.
    Local,
    /// The first changed remote, in config order, wins.
    Remote,
    /// Nothing is overwritten; the conflict waits for `resolve`.
    Manual,
}

impl Strategy {
    /// Its config and CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Newest => "newest",
            Strategy::Local => "local",
            Strategy::Remote => "remote",
            Strategy::Manual => "manual",
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "newest" => Ok(Strategy::Newest),
            "local" => Ok(Strategy::Local),
            "remote" => Ok(Strategy::Remote),
            "manual" => Ok(Strategy::Manual),
            other => Err(format!(
                "unknown strategy `{other}` (expected newest, local, remote or manual)"
            )),
        }
    }
}

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

/// A remote location as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationConfig {
    /// Its name (`icloud`, `external`, ...); `local` is reserved.
    pub name: String,
    /// Its root folder (`~` expands to the user's home).
    pub path: String,
    /// When set, the location is available only while this is a mounted volume.
    #[serde(default)]
    pub mount_point: Option<String>,
}

/// Backup settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Always kept per file and location.
    pub keep_last: usize,
    /// How older backups are thinned.
    pub retention: Retention,
    /// With `retention = "max_age"`: how old a backup may get, in days.
    pub max_age_days: u32,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            keep_last: 5,
            retention: Retention::Staggered,
            max_age_days: 90,
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
        },
        LocationConfig {
            name: "external".into(),
            path: "/Volumes/4444-iivii/.metasystem".into(),
            mount_point: Some("/Volumes/4444-iivii".into()),
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
            let line = find_key_line(text, &key)
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
        for o in &self.merge_overrides {
            crate::select::check_pattern(&o.pattern).map_err(|m| ("pattern".to_string(), m))?;
        }
        let mut seen = std::collections::HashSet::new();
        for loc in &self.locations {
            let ok = !loc.name.is_empty()
                && loc
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return Err((
                    "name".into(),
                    format!(
                        "location name `{}` must be letters, digits, `-` or `_`",
                        loc.name
                    ),
                ));
            }
            if loc.name == "local" {
                return Err((
                    "name".into(),
                    "`local` is reserved for the home folder".into(),
                ));
            }
            if !seen.insert(loc.name.clone()) {
                return Err((
                    "name".into(),
                    format!("location `{}` is configured twice", loc.name),
                ));
            }
            if loc.path.trim().is_empty() {
                return Err((
                    "path".into(),
                    format!("location `{}` has an empty path", loc.name),
                ));
            }
        }
        if self.sqlite.max_shrink_percent > 100 {
            return Err((
                "max_shrink_percent".into(),
                "must be between 0 and 100".into(),
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
             keep_last = 5                    # always kept per file and location\n\
             retention = \"staggered\"          # staggered | max_age | none\n\
             max_age_days = 90                # with retention = \"max_age\"\n\n\
             [sqlite]\n\
             max_shrink_percent = 50          # hold back a version whose entities/conversations fell by more\n\
             quick_check_above_mb = 512       # quick_check instead of integrity_check above this size\n\
             busy_timeout_ms = 5000           # wait this long for another program's lock\n",
        );
        out
    }
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
    let (line, col) = match e.span() {
        Some(span) => line_col(text, span.start),
        None => (0, 0),
    };
    let key = e
        .span()
        .map(|s| {
            text[s.clone()]
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .filter(|k| !k.is_empty())
        .map(|k| format!(" at `{k}`"))
        .unwrap_or_default();
    let msg = e.message().trim().to_string();
    if line > 0 {
        Error::Config(format!(
            "{}:{line}:{col}: invalid config{key}: {msg}",
            path.display()
        ))
    } else {
        Error::Config(format!("{}: invalid config: {msg}", path.display()))
    }
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
