//! The trace exports (`--export`), written as the records arrive: a Perfetto `Trace` protobuf
//! (ui.perfetto.dev opens it) or Chrome trace-event JSON, with one track per thread, each wait
//! and wake call a slice, a flow arrow from each wake to the waits it woke, timeouts and
//! spurious wakeups as instants, and the waiter count of each futex word as a counter track.
//!
//! An [`Export`] takes records ([`Export::push`]), passes them through the streaming
//! [`Timeline`] and writes what its window releases ([`Export::write_ready`]); memory holds the
//! window, the names and one entry per thread, process and word, not the trace.
//!
//! Names are what the labels know when an item is written (a word's address until something
//! names it). A counter track keeps the name it was first written with. Process names may be
//! learnt after the process's first record: the Perfetto track of a process is described again
//! with its name once it is known (trace_processor takes the name from the last descriptor),
//! and Chrome JSON states every process's name at the end.
//!
//! With `--stacks`, each wait and wake slice carries its call stack (`TrackEvent.callstack_iid`
//! into interned callstacks, frames, function names and source paths), so that an area
//! selection in the Perfetto UI shows the stacks of the calls it holds; Chrome JSON has none.
//!
//! Counters are absolute values, written in time order per word from the window. Perfetto's
//! incremental counters (`CounterDescriptor.is_incremental`) would not spare that ordering:
//! trace_processor adds the deltas up in file order, before it sorts events by time.

use std::{
    collections::{HashMap, HashSet},
    io::{self, Write},
    sync::Arc,
};

use serde_json::json;

use super::protobuf;
use crate::{
    aggregate::{
        stacks::Frame,
        timeline::{Arg, CallKind, Item, Timeline, WindowStats},
    },
    decode::{Record, WordKey},
};

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

/// What names words and processes when items are written: the labels learnt so far.
#[derive(Clone, Copy, Debug)]
pub struct Names<'a> {
    /// The label of each word (empty or absent: its address is shown).
    pub words: &'a HashMap<WordKey, String>,
    /// The name of each process (absent: not known yet).
    pub processes: &'a HashMap<u32, String>,
}

impl Names<'_> {
    fn word(&self, key: WordKey) -> String {
        match self.words.get(&key) {
            Some(label) if !label.is_empty() => label.clone(),
            _ => key.describe(),
        }
    }

    fn slice(&self, kind: CallKind, key: WordKey) -> String {
        let verb = match kind {
            CallKind::Wait | CallKind::DiedWaiting => "wait",
            CallKind::Wake => "wake",
        };
        format!("{verb} {}", self.word(key))
    }

    fn process(&self, pid: u32) -> Option<&str> {
        self.processes.get(&pid).map(String::as_str)
    }
}

/// The call stack of one call, as the export shows it.
#[derive(Clone, Debug)]
pub struct CallStack {
    /// The stack's id (the same for every call with this stack).
    pub id: u32,
    /// Its frames, leaf first.
    pub frames: Arc<[Frame]>,
}

/// An export being written.
pub struct Export<W: Write> {
    timeline: Timeline,
    writer: Writer<W>,
    /// The stacks of calls not written yet, by thread and return time.
    stacks: HashMap<(u32, u64), CallStack>,
}

enum Writer<W: Write> {
    Chrome(ChromeJson<W>),
    Perfetto(Box<Perfetto<W>>),
}

impl<W: Write> Export<W> {
    /// Starts an export in `format` to `out` (buffer it: items are written one by one).
    pub fn new(out: W, format: Format) -> io::Result<Export<W>> {
        Export::with_timeline(out, format, Timeline::default())
    }

    /// Starts an export whose records pass through `timeline`.
    pub fn with_timeline(out: W, format: Format, timeline: Timeline) -> io::Result<Export<W>> {
        let writer = match format {
            Format::ChromeJson => Writer::Chrome(ChromeJson::new(out)?),
            Format::Perfetto => Writer::Perfetto(Box::new(Perfetto::new(out)?)),
        };
        Ok(Export {
            timeline,
            writer,
            stacks: HashMap::new(),
        })
    }

