//! futexscope's userspace half, as a pipeline: [`collect`] loads the eBPF probes and reads what
//! they record, [`decode`] turns raw records into typed ones, [`aggregate`] builds the per-word
//! table, labels and timeline, and [`output`] shows and writes them. [`session`] runs one
//! tracing session through that pipeline; [`agent`] serves the same totals to Prometheus; [`kernel_report`] is the kernel battery.

pub mod agent;
pub mod aggregate;
pub mod collect;
pub mod decode;
pub mod demo;
pub mod errors;
pub mod kernel_report;
pub mod output;
pub mod session;
pub mod sys;
