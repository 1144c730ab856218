//! Words for people: counts with the right plural (`1 file`, `2 files`) and sizes in units
//! (`287 KB`), used by the command line's human output.

/// `n` and the noun, plural unless `n == 1`: `plural(1, "file")` is `1 file`,
/// `plural(2, "file")` is `2 files`, `plural(3, "entity")` is `3 entities`.
pub fn plural(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {}", plural_of(noun))
    }
}

/// The plural of an English noun: `-y` after a consonant → `-ies`, `-s`/`-x`/`-ch`/`-sh` →
/// `-es`, else `-s`.
pub fn plural_of(noun: &str) -> String {
    let vowel_before_y = noun
        .strip_suffix('y')
        .and_then(|s| s.chars().last())
        .is_some_and(|c| "aeiou".contains(c));
    if let (Some(stem), false) = (noun.strip_suffix('y'), vowel_before_y) {
        format!("{stem}ies")
    } else if ["s", "x", "ch", "sh"].iter().any(|e| noun.ends_with(e)) {
        format!("{noun}es")
    } else {
        format!("{noun}s")
    }
}

/// A size in bytes for people, in decimal units: `512 bytes`, `1 byte`, `287 KB`, `1.4 MB`,
/// `383 MB`, `2.1 GB` (three significant digits at most, never `1.0`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return plural(n, "byte");
    }
    let mut v = n as f64;
    let mut unit = "";
    for u in UNITS {
        v /= 1000.0;
        unit = u;
        if v < 999.5 {
            break;
        }
    }
    if v < 9.95 {
        let s = format!("{v:.1}");
        let s = s.strip_suffix(".0").unwrap_or(&s);
        format!("{s} {unit}")
    } else {
        format!("{v:.0} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals() {
        assert_eq!(plural(1u64, "conversation"), "1 conversation");
        assert_eq!(plural(0u64, "file"), "0 files");
        assert_eq!(plural(2u64, "file"), "2 files");
        assert_eq!(plural(3u64, "entity"), "3 entities");
        assert_eq!(plural(2u64, "day"), "2 days");
        assert_eq!(plural(2u64, "match"), "2 matches");
        assert_eq!(plural(2u64, "row conflict"), "2 row conflicts");
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes(0), "0 bytes");
        assert_eq!(bytes(1), "1 byte");
        assert_eq!(bytes(999), "999 bytes");
        assert_eq!(bytes(1000), "1 KB");
        assert_eq!(bytes(1450), "1.4 KB");
        assert_eq!(bytes(287_000), "287 KB");
        assert_eq!(bytes(999_499), "999 KB");
        assert_eq!(bytes(999_500), "1 MB");
        assert_eq!(bytes(383_000_000), "383 MB");
        assert_eq!(bytes(2_100_000_000), "2.1 GB");
    }
}
