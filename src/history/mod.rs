//! A location's version history (SPEC §5 "History"): the policy deciding which versions stay
//! plain, move into the compact store or go, and the store itself (`.metasync/history/`).

pub mod policy;
pub mod store;
