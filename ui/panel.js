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

// Counts and sizes in words, as the engine's `words.rs` spells them for the command line:
// `1 conversation`, `3 entities`, `287 KB` (decimal units, three significant digits).
function pluralOf(noun) {
  if (/[^aeiou]y$/.test(noun)) return `${noun.slice(0, -1)}ies`;
  if (/(s|x|ch|sh)$/.test(noun)) return `${noun}es`;
  return `${noun}s`;
}
const plural = (n, noun) => `${n} ${n === 1 ? noun : pluralOf(noun)}`;

function size(bytes) {
  if (bytes === null || bytes === undefined) return "—";
  if (bytes < 1000) return plural(bytes, "byte");
  const units = ["KB", "MB", "GB", "TB", "PB"];
  let v = bytes;
  let unit = "";
  for (const u of units) {
    v /= 1000;
    unit = u;
    if (v < 999.5) break;
  }
  if (v < 9.95) return `${v.toFixed(1).replace(/\.0$/, "")} ${unit}`;
  return `${Math.round(v)} ${unit}`;
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
  if (f && f.entities !== null && f.entities !== undefined) parts.push(plural(f.entities, "entity"));
  if (f && f.conversations !== null && f.conversations !== undefined) parts.push(plural(f.conversations, "conversation"));
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

// What kind of place a location is, in the card's badge.
const PLACE_WORDS = { home: "home", folder: "folder", drive: "drive", store: "object store" };

function renderLocations(status) {
  const box = $("locations");
  box.replaceChildren();
  const healthOf = new Map((status.health || []).map((h) => [h.location, h]));
  for (const loc of status.locations) {
    const h = healthOf.get(loc.name) || { kind: "folder", reason: loc.reason, place: loc.path };
    const health = loc.available ? (h.reason ? `available — ${h.reason}` : "available") : `unavailable — ${h.reason || "unknown reason"}`;
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
        el("span", { class: "kind", "data-kind": h.kind, text: PLACE_WORDS[h.kind] || h.kind }),
        el("span", { class: "health", "data-available": String(loc.available), title: h.detail || "", text: health })),
      el("div", { class: "path", text: h.place || loc.path }),
      h.detail ? el("div", { class: "detail", text: h.detail }) : null,
      h.history ? el("div", { class: "history muted", text: `History: ${h.history}` }) : null,
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
  // A refresh must not undo the row choices made so far.
  const picked = [...box.querySelectorAll("input[type=radio]:checked")].map((i) => [i.name, i.value]);
  $("conflict-count").textContent = conflicts.length ? `(${conflicts.length})` : "";
  if (!conflicts.length) {
    box.replaceChildren(el("p", { class: "empty", text: "No conflicts." }));
    return;
  }
  box.replaceChildren(...conflicts.map((c) =>
    el("div", { class: "conflict", "data-conflict": c.file },
      el("h3", { text: c.file }),
      el("p", { class: "reason", text: `${c.reason} · seen ${when(c.detected)}` }),
      c.rows && c.rows.length ? renderRowConflicts(c) : null,
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
  for (const [name, value] of picked) {
    for (const input of box.querySelectorAll("input[type=radio]")) {
      if (input.name === name && input.value === value) input.checked = true;
    }
  }
  for (const c of conflicts) if (c.rows && c.rows.length) rowChoiceChanged(c.file);
}

// A row value as the merge records it: the JSON array of the row's values (`null` for a
// row deleted on that side), each spelled as the engine spells values.
function rowCells(json) {
  if (json === null || json === undefined) return null;
  try {
    const v = JSON.parse(json);
    return Array.isArray(v) ? v.map(cellText) : [String(json)];
  } catch (_) {
    return [String(json)];
  }
}

function cellText(v) {
  if (v === null) return "NULL";
  if (typeof v === "object" && "real" in v) return String(v.real);
  if (typeof v === "object" && "blob" in v) return `x'${v.blob.slice(0, 32)}${v.blob.length > 32 ? "…" : ""}' (${size(v.blob.length / 2)})`;
  return String(v);
}

function keyText(key) {
  const cells = rowCells(key);
  return cells ? cells.join(", ") : key;
}

// Row conflicts, row by row: each side's value with a Keep-this choice, and a whole-side
// choice; nothing is applied until every row has a choice.
function renderRowConflicts(c) {
  const sides = [...new Set(c.rows.flatMap((r) => r.values.map(([loc]) => loc)))];
  const name = (i) => `row-${c.file}-${i}`;
  const body = c.rows.map((r, i) => {
    const bySide = new Map(r.values);
    const cells = sides.map((loc) => rowCells(bySide.has(loc) ? bySide.get(loc) : null));
    const differs = (j) => cells.some((cs) => !cs || !cells[0] || cs[j] !== cells[0][j]);
    return el("tr", { class: "row-conflict", "data-row-table": r.table, "data-row-key": r.key },
      el("td", {}, el("code", { text: r.table })),
      el("td", {}, el("code", { text: keyText(r.key) })),
      ...sides.map((loc, k) => el("td", { class: "side", "data-side": loc },
        el("label", { class: "keep-row" },
          el("input", { type: "radio", name: name(i), value: loc, "data-side": loc, onchange: () => rowChoiceChanged(c.file) }),
          cells[k]
            ? el("span", {}, ...cells[k].flatMap((t, j) => [j ? " · " : "", el("span", { class: differs(j) ? "cell-changed" : null, text: t })]))
            : el("em", { class: "muted", text: "deleted here" })))));
  });
  return el("div", { class: "row-conflicts", "data-row-conflicts": c.file },
    el("p", { class: "muted", text: `${plural(c.rows.length, "row")} changed differently on both sides: keep one side's value per row.` }),
    el("table", {},
      el("thead", {}, el("tr", {}, el("th", { text: "Table" }), el("th", { text: "Row" }),
        ...sides.map((loc) => el("th", {}, `${loc} `,
          el("button", { type: "button", class: "small keep-side", "data-side": loc, text: "Keep all", onclick: () => keepSide(c.file, loc) }))))),
      el("tbody", {}, ...body)),
    el("div", { class: "dialog-actions" },
      el("button", {
        type: "button", class: "small primary apply-rows", "data-file": c.file, disabled: true,
        text: `Keep the chosen ${c.rows.length === 1 ? "value" : "values"}`, onclick: () => applyRowChoices(c.file),
      })));
}

function rowBox(file) {
  return [...document.querySelectorAll("[data-row-conflicts]")].find((b) => b.dataset.rowConflicts === file);
}

function rowChoices(file) {
  const box = rowBox(file);
  if (!box) return null;
  const rows = [...box.querySelectorAll("tr.row-conflict")];
  const choices = rows.map((tr) => {
    const picked = tr.querySelector("input[type=radio]:checked");
    return picked ? { table: tr.dataset.rowTable, key: tr.dataset.rowKey, location: picked.value } : null;
  });
  return choices.every(Boolean) ? choices : null;
}

function rowChoiceChanged(file) {
  const box = rowBox(file);
  if (box) box.querySelector("button.apply-rows").disabled = !rowChoices(file);
}

function keepSide(file, loc) {
  const box = rowBox(file);
  if (!box) return;
  for (const input of box.querySelectorAll("input[type=radio]")) input.checked = input.value === loc;
  rowChoiceChanged(file);
}

async function applyRowChoices(file) {
  const choices = rowChoices(file);
  if (!choices) return;
  const sides = new Set(choices.map((c) => c.location));
  await act("resolve-rows", () => `Settled ${plural(choices.length, "row")} of ${file}, keeping ${[...sides].join(" and ")}.`,
    () => invoke("resolve_rows", { file, choices }));
}

// ----- A file's timeline -----

let timelineFile = null;

function renderTimelineFiles(status) {
  const names = [...new Set(status.locations.flatMap((l) => l.files.map((f) => f.file)))].sort();
  // Re-made only when the files change: a refresh must not swap a button under a click.
  const box = $("timeline-files");
  if (box.dataset.files === JSON.stringify(names)) return;
  box.dataset.files = JSON.stringify(names);
  box.replaceChildren(...names.map((f) =>
    el("button", {
      type: "button", class: `small timeline-file${f === timelineFile ? " active" : ""}`, "data-file": f, text: f,
      onclick: () => openTimeline(f),
    })));
}

const KIND_WORDS = { current: "current", plain: "backup", stored: "stored" };

function summaryText(s) {
  switch (s.type) {
    case "first": return "oldest kept version";
    case "same": return "no change";
    case "text": {
      const parts = [];
      if (s.lines_added) parts.push(`${plural(s.lines_added, "line")} added`);
      if (s.lines_removed) parts.push(`${plural(s.lines_removed, "line")} removed`);
      return parts.join(", ") || "no line changed";
    }
    case "binary": return `${size(s.size_before)} → ${size(s.size_after)}`;
    case "unreadable": return `not compared: ${s.reason}`;
    case "database": {
      const parts = s.tables.map((t) => {
        const n = [];
        if (t.added) n.push(`+${t.added}`);
        if (t.removed) n.push(`−${t.removed}`);
        if (t.changed) n.push(`~${t.changed}`);
        return `${t.table} ${n.join(" ")}`;
      });
      if (s.schema.length) parts.push(plural(s.schema.length, "schema change"));
      return parts.join(" · ") || "no row changed";
    }
    default: return "";
  }
}

function versionLabel(v) {
  return v.id.startsWith("current:") ? `current ${v.location} copy` : `${v.location} ${when(v.created)}`;
}

async function openTimeline(file) {
  timelineFile = file;
  for (const b of document.querySelectorAll("button.timeline-file")) b.classList.toggle("active", b.dataset.file === file);
  const box = $("timeline");
  box.dataset.file = file;
  let list;
  try {
    list = await invoke("file_history", { file });
  } catch (e) {
    box.replaceChildren(el("p", { class: "error", text: String(e) }));
    return;
  }
  renderTimeline(file, list);
}

function renderTimeline(file, list) {
  const box = $("timeline");
  if (!list.length) {
    box.replaceChildren(el("p", { class: "empty", text: `No kept version of ${file}.` }));
    return;
  }
  const current = list.find((v) => v.id === "current:local");
  box.replaceChildren(el("div", { class: "timeline", "data-timeline": file },
    el("h3", {}, file, el("span", { class: "muted", text: ` · ${plural(list.length, "version")}, newest first` })),
    el("table", {},
      el("thead", {}, el("tr", {}, el("th", { text: "Made" }), el("th", { text: "Where" }), el("th", { class: "num", text: "Size" }),
        el("th", { text: "Rows" }), el("th", { text: "What changed" }), el("th", { text: "" }))),
      el("tbody", {}, ...list.map((v) =>
        el("tr", { class: "version", "data-version-id": v.id, "data-kind": v.kind },
          el("td", { class: "nowrap", text: when(v.created) }),
          el("td", {}, v.location, " ", el("span", { class: "badge", "data-kind": v.kind, text: KIND_WORDS[v.kind] || v.kind })),
          el("td", { class: "num nowrap", text: size(v.size) }),
          el("td", { class: "sub", text: counts(v.counts) }),
          el("td", { class: "change", text: summaryText(v.summary) }),
          el("td", { class: "num nowrap" },
            current && v.id !== current.id
              ? el("button", { type: "button", class: "small compare", "data-version-id": v.id, text: "Compare",
                  title: "What changed between this version and the current local copy", onclick: () => compare(file, v, current) })
              : null,
            v.kind !== "current"
              ? el("button", { type: "button", class: "small restore-version", "data-version-id": v.id, text: "Restore…",
                  onclick: () => askRestore({ id: v.id, file, created: v.created, location: v.location, size: v.size }) })
              : null)))))));
}

// ----- The diff view -----

let shownDiff = null;

async function compare(file, a, b) {
  shownDiff = { file, a, b };
  $("diff-section").hidden = false;
  const box = $("diff");
  box.replaceChildren(el("p", { class: "muted", text: `Comparing ${versionLabel(a)} with ${versionLabel(b)}…` }));
  let diff;
  try {
    diff = await invoke("diff_versions", { file, a: a.id, b: b.id });
  } catch (e) {
    box.replaceChildren(el("p", { class: "error", text: String(e) }));
    return;
  }
  renderDiff(diff, a, b);
  $("diff-section").scrollIntoView({ block: "start" });
}

function cellValue(c) {
  if (!c) return "";
  switch (c.type) {
    case "null": return "NULL";
    case "blob": return `x'${c.value.hex}${c.value.truncated ? "…" : ""}' (${size(c.value.len)})`;
    default: return String(c.value);
  }
}

function renderDiff(diff, a, b) {
  const head = el("p", { class: "diff-head" }, el("strong", { text: diff.file }), ": ",
    el("span", { class: "side-a", text: versionLabel(a) }), " → ", el("span", { class: "side-b", text: versionLabel(b) }));
  const parts = [head];
  if (diff.type === "text") {
    parts.push(el("p", { class: "muted", text: `${plural(diff.added, "line")} added, ${plural(diff.removed, "line")} removed` }));
    parts.push(diff.unified
      ? el("pre", { class: "unified" }, ...diff.unified.split("\n").map((line) =>
          el("span", { class: line.startsWith("@@") ? "hunk" : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : null, text: `${line}\n` })))
      : el("p", { class: "empty", text: "The same text." }));
  } else if (diff.type === "binary") {
    parts.push(el("p", { text: `${size(diff.size_a)} → ${size(diff.size_b)}: ${diff.same ? "the same bytes" : "different bytes"}` }));
  } else {
    parts.push(...renderDbDiff(diff, a));
  }
  $("diff").replaceChildren(...parts);
}

function renderDbDiff(diff, a) {
  const out = [];
  const moved = diff.counts.filter((c) => c.a !== c.b);
  if (moved.length) {
    out.push(el("p", { class: "muted counts", text: moved.map((c) => `${c.table} ${c.a ?? "—"} → ${c.b ?? "—"}`).join(" · ") }));
  }
  if (diff.schema.length) {
    out.push(el("ul", { class: "schema" }, ...diff.schema.map((sc) =>
      el("li", {}, `${sc.change} ${sc.object} `, el("code", { text: sc.name })))));
  }
  if (!diff.tables.length && !diff.schema.length) out.push(el("p", { class: "empty", text: "No row changed." }));
  for (const t of diff.tables) out.push(renderTableDiff(diff.file, t, a));
  return out;
}

function tableSummary(s) {
  const parts = [];
  if (s.changed) parts.push(`${plural(s.changed, "row")} changed`);
  if (s.added) parts.push(`${plural(s.added, "row")} added`);
  if (s.removed) parts.push(`${plural(s.removed, "row")} removed`);
  return parts.join(", ");
}

function diffRow(t, kind, key, values, changed) {
  const cells = new Map(Object.entries(values || {}));
  return el("tr", { class: `diff-row ${kind}`, "data-key": key, "data-kind": kind },
    el("td", {}, el("input", { type: "checkbox", class: "pick-row", "data-key": key, onchange: () => pickedChanged(t.table) })),
    el("td", { class: "mark", text: kind === "added" ? "+" : kind === "removed" ? "−" : "~" }),
    ...t.columns.map((col) => {
      const isKey = t.key_columns.includes(col);
      if (changed && changed.cols.includes(col)) {
        return el("td", { class: "cell-changed", "data-column": col },
          el("del", { text: cellValue(changed.old.get(col)) }), " → ", el("ins", { text: cellValue(changed.new.get(col)) }));
      }
      return el("td", { class: isKey ? "key" : null, "data-column": col, text: cellValue(cells.get(col)) });
    }));
}

function renderTableDiff(file, t, a) {
  const rows = [
    ...t.changed.map((c) => diffRow(t, "changed", c.key, c.new, {
      cols: c.changed_columns, old: new Map(Object.entries(c.old)), new: new Map(Object.entries(c.new)),
    })),
    ...t.removed.map((r) => diffRow(t, "removed", r.key, r.values)),
    ...t.added.map((r) => diffRow(t, "added", r.key, r.values)),
  ];
  const canRestore = a.id !== "current:local";
  return el("div", { class: "table-diff", "data-table": t.table },
    el("h4", {}, el("code", { text: t.table }), el("span", { class: "muted", text: ` · ${tableSummary(t.summary)}` })),
    t.note ? el("p", { class: "muted", text: t.note }) : null,
    rows.length ? el("div", { class: "scroll" }, el("table", { class: "rows-diff" },
      el("thead", {}, el("tr", {}, el("th", {}), el("th", {}), ...t.columns.map((c) =>
        el("th", { class: t.key_columns.includes(c) ? "key" : null, text: c })))),
      el("tbody", {}, ...rows))) : null,
    canRestore && rows.length
      ? el("div", { class: "dialog-actions" },
          el("button", {
            type: "button", class: "small primary restore-rows", "data-table": t.table, disabled: true,
            text: "Put back the selected rows", onclick: () => restoreRows(file, t.table, a),
          }))
      : null);
}

function tableBox(table) {
  return [...document.querySelectorAll(".table-diff")].find((b) => b.dataset.table === table);
}

function pickedKeys(table) {
  const box = tableBox(table);
  return box ? [...box.querySelectorAll("input.pick-row:checked")].map((i) => i.dataset.key) : [];
}

function pickedChanged(table) {
  const box = tableBox(table);
  const button = box && box.querySelector("button.restore-rows");
  if (!button || !shownDiff) return;
  const n = pickedKeys(table).length;
  button.disabled = n === 0;
  button.textContent = n ? `Put back ${plural(n, "row")} from ${versionLabel(shownDiff.a)}` : "Put back the selected rows";
}

async function restoreRows(file, table, a) {
  const keys = pickedKeys(table);
  if (!keys.length) return;
  await act("restore-rows", (r) => {
    const done = [];
    if (r.replaced.length) done.push(`${plural(r.replaced.length, "row")} replaced`);
    if (r.reinserted.length) done.push(`${plural(r.reinserted.length, "row")} re-inserted`);
    if (r.deleted.length) done.push(`${plural(r.deleted.length, "row")} removed`);
    return `Put back ${plural(keys.length, "row")} of ${table} from ${versionLabel(a)}: ${done.join(", ")}. The previous version was backed up first.`;
  }, () => invoke("restore_rows", { id: a.id, table, keys }));
  // The diff against the current copy, again: the rows put back are no longer in it.
  if (shownDiff && shownDiff.file === file) {
    const list = await invoke("file_history", { file });
    const cur = list.find((v) => v.id === "current:local");
    if (cur) await compare(file, a, cur);
  }
}

function closeDiff() {
  shownDiff = null;
  $("diff-section").hidden = true;
  $("diff").replaceChildren();
}

// ----- Going where a notification or a tray item points -----

async function goTo(target) {
  if (!target) return;
  let node = null;
  if (target.section === "conflict") {
    node = document.querySelector(`[data-conflict="${CSS.escape(target.file)}"]`) || $("conflicts-section");
  } else if (target.section === "timeline") {
    await openTimeline(target.file);
    node = $("timeline-section");
  } else {
    node = $("runs-section");
  }
  for (const old of document.querySelectorAll(".focused")) old.classList.remove("focused");
  node.classList.add("focused");
  node.scrollIntoView({ block: "start" });
}

async function takeFocus() {
  try { await goTo(await invoke("take_focus")); } catch (e) { say(String(e), "error"); }
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
      el("h3", {}, file, el("span", { class: "muted", text: ` · ${plural(list.length, "backup")}, newest first` })),
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
        renderTimelineFiles(status);
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

// Actions after which a file's timeline has changed.
const CHANGES_VERSIONS = new Set(["restore", "restore-rows", "resolve", "resolve-rows", "sync"]);

async function act(action, label, fn) {
  say("");
  try {
    const out = await fn();
    if (label) say(label(out), "info", action);
  } catch (e) {
    say(String(e), "error", action);
  }
  await refresh();
  if (timelineFile && CHANGES_VERSIONS.has(action)) await openTimeline(timelineFile);
}

async function syncNow() {
  $("sync-now").textContent = "Syncing…";
  await act("sync", (r) => {
    if (r.queued) return "A sync is running; one more will follow it.";
    const rep = r.report;
    if (rep.errors.length) return `Sync finished with errors: ${rep.errors.join("; ")}`;
    if (rep.conflicts.length) return `Sync finished: ${plural(rep.conflicts.length, "conflict")} ${rep.conflicts.length === 1 ? "needs" : "need"} you.`;
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
  $("diff-close").addEventListener("click", closeDiff);
  if (tauri.event) {
    await tauri.event.listen("metasync:changed", (ev) => { renderApp(ev.payload); refresh(); });
    await tauri.event.listen("metasync:focus", () => takeFocus());
  }
  await refresh();
  await takeFocus();
}

init();
