//! The timeline of a trace, as a stream: records are pushed as they arrive and come out, a
//! window later, as [`Item`]s the exports (`crate::output::export`) write at once: every wait
//! and wake call on its thread, each woken wait paired with the wake call that ended it,
//! timeouts and spurious wakeups as instants, and the waiter count of each word over time.
//!
//! # The window
//!
//! Records arrive in about the order their calls returned, not sorted, and a wake call often
//! returns after the waits it woke. So a record is held until the newest return time seen is
//! [`WINDOW_NS`] past its own (the *horizon* passes it), then written; at most [`MAX_HELD`]
//! records are held, and beyond that the oldest go early. What the window holds:
//!
//! - every call record, for at most the window (a window of records, whatever the length of
//!   the capture);
//! - a wake call that still has woken threads unpaired when the horizon passes it, one window
//!   more, for waits that return late;
//! - waiter-count changes, until the horizon passes them, so that each word's count is written
//!   in time order.
//!
//! What falls out of the window is counted in [`WindowStats`], never dropped silently: records
//! that arrive after the horizon passed their return (written, but their wakes may be gone),
//! waits longer than the window (the waiter count includes them from the horizon on), and woken
//! threads of wake calls that no wait was paired with.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap},
};

use futexscope_probes_common::event::spurious;

use crate::decode::{Record, WordKey};

const EAGAIN: i64 = -(libc::EAGAIN as i64);
const EINTR: i64 = -(libc::EINTR as i64);
const ETIMEDOUT: i64 = -(libc::ETIMEDOUT as i64);

/// How long a record is held, in trace time (ns): records are written once a record that
/// returned this much later has arrived. One second covers the ring buffer's reordering (a
/// drain every 100 ms) and a wake call that returns after the waits it woke, and gives the
/// labels (refreshed every `--interval`, 1 s by default) time to name the words.
pub const WINDOW_NS: u64 = 1_000_000_000;

/// At most this many records are held (about 16 MiB with their waiter-count changes); beyond
/// it the oldest are written early, so at more than this many records a second the window is
/// shorter than [`WINDOW_NS`] (still far longer than the ring buffer reorders records).
pub const MAX_HELD: usize = 1 << 17;

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

    fn of(call: &crate::decode::Call) -> Call {
        Call {
            tgid: call.thread.pid,
            tid: call.thread.tid,
            uaddr: call.uaddr,
            word: call.word,
            start_ns: call.start_ns,
            end_ns: call.end_ns,
            ret: call.ret,
            deadline_ns: 0,
            spurious: 0,
        }
    }
}

/// Which call a slice shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CallKind {
    /// A wait call.
    Wait,
    /// A wake call.
    Wake,
    /// A wait cut short by its thread's exit.
    DiedWaiting,
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
    /// The call.
    pub kind: CallKind,
    /// Its futex word (the slice is named `wait LABEL` or `wake LABEL` after it).
    pub word: WordKey,
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
    /// The record's arrival number (0 for the first record pushed).
    pub seq: u64,
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

/// The waiter count of a futex word after a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterValue {
    /// The word (its counter track is named `waiters LABEL`).
    pub word: WordKey,
    /// The process whose track shows it: the word's, or for a shared futex the first process
    /// seen waiting on it.
    pub pid: u32,
    /// When, ns.
    pub ts_ns: u64,
    /// Threads waiting on it from then on.
    pub waiters: i64,
}

/// Something the exports draw. Slices and instants come out in about time order; each word's
/// counter values come out in time order.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// A wait or wake call.
    Slice(Slice),
    /// A timeout, spurious wakeup or exit while waiting.
    Instant(Instant),
    /// A waiter count.
    Counter(CounterValue),
}

/// What fell out of the window (see the module docs), for the user to be told.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowStats {
    /// Records that arrived after the horizon had passed their return time.
    pub late_records: u64,
    /// Records written before the window passed them because [`MAX_HELD`] were held.
    pub early_records: u64,
    /// Waits longer than the window: the waiter count includes them from the horizon on.
    pub long_waits: u64,
    /// Threads that wake calls reported woken but no woken wait was paired with (woken by a
    /// requeue or a kind of wait not traced, or their waits fell out of the window).
    pub unpaired_woken: u64,
}

