//! The trace exports (`--export`): the [`Timeline`] as a Perfetto `Trace` protobuf
//! (ui.perfetto.dev opens it) or as Chrome trace-event JSON: one track per thread, each wait and
//! wake call a slice, a flow arrow from each wake to the waits it woke, timeouts and spurious
//! wakeups as instants, and the waiter count of each futex word as a counter track.

use std::io::{self, Write};

use serde_json::json;

use crate::aggregate::timeline::{Arg, Timeline};

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

/// Writes the timeline in `format`.
pub fn write(timeline: &Timeline, out: &mut impl Write, format: Format) -> io::Result<()> {
    match format {
        Format::ChromeJson => write_chrome_json(timeline, out),
        Format::Perfetto => write_perfetto(timeline, out),
    }
}

/// Writes Chrome trace-event JSON (`{"traceEvents": [...]}`, times in µs).
pub fn write_chrome_json(timeline: &Timeline, out: &mut impl Write) -> io::Result<()> {
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
    for (pid, name) in &timeline.processes {
        writer.event(&json!({"ph": "M", "name": "process_name", "pid": pid, "tid": pid, "args": {"name": name}}))?;
    }
    for (pid, tid) in &timeline.threads {
        writer.event(
            &json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
            "args": {"name": format!("thread {tid}")}}),
        )?;
    }
    for slice in &timeline.slices {
        writer.event(
            &json!({"ph": "X", "cat": "futex", "name": slice.name, "pid": slice.pid,
            "tid": slice.tid, "ts": us(slice.start_ns), "dur": us(slice.end_ns - slice.start_ns),
            "args": args_json(&slice.args)}),
        )?;
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
    for instant in &timeline.instants {
        writer.event(
            &json!({"ph": "i", "s": "t", "cat": "futex", "name": instant.name,
            "pid": instant.pid, "tid": instant.tid, "ts": us(instant.ts_ns),
            "args": args_json(&instant.args)}),
        )?;
    }
    for counter in &timeline.counters {
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
pub fn write_perfetto(timeline: &Timeline, out: &mut impl Write) -> io::Result<()> {
    use protobuf::{Message, TrackEventType};
    const SEQUENCE: u64 = 1;
    const INCREMENTAL_STATE_CLEARED: u64 = 1;
    let process_uuid = |pid: u32| 1u64 << 40 | u64::from(pid);
    let thread_uuid = |tid: u32| 2u64 << 40 | u64::from(tid);
    let mut packets: Vec<Message> = Vec::new();
    let mut first = Message::default();
    first.uint(13, INCREMENTAL_STATE_CLEARED).uint(10, SEQUENCE);
    packets.push(first);
    for (pid, name) in &timeline.processes {
        let mut process = Message::default();
        process.uint(1, u64::from(*pid)).text(6, name);
        let mut track = Message::default();
        track.uint(1, process_uuid(*pid)).message(3, &process);
        let mut packet = Message::default();
        packet.uint(10, SEQUENCE).message(60, &track);
        packets.push(packet);
    }
    for (pid, tid) in &timeline.threads {
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
    for slice in &timeline.slices {
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
    for instant in &timeline.instants {
        let mut event = Message::default();
        event
            .uint(9, TrackEventType::Instant as u64)
            .uint(11, thread_uuid(instant.tid))
            .text(23, instant.name);
        annotations(&mut event, &instant.args);
        packets.push(event_packet(instant.ts_ns, &event));
    }
    for (index, counter) in timeline.counters.iter().enumerate() {
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
    use crate::aggregate::timeline::tests::sample_timeline;
    #[test]
    fn chrome_json_holds_slices_flows_instants_and_counters() {
        let mut out = Vec::new();
        write_chrome_json(&sample_timeline(), &mut out).unwrap();
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
}
