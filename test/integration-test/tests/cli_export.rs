//! The export files, read back by independent readers: Perfetto protobuf with a schema written
//! here (prost), Chrome JSON with serde_json.

mod common;
mod perfetto;

use std::collections::HashMap;

use futexscope::{
    decode::{Record, WordKey},
    output::export,
};
use futexscope_probes_common::event::{Event, EventKind};

fn event(kind: EventKind, tid: u32, start_ns: u64, ts_ns: u64, ret: i64) -> Record {
    Record::decode(&Event {
        kind: kind as u32,
        tid,
        tgid: 100,
        cpu: 0,
        ts_ns,
        start_ns,
        uaddr: 0x5000,
        uaddr2: 0,
        op: 0,
        syscall: futexscope_probes_common::abi::syscalls::FUTEX,
        ret,
        deadline_ns: if ret == -i64::from(libc::ETIMEDOUT) {
            ts_ns - 700
        } else {
            0
        },
        args: [0; 6],
        spurious: 0,
        clock: futexscope_probes_common::event::NO_CLOCK,
        ..Event::ZERO
    })
    .expect("a known kind")
}

/// Two waiters woken by one wake of 2, then a timeout.
fn records() -> Vec<Record> {
    vec![
        event(EventKind::Wait, 101, 1_000, 9_000, 0),
        event(EventKind::Wait, 102, 2_000, 9_500, 0),
        event(EventKind::Wake, 103, 8_000, 8_800, 2),
        event(
            EventKind::Wait,
            101,
            10_000,
            20_000,
            -i64::from(libc::ETIMEDOUT),
        ),
    ]
}

/// `records()` exported in `format`, names from `labels` and `processes`.
fn export_records(
    labels: &HashMap<WordKey, String>,
    processes: &HashMap<u32, String>,
    format: export::Format,
) -> Vec<u8> {
    let names = export::Names {
        words: labels,
        processes,
    };
    let mut bytes = Vec::new();
    export::write_records(&records(), names, &mut bytes, format).unwrap();
    bytes
}