    /// Gives the call of thread `tid` that returned at `ts_ns` its stack (before the call's
    /// record is pushed, or at least before the window passes it).
    pub fn add_stack(&mut self, tid: u32, ts_ns: u64, stack: CallStack) {
        self.stacks.insert((tid, ts_ns), stack);
    }

    /// Takes a record in; it is written once the window has passed it.
    pub fn push(&mut self, record: &Record) {
        self.timeline.push(record);
    }

    /// Writes what the window has passed.
    pub fn write_ready(&mut self, names: Names<'_>) -> io::Result<()> {
        let Export {
            timeline,
            writer,
            stacks,
        } = self;
        let mut result = Ok(());
        timeline.release(&mut |item| {
            if result.is_ok() {
                let stack = call_stack(stacks, &item);
                result = writer.item(&item, names, stack.as_ref());
            }
        });
        result?;
        writer.names_learnt(names)
    }

    /// Writes everything still held and ends the file; says what fell out of the window.
    pub fn finish(self, names: Names<'_>) -> io::Result<WindowStats> {
        let Export {
            timeline,
            mut writer,
            mut stacks,
        } = self;
        let mut result = Ok(());
        let stats = timeline.finish(&mut |item| {
            if result.is_ok() {
                let stack = call_stack(&mut stacks, &item);
                result = writer.item(&item, names, stack.as_ref());
            }
        });
        result?;
        writer.finish(names)?;
        Ok(stats)
    }
}

/// Exports `records` to `out` in `format`, as a session that received them would.
pub fn write_records<'r>(
    records: impl IntoIterator<Item = &'r Record>,
    names: Names<'_>,
    out: impl Write,
    format: Format,
) -> io::Result<WindowStats> {
    let mut export = Export::new(out, format)?;
    for record in records {
        export.push(record);
        export.write_ready(names)?;
    }
    export.finish(names)
}

/// Takes the stack of the call `item` is, if it is a call with one.
fn call_stack(stacks: &mut HashMap<(u32, u64), CallStack>, item: &Item) -> Option<CallStack> {
    match item {
        Item::Slice(slice) => stacks.remove(&(slice.tid, slice.end_ns)),
        _ => None,
    }
}

impl<W: Write> Writer<W> {
    fn item(&mut self, item: &Item, names: Names<'_>, stack: Option<&CallStack>) -> io::Result<()> {
        match self {
            Writer::Chrome(chrome) => chrome.item(item, names),
            Writer::Perfetto(perfetto) => perfetto.item(item, names, stack),
        }
    }

    fn names_learnt(&mut self, names: Names<'_>) -> io::Result<()> {
        match self {
            Writer::Chrome(_) => Ok(()),
            Writer::Perfetto(perfetto) => perfetto.name_processes(names, false),
        }
    }

    fn finish(self, names: Names<'_>) -> io::Result<()> {
        match self {
            Writer::Chrome(chrome) => chrome.finish(names),
            Writer::Perfetto(perfetto) => (*perfetto).finish(names),
        }
    }
}

/// The thread, process and counter tracks written so far.
#[derive(Default)]
struct Tracks {
    threads: HashSet<u32>,
    /// Each process seen, and whether its name has been written.
    processes: HashMap<u32, bool>,
    /// Each word's counter track: its number and name, fixed when first written.
    counters: HashMap<WordKey, (u64, String)>,
}

/// Streams Chrome trace-event JSON (`{"traceEvents": [...]}`, times in µs), one event a line.
struct ChromeJson<W: Write> {
    out: W,
    first: bool,
    tracks: Tracks,
}

fn args_json(args: &[(&str, Arg)]) -> serde_json::Value {
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
}

