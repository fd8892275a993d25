//! Collecting: loading and attaching the eBPF programs, the ring buffer and the statistics
//! maps ([`ebpf`]), the marker uprobes ([`markers`], [`usdt`]), starting the traced command
//! ([`spawn`]) and the readers of `/proc` ([`procfs`]).

mod btf;
pub mod ebpf;
pub mod markers;
pub mod proc_maps;
pub mod procfs;
pub mod spawn;
pub mod unwind;
pub mod usdt;
