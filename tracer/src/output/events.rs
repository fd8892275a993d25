//! The NDJSON event stream (`--events`): every record as one JSON object per line.

use std::io::{self, Write};

use serde::Serialize;

use crate::decode::{Call, Record};

/// One record as a JSON object (one line of `--events`). The fields are those of the probes'
/// records, so the stream is a faithful dump; fields a kind does not use are 0.
#[derive(Debug, Default, Serialize)]
pub struct EventLine {
    /// `wait`, `wake`, `marker`, `fork` or `died_waiting`.
    pub kind: &'static str,
    /// Marker name for markers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marker: Option<&'static str>,
    /// Thread id.
    pub tid: u32,
    /// Process id.
    pub pid: u32,
    /// CPU.
    pub cpu: u32,
    /// CLOCK_MONOTONIC ns when the call returned or the marker fired.
    pub ts_ns: u64,
    /// CLOCK_MONOTONIC ns when the call began (0 for markers).
    pub start_ns: u64,
    /// Futex word address.
    pub uaddr: String,
    /// Second futex word, if any.
    pub uaddr2: String,
    /// Futex op (with flags), or marker id.
    pub op: u32,
    /// Syscall number (0 for markers).
    pub syscall: u32,
    /// Result: >= 0 or -errno.
    pub ret: i64,
    /// Absolute CLOCK_MONOTONIC deadline in ns, 0 if none.
    pub deadline_ns: u64,
    /// Marker or op-specific arguments.
    pub args: [u64; 6],
    /// Spurious-wakeup flags of a wait (docs/probes.md).
    pub spurious: u32,
    /// Clock the deadline was given on (0 realtime, 1 monotonic, 4294967295 untimed).
    pub clock: u32,
}

impl EventLine {
    /// The JSON-lines view of `record`.
    pub fn new(record: &Record) -> EventLine {
        let call_line = |kind, call: &Call| EventLine {
            kind,
            marker: None,
            tid: call.thread.tid,
            pid: call.thread.pid,
            cpu: call.cpu,
            ts_ns: call.end_ns,
            start_ns: call.start_ns,
            uaddr: format!("{:#x}", call.uaddr),
            uaddr2: format!("{:#x}", call.uaddr2),
            op: call.op,
            syscall: call.syscall,
            ret: call.ret,
            deadline_ns: 0,
            args: call.args,
            spurious: 0,
            clock: Record::clock_of(None),
        };
        match record {
            Record::Wait(wait) => EventLine {
                deadline_ns: wait.deadline.map_or(0, |d| d.monotonic_ns),
                clock: Record::clock_of(wait.deadline),
                spurious: wait.spurious.0,
                ..call_line("wait", &wait.call)
            },
            Record::Wake(wake) => call_line("wake", &wake.call),
            Record::DiedWaiting(died) => EventLine {
                deadline_ns: died.deadline.map_or(0, |d| d.monotonic_ns),
                clock: Record::clock_of(died.deadline),
                ..call_line("died_waiting", &died.call)
            },
            Record::Marker(hit) => EventLine {
                kind: "marker",
                marker: hit.marker.map(|m| m.name()),
                tid: hit.thread.tid,
                pid: hit.thread.pid,
                cpu: hit.cpu,
                ts_ns: hit.ts_ns,
                uaddr: format!("{:#x}", hit.word.and_then(|w| w.address()).unwrap_or(0)),
                uaddr2: "0x0".to_owned(),
                op: hit.id,
                args: hit.args,
                clock: Record::clock_of(None),
                ..EventLine::default()
            },
            Record::Fork(fork) => EventLine {
                kind: "fork",
                tid: fork.parent.tid,
                pid: fork.parent.pid,
                cpu: fork.cpu,
                ts_ns: fork.ts_ns,
                uaddr: "0x0".to_owned(),
                uaddr2: "0x0".to_owned(),
                args: [u64::from(fork.child_pid), 0, 0, 0, 0, 0],
                clock: Record::clock_of(None),
                ..EventLine::default()
            },
        }
    }
}

/// Writes `record` as one JSON line.
pub fn write_line(out: &mut impl Write, record: &Record) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &EventLine::new(record))?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use futexscope_probes_common::event::{Event, EventKind};

    #[test]
    fn event_lines_are_the_records_fields_as_json() {
        let event = Event {
            kind: EventKind::Wake as u32,
            tid: 3,
            tgid: 1,
            ts_ns: 2,
            start_ns: 1,
            uaddr: 0xabc,
            syscall: futexscope_probes_common::abi::syscalls::FUTEX,
            ret: 4,
            args: [1, 0, 0, 0, 0, 0],
            ..Event::ZERO
        };
        let mut out = Vec::new();
        write_line(&mut out, &Record::decode(&event).unwrap()).unwrap();
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["kind"], "wake");
        assert_eq!(line["uaddr"], "0xabc");
        assert_eq!(
            (line["ret"].as_i64(), line["ts_ns"].as_u64()),
            (Some(4), Some(2))
        );
        assert_eq!(line["clock"], u64::from(u32::MAX));
        assert_eq!(out.last(), Some(&b'\n'));
    }
}
