//! The line diff of two text versions.
