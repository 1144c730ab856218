fn main() {
    // The panel may call only these app commands; each gets an `allow-<name>` permission
    // that the capability files grant explicitly.
    let manifest = tauri_build::AppManifest::new().commands(&[
        "get_status",
        "sync_now",
        "list_backups",
        "restore_backup",
        "list_conflicts",
        "resolve_conflict",
        "recent_runs",
        "set_paused",
        "pause_for",
        "set_pause_on_battery",
        "take_focus",
        "file_history",
        "diff_versions",
        "restore_rows",
        "resolve_rows",
        "get_autostart",
        "set_autostart",
    ]);
    tauri_build::try_build(tauri_build::Attributes::new().app_manifest(manifest))
        .expect("tauri-build failed");
}