impl<W: Write> ChromeJson<W> {
    fn new(mut out: W) -> io::Result<Self> {
        out.write_all(b"{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n")?;
        Ok(ChromeJson {
            out,
            first: true,
            tracks: Tracks::default(),
        })
    }

    fn separator(&mut self) -> io::Result<()> {
        if !self.first {
            self.out.write_all(b",\n")?;
        }
        self.first = false;
        Ok(())
    }

    fn event(&mut self, value: &serde_json::Value) -> io::Result<()> {
        self.separator()?;
        serde_json::to_writer(&mut self.out, value)?;
        Ok(())
    }

    fn thread(&mut self, pid: u32, tid: u32) -> io::Result<()> {
        self.tracks.processes.entry(pid).or_insert(false);
        if self.tracks.threads.insert(tid) {
            self.event(
                &json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                "args": {"name": format!("thread {tid}")}}),
            )?;
        }
        Ok(())
    }

    fn item(&mut self, item: &Item, names: Names<'_>) -> io::Result<()> {
        match item {
            Item::Slice(slice) => {
                self.thread(slice.pid, slice.tid)?;
                // Written field by field, not built as a `serde_json::Value`: this runs for
                // every record while tracing, and must keep up with the ring buffer.
                let (pid, tid) = (slice.pid, slice.tid);
                self.separator()?;
                write!(
                    self.out,
                    r#"{{"ph":"X","cat":"futex","name":{},"pid":{pid},"tid":{tid},"ts":{},"dur":{},"args":{{"#,
                    json!(names.slice(slice.kind, slice.word)),
                    us(slice.start_ns),
                    us(slice.end_ns - slice.start_ns),
                )?;
                for (i, (name, value)) in slice.args.iter().enumerate() {
                    let comma = if i == 0 { "" } else { "," };
                    match value {
                        Arg::Int(n) => write!(self.out, r#"{comma}"{name}":{n}"#)?,
                        Arg::Text(t) => write!(self.out, r#"{comma}"{name}":{}"#, json!(t))?,
                    }
                }
                self.out.write_all(b"}}")?;
                // Flow ends bind to the slice enclosing their timestamp: use the slice's middle.
                let middle = us(slice.start_ns + (slice.end_ns - slice.start_ns) / 2);
                for id in &slice.flows_out {
                    self.separator()?;
                    write!(
                        self.out,
                        r#"{{"ph":"s","cat":"wake","name":"wake","id":{id},"pid":{pid},"tid":{tid},"ts":{middle}}}"#
                    )?;
                }
                if let Some(id) = slice.flow_in {
                    self.separator()?;
                    write!(
                        self.out,
                        r#"{{"ph":"f","bp":"e","cat":"wake","name":"wake","id":{id},"pid":{pid},"tid":{tid},"ts":{middle}}}"#
                    )?;
                }
                Ok(())
            }
            Item::Instant(instant) => {
                self.thread(instant.pid, instant.tid)?;
                self.event(
                    &json!({"ph": "i", "s": "t", "cat": "futex", "name": instant.name,
                    "pid": instant.pid, "tid": instant.tid, "ts": us(instant.ts_ns),
                    "args": args_json(&instant.args)}),
                )
            }
            Item::Counter(value) => {
                let next = self.tracks.counters.len() as u64;
                let (_, name) = self
                    .tracks
                    .counters
                    .entry(value.word)
                    .or_insert_with(|| (next, format!("waiters {}", names.word(value.word))));
                let name = json!(name);
                self.separator()?;
                write!(
                    self.out,
                    r#"{{"ph":"C","name":{name},"pid":{},"ts":{},"args":{{"waiters":{}}}}}"#,
                    value.pid,
                    us(value.ts_ns),
                    value.waiters
                )
            }
        }
    }

    /// Names every process (metadata events may come anywhere) and closes the array.
    fn finish(mut self, names: Names<'_>) -> io::Result<()> {
        let mut pids: Vec<u32> = self.tracks.processes.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            let name = names
                .process(pid)
                .map_or_else(|| format!("pid {pid}"), str::to_owned);
            self.event(
                &json!({"ph": "M", "name": "process_name", "pid": pid, "tid": pid,
                "args": {"name": name}}),
            )?;
        }
        self.out.write_all(b"\n]}\n")?;
        self.out.flush()
    }
}

