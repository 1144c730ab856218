//! The `--json` documents of `history` and `diff`, as SPEC §3 spells them.
//!
//! The engine's own types ([`HistoryEntry`], [`Diff`]) keep their serde shape (typed cells,
//! tables as a list) for the app; this is the command line's view of them:
//!
//! - a value is plain JSON: an INTEGER a JSON integer (exact), a REAL a JSON number (spelled
//!   so it reads back to the same bits; `1.0` stays `1.0`), or one of the strings `"inf"`,
//!   `"-inf"`, `"nan"` when it is not finite; TEXT a string; NULL `null`; a BLOB the object
//!   `{"blob": "<hex>"}` — with `"len": N, "truncated": true` added when the diff shows only
//!   its first [`super::BLOB_HEX_BYTES`] bytes;
//! - a row is an object, column → value, in the table's column order;
//! - a row's `key` is the array of its key values, as plain values; the key spelled for
//!   `restore --rows` (a REAL in it as `{"real": x}`) is `restore_key` beside it, and
//!   `added_keys` / `removed_keys` beside the `added` / `removed` rows (which hold no hidden
//!   rowid).

use super::{Cell, Cells, ChangeSummary, Counts, Diff, HistoryEntry, RowChange, TableDiff};
use serde_json::{json, Map, Value};

/// A diff cell as plain JSON (see the module documentation).
pub fn cell_json(c: &Cell) -> Value {
    match c {
        Cell::Null => Value::Null,
        Cell::Integer(i) => json!(i),
        Cell::Real(s) => real_json(s),
        Cell::Text(t) => json!(t),
        Cell::Blob(b) if b.truncated => json!({"blob": b.hex, "len": b.len, "truncated": true}),
        Cell::Blob(b) => json!({ "blob": b.hex }),
    }
}

/// A REAL as spelled by the engine (`1.0`, `-0.0`, `inf`, `NaN`): a JSON number when finite.
fn real_json(s: &str) -> Value {
    match s.parse::<f64>() {
        Ok(f) if f.is_nan() => json!("nan"),
        Ok(f) if f.is_infinite() => json!(if f > 0.0 { "inf" } else { "-inf" }),
        Ok(f) => serde_json::Number::from_f64(f).map_or_else(|| json!(s), Value::Number),
        Err(_) => json!(s),
    }
}

/// A row's values as an object, column → plain value.
fn row_json(cells: &Cells) -> Value {
    Value::Object(
        cells
            .0
            .iter()
            .map(|(col, v)| (col.clone(), cell_json(v)))
            .collect(),
    )
}

/// A key as the engine spells it (`[1,{"real":1.5},{"blob":"00"}]`) as plain values.
fn key_values(key: &str) -> Value {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(key) else {
        return json!([key]);
    };
    let plain = items.into_iter().map(|v| match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("real") => match &m["real"] {
            Value::Number(n) => Value::Number(n.clone()),
            other => real_json(other.as_str().unwrap_or_default()),
        },
        other => other,
    });
    Value::Array(plain.collect())
}

/// One changed row: its key, and each changed column's old and new value.
fn change_json(c: &RowChange) -> Value {
    let value = |cells: &Cells, col: &str| {
        cells
            .0
            .iter()
            .find(|(c, _)| c == col)
            .map_or(Value::Null, |(_, v)| cell_json(v))
    };
    let columns: Map<String, Value> = c
        .changed_columns
        .iter()
        .map(|col| {
            let pair = json!({"old": value(&c.old, col), "new": value(&c.new, col)});
            (col.clone(), pair)
        })
        .collect();
    json!({"key": key_values(&c.key), "columns": columns, "restore_key": c.key})
}

/// One table's rows that differ.
fn table_json(t: &TableDiff) -> Value {
    json!({
        "key": t.key_columns,
        "columns": t.columns,
        "added": t.added.iter().map(|r| row_json(&r.values)).collect::<Vec<_>>(),
        "removed": t.removed.iter().map(|r| row_json(&r.values)).collect::<Vec<_>>(),
        "changed": t.changed.iter().map(change_json).collect::<Vec<_>>(),
        "added_keys": t.added.iter().map(|r| &r.key).collect::<Vec<_>>(),
        "removed_keys": t.removed.iter().map(|r| &r.key).collect::<Vec<_>>(),
        "totals": {
            "added": t.summary.added,
            "removed": t.summary.removed,
            "changed": t.summary.changed,
        },
        "note": t.note,
    })
}

