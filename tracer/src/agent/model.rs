//! The agent's bounded model of the host's futex words: the in-kernel totals of every word
//! (`FUTEX_STATS`, cumulative since the word was first seen) turned into monotonic series per
//! `(comm, lock)`.
//!
//! - **Deltas, not totals.** Each refresh compares every word with what it held at the
//!   previous one and adds the difference to the series the word belongs to now. A word that
//!   moves between series (into the top N, or out to `other`) never makes a counter go down.
//! - **Top N per process.** A process's named words (a symbol) ranked by total wait time: the
//!   first [`Limits::top_words`] are series of their own, the rest go to `lock="other"`; words
//!   with no name are summed into `lock="anon"`, and shared (file-keyed) words into
//!   `lock="shared"` under the comm `shared`.
//! - **Grace.** A process that exited keeps its series for [`Limits::grace`]; then its words
//!   are forgotten here and in the kernel, and series no live or graced process feeds are
//!   dropped.
//! - **Cap.** Past [`Limits::max_words`] words, those with the least wait time are evicted
//!   (here and in the kernel), counted in [`Model::evictions`].

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    time::{Duration, Instant},
};

use futexscope_probes_common::maps::{
    FutexKey, FutexStats, TIME_BUCKETS, TIME_NATIVE_OFFSET, key_kind,
};

/// Upper bounds of the classic histogram buckets, as powers of two of seconds: every other one
/// from 2^-20 s (0.95 µs) to 2^4 s (16 s). Each is a bound of the kernel's time histograms
/// (`time_bucket`: 2^e s is the upper bound of native bucket 8e), so the classic counts are
/// exact; `+Inf` follows.
pub const CLASSIC_BOUNDS_LOG2_SECONDS: [i32; 13] =
    [-20, -18, -16, -14, -12, -10, -8, -6, -4, -2, 0, 2, 4];
/// Classic buckets, `+Inf` included.
const SLOTS: usize = CLASSIC_BOUNDS_LOG2_SECONDS.len() + 1;

/// The label of words no symbol names (summed per process).
pub const ANON: &str = "anon";
/// The label of named words outside a process's top N.
pub const OTHER: &str = "other";
/// The label (and comm) of shared futexes keyed by file.
pub const SHARED: &str = "shared";

/// The bounds on what the agent keeps.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Named words per process with a series of their own.
    pub top_words: usize,
    /// Words tracked at most (here and in the kernel map).
    pub max_words: usize,
    /// How long an exited process's series are still served.
    pub grace: Duration,
}

/// A histogram in classic buckets (per-bucket counts, not cumulative) and in the kernel's own
/// buckets (the native ones), with the sum of the values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Count per bucket of [`CLASSIC_BOUNDS_LOG2_SECONDS`], then `+Inf`.
    pub buckets: [u64; SLOTS],
    /// The non-empty buckets of the kernel's histogram (`time_bucket`), by bucket number: 0 is
    /// the zero bucket, bucket `i ≥ 1` is native bucket `i - TIME_NATIVE_OFFSET` of schema 3
    /// ([`Histogram::native_buckets`]). Sparse: a word sees a few of the 466 buckets.
    pub kernel: BTreeMap<u16, u64>,
    /// Sum of the values, in ns.
    pub sum_ns: u64,
}