/// A record waiting for the horizon, ordered by return time, then arrival.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    /// When it is due: the call's return, or for a wake's second pass a window later.
    due_ns: u64,
    seq: u64,
    kind: CallKind,
    /// A wake that the horizon already passed once, held for late waits.
    second_pass: bool,
    call: CallOrd,
}

/// [`Call`], ordered only so that [`Held`] can derive `Ord` (by due time and `seq` first,
/// which are unique).
#[derive(Debug, PartialEq, Eq)]
struct CallOrd(Call);

impl PartialOrd for CallOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for CallOrd {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// A wake call that woke threads, while waits may still be paired with it.
#[derive(Debug)]
struct OpenWake {
    call: Call,
    /// Woken threads not yet paired with a wait.
    remaining: i64,
    flows_out: Vec<u64>,
    /// The horizon has passed it: it is written as soon as it has no woken thread left.
    passed: bool,
}

/// The streaming timeline: push records as they arrive, take the items the window has passed
/// with [`Timeline::release`], and the rest with [`Timeline::finish`].
#[derive(Debug)]
pub struct Timeline {
    window_ns: u64,
    max_held: usize,
    held: BinaryHeap<Reverse<Held>>,
    /// Wake calls with woken threads, per word, by (start, seq): the pairing candidates.
    wakes: HashMap<WordKey, BTreeMap<(u64, u64), OpenWake>>,
    /// Waiter-count changes not yet written, by (time, word, change): at equal times, leaving
    /// comes before entering, so the count never overstates.
    changes: BinaryHeap<Reverse<(u64, WordKey, i64)>>,
    /// Each word's waiter count as last written.
    waiters: HashMap<WordKey, i64>,
    /// The process whose track shows each word's counter.
    counter_pids: HashMap<WordKey, u32>,
    /// The latest return time seen.
    newest_ns: u64,
    /// Everything that returned before this has been written.
    horizon_ns: u64,
    seq: u64,
    flows: u64,
    stats: WindowStats,
}

impl Default for Timeline {
    fn default() -> Timeline {
        Timeline::new(WINDOW_NS, MAX_HELD)
    }
}

impl Timeline {
    /// A timeline holding records for `window_ns` of trace time, and at most `max_held`.
    pub fn new(window_ns: u64, max_held: usize) -> Timeline {
        Timeline {
            window_ns,
            max_held,
            held: BinaryHeap::new(),
            wakes: HashMap::new(),
            changes: BinaryHeap::new(),
            waiters: HashMap::new(),
            counter_pids: HashMap::new(),
            newest_ns: 0,
            horizon_ns: 0,
            seq: 0,
            flows: 0,
            stats: WindowStats::default(),
        }
    }

    /// Takes one record in.
    pub fn push(&mut self, record: &Record) {
        match record {
            Record::Wait(wait) => self.push_call(
                CallKind::Wait,
                Call {
                    deadline_ns: wait.deadline.map_or(0, |d| d.monotonic_ns),
                    spurious: wait.spurious.0,
                    ..Call::of(&wait.call)
                },
            ),
            Record::Wake(wake) => self.push_call(CallKind::Wake, Call::of(&wake.call)),
            Record::DiedWaiting(died) => self.push_call(
                CallKind::DiedWaiting,
                Call {
                    deadline_ns: died.deadline.map_or(0, |d| d.monotonic_ns),
                    ..Call::of(&died.call)
                },
            ),
            Record::Marker(_) | Record::Fork(_) => {}
        }
    }

    fn push_call(&mut self, kind: CallKind, mut call: Call) {
        call.end_ns = call.end_ns.max(call.start_ns);
        let seq = self.seq;
        self.seq += 1;
        self.newest_ns = self.newest_ns.max(call.end_ns);
        if call.end_ns < self.horizon_ns {
            self.stats.late_records += 1;
        }
        match kind {
            CallKind::Wake if call.ret > 0 => {
                self.wakes.entry(call.key()).or_default().insert(
                    (call.start_ns, seq),
                    OpenWake {
                        call,
                        remaining: call.ret,
                        flows_out: Vec::new(),
                        passed: false,
                    },
                );
            }
            CallKind::Wake => {}
            CallKind::Wait | CallKind::DiedWaiting => self.count_waiter(&call),
        }
        self.held.push(Reverse(Held {
            due_ns: call.end_ns,
            seq,
            kind,
            second_pass: false,
            call: CallOrd(call),
        }));
    }

