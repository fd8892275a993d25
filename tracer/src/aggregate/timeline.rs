//! The timeline of a trace: every wait and wake call on its thread, each woken wait paired with
//! the wake call that ended it, timeouts and spurious wakeups as instants, and the waiter count
//! of each word over time. The exports (`crate::output::export`) draw it.

use std::collections::{BTreeMap, HashMap, VecDeque};

use futexscope_probes_common::event::spurious;

use crate::decode::{Record, WordKey};

const EAGAIN: i64 = -(libc::EAGAIN as i64);
const EINTR: i64 = -(libc::EINTR as i64);
const ETIMEDOUT: i64 = -(libc::ETIMEDOUT as i64);

/// A wait or wake call, as kept for export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// Process id.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// Futex word: its address in process `tgid`.
    pub uaddr: u64,
    /// The word's key: waits and wakes pair on it (a shared futex's key is the same in every
    /// process).
    pub word: WordKey,
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

impl Call {
    fn key(&self) -> WordKey {
        self.word
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
    /// Keeps what the timeline needs of one record.
    pub fn push(&mut self, record: &Record) {
        let call = |call: &crate::decode::Call| Call {
            tgid: call.thread.pid,
            tid: call.thread.tid,
            uaddr: call.uaddr,
            word: call.word,
            start_ns: call.start_ns,
            end_ns: call.end_ns,
            ret: call.ret,
            deadline_ns: 0,
            spurious: 0,
        };
        match record {
            Record::Wait(wait) => self.waits.push(Call {
                deadline_ns: wait.deadline.map_or(0, |d| d.monotonic_ns),
                spurious: wait.spurious.0,
                ..call(&wait.call)
            }),
            Record::Wake(wake) => self.wakes.push(call(&wake.call)),
            Record::DiedWaiting(died) => self.died_waiting.push(Call {
                deadline_ns: died.deadline.map_or(0, |d| d.monotonic_ns),
                ..call(&died.call)
            }),
            Record::Marker(_) | Record::Fork(_) => {}
        }
    }

    /// The timeline of everything recorded. `labels` names futex words; `process_names`
    /// names processes.
    pub fn timeline(
        &self,
        labels: &HashMap<WordKey, String>,
        process_names: &HashMap<u32, String>,
    ) -> Timeline {
        let name_of = |key: WordKey| match labels.get(&key) {
            Some(label) if !label.is_empty() => label.clone(),
            _ => key.describe(),
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
            .map(|(key, values)| Counter {
                // A shared futex's counter goes with the first process that waited on it.
                pid: key
                    .pid()
                    .or_else(|| self.waits.iter().find(|w| w.word == key).map(|w| w.tgid))
                    .unwrap_or_default(),
                name: format!("waiters {}", name_of(key)),
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
    let mut woken: BTreeMap<WordKey, Vec<usize>> = BTreeMap::new();
    for (index, wait) in waits.iter().enumerate().filter(|(_, w)| w.ret == 0) {
        woken.entry(wait.key()).or_default().push(index);
    }
    let mut by_word: HashMap<WordKey, Vec<usize>> = HashMap::new();
    for (index, wake) in wakes.iter().enumerate().filter(|(_, w)| w.ret > 0) {
        by_word.entry(wake.key()).or_default().push(index);
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
pub fn waiter_counts(waits: &[Call]) -> BTreeMap<WordKey, Vec<(u64, i64)>> {
    let mut changes: BTreeMap<WordKey, Vec<(u64, i64)>> = BTreeMap::new();
    for wait in waits {
        let entry = changes.entry(wait.key()).or_default();
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use futexscope_probes_common::event::{Event, EventKind};

    fn call(tid: u32, uaddr: u64, start_ns: u64, end_ns: u64, ret: i64) -> Call {
        Call {
            tgid: 1,
            tid,
            uaddr,
            word: WordKey::process(1, uaddr),
            start_ns,
            end_ns,
            ret,
            deadline_ns: 0,
            spurious: 0,
        }
    }

    #[test]
    fn a_wake_in_one_process_is_linked_to_the_wait_it_ended_in_another() {
        let shared = WordKey::Shared {
            dev: 5,
            ino: 9,
            offset: 0,
        };
        let in_process = |tgid, uaddr, call: Call| Call {
            tgid,
            uaddr,
            word: shared,
            ..call
        };
        let waits = [in_process(10, 0x7000, call(10, 0, 0, 120, 0))];
        let wakes = [in_process(20, 0x9000, call(20, 0, 100, 110, 1))];
        assert_eq!(match_wakes(&waits, &wakes), [Flow { wake: 0, wait: 0 }]);
        // The same addresses in two processes without a shared key are two words.
        let private_waits = [call(2, 0x10, 0, 120, 0)];
        let other_process = [Call {
            tgid: 2,
            word: WordKey::process(2, 0x10),
            ..call(3, 0x10, 100, 110, 1)
        }];
        assert_eq!(match_wakes(&private_waits, &other_process), []);
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
        let key = WordKey::process(1, 0x10);
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
            ..Event::ZERO
        }
    }

    fn decoded(event: Event) -> Record {
        Record::decode(&event).expect("a known kind")
    }

    pub(crate) fn sample_timeline() -> Timeline {
        let mut recorder = Recorder::default();
        recorder.push(&decoded(event(EventKind::Wait, 2, 0x10, 1_000, 9_000, 0)));
        recorder.push(&decoded(event(EventKind::Wake, 3, 0x10, 8_000, 8_500, 1)));
        recorder.push(&decoded(event(
            EventKind::Wait,
            2,
            0x10,
            10_000,
            20_000,
            ETIMEDOUT,
        )));
        let mut no_waker = event(EventKind::Wait, 4, 0x10, 30_000, 31_000, 0);
        no_waker.spurious = spurious::NO_WAKER;
        recorder.push(&decoded(no_waker));
        let mut died = event(EventKind::DiedWaiting, 5, 0x10, 32_000, 40_000, 0);
        died.deadline_ns = 0;
        recorder.push(&decoded(died));
        let labels = HashMap::from([(WordKey::process(1, 0x10), "SEM".to_owned())]);
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
}