/// ns → µs, the Chrome trace-event time unit.
fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// Streams a Perfetto `Trace`: one `TracePacket` at a time on one sequence, whose incremental
/// state (cleared by the first packet) interns event and annotation names.
struct Perfetto<W: Write> {
    out: W,
    tracks: Tracks,
    /// Interned event names (`InternedData.event_names`) by name.
    event_names: HashMap<String, u64>,
    /// Interned debug annotation names (`InternedData.debug_annotation_names`).
    annotation_names: HashMap<&'static str, u64>,
    /// Interned callstacks (`InternedData.callstacks`) by stack id, and what they are made of.
    callstacks: HashMap<u32, u64>,
    frames: HashMap<(String, Option<String>), u64>,
    function_names: HashMap<String, u64>,
    source_paths: HashMap<String, u64>,
    /// The latest timestamp written, for descriptors that rename a process.
    last_ns: u64,
}

/// Field numbers of perfetto_trace.proto (protos/perfetto/trace/trace_packet.proto,
/// interned_data/interned_data.proto, track_event/*.proto).
mod field {
    pub(super) const TRACE_PACKET: u32 = 1;
    pub(super) const TIMESTAMP: u32 = 8;
    pub(super) const SEQUENCE_ID: u32 = 10;
    pub(super) const TRACK_EVENT: u32 = 11;
    pub(super) const INTERNED_DATA: u32 = 12;
    pub(super) const SEQUENCE_FLAGS: u32 = 13;
    pub(super) const TRACK_DESCRIPTOR: u32 = 60;
    /// `InternedData.event_names`, `debug_annotation_names`.
    pub(super) const EVENT_NAMES: u32 = 2;
    pub(super) const ANNOTATION_NAMES: u32 = 3;
    /// `InternedData.function_names`, `frames`, `callstacks`, `source_paths`.
    pub(super) const FUNCTION_NAMES: u32 = 5;
    pub(super) const FRAMES: u32 = 6;
    pub(super) const CALLSTACKS: u32 = 7;
    pub(super) const SOURCE_PATHS: u32 = 18;
    /// `InternedString.str`.
    pub(super) const STR: u32 = 2;
    /// `Frame` (profiling/profile_common.proto).
    pub(super) const FUNCTION_NAME_ID: u32 = 2;
    pub(super) const SOURCE_PATH_IID: u32 = 5;
    pub(super) const LINE_NUMBER: u32 = 6;
    /// `Callstack.frame_ids`.
    pub(super) const FRAME_IDS: u32 = 2;
    /// `EventName.iid`/`name`, `DebugAnnotationName.iid`/`name`.
    pub(super) const IID: u32 = 1;
    pub(super) const NAME: u32 = 2;
    /// `TrackEvent`.
    pub(super) const ANNOTATIONS: u32 = 4;
    pub(super) const TYPE: u32 = 9;
    pub(super) const NAME_IID: u32 = 10;
    pub(super) const TRACK_UUID: u32 = 11;
    pub(super) const COUNTER_VALUE: u32 = 30;
    pub(super) const FLOW_IDS: u32 = 47;
    pub(super) const TERMINATING_FLOW_IDS: u32 = 48;
    pub(super) const CALLSTACK_IID: u32 = 56;
    /// `DebugAnnotation`.
    pub(super) const ANNOTATION_NAME_IID: u32 = 1;
    pub(super) const INT_VALUE: u32 = 4;
    pub(super) const STRING_VALUE: u32 = 6;
}

const SEQUENCE: u64 = 1;
/// `TracePacket.SequenceFlags`.
const SEQ_INCREMENTAL_STATE_CLEARED: u64 = 1;
const SEQ_NEEDS_INCREMENTAL_STATE: u64 = 2;