    /// Books the wait's +1 and -1 on its word's waiter count.
    fn count_waiter(&mut self, wait: &Call) {
        if wait.end_ns < self.horizon_ns {
            return; // late: the count up to the horizon is written already
        }
        if wait.start_ns < self.horizon_ns {
            self.stats.long_waits += 1;
        }
        let key = wait.key();
        self.counter_pids.entry(key).or_insert(wait.tgid);
        self.changes
            .push(Reverse((wait.start_ns.max(self.horizon_ns), key, 1)));
        self.changes.push(Reverse((wait.end_ns, key, -1)));
    }

    /// Gives `emit` what the window has passed.
    pub fn release(&mut self, emit: &mut impl FnMut(Item)) {
        let horizon = self.newest_ns.saturating_sub(self.window_ns);
        self.release_until(horizon, emit);
    }

    /// Gives `emit` everything still held, and says what fell out of the window.
    pub fn finish(mut self, emit: &mut impl FnMut(Item)) -> WindowStats {
        self.release_until(u64::MAX, emit);
        self.stats
    }

    fn release_until(&mut self, horizon: u64, emit: &mut impl FnMut(Item)) {
        self.horizon_ns = self.horizon_ns.max(horizon);
        while let Some(Reverse(next)) = self.held.peek() {
            if next.due_ns >= self.horizon_ns {
                if self.held.len() <= self.max_held {
                    break;
                }
                self.stats.early_records += 1;
                self.horizon_ns = next.due_ns.saturating_add(1);
            }
            let Some(Reverse(held)) = self.held.pop() else {
                break;
            };
            self.release_one(held, emit);
        }
        while let Some(&Reverse((ts_ns, word, _))) = self.changes.peek() {
            if ts_ns >= self.horizon_ns {
                break;
            }
            // All changes of this word at this time, then the count after them.
            let mut waiters = *self.waiters.get(&word).unwrap_or(&0);
            while let Some(&Reverse((ts, key, change))) = self.changes.peek() {
                if (ts, key) != (ts_ns, word) {
                    break;
                }
                waiters += change;
                self.changes.pop();
            }
            self.waiters.insert(word, waiters);
            emit(Item::Counter(CounterValue {
                word,
                pid: self.counter_pids.get(&word).copied().unwrap_or_default(),
                ts_ns,
                waiters,
            }));
        }
    }

    fn release_one(&mut self, held: Held, emit: &mut impl FnMut(Item)) {
        let Held {
            seq,
            kind,
            second_pass,
            call: CallOrd(call),
            ..
        } = held;
        match kind {
            CallKind::Wait => {
                let flow_in = if call.ret == 0 {
                    self.pair(&call, emit)
                } else {
                    None
                };
                emit_wait(&call, seq, flow_in, emit);
            }
            CallKind::DiedWaiting => emit_died(&call, seq, emit),
            CallKind::Wake if call.ret <= 0 => emit_wake(&call, seq, Vec::new(), emit),
            CallKind::Wake => {
                let key = call.key();
                let Some(wakes) = self.wakes.get_mut(&key) else {
                    return; // written when its last woken thread was paired
                };
                let Some(open) = wakes.get_mut(&(call.start_ns, seq)) else {
                    return;
                };
                if open.remaining > 0 && !second_pass {
                    // Waits that return a little after the horizon may still be its.
                    open.passed = true;
                    self.held.push(Reverse(Held {
                        due_ns: call.end_ns.saturating_add(self.window_ns),
                        seq,
                        kind,
                        second_pass: true,
                        call: CallOrd(call),
                    }));
                    return;
                }
                let open = wakes
                    .remove(&(call.start_ns, seq))
                    .expect("looked up above");
                if wakes.is_empty() {
                    self.wakes.remove(&key);
                }
                self.stats.unpaired_woken += open.remaining as u64;
                emit_wake(&open.call, seq, open.flows_out, emit);
            }
        }
    }

