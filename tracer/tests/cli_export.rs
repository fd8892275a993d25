//! The export files, read back by independent readers: Perfetto protobuf with a schema written
//! here (prost), Chrome JSON with serde_json.

mod perfetto;

use std::collections::HashMap;

use futexscope::export::Recorder;
use futexscope_probes_common::{
    event::{Event, EventKind},
    maps::FutexKey,
};

fn event(kind: EventKind, tid: u32, start_ns: u64, ts_ns: u64, ret: i64) -> Event {
    Event {
        kind: kind as u32,
        tid,
        tgid: 100,
        cpu: 0,
        ts_ns,
        start_ns,
        uaddr: 0x5000,
        uaddr2: 0,
        op: 0,
        syscall: 202,
        ret,
        deadline_ns: if ret == -i64::from(libc::ETIMEDOUT) {
            ts_ns - 700
        } else {
            0
        },
        args: [0; 6],
    }
}

/// Two waiters woken by one wake of 2, then a timeout.
fn recorder() -> Recorder {
    let mut recorder = Recorder::default();
    recorder.push(&event(EventKind::Wait, 101, 1_000, 9_000, 0));
    recorder.push(&event(EventKind::Wait, 102, 2_000, 9_500, 0));
    recorder.push(&event(EventKind::Wake, 103, 8_000, 8_800, 2));
    recorder.push(&event(
        EventKind::Wait,
        101,
        10_000,
        20_000,
        -i64::from(libc::ETIMEDOUT),
    ));
    recorder
}

#[test]
fn perfetto_protobuf_holds_the_slices_flows_instants_and_counter() {
    let labels = HashMap::from([(
        FutexKey {
            tgid: 100,
            pad: 0,
            uaddr: 0x5000,
        },
        "QUEUE".to_owned(),
    )]);
    let timeline = recorder().timeline(&labels, &HashMap::from([(100, "prog".to_owned())]), true);
    let mut bytes = Vec::new();
    timeline.write_perfetto(&mut bytes).unwrap();
    let decoded = perfetto::decode(&bytes);

    let waits: Vec<_> = decoded
        .slices
        .iter()
        .filter(|s| s.name == "wait QUEUE")
        .collect();
    assert_eq!(waits.len(), 3);
    let wake = decoded
        .slices
        .iter()
        .find(|s| s.name == "wake QUEUE")
        .expect("wake slice");
    assert_eq!((wake.tid, wake.start, wake.end), (103, 8_000, 8_800));
    assert_eq!(wake.args["woken"], "2");
    // Both woken waits are flow targets of the wake.
    let mut targets: Vec<i32> = waits
        .iter()
        .filter(|w| w.flows_in.iter().any(|id| wake.flows_out.contains(id)))
        .map(|w| w.tid)
        .collect();
    targets.sort_unstable();
    assert_eq!(targets, [101, 102]);
    assert_eq!(wake.flows_out.len(), 2);
    let timeout = decoded
        .instants
        .iter()
        .find(|i| i.1 == "timeout")
        .expect("timeout instant");
    assert_eq!((timeout.0, timeout.2), (101, 20_000));
    assert_eq!(timeout.3["drift_ns"], "700");
    let mut counter = decoded.counters["waiters QUEUE"].clone();
    counter.sort_unstable();
    assert_eq!(
        counter,
        [
            (1_000, 1),
            (2_000, 2),
            (9_000, 1),
            (9_500, 0),
            (10_000, 1),
            (20_000, 0)
        ]
    );
}

#[test]
fn chrome_json_flows_pair_up_and_bind_inside_their_slices() {
    let timeline = recorder().timeline(&HashMap::new(), &HashMap::new(), true);
    let mut bytes = Vec::new();
    timeline.write_chrome_json(&mut bytes).unwrap();
    let trace: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    let slices: Vec<_> = events.iter().filter(|e| e["ph"] == "X").collect();
    for flow in events.iter().filter(|e| e["ph"] == "s" || e["ph"] == "f") {
        let ts = flow["ts"].as_f64().unwrap();
        let enclosing = slices.iter().find(|s| {
            s["tid"] == flow["tid"]
                && s["ts"].as_f64().unwrap() <= ts
                && ts <= s["ts"].as_f64().unwrap() + s["dur"].as_f64().unwrap()
        });
        assert!(
            enclosing.is_some(),
            "flow event inside a slice of its thread: {flow}"
        );
    }
    let starts = events.iter().filter(|e| e["ph"] == "s").count();
    let ends = events.iter().filter(|e| e["ph"] == "f").count();
    assert_eq!((starts, ends), (2, 2));
}
