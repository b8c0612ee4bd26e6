//! Message handlers: commands change the catalog, queries read it.

pub mod commands;
pub mod queries;
