//! Message handlers: commands change accounts, queries read them (and log users in).

pub mod commands;
pub mod queries;
