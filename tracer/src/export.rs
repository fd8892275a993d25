//! Exports of the event records: raw records as JSON lines (`--events`), and a trace that
//! ui.perfetto.dev opens (`--export`, Chrome trace-event JSON): one track per thread, each wait
//! and wake call a slice, a flow arrow from each wake to the waits it woke, timeouts and
//! spurious wakeups as instants, and the waiter count of each futex word as a counter track.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io::{self, Write},
};

use futexscope_probes_common::{
    event::{Event, EventKind},
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
    /// Marker `wait_begin` records name the semaphore of a word: word key → semaphore address.
    semaphores: HashMap<FutexKey, u64>,
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
        };
        match EventKind::from_u32(event.kind) {
            Some(EventKind::Wait) => self.waits.push(call),
            Some(EventKind::Wake) => self.wakes.push(call),
            Some(EventKind::Marker) if Marker::from_id(event.op) == Some(Marker::WaitBegin) => {
                let word = FutexKey {
                    tgid: event.tgid,
                    pad: 0,
                    uaddr: event.args[1],
                };
                self.semaphores.insert(word, event.args[0]);
            }
            _ => {}
        }
    }

    /// The semaphore address the markers named for each word seen in a `wait_begin`.
    pub fn semaphores(&self) -> &HashMap<FutexKey, u64> {
        &self.semaphores
    }

    /// Writes the trace as Chrome trace-event JSON. `labels` names futex words; `complete`
    /// says no record was dropped (only then is a woken wait with no matching wake marked as
    /// a wakeup with no waker).
    pub fn write_chrome_json(
        &self,
        out: &mut impl Write,
        labels: &HashMap<FutexKey, String>,
        process_names: &HashMap<u32, String>,
        complete: bool,
    ) -> io::Result<()> {
        let name_of = |key: FutexKey| match labels.get(&key) {
            Some(label) if !label.is_empty() => label.clone(),
            _ => format!("{:#x}", key.uaddr),
        };
        let mut writer = JsonArrayWriter::new(out)?;
        for (pid, name) in process_names {
            writer.event(
                &json!({"ph": "M", "name": "process_name", "pid": pid, "tid": pid,
                "args": {"name": name}}),
            )?;
        }
        let mut threads: Vec<(u32, u32)> = self
            .waits
            .iter()
            .chain(&self.wakes)
            .map(|c| (c.tgid, c.tid))
            .collect();
        threads.sort_unstable();
        threads.dedup();
        for (pid, tid) in threads {
            writer.event(
                &json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                "args": {"name": format!("thread {tid}")}}),
            )?;
        }
        for wait in &self.waits {
            let name = name_of(wait.key());
            writer.event(
                &json!({"ph": "X", "cat": "futex", "name": format!("wait {name}"),
                "pid": wait.tgid, "tid": wait.tid, "ts": us(wait.start_ns),
                "dur": us(wait.end_ns.saturating_sub(wait.start_ns)),
                "args": {"uaddr": format!("{:#x}", wait.uaddr), "result": wait_result(wait.ret),
                    "deadline_ns": wait.deadline_ns}}),
            )?;
            let instant = match wait.ret {
                ETIMEDOUT => Some(("timeout", json!({"drift_ns": drift_ns(wait)}))),
                EINTR => Some(("spurious: interrupted (EINTR)", json!({}))),
                EAGAIN => Some(("spurious: value changed (EAGAIN)", json!({}))),
                _ => None,
            };
            if let Some((label, args)) = instant {
                writer.event(&json!({"ph": "i", "s": "t", "cat": "futex", "name": label,
                    "pid": wait.tgid, "tid": wait.tid, "ts": us(wait.end_ns), "args": args}))?;
            }
        }
        for wake in &self.wakes {
            let name = name_of(wake.key());
            writer.event(
                &json!({"ph": "X", "cat": "futex", "name": format!("wake {name}"),
                "pid": wake.tgid, "tid": wake.tid, "ts": us(wake.start_ns),
                "dur": us(wake.end_ns.saturating_sub(wake.start_ns)),
                "args": {"uaddr": format!("{:#x}", wake.uaddr), "woken": wake.ret}}),
            )?;
        }
        let flows = match_wakes(&self.waits, &self.wakes);
        let mut woken_by = vec![false; self.waits.len()];
        for (id, flow) in flows.iter().enumerate() {
            let (wake, wait) = (&self.wakes[flow.wake], &self.waits[flow.wait]);
            woken_by[flow.wait] = true;
            // Flow ends bind to the slice enclosing their timestamp: use each slice's middle.
            writer.event(&json!({"ph": "s", "cat": "wake", "name": "wake", "id": id,
                "pid": wake.tgid, "tid": wake.tid, "ts": us(midpoint(wake))}))?;
            writer.event(
                &json!({"ph": "f", "bp": "e", "cat": "wake", "name": "wake", "id": id,
                "pid": wait.tgid, "tid": wait.tid, "ts": us(midpoint(wait))}),
            )?;
        }
        if complete {
            for (wait, _) in self
                .waits
                .iter()
                .zip(&woken_by)
                .filter(|(w, by)| w.ret == 0 && !**by)
            {
                writer.event(&json!({"ph": "i", "s": "t", "cat": "futex",
                    "name": "spurious: woken with no wake", "pid": wait.tgid, "tid": wait.tid,
                    "ts": us(wait.end_ns)}))?;
            }
        }
        for ((tgid, uaddr), changes) in waiter_counts(&self.waits) {
            let name = format!(
                "waiters {}",
                name_of(FutexKey {
                    tgid,
                    pad: 0,
                    uaddr
                })
            );
            for (ts, count) in changes {
                writer.event(&json!({"ph": "C", "name": name, "pid": tgid, "ts": us(ts),
                    "args": {"waiters": count}}))?;
            }
        }
        writer.finish()
    }
}

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

