//! The human text of `history`, `diff` and `restore --rows`.

use super::{
    Cell, Cells, ChangeSummary, Diff, HistoryEntry, RestoreRowsReport, SchemaChange,
    SchemaChangeKind, TableDiff, TableSummary, VersionKind, VersionRef,
};
use crate::words::{bytes, plural};
use std::fmt::Write;

/// A value as SQL would spell it: `NULL`, `42`, `1.0`, `'text'`, `x'00ff'` (a long BLOB: its
/// first bytes, then `…` and its length).
pub fn cell(c: &Cell) -> String {
    match c {
        Cell::Null => "NULL".into(),
        Cell::Integer(i) => i.to_string(),
        Cell::Real(r) => r.clone(),
        Cell::Text(t) => format!("'{}'", t.replace('\'', "''")),
        Cell::Blob(b) if b.truncated => format!("x'{}…' ({})", b.hex, bytes(b.len as u64)),
        Cell::Blob(b) => format!("x'{}'", b.hex),
    }
}

fn row(values: &Cells) -> String {
    let parts: Vec<String> = values
        .0
        .iter()
        .map(|(c, v)| format!("{c}={}", cell(v)))
        .collect();
    parts.join("  ")
}

/// `entities +3 −1 ~2`.
pub fn table_summary(t: &TableSummary) -> String {
    format!("{} +{} −{} ~{}", t.table, t.added, t.removed, t.changed)
}

fn schema_line(s: &SchemaChange) -> String {
    let what = match s.change {
        SchemaChangeKind::Added => "added",
        SchemaChangeKind::Removed => "removed",
        SchemaChangeKind::Changed => "changed",
    };
    format!("{} {} {what}", s.object, s.name)
}

/// One line saying what changed in a version against the one before it.
pub fn summary(s: &ChangeSummary) -> String {
    match s {
        ChangeSummary::First => "the oldest kept version".into(),
        ChangeSummary::Same => "same content as the version before".into(),
        ChangeSummary::Database { tables, schema } => {
            let mut parts: Vec<String> = tables.iter().map(table_summary).collect();
            if !schema.is_empty() {
                let list: Vec<String> = schema.iter().map(schema_line).collect();
                parts.push(format!("schema: {}", list.join(", ")));
            }
            if parts.is_empty() {
                "no row changes".into()
            } else {
                parts.join(", ")
            }
        }
        ChangeSummary::Text {
            lines_added,
            lines_removed,
        } => format!(
            "{} added, {} removed",
            plural(*lines_added as u64, "line"),
            plural(*lines_removed as u64, "line")
        ),
        ChangeSummary::Binary {
            size_before,
            size_after,
        } => format!("{} → {}", bytes(*size_before), bytes(*size_after)),
        ChangeSummary::Unreadable { reason } => format!("cannot be compared: {reason}"),
    }
}

