//! Row counts of every table, `entities` and `conversations` first.

use super::*;

pub(super) fn count_tables(conn: &Connection, path: &Path) -> Result<TableCounts> {
    let err = |e| Error::sqlite("count rows of", path, e);
    let names: Vec<String> = read_schema(conn)
        .map_err(err)?
        .into_iter()
        .filter(|e| e.kind == "table" && e.rootpage > 0 && !is_internal(&e.name))
        .map(|e| e.name)
        .collect();
    let mut counts = Vec::with_capacity(names.len());
    for name in names {
        let n: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM main.{}", quote(&name)),
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        counts.push((name, u64::try_from(n).unwrap_or(0)));
    }
    Ok(sorted_counts(counts))
}

/// Counts in report order: `entities` and `conversations` first, then the rest by name.
pub(super) fn sorted_counts(mut counts: Vec<(String, u64)>) -> TableCounts {
    let rank = |n: &str| {
        if n.eq_ignore_ascii_case("entities") {
            0
        } else if n.eq_ignore_ascii_case("conversations") {
            1
        } else {
            2
        }
    };
    counts.sort_by(|(a, _), (b, _)| (rank(a), a.as_bytes()).cmp(&(rank(b), b.as_bytes())));
    TableCounts(counts)
}
