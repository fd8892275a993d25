//! The summary written at the end of a trace: what was traced, how it ended, what was lost,
//! the notes raised and the per-word table; as JSON here, as text by [`super::text`].

use serde::Serialize;

use crate::aggregate::table::Row;
pub use crate::collect::ebpf::Drops;

/// How the traced target ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum Ending {
    /// The command exited with this status.
    Exited {
        /// Exit status.
        code: i32,
    },
    /// The command was killed by this signal.
    Killed {
        /// Signal number.
        signal: i32,
    },
    /// The traced process went away (attach mode).
    Gone,
    /// `--duration` elapsed.
    Duration,
    /// Interrupted (Ctrl-C or SIGTERM).
    Interrupted,
}

/// Everything the final summary says.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// What was traced, as the user named it.
    pub target: String,
    /// Processes traced: the command (or attached process) first, then its children by pid.
    pub pids: Vec<u32>,
    /// How long tracing lasted, in seconds.
    pub seconds: f64,
    /// How the trace ended.
    pub ending: Ending,
    /// Event records received from the kernel.
    pub events: u64,
    /// What was lost.
    pub drops: Drops,
    /// Warnings raised while tracing (missing hooks, no markers…), in order.
    pub notes: Vec<String>,
    /// One row per futex word, sorted by waits.
    pub futexes: Vec<Row>,
}

impl Summary {
    /// The summary as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a summary always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::table::tests::row;

    #[test]
    fn summary_json_has_hex_addresses_and_spurious_kinds() {
        let summary = Summary {
            target: "x".into(),
            pids: vec![1],
            seconds: 1.5,
            ending: Ending::Exited { code: 3 },
            events: 10,
            drops: Drops {
                ring_buffer_full: 2,
                map_full: 0,
                stack_ring_full: 0,
            },
            notes: vec![],
            futexes: vec![row(0xabc, 4, 1)],
        };
        let json: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap();
        assert_eq!(json["futexes"][0]["uaddr"], "0xabc");
        assert_eq!(json["futexes"][0]["waits"], 4);
        assert_eq!(json["futexes"][0]["spurious"]["eintr"], 0);
        assert_eq!(json["ending"]["how"], "exited");
        assert_eq!(json["ending"]["code"], 3);
        assert_eq!(json["drops"]["ring_buffer_full"], 2);
    }
}
