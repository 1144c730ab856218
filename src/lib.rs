//! Metasync's engine: keeps a home folder's synced files (a live SQLite knowledge graph and
//! its rules file) identical across locations — the home itself, an iCloud Drive folder, an
//! external drive — without ever losing a version.
//!
//! The pipeline is update detection ([`scan`]) → reconciliation ([`plan`], pure) →
//! propagation ([`apply`]), with the per-machine [`archive`] as memory between runs and
//! [`engine::Engine`] sequencing one run under a lock. The CLI and the app are thin faces
//! over [`Engine`].
#![deny(missing_docs)]

pub mod apply;
pub mod archive;
pub mod bucket;
pub mod clock;
pub mod config;
pub mod demo;
pub mod download;
pub mod engine;
pub mod error;
pub mod failpoint;
pub mod history;
pub mod ids;
pub mod inspect;
pub mod kind;
pub mod location;
pub mod lock;
pub mod logging;
pub mod merge;
pub mod model;
pub mod names;
pub mod objstore;
pub mod plan;
pub mod report;
pub mod sample;
pub mod scan;
pub mod select;
pub mod service;
pub mod sqlite;
pub mod steady;
pub mod text;
pub mod times;
pub mod verify;
pub mod volumes;
pub mod words;

pub use clock::{Clock, SystemClock};
pub use config::{Config, Strategy};
pub use engine::{Engine, Mode, RunOptions};
pub use error::{Error, Result};
pub use report::*;
