//! futexscope's userspace half: loads the eBPF probes, traces processes, reports.

pub mod attach;
pub mod demo;
pub mod export;
pub mod flood;
pub mod kernel_report;
pub mod live;
pub mod probes;
pub mod proc_maps;
pub mod render;
pub mod report;
pub mod session;
pub mod spawn;
pub mod stdsync;
pub mod symbols;
pub mod usdt;
pub mod workload;
