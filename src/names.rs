//! The names Metasync gives to and recognises in files beside synced ones: backups, temp
//! files, SQLite side files, cloud placeholders, iCloud conflict copies. Pure string logic.

use chrono::NaiveDateTime;

/// The identity marker at each remote's root.
pub const MARKER: &str = ".metasync-location";
/// The state folder inside home.
pub const STATE_DIR: &str = ".metasync";
/// The logs folder inside home.
pub const LOGS_DIR: &str = "logs";
/// The config file inside home.
pub const CONFIG_FILE: &str = "metasync.toml";

const BACKUP_INFIX: &str = ".backup-";
const TEMP_INFIX: &str = ".metasync-tmp-";
const BACKUP_STAMP: &str = "%Y%m%d-%H%M%S";

/// `<file>.backup-YYYYMMDD-HHMMSS`, with `-N` (N ≥ 1) when `n > 0`.
pub fn backup_name(file_name: &str, at: NaiveDateTime, n: u32) -> String {
    let stamp = at.format(BACKUP_STAMP);
    if n == 0 {
        format!("{file_name}{BACKUP_INFIX}{stamp}")
    } else {
        format!("{file_name}{BACKUP_INFIX}{stamp}-{n}")
    }
}

/// A parsed backup name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupName {
    /// The name of the file it backs up.
    pub file_name: String,
    /// The local time in its name.
    pub at: NaiveDateTime,
    /// The collision suffix (0 when none).
    pub n: u32,
}

/// Parses `<file>.backup-YYYYMMDD-HHMMSS[-N]`; `None` for anything else.
pub fn parse_backup_name(name: &str) -> Option<BackupName> {
    let idx = rfind_short(name, BACKUP_INFIX)?;
    let (file_name, rest) = (&name[..idx], &name[idx + BACKUP_INFIX.len()..]);
    if file_name.is_empty() || rest.len() < 15 {
        return None;
    }
    let (stamp, suffix) = rest.split_at(15);
    let at = NaiveDateTime::parse_from_str(stamp, BACKUP_STAMP).ok()?;
    let n = match suffix {
        "" => 0,
        s => {
            let digits = s.strip_prefix('-')?;
            if digits.is_empty()
                || !digits.bytes().all(|b| b.is_ascii_digit())
                || digits.starts_with('0')
            {
                return None;
            }
            digits.parse().ok()?
        }
    };
    Some(BackupName {
        file_name: file_name.to_string(),
        at,
        n,
    })
}

/// `hay.rfind(needle)` for the short names here, without setting up a substring searcher
/// (asked for every file of every scan).
fn rfind_short(hay: &str, needle: &str) -> Option<usize> {
    hay.as_bytes()
        .windows(needle.len())
        .rposition(|w| w == needle.as_bytes())
}

/// Whether a file name is one of Metasync's backups.
pub fn is_backup_name(name: &str) -> bool {
    parse_backup_name(name).is_some()
}

/// `.<file>.metasync-tmp-<machine>-<unique>`: hidden, in the target's folder.
pub fn temp_name(file_name: &str, machine: &str, unique: &str) -> String {
    format!(".{file_name}{TEMP_INFIX}{machine}-{unique}")
}

/// For a temp file's name: the machine id that made it, or `None` when not a temp name.
pub fn temp_machine(name: &str) -> Option<&str> {
    let rest = name.strip_prefix('.')?;
    let idx = rfind_short(rest, TEMP_INFIX)?;
    let tail = &rest[idx + TEMP_INFIX.len()..];
    tail.split_once('-').map(|(m, _)| m)
}

/// Whether a name is a SQLite side file (`-wal`, `-shm`, `-journal`).
pub fn is_sqlite_side_file(name: &str) -> bool {
    ["-wal", "-shm", "-journal"]
        .iter()
        .any(|s| name.len() > s.len() && name.ends_with(s))
}

