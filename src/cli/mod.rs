//! The subcommands of `tern`, one module each.

pub mod bench;
pub mod cert;
pub mod chaos;
pub mod cluster;
pub mod consume;
pub mod group;
mod kafka;
pub mod produce;
pub mod serve;
pub mod topic;
