//! Exports of the event records: raw records as JSON lines (`--events`), and a trace that
//! ui.perfetto.dev opens (`--export`, Chrome trace-event JSON): one track per thread, each wait
//! and wake call a slice, a flow arrow from each wake to the waits it woke, timeouts and
//! spurious wakeups as instants, and the waiter count of each futex word as a counter track.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io::{self, Write},
};

use futexscope_probes_common::{
    event::{Event, EventKind, spurious},
    maps::FutexKey,
    markers::Marker,
};
use serde::Serialize;
use serde_json::json;

const EAGAIN: i64 = -(libc::EAGAIN as i64);
const EINTR: i64 = -(libc::EINTR as i64);
const ETIMEDOUT: i64 = -(libc::ETIMEDOUT as i64);

/// One event record as a JSON object (one line of `--events`).
#[derive(Debug, Serialize)]
pub struct EventLine<'a> {
    /// `wait`, `wake`, `marker` or `unknown`.
    pub kind: &'a str,
    /// Marker name for markers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marker: Option<&'a str>,
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

impl<'a> EventLine<'a> {
    /// The JSON-lines view of `event`.
    pub fn new(event: &'a Event) -> EventLine<'a> {
        let kind = EventKind::from_u32(event.kind);
        EventLine {
            kind: match kind {
                Some(EventKind::Wait) => "wait",
                Some(EventKind::Wake) => "wake",
                Some(EventKind::Marker) => "marker",
                Some(EventKind::Fork) => "fork",
                Some(EventKind::DiedWaiting) => "died_waiting",
                None => "unknown",
            },
            marker: (kind == Some(EventKind::Marker))
                .then(|| Marker::from_id(event.op).map(Marker::name))
                .flatten(),
            tid: event.tid,
            pid: event.tgid,
            cpu: event.cpu,
            ts_ns: event.ts_ns,
            start_ns: event.start_ns,
            uaddr: format!("{:#x}", event.uaddr),
            uaddr2: format!("{:#x}", event.uaddr2),
            op: event.op,
            syscall: event.syscall,
            ret: event.ret,
            deadline_ns: event.deadline_ns,
            args: event.args,
            spurious: event.spurious,
            clock: event.clock,
        }
    }
}

/// Writes `event` as one JSON line.
pub fn write_event_line(out: &mut impl Write, event: &Event) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &EventLine::new(event))?;
    out.write_all(b"\n")
}

/// A wait or wake call, as kept for export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// Process id.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// Futex word.
    pub uaddr: u64,
    /// When the call began, ns.
    pub start_ns: u64,
    /// When it returned, ns.
    pub end_ns: u64,
    /// Result: for waits 0 (woken) or -errno; for wakes the number woken or -errno.
    pub ret: i64,
    /// Absolute deadline in ns (waits), 0 if none.
    pub deadline_ns: u64,
    /// Spurious-wakeup flags (waits).
    pub spurious: u32,
}

/// A futex word as an ordered key: (process id, address).
type Word = (u32, u64);

impl Call {
    fn key(&self) -> FutexKey {
        FutexKey {
            tgid: self.tgid,
            pad: 0,
            uaddr: self.uaddr,
        }
    }

    fn word(&self) -> Word {
        (self.tgid, self.uaddr)
    }
}

/// Collects the wait and wake records of a trace for export at the end.
#[derive(Debug, Default)]
pub struct Recorder {
    waits: Vec<Call>,
    wakes: Vec<Call>,
    /// Waits cut short by their thread's exit.
    died_waiting: Vec<Call>,
}

impl Recorder {
    /// Keeps what the export needs of one event record.
    pub fn push(&mut self, event: &Event) {
        let call = Call {
            tgid: event.tgid,
            tid: event.tid,
            uaddr: event.uaddr,
            start_ns: event.start_ns,
            end_ns: event.ts_ns,
            ret: event.ret,
            deadline_ns: event.deadline_ns,
            spurious: event.spurious,
        };
        match EventKind::from_u32(event.kind) {
            Some(EventKind::Wait) => self.waits.push(call),
            Some(EventKind::Wake) => self.wakes.push(call),
            Some(EventKind::DiedWaiting) => self.died_waiting.push(call),
            _ => {}
        }
    }

