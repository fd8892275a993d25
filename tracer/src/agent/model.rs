//! The agent's bounded model of the host's futex words: the in-kernel totals of every word
//! (`FUTEX_STATS`, cumulative since the word was first seen) turned into monotonic series per
//! `(comm, lock)`.
//!
//! - **Deltas, not totals.** Each refresh compares every word with what it held at the
//!   previous one and adds the difference to the series the word belongs to now. A word that
//!   moves between series (into the top N, or out to `other`) never makes a counter go down.
//! - **Top N per process.** A process's named words (a symbol) ranked by total wait time: the
//!   first [`Limits::top_words`] are series of their own, the rest go to `lock="other"`; words
//!   with no name are summed into `lock="anon"`.
//! - **Shared futexes** (keyed by file: the same futex in every process that maps it) are named
//!   by the file's path and the word's offset in it (`/dev/shm/sem.jobs+0x0`), read from the
//!   mappings of a process that uses it (the probes' `WORD_USERS`); in anonymous shared memory
//!   `lock="shared-anon"`; until a process that maps
//!   the file is seen, `lock="shared"`. Their counts are the futex's, not one process's: a
//!   shared word feeds one series whose `comm` is the names of the processes that use it,
//!   sorted and joined by commas (`comm="consumer,producer"`), so no count is split or
//!   counted twice. The top N are ranked among the shared words of each such `comm`.
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
    FutexKey, FutexStats, TIME_BUCKETS, TIME_NATIVE_OFFSET, WordUser, key_kind,
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
/// The label of shared futexes whose file is not known yet (no process that maps it was
/// seen), and the comm of shared futexes whose processes are not known (the probes' user map
/// was full).
pub const SHARED: &str = "shared";
/// The label of shared futexes in anonymous shared memory that no symbol names (summed per
/// comm).
pub const SHARED_ANON: &str = "shared-anon";
/// Process names a shared futex's `comm` label lists at most; more are counted (`a,b,c,+2`).
const MAX_COMMS_IN_LABEL: usize = 4;

/// The memory a shared futex lies in, as a process that maps it shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SharedFile {
    /// A file with a name: its path as `/proc/PID/maps` shows it, without ` (deleted)`
    /// (a file, `/dev/shm/sem.NAME`, `/memfd:NAME`, a SysV segment with a key
    /// `/SYSV0052e2c1`).
    Path(String),
    /// Anonymous shared memory (`MAP_SHARED|MAP_ANONYMOUS`, shown as `/dev/zero`; a SysV
    /// segment created with `IPC_PRIVATE`, `/SYSV00000000`) or a file deleted while mapped: no
    /// name survives a restart.
    Anonymous,
}

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
    /// The process name (`comm`); for a shared futex, the names of its processes.
    pub comm: String,
    /// The lock: a symbol, a shared file and offset, [`ANON`], [`OTHER`], [`SHARED_ANON`] or
    /// [`SHARED`].
    pub lock: String,
}

/// One exported series.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// Monotonic totals.
    pub totals: Totals,
    /// Threads waiting now on its words.
    pub waiters_now: i64,
    /// The processes whose words feed it (for a shared word, the processes that used it).
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
    /// The file of device `dev` and inode `ino` as process `tgid` maps it; `None` if the
    /// process is gone or maps no such file.
    fn shared_file(&mut self, tgid: u32, dev: u32, ino: u64) -> Option<SharedFile>;
    /// Forgets what it cached about a process that is gone.
    fn forget(&mut self, tgid: u32);
}

struct Word {
    last: Totals,
    name: Name,
    /// Total wait time, for ranking.
    wait_ns: u64,
    /// A shared word's processes (from the probes' `WORD_USERS`), by id; empty for a
    /// process-local word.
    users: Vec<u32>,
    /// A shared word's `comm` label: its processes' names.
    comms: String,
}