/// `diff --json`: for databases `{"tables": {NAME: {"key", "added", "removed", "changed"}},
/// "schema": [...]}`, for text `{"unified": "..."}`, each with the file and the two versions.
pub fn diff_json(d: &Diff) -> Value {
    match d {
        Diff::Database {
            file,
            a,
            b,
            tables,
            schema,
            counts,
        } => {
            let tables: Map<String, Value> = tables
                .iter()
                .map(|t| (t.table.clone(), table_json(t)))
                .collect();
            let counts: Map<String, Value> = counts
                .iter()
                .map(|c| (c.table.clone(), json!({"a": c.a, "b": c.b})))
                .collect();
            json!({"type": "database", "file": file, "a": a, "b": b, "tables": tables,
                   "schema": schema, "counts": counts})
        }
        Diff::Text {
            file,
            a,
            b,
            unified,
            added,
            removed,
        } => json!({"type": "text", "file": file, "a": a, "b": b, "unified": unified,
                    "lines_added": added, "lines_removed": removed}),
        Diff::Binary { .. } => serde_json::to_value(d).unwrap_or(Value::Null),
    }
}

/// What the versions of a file are, read off its whole timeline (a `same` entry says
/// nothing by itself).
#[derive(Clone, Copy, PartialEq)]
enum Nature {
    Database,
    Text,
    Binary,
}

fn nature(entries: &[HistoryEntry]) -> Nature {
    let any = |f: fn(&HistoryEntry) -> bool| entries.iter().any(f);
    if any(|e| e.counts.is_some() || matches!(e.summary, ChangeSummary::Database { .. })) {
        Nature::Database
    } else if any(|e| matches!(e.summary, ChangeSummary::Binary { .. })) {
        Nature::Binary
    } else {
        Nature::Text
    }
}

/// An entry's `change`: null for the oldest (and when it could not be compared).
fn change_json_of(e: &HistoryEntry, nature: Nature) -> Value {
    match &e.summary {
        ChangeSummary::First | ChangeSummary::Unreadable { .. } => Value::Null,
        ChangeSummary::Same => match nature {
            Nature::Database => json!({"tables": {}, "schema_changed": false, "schema": []}),
            Nature::Text => json!({"lines_added": 0, "lines_removed": 0}),
            Nature::Binary => json!({"size_before": e.size, "size_after": e.size}),
        },
        ChangeSummary::Database { tables, schema } => {
            let tables: Map<String, Value> = tables
                .iter()
                .map(|t| {
                    let n = json!({"added": t.added, "removed": t.removed, "changed": t.changed});
                    (t.table.clone(), n)
                })
                .collect();
            json!({"tables": tables, "schema_changed": !schema.is_empty(), "schema": schema})
        }
        ChangeSummary::Text {
            lines_added,
            lines_removed,
        } => json!({"lines_added": lines_added, "lines_removed": lines_removed}),
        ChangeSummary::Binary {
            size_before,
            size_after,
        } => json!({"size_before": size_before, "size_after": size_after}),
    }
}

/// A database version's row counts: table → rows.
fn counts_json(c: &Counts) -> Value {
    Value::Object(
        c.tables
            .iter()
            .map(|t| (t.table.clone(), json!(t.rows)))
            .collect(),
    )
}

/// `history --json`: each entry's backup fields, `protected` and `change` (SPEC §3), with its
/// kind, hash, row counts, whether it is the same as the one before, and why it could not be
/// compared.
pub fn history_json(entries: &[HistoryEntry]) -> Value {
    let nature = nature(entries);
    let list = entries.iter().map(|e| {
        let unreadable = match &e.summary {
            ChangeSummary::Unreadable { reason } => Some(reason),
            _ => None,
        };
        json!({
            "id": e.id,
            "location": e.location,
            "file": e.file,
            "path": e.path,
            "created": e.created,
            "size": e.size,
            "protected": e.protected,
            "change": change_json_of(e, nature),
            "same_as_before": matches!(e.summary, ChangeSummary::Same),
            "unreadable": unreadable,
            "kind": e.kind,
            "sha256": e.sha256,
            "counts": e.counts.as_ref().map(counts_json),
        })
    });
    Value::Array(list.collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::BlobCell;

    #[test]
    fn values_are_plain_json_that_keeps_the_type() {
        let real = |f: f64| {
            cell_json(&crate::inspect::rows::cell(&rusqlite::types::Value::Real(
                f,
            )))
        };
        assert_eq!(serde_json::to_string(&real(-0.0)).unwrap(), "-0.0");
        assert_eq!(serde_json::to_string(&real(2.0)).unwrap(), "2.0");
        assert_eq!(real(0.1), json!(0.1));
        assert_eq!(real(f64::INFINITY), json!("inf"));
        assert_eq!(real(f64::NEG_INFINITY), json!("-inf"));
        assert_eq!(real(f64::NAN), json!("nan"));
        assert_eq!(cell_json(&Cell::Integer(i64::MIN)), json!(i64::MIN));
        let cut = Cell::Blob(BlobCell {
            len: 100,
            hex: "00".repeat(64),
            truncated: true,
        });
        assert_eq!(
            cell_json(&cut),
            json!({"blob": "00".repeat(64), "len": 100, "truncated": true})
        );
        assert_eq!(
            key_values(r#"[null,1,"a",{"real":1.5},{"real":"-inf"},{"blob":"00"}]"#),
            json!([null, 1, "a", 1.5, "-inf", {"blob": "00"}])
        );
    }
}