    /// The timeline of everything recorded. `labels` names futex words; `process_names`
    /// names processes.
    pub fn timeline(
        &self,
        labels: &HashMap<FutexKey, String>,
        process_names: &HashMap<u32, String>,
    ) -> Timeline {
        let name_of = |key: FutexKey| match labels.get(&key) {
            Some(label) if !label.is_empty() => label.clone(),
            _ => format!("{:#x}", key.uaddr),
        };
        let mut threads: Vec<(u32, u32)> = self
            .waits
            .iter()
            .chain(&self.wakes)
            .chain(&self.died_waiting)
            .map(|c| (c.tgid, c.tid))
            .collect();
        threads.sort_unstable();
        threads.dedup();
        let mut processes: Vec<(u32, String)> = threads
            .iter()
            .map(|&(pid, _)| {
                (
                    pid,
                    process_names
                        .get(&pid)
                        .cloned()
                        .unwrap_or_else(|| format!("pid {pid}")),
                )
            })
            .collect();
        processes.dedup();

        let flows = match_wakes(&self.waits, &self.wakes);
        let mut flow_into_wait = vec![None; self.waits.len()];
        let mut flows_out_of_wake = vec![Vec::new(); self.wakes.len()];
        for (id, flow) in flows.iter().enumerate() {
            flow_into_wait[flow.wait] = Some(id as u64 + 1);
            flows_out_of_wake[flow.wake].push(id as u64 + 1);
        }
        let mut slices = Vec::with_capacity(self.waits.len() + self.wakes.len());
        let mut instants = Vec::new();
        for (wait, flow_in) in self.waits.iter().zip(&flow_into_wait) {
            slices.push(Slice {
                pid: wait.tgid,
                tid: wait.tid,
                name: format!("wait {}", name_of(wait.key())),
                start_ns: wait.start_ns,
                end_ns: wait.end_ns.max(wait.start_ns),
                args: vec![
                    ("uaddr", Arg::Text(format!("{:#x}", wait.uaddr))),
                    ("result", Arg::Text(wait_result(wait.ret).to_owned())),
                    ("deadline_ns", Arg::Int(wait.deadline_ns as i64)),
                ],
                flows_out: Vec::new(),
                flow_in: *flow_in,
            });
            let instant = |name, ts_ns, args| Instant {
                pid: wait.tgid,
                tid: wait.tid,
                name,
                ts_ns,
                args,
            };
            if wait.ret == ETIMEDOUT {
                instants.push(instant(
                    "timeout",
                    wait.end_ns,
                    vec![("drift_ns", Arg::Int(drift_ns(wait)))],
                ));
            }
            for (flag, name) in SPURIOUS_KINDS {
                if wait.spurious & flag != 0 {
                    // A lost race is found when the thread waits again: mark that wait's start.
                    let ts_ns = if flag == spurious::LOST_RACE {
                        wait.start_ns
                    } else {
                        wait.end_ns
                    };
                    instants.push(instant(name, ts_ns, vec![]));
                }
            }
        }
        for died in &self.died_waiting {
            slices.push(Slice {
                pid: died.tgid,
                tid: died.tid,
                name: format!("wait {}", name_of(died.key())),
                start_ns: died.start_ns,
                end_ns: died.end_ns.max(died.start_ns),
                args: vec![
                    ("uaddr", Arg::Text(format!("{:#x}", died.uaddr))),
                    ("result", Arg::Text("thread exited".to_owned())),
                ],
                flows_out: Vec::new(),
                flow_in: None,
            });
            instants.push(Instant {
                pid: died.tgid,
                tid: died.tid,
                name: "thread exited while waiting",
                ts_ns: died.end_ns,
                args: vec![],
            });
        }
        for (wake, flows_out) in self.wakes.iter().zip(flows_out_of_wake) {
            slices.push(Slice {
                pid: wake.tgid,
                tid: wake.tid,
                name: format!("wake {}", name_of(wake.key())),
                start_ns: wake.start_ns,
                end_ns: wake.end_ns.max(wake.start_ns),
                args: vec![
                    ("uaddr", Arg::Text(format!("{:#x}", wake.uaddr))),
                    ("woken", Arg::Int(wake.ret)),
                ],
                flows_out,
                flow_in: None,
            });
        }
        let counters = waiter_counts(&self.waits)
            .into_iter()
            .map(|((pid, uaddr), values)| Counter {
                pid,
                name: format!(
                    "waiters {}",
                    name_of(FutexKey {
                        tgid: pid,
                        pad: 0,
                        uaddr
                    })
                ),
                values,
            })
            .collect();
        Timeline {
            processes,
            threads,
            slices,
            instants,
            counters,
        }
    }
}