fn midpoint(call: &Call) -> u64 {
    call.start_ns + call.end_ns.saturating_sub(call.start_ns) / 2
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
            syscall: 202,
            ret,
            deadline_ns: if ret == ETIMEDOUT { ts_ns - 500 } else { 0 },
            args: [0; 6],
        }
    }

    #[test]
    fn chrome_json_holds_slices_flows_instants_and_counters() {
        let mut recorder = Recorder::default();
        recorder.push(&event(EventKind::Wait, 2, 0x10, 1_000, 9_000, 0));
        recorder.push(&event(EventKind::Wake, 3, 0x10, 8_000, 8_500, 1));
        recorder.push(&event(EventKind::Wait, 2, 0x10, 10_000, 20_000, ETIMEDOUT));
        recorder.push(&event(EventKind::Wait, 4, 0x10, 30_000, 31_000, 0));
        let labels = HashMap::from([(
            FutexKey {
                tgid: 1,
                pad: 0,
                uaddr: 0x10,
            },
            "SEM".to_owned(),
        )]);
        let mut out = Vec::new();
        recorder
            .write_chrome_json(
                &mut out,
                &labels,
                &HashMap::from([(1, "prog".into())]),
                true,
            )
            .unwrap();
        let trace: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let events = trace["traceEvents"].as_array().unwrap();
        let with = |ph: &str| events.iter().filter(|e| e["ph"] == ph).collect::<Vec<_>>();
        assert_eq!(with("X").len(), 4);
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
        assert!(
            instants
                .iter()
                .any(|e| e["name"] == "spurious: woken with no wake" && e["tid"] == 4)
        );
        let counters = with("C");
        assert_eq!(counters.first().unwrap()["args"]["waiters"], 1);
        assert!(counters.iter().all(|c| c["name"] == "waiters SEM"));
        assert_eq!(counters.last().unwrap()["args"]["waiters"], 0);
    }

    #[test]
    fn marker_wait_begin_names_the_semaphore_of_a_word() {
        let mut recorder = Recorder::default();
        let mut marker = event(EventKind::Marker, 2, 0, 0, 5, 0);
        marker.op = Marker::WaitBegin as u32;
        marker.args[0] = 0x1000;
        marker.args[1] = 0x1004;
        recorder.push(&marker);
        assert_eq!(
            recorder.semaphores()[&FutexKey {
                tgid: 1,
                pad: 0,
                uaddr: 0x1004
            }],
            0x1000
        );
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
