//! Message handlers: commands change the catalog under the rules in [`courses`] and
//! [`teachers`], events from accounts keep its teachers in step, queries read it.

pub mod commands;
pub mod courses;
pub mod events;
pub mod queries;
pub mod teachers;