/// A value attached to a slice or instant.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// A number.
    Int(i64),
    /// Text.
    Text(String),
}

/// A wait or wake call on a thread's track.
#[derive(Clone, Debug, PartialEq)]
pub struct Slice {
    /// Process id.
    pub pid: u32,
    /// Thread id (the track).
    pub tid: u32,
    /// `wait WORD` or `wake WORD`.
    pub name: String,
    /// Begin, ns.
    pub start_ns: u64,
    /// End, ns.
    pub end_ns: u64,
    /// Details shown when the slice is selected.
    pub args: Vec<(&'static str, Arg)>,
    /// Flow ids leaving this slice (a wake, towards the waits it woke).
    pub flows_out: Vec<u64>,
    /// Flow id arriving at this slice (a woken wait, from its waker).
    pub flow_in: Option<u64>,
}

/// A point event on a thread's track: a timeout or a spurious wakeup.
#[derive(Clone, Debug, PartialEq)]
pub struct Instant {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// What happened.
    pub name: &'static str,
    /// When, ns.
    pub ts_ns: u64,
    /// Details.
    pub args: Vec<(&'static str, Arg)>,
}

/// The waiter count of one futex word over time.
#[derive(Clone, Debug, PartialEq)]
pub struct Counter {
    /// Process id.
    pub pid: u32,
    /// `waiters WORD`.
    pub name: String,
    /// (time ns, waiters) after each change.
    pub values: Vec<(u64, i64)>,
}

/// Everything an exported trace shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timeline {
    /// (pid, name) of each process.
    pub processes: Vec<(u32, String)>,
    /// (pid, tid) of each thread.
    pub threads: Vec<(u32, u32)>,
    /// Wait and wake calls.
    pub slices: Vec<Slice>,
    /// Timeouts and spurious wakeups.
    pub instants: Vec<Instant>,
    /// Waiter counts.
    pub counters: Vec<Counter>,
}

/// Export file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Chrome trace-event JSON.
    ChromeJson,
    /// Perfetto `Trace` protobuf (TrackEvent).
    Perfetto,
}

impl Format {
    /// The format for a file name: `.json` is Chrome JSON, anything else Perfetto protobuf.
    pub fn for_path(path: &std::path::Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Format::ChromeJson,
            _ => Format::Perfetto,
        }
    }
}

impl Timeline {
    /// Writes the timeline in `format`.
    pub fn write(&self, out: &mut impl Write, format: Format) -> io::Result<()> {
        match format {
            Format::ChromeJson => self.write_chrome_json(out),
            Format::Perfetto => self.write_perfetto(out),
        }
    }

