//! Outputs: the live view on the terminal, the summary (text and JSON), the NDJSON event
//! stream, the trace exports and the stack profiles.

pub mod events;
pub mod export;
pub mod live;
pub mod pprof;
mod protobuf;
pub mod stacks;
pub mod summary;
pub mod text;
