//! futexscope's userspace half: loads the eBPF probes, traces processes, reports.

pub mod probes;
pub mod spawn;
pub mod usdt;
pub mod workload;