impl Histogram {
    /// The kernel's histogram `kernel` with the sum `sum_ns`.
    fn from_kernel(kernel: &[u64; TIME_BUCKETS], sum_ns: u64) -> Histogram {
        let mut h = Histogram {
            sum_ns,
            ..Histogram::default()
        };
        for (i, &count) in kernel.iter().enumerate() {
            if count == 0 {
                continue;
            }
            h.kernel.insert(i as u16, count);
            h.buckets[classic_slot(i)] += count;
        }
        h
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The zero bucket's count (values up to 2^-24 s) and the native buckets of schema 3 that
    /// hold values, as `(index, count)` in increasing index: index `k` holds
    /// `(2^((k-1)/8), 2^(k/8)]` s. Exactly the kernel's buckets, renumbered.
    pub fn native_buckets(&self) -> (u64, Vec<(i32, u64)>) {
        let zero = self.kernel.get(&0).copied().unwrap_or(0);
        let buckets = self
            .kernel
            .range(1..)
            .map(|(&i, &count)| (i32::from(i) - TIME_NATIVE_OFFSET, count))
            .collect();
        (zero, buckets)
    }

    fn add_delta(&mut self, now: &Histogram, before: &Histogram) {
        for (slot, (n, b)) in self
            .buckets
            .iter_mut()
            .zip(now.buckets.iter().zip(&before.buckets))
        {
            *slot += n.saturating_sub(*b);
        }
        for (&i, &n) in &now.kernel {
            let delta = n.saturating_sub(before.kernel.get(&i).copied().unwrap_or(0));
            if delta > 0 {
                *self.kernel.entry(i).or_default() += delta;
            }
        }
        self.sum_ns += now.sum_ns.saturating_sub(before.sum_ns);
    }
}

/// The classic bucket that kernel bucket `i` falls in: the first bound 2^e s at or above the
/// bucket's upper bound, which is native bucket 8e; the last kernel buckets (above 2^4 s) and
/// no others go to `+Inf`.
fn classic_slot(i: usize) -> usize {
    let native = i as i32 - TIME_NATIVE_OFFSET;
    CLASSIC_BOUNDS_LOG2_SECONDS
        .iter()
        .position(|&e| native <= 8 * e)
        .unwrap_or(SLOTS - 1)
}

/// The counters of a word or a series.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Wait calls.
    pub waits: u64,
    /// Wake calls.
    pub wake_calls: u64,
    /// Threads woken by wake calls.
    pub woken: u64,
    /// Waits that timed out.
    pub timeouts: u64,
    /// Waits interrupted by a signal (`EINTR`).
    pub eintr: u64,
    /// Waits that found the value changed (`EAGAIN`).
    pub eagain: u64,
    /// Woken waiters that lost the race and waited again.
    pub lost_race: u64,
    /// Wakeups with no wake issued on the word.
    pub no_waker: u64,
    /// Threads that exited inside a wait.
    pub died_waiting: u64,
    /// Wait time.
    pub wait: Histogram,
    /// Timeout drift (return time minus deadline).
    pub drift: Histogram,
}

/// What the model keeps of one read of a word's kernel totals (`FutexStats`, ~5 KiB, is not
/// kept: up to 16384 of them would be read at each refresh).
#[derive(Clone, Debug)]
pub struct WordReading {
    /// The word's counters.
    pub totals: Totals,
    /// Threads waiting on it now.
    pub waiters_now: i64,
}

impl WordReading {
    /// The reading of a word's kernel totals.
    pub fn of(stats: &FutexStats) -> WordReading {
        WordReading {
            totals: Totals::of(stats),
            waiters_now: stats.waiters_now,
        }
    }
}

impl Totals {
    fn of(stats: &FutexStats) -> Totals {
        Totals {
            waits: stats.waits,
            wake_calls: stats.wake_calls,
            woken: stats.woken,
            timeouts: stats.timeouts,
            eintr: stats.eintr,
            eagain: stats.eagain,
            lost_race: stats.lost_race,
            no_waker: stats.no_waker,
            died_waiting: stats.died_waiting,
            wait: Histogram::from_kernel(&stats.wait_hist, stats.wait_sum_ns),
            drift: Histogram::from_kernel(&stats.drift_hist, stats.drift_sum_ns),
        }
    }

    /// Futex calls counted (waits and wake calls).
    pub fn calls(&self) -> u64 {
        self.waits + self.wake_calls
    }

    fn add_delta(&mut self, now: &Totals, before: &Totals) {
        let d = |n: u64, b: u64| n.saturating_sub(b);
        self.waits += d(now.waits, before.waits);
        self.wake_calls += d(now.wake_calls, before.wake_calls);
        self.woken += d(now.woken, before.woken);
        self.timeouts += d(now.timeouts, before.timeouts);
        self.eintr += d(now.eintr, before.eintr);
        self.eagain += d(now.eagain, before.eagain);
        self.lost_race += d(now.lost_race, before.lost_race);
        self.no_waker += d(now.no_waker, before.no_waker);
        self.died_waiting += d(now.died_waiting, before.died_waiting);
        self.wait.add_delta(&now.wait, &before.wait);
        self.drift.add_delta(&now.drift, &before.drift);
    }
}

/// A series' labels: the process name and the lock.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    /// The process name (`comm`).
    pub comm: String,
    /// The lock: a symbol, [`ANON`], [`OTHER`] or [`SHARED`].
    pub lock: String,
}

/// One exported series.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// Monotonic totals.
    pub totals: Totals,
    /// Threads waiting now on its words.
    pub waiters_now: i64,
    /// The processes whose words feed it (0 for shared words).
    processes: BTreeSet<u32>,
}

/// What the model learns about a process from outside (procfs, symbols).
pub trait ProcessInfo {
    /// The process's name, if known.
    fn comm(&mut self, tgid: u32) -> Option<String>;
    /// Whether the process is still running.
    fn alive(&mut self, tgid: u32) -> bool;
    /// The symbol the word at `uaddr` of process `tgid` lives in, if any.
    fn symbol(&mut self, tgid: u32, uaddr: u64) -> Option<String>;
    /// Forgets what it cached about a process that is gone.
    fn forget(&mut self, tgid: u32);
}

