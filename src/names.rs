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

/// The longest name a file may have on ext4, APFS and most other file systems, in bytes.
const NAME_MAX: usize = 255;
/// The most a backup name adds to its `<file>` part: `.backup-YYYYMMDD-HHMMSS-NNNN`.
const BACKUP_SUFFIX_MAX: usize = BACKUP_INFIX.len() + 15 + 5;
/// The hex digits of the whole name's hash a shortened stem ends with.
const STEM_HASH_HEX: usize = 16;

/// The `<file>` part of the backup names of `file_name`: the name itself, or, when a backup
/// name would be longer than a file system allows, the name's first bytes (cut at a
/// character boundary), `~` and 16 hex digits of the SHA-256 of the whole name. One name
/// always gives the same stem, so its backups are found again.
pub fn backup_stem(file_name: &str) -> std::borrow::Cow<'_, str> {
    if file_name.len() + BACKUP_SUFFIX_MAX <= NAME_MAX {
        return std::borrow::Cow::Borrowed(file_name);
    }
    let mut cut = NAME_MAX - BACKUP_SUFFIX_MAX - 1 - STEM_HASH_HEX;
    while !file_name.is_char_boundary(cut) {
        cut -= 1;
    }
    let hash = crate::ids::sha256_hex(file_name.as_bytes());
    std::borrow::Cow::Owned(format!("{}~{}", &file_name[..cut], &hash[..STEM_HASH_HEX]))
}

/// Whether a backup name's `<file>` part may be a shortened stem (see [`backup_stem`]), so
/// the file it backs up is found by [`file_of_stem`], not read from the name.
pub fn may_be_shortened(stem: &str) -> bool {
    let longest = NAME_MAX - BACKUP_SUFFIX_MAX;
    stem.len() + 3 >= longest
        && stem.len() <= longest
        && stem.rsplit_once('~').is_some_and(|(_, h)| {
            h.len() == STEM_HASH_HEX && h.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

/// Of `names` (of files in one folder), the one whose backups are named with `stem`.
pub fn file_of_stem<'n>(stem: &str, names: impl IntoIterator<Item = &'n str>) -> Option<&'n str> {
    names.into_iter().find(|n| backup_stem(n) == stem)
}

/// `<stem>.backup-YYYYMMDD-HHMMSS`, with `-N` (N ≥ 1) when `n > 0`; the stem is
/// [`backup_stem`] of `file_name`.
pub fn backup_name(file_name: &str, at: NaiveDateTime, n: u32) -> String {
    let stamp = at.format(BACKUP_STAMP);
    let stem = backup_stem(file_name);
    if n == 0 {
        format!("{stem}{BACKUP_INFIX}{stamp}")
    } else {
        format!("{stem}{BACKUP_INFIX}{stamp}-{n}")
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

/// The longest `<file>` part a temp name keeps: with the rest of a temp name (the dot, the
/// infix, a machine id and a unique tail of up to 40 bytes) it stays under the 255 bytes a
/// file name may have on ext4, APFS and most other file systems.
const TEMP_FILE_PART_MAX: usize = 180;

/// `.<file>.metasync-tmp-<machine>-<unique>`: hidden, in the target's folder. A `<file>` of
/// more than [`TEMP_FILE_PART_MAX`] bytes is cut there (at a character boundary), so a file
/// whose own name is near the limit still gets a temp name the file system accepts; the
/// unique tail keeps two such temps apart.
pub fn temp_name(file_name: &str, machine: &str, unique: &str) -> String {
    let mut cut = file_name.len().min(TEMP_FILE_PART_MAX);
    while !file_name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(".{}{TEMP_INFIX}{machine}-{unique}", &file_name[..cut])
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
    fn a_backup_name_fits_a_file_system_and_leads_back_to_its_file() {
        let at = at();
        let long = "L".repeat(255);
        let wide = "日".repeat(80); // 240 bytes
        let near = "n".repeat(227); // the longest kept whole
        for name in [long.as_str(), wide.as_str(), near.as_str(), "a.md"] {
            let b = backup_name(name, at, 9_999);
            assert!(b.len() <= 255, "{} bytes: {b}", b.len());
            let parsed = parse_backup_name(&b).unwrap();
            assert_eq!((parsed.at, parsed.n), (at, 9_999));
            let stem = parsed.file_name;
            assert_eq!(stem == name, name.len() <= 227, "{name}");
            assert_eq!(may_be_shortened(&stem), stem != name, "{stem}");
            let others = ["L".repeat(254), "a.md".to_string(), name.to_string()];
            assert_eq!(
                file_of_stem(&stem, others.iter().map(String::as_str)),
                Some(name)
            );
        }
        assert_ne!(
            backup_stem(&"L".repeat(255)),
            backup_stem(&"L".repeat(254)),
            "two long names with the same first bytes get two stems"
        );
    }

    #[test]
    fn a_temp_name_fits_a_file_system_even_for_a_file_name_at_its_limit() {
        for long in [
            "L".repeat(255),
            "é".repeat(127),
            format!("x{}", "日".repeat(84)),
        ] {
            assert!(long.len() <= 255);
            let t = temp_name(&long, "72071db2", "7a034770");
            assert!(t.len() <= 255, "{} bytes: {t}", t.len());
            assert_eq!(temp_machine(&t), Some("72071db2"));
            assert!(t.starts_with(&format!(".{}", &long[..long.floor_char_boundary(150)])));
        }
        assert_eq!(
            temp_name("a.md", "m1", "x1"),
            ".a.md.metasync-tmp-m1-x1",
            "short names are kept whole"
        );
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
