//! An independent reader for futexscope's Perfetto exports: the subset of Perfetto's
//! `perfetto_trace.proto` schema they use, written out as prost messages (field numbers from
//! protos/perfetto/trace/{trace,trace_packet}.proto and track_event/*.proto).

use std::collections::HashMap;

/// `Trace`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Trace {
    #[prost(message, repeated, tag = "1")]
    pub packet: Vec<TracePacket>,
}

/// `TracePacket`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TracePacket {
    #[prost(uint64, optional, tag = "8")]
    pub timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "10")]
    pub trusted_packet_sequence_id: Option<u32>,
    #[prost(message, optional, tag = "11")]
    pub track_event: Option<TrackEvent>,
    #[prost(message, optional, tag = "12")]
    pub interned_data: Option<InternedData>,
    #[prost(uint32, optional, tag = "13")]
    pub sequence_flags: Option<u32>,
    #[prost(message, optional, tag = "60")]
    pub track_descriptor: Option<TrackDescriptor>,
}

/// `InternedData`: names stated once on a sequence, then referred to by iid.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InternedData {
    #[prost(message, repeated, tag = "2")]
    pub event_names: Vec<InternedName>,
    #[prost(message, repeated, tag = "3")]
    pub debug_annotation_names: Vec<InternedName>,
    #[prost(message, repeated, tag = "5")]
    pub function_names: Vec<InternedString>,
    #[prost(message, repeated, tag = "6")]
    pub frames: Vec<Frame>,
    #[prost(message, repeated, tag = "7")]
    pub callstacks: Vec<Callstack>,
    #[prost(message, repeated, tag = "18")]
    pub source_paths: Vec<InternedString>,
}

/// `InternedString` (profiling/profile_common.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct InternedString {
    #[prost(uint64, optional, tag = "1")]
    pub iid: Option<u64>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub str: Option<Vec<u8>>,
}

/// `Frame` (profiling/profile_common.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Frame {
    #[prost(uint64, optional, tag = "1")]
    pub iid: Option<u64>,
    #[prost(uint64, optional, tag = "2")]
    pub function_name_id: Option<u64>,
    #[prost(uint64, optional, tag = "5")]
    pub source_path_iid: Option<u64>,
    #[prost(uint32, optional, tag = "6")]
    pub line_number: Option<u32>,
}

/// `Callstack` (profiling/profile_common.proto): frames from the root.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Callstack {
    #[prost(uint64, optional, tag = "1")]
    pub iid: Option<u64>,
    #[prost(uint64, repeated, tag = "2")]
    pub frame_ids: Vec<u64>,
}

/// `EventName` and `DebugAnnotationName` (the same fields).
#[derive(Clone, PartialEq, prost::Message)]
pub struct InternedName {
    #[prost(uint64, optional, tag = "1")]
    pub iid: Option<u64>,
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
}

/// `TrackDescriptor`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TrackDescriptor {
    #[prost(uint64, optional, tag = "1")]
    pub uuid: Option<u64>,
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    #[prost(message, optional, tag = "3")]
    pub process: Option<ProcessDescriptor>,
    #[prost(message, optional, tag = "4")]
    pub thread: Option<ThreadDescriptor>,
    #[prost(uint64, optional, tag = "5")]
    pub parent_uuid: Option<u64>,
    #[prost(message, optional, tag = "8")]
    pub counter: Option<CounterDescriptor>,
}

/// `ProcessDescriptor`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProcessDescriptor {
    #[prost(int32, optional, tag = "1")]
    pub pid: Option<i32>,
    #[prost(string, optional, tag = "6")]
    pub process_name: Option<String>,
}

/// `ThreadDescriptor`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ThreadDescriptor {
    #[prost(int32, optional, tag = "1")]
    pub pid: Option<i32>,
    #[prost(int32, optional, tag = "2")]
    pub tid: Option<i32>,
    #[prost(string, optional, tag = "5")]
    pub thread_name: Option<String>,
}

/// `CounterDescriptor` (empty: marks a counter track).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CounterDescriptor {}