struct Word {
    last: Totals,
    /// The word's name, resolved once (None: anonymous).
    name: Option<String>,
    /// Total wait time, for ranking.
    wait_ns: u64,
}

struct Process {
    comm: String,
    exited: Option<Instant>,
}

/// The model: words, processes and series.
pub struct Model {
    limits: Limits,
    words: HashMap<FutexKey, Word>,
    processes: HashMap<u32, Process>,
    series: BTreeMap<SeriesKey, Series>,
    evictions: u64,
    calls: u64,
}

/// What one refresh did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Refresh {
    /// Words to remove from the kernel map (their processes are gone, or evicted by the cap).
    pub forget: Vec<FutexKey>,
    /// Futex calls counted since the previous refresh.
    pub calls: u64,
}

impl Model {
    /// An empty model with `limits`.
    pub fn new(limits: Limits) -> Model {
        Model {
            limits,
            words: HashMap::new(),
            processes: HashMap::new(),
            series: BTreeMap::new(),
            evictions: 0,
            calls: 0,
        }
    }

    /// Takes in the current totals of every word, at time `now`. Returns the words the caller
    /// must remove from the kernel map.
    pub fn refresh(
        &mut self,
        stats: &[(FutexKey, WordReading)],
        info: &mut dyn ProcessInfo,
        now: Instant,
    ) -> Refresh {
        let mut refresh = Refresh::default();
        // Processes seen for the first time, and processes that exited.
        for (key, _) in stats {
            if key.kind == key_kind::PROCESS && !self.processes.contains_key(&key.tgid) {
                let comm = info
                    .comm(key.tgid)
                    .unwrap_or_else(|| format!("pid-{}", key.tgid));
                self.processes
                    .insert(key.tgid, Process { comm, exited: None });
            }
        }
        for (&tgid, process) in &mut self.processes {
            if process.exited.is_none() && !info.alive(tgid) {
                process.exited = Some(now);
            }
        }
        // Names and the ranking of each process's named words.
        let mut current: Vec<(FutexKey, Totals)> = Vec::with_capacity(stats.len());
        for (key, WordReading { totals, .. }) in stats {
            let word = self.words.entry(*key).or_insert_with(|| Word {
                last: Totals::default(),
                name: if key.kind == key_kind::PROCESS {
                    info.symbol(key.tgid, key.uaddr)
                } else {
                    None
                },
                wait_ns: 0,
            });
            word.wait_ns = totals.wait.sum_ns;
            current.push((*key, totals.clone()));
        }
        let top = self.top_words();
        // Deltas into the series each word belongs to now; waiters now recounted.
        for series in self.series.values_mut() {
            series.waiters_now = 0;
        }
        let waiters: HashMap<FutexKey, i64> =
            stats.iter().map(|(k, r)| (*k, r.waiters_now)).collect();
        for (key, totals) in current {
            let Some(series_key) = self.series_of(&key, &top) else {
                continue;
            };
            let word = self.words.get_mut(&key).expect("inserted above");
            let series = self.series.entry(series_key).or_default();
            series.totals.add_delta(&totals, &word.last);
            series.waiters_now += waiters.get(&key).copied().unwrap_or(0).max(0);
            if key.kind == key_kind::PROCESS {
                series.processes.insert(key.tgid);
            }
            refresh.calls += totals.calls().saturating_sub(word.last.calls());
            word.last = totals;
        }
        self.calls += refresh.calls;
        // Processes past their grace period: forget their words and series.
        let expired: Vec<u32> = self
            .processes
            .iter()
            .filter(|(_, p)| {
                p.exited
                    .is_some_and(|t| now.duration_since(t) >= self.limits.grace)
            })
            .map(|(&tgid, _)| tgid)
            .collect();
        for tgid in expired {
            self.processes.remove(&tgid);
            info.forget(tgid);
            let keys: Vec<FutexKey> = self
                .words
                .keys()
                .filter(|k| k.kind == key_kind::PROCESS && k.tgid == tgid)
                .copied()
                .collect();
            for key in keys {
                self.words.remove(&key);
                refresh.forget.push(key);
            }
            self.series.retain(|key, series| {
                series.processes.remove(&tgid);
                !series.processes.is_empty() || key.comm == SHARED
            });
        }
        // The cap: evict the words with the least wait time.
        if self.words.len() > self.limits.max_words {
            let mut ranked: Vec<(u64, FutexKey)> =
                self.words.iter().map(|(k, w)| (w.wait_ns, *k)).collect();
            ranked.sort_unstable_by_key(|&(wait, key)| (wait, key.tgid, key.uaddr));
            let excess = self.words.len() - self.limits.max_words;
            for (_, key) in ranked.into_iter().take(excess) {
                self.words.remove(&key);
                refresh.forget.push(key);
                self.evictions += 1;
            }
        }
        refresh
    }

