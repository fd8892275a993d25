//! Types shared by futexscope's three parts.
//!
//! - [`markers`]: the USDT marker table (names, argument order, meaning). The semaphore emits
//!   these markers, the eBPF programs decode them, the tracer lists them.
//! - [`event`]: the records the eBPF programs put in the ring buffer.
//! - [`abi`]: the kernel's futex ABI: operations, flags and the syscall numbers of the traced
//!   architecture.
//! - [`maps`]: map names and the key/value layouts of the in-kernel statistics.
//! - [`stack`]: the user call stacks captured with `--stacks`.
//!
//! This crate is `#![no_std]` and has no dependencies unless the `user` feature is on (then it
//! implements `aya::Pod` for the map and event types).
#![no_std]

pub mod abi;
pub mod event;
pub mod maps;
pub mod markers;
pub mod stack;
