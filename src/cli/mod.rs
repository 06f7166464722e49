//! The subcommands of `tern`, one module each.

pub mod serve;
