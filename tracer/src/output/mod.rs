//! Outputs: the live view on the terminal, the summary (text and JSON), the NDJSON event
//! stream and the trace exports.

pub mod events;
pub mod export;
pub mod live;
pub mod stacks;
pub mod summary;
pub mod text;
