//! Start at login points at the running executable: refused where that path will be gone at
//! the next login — the app opened from its mounted `.dmg` (under `/Volumes/`), or from the
//! read-only copy macOS runs a quarantined app from (`…/AppTranslocation/…`).

use std::path::Path;

/// Why start at login must not point at `exe`, or `None` when it may. A pure function of the
/// path, so it is checked the same everywhere (neither kind of path exists off macOS).
pub fn unstable_location(exe: &Path) -> Option<String> {
    let advice = "move Metasync.app to /Applications, open it from there, then turn Start at \
                  login on.";
    if exe
        .components()
        .any(|c| c.as_os_str() == "AppTranslocation")
    {
        return Some(format!(
            "Start at login is off: Metasync runs from a temporary copy macOS made of it \
             ({}), which is gone after a restart; {advice}",
            exe.display()
        ));
    }
    if exe.starts_with("/Volumes") {
        return Some(format!(
            "Start at login is off: Metasync runs from a disk image or a removable volume \
             ({}), which is not there at the next login; {advice}",
            exe.display()
        ));
    }
    None
}

/// [`unstable_location`] of the running executable (none when it cannot be told).
pub fn warning() -> Option<String> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| unstable_location(&exe))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_image_or_a_translocated_copy_is_refused() {
        for refused in [
            "/Volumes/Metasync/Metasync.app/Contents/MacOS/metasync-app",
            "/Volumes/4444-iivii/Apps/Metasync.app/Contents/MacOS/metasync-app",
            "/private/var/folders/xy/abc/T/AppTranslocation/5F1C-2D/d/Metasync.app/Contents/MacOS/metasync-app",
        ] {
            let why = unstable_location(Path::new(refused));
            let why = why.unwrap_or_else(|| panic!("{refused} accepted"));
            assert!(why.contains(refused), "{why}");
            assert!(why.contains("/Applications"), "{why}");
        }
        assert!(
            unstable_location(Path::new("/Volumes/x")).is_some_and(|w| w.contains("disk image"))
        );
        assert!(unstable_location(Path::new("/a/AppTranslocation/b"))
            .is_some_and(|w| w.contains("temporary copy")));
    }

    #[test]
    fn a_settled_install_is_accepted() {
        for fine in [
            "/Applications/Metasync.app/Contents/MacOS/metasync-app",
            "/Users/me/Applications/Metasync.app/Contents/MacOS/metasync-app",
            "/usr/bin/metasync-app",
            "/home/me/src/metasync/target/debug/metasync-app",
            // Only the folder itself counts, not a name that starts the same.
            "/VolumesArchive/Metasync.app/Contents/MacOS/metasync-app",
            "/opt/MyAppTranslocationTool/metasync-app",
        ] {
            assert_eq!(unstable_location(Path::new(fine)), None, "{fine}");
        }
    }
}
