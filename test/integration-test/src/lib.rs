//! futexscope's test fixtures: scripted futex workloads whose counts are known, run by the
//! `futexscope-workload` binary under the tracer in this package's integration tests. Not part
//! of the product: installing futexscope installs only the `futexscope` command.

pub mod flood;
pub mod stdsync;
pub mod workload;
