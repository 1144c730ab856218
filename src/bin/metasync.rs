//! The `metasync` command line: argument parsing and printing only.
fn main() {}
