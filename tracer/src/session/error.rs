//! Why a session fails, and the exit code each reason ends futexscope with.

use std::{io, path::PathBuf};

use crate::collect::{ebpf::LoadError, spawn::SpawnError};

/// Why a session failed. [`TraceError::exit_code`] gives the documented exit code.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Not privileged enough to load eBPF programs.
    #[error(
        "permission denied: loading eBPF programs needs root, or the capabilities CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN){missing}"
    )]
    NotPermitted {
        /// Which capabilities are missing, as a `: missing …` suffix, or empty.
        missing: String,
    },
    /// The kernel has no BPF system call.
    #[error(
        "this kernel has no BPF support (the `bpf` system call is missing): run futexscope on a kernel built with CONFIG_BPF_SYSCALL=y"
    )]
    NoBpf(#[source] LoadError),
    /// The probes could not be loaded for another reason.
    #[error("cannot load futexscope's eBPF probes")]
    Load(#[source] LoadError),
    /// The process to attach to does not exist.
    #[error("no such process: {0} (check the pid with `ps`)")]
    NoSuchPid(u32),
    /// The command could not be started.
    #[error("cannot start the command: check its name, `PATH` and its execute permission")]
    Spawn(#[from] SpawnError),
    /// An output file could not be written.
    #[error("cannot write `{path}`")]
    Output {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Reading the probes' maps failed.
    #[error("cannot read the probes' statistics")]
    Read(#[source] LoadError),
    /// The terminal could not be set up or drawn on.
    #[error("cannot draw the live view on the terminal (use `--view plain`)")]
    Terminal(#[source] io::Error),
}

/// Exit codes, documented in `futexscope --help` and docs/tracer.md.
pub mod exit_code {
    /// Other failure (reading the probes' maps, the terminal).
    pub const FAILURE: u8 = 1;
    /// Command line error (from clap).
    pub const USAGE: u8 = 2;
    /// `list`: the file or process cannot be read.
    pub const CANNOT_READ: u8 = 66;
    /// An output file (`-o`, `--json`, `--export`, `--events`, `--folded`, `--flamegraph`) could not be written.
    pub const OUTPUT: u8 = 74;
    /// Not root and missing CAP_BPF/CAP_PERFMON/CAP_SYS_ADMIN.
    pub const NOT_PERMITTED: u8 = 77;
    /// The kernel has no BPF support, or rejected the probes.
    pub const NO_BPF: u8 = 69;
    /// `attach PID`: no such process.
    pub const NO_SUCH_PID: u8 = 64 + 3;
    /// `run`: `--duration` elapsed before the command exited (it was sent SIGTERM).
    pub const TIMED_OUT: u8 = 124;
    /// `run`: interrupted (Ctrl-C or SIGTERM); the command was sent SIGINT.
    pub const INTERRUPTED: u8 = 130;
    /// `run`: the command was found but could not be executed.
    pub const CANNOT_EXECUTE: u8 = 126;
    /// `run`: the command was not found.
    pub const NOT_FOUND: u8 = 127;
}

impl TraceError {
    /// The exit code this error ends futexscope with.
    pub fn exit_code(&self) -> u8 {
        match self {
            TraceError::NotPermitted { .. } => exit_code::NOT_PERMITTED,
            TraceError::NoBpf(_) | TraceError::Load(_) => exit_code::NO_BPF,
            TraceError::NoSuchPid(_) => exit_code::NO_SUCH_PID,
            TraceError::Spawn(SpawnError::Exec { source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                exit_code::NOT_FOUND
            }
            TraceError::Spawn(_) => exit_code::CANNOT_EXECUTE,
            TraceError::Output { .. } => exit_code::OUTPUT,
            TraceError::Read(_) | TraceError::Terminal(_) => exit_code::FAILURE,
        }
    }
}
