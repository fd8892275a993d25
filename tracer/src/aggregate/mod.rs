//! Aggregating: the per-word table, the labels of words and processes, and the timeline that
//! pairs wakes with the waits they ended.

pub mod labels;
pub mod stacks;
pub mod symbols;
pub mod table;
pub mod timeline;