/// What names a word.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Name {
    /// Not looked up yet; for a shared word, no process that maps its file was seen.
    Unknown,
    /// Nothing names it (heap, stack, anonymous shared memory).
    Anonymous,
    /// A symbol, or a shared word's file and offset.
    Named(String),
}

/// The group a word is ranked in for the top N: its process, or for a shared word its
/// processes' names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Group {
    Process(u32),
    Shared(String),
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
    /// The files of the shared words tracked, by (device, inode), once a process showed them.
    files: HashMap<(u32, u64), SharedFile>,
    evictions: u64,
    calls: u64,
}

/// What one refresh did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Refresh {
    /// Words to remove from the kernel map (their processes are gone, or evicted by the cap).
    pub forget: Vec<FutexKey>,
    /// Users of shared words to remove from the kernel's `WORD_USERS` (the processes are gone).
    pub forget_users: Vec<WordUser>,
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
            files: HashMap::new(),
            evictions: 0,
            calls: 0,
        }
    }

    /// Takes in the current totals of every word and the users of the shared ones (the
    /// probes' `WORD_USERS`: each process that used a shared word, with the word's address
    /// there), at time `now`. Returns the words and users the caller must remove from the
    /// kernel maps.
    pub fn refresh(
        &mut self,
        stats: &[(FutexKey, WordReading)],
        users: &[(WordUser, u64)],
        info: &mut dyn ProcessInfo,
        now: Instant,
    ) -> Refresh {
        let mut refresh = Refresh::default();
        // Each shared word's users, by process id, with the word's address in each.
        let mut users_of: HashMap<FutexKey, Vec<(u32, u64)>> = HashMap::new();
        for (user, uaddr) in users {
            users_of
                .entry(user.key)
                .or_default()
                .push((user.tgid, *uaddr));
        }
        for list in users_of.values_mut() {
            list.sort_unstable();
            list.dedup_by_key(|(tgid, _)| *tgid);
        }
        // Processes seen for the first time, and processes that exited.
        let tgids = stats
            .iter()
            .filter(|(key, _)| key.kind == key_kind::PROCESS)
            .map(|(key, _)| key.tgid)
            .chain(users_of.values().flatten().map(|&(tgid, _)| tgid));
        for tgid in tgids {
            self.processes.entry(tgid).or_insert_with(|| Process {
                comm: info.comm(tgid).unwrap_or_else(|| format!("pid-{tgid}")),
                exited: None,
            });
        }
        for (&tgid, process) in &mut self.processes {
            if process.exited.is_none() && !info.alive(tgid) {
                process.exited = Some(now);
            }
        }
        // The words, named if they are not yet.
        let mut current: Vec<(FutexKey, Totals)> = Vec::with_capacity(stats.len());
        for (key, WordReading { totals, .. }) in stats {
            let word = self.words.entry(*key).or_insert_with(|| Word {
                last: Totals::default(),
                name: Name::Unknown,
                wait_ns: 0,
                users: Vec::new(),
                comms: String::new(),
            });
            word.wait_ns = totals.wait.sum_ns;
            if key.kind != key_kind::PROCESS {
                let list = users_of.get(key).map_or(&[][..], Vec::as_slice);
                word.users = list.iter().map(|&(tgid, _)| tgid).collect();
                word.comms = comms_label(&word.users, &self.processes);
            }
            current.push((*key, totals.clone()));
        }
        self.name_words(&users_of, info);
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
            } else {
                series.processes.extend(&word.users);
            }
            refresh.calls += totals.calls().saturating_sub(word.last.calls());
            word.last = totals;
        }
        self.calls += refresh.calls;
        // Processes past their grace period: forget their words, their uses of shared words
        // (and the shared words no process that is still here uses), and their series.
        let expired: HashSet<u32> = self
            .processes
            .iter()
            .filter(|(_, p)| {
                p.exited
                    .is_some_and(|t| now.duration_since(t) >= self.limits.grace)
            })
            .map(|(&tgid, _)| tgid)
            .collect();
        if !expired.is_empty() {
            for &tgid in &expired {
                self.processes.remove(&tgid);
                info.forget(tgid);
            }
            let mut gone = Vec::new();
            for (key, word) in &self.words {
                if key.kind == key_kind::PROCESS {
                    if expired.contains(&key.tgid) {
                        gone.push(*key);
                    }
                    continue;
                }
                let before = word.users.len();
                for &tgid in word.users.iter().filter(|t| expired.contains(t)) {
                    refresh.forget_users.push(WordUser {
                        key: *key,
                        tgid,
                        pad: 0,
                    });
                }
                if before > 0 && word.users.iter().all(|t| expired.contains(t)) {
                    gone.push(*key);
                }
            }
            for key in gone {
                self.words.remove(&key);
                refresh.forget.push(key);
            }
            self.series.retain(|key, series| {
                series.processes.retain(|tgid| !expired.contains(tgid));
                !series.processes.is_empty() || key.comm == SHARED
            });
        }
        // The cap: evict the words with the least wait time.
        if self.words.len() > self.limits.max_words {
            let mut ranked: Vec<(u64, FutexKey)> =
                self.words.iter().map(|(k, w)| (w.wait_ns, *k)).collect();
            ranked.sort_unstable_by_key(|&(wait, key)| (wait, key.tgid, key.uaddr, key.ino));
            let excess = self.words.len() - self.limits.max_words;
            for (_, key) in ranked.into_iter().take(excess) {
                self.words.remove(&key);
                refresh.forget.push(key);
                self.evictions += 1;
            }
        }
        // Only the files of the shared words still tracked are remembered.
        let files: HashSet<(u32, u64)> = self.words.keys().map(|k| (k.dev, k.ino)).collect();
        self.files.retain(|file, _| files.contains(file));
        refresh
    }

    /// Names the words that have no name yet: a process-local word by its symbol (or none);
    /// a shared word by its file and offset, found in the mappings of a process that uses
    /// that file (any of its words); none in anonymous shared memory.
    fn name_words(
        &mut self,
        users_of: &HashMap<FutexKey, Vec<(u32, u64)>>,
        info: &mut dyn ProcessInfo,
    ) {
        // The processes that use each file, for words whose own users no longer map it.
        let mut file_users: HashMap<(u32, u64), BTreeSet<u32>> = HashMap::new();
        for (key, list) in users_of {
            file_users
                .entry((key.dev, key.ino))
                .or_default()
                .extend(list.iter().map(|&(tgid, _)| tgid));
        }
        for (key, word) in &mut self.words {
            if word.name != Name::Unknown {
                continue;
            }
            if key.kind == key_kind::PROCESS {
                word.name = info
                    .symbol(key.tgid, key.uaddr)
                    .map_or(Name::Anonymous, Name::Named);
                continue;
            }
            let file_id = (key.dev, key.ino);
            let own = users_of.get(key).map_or(&[][..], Vec::as_slice);
            if !self.files.contains_key(&file_id) {
                let candidates = own
                    .iter()
                    .map(|&(tgid, _)| tgid)
                    .chain(file_users.get(&file_id).into_iter().flatten().copied());
                for tgid in candidates {
                    if let Some(file) = info.shared_file(tgid, key.dev, key.ino) {
                        self.files.insert(file_id, file);
                        break;
                    }
                }
            }
            word.name = match self.files.get(&file_id) {
                None => Name::Unknown,
                Some(SharedFile::Path(path)) => Name::Named(format!("{path}+{:#x}", key.uaddr)),
                // No symbol lies in anonymous shared memory (symbols are in ELF mappings).
                Some(SharedFile::Anonymous) => Name::Anonymous,
            };
        }
    }

    /// For each process, its top N named words by wait time; for the shared words, the top N
    /// of those with the same `comm` label.
    fn top_words(&self) -> HashSet<FutexKey> {
        let mut groups: HashMap<Group, Vec<(u64, FutexKey)>> = HashMap::new();
        for (key, word) in &self.words {
            if !matches!(word.name, Name::Named(_)) {
                continue;
            }
            let group = if key.kind == key_kind::PROCESS {
                Group::Process(key.tgid)
            } else {
                Group::Shared(word.comms.clone())
            };
            groups.entry(group).or_default().push((word.wait_ns, *key));
        }
        let mut top = HashSet::new();
        for mut words in groups.into_values() {
            words.sort_unstable_by(|a, b| {
                b.0.cmp(&a.0)
                    .then((a.1.uaddr, a.1.ino).cmp(&(b.1.uaddr, b.1.ino)))
            });
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
        let word = self.words.get(key)?;
        let (comm, unnamed) = if key.kind == key_kind::PROCESS {
            (self.processes.get(&key.tgid)?.comm.clone(), ANON)
        } else {
            let unnamed = if word.name == Name::Unknown {
                SHARED
            } else {
                SHARED_ANON
            };
            (word.comms.clone(), unnamed)
        };
        let lock = match &word.name {
            Name::Named(name) if top.contains(key) => name.clone(),
            Name::Named(_) => OTHER.to_owned(),
            Name::Unknown | Name::Anonymous => unnamed.to_owned(),
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

    /// Forgets every word's name and every shared file's path, so that the next refresh names
    /// the words afresh (`SIGHUP`, after a deploy).
    pub fn rename(&mut self) {
        self.words.values_mut().for_each(|w| w.name = Name::Unknown);
        self.files.clear();
    }
}

/// The `comm` label of a shared word used by processes `users`: their distinct names, sorted
/// and joined by commas, at most [`MAX_COMMS_IN_LABEL`] of them (then `+N` more); [`SHARED`]
/// if none is known.
fn comms_label(users: &[u32], processes: &HashMap<u32, Process>) -> String {
    let names: BTreeSet<&str> = users
        .iter()
        .filter_map(|tgid| Some(processes.get(tgid)?.comm.as_str()))
        .collect();
    if names.is_empty() {
        return SHARED.to_owned();
    }
    let mut label: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    if label.len() > MAX_COMMS_IN_LABEL {
        let more = label.len() - (MAX_COMMS_IN_LABEL - 1);
        label.truncate(MAX_COMMS_IN_LABEL - 1);
        label.push(format!("+{more}"));
    }
    label.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use futexscope_probes_common::maps::time_bucket;

    #[derive(Default)]
    struct Fake {
        dead: BTreeSet<u32>,
        symbols: HashMap<(u32, u64), String>,
        /// Names other than `p{tgid}`.
        comms: HashMap<u32, String>,
        /// What each process maps: (process, device, inode) → file.
        files: HashMap<(u32, u32, u64), SharedFile>,
        /// Processes asked for a shared file.
        asked: Vec<u32>,
    }

    impl ProcessInfo for Fake {
        fn comm(&mut self, tgid: u32) -> Option<String> {
            Some(
                self.comms
                    .get(&tgid)
                    .cloned()
                    .unwrap_or_else(|| format!("p{tgid}")),
            )
        }
        fn alive(&mut self, tgid: u32) -> bool {
            !self.dead.contains(&tgid)
        }
        fn symbol(&mut self, tgid: u32, uaddr: u64) -> Option<String> {
            self.symbols.get(&(tgid, uaddr)).cloned()
        }
        fn shared_file(&mut self, tgid: u32, dev: u32, ino: u64) -> Option<SharedFile> {
            self.asked.push(tgid);
            if self.dead.contains(&tgid) {
                return None;
            }
            self.files.get(&(tgid, dev, ino)).cloned()
        }
        fn forget(&mut self, _: u32) {}
    }

    fn user(key: FutexKey, tgid: u32, uaddr: u64) -> (WordUser, u64) {
        (WordUser { key, tgid, pad: 0 }, uaddr)
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
            &[],
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
            &[],
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
        model.refresh(&[(word, stats(3, 100))], &[], &mut info, t0);
        info.dead.insert(7);
        let r = model.refresh(
            &[(word, stats(4, 100))],
            &[],
            &mut info,
            t0 + Duration::from_secs(1),
        );
        assert!(r.forget.is_empty());
        assert_eq!(value(&model, "p7", ANON).unwrap().waits, 4);
        let r = model.refresh(
            &[(word, stats(4, 100))],
            &[],
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
        let r = model.refresh(&words, &[], &mut info, Instant::now());
        assert_eq!(r.forget, vec![FutexKey::process(1, 8)]);
        assert_eq!((model.words(), model.evictions()), (2, 1));
        // The evicted word's counts stay in its series.
        assert_eq!(value(&model, "p1", ANON).unwrap().waits, 6);
    }

    #[test]
    fn a_shared_word_is_one_series_named_by_its_file_with_its_processes_names() {
        let mut info = Fake::default();
        let (dev, ino) = (0x1a, 77);
        let jobs = FutexKey::inode(dev, ino, 0x10);
        let path = SharedFile::Path("/dev/shm/sem.jobs".into());
        // Only process 2 still maps the file: 1 has unmapped it (or is gone).
        info.files.insert((2, dev, ino), path.clone());
        info.comms.insert(3, "consumer".into());
        info.files.insert((3, dev, ino), path);
        let t0 = Instant::now();
        let mut model = Model::new(limits());
        model.refresh(
            &[(jobs, stats(12, 100))],
            &[user(jobs, 1, 0x7000_0010), user(jobs, 2, 0x7100_0010)],
            &mut info,
            t0,
        );
        let series: Vec<_> = model
            .series()
            .map(|(k, s)| (k.clone(), s.totals.waits))
            .collect();
        assert_eq!(
            series,
            vec![(
                SeriesKey {
                    comm: "p1,p2".into(),
                    lock: "/dev/shm/sem.jobs+0x10".into()
                },
                12
            )]
        );
        assert_eq!(info.asked, vec![1, 2], "asked until one maps the file");
        // A third process with another name: the word's next counts go to the new label.
        let r = model.refresh(
            &[(jobs, stats(20, 100))],
            &[
                user(jobs, 1, 0x7000_0010),
                user(jobs, 2, 0x7100_0010),
                user(jobs, 3, 0x7200_0010),
            ],
            &mut info,
            t0,
        );
        assert_eq!(r.calls, 8);
        assert_eq!(
            value(&model, "consumer,p1,p2", "/dev/shm/sem.jobs+0x10")
                .unwrap()
                .waits,
            8
        );
        assert_eq!(
            value(&model, "p1,p2", "/dev/shm/sem.jobs+0x10")
                .unwrap()
                .waits,
            12
        );
        assert_eq!(info.asked.len(), 2, "the file is named once");
    }

    #[test]
    fn shared_words_are_named_by_any_process_that_maps_the_file_else_by_fallbacks() {
        let mut info = Fake::default();
        let (a, b) = (FutexKey::inode(5, 1, 0), FutexKey::inode(5, 1, 0x40));
        let (anon, anon2) = (FutexKey::inode(1, 9, 0), FutexKey::inode(1, 9, 8));
        let unknown = FutexKey::inode(5, 2, 0);
        // Process 1 used word a only and is gone; process 2 used word b and maps the file.
        info.dead.insert(1);
        info.files
            .insert((2, 5, 1), SharedFile::Path("/srv/queue".into()));
        info.files.insert((3, 1, 9), SharedFile::Anonymous);
        let mut model = Model::new(Limits {
            top_words: 10,
            ..limits()
        });
        for (comm, tgid) in [("q", 1), ("q", 2), ("q", 3), ("q", 4)] {
            info.comms.insert(tgid, comm.into());
        }
        model.refresh(
            &[
                (a, stats(1, 10)),
                (b, stats(2, 10)),
                (anon, stats(3, 10)),
                (anon2, stats(4, 10)),
                (unknown, stats(5, 10)),
            ],
            &[
                user(a, 1, 0x1000),
                user(b, 2, 0x2040),
                user(anon, 3, 0x5000),
                user(anon2, 3, 0x5008),
                user(unknown, 4, 0x9000),
            ],
            &mut info,
            Instant::now(),
        );
        let locks: BTreeMap<String, u64> = model
            .series()
            .map(|(k, s)| {
                assert_eq!(k.comm, "q");
                (k.lock.clone(), s.totals.waits)
            })
            .collect();
        let want: BTreeMap<String, u64> = [
            ("/srv/queue+0x0", 1),
            ("/srv/queue+0x40", 2),
            (SHARED_ANON, 7),
            (SHARED, 5),
        ]
        .into_iter()
        .map(|(l, n)| (l.to_owned(), n))
        .collect();
        assert_eq!(locks, want);
    }

    #[test]
    fn shared_words_rank_per_comm_and_go_with_their_last_process() {
        let mut info = Fake::default();
        let words: Vec<FutexKey> = (0..3).map(|i| FutexKey::inode(5, 1, i * 4)).collect();
        for tgid in [1, 2] {
            info.files
                .insert((tgid, 5, 1), SharedFile::Path("/f".into()));
        }
        let t0 = Instant::now();
        let mut model = Model::new(limits());
        let stats: Vec<_> = words
            .iter()
            .enumerate()
            .map(|(i, &k)| (k, stats(i as u64 + 1, 100)))
            .collect();
        let users = [
            user(words[0], 1, 0x100),
            user(words[1], 1, 0x104),
            user(words[2], 2, 0x208),
        ];
        model.refresh(&stats, &users, &mut info, t0);
        // One word per comm with a series of its own (top 1), the rest in `other`.
        assert_eq!(value(&model, "p1", "/f+0x4").unwrap().waits, 2);
        assert_eq!(value(&model, "p1", OTHER).unwrap().waits, 1);
        assert_eq!(value(&model, "p2", "/f+0x8").unwrap().waits, 3);
        // Process 1 exits: after the grace period its words, its uses and its series go;
        // process 2's stay.
        info.dead.insert(1);
        model.refresh(&stats, &users, &mut info, t0 + Duration::from_secs(1));
        let r = model.refresh(&stats, &users, &mut info, t0 + Duration::from_secs(12));
        let mut forgotten = r.forget.clone();
        forgotten.sort_unstable_by_key(|k| k.uaddr);
        assert_eq!(forgotten, vec![words[0], words[1]]);
        let mut users_forgotten = r.forget_users.clone();
        users_forgotten.sort_unstable_by_key(|u| u.key.uaddr);
        let of_1 = |key| WordUser {
            key,
            tgid: 1,
            pad: 0,
        };
        assert_eq!(users_forgotten, vec![of_1(words[0]), of_1(words[1])]);
        let left: Vec<_> = model.series().map(|(k, _)| k.comm.clone()).collect();
        assert_eq!(left, vec!["p2"]);
        assert_eq!(model.words(), 1);
    }

    #[test]
    fn a_comm_label_lists_four_names_at_most() {
        let processes: HashMap<u32, Process> = (1..=6)
            .map(|i| {
                (
                    i,
                    Process {
                        comm: format!("n{}", i % 5),
                        exited: None,
                    },
                )
            })
            .collect();
        assert_eq!(comms_label(&[1, 6], &processes), "n1");
        assert_eq!(comms_label(&[1, 2, 3, 4], &processes), "n1,n2,n3,n4");
        assert_eq!(comms_label(&[1, 2, 3, 4, 5], &processes), "n0,n1,n2,+2");
        assert_eq!(comms_label(&[9], &processes), SHARED);
    }
}
