//! Which files in a location are synced files: the config's glob patterns, minus the names
//! that never are (backups, temp and side files, placeholders, the marker, home's own state).

use crate::names;
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use std::collections::BTreeSet;
use std::path::Path;

/// Checks one pattern: relative, no `..`, valid glob syntax.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("an empty pattern matches nothing".into());
    }
    if pattern.starts_with('/') {
        return Err(format!(
            "pattern `{pattern}` must be relative to the location's root"
        ));
    }
    if pattern.split('/').any(|c| c == ".." || c == ".") {
        return Err(format!(
            "pattern `{pattern}` must not contain `.` or `..` components"
        ));
    }
    build_glob(pattern)
        .map(|_| ())
        .map_err(|e| format!("pattern `{pattern}`: {e}"))
}

fn build_glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

fn is_literal(pattern: &str) -> bool {
    !pattern
        .chars()
        .any(|c| matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\'))
}

/// The compiled `files` patterns.
#[derive(Debug, Clone)]
pub struct Selector {
    literals: Vec<String>,
    globs: Option<GlobSet>,
}

impl Selector {
    /// Compiles patterns already checked by [`check_pattern`].
    pub fn new(patterns: &[String]) -> Result<Selector, String> {
        let mut literals = Vec::new();
        let mut builder = GlobSetBuilder::new();
        let mut any_glob = false;
        for p in patterns {
            if is_literal(p) {
                literals.push(p.clone());
            } else {
                builder.add(build_glob(p).map_err(|e| format!("pattern `{p}`: {e}"))?);
                any_glob = true;
            }
        }
        let globs = if any_glob {
            Some(builder.build().map_err(|e| e.to_string())?)
        } else {
            None
        };
        Ok(Selector { literals, globs })
    }

    /// Whether a relative path is a synced file.
    pub fn matches(&self, rel: &str) -> bool {
        if !is_eligible(rel) {
            return false;
        }
        self.literals.iter().any(|l| l == rel)
            || self.globs.as_ref().is_some_and(|g| g.is_match(rel))
    }

    /// The synced files present under `root` (regular files only; symlinks are not followed).
    /// Literal patterns cost one `stat` each; glob patterns walk the tree.
    pub fn find(&self, root: &Path) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for l in &self.literals {
            if is_eligible(l) && std::fs::symlink_metadata(root.join(l)).is_ok_and(|m| m.is_file())
            {
                found.insert(l.clone());
            }
        }
        if let Some(globs) = &self.globs {
            let walker = walkdir::WalkDir::new(root)
                .follow_links(false)
                .into_iter()
                .filter_entry(|e| {
                    e.depth() == 0
                        || !(e.file_type().is_dir()
                            && e.depth() == 1
                            && is_home_state_dir(e.file_name()))
                });
            for entry in walker.flatten() {
                if !entry.file_type().is_file() {
                    continue;
                }
                let Ok(rel) = entry.path().strip_prefix(root) else {
                    continue;
                };
                let Some(rel) = rel.to_str() else { continue };
                if is_eligible(rel) && globs.is_match(rel) {
                    found.insert(rel.to_string());
                }
            }
        }
        found
    }
}

fn is_home_state_dir(name: &std::ffi::OsStr) -> bool {
    name == names::STATE_DIR || name == names::LOGS_DIR
}

/// Whether a relative path may be a synced file at all.
pub fn is_eligible(rel: &str) -> bool {
    let mut parts = rel.split('/');
    let first = parts.next().unwrap_or("");
    if first == names::STATE_DIR || first == names::LOGS_DIR || rel == names::CONFIG_FILE {
        return false;
    }
    let name = rel.rsplit('/').next().unwrap_or(rel);
    !rel.is_empty()
        && !rel.split('/').any(|c| c.is_empty() || c == "..")
        && !names::is_never_synced(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(p: &[&str]) -> Selector {
        Selector::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn star_does_not_cross_folders_double_star_does() {
        let s = sel(&["*.yaml", "notes/**/*.md"]);
        assert!(s.matches("a.yaml"));
        assert!(!s.matches("sub/a.yaml"));
        assert!(s.matches("notes/x.md"));
        assert!(s.matches("notes/a/b/x.md"));
        assert!(!s.matches("x.md"));
    }

    #[test]
    fn never_synced_names_are_excluded_even_when_matched() {
        let s = sel(&["**/*"]);
        for rel in [
            "metastore.db.backup-20261201-090507",
            "metastore.db-wal",
            ".metastore.db.icloud",
            ".metasync-location",
            ".metasync/state.db",
            "logs/metasync.log",
            "metasync.toml",
            ".a.metasync-tmp-ab-1",
        ] {
            assert!(!s.matches(rel), "{rel}");
        }
        assert!(s.matches("metastore.db"));
        assert!(s.matches("deep/er/file.txt"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(check_pattern("/etc/passwd").is_err());
        assert!(check_pattern("../x").is_err());
        assert!(check_pattern("a/[b").is_err());
        assert!(check_pattern("").is_err());
        assert!(check_pattern("**/*.db").is_ok());
    }

    #[test]
    fn find_uses_the_tree() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("sub/deeper")).unwrap();
        for f in [
            "a.yaml",
            "sub/b.yaml",
            "sub/deeper/c.yaml",
            "sub/x.txt",
            "a.yaml.backup-20261201-090507",
        ] {
            std::fs::write(d.path().join(f), "x").unwrap();
        }
        let s = sel(&["*.yaml", "sub/**/*.yaml", "metastore.db"]);
        let got: Vec<_> = s.find(d.path()).into_iter().collect();
        assert_eq!(got, vec!["a.yaml", "sub/b.yaml", "sub/deeper/c.yaml"]);
    }
}