    /// Writes Chrome trace-event JSON (`{"traceEvents": [...]}`, times in µs).
    pub fn write_chrome_json(&self, out: &mut impl Write) -> io::Result<()> {
        let args_json = |args: &[(&str, Arg)]| -> serde_json::Value {
            args.iter()
                .map(|(name, value)| {
                    let value = match value {
                        Arg::Int(n) => json!(n),
                        Arg::Text(t) => json!(t),
                    };
                    ((*name).to_owned(), value)
                })
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let mut writer = JsonArrayWriter::new(out)?;
        for (pid, name) in &self.processes {
            writer.event(&json!({"ph": "M", "name": "process_name", "pid": pid, "tid": pid, "args": {"name": name}}))?;
        }
        for (pid, tid) in &self.threads {
            writer.event(
                &json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                "args": {"name": format!("thread {tid}")}}),
            )?;
        }
        for slice in &self.slices {
            writer.event(&json!({"ph": "X", "cat": "futex", "name": slice.name, "pid": slice.pid,
                "tid": slice.tid, "ts": us(slice.start_ns), "dur": us(slice.end_ns - slice.start_ns),
                "args": args_json(&slice.args)}))?;
            // Flow ends bind to the slice enclosing their timestamp: use the slice's middle.
            let middle = us(slice.start_ns + (slice.end_ns - slice.start_ns) / 2);
            for id in &slice.flows_out {
                writer.event(&json!({"ph": "s", "cat": "wake", "name": "wake", "id": id,
                    "pid": slice.pid, "tid": slice.tid, "ts": middle}))?;
            }
            if let Some(id) = slice.flow_in {
                writer.event(
                    &json!({"ph": "f", "bp": "e", "cat": "wake", "name": "wake", "id": id,
                    "pid": slice.pid, "tid": slice.tid, "ts": middle}),
                )?;
            }
        }
        for instant in &self.instants {
            writer.event(
                &json!({"ph": "i", "s": "t", "cat": "futex", "name": instant.name,
                "pid": instant.pid, "tid": instant.tid, "ts": us(instant.ts_ns),
                "args": args_json(&instant.args)}),
            )?;
        }
        for counter in &self.counters {
            for (ts, waiters) in &counter.values {
                writer.event(
                    &json!({"ph": "C", "name": counter.name, "pid": counter.pid, "ts": us(*ts),
                    "args": {"waiters": waiters}}),
                )?;
            }
        }
        writer.finish()
    }

    /// Writes a Perfetto `Trace` protobuf: a track per process, thread and counter, then
    /// TrackEvent packets (slices as begin/end pairs, flows by id, instants, counter values).
    pub fn write_perfetto(&self, out: &mut impl Write) -> io::Result<()> {
        use protobuf::{Message, TrackEventType};
        const SEQUENCE: u64 = 1;
        const INCREMENTAL_STATE_CLEARED: u64 = 1;
        let process_uuid = |pid: u32| 1u64 << 40 | u64::from(pid);
        let thread_uuid = |tid: u32| 2u64 << 40 | u64::from(tid);
        let mut packets: Vec<Message> = Vec::new();
        let mut first = Message::default();
        first.uint(13, INCREMENTAL_STATE_CLEARED).uint(10, SEQUENCE);
        packets.push(first);
        for (pid, name) in &self.processes {
            let mut process = Message::default();
            process.uint(1, u64::from(*pid)).text(6, name);
            let mut track = Message::default();
            track.uint(1, process_uuid(*pid)).message(3, &process);
            let mut packet = Message::default();
            packet.uint(10, SEQUENCE).message(60, &track);
            packets.push(packet);
        }
        for (pid, tid) in &self.threads {
            let mut thread = Message::default();
            thread
                .uint(1, u64::from(*pid))
                .uint(2, u64::from(*tid))
                .text(5, &format!("thread {tid}"));
            let mut track = Message::default();
            track
                .uint(1, thread_uuid(*tid))
                .uint(5, process_uuid(*pid))
                .message(4, &thread);
            let mut packet = Message::default();
            packet.uint(10, SEQUENCE).message(60, &track);
            packets.push(packet);
        }
        let event_packet = |ts: u64, event: &Message| {
            let mut packet = Message::default();
            packet.uint(8, ts).uint(10, SEQUENCE).message(11, event);
            packet
        };
        let annotations = |event: &mut Message, args: &[(&str, Arg)]| {
            for (name, value) in args {
                let mut annotation = Message::default();
                annotation.text(10, name);
                match value {
                    Arg::Int(n) => annotation.uint(4, *n as u64),
                    Arg::Text(t) => annotation.text(6, t),
                };
                event.message(4, &annotation);
            }
        };
        for slice in &self.slices {
            let track = thread_uuid(slice.tid);
            let mut begin = Message::default();
            begin
                .uint(9, TrackEventType::SliceBegin as u64)
                .uint(11, track)
                .text(23, &slice.name);
            annotations(&mut begin, &slice.args);
            for id in &slice.flows_out {
                begin.fixed64(47, *id);
            }
            packets.push(event_packet(slice.start_ns, &begin));
            let mut end = Message::default();
            end.uint(9, TrackEventType::SliceEnd as u64).uint(11, track);
            // The woken wait ends after its waker began: the flow arrives at the wait's end.
            if let Some(id) = slice.flow_in {
                end.fixed64(48, id);
            }
            packets.push(event_packet(slice.end_ns, &end));
        }
        for instant in &self.instants {
            let mut event = Message::default();
            event
                .uint(9, TrackEventType::Instant as u64)
                .uint(11, thread_uuid(instant.tid))
                .text(23, instant.name);
            annotations(&mut event, &instant.args);
            packets.push(event_packet(instant.ts_ns, &event));
        }
        for (index, counter) in self.counters.iter().enumerate() {
            let uuid = 3u64 << 40 | index as u64;
            let mut track = Message::default();
            track
                .uint(1, uuid)
                .uint(5, process_uuid(counter.pid))
                .text(2, &counter.name)
                .message(8, &Message::default());
            let mut packet = Message::default();
            packet.uint(10, SEQUENCE).message(60, &track);
            packets.push(packet);
            for (ts, waiters) in &counter.values {
                let mut event = Message::default();
                event
                    .uint(9, TrackEventType::Counter as u64)
                    .uint(11, uuid)
                    .uint(30, *waiters as u64);
                packets.push(event_packet(*ts, &event));
            }
        }
        for packet in &packets {
            let mut trace = Message::default();
            trace.message(1, packet);
            out.write_all(trace.bytes())?;
        }
        out.flush()
    }
}

