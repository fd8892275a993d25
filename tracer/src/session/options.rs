//! What a session is asked to do ([`Target`], [`Options`]) and what it reports ([`Outcome`]).

use std::{path::PathBuf, time::Duration};

use super::exit_code;
use crate::{
    aggregate::table::SortKey,
    collect::markers::MarkerSet,
    output::{
        live::View,
        summary::{Ending, Summary},
    },
};

/// What to trace.
#[derive(Clone, Debug)]
pub enum Target {
    /// Start this command (program and arguments) and trace it.
    Command(Vec<String>),
    /// Trace this running process.
    Pid(u32),
}

/// Options of a tracing session.
#[derive(Clone, Debug)]
pub struct Options {
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Live view refresh period.
    pub interval: Duration,
    /// Write the report (plain lines and the summary) here instead of stderr.
    pub output: Option<PathBuf>,
    /// Write the summary as JSON here.
    pub json: Option<PathBuf>,
    /// Write a Perfetto-readable trace here.
    pub export: Option<PathBuf>,
    /// Write every event record as a JSON line here.
    pub events: Option<PathBuf>,
    /// Live view style.
    pub view: View,
    /// Initial sort column.
    pub sort: SortKey,
    /// Print the probes' diagnostics.
    pub verbose: bool,
    /// Which futexscope markers of the target to attach (`None`: none).
    pub markers: Option<MarkerSet>,
    /// Bytes of the event ring buffer (a power of two, at least 4096).
    pub buffer_size: u32,
    /// Trace the children of the target too: those `attach` finds running and those the
    /// target starts later.
    pub children: bool,
    /// Capture the call stacks of waits and wakes (`--stacks`).
    pub stacks: bool,
    /// Write folded stacks of blocked time here (needs `stacks`).
    pub folded: Option<PathBuf>,
    /// Write a flame graph of blocked time here (needs `stacks`).
    pub flamegraph: Option<PathBuf>,
    /// Write a pprof profile of blocked time here (needs `stacks`).
    pub pprof: Option<PathBuf>,
    /// Bytes of the stack ring buffer (`stacks`).
    pub stack_buffer_size: u32,
}

/// What a finished session reports.
#[derive(Debug)]
pub struct Outcome {
    /// The final summary (already printed).
    pub summary: Summary,
    /// Whether the session attached to a running process (`attach`) rather than starting a
    /// command (`run`, `demo`).
    pub attached: bool,
}

impl Outcome {
    /// The exit code: for `run`, the command's own status (128 + signal if killed, 124 if the
    /// duration elapsed first); otherwise 0.
    pub fn exit_code(&self) -> u8 {
        match self.summary.ending {
            Ending::Exited { code } => code as u8,
            Ending::Killed { signal } => 128 + signal as u8,
            Ending::Duration if !self.attached => exit_code::TIMED_OUT,
            Ending::Interrupted if !self.attached => exit_code::INTERRUPTED,
            _ => 0,
        }
    }
}