fn process_uuid(pid: u32) -> u64 {
    1 << 40 | u64::from(pid)
}

fn thread_uuid(tid: u32) -> u64 {
    2 << 40 | u64::from(tid)
}

fn counter_uuid(index: u64) -> u64 {
    3 << 40 | index
}

impl<W: Write> Perfetto<W> {
    fn new(out: W) -> io::Result<Self> {
        let mut perfetto = Perfetto {
            out,
            tracks: Tracks::default(),
            event_names: HashMap::new(),
            annotation_names: HashMap::new(),
            callstacks: HashMap::new(),
            frames: HashMap::new(),
            function_names: HashMap::new(),
            source_paths: HashMap::new(),
            last_ns: 0,
        };
        let mut first = protobuf::Message::default();
        first
            .uint(field::SEQUENCE_FLAGS, SEQ_INCREMENTAL_STATE_CLEARED)
            .uint(field::SEQUENCE_ID, SEQUENCE);
        perfetto.packet(&first)?;
        Ok(perfetto)
    }

    fn packet(&mut self, packet: &protobuf::Message) -> io::Result<()> {
        let mut trace = protobuf::Message::default();
        trace.message(field::TRACE_PACKET, packet);
        self.out.write_all(trace.bytes())
    }

    fn descriptor(&mut self, track: &protobuf::Message, ts_ns: Option<u64>) -> io::Result<()> {
        let mut packet = protobuf::Message::default();
        if let Some(ts) = ts_ns {
            packet.uint(field::TIMESTAMP, ts);
        }
        packet
            .uint(field::SEQUENCE_ID, SEQUENCE)
            .message(field::TRACK_DESCRIPTOR, track);
        self.packet(&packet)
    }

    fn process(&mut self, pid: u32, name: Option<&str>, ts_ns: Option<u64>) -> io::Result<()> {
        let mut process = protobuf::Message::default();
        process.uint(1, u64::from(pid));
        if let Some(name) = name {
            process.text(6, name);
        }
        let mut track = protobuf::Message::default();
        track.uint(1, process_uuid(pid)).message(3, &process);
        self.descriptor(&track, ts_ns)
    }

    fn thread(&mut self, pid: u32, tid: u32, names: Names<'_>) -> io::Result<()> {
        if let std::collections::hash_map::Entry::Vacant(entry) = self.tracks.processes.entry(pid) {
            let name = names.process(pid);
            entry.insert(name.is_some());
            self.process(pid, name, None)?;
        }
        if !self.tracks.threads.insert(tid) {
            return Ok(());
        }
        let mut thread = protobuf::Message::default();
        thread
            .uint(1, u64::from(pid))
            .uint(2, u64::from(tid))
            .text(5, &format!("thread {tid}"));
        let mut track = protobuf::Message::default();
        track
            .uint(1, thread_uuid(tid))
            .uint(5, process_uuid(pid))
            .message(4, &thread);
        self.descriptor(&track, None)
    }

    /// Describes again, with its name, each process whose name was not known when it was
    /// first described (at the end: every such process, named `pid N` if still unknown).
    fn name_processes(&mut self, names: Names<'_>, end: bool) -> io::Result<()> {
        let unnamed: Vec<u32> = (self.tracks.processes.iter())
            .filter(|&(_, named)| !named)
            .map(|(&pid, _)| pid)
            .collect();
        for pid in unnamed {
            let name = match names.process(pid) {
                Some(name) => name.to_owned(),
                None if end => format!("pid {pid}"),
                None => continue,
            };
            self.tracks.processes.insert(pid, true);
            self.process(pid, Some(&name), Some(self.last_ns))?;
        }
        Ok(())
    }