/// The few protobuf wire-format pieces a Perfetto trace needs.
mod protobuf {
    /// `TrackEvent.Type`.
    #[derive(Clone, Copy)]
    pub enum TrackEventType {
        SliceBegin = 1,
        SliceEnd = 2,
        Instant = 3,
        Counter = 4,
    }

    /// An encoded message being built, field by field.
    #[derive(Default)]
    pub struct Message(Vec<u8>);

    const VARINT: u32 = 0;
    const FIXED64: u32 = 1;
    const LENGTH_DELIMITED: u32 = 2;

    impl Message {
        fn varint(&mut self, mut value: u64) {
            while value >= 0x80 {
                self.0.push(value as u8 | 0x80);
                value >>= 7;
            }
            self.0.push(value as u8);
        }

        fn key(&mut self, field: u32, wire_type: u32) {
            self.varint(u64::from(field << 3 | wire_type));
        }

        /// A varint field (uint, int64 as two's complement, enum).
        pub fn uint(&mut self, field: u32, value: u64) -> &mut Self {
            self.key(field, VARINT);
            self.varint(value);
            self
        }

        /// A fixed64 field.
        pub fn fixed64(&mut self, field: u32, value: u64) -> &mut Self {
            self.key(field, FIXED64);
            self.0.extend_from_slice(&value.to_le_bytes());
            self
        }

        /// A string field.
        pub fn text(&mut self, field: u32, value: &str) -> &mut Self {
            self.bytes_field(field, value.as_bytes())
        }

        /// An embedded message field.
        pub fn message(&mut self, field: u32, value: &Message) -> &mut Self {
            self.bytes_field(field, &value.0)
        }

        fn bytes_field(&mut self, field: u32, value: &[u8]) -> &mut Self {
            self.key(field, LENGTH_DELIMITED);
            self.varint(value.len() as u64);
            self.0.extend_from_slice(value);
            self
        }

        /// The encoded bytes.
        pub fn bytes(&self) -> &[u8] {
            &self.0
        }
    }
}

/// Instant names of the spurious-wakeup flags of a wait.
const SPURIOUS_KINDS: [(u32, &str); 4] = [
    (spurious::INTERRUPTED, "spurious: interrupted (EINTR)"),
    (spurious::VALUE_CHANGED, "spurious: value changed (EAGAIN)"),
    (spurious::LOST_RACE, "spurious: lost the race"),
    (spurious::NO_WAKER, "spurious: woken with no wake"),
];

/// A wake linked to a wait it woke (indices into the wake and wait lists).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Index of the wake call.
    pub wake: usize,
    /// Index of the woken wait.
    pub wait: usize,
}

