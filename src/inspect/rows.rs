//! The row diff of two database versions.
