//! A place that holds copies of the synced files: its root, whether it can be used now
//! (mount point, iCloud root, identity marker), and the small file primitives on it.

use crate::config::{expand_tilde, Config};
use crate::names;
use std::path::{Path, PathBuf};

/// The name of the home location.
pub const LOCAL: &str = "local";

/// A configured location.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    /// `local` or the configured name.
    pub name: String,
    /// Its root folder.
    pub root: PathBuf,
    /// When set: available only while this is a mounted volume.
    pub mount_point: Option<PathBuf>,
    /// When set: an object store, and `root` is its mirror under the home's state folder.
    pub store: Option<crate::bucket::StoreSpec>,
}

impl Location {
    /// Whether this is the home folder.
    pub fn is_local(&self) -> bool {
        self.name == LOCAL
    }

    /// The full path of a synced file here.
    pub fn path_of(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

/// `local` first, then the configured remotes in order.
pub fn all(home: &Path, config: &Config) -> Vec<Location> {
    let mut out = vec![Location {
        name: LOCAL.into(),
        root: home.to_path_buf(),
        mount_point: None,
        store: None,
    }];
    for l in &config.locations {
        let store = l.store();
        let root = match &store {
            Some(_) => crate::bucket::mirror_root(home, &l.name),
            None => expand_tilde(&l.path),
        };
        out.push(Location {
            name: l.name.clone(),
            root,
            mount_point: l.mount_point.as_deref().map(expand_tilde),
            store,
        });
    }
    out
}

/// Two locations of which one lies inside the other (or both are the same folder): each run
/// would copy the inner one into the outer one again, one level deeper.
#[derive(Debug, Clone, PartialEq)]
pub struct Overlap {
    /// The outer location's name and root as configured.
    pub outer: (String, PathBuf),
    /// The inner location's name and root as configured.
    pub inner: (String, PathBuf),
    /// Whether both are the very same folder.
    pub same: bool,
    /// The index among the configured remotes of the one whose `path` to name: the inner one,
    /// or the outer one when the inner one is the home.
    pub remote_index: usize,
}

impl std::fmt::Display for Overlap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ((on, op), (inn, ip)) = (&self.outer, &self.inner);
        let how = if self.same {
            "is the same folder as"
        } else {
            "lies inside"
        };
        write!(
            f,
            "location `{inn}` ({}) {how} location `{on}` ({}): each run would copy one into the \
             other again; give them separate folders",
            ip.display(),
            op.display()
        )
    }
}

/// The first pair of `locations` (home first) whose roots overlap: compared after `~`
/// expansion and lexical normalisation (absolute, no `.` or `..`), and again with the
/// longest existing part of each root resolved (symbolic links followed).
pub fn overlap(locations: &[Location]) -> Option<Overlap> {
    let forms: Vec<[PathBuf; 2]> = locations
        .iter()
        .map(|l| {
            let lexical = normalise(&l.root);
            let resolved = resolve_existing(&lexical);
            [lexical, resolved]
        })
        .collect();
    for (i, a) in forms.iter().enumerate() {
        for (j, b) in forms.iter().enumerate().skip(i + 1) {
            // An object store's mirror lies in the home's state folder, which no run syncs.
            if locations[i].store.is_some() || locations[j].store.is_some() {
                continue;
            }
            let b_in_a = (0..2).any(|k| b[k].starts_with(&a[k]));
            let a_in_b = (0..2).any(|k| a[k].starts_with(&b[k]));
            if !(a_in_b || b_in_a) {
                continue;
            }
            // Name the inner one; the home (first) is outer when both hold each other.
            let (outer, inner) = if b_in_a { (i, j) } else { (j, i) };
            let named = |x: usize| (locations[x].name.clone(), locations[x].root.clone());
            return Some(Overlap {
                outer: named(outer),
                inner: named(inner),
                same: a_in_b && b_in_a,
                remote_index: if inner == 0 { outer } else { inner }.saturating_sub(1),
            });
        }
    }
    None
}