/// Links wakes to the waits they woke. A wait that returned 0 (woken) on a word is given to a
/// wake call on the same word that began before the wait returned and returned after the wait
/// began, and that still has woken threads unassigned (its result counts them); among several,
/// the earliest-starting one (the kernel wakes in queue order, and earlier wakes go first).
pub fn match_wakes(waits: &[Call], wakes: &[Call]) -> Vec<Flow> {
    let mut woken: BTreeMap<Word, Vec<usize>> = BTreeMap::new();
    for (index, wait) in waits.iter().enumerate().filter(|(_, w)| w.ret == 0) {
        woken.entry(wait.word()).or_default().push(index);
    }
    let mut by_word: HashMap<Word, Vec<usize>> = HashMap::new();
    for (index, wake) in wakes.iter().enumerate().filter(|(_, w)| w.ret > 0) {
        by_word.entry(wake.word()).or_default().push(index);
    }
    let mut flows = Vec::new();
    for (key, mut wait_indices) in woken {
        let Some(mut wake_indices) = by_word.remove(&key) else {
            continue;
        };
        wait_indices.sort_by_key(|&i| waits[i].end_ns);
        wake_indices.sort_by_key(|&i| wakes[i].start_ns);
        let mut remaining: Vec<i64> = wake_indices.iter().map(|&i| wakes[i].ret).collect();
        // Wakes that have begun before the current wait's return, in start order.
        let mut begun: VecDeque<usize> = VecDeque::new();
        let mut next_wake = 0;
        for wait_index in wait_indices {
            let wait = &waits[wait_index];
            while next_wake < wake_indices.len()
                && wakes[wake_indices[next_wake]].start_ns <= wait.end_ns
            {
                begun.push_back(next_wake);
                next_wake += 1;
            }
            // Wakes that are used up can never match again.
            while begun.front().is_some_and(|&w| remaining[w] == 0) {
                begun.pop_front();
            }
            let chosen = begun
                .iter()
                .copied()
                .find(|&w| remaining[w] > 0 && wakes[wake_indices[w]].end_ns >= wait.start_ns);
            if let Some(w) = chosen {
                remaining[w] -= 1;
                flows.push(Flow {
                    wake: wake_indices[w],
                    wait: wait_index,
                });
            }
        }
    }
    flows
}

/// For each word (process id, address), the waiter count after each change (time ns, count),
/// from the waits seen.
pub fn waiter_counts(waits: &[Call]) -> BTreeMap<(u32, u64), Vec<(u64, i64)>> {
    let mut changes: BTreeMap<Word, Vec<(u64, i64)>> = BTreeMap::new();
    for wait in waits {
        let entry = changes.entry(wait.word()).or_default();
        entry.push((wait.start_ns, 1));
        entry.push((wait.end_ns, -1));
    }
    changes
        .into_iter()
        .map(|(key, mut deltas)| {
            // At equal times, leave before entering, so the count never overstates.
            deltas.sort_unstable();
            let mut count = 0;
            let mut series: Vec<(u64, i64)> = Vec::with_capacity(deltas.len());
            for (ts, delta) in deltas {
                count += delta;
                match series.last_mut() {
                    Some(last) if last.0 == ts => last.1 = count,
                    _ => series.push((ts, count)),
                }
            }
            (key, series)
        })
        .collect()
}

fn wait_result(ret: i64) -> &'static str {
    match ret {
        0 => "woken",
        ETIMEDOUT => "ETIMEDOUT",
        EINTR => "EINTR",
        EAGAIN => "EAGAIN",
        r if r > 0 => "ok",
        _ => "error",
    }
}

/// Return time minus deadline, in ns (negative if it returned early).
fn drift_ns(wait: &Call) -> i64 {
    wait.end_ns as i64 - wait.deadline_ns as i64
}

/// ns → µs, the Chrome trace-event time unit.
fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// Streams `{"traceEvents":[…]}` one event at a time.
struct JsonArrayWriter<'a, W: Write> {
    out: &'a mut W,
    first: bool,
}

impl<'a, W: Write> JsonArrayWriter<'a, W> {
    fn new(out: &'a mut W) -> io::Result<Self> {
        out.write_all(b"{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n")?;
        Ok(JsonArrayWriter { out, first: true })
    }

