//! futexscope's userspace half: loads the eBPF probes, traces processes, reports.

pub mod kernel_report;
pub mod probes;
pub mod spawn;
pub mod workload;
