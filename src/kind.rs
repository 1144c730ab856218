//! The per-file "kind" seam: how a version is read, hashed and written. Plain files are
//! bytes; SQLite databases are read through snapshots and hashed logically.

use crate::error::{IoContext, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// How a synced file is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bytes: SHA-256 of the content, copied as is.
    Plain,
    /// A SQLite database (header `SQLite format 3\0`).
    Sqlite,
}

impl Kind {
    /// Its name in reports and the scan cache.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::Sqlite => "sqlite",
        }
    }
    /// Parses [`Kind::as_str`].
    pub fn parse(s: &str) -> Kind {
        if s == "sqlite" {
            Kind::Sqlite
        } else {
            Kind::Plain
        }
    }
}

/// Kind-specific facts about one version, kept in the scan cache.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Facts {
    /// Integrity problems, for databases (empty when healthy or not a database).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub integrity: Vec<String>,
    /// Row count of `entities`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entities: Option<u64>,
    /// Row count of `conversations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversations: Option<u64>,
}

/// A version as read: its hash, kind and facts.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    /// Version hash (hex).
    pub hash: String,
    /// Its kind.
    pub kind: Kind,
    /// Kind-specific facts.
    pub facts: Facts,
}

/// Streams a file through SHA-256 in constant memory.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).ctx("open for hashing", path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).ctx("read for hashing", path)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(crate::ids::hex_lower(&h.finalize()))
}

/// Reads the version at `path`: detects its kind and hashes it.
pub fn read_content(path: &Path) -> Result<Content> {
    Ok(Content { hash: sha256_file(path)?, kind: Kind::Plain, facts: Facts::default() })
}

/// The shrink guard (SPEC §6): why a version must wait for the user, when its `entities` or
/// `conversations` count fell by more than `max_percent` against the last agreed version.
pub fn shrink_reason(agreed: &crate::archive::Agreed, facts: &Facts, max_percent: u32) -> Option<String> {
    let check = |table: &str, before: Option<u64>, after: Option<u64>| -> Option<String> {
        let (before, after) = (before?, after.unwrap_or(0));
        if before == 0 || after >= before {
            return None;
        }
        let fell = (before - after) * 100 / before;
        (fell > u64::from(max_percent))
            .then(|| format!("{table} fell from {before} to {after} (-{fell}%); confirm with `metasync resolve`"))
    };
    if facts.entities.is_none() && facts.conversations.is_none() && facts.integrity.is_empty() {
        // Not a database (or not one with these tables): nothing to guard.
        if agreed.entities.is_none() && agreed.conversations.is_none() {
            return None;
        }
    }
    check("entities", agreed.entities, facts.entities)
        .or_else(|| check("conversations", agreed.conversations, facts.conversations))
}

/// Writes the version at `src` to `dest` the way its kind needs, checking it is `expected`.
#[allow(clippy::too_many_arguments)]
pub fn write_version(
    kind: Kind,
    src: &Path,
    dest: &Path,
    dest_is_local: bool,
    expected: &str,
    mtime: std::time::SystemTime,
    machine: &str,
    config: &crate::config::Config,
) -> Result<()> {
    let _ = (kind, dest_is_local, config);
    crate::apply::copy_file(src, dest, expected, mtime, machine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{Agreed, Recorded};

    fn agreed(e: Option<u64>, c: Option<u64>) -> Agreed {
        Agreed { version: Recorded::Present("h".into()), entities: e, conversations: c }
    }

    fn facts(e: Option<u64>, c: Option<u64>) -> Facts {
        Facts { integrity: vec![], entities: e, conversations: c }
    }

    #[test]
    fn shrink_guard_cases() {
        let cases = [
            (agreed(Some(92), Some(1)), facts(Some(92), Some(1)), 50, false),
            (agreed(Some(92), Some(1)), facts(Some(46), Some(1)), 50, false),
            (agreed(Some(92), Some(1)), facts(Some(45), Some(1)), 50, true),
            (agreed(Some(92), Some(1)), facts(Some(92), Some(0)), 50, true),
            (agreed(Some(92), Some(2)), facts(Some(92), Some(1)), 50, false),
            (agreed(Some(0), None), facts(Some(0), None), 50, false),
            (agreed(None, None), facts(Some(1), None), 50, false),
            (agreed(Some(92), None), facts(None, None), 50, true),
            (agreed(Some(100), None), facts(Some(1), None), 100, false),
        ];
        for (i, (a, f, pct, held)) in cases.iter().enumerate() {
            assert_eq!(shrink_reason(a, f, *pct).is_some(), *held, "case {i}");
        }
        assert!(shrink_reason(&cases[2].0, &cases[2].1, 50).unwrap().contains("entities fell from 92 to 45"));
    }
}