    /// A TrackEvent packet; `interned` is the packet's new interned data, if any.
    fn event(
        &mut self,
        ts_ns: u64,
        event: &protobuf::Message,
        interned: &protobuf::Message,
    ) -> io::Result<()> {
        self.last_ns = self.last_ns.max(ts_ns);
        let mut packet = protobuf::Message::default();
        packet
            .uint(field::TIMESTAMP, ts_ns)
            .uint(field::SEQUENCE_ID, SEQUENCE)
            .uint(field::SEQUENCE_FLAGS, SEQ_NEEDS_INCREMENTAL_STATE);
        if !interned.bytes().is_empty() {
            packet.message(field::INTERNED_DATA, interned);
        }
        packet.message(field::TRACK_EVENT, event);
        self.packet(&packet)
    }

    /// The iid of an event name, interning it in `interned` the first time.
    fn event_name(&mut self, name: String, interned: &mut protobuf::Message) -> u64 {
        let next = self.event_names.len() as u64 + 1;
        if let Some(&iid) = self.event_names.get(&name) {
            return iid;
        }
        let mut entry = protobuf::Message::default();
        entry.uint(field::IID, next).text(field::NAME, &name);
        interned.message(field::EVENT_NAMES, &entry);
        self.event_names.insert(name, next);
        next
    }