#[test]
fn perfetto_protobuf_holds_the_slices_flows_instants_and_counter() {
    let labels = HashMap::from([(WordKey::process(100, 0x5000), "QUEUE".to_owned())]);
    let processes = HashMap::from([(100, "prog".to_owned())]);
    let bytes = export_records(&labels, &processes, export::Format::Perfetto);
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
    let bytes = export_records(&HashMap::new(), &HashMap::new(), export::Format::ChromeJson);
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

/// Runs the std `Mutex`/`Condvar` workload under `futexscope run --export FILE`.
fn export_real_run(file_name: &str) -> (Vec<u8>, String) {
    let path = std::env::temp_dir().join(format!(
        "futexscope-export-{}-{file_name}",
        std::process::id()
    ));
    let output = std::process::Command::new(common::futexscope_exe())
        .args(["run", "--view", "quiet", "--export"])
        .arg(&path)
        .args([
            "--",
            env!("CARGO_BIN_EXE_futexscope-workload"),
            "std-sync",
            "--timeouts",
            "5",
            "--parked",
            "3",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    (bytes, stdout)
}

#[test]
#[ignore = "needs root"]
fn exported_protobuf_of_a_real_run_holds_the_waits_wake_flows_and_timeouts() {
    common::require_ebpf();
    let (bytes, _) = export_real_run("real.pftrace");
    let decoded = perfetto::decode(&bytes);
    assert!(
        decoded.slices.iter().all(|s| s.stack.is_empty()),
        "no call stacks without --stacks"
    );
    let parked: Vec<_> = decoded
        .slices
        .iter()
        .filter(|s| s.name.ends_with("PARK_CONDVAR") && s.name.starts_with("wait "))
        .collect();
    assert_eq!(parked.len(), 3, "one wait per parked thread");
    let wake = decoded
        .slices
        .iter()
        .find(|s| {
            s.name.starts_with("wake ")
                && s.name.ends_with("PARK_CONDVAR")
                && s.args["woken"] == "3"
        })
        .expect("the notify_all wake that woke all three");
    for wait in &parked {
        assert!(
            wait.flows_in.iter().any(|id| wake.flows_out.contains(id)),
            "flow from the wake to {wait:?}"
        );
    }
    let timeouts = decoded.instants.iter().filter(|i| i.1 == "timeout").count();
    assert_eq!(timeouts, 5);
    let waiters = decoded
        .counters
        .iter()
        .find(|(name, _)| name.ends_with("PARK_CONDVAR"))
        .expect("counter track")
        .1;
    assert_eq!(waiters.iter().map(|&(_, n)| n).max(), Some(3));
}

#[test]
#[ignore = "needs root"]
fn exported_chrome_json_of_a_real_run_reads_in_python() {
    common::require_ebpf();
    let (bytes, _) = export_real_run("real.json");
    let script = r#"
import json, sys
trace = json.load(sys.stdin)
events = trace["traceEvents"]
slices = [e for e in events if e["ph"] == "X"]
parked = [e for e in slices if e["name"].startswith("wait ") and e["name"].endswith("PARK_CONDVAR")]
assert len(parked) == 3, parked
starts = {e["id"]: e for e in events if e["ph"] == "s"}
ends = {e["id"]: e for e in events if e["ph"] == "f"}
assert starts.keys() == ends.keys(), "every flow has both ends"
woken_tids = {ends[i]["tid"] for i in ends}
assert {e["tid"] for e in parked} <= woken_tids, "each parked thread is a flow target"
assert sum(1 for e in events if e["ph"] == "i" and e["name"] == "timeout") == 5
print("ok", len(events))
"#;
    let mut python = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(python.stdin.as_mut().unwrap(), &bytes).unwrap();
    let output = python.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
#[ignore = "needs root"]
fn events_file_holds_one_json_line_per_record() {
    common::require_ebpf();
    let dir = std::env::temp_dir();
    let events = dir.join(format!("futexscope-events-{}.jsonl", std::process::id()));
    let json = dir.join(format!("futexscope-events-{}.json", std::process::id()));
    let output = std::process::Command::new(common::futexscope_exe())
        .args(["run", "--view", "quiet", "--events"])
        .arg(&events)
        .arg("--json")
        .arg(&json)
        .args([
            "--",
            env!("CARGO_BIN_EXE_futexscope-workload"),
            "std-sync",
            "--timeouts",
            "4",
            "--parked",
            "2",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let lines = std::fs::read_to_string(&events).unwrap();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    std::fs::remove_file(&events).unwrap();
    std::fs::remove_file(&json).unwrap();
    let records: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(
        records.len() as u64,
        summary["events"].as_u64().unwrap(),
        "every record received is written"
    );
    let timed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("std-sync: timed condvar "))
        .and_then(|rest| rest.split(':').next())
        .expect("the workload names its condvar")
        .to_owned();
    let timed_out = records
        .iter()
        .filter(|r| {
            r["kind"] == "wait" && r["uaddr"] == timed && r["ret"] == -i64::from(libc::ETIMEDOUT)
        })
        .count();
    assert_eq!(timed_out, 4, "one timed-out wait record per timeout");
}

#[test]
#[ignore = "needs root"]
fn exported_processes_are_named_by_their_command_lines() {
    common::require_ebpf();
    let path = std::env::temp_dir().join(format!(
        "futexscope-export-{}-names.json",
        std::process::id()
    ));
    let child = format!(
        "{} std-sync --timeouts 150 --parked 3",
        env!("CARGO_BIN_EXE_futexscope-workload")
    );
    // `; true` keeps the shell from exec-ing the workload: it runs as a child. The workload
    // lives over 500 ms, so interval ticks see it alive even on a loaded machine.
    let script = format!("{child}; true");
    let output = std::process::Command::new(common::futexscope_exe())
        .args(["run", "--view", "quiet", "--interval", "50ms", "--export"])
        .arg(&path)
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    std::fs::remove_file(&path).unwrap();
    let names: Vec<&str> = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "process_name")
        .filter_map(|e| e["args"]["name"].as_str())
        .collect();
    assert!(
        names.contains(&child.as_str()),
        "the child's track is named by its command line: {names:?}"
    );
}
