//! Message handlers: commands change the catalog, events from accounts keep its teachers
//! in step, queries read it.

pub mod commands;
pub mod events;
pub mod queries;