/// `TrackEvent`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TrackEvent {
    #[prost(message, repeated, tag = "4")]
    pub debug_annotations: Vec<DebugAnnotation>,
    #[prost(int32, optional, tag = "9")]
    pub r#type: Option<i32>,
    #[prost(uint64, optional, tag = "10")]
    pub name_iid: Option<u64>,
    #[prost(uint64, optional, tag = "11")]
    pub track_uuid: Option<u64>,
    #[prost(string, optional, tag = "23")]
    pub name: Option<String>,
    #[prost(int64, optional, tag = "30")]
    pub counter_value: Option<i64>,
    #[prost(fixed64, repeated, packed = "false", tag = "47")]
    pub flow_ids: Vec<u64>,
    #[prost(fixed64, repeated, packed = "false", tag = "48")]
    pub terminating_flow_ids: Vec<u64>,
    #[prost(uint64, optional, tag = "56")]
    pub callstack_iid: Option<u64>,
}

/// `DebugAnnotation`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DebugAnnotation {
    #[prost(uint64, optional, tag = "1")]
    pub name_iid: Option<u64>,
    #[prost(int64, optional, tag = "4")]
    pub int_value: Option<i64>,
    #[prost(string, optional, tag = "6")]
    pub string_value: Option<String>,
    #[prost(string, optional, tag = "10")]
    pub name: Option<String>,
}

pub const SLICE_BEGIN: i32 = 1;
pub const SLICE_END: i32 = 2;
pub const INSTANT: i32 = 3;
pub const COUNTER: i32 = 4;

/// A slice rebuilt from its begin and end events.
#[derive(Clone, Debug)]
pub struct Slice {
    pub tid: i32,
    pub name: String,
    pub start: u64,
    pub end: u64,
    pub args: HashMap<String, String>,
    pub flows_out: Vec<u64>,
    pub flows_in: Vec<u64>,
    /// The call stack (interned callstack), root first: `function (file:line)` or `function`.
    pub stack: Vec<String>,
}

/// What a decoded trace holds.
#[derive(Debug, Default)]
pub struct Decoded {
    pub slices: Vec<Slice>,
    /// (tid, name, timestamp, args).
    pub instants: Vec<(i32, String, u64, HashMap<String, String>)>,
    /// Counter track name → (timestamp, value) in file order.
    pub counters: HashMap<String, Vec<(u64, i64)>>,
}

