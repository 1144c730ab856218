//! The archive's own on-disk shapes for what it keeps as JSON, so that a change of the
//! command line's output never changes the archive's schema by accident (and the other way
//! round). Today's shapes are the ones the archive has always written: no migration.

use crate::report::Candidate;
use serde::{Deserialize, Serialize};

/// One candidate version of a conflict, as kept in `conflicts.candidates`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct StoredCandidate {
    location: String,
    sha256: Option<String>,
    size: Option<u64>,
    mtime: Option<String>,
    entities: Option<u64>,
    conversations: Option<u64>,
}

impl From<&Candidate> for StoredCandidate {
    fn from(c: &Candidate) -> Self {
        StoredCandidate {
            location: c.location.clone(),
            sha256: c.sha256.clone(),
            size: c.size,
            mtime: c.mtime.clone(),
            entities: c.entities,
            conversations: c.conversations,
        }
    }
}

impl From<StoredCandidate> for Candidate {
    fn from(c: StoredCandidate) -> Self {
        Candidate {
            location: c.location,
            sha256: c.sha256,
            size: c.size,
            mtime: c.mtime,
            entities: c.entities,
            conversations: c.conversations,
        }
    }
}

/// The candidates of a conflict as the archive keeps them.
pub(super) fn encode(candidates: &[Candidate]) -> String {
    let stored: Vec<StoredCandidate> = candidates.iter().map(StoredCandidate::from).collect();
    serde_json::to_string(&stored).unwrap_or_default()
}

/// [`encode`]'s text back to candidates (none when it cannot be read).
pub(super) fn decode(text: &str) -> Vec<Candidate> {
    serde_json::from_str::<Vec<StoredCandidate>>(text)
        .map(|v| v.into_iter().map(Candidate::from).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_shape_is_the_one_archives_already_hold() {
        let text = r#"[{"location":"icloud","sha256":"ab","size":3,"mtime":"2026-01-01T00:00:00+00:00","entities":null,"conversations":2}]"#;
        let c = decode(text);
        assert_eq!(c[0].location, "icloud");
        assert_eq!(c[0].conversations, Some(2));
        assert_eq!(encode(&c), text);
    }
}