    fn annotations(
        &mut self,
        event: &mut protobuf::Message,
        args: &[(&'static str, Arg)],
        interned: &mut protobuf::Message,
    ) {
        for (name, value) in args {
            let next = self.annotation_names.len() as u64 + 1;
            let iid = *self.annotation_names.entry(name).or_insert_with(|| {
                let mut entry = protobuf::Message::default();
                entry.uint(field::IID, next).text(field::NAME, name);
                interned.message(field::ANNOTATION_NAMES, &entry);
                next
            });
            let mut annotation = protobuf::Message::default();
            annotation.uint(field::ANNOTATION_NAME_IID, iid);
            match value {
                Arg::Int(n) => annotation.uint(field::INT_VALUE, *n as u64),
                Arg::Text(t) => annotation.text(field::STRING_VALUE, t),
            };
            event.message(field::ANNOTATIONS, &annotation);
        }
    }

    /// The iid of an interned string in `table`, interning it in `interned` (as field `field`)
    /// the first time.
    fn intern_string(
        table: &mut HashMap<String, u64>,
        text: &str,
        field: u32,
        interned: &mut protobuf::Message,
    ) -> u64 {
        if let Some(&iid) = table.get(text) {
            return iid;
        }
        let iid = table.len() as u64 + 1;
        let mut entry = protobuf::Message::default();
        entry.uint(field::IID, iid).text(field::STR, text);
        interned.message(field, &entry);
        table.insert(text.to_owned(), iid);
        iid
    }

    /// The iid of `stack`'s callstack, interning it (and its frames, names and files) in
    /// `interned` the first time.
    fn callstack(&mut self, stack: &CallStack, interned: &mut protobuf::Message) -> u64 {
        if let Some(&iid) = self.callstacks.get(&stack.id) {
            return iid;
        }
        let mut frame_ids = Vec::with_capacity(stack.frames.len());
        // Perfetto lists frames from the root; ours are leaf first.
        for frame in stack.frames.iter().rev() {
            let name = frame
                .function
                .clone()
                .unwrap_or_else(|| frame.module_offset.clone());
            let key = (name, frame.location.clone());
            if let Some(&iid) = self.frames.get(&key) {
                frame_ids.push(iid);
                continue;
            }
            let iid = self.frames.len() as u64 + 1;
            let name_iid = Self::intern_string(
                &mut self.function_names,
                &key.0,
                field::FUNCTION_NAMES,
                interned,
            );
            let mut message = protobuf::Message::default();
            message
                .uint(field::IID, iid)
                .uint(field::FUNCTION_NAME_ID, name_iid);
            if let Some(location) = &frame.location {
                let (file, line) = match location.rsplit_once(':') {
                    Some((file, line)) if line.parse::<u64>().is_ok() => {
                        (file, line.parse().unwrap_or_default())
                    }
                    _ => (location.as_str(), 0),
                };
                let path_iid = Self::intern_string(
                    &mut self.source_paths,
                    file,
                    field::SOURCE_PATHS,
                    interned,
                );
                message.uint(field::SOURCE_PATH_IID, path_iid);
                if line > 0 {
                    message.uint(field::LINE_NUMBER, line);
                }
            }
            interned.message(field::FRAMES, &message);
            self.frames.insert(key, iid);
            frame_ids.push(iid);
        }
        let iid = self.callstacks.len() as u64 + 1;
        let mut callstack = protobuf::Message::default();
        callstack.uint(field::IID, iid);
        for id in frame_ids {
            callstack.uint(field::FRAME_IDS, id);
        }
        interned.message(field::CALLSTACKS, &callstack);
        self.callstacks.insert(stack.id, iid);
        iid
    }

    fn item(&mut self, item: &Item, names: Names<'_>, stack: Option<&CallStack>) -> io::Result<()> {
        use protobuf::{Message, TrackEventType};
        let mut interned = Message::default();
        match item {
            Item::Slice(slice) => {
                self.thread(slice.pid, slice.tid, names)?;
                let track = thread_uuid(slice.tid);
                let name = self.event_name(names.slice(slice.kind, slice.word), &mut interned);
                let mut begin = Message::default();
                begin
                    .uint(field::TYPE, TrackEventType::SliceBegin as u64)
                    .uint(field::TRACK_UUID, track)
                    .uint(field::NAME_IID, name);
                self.annotations(&mut begin, &slice.args, &mut interned);
                for id in &slice.flows_out {
                    begin.fixed64(field::FLOW_IDS, *id);
                }
                if let Some(stack) = stack {
                    let iid = self.callstack(stack, &mut interned);
                    begin.uint(field::CALLSTACK_IID, iid);
                }
                self.event(slice.start_ns, &begin, &interned)?;
                let mut end = Message::default();
                end.uint(field::TYPE, TrackEventType::SliceEnd as u64)
                    .uint(field::TRACK_UUID, track);
                // The woken wait ends after its waker began: the flow arrives at the wait's end.
                if let Some(id) = slice.flow_in {
                    end.fixed64(field::TERMINATING_FLOW_IDS, id);
                }
                self.event(slice.end_ns, &end, &Message::default())
            }
            Item::Instant(instant) => {
                self.thread(instant.pid, instant.tid, names)?;
                let name = self.event_name(instant.name.to_owned(), &mut interned);
                let mut event = Message::default();
                event
                    .uint(field::TYPE, TrackEventType::Instant as u64)
                    .uint(field::TRACK_UUID, thread_uuid(instant.tid))
                    .uint(field::NAME_IID, name);
                self.annotations(&mut event, &instant.args, &mut interned);
                self.event(instant.ts_ns, &event, &interned)
            }
            Item::Counter(value) => {
                let uuid = match self.tracks.counters.get(&value.word) {
                    Some(&(index, _)) => counter_uuid(index),
                    None => self.counter_track(value.word, value.pid, names)?,
                };
                let mut event = Message::default();
                event
                    .uint(field::TYPE, TrackEventType::Counter as u64)
                    .uint(field::TRACK_UUID, uuid)
                    .uint(field::COUNTER_VALUE, value.waiters as u64);
                self.event(value.ts_ns, &event, &Message::default())
            }
        }
    }

    /// Describes the counter track of a word (under its process) and returns its uuid.
    fn counter_track(&mut self, word: WordKey, pid: u32, names: Names<'_>) -> io::Result<u64> {
        if let std::collections::hash_map::Entry::Vacant(entry) = self.tracks.processes.entry(pid) {
            let name = names.process(pid);
            entry.insert(name.is_some());
            self.process(pid, name, None)?;
        }
        let index = self.tracks.counters.len() as u64;
        let name = format!("waiters {}", names.word(word));
        let mut track = protobuf::Message::default();
        track
            .uint(1, counter_uuid(index))
            .uint(5, process_uuid(pid))
            .text(2, &name)
            .message(8, &protobuf::Message::default());
        self.descriptor(&track, None)?;
        self.tracks.counters.insert(word, (index, name));
        Ok(counter_uuid(index))
    }

    fn finish(mut self, names: Names<'_>) -> io::Result<()> {
        self.name_processes(names, true)?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::timeline::tests::sample_records;

    fn sample_names() -> (HashMap<WordKey, String>, HashMap<u32, String>) {
        let key = WordKey::process(1, 0x10);
        (
            HashMap::from([(key, "SEM".to_owned())]),
            HashMap::from([(1, "prog".to_owned())]),
        )
    }

    #[test]
    fn chrome_json_holds_slices_flows_instants_and_counters() {
        let (words, processes) = sample_names();
        let names = Names {
            words: &words,
            processes: &processes,
        };
        let mut out = Vec::new();
        write_records(&sample_records(), names, &mut out, Format::ChromeJson).unwrap();
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
        let metadata: Vec<_> = with("M")
            .iter()
            .map(|e| e["args"]["name"].clone())
            .collect();
        assert_eq!(metadata.len(), 4 + 1, "four threads and the process");
        assert!(metadata.contains(&json!("prog")));
    }

    #[test]
    fn perfetto_names_are_interned_once() {
        let (words, processes) = sample_names();
        let names = Names {
            words: &words,
            processes: &processes,
        };
        let mut out = Vec::new();
        write_records(&sample_records(), names, &mut out, Format::Perfetto).unwrap();
        let count = |needle: &[u8]| out.windows(needle.len()).filter(|w| *w == needle).count();
        // Four wait slices and one wake; each name is stated once.
        assert_eq!(count(b"wait SEM"), 1);
        assert_eq!(count(b"wake SEM"), 1);
        assert_eq!(count(b"result"), 1);
    }

    #[test]
    fn a_process_named_late_is_described_again_with_its_name() {
        let (words, processes) = sample_names();
        let unnamed = HashMap::new();
        let mut out = Vec::new();
        // No window: what is pushed is written at the next `write_ready`.
        let timeline = Timeline::new(0, crate::aggregate::timeline::MAX_HELD);
        let mut export = Export::with_timeline(&mut out, Format::Perfetto, timeline).unwrap();
        let early = Names {
            words: &words,
            processes: &unnamed,
        };
        for record in sample_records() {
            export.push(&record);
        }
        export.write_ready(early).unwrap();
        let late = Names {
            words: &words,
            processes: &processes,
        };
        export.finish(late).unwrap();
        let count = |needle: &[u8]| out.windows(needle.len()).filter(|w| *w == needle).count();
        assert_eq!(count(b"prog"), 1);
        // TracePacket.track_descriptor (field 60): the process is described first, unnamed.
        let descriptors: Vec<&[u8]> = perfetto_packets(&out)
            .filter(|packet| packet.windows(2).any(|w| w == [0xe2, 0x03]))
            .collect();
        let named = |packet: &[u8]| packet.windows(4).any(|w| w == b"prog");
        assert!(!named(descriptors[0]));
        assert!(named(descriptors.last().unwrap()), "named at the end");
    }

    /// The packets of a trace (each `Trace.packet` field's bytes).
    fn perfetto_packets(mut bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
        std::iter::from_fn(move || {
            let (&key, rest) = bytes.split_first()?;
            assert_eq!(key, 0x0a, "Trace.packet");
            let (mut len, mut used) = (0usize, 0);
            for (i, &b) in rest.iter().enumerate() {
                len |= usize::from(b & 0x7f) << (7 * i);
                used = i + 1;
                if b & 0x80 == 0 {
                    break;
                }
            }
            let packet = &rest[used..used + len];
            bytes = &rest[used + len..];
            Some(packet)
        })
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
