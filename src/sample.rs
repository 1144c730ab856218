//! Sample data: a generated knowledge graph (the seed's schema: entities, relations,
//! conversations) for the demo, the benchmarks and the tests. Not part of syncing.

use crate::error::{Error, Result};
use rusqlite::Connection;
use std::path::Path;

/// Creates a new knowledge-graph database at `path` (refused when a non-empty file is
/// there) with tables `entities`, `conversations` and `relations`, filled deterministically:
/// `entities` rows (~250 bytes each), `conversations` rows, and `entities - 1` relations.
/// One transaction and prepared statements, so a million entities take seconds. The file is
/// left in rollback-journal mode and fsynced. Used by the demo, tests and benchmarks.
pub fn create_knowledge_graph(path: &Path, entities: u64, conversations: u64) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > 0 => {
            return Err(Error::Refused(format!(
                "cannot create a knowledge graph at {}: the file exists",
                path.display()
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("create", path, e)),
    }
    crate::sqlite::create_with(path, |conn| {
        fill_knowledge_graph(conn, entities, conversations)
    })
}

const KINDS: [&str; 7] = [
    "person",
    "project",
    "concept",
    "document",
    "place",
    "organisation",
    "event",
];
const RELATION_KINDS: [&str; 4] = ["knows", "part_of", "mentions", "depends_on"];
const WORDS: [&str; 32] = [
    "graph", "note", "idea", "river", "stone", "memory", "signal", "harbour", "lantern", "meadow",
    "copper", "thread", "orbit", "cipher", "garden", "engine", "window", "ledger", "summit",
    "anchor", "canvas", "ember", "fable", "glacier", "hollow", "island", "jigsaw", "kernel",
    "lichen", "mosaic", "nectar", "oracle",
];
/// 2026-01-01T00:00:00Z.
const BASE_TIME: i64 = 1_767_225_600;

/// A deterministic pseudo-random stream (xorshift64*), seeded per row.
pub(crate) struct Rng(u64);

impl Rng {
    /// A stream from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// The next value.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn word(&mut self) -> &'static str {
        WORDS[(self.next() % WORDS.len() as u64) as usize]
    }
    fn words(&mut self, out: &mut String, n: usize) {
        for i in 0..n {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(self.word());
        }
    }
}

fn timestamp(offset_secs: u64) -> String {
    let secs = BASE_TIME.saturating_add(i64::try_from(offset_secs).unwrap_or(i64::MAX / 2));
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "9999-12-31T23:59:59Z".to_string())
}

fn fill_knowledge_graph(
    conn: &mut Connection,
    entities: u64,
    conversations: u64,
) -> rusqlite::Result<()> {
    // The file is fsynced once at the end; a crash mid-fill leaves a file nobody uses.
    conn.execute_batch("PRAGMA synchronous=OFF; PRAGMA cache_size=-65536;")?;
    let tx = conn.transaction()?;
    tx.execute_batch(
        "CREATE TABLE entities(id INTEGER PRIMARY KEY, name TEXT NOT NULL, kind TEXT, data TEXT, updated_at TEXT);
         CREATE TABLE conversations(id INTEGER PRIMARY KEY, title TEXT, body TEXT, created_at TEXT);
         CREATE TABLE relations(id INTEGER PRIMARY KEY, src INTEGER REFERENCES entities(id), dst INTEGER REFERENCES entities(id), kind TEXT);
         CREATE INDEX entities_name ON entities(name);
         CREATE INDEX relations_src ON relations(src);",
    )?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO entities(id, name, kind, data, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut name = String::with_capacity(32);
        let mut data = String::with_capacity(256);
        for id in 1..=entities {
            let mut rng = Rng::new(id);
            name.clear();
            name.push_str("entity-");
            name.push_str(&format!("{id:07}"));
            data.clear();
            data.push_str("{\"summary\":\"");
            rng.words(&mut data, 18);
            data.push_str("\",\"tags\":[\"");
            data.push_str(rng.word());
            data.push_str("\",\"");
            data.push_str(rng.word());
            data.push_str("\"],\"score\":");
            data.push_str(&format!("{:.4}", (rng.next() % 10_000) as f64 / 10_000.0));
            data.push_str(",\"source\":\"metasync-generator\"}");
            let kind = KINDS[(id % KINDS.len() as u64) as usize];
            insert.execute(rusqlite::params![
                id as i64,
                name,
                kind,
                data,
                timestamp(id * 60)
            ])?;
        }
        let mut insert =
            tx.prepare("INSERT INTO relations(id, src, dst, kind) VALUES (?1, ?2, ?3, ?4)")?;
        for src in 2..=entities {
            let mut rng = Rng::new(src ^ 0x5eed);
            let dst = 1 + rng.next() % (src - 1);
            let kind = RELATION_KINDS[(rng.next() % RELATION_KINDS.len() as u64) as usize];
            insert.execute(rusqlite::params![
                (src - 1) as i64,
                src as i64,
                dst as i64,
                kind
            ])?;
        }
        let mut insert = tx.prepare(
            "INSERT INTO conversations(id, title, body, created_at) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut title = String::with_capacity(64);
        let mut body = String::with_capacity(512);
        for id in 1..=conversations {
            let mut rng = Rng::new(id ^ 0xc0ffee);
            title.clear();
            title.push_str(&format!("Conversation {id}: "));
            rng.words(&mut title, 3);
            body.clear();
            rng.words(&mut body, 50);
            insert.execute(rusqlite::params![
                id as i64,
                title,
                body,
                timestamp(id * 3600)
            ])?;
        }
    }
    tx.commit()
}