/// `3 entities, 1 conversation`.
pub fn counts(entities: Option<u64>, conversations: Option<u64>) -> Option<String> {
    let parts: Vec<String> = [(entities, "entity"), (conversations, "conversation")]
        .into_iter()
        .filter_map(|(n, w)| n.map(|n| plural(n, w)))
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The `history` list.
pub fn history(list: &[HistoryEntry]) -> String {
    let mut s = String::new();
    let Some(first) = list.first() else {
        return "no kept version\n".into();
    };
    let _ = writeln!(
        s,
        "{}: {}, newest first",
        first.file,
        plural(list.len() as u64, "kept version")
    );
    for e in list {
        let kind = match e.kind {
            VersionKind::Current => "current",
            VersionKind::Plain => "backup",
            VersionKind::Stored => "stored",
        };
        let mut line = format!(
            "\n{}  {:<10} {:<8} {:>8}",
            e.created,
            e.location,
            kind,
            bytes(e.size)
        );
        if let Some(c) = e
            .counts
            .as_ref()
            .and_then(|c| counts(c.entities, c.conversations))
        {
            let _ = write!(line, "  {c}");
        }
        if let Some(p) = &e.protected {
            let _ = write!(line, "  protected: {p}");
        }
        let _ = writeln!(s, "{line}");
        let _ = writeln!(s, "  {}", e.id);
        let _ = writeln!(s, "  {}", summary(&e.summary));
    }
    s
}

fn side(v: &VersionRef) -> String {
    format!("{} ({})", v.id, v.created)
}

fn table_text(s: &mut String, t: &TableDiff) {
    let m = &t.summary;
    let _ = writeln!(
        s,
        "\n{} (key {}): {} added, {} removed, {} changed",
        t.table,
        t.key_columns.join(", "),
        plural(m.added as u64, "row"),
        m.removed,
        m.changed
    );
    if let Some(n) = &t.note {
        let _ = writeln!(s, "  {n}");
    }
    for r in &t.added {
        let _ = writeln!(s, "  + {}  {}", r.key, row(&r.values));
    }
    for r in &t.removed {
        let _ = writeln!(s, "  - {}  {}", r.key, row(&r.values));
    }
    for c in &t.changed {
        let cols: Vec<String> = c
            .changed_columns
            .iter()
            .map(|col| {
                let get = |v: &Cells| {
                    v.0.iter()
                        .find(|(n, _)| n == col)
                        .map(|(_, x)| cell(x))
                        .unwrap_or_default()
                };
                format!("{col}: {} → {}", get(&c.old), get(&c.new))
            })
            .collect();
        let _ = writeln!(s, "  ~ {}  {}", c.key, cols.join("; "));
    }
    let listed = t.added.len() + t.removed.len() + t.changed.len();
    let total = m.added + m.removed + m.changed;
    if listed < total {
        let _ = writeln!(
            s,
            "  … {} more not listed",
            plural((total - listed) as u64, "row")
        );
    }
}

/// The `diff` of two versions.
pub fn diff(d: &Diff) -> String {
    let mut s = String::new();
    match d {
        Diff::Database {
            file,
            a,
            b,
            tables,
            schema,
            counts,
        } => {
            let _ = writeln!(s, "{file}: {} → {}", side(a), side(b));
            if tables.is_empty() && schema.is_empty() {
                let _ = writeln!(s, "no row or schema changes");
            }
            for t in tables {
                table_text(&mut s, t);
            }
            if !schema.is_empty() {
                let _ = writeln!(s, "\nschema:");
                for c in schema {
                    let _ = writeln!(s, "  {}", schema_line(c));
                    for (sign, sql) in [("-", &c.old), ("+", &c.new)] {
                        if let Some(sql) = sql {
                            let _ = writeln!(s, "    {sign} {sql}");
                        }
                    }
                }
            }
            let moved: Vec<String> = counts
                .iter()
                .filter(|c| c.a != c.b)
                .map(|c| {
                    let n = |x: Option<u64>| x.map_or("-".to_string(), |v| v.to_string());
                    format!("{} {} → {}", c.table, n(c.a), n(c.b))
                })
                .collect();
            if !moved.is_empty() {
                let _ = writeln!(s, "\nrow counts: {}", moved.join(", "));
            }
        }
        Diff::Text {
            file,
            a,
            b,
            unified,
            ..
        } => {
            if unified.is_empty() {
                let _ = writeln!(s, "{file}: {} and {} are the same", side(a), side(b));
            } else {
                s.push_str(unified);
            }
        }
        Diff::Binary {
            file,
            a,
            b,
            size_a,
            size_b,
            same,
        } => {
            let verdict = if *same { "the same" } else { "different" };
            let _ = writeln!(
                s,
                "{file}: {} ({}) and {} ({}) are {verdict}",
                side(a),
                bytes(*size_a),
                side(b),
                bytes(*size_b)
            );
        }
    }
    s
}

/// What `restore --rows` did.
pub fn restore_rows(r: &RestoreRowsReport) -> String {
    let n = r.replaced.len() + r.reinserted.len() + r.deleted.len();
    let mut s = format!(
        "put back {} of {} from {} into {}: {} replaced, {} re-inserted, {} deleted\n",
        plural(n as u64, "row"),
        r.table,
        r.backup.id,
        r.restored_to,
        r.replaced.len(),
        r.reinserted.len(),
        r.deleted.len()
    );
    if let Some(p) = &r.previous_backup {
        let _ = writeln!(s, "the version it replaced is kept as {p}");
    }
    s.push_str("the next sync propagates it to the other locations\n");
    s
}

/// Splits `TABLE:KEY[,KEY...]` into the table and its keys. The keys are one JSON value each
/// when the list reads as JSON (`entities:1,2`, `tags:[1,"x"],[2,"y"]`, `t:"a,b"`), else
/// comma-separated bare values (`conversations:c1,c2`).
pub fn parse_rows_arg(arg: &str) -> Option<(String, Vec<String>)> {
    let (table, list) = arg.split_once(':')?;
    if table.is_empty() || list.is_empty() {
        return None;
    }
    let keys = match serde_json::from_str::<Vec<serde_json::Value>>(&format!("[{list}]")) {
        Ok(values) => values
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
            .collect(),
        Err(_) => list.split(',').map(str::to_string).collect(),
    };
    Some((table.to_string(), keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_arg() {
        let p = |s: &str| parse_rows_arg(s).unwrap();
        assert_eq!(
            p("entities:1,2"),
            ("entities".into(), vec!["1".into(), "2".into()])
        );
        assert_eq!(
            p(r#"tags:[1,"x"],[2,"y"]"#).1,
            vec![r#"[1,"x"]"#.to_string(), r#"[2,"y"]"#.to_string()]
        );
        assert_eq!(p("conversations:c1,c2").1, vec!["c1", "c2"]);
        assert_eq!(p(r#"t:"a,b""#).1, vec!["a,b"]);
        assert_eq!(parse_rows_arg("entities"), None);
        assert_eq!(parse_rows_arg("entities:"), None);
    }

    #[test]
    fn cells_as_sql() {
        assert_eq!(cell(&Cell::Text("it's".into())), "'it''s'");
        assert_eq!(cell(&Cell::Real("-0.0".into())), "-0.0");
        assert_eq!(cell(&Cell::Null), "NULL");
    }
}