    /// Pairs a woken wait with the wake call that ended it, and returns the flow id: a wake call
    /// on the same word that began before the wait returned and returned after the wait began,
    /// and that still has woken threads unpaired (its result counts them); among several, the
    /// earliest-starting one (the kernel wakes in queue order, and earlier wakes go first).
    /// Waits are paired in the order they returned, as the horizon passes them.
    fn pair(&mut self, wait: &Call, emit: &mut impl FnMut(Item)) -> Option<u64> {
        let key = wait.key();
        let wakes = self.wakes.get_mut(&key)?;
        let (&slot, open) = wakes
            .range_mut(..=(wait.end_ns, u64::MAX))
            .find(|(_, open)| open.remaining > 0 && open.call.end_ns >= wait.start_ns)?;
        self.flows += 1;
        let flow = self.flows;
        open.remaining -= 1;
        open.flows_out.push(flow);
        if open.remaining == 0 && open.passed {
            let open = wakes.remove(&slot).expect("found above");
            if wakes.is_empty() {
                self.wakes.remove(&key);
            }
            // Written at once: its woken threads are all paired, and the horizon has passed it.
            emit_wake(&open.call, slot.1, open.flows_out, emit);
        }
        Some(flow)
    }
}

fn slice(call: &Call, kind: CallKind, seq: u64, args: Vec<(&'static str, Arg)>) -> Slice {
    Slice {
        pid: call.tgid,
        tid: call.tid,
        kind,
        word: call.key(),
        start_ns: call.start_ns,
        end_ns: call.end_ns,
        args,
        flows_out: Vec::new(),
        flow_in: None,
        seq,
    }
}

fn instant(call: &Call, name: &'static str, ts_ns: u64, args: Vec<(&'static str, Arg)>) -> Item {
    Item::Instant(Instant {
        pid: call.tgid,
        tid: call.tid,
        name,
        ts_ns,
        args,
    })
}

fn emit_wait(wait: &Call, seq: u64, flow_in: Option<u64>, emit: &mut impl FnMut(Item)) {
    let args = vec![
        ("uaddr", Arg::Text(format!("{:#x}", wait.uaddr))),
        ("result", Arg::Text(wait_result(wait.ret).to_owned())),
        ("deadline_ns", Arg::Int(wait.deadline_ns as i64)),
    ];
    emit(Item::Slice(Slice {
        flow_in,
        ..slice(wait, CallKind::Wait, seq, args)
    }));
    if wait.ret == ETIMEDOUT {
        let drift = vec![("drift_ns", Arg::Int(drift_ns(wait)))];
        emit(instant(wait, "timeout", wait.end_ns, drift));
    }
    for (flag, name) in SPURIOUS_KINDS {
        if wait.spurious & flag != 0 {
            // A lost race is found when the thread waits again: mark that wait's start.
            let ts_ns = if flag == spurious::LOST_RACE {
                wait.start_ns
            } else {
                wait.end_ns
            };
            emit(instant(wait, name, ts_ns, vec![]));
        }
    }
}

fn emit_died(died: &Call, seq: u64, emit: &mut impl FnMut(Item)) {
    let args = vec![
        ("uaddr", Arg::Text(format!("{:#x}", died.uaddr))),
        ("result", Arg::Text("thread exited".to_owned())),
    ];
    emit(Item::Slice(slice(died, CallKind::DiedWaiting, seq, args)));
    emit(instant(
        died,
        "thread exited while waiting",
        died.end_ns,
        vec![],
    ));
}

fn emit_wake(wake: &Call, seq: u64, flows_out: Vec<u64>, emit: &mut impl FnMut(Item)) {
    let args = vec![
        ("uaddr", Arg::Text(format!("{:#x}", wake.uaddr))),
        ("woken", Arg::Int(wake.ret)),
    ];
    emit(Item::Slice(Slice {
        flows_out,
        ..slice(wake, CallKind::Wake, seq, args)
    }));
}

/// Instant names of the spurious-wakeup flags of a wait.
const SPURIOUS_KINDS: [(u32, &str); 4] = [
    (spurious::INTERRUPTED, "spurious: interrupted (EINTR)"),
    (spurious::VALUE_CHANGED, "spurious: value changed (EAGAIN)"),
    (spurious::LOST_RACE, "spurious: lost the race"),
    (spurious::NO_WAKER, "spurious: woken with no wake"),
];

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

    fn items_of(timeline: Timeline) -> Vec<Item> {
        let mut items = Vec::new();
        timeline.finish(&mut |item| items.push(item));
        items
    }

    fn slices(items: &[Item]) -> Vec<&Slice> {
        items
            .iter()
            .filter_map(|item| match item {
                Item::Slice(slice) => Some(slice),
                _ => None,
            })
            .collect()
    }

