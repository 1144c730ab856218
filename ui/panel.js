// Metasync panel: shows what the Rust commands return and sends the user's choices back.
// It decides nothing the engine decides; ids and names it sends come from the engine's own
// reports and are checked again by the engine.
"use strict";

const tauri = window.__TAURI__;
const invoke = tauri.core.invoke;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-") || k === "title" || k === "type" || k === "id") node.setAttribute(k, String(v));
    else node[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function size(bytes) {
  if (bytes === null || bytes === undefined) return "—";
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let v = bytes / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

function when(rfc3339) {
  if (!rfc3339) return "—";
  const d = new Date(rfc3339);
  if (Number.isNaN(d.getTime())) return rfc3339;
  const opts = { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };
  if (d.getFullYear() !== new Date().getFullYear()) opts.year = "numeric";
  return d.toLocaleString(undefined, opts);
}

const short = (h) => (h ? h.slice(0, 7) : "—");

let sayTimer = null;
function say(text, kind, action) {
  const m = $("message");
  clearTimeout(sayTimer);
  // Confirmations fade after a while; errors stay until the next action.
  if (text && (kind || "info") === "info") sayTimer = setTimeout(() => say(""), 8000);
  if (!text) { m.hidden = true; m.textContent = ""; delete m.dataset.kind; delete m.dataset.action; return; }
  m.textContent = text;
  m.dataset.kind = kind || "info";
  if (action) m.dataset.action = action; else delete m.dataset.action;
  m.hidden = false;
}

function counts(f) {
  const parts = [];
  if (f.entities !== null && f.entities !== undefined) parts.push(`${f.entities} entities`);
  if (f.conversations !== null && f.conversations !== undefined) parts.push(`${f.conversations} conversations`);
  return parts.join(" · ");
}

function renderApp(app) {
  const pill = $("state");
  pill.dataset.state = app.tray_state;
  pill.textContent = app.tray_label;
  // Resume ends the user's pause; a battery pause ends with the power cable (or the box).
  $("resume").hidden = !(app.pause && app.pause.reason === "user");
  $("pause-battery").checked = Boolean(app.pause_on_battery);
  $("pause-for").value = "";
  pill.title = app.pause ? app.pause.label : "";
  $("sync-now").dataset.running = String(app.running);
  $("sync-now").textContent = app.running ? "Syncing…" : "Sync now";
  $("last-run").textContent = app.last
    ? `Last ${app.last.command} ${when(app.last.finished)}: ${app.last.message}`
    : "No sync since the app started.";
}

function renderLocations(status) {
  const box = $("locations");
  box.replaceChildren();
  for (const loc of status.locations) {
    const health = loc.available ? (loc.reason ? `available — ${loc.reason}` : "available") : `unavailable — ${loc.reason || "unknown reason"}`;
    const rows = loc.files.map((f) =>
      el("tr", { "data-file": f.file },
        el("td", {},
          el("div", { class: "nowrap" }, f.file, f.state === "present" ? null : el("span", { class: "muted", text: ` (${f.state})` })),
          counts(f) ? el("div", { class: "sub", text: counts(f) }) : null,
          f.note ? el("div", { class: "sub", text: f.note }) : null),
        el("td", { class: "num nowrap", text: f.state === "present" ? size(f.size) : "" }),
        el("td", { class: "hash nowrap", title: f.sha256 || "", text: short(f.sha256) })));
    const table = rows.length
      ? el("table", {},
          el("thead", {}, el("tr", {}, el("th", { text: "File" }), el("th", { class: "num", text: "Size" }), el("th", { text: "Version" }))),
          el("tbody", {}, ...rows))
      : el("p", { class: "empty", text: loc.available ? "No synced files here yet." : "" });
    box.append(el("div", { class: "card location", "data-location": loc.name, "data-available": String(loc.available) },
      el("div", { class: "card-head" },
        el("strong", { text: loc.name }),
        el("span", { class: "health", "data-available": String(loc.available), text: health })),
      el("div", { class: "path", text: loc.path }),
      table,
      loc.conflict_copies && loc.conflict_copies.length
        ? el("p", { class: "muted", text: `iCloud conflict copies: ${loc.conflict_copies.join(", ")}` })
        : null,
      loc.skipped && loc.skipped.length
        ? el("p", { class: "muted", text: `Not synced: ${loc.skipped.map((s) => `${s.name} (${s.reason})`).join("; ")}` })
        : null));
  }
  const warnings = $("warnings");
  const items = [
    ...(status.warnings || []).map((w) => el("li", { text: w })),
    ...(status.volume_offers || []).map(renderOffer),
  ];
  if (status.autostart_warning) items.push(el("li", { "data-warning": "autostart", text: status.autostart_warning }));
  warnings.replaceChildren(...items);
}

// A drive location whose volume this machine never saw: the volumes mounted now, to choose
// from in metasync.toml (the page writes no config).
function renderOffer(offer) {
  const volumes = offer.volumes.length
    ? [" Volumes mounted now: ", ...offer.volumes.flatMap((v, i) => [i ? ", " : "", el("code", { text: v })]), "."]
    : [" No removable volume is mounted now."];
  return el("li", { "data-offer": offer.location },
    `Location ${offer.location} expects the drive `, el("code", { text: offer.mount_point }),
    ", never seen on this machine.", ...volumes,
    " To use one, set its mount_point and path in metasync.toml.");
}

function renderConflicts(conflicts) {
  const box = $("conflicts");
  $("conflict-count").textContent = conflicts.length ? `(${conflicts.length})` : "";
  if (!conflicts.length) {
    box.replaceChildren(el("p", { class: "empty", text: "No conflicts." }));
    return;
  }
  box.replaceChildren(...conflicts.map((c) =>
    el("div", { class: "conflict", "data-conflict": c.file },
      el("h3", { text: c.file }),
      el("p", { class: "reason", text: `${c.reason} · seen ${when(c.detected)}` }),
      c.rows && c.rows.length
        ? el("details", { class: "rows" },
            el("summary", { text: `${c.rows.length} row${c.rows.length === 1 ? "" : "s"} changed differently on both sides` }),
            el("ul", {}, ...c.rows.map((r) =>
              el("li", { "data-row-table": r.table },
                el("code", { text: `${r.table} ${r.key}` }),
                el("div", {}, ...r.values.map(([loc, v]) =>
                  el("div", { class: "sub" }, `${loc}: `, el("code", { text: v === null ? "(deleted)" : v }))))))))
        : null,
      el("div", { class: "candidates" }, ...c.candidates.map((k) =>
        el("div", { class: "candidate", "data-candidate": k.location },
          el("strong", { text: k.location }),
          el("span", { class: "muted", text: k.sha256 ? `${size(k.size)} · changed ${when(k.mtime)}` : "deleted here" }),
          el("span", { class: "hash", title: k.sha256 || "", text: short(k.sha256) }),
          counts(k) ? el("span", { class: "muted", text: counts(k) }) : null,
          el("button", {
            type: "button", class: "keep small primary", "data-file": c.file, "data-location": k.location,
            text: "Keep this", onclick: () => keep(c.file, k.location),
          })))))));
}

function renderBackups(backups) {
  const box = $("backups");
  if (!backups.length) {
    box.replaceChildren(el("p", { class: "empty", text: "No backups yet." }));
    return;
  }
  // Grouped by file; within a group the engine's order (newest first) is kept.
  const groups = new Map();
  for (const b of backups) {
    if (!groups.has(b.file)) groups.set(b.file, []);
    groups.get(b.file).push(b);
  }
  box.replaceChildren(...[...groups.entries()].map(([file, list]) => {
    const withRows = list.some((b) => counts(b));
    return el("div", { class: "backup-group", "data-backups-of": file },
      el("h3", {}, file, el("span", { class: "muted", text: ` · ${list.length} backup${list.length === 1 ? "" : "s"}, newest first` })),
      el("table", {},
        el("thead", {}, el("tr", {}, el("th", { text: "Made" }), el("th", { text: "Location" }), el("th", { class: "num", text: "Size" }), withRows ? el("th", { text: "Rows" }) : null, el("th", { text: "" }))),
        el("tbody", {}, ...list.map((b) =>
          el("tr", { class: "backup", "data-backup-id": b.id },
            el("td", { class: "nowrap", text: when(b.created) }),
            el("td", { text: b.location }),
            el("td", { class: "num nowrap", text: size(b.size) }),
            withRows ? el("td", { text: counts(b) }) : null,
            el("td", { class: "num" }, el("button", {
              type: "button", class: "restore small", "data-backup-id": b.id, text: "Restore…",
              onclick: () => askRestore(b),
            })))))));
  }));
}

function renderRuns(runs) {
  const box = $("runs");
  if (!runs.length) {
    box.replaceChildren(el("li", { class: "empty", text: "No runs yet." }));
    return;
  }
  box.replaceChildren(...runs.map((r) =>
    el("li", { "data-run-id": r.id },
      el("span", { class: "when", text: when(r.finished || r.started) }),
      el("span", { class: "result", "data-result": r.result, text: r.result }),
      el("span", { text: `${r.command}: ${r.summary}` }))));
}

// Start at login is refused while the app runs from a disk image or a translocated copy:
// the box cannot be ticked then (it can still be unticked), and says why.
function renderAutostart(warning) {
  const auto = $("autostart");
  auto.disabled = auto.dataset.broken === "true" || (Boolean(warning) && !auto.checked);
  auto.parentElement.title = warning || "";
}

let refreshing = null;
let again = false;
async function refresh() {
  // Bursts of change events make one reload, plus one more if any came in during it.
  if (refreshing) { again = true; return refreshing; }
  refreshing = (async () => {
    do {
      again = false;
      try {
        const status = await invoke("get_status");
        renderApp(status.app);
        renderLocations(status);
        renderAutostart(status.autostart_warning);
        const [conflicts, backups, runs] = await Promise.all([
          invoke("list_conflicts"), invoke("list_backups"), invoke("recent_runs", { limit: 10 }),
        ]);
        renderConflicts(conflicts);
        renderBackups(backups);
        renderRuns(runs);
        document.body.dataset.loaded = "true";
      } catch (e) {
        say(String(e), "error");
        document.body.dataset.loaded = "error";
      }
    } while (again);
    refreshing = null;
  })();
  return refreshing;
}

async function act(action, label, fn) {
  say("");
  try {
    const out = await fn();
    if (label) say(label(out), "info", action);
  } catch (e) {
    say(String(e), "error", action);
  }
  await refresh();
}

async function syncNow() {
  $("sync-now").textContent = "Syncing…";
  await act("sync", (r) => {
    if (r.queued) return "A sync is running; one more will follow it.";
    const rep = r.report;
    if (rep.errors.length) return `Sync finished with errors: ${rep.errors.join("; ")}`;
    if (rep.conflicts.length) return `Sync finished: ${rep.conflicts.length} conflict(s) need you.`;
    return "Sync finished: everything is in sync.";
  }, () => invoke("sync_now"));
}

async function keep(file, location) {
  for (const b of document.querySelectorAll("button.keep")) b.disabled = true;
  await act("resolve", () => `Kept the ${location} version of ${file} everywhere.`, () => invoke("resolve_conflict", { file, location }));
}

let pendingRestore = null;
function askRestore(backup) {
  pendingRestore = backup;
  $("confirm-message").textContent =
    `Put the ${backup.file} backup from ${when(backup.created)} (${backup.location}, ${size(backup.size)}) back in place? ` +
    "The current version is kept as a backup first.";
  $("confirm").hidden = false;
  $("confirm-ok").focus();
}

function closeConfirm() {
  $("confirm").hidden = true;
  pendingRestore = null;
}

async function confirmRestore() {
  const b = pendingRestore;
  closeConfirm();
  if (!b) return;
  await act("restore", (r) => `Restored ${r.backup.file} in ${r.backup.location}.`, () => invoke("restore_backup", { id: b.id }));
}

async function init() {
  $("sync-now").addEventListener("click", syncNow);
  $("resume").addEventListener("click", () => act("pause", null, () => invoke("set_paused", { paused: false })));
  $("pause-for").addEventListener("change", () => {
    const choice = $("pause-for").value;
    if (choice) act("pause", (v) => `${v.tray_label}.`, () => invoke("pause_for", { choice }));
  });
  $("pause-battery").addEventListener("change", () =>
    act("pause", null, () => invoke("set_pause_on_battery", { enabled: $("pause-battery").checked })));
  $("confirm-cancel").addEventListener("click", closeConfirm);
  $("confirm-ok").addEventListener("click", confirmRestore);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !$("confirm").hidden) closeConfirm(); });
  const auto = $("autostart");
  try { auto.checked = await invoke("get_autostart"); } catch (_) { auto.disabled = true; auto.dataset.broken = "true"; }
  auto.addEventListener("change", async () => {
    try { auto.checked = await invoke("set_autostart", { enabled: auto.checked }); } catch (e) { say(String(e), "error"); }
  });
  if (tauri.event) {
    await tauri.event.listen("metasync:changed", (ev) => { renderApp(ev.payload); refresh(); });
  }
  await refresh();
}

init();
