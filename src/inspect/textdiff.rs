//! The line diff of two text versions.

use similar::{ChangeTag, TextDiff};

/// The bytes as text, when they are text: valid UTF-8 without NUL bytes.
pub(crate) fn as_text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes)
        .ok()
        .filter(|s| !s.contains('\0'))
}

/// Lines added and removed from `a` to `b`.
pub(crate) fn line_counts(a: &str, b: &str) -> (usize, usize) {
    let diff = TextDiff::from_lines(a, b);
    let (mut added, mut removed) = (0, 0);
    for c in diff.iter_all_changes() {
        match c.tag() {
            ChangeTag::Insert => added += 1,
            ChangeTag::Delete => removed += 1,
            ChangeTag::Equal => {}
        }
    }
    (added, removed)
}

/// The unified diff from `a` to `b` (three lines of context), headed with the two labels;
/// empty when they are the same.
pub(crate) fn unified(a: &str, b: &str, label_a: &str, label_b: &str) -> String {
    if a == b {
        return String::new();
    }
    TextDiff::from_lines(a, b)
        .unified_diff()
        .context_radius(3)
        .header(label_a, label_b)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_unified() {
        let a = "one\ntwo\nthree\n";
        let b = "one\n2\nthree\nfour\n";
        assert_eq!(line_counts(a, b), (2, 1));
        let u = unified(a, b, "a", "b");
        assert!(u.starts_with("--- a\n+++ b\n@@"), "{u}");
        assert!(u.contains("-two\n+2\n") && u.contains("+four\n"), "{u}");
        assert_eq!(unified(a, a, "a", "b"), "");
        assert_eq!(as_text(b"x\0y"), None);
        assert_eq!(as_text(&[0xff, 0xfe]), None);
    }
}