/// `path` made absolute (against the current folder) with `.` and `..` applied lexically.
pub fn normalise(path: &Path) -> PathBuf {
    use std::path::Component;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `path` with its longest existing ancestor canonicalised (symbolic links resolved) and the
/// rest, not yet created, appended as it is.
fn resolve_existing(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut at = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(at) {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                at = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Whether a location can be used this run, and how.
#[derive(Debug, Clone, PartialEq)]
pub enum Availability {
    /// Usable.
    Available {
        /// The folder does not exist yet: it is created on first write.
        create_folder: bool,
        /// The marker id to adopt or write (when this machine knows none yet).
        new_id: Option<NewId>,
    },
    /// Not usable, with the reason.
    Unavailable(String),
}

/// An identity this machine is about to learn for a location.
#[derive(Debug, Clone, PartialEq)]
pub enum NewId {
    /// The location has a marker made elsewhere: adopt its id.
    Adopt(String),
    /// No marker yet: write one with a fresh id on first use.
    Create,
}

impl Availability {
    /// Whether usable.
    pub fn is_available(&self) -> bool {
        matches!(self, Availability::Available { .. })
    }
}

/// The iCloud Drive root inside a path, if the path lies in iCloud Drive.
pub fn icloud_root(path: &Path) -> Option<PathBuf> {
    let mut acc = PathBuf::new();
    let mut comps = path.components().peekable();
    while let Some(c) = comps.next() {
        acc.push(c);
        if c.as_os_str() == "Mobile Documents"
            && comps
                .peek()
                .is_some_and(|n| n.as_os_str() == "com~apple~CloudDocs")
        {
            acc.push("com~apple~CloudDocs");
            return Some(acc);
        }
    }
    None
}

/// Whether `path` is a mounted volume: it exists and lies on another device than its parent.
pub fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if !meta.is_dir() {
        return false;
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => return true, // the file-system root
    };
    match std::fs::metadata(parent) {
        Ok(pm) => pm.dev() != meta.dev() || pm.ino() == meta.ino(),
        Err(_) => false,
    }
}

/// Reads a location's identity marker: `Ok(None)` when there is none.
pub fn read_marker(root: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(root.join(names::MARKER)) {
        Ok(text) => Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("id = ").map(|s| s.trim().to_string()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes a new identity marker (atomically).
pub fn write_marker(root: &Path, id: &str, name: &str, created: &str) -> std::io::Result<()> {
    let text = format!(
        "# Metasync location marker: identifies this folder as one location. Do not copy it.\n\
         id = {id}\nname = {name}\ncreated = {created}\n"
    );
    crate::apply::atomic::write_bytes(&root.join(names::MARKER), text.as_bytes(), "marker")
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Decides availability. `known_id` is the marker id this machine recorded for the location.
pub fn check(loc: &Location, known_id: Option<&str>) -> Availability {
    use Availability::*;
    if loc.is_local() {
        return Available {
            create_folder: !loc.root.is_dir(),
            new_id: None,
        };
    }
    if let Some(mp) = &loc.mount_point {
        if !is_mount_point(mp) {
            return Unavailable(format!(
                "drive not mounted ({} is not a mounted volume)",
                mp.display()
            ));
        }
        if !loc.root.starts_with(mp) {
            return Unavailable(format!(
                "path {} is not on the drive {}",
                loc.root.display(),
                mp.display()
            ));
        }
    }
    if let Some(cloud) = icloud_root(&loc.root) {
        if !cloud.is_dir() {
            return Unavailable(format!(
                "iCloud Drive not found ({} is missing)",
                cloud.display()
            ));
        }
    }
    match std::fs::metadata(&loc.root) {
        Ok(m) if !m.is_dir() => {
            return Unavailable(format!("{} is not a folder", loc.root.display()))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if known_id.is_some() {
                return Unavailable(format!(
                    "folder missing: {} was used before and is not re-created empty \
                     (if it moved for good, run `metasync relink {}`)",
                    loc.root.display(),
                    loc.name
                ));
            }
            let parent_ok = loc.root.parent().is_some_and(|p| p.is_dir());
            return if parent_ok {
                Available {
                    create_folder: true,
                    new_id: Some(NewId::Create),
                }
            } else {
                Unavailable(format!(
                    "folder missing: {} (and its parent)",
                    loc.root.display()
                ))
            };
        }
        Err(e) => return Unavailable(format!("cannot reach {}: {e}", loc.root.display())),
    }
    if let Err(e) = std::fs::read_dir(&loc.root) {
        return Unavailable(format!("cannot read {}: {e}", loc.root.display()));
    }
    let marker = match read_marker(&loc.root) {
        Ok(m) => m,
        Err(e) => return Unavailable(format!("cannot read its marker {}: {e}", names::MARKER)),
    };
    match (marker, known_id) {
        (Some(m), Some(k)) if m == k => Available {
            create_folder: false,
            new_id: None,
        },
        (Some(m), Some(k)) => Unavailable(format!(
            "a different location: its marker says {m}, this machine knows {k} \
             (another drive under the same name?); run `metasync relink {}` if it is the right one",
            loc.name
        )),
        (None, Some(_)) => Unavailable(format!(
            "identity marker {} is missing: this is not the folder this machine synced before; \
             run `metasync relink {}` if it is the right one",
            names::MARKER,
            loc.name
        )),
        (Some(m), None) => Available {
            create_folder: false,
            new_id: Some(NewId::Adopt(m)),
        },
        (None, None) => Available {
            create_folder: false,
            new_id: Some(NewId::Create),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(name: &str, root: &str) -> Location {
        Location {
            name: name.into(),
            root: root.into(),
            mount_point: None,
            store: None,
        }
    }

    #[test]
    fn normalise_applies_dots_lexically() {
        assert_eq!(normalise(Path::new("/a/./b/../c/")), Path::new("/a/c"));
        assert_eq!(normalise(Path::new("/../a")), Path::new("/a"));
        assert!(normalise(Path::new("rel/x")).is_absolute());
    }

    #[test]
    fn overlap_is_by_components_and_names_the_inner_one() {
        // Locations (home first), then the overlap: outer, inner, remote index, same folder.
        type Case<'a> = (
            &'a [(&'a str, &'a str)],
            Option<(&'a str, &'a str, usize, bool)>,
        );
        let table: &[Case] = &[
            (&[("local", "/w/home"), ("a", "/w/home2")], None),
            (&[("local", "/w/home"), ("a", "/w/hom")], None),
            (
                &[("local", "/w/home"), ("a", "/w/home/r")],
                Some(("local", "a", 0, false)),
            ),
            (
                &[("local", "/w/home"), ("a", "/w")],
                Some(("a", "local", 0, false)),
            ),
            (
                &[("local", "/w/home"), ("a", "/w/x/../home")],
                Some(("local", "a", 0, true)),
            ),
            (
                &[("local", "/w/home"), ("a", "/v"), ("b", "/v/./in")],
                Some(("a", "b", 1, false)),
            ),
            (
                &[("local", "/w/home"), ("a", "/v/in"), ("b", "/v")],
                Some(("b", "a", 0, false)),
            ),
        ];
        for (locs, want) in table {
            let locs: Vec<Location> = locs.iter().map(|(n, r)| at(n, r)).collect();
            let got = overlap(&locs).map(|o| (o.outer.0, o.inner.0, o.remote_index, o.same));
            let want = want.map(|(o, i, k, s)| (o.to_string(), i.to_string(), k, s));
            assert_eq!(got, want, "{locs:?}");
        }
    }

    #[test]
    fn overlap_follows_symlinks_of_the_existing_part() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::os::unix::fs::symlink(&home, dir.path().join("link")).unwrap();
        let locs = [
            at("local", home.to_str().unwrap()),
            at("a", dir.path().join("link/later/deeper").to_str().unwrap()),
        ];
        let o = overlap(&locs).expect("inside through the link");
        assert_eq!((o.outer.0.as_str(), o.inner.0.as_str()), ("local", "a"));
        let apart = [
            locs[0].clone(),
            at("a", dir.path().join("elsewhere").to_str().unwrap()),
        ];
        assert_eq!(overlap(&apart), None);
    }

    fn remote(root: &Path, mp: Option<&Path>) -> Location {
        Location {
            name: "ext".into(),
            root: root.to_path_buf(),
            mount_point: mp.map(Path::to_path_buf),
            store: None,
        }
    }

    #[test]
    fn plain_folder_is_not_a_mount_point() {
        let d = tempfile::tempdir().unwrap();
        let mp = d.path().join("Volumes/drive");
        std::fs::create_dir_all(&mp).unwrap();
        assert!(!is_mount_point(&mp));
        assert!(!is_mount_point(&d.path().join("missing")));
        assert!(is_mount_point(Path::new("/")));
        let a = check(&remote(&mp.join(".metasystem"), Some(&mp)), None);
        assert!(
            matches!(a, Availability::Unavailable(ref r) if r.contains("not mounted")),
            "{a:?}"
        );
        assert!(!mp.join(".metasystem").exists());
    }

    #[test]
    fn proc_is_a_mount_point() {
        if Path::new("/proc/self").exists() {
            assert!(is_mount_point(Path::new("/proc")));
        }
    }

    #[test]
    fn new_folder_identity_and_relink_cases() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("cloud");
        let loc = remote(&root, None);
        assert_eq!(
            check(&loc, None),
            Availability::Available {
                create_folder: true,
                new_id: Some(NewId::Create)
            }
        );
        assert!(
            matches!(check(&loc, Some("x")), Availability::Unavailable(ref r) if r.contains("folder missing"))
        );
        std::fs::create_dir(&root).unwrap();
        assert_eq!(
            check(&loc, None),
            Availability::Available {
                create_folder: false,
                new_id: Some(NewId::Create)
            }
        );
        assert!(
            matches!(check(&loc, Some("x")), Availability::Unavailable(ref r) if r.contains("marker"))
        );
        write_marker(&root, "abc", "ext", "now").unwrap();
        assert_eq!(read_marker(&root).unwrap().as_deref(), Some("abc"));
        assert_eq!(
            check(&loc, Some("abc")),
            Availability::Available {
                create_folder: false,
                new_id: None
            }
        );
        assert!(
            matches!(check(&loc, Some("zzz")), Availability::Unavailable(ref r) if r.contains("different"))
        );
        assert_eq!(
            check(&loc, None),
            Availability::Available {
                create_folder: false,
                new_id: Some(NewId::Adopt("abc".into()))
            }
        );
    }

    #[test]
    fn icloud_root_is_required() {
        let d = tempfile::tempdir().unwrap();
        let root = d
            .path()
            .join("Library/Mobile Documents/com~apple~CloudDocs/.metasystem");
        assert_eq!(
            icloud_root(&root),
            Some(
                d.path()
                    .join("Library/Mobile Documents/com~apple~CloudDocs")
            )
        );
        let loc = remote(&root, None);
        assert!(
            matches!(check(&loc, None), Availability::Unavailable(ref r) if r.contains("iCloud Drive not found"))
        );
        std::fs::create_dir_all(root.parent().unwrap()).unwrap();
        assert!(check(&loc, None).is_available());
    }
}
