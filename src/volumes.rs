//! The volumes mounted now, offered in place of a drive location's volume that this machine
//! has never seen (the built-in default drive is the seed's own `/Volumes/4444-iivii`): `init`
//! prints the offer and the app's panel shows it, instead of a location that is silently
//! never available. The choice is a pure function of a list of mounts; reading the list is the
//! only platform part (`/Volumes` on macOS, `/proc/self/mounts` elsewhere).

use crate::config::{expand_tilde, Config};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A drive location whose volume was never seen, and the volumes that could stand in for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeOffer {
    /// The location's name.
    pub location: String,
    /// The mount point it expects (`mount_point` in the config).
    pub mount_point: String,
    /// The removable volumes mounted now, sorted, none used by another location.
    pub volumes: Vec<String>,
}

impl VolumeOffer {
    /// One line for a person.
    pub fn describe(&self) -> String {
        let choices = if self.volumes.is_empty() {
            "no removable volume is mounted now".to_string()
        } else {
            format!("volumes mounted now: {}", self.volumes.join(", "))
        };
        format!(
            "location {:?} expects the drive {} (never seen on this machine); {choices} — \
             set its mount_point and path in metasync.toml to use one",
            self.location, self.mount_point
        )
    }
}

/// The mount points listed in `/proc/self/mounts`-style text (device, mount point, type,
/// ...; spaces and other bytes in names escaped as `\040`-style octal).
pub fn parse_mounts(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .map(|field| PathBuf::from(unescape_octal(field)))
        .collect()
}

/// `\040` → ` ` and the like; anything else is kept as it is.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match digits {
            Some(d) => {
                let value = d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where removable volumes are mounted, and how deep below: macOS's `/Volumes/<name>`; on
/// Linux udisks' `/media/<user>/<name>` (or `/media/<name>`), `/run/media/<user>/<name>`, and
/// `/mnt/<name>`. Anything deeper is some program's own mount, not a drive.
pub const VOLUME_PARENTS: [(&str, usize); 4] = [
    ("/Volumes", 1),
    ("/media", 2),
    ("/run/media", 2),
    ("/mnt", 1),
];

/// The mounts that are removable volumes (see [`VOLUME_PARENTS`]), sorted, without
/// duplicates.
pub fn removable(mounts: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mounts
        .iter()
        .filter(|m| {
            VOLUME_PARENTS.iter().any(|(parent, depth)| {
                m.strip_prefix(parent)
                    .is_ok_and(|rel| (1..=*depth).contains(&rel.components().count()))
            })
        })
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The offers: each location with a `mount_point` that is not mounted now and that this
/// machine never saw (no identity recorded under its name in `seen`) is offered the removable
/// volumes in `mounted` that no other location expects.
pub fn offers(
    config: &Config,
    seen: &HashMap<String, String>,
    mounted: &[PathBuf],
) -> Vec<VolumeOffer> {
    let volumes = removable(mounted);
    let expected: Vec<PathBuf> = config
        .locations
        .iter()
        .filter_map(|l| l.mount_point.as_deref().map(expand_tilde))
        .collect();
    config
        .locations
        .iter()
        .filter(|l| !seen.contains_key(&l.name))
        .filter_map(|l| {
            let mp = expand_tilde(l.mount_point.as_deref()?);
            if mounted.contains(&mp) {
                return None;
            }
            Some(VolumeOffer {
                location: l.name.clone(),
                mount_point: mp.display().to_string(),
                volumes: volumes
                    .iter()
                    .filter(|v| !expected.contains(v))
                    .map(|v| v.display().to_string())
                    .collect(),
            })
        })
        .collect()
}

/// The volumes mounted now: the mounted entries of `/Volumes` (the link to the start-up disk
/// left out).
#[cfg(target_os = "macos")]
pub fn mounted_now() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/Volumes") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| crate::location::is_mount_point(p))
        .collect()
}

/// The file systems mounted now, from `/proc/self/mounts`.
#[cfg(not(target_os = "macos"))]
pub fn mounted_now() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|t| parse_mounts(&t))
        .unwrap_or_default()
}