    /// For each process, its top N named words by wait time.
    fn top_words(&self) -> HashSet<FutexKey> {
        let mut per_process: HashMap<u32, Vec<(u64, FutexKey)>> = HashMap::new();
        for (key, word) in &self.words {
            if key.kind == key_kind::PROCESS && word.name.is_some() {
                per_process
                    .entry(key.tgid)
                    .or_default()
                    .push((word.wait_ns, *key));
            }
        }
        let mut top = HashSet::new();
        for mut words in per_process.into_values() {
            words.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.uaddr.cmp(&b.1.uaddr)));
            top.extend(
                words
                    .into_iter()
                    .take(self.limits.top_words)
                    .map(|(_, k)| k),
            );
        }
        top
    }

    /// The series word `key` feeds now.
    fn series_of(&self, key: &FutexKey, top: &HashSet<FutexKey>) -> Option<SeriesKey> {
        if key.kind != key_kind::PROCESS {
            return Some(SeriesKey {
                comm: SHARED.into(),
                lock: SHARED.into(),
            });
        }
        let comm = self.processes.get(&key.tgid)?.comm.clone();
        let word = self.words.get(key)?;
        let lock = match &word.name {
            None => ANON.to_owned(),
            Some(name) if top.contains(key) => name.clone(),
            Some(_) => OTHER.to_owned(),
        };
        Some(SeriesKey { comm, lock })
    }

    /// The series, in label order.
    pub fn series(&self) -> impl Iterator<Item = (&SeriesKey, &Series)> {
        self.series.iter()
    }

    /// Words tracked now.
    pub fn words(&self) -> usize {
        self.words.len()
    }

    /// Processes tracked now (running, or exited within the grace period).
    pub fn processes(&self) -> usize {
        self.processes.len()
    }

    /// Words evicted by the cap so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Futex calls counted so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Forgets every word's name, so the next refresh names new words afresh (`SIGHUP`).
    pub fn rename(&mut self) {
        self.words.values_mut().for_each(|w| w.name = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futexscope_probes_common::maps::time_bucket;

    #[derive(Default)]
    struct Fake {
        dead: BTreeSet<u32>,
        symbols: HashMap<(u32, u64), String>,
    }

    impl ProcessInfo for Fake {
        fn comm(&mut self, tgid: u32) -> Option<String> {
            Some(format!("p{tgid}"))
        }
        fn alive(&mut self, tgid: u32) -> bool {
            !self.dead.contains(&tgid)
        }
        fn symbol(&mut self, tgid: u32, uaddr: u64) -> Option<String> {
            self.symbols.get(&(tgid, uaddr)).cloned()
        }
        fn forget(&mut self, _: u32) {}
    }

    fn stats(waits: u64, wait_ns: u64) -> WordReading {
        let mut s = FutexStats::ZERO;
        s.waits = waits;
        s.wait_sum_ns = wait_ns * waits;
        s.wait_hist[time_bucket(wait_ns)] = waits;
        WordReading::of(&s)
    }

    fn limits() -> Limits {
        Limits {
            top_words: 1,
            max_words: 100,
            grace: Duration::from_secs(10),
        }
    }

    fn value(model: &Model, comm: &str, lock: &str) -> Option<Totals> {
        model
            .series()
            .find(|(k, _)| k.comm == comm && k.lock == lock)
            .map(|(_, s)| s.totals.clone())
    }

    #[test]
    fn classic_buckets_are_exact_at_powers_of_two_of_seconds() {
        let mut kernel = [0; TIME_BUCKETS];
        // 2^-20 s is 953.67 ns; 2^-18 s is 3814.7 ns; 16 s is 2^4 s.
        for ns in [
            953,
            954,
            3814,
            3815,
            16_000_000_000,
            16_000_000_001,
            u64::MAX,
        ] {
            kernel[time_bucket(ns)] += 1;
        }
        let h = Histogram::from_kernel(&kernel, 0);
        assert_eq!(h.buckets[0], 1, "953 ns is <= 2^-20 s");
        assert_eq!(h.buckets[1], 2, "954 and 3814 ns are in (2^-20, 2^-18] s");
        assert_eq!(h.buckets[2], 1, "3815 ns is above 2^-18 s");
        assert_eq!(h.buckets[SLOTS - 2], 1, "16 s is <= 2^4 s");
        assert_eq!(h.buckets[SLOTS - 1], 2, "above 2^4 s is +Inf");
        assert_eq!(h.count(), 7);
    }

    #[test]
    fn native_buckets_are_the_kernel_buckets_renumbered_and_grow_by_deltas() {
        let mut kernel = [0; TIME_BUCKETS];
        // 0 ns: zero bucket; 1 s: native bucket 0, (2^-1/8, 1] s; 1 s + 1 ns: bucket 1;
        // 20 ms: bucket ceil(8 log2(0.02)) = -45.
        kernel[time_bucket(0)] += 2;
        kernel[time_bucket(1_000_000_000)] += 3;
        kernel[time_bucket(1_000_000_001)] += 1;
        kernel[time_bucket(20_000_000)] += 4;
        let before = Histogram::from_kernel(&kernel, 7);
        assert_eq!(before.native_buckets(), (2, vec![(-45, 4), (0, 3), (1, 1)]));
        kernel[time_bucket(20_000_000)] += 1;
        let now = Histogram::from_kernel(&kernel, 9);
        let mut series = Histogram::default();
        series.add_delta(&now, &before);
        assert_eq!(series.native_buckets(), (0, vec![(-45, 1)]));
        assert_eq!((series.count(), series.sum_ns), (1, 2));
    }

    #[test]
    fn top_words_get_series_the_rest_is_other_or_anon_and_counters_never_fall() {
        let mut info = Fake::default();
        info.symbols.insert((1, 0x10), "A".into());
        info.symbols.insert((1, 0x20), "B".into());
        let (a, b, anon) = (
            FutexKey::process(1, 0x10),
            FutexKey::process(1, 0x20),
            FutexKey::process(1, 0x30),
        );
        let t0 = Instant::now();
        let mut model = Model::new(limits());
        model.refresh(
            &[(a, stats(5, 1000)), (b, stats(1, 10)), (anon, stats(7, 5))],
            &mut info,
            t0,
        );
        assert_eq!(value(&model, "p1", "A").unwrap().waits, 5);
        assert_eq!(value(&model, "p1", OTHER).unwrap().waits, 1);
        assert_eq!(value(&model, "p1", ANON).unwrap().waits, 7);
        // B overtakes A: B's new waits go to B, A's to other; nothing goes down.
        let r = model.refresh(
            &[
                (a, stats(6, 1000)),
                (b, stats(100, 1000)),
                (anon, stats(7, 5)),
            ],
            &mut info,
            t0,
        );
        assert_eq!(r.calls, 100);
        assert_eq!(value(&model, "p1", "A").unwrap().waits, 5);
        assert_eq!(value(&model, "p1", "B").unwrap().waits, 99);
        assert_eq!(value(&model, "p1", OTHER).unwrap().waits, 2);
        assert_eq!(model.calls(), 113);
    }

    #[test]
    fn exited_processes_are_served_for_the_grace_period_then_dropped() {
        let mut info = Fake::default();
        let word = FutexKey::process(7, 0x10);
        let t0 = Instant::now();
        let mut model = Model::new(limits());
        model.refresh(&[(word, stats(3, 100))], &mut info, t0);
        info.dead.insert(7);
        let r = model.refresh(
            &[(word, stats(4, 100))],
            &mut info,
            t0 + Duration::from_secs(1),
        );
        assert!(r.forget.is_empty());
        assert_eq!(value(&model, "p7", ANON).unwrap().waits, 4);
        let r = model.refresh(
            &[(word, stats(4, 100))],
            &mut info,
            t0 + Duration::from_secs(11),
        );
        assert_eq!(r.forget, vec![word]);
        assert_eq!(model.series().count(), 0);
        assert_eq!((model.words(), model.processes()), (0, 0));
    }

    #[test]
    fn the_cap_evicts_the_least_waited_words() {
        let mut info = Fake::default();
        let mut model = Model::new(Limits {
            max_words: 2,
            ..limits()
        });
        let words: Vec<_> = (1..=3u64)
            .map(|i| (FutexKey::process(1, i * 8), stats(i, 100 * i)))
            .collect();
        let r = model.refresh(&words, &mut info, Instant::now());
        assert_eq!(r.forget, vec![FutexKey::process(1, 8)]);
        assert_eq!((model.words(), model.evictions()), (2, 1));
        // The evicted word's counts stay in its series.
        assert_eq!(value(&model, "p1", ANON).unwrap().waits, 6);
    }
}