    fn event(&mut self, value: &serde_json::Value) -> io::Result<()> {
        if !self.first {
            self.out.write_all(b",\n")?;
        }
        self.first = false;
        serde_json::to_writer(&mut *self.out, value)?;
        Ok(())
    }

    fn finish(self) -> io::Result<()> {
        self.out.write_all(b"\n]}\n")?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(tid: u32, uaddr: u64, start_ns: u64, end_ns: u64, ret: i64) -> Call {
        Call {
            tgid: 1,
            tid,
            uaddr,
            start_ns,
            end_ns,
            ret,
            deadline_ns: 0,
            spurious: 0,
        }
    }

    #[test]
    fn one_wake_of_two_wakes_both_waiters() {
        let waits = [call(2, 0x10, 0, 120, 0), call(3, 0x10, 10, 130, 0)];
        let wakes = [call(4, 0x10, 100, 110, 2)];
        let flows = match_wakes(&waits, &wakes);
        assert_eq!(
            flows,
            [Flow { wake: 0, wait: 0 }, Flow { wake: 0, wait: 1 }]
        );
    }

    #[test]
    fn wakes_are_matched_in_order_and_by_word() {
        let waits = [
            call(2, 0x10, 0, 105, 0),
            call(3, 0x10, 0, 205, 0),
            call(5, 0x20, 0, 150, 0),
            call(6, 0x10, 0, 50, ETIMEDOUT),
        ];
        let wakes = [
            call(4, 0x10, 200, 210, 1),
            call(4, 0x10, 100, 110, 1),
            call(4, 0x20, 140, 145, 1),
        ];
        let mut flows = match_wakes(&waits, &wakes);
        flows.sort_by_key(|f| f.wait);
        assert_eq!(
            flows,
            [
                Flow { wake: 1, wait: 0 },
                Flow { wake: 0, wait: 1 },
                Flow { wake: 2, wait: 2 }
            ]
        );
    }

    #[test]
    fn a_wake_that_woke_nobody_or_came_later_is_not_linked() {
        let waits = [call(2, 0x10, 0, 100, 0)];
        let wakes = [call(4, 0x10, 50, 60, 0), call(4, 0x10, 150, 160, 1)];
        assert_eq!(match_wakes(&waits, &wakes), []);
    }

    #[test]
    fn a_wake_never_wakes_more_than_it_reports() {
        let waits = [call(2, 0x10, 0, 100, 0), call(3, 0x10, 0, 101, 0)];
        let wakes = [call(4, 0x10, 90, 95, 1)];
        assert_eq!(match_wakes(&waits, &wakes), [Flow { wake: 0, wait: 0 }]);
    }

    #[test]
    fn waiter_counts_rise_and_fall() {
        let waits = [
            call(2, 0x10, 0, 100, 0),
            call(3, 0x10, 10, 50, 0),
            call(4, 0x10, 100, 120, 0),
        ];
        let counts = waiter_counts(&waits);
        let key = (1, 0x10);
        // At 100 one leaves and one enters: the count stays 1.
        assert_eq!(counts[&key], [(0, 1), (10, 2), (50, 1), (100, 1), (120, 0)]);
    }

    fn event(kind: EventKind, tid: u32, uaddr: u64, start_ns: u64, ts_ns: u64, ret: i64) -> Event {
        Event {
            kind: kind as u32,
            tid,
            tgid: 1,
            cpu: 0,
            ts_ns,
            start_ns,
            uaddr,
            uaddr2: 0,
            op: 0,
            syscall: futexscope_probes_common::abi::syscalls::FUTEX,
            ret,
            deadline_ns: if ret == ETIMEDOUT { ts_ns - 500 } else { 0 },
            args: [0; 6],
            spurious: 0,
            clock: futexscope_probes_common::event::NO_CLOCK,
        }
    }

    fn sample_timeline() -> Timeline {
        let mut recorder = Recorder::default();
        recorder.push(&event(EventKind::Wait, 2, 0x10, 1_000, 9_000, 0));
        recorder.push(&event(EventKind::Wake, 3, 0x10, 8_000, 8_500, 1));
        recorder.push(&event(EventKind::Wait, 2, 0x10, 10_000, 20_000, ETIMEDOUT));
        let mut no_waker = event(EventKind::Wait, 4, 0x10, 30_000, 31_000, 0);
        no_waker.spurious = spurious::NO_WAKER;
        recorder.push(&no_waker);
        let mut died = event(EventKind::DiedWaiting, 5, 0x10, 32_000, 40_000, 0);
        died.deadline_ns = 0;
        recorder.push(&died);
        let labels = HashMap::from([(
            FutexKey {
                tgid: 1,
                pad: 0,
                uaddr: 0x10,
            },
            "SEM".to_owned(),
        )]);
        recorder.timeline(&labels, &HashMap::from([(1, "prog".into())]))
    }

    #[test]
    fn timeline_links_the_wake_to_the_wait_it_woke() {
        let timeline = sample_timeline();
        assert_eq!(timeline.threads, [(1, 2), (1, 3), (1, 4), (1, 5)]);
        assert_eq!(timeline.processes, [(1, "prog".to_owned())]);
        let wake = timeline
            .slices
            .iter()
            .find(|s| s.name == "wake SEM")
            .unwrap();
        let woken = timeline
            .slices
            .iter()
            .find(|s| s.flow_in.is_some())
            .unwrap();
        assert_eq!(wake.flows_out, [woken.flow_in.unwrap()]);
        assert_eq!((woken.tid, woken.start_ns), (2, 1_000));
        let names: Vec<_> = timeline.instants.iter().map(|i| (i.name, i.tid)).collect();
        assert_eq!(
            names,
            [
                ("timeout", 2),
                ("spurious: woken with no wake", 4),
                ("thread exited while waiting", 5)
            ]
        );
        assert_eq!(timeline.instants[0].args, [("drift_ns", Arg::Int(500))]);
    }

    #[test]
    fn chrome_json_holds_slices_flows_instants_and_counters() {
        let mut out = Vec::new();
        sample_timeline().write_chrome_json(&mut out).unwrap();
        let trace: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let events = trace["traceEvents"].as_array().unwrap();
        let with = |ph: &str| events.iter().filter(|e| e["ph"] == ph).collect::<Vec<_>>();
        assert_eq!(with("X").len(), 5);
        assert!(
            with("X")
                .iter()
                .any(|e| e["name"] == "wait SEM" && e["ts"] == 1.0 && e["dur"] == 8.0)
        );
        let (starts, ends) = (with("s"), with("f"));
        assert_eq!((starts.len(), ends.len()), (1, 1));
        assert_eq!(
            (starts[0]["tid"].as_u64(), ends[0]["tid"].as_u64()),
            (Some(3), Some(2))
        );
        assert_eq!(starts[0]["id"], ends[0]["id"]);
        let instants = with("i");
        assert!(
            instants
                .iter()
                .any(|e| e["name"] == "timeout" && e["args"]["drift_ns"] == 500)
        );
        let counters = with("C");
        assert_eq!(counters.first().unwrap()["args"]["waiters"], 1);
        assert!(counters.iter().all(|c| c["name"] == "waiters SEM"));
        assert_eq!(counters.last().unwrap()["args"]["waiters"], 0);
    }

    #[test]
    fn varints_encode_as_protobuf_does() {
        let mut message = protobuf::Message::default();
        message.uint(1, 150);
        assert_eq!(message.bytes(), [0x08, 0x96, 0x01]);
        let mut message = protobuf::Message::default();
        message.text(2, "testing");
        assert_eq!(message.bytes(), b"\x12\x07testing");
    }

    #[test]
    fn export_format_follows_the_extension() {
        use std::path::Path;
        assert_eq!(Format::for_path(Path::new("t.json")), Format::ChromeJson);
        assert_eq!(Format::for_path(Path::new("t.pftrace")), Format::Perfetto);
        assert_eq!(Format::for_path(Path::new("trace")), Format::Perfetto);
    }

    #[test]
    fn event_lines_are_json_objects() {
        let mut out = Vec::new();
        write_event_line(&mut out, &event(EventKind::Wake, 3, 0xabc, 1, 2, 4)).unwrap();
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["kind"], "wake");
        assert_eq!(line["uaddr"], "0xabc");
        assert_eq!(line["ret"], 4);
        assert_eq!(out.last(), Some(&b'\n'));
    }
}