/// The offers for `home` with `config`, against the volumes mounted now and the locations the
/// home's archive has seen (none when it has no archive yet).
pub fn offers_for(home: &Path, config: &Config) -> crate::Result<Vec<VolumeOffer>> {
    let seen = match crate::archive::Archive::open_existing(home)? {
        Some(archive) => archive.location_ids()?,
        None => HashMap::new(),
    };
    Ok(offers(config, &seen, &mounted_now()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LocationConfig;

    const MOUNTS: &str = "\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
/dev/nvme0n1p2 / ext4 rw,relatime 0 0
tmpfs /run tmpfs rw,nosuid,nodev 0 0
/dev/sda1 /media/me/4444-iivii vfat rw,nosuid,nodev 0 0
/dev/sdb1 /media/me/My\\040Passport exfat rw,nosuid,nodev 0 0
/dev/sdc1 /run/media/me/BACKUP ext4 rw 0 0
/dev/sdd1 /mnt ext4 rw 0 0
/dev/disk4s1 /Volumes/Photos apfs rw 0 0
none /mnt/sandbox/tools/v1/python tmpfs ro 0 0
/dev/sde1 /mnt/usb vfat rw 0 0
";

    fn paths(p: &[&str]) -> Vec<PathBuf> {
        p.iter().map(PathBuf::from).collect()
    }

    fn config(locations: &[(&str, Option<&str>)]) -> Config {
        Config {
            locations: locations
                .iter()
                .map(|(name, mp)| LocationConfig {
                    name: name.to_string(),
                    path: format!("{}/.metasystem", mp.unwrap_or("/cloud")),
                    mount_point: mp.map(Into::into),
                    ..Default::default()
                })
                .collect(),
            ..Config::default()
        }
    }

    #[test]
    fn mounts_are_parsed_with_escaped_names() {
        let m = parse_mounts(MOUNTS);
        assert_eq!(m.len(), 10);
        assert!(m.contains(&PathBuf::from("/media/me/My Passport")), "{m:?}");
        assert_eq!(unescape_octal("a\\011b\\\\c\\04"), "a\tb\\\\c\\04");
    }

    #[test]
    fn only_volumes_below_the_usual_parents_are_removable() {
        assert_eq!(
            removable(&parse_mounts(MOUNTS)),
            paths(&[
                "/Volumes/Photos",
                "/media/me/4444-iivii",
                "/media/me/My Passport",
                "/mnt/usb",
                "/run/media/me/BACKUP",
            ])
        );
    }

    #[test]
    fn a_never_seen_unmounted_drive_is_offered_the_mounted_volumes() {
        let c = config(&[("icloud", None), ("external", Some("/Volumes/4444-iivii"))]);
        let mounted = paths(&[
            "/",
            "/Volumes/Photos",
            "/Volumes/Backup",
            "/System/Volumes/Data",
        ]);
        let got = offers(&c, &HashMap::new(), &mounted);
        assert_eq!(
            got,
            vec![VolumeOffer {
                location: "external".into(),
                mount_point: "/Volumes/4444-iivii".into(),
                volumes: vec!["/Volumes/Backup".into(), "/Volumes/Photos".into()],
            }]
        );
        assert!(got[0]
            .describe()
            .contains("/Volumes/Backup, /Volumes/Photos"));
        // Nothing mounted: the offer says so rather than vanish.
        let none = offers(&c, &HashMap::new(), &paths(&["/"]));
        assert!(none[0].volumes.is_empty());
        assert!(
            none[0].describe().contains("no removable volume"),
            "{}",
            none[0].describe()
        );
    }

    #[test]
    fn no_offer_once_the_drive_was_seen_or_while_it_is_mounted() {
        let c = config(&[("external", Some("/Volumes/4444-iivii"))]);
        let seen = HashMap::from([("external".to_string(), "id-1".to_string())]);
        assert_eq!(offers(&c, &seen, &paths(&["/Volumes/Photos"])), vec![]);
        let mounted = paths(&["/Volumes/4444-iivii", "/Volumes/Photos"]);
        assert_eq!(offers(&c, &HashMap::new(), &mounted), vec![]);
        // A location without a mount point (a cloud folder) is never offered anything.
        let cloud = config(&[("icloud", None)]);
        assert_eq!(offers(&cloud, &HashMap::new(), &mounted), vec![]);
    }

    #[test]
    fn volumes_other_locations_expect_are_not_offered() {
        let c = config(&[
            ("a", Some("/media/me/NEW")),
            ("b", Some("/media/me/4444-iivii")),
        ]);
        let got = offers(&c, &HashMap::new(), &parse_mounts(MOUNTS));
        assert_eq!(got.len(), 1, "b's drive is mounted: {got:?}");
        assert_eq!(got[0].location, "a");
        assert_eq!(
            got[0].volumes,
            vec![
                "/Volumes/Photos",
                "/media/me/My Passport",
                "/mnt/usb",
                "/run/media/me/BACKUP"
            ]
        );
    }
}