/// Decodes a trace and pairs slice begins with ends per thread track; panics on anything
/// malformed (an end without a begin, an event on an undeclared track).
pub fn decode(bytes: &[u8]) -> Decoded {
    let trace = <Trace as prost::Message>::decode(bytes).expect("a valid Perfetto Trace protobuf");
    let mut threads: HashMap<u64, i32> = HashMap::new();
    let mut counter_names: HashMap<u64, String> = HashMap::new();
    let mut open: HashMap<u64, Vec<Slice>> = HashMap::new();
    let mut decoded = Decoded::default();
    // Interned names of the one sequence (cleared by SEQ_INCREMENTAL_STATE_CLEARED).
    let mut event_names: HashMap<u64, String> = HashMap::new();
    let mut annotation_names: HashMap<u64, String> = HashMap::new();
    let mut function_names: HashMap<u64, String> = HashMap::new();
    let mut source_paths: HashMap<u64, String> = HashMap::new();
    let mut frames: HashMap<u64, String> = HashMap::new();
    let mut callstacks: HashMap<u64, Vec<String>> = HashMap::new();
    for packet in trace.packet {
        if packet.sequence_flags.unwrap_or(0) & 1 != 0 {
            event_names.clear();
            annotation_names.clear();
            function_names.clear();
            source_paths.clear();
            frames.clear();
            callstacks.clear();
        }
        if let Some(interned) = &packet.interned_data {
            for (names, entries) in [
                (&mut function_names, &interned.function_names),
                (&mut source_paths, &interned.source_paths),
            ] {
                for entry in entries {
                    let text = entry.str.clone().expect("interned strings have text");
                    names.insert(
                        entry.iid.expect("interned strings have iids"),
                        String::from_utf8(text).expect("UTF-8"),
                    );
                }
            }
            for frame in &interned.frames {
                let name = function_names
                    .get(&frame.function_name_id.expect("frames have names"))
                    .expect("function name interned before use");
                let text = match frame.source_path_iid {
                    Some(iid) => {
                        let path = source_paths.get(&iid).expect("path interned before use");
                        format!("{name} ({path}:{})", frame.line_number.unwrap_or(0))
                    }
                    None => name.clone(),
                };
                frames.insert(frame.iid.expect("frames have iids"), text);
            }
            for callstack in &interned.callstacks {
                let stack = callstack
                    .frame_ids
                    .iter()
                    .map(|id| frames.get(id).expect("frame interned before use").clone())
                    .collect();
                callstacks.insert(callstack.iid.expect("callstacks have iids"), stack);
            }
        }
        if let Some(interned) = &packet.interned_data {
            for (names, entries) in [
                (&mut event_names, &interned.event_names),
                (&mut annotation_names, &interned.debug_annotation_names),
            ] {
                for entry in entries {
                    names.insert(
                        entry.iid.expect("interned entries have iids"),
                        entry.name.clone().expect("interned entries have names"),
                    );
                }
            }
        }
        if let Some(track) = packet.track_descriptor {
            let uuid = track.uuid.expect("tracks have uuids");
            if let Some(thread) = track.thread {
                threads.insert(uuid, thread.tid.expect("threads have tids"));
            }
            if track.counter.is_some() {
                counter_names.insert(uuid, track.name.expect("counter tracks have names"));
            }
        }
        let Some(event) = packet.track_event else {
            continue;
        };
        let ts = packet.timestamp.expect("events have timestamps");
        let uuid = event.track_uuid.expect("events name their track");
        let args: HashMap<String, String> = event
            .debug_annotations
            .iter()
            .map(|a| {
                let value = a
                    .string_value
                    .clone()
                    .or(a.int_value.map(|n| n.to_string()))
                    .unwrap_or_default();
                let name = a.name.clone().or_else(|| {
                    let iid = a.name_iid?;
                    Some(
                        annotation_names
                            .get(&iid)
                            .expect("interned before use")
                            .clone(),
                    )
                });
                (name.unwrap_or_default(), value)
            })
            .collect();
        let name = event.name.clone().or_else(|| {
            let iid = event.name_iid?;
            Some(event_names.get(&iid).expect("interned before use").clone())
        });
        match event.r#type {
            Some(SLICE_BEGIN) => open.entry(uuid).or_default().push(Slice {
                tid: *threads
                    .get(&uuid)
                    .expect("slice on a declared thread track"),
                name: name.unwrap_or_default(),
                start: ts,
                end: ts,
                args,
                flows_out: event.flow_ids.clone(),
                flows_in: event.terminating_flow_ids.clone(),
                stack: event
                    .callstack_iid
                    .map(|iid| {
                        callstacks
                            .get(&iid)
                            .expect("callstack interned before use")
                            .clone()
                    })
                    .unwrap_or_default(),
            }),
            Some(SLICE_END) => {
                let mut slice = open
                    .get_mut(&uuid)
                    .and_then(Vec::pop)
                    .expect("slice end after its begin");
                slice.end = ts;
                slice.flows_in.extend(&event.terminating_flow_ids);
                slice.flows_out.extend(&event.flow_ids);
                decoded.slices.push(slice);
            }
            Some(INSTANT) => decoded.instants.push((
                *threads
                    .get(&uuid)
                    .expect("instant on a declared thread track"),
                name.unwrap_or_default(),
                ts,
                args,
            )),
            Some(COUNTER) => decoded
                .counters
                .entry(
                    counter_names
                        .get(&uuid)
                        .expect("counter on a declared counter track")
                        .clone(),
                )
                .or_default()
                .push((ts, event.counter_value.expect("counter events have values"))),
            other => panic!("unexpected track event type {other:?}"),
        }
    }
    assert!(open.values().all(Vec::is_empty), "every slice ends");
    decoded
}