/// iCloud's placeholder for an evicted file: `.<name>.icloud`.
pub fn placeholder_name(file_name: &str) -> String {
    format!(".{file_name}.icloud")
}

/// For a placeholder name `.<name>.icloud`, the evicted file's name.
pub fn placeholder_target(name: &str) -> Option<&str> {
    name.strip_prefix('.')?
        .strip_suffix(".icloud")
        .filter(|s| !s.is_empty())
}

/// Whether `candidate` is an iCloud conflict copy of `file_name`
/// (`metastore 2.db` for `metastore.db`, `notes 3` for `notes`).
pub fn is_conflict_copy_of(candidate: &str, file_name: &str) -> bool {
    let (stem, ext) = match file_name.rfind('.') {
        Some(i) if i > 0 => (&file_name[..i], &file_name[i..]),
        _ => (file_name, ""),
    };
    let Some(middle) = candidate
        .strip_prefix(stem)
        .and_then(|r| r.strip_suffix(ext))
    else {
        return false;
    };
    let Some(digits) = middle.strip_prefix(' ') else {
        return false;
    };
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

/// Whether a file name can never be a synced file, wherever it is.
pub fn is_never_synced(name: &str) -> bool {
    name == MARKER
        || is_backup_name(name)
        || temp_machine(name).is_some()
        || is_sqlite_side_file(name)
        || placeholder_target(name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at() -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 12, 1)
            .unwrap()
            .and_hms_opt(9, 5, 7)
            .unwrap()
    }

    #[test]
    fn backup_names_round_trip() {
        assert_eq!(
            backup_name("metastore.db", at(), 0),
            "metastore.db.backup-20261201-090507"
        );
        assert_eq!(
            backup_name("metastore.db", at(), 2),
            "metastore.db.backup-20261201-090507-2"
        );
        for n in [0, 1, 12] {
            let p = parse_backup_name(&backup_name("a b.yaml", at(), n)).unwrap();
            assert_eq!(
                p,
                BackupName {
                    file_name: "a b.yaml".into(),
                    at: at(),
                    n
                }
            );
        }
    }

    #[test]
    fn not_backup_names() {
        for name in [
            "metastore.db",
            ".backup-20261201-090507",
            "x.backup-2026120-090507",
            "x.backup-20261301-090507",
            "x.backup-20261201-090507-",
            "x.backup-20261201-090507-0",
            "x.backup-20261201-090507-a",
            "x.backup-20261201-090507x",
        ] {
            assert!(!is_backup_name(name), "{name}");
        }
    }

    #[test]
    fn temp_and_side_files() {
        let t = temp_name("metastore.db", "ab12", "99-1");
        assert_eq!(temp_machine(&t), Some("ab12"));
        assert!(is_never_synced(&t));
        assert_eq!(temp_machine("metastore.db"), None);
        for s in [
            "metastore.db-wal",
            "metastore.db-shm",
            "metastore.db-journal",
        ] {
            assert!(is_sqlite_side_file(s) && is_never_synced(s));
        }
        assert!(!is_sqlite_side_file("-wal"));
        assert!(!is_never_synced("sorting-rules.yaml"));
    }

    #[test]
    fn placeholders_and_conflict_copies() {
        assert_eq!(placeholder_name("metastore.db"), ".metastore.db.icloud");
        assert_eq!(
            placeholder_target(".metastore.db.icloud"),
            Some("metastore.db")
        );
        assert_eq!(placeholder_target("..icloud"), None);
        assert!(is_conflict_copy_of("metastore 2.db", "metastore.db"));
        assert!(is_conflict_copy_of("notes 13", "notes"));
        assert!(!is_conflict_copy_of("metastore 2.yaml", "metastore.db"));
        assert!(!is_conflict_copy_of("metastore.db", "metastore.db"));
        assert!(!is_conflict_copy_of("metastore 0.db", "metastore.db"));
        assert!(!is_conflict_copy_of("metastore x.db", "metastore.db"));
    }
}
