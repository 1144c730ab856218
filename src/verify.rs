//! `verify`: SQLite integrity and table counts of every database in every available location.

use crate::engine::Engine;
use crate::error::Result;
use crate::report::{DatabaseCheck, VerifyReport};
use crate::sqlite::{self, SqliteOptions};

impl Engine {
    /// Integrity and table counts of every database in every available location.
    pub fn verify(&self) -> Result<VerifyReport> {
        let archive = crate::archive::Archive::open_existing(self.home())?;
        let known = match &archive {
            Some(a) => a.location_ids()?,
            None => Default::default(),
        };
        let places = self.places(&known);
        let files = self.file_set(&places, archive.as_ref())?;
        let opts = SqliteOptions::from(&self.config().sqlite);
        let mut report = VerifyReport {
            databases: Vec::new(),
            skipped: Vec::new(),
            exit_code: 0,
        };
        for p in &places {
            if !p.availability.is_available() {
                report.skipped.push(p.report());
                continue;
            }
            for f in &files {
                let path = p.loc.path_of(f);
                if !path.is_file() || !crate::kind::should_be_database(&path)? {
                    continue;
                }
                let integrity = sqlite::integrity(&path, &opts)?;
                let mut tables = serde_json::Map::new();
                if integrity.ok {
                    for (t, n) in sqlite::table_counts(&path, &opts)?.0 {
                        tables.insert(t, n.into());
                    }
                } else {
                    report.exit_code = 1;
                }
                report.databases.push(DatabaseCheck {
                    location: p.loc.name.clone(),
                    file: f.clone(),
                    integrity: integrity.summary(),
                    tables,
                });
            }
        }
        Ok(report)
    }
}