    /// A wake linked to a wait it woke (indices into the wake and wait lists).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Flow {
        wake: usize,
        wait: usize,
    }

    /// The pairing of `waits` and `wakes` pushed in that order into one timeline.
    fn match_wakes(waits: &[Call], wakes: &[Call]) -> Vec<Flow> {
        let mut timeline = Timeline::default();
        for wait in waits {
            timeline.push_call(CallKind::Wait, *wait);
        }
        for wake in wakes {
            timeline.push_call(CallKind::Wake, *wake);
        }
        let items = items_of(timeline);
        let slices = slices(&items);
        let mut flows: Vec<Flow> = slices
            .iter()
            .filter_map(|wait| Some((wait.seq as usize, wait.flow_in?)))
            .map(|(wait, id)| Flow {
                wait,
                wake: slices
                    .iter()
                    .find(|s| s.flows_out.contains(&id))
                    .map(|s| s.seq as usize - waits.len())
                    .expect("each flow leaves a wake"),
            })
            .collect();
        flows.sort_by_key(|f| (f.wake, f.wait));
        flows
    }

    /// For each word, the waiter count after each change (time ns, count).
    fn waiter_counts(waits: &[Call]) -> BTreeMap<WordKey, Vec<(u64, i64)>> {
        let mut timeline = Timeline::default();
        for wait in waits {
            timeline.push_call(CallKind::Wait, *wait);
        }
        let mut counts: BTreeMap<WordKey, Vec<(u64, i64)>> = BTreeMap::new();
        for item in items_of(timeline) {
            if let Item::Counter(value) = item {
                counts
                    .entry(value.word)
                    .or_default()
                    .push((value.ts_ns, value.waiters));
            }
        }
        counts
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
        // The same address in two processes without a shared key is two words.
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

    /// A ping-pong on one word, `rounds` hand-offs 1 µs apart: each round a wait woken by a
    /// wake call that returns after it.
    fn ping_pong(
        timeline: &mut Timeline,
        rounds: std::ops::Range<u64>,
        emit: &mut impl FnMut(Item),
    ) {
        for round in rounds {
            let t = round * 1_000;
            timeline.push_call(CallKind::Wait, call(2, 0x10, t, t + 600, 0));
            timeline.push_call(CallKind::Wake, call(3, 0x10, t + 500, t + 700, 1));
            timeline.release(emit);
        }
    }

    #[test]
    fn the_window_holds_a_bounded_number_of_records_and_pairs_every_hand_off() {
        // A 10 µs window: at 1 µs a round, about 20 records held at any time.
        let mut timeline = Timeline::new(10_000, MAX_HELD);
        let (mut slices, mut flows_in, mut flows_out, mut most_held) = (0, 0, 0, 0);
        let mut count = |item: Item| {
            if let Item::Slice(slice) = item {
                slices += 1;
                flows_in += usize::from(slice.flow_in.is_some());
                flows_out += slice.flows_out.len();
            }
        };
        for batch in 0..100 {
            ping_pong(&mut timeline, batch * 100..(batch + 1) * 100, &mut count);
            most_held = most_held.max(timeline.held.len() + timeline.changes.len());
        }
        let stats = timeline.finish(&mut count);
        assert!(most_held < 100, "held {most_held}");
        assert_eq!((slices, flows_in, flows_out), (2 * 10_000, 10_000, 10_000));
        assert_eq!(stats, WindowStats::default());
    }

    #[test]
    fn records_arriving_out_of_order_within_the_window_still_pair() {
        let mut timeline = Timeline::new(1_000, MAX_HELD);
        let mut items = Vec::new();
        // The wake returns after its waiter, and its record comes after a later one's.
        timeline.push_call(CallKind::Wait, call(2, 0x10, 0, 100, 0));
        timeline.push_call(CallKind::Wait, call(5, 0x20, 0, 600, EAGAIN));
        timeline.release(&mut |item| items.push(item));
        assert_eq!(items, [], "nothing is older than the window yet");
        timeline.push_call(CallKind::Wake, call(3, 0x10, 90, 150, 1));
        timeline.push_call(CallKind::Wait, call(5, 0x20, 700, 1_200, EAGAIN));
        timeline.release(&mut |item| items.push(item));
        let stats = timeline.finish(&mut |item| items.push(item));
        let slices = slices(&items);
        let wait = slices.iter().find(|s| s.tid == 2).unwrap();
        let wake = slices.iter().find(|s| s.tid == 3).unwrap();
        assert_eq!(wake.flows_out, [wait.flow_in.unwrap()]);
        assert_eq!(stats, WindowStats::default());
    }

    #[test]
    fn what_falls_out_of_the_window_is_counted() {
        let mut timeline = Timeline::new(1_000, 4);
        let mut items = Vec::new();
        // A wake of 2 whose second waiter returns long after: unpaired.
        timeline.push_call(CallKind::Wake, call(3, 0x10, 90, 150, 2));
        timeline.push_call(CallKind::Wait, call(2, 0x10, 0, 100, 0));
        timeline.push_call(CallKind::Wait, call(5, 0x20, 5_000, 6_000, EAGAIN));
        timeline.release(&mut |item| items.push(item));
        // Returns long after its wake, and began before the horizon: a long wait.
        timeline.push_call(CallKind::Wait, call(4, 0x10, 0, 9_000, 0));
        // Arrives after the horizon passed it: late.
        timeline.push_call(CallKind::Wait, call(6, 0x30, 10, 20, ETIMEDOUT));
        for round in 0..4 {
            timeline.push_call(CallKind::Wait, call(7, 0x40, 9_000 + round, 9_100, EAGAIN));
        }
        let held = timeline.held.len();
        timeline.release(&mut |item| items.push(item));
        assert!(
            timeline.held.len() <= 4,
            "held {held} → {}",
            timeline.held.len()
        );
        let stats = timeline.finish(&mut |item| items.push(item));
        assert_eq!(
            stats,
            WindowStats {
                late_records: 1,
                early_records: stats.early_records,
                long_waits: 1,
                unpaired_woken: 1,
            }
        );
        assert!(stats.early_records > 0);
        // The waiter count never goes negative, and ends at 0 on every word.
        let mut last: HashMap<WordKey, i64> = HashMap::new();
        for item in &items {
            if let Item::Counter(value) = item {
                assert!(value.waiters >= 0, "{value:?}");
                last.insert(value.word, value.waiters);
            }
        }
        assert!(last.values().all(|&n| n == 0), "{last:?}");
        assert_eq!(slices(&items).len(), 9, "every record is written");
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

    /// A woken wait and its wake, a timeout, a wakeup with no waker and a thread that died
    /// waiting, all on word 0x10 of process 1.
    pub(crate) fn sample_records() -> Vec<Record> {
        let mut no_waker = event(EventKind::Wait, 4, 0x10, 30_000, 31_000, 0);
        no_waker.spurious = spurious::NO_WAKER;
        let mut died = event(EventKind::DiedWaiting, 5, 0x10, 32_000, 40_000, 0);
        died.deadline_ns = 0;
        [
            event(EventKind::Wait, 2, 0x10, 1_000, 9_000, 0),
            event(EventKind::Wake, 3, 0x10, 8_000, 8_500, 1),
            event(EventKind::Wait, 2, 0x10, 10_000, 20_000, ETIMEDOUT),
            no_waker,
            died,
        ]
        .into_iter()
        .map(decoded)
        .collect()
    }

    #[test]
    fn timeline_links_the_wake_to_the_wait_it_woke() {
        let mut timeline = Timeline::default();
        for record in sample_records() {
            timeline.push(&record);
        }
        let items = items_of(timeline);
        let slices = slices(&items);
        let tids: Vec<u32> = slices.iter().map(|s| s.tid).collect();
        assert_eq!(tids, [3, 2, 2, 4, 5], "in order of return");
        let wake = slices.iter().find(|s| s.kind == CallKind::Wake).unwrap();
        let woken = slices.iter().find(|s| s.flow_in.is_some()).unwrap();
        assert_eq!(wake.flows_out, [woken.flow_in.unwrap()]);
        assert_eq!((woken.tid, woken.start_ns), (2, 1_000));
        let instants: Vec<&Instant> = items
            .iter()
            .filter_map(|item| match item {
                Item::Instant(instant) => Some(instant),
                _ => None,
            })
            .collect();
        let names: Vec<_> = instants.iter().map(|i| (i.name, i.tid)).collect();
        assert_eq!(
            names,
            [
                ("timeout", 2),
                ("spurious: woken with no wake", 4),
                ("thread exited while waiting", 5)
            ]
        );
        assert_eq!(instants[0].args, [("drift_ns", Arg::Int(500))]);
    }
}
