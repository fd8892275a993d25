//! The numbers futexscope reports: one [`Row`] per futex word, built from the in-kernel totals
//! ([`FutexStats`]), with percentiles read off their log2 histograms, a human label, and the
//! [`Summary`] written at the end of a trace (as text by [`crate::render`], as JSON here).

use std::collections::HashMap;

use futexscope_probes_common::{
    event::{Event, EventKind},
    maps::{FutexKey, FutexStats, HIST_BUCKETS},
};
use serde::Serialize;

/// One futex word of one process, as reported.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// Process id owning the word.
    pub tgid: u32,
    /// Address of the word, as `0x…`.
    #[serde(serialize_with = "hex")]
    pub uaddr: u64,
    /// What the word is: a symbol (`SEM+4`), the semaphore the markers name, or empty.
    pub label: String,
    /// Threads waiting on the word at the time of the snapshot.
    pub waiters_now: i64,
    /// Most threads seen waiting at once.
    pub max_waiters: i64,
    /// Wait calls.
    pub waits: u64,
    /// Wake calls naming the word.
    pub wake_calls: u64,
    /// Threads the kernel reported woken.
    pub woken: u64,
    /// Waits that timed out.
    pub timeouts: u64,
    /// Spurious wakeups by kind.
    pub spurious: Spurious,
    /// Wait time percentiles, in ns (log2 bucket upper bounds).
    pub wait_ns: Percentiles,
    /// Timeout drift percentiles (return time minus deadline), in ns (log2 bucket upper bounds).
    pub drift_ns: Percentiles,
}

/// Spurious wakeups of one word, by kind (see docs/probes.md for the definitions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Spurious {
    /// Interrupted by a signal (`EINTR`).
    pub eintr: u64,
    /// The word's value changed before the thread slept (`EAGAIN`).
    pub eagain: u64,
    /// Woken, then waited again without getting what it waited for.
    pub lost_race: u64,
    /// Woken with no wake issued on the word since the wait began.
    pub no_waker: u64,
}

impl Spurious {
    /// All kinds added up.
    pub fn total(&self) -> u64 {
        self.eintr + self.eagain + self.lost_race + self.no_waker
    }
}

/// Percentiles of a log2 histogram; `None` when it is empty. Each value is the upper bound of
/// the bucket the percentile falls in, so the true value is at most this and more than half of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<u64>,
    /// 99th percentile.
    pub p99: Option<u64>,
    /// Largest value.
    pub max: Option<u64>,
}

impl Percentiles {
    /// Reads the percentiles off a log2 histogram (bucket `i` holds values in `[2^i, 2^(i+1))`).
    pub fn from_log2(hist: &[u64; HIST_BUCKETS]) -> Percentiles {
        let total: u64 = hist.iter().sum();
        if total == 0 {
            return Percentiles::default();
        }
        let upper = |bucket: usize| 1u64.checked_shl(bucket as u32 + 1).unwrap_or(u64::MAX);
        let at = |fraction_per_mille: u64| {
            // The smallest bucket whose cumulative count reaches the rank (rounded up).
            let rank = (total * fraction_per_mille).div_ceil(1000).max(1);
            let mut seen = 0;
            hist.iter().position(|&n| {
                seen += n;
                seen >= rank
            })
        };
        Percentiles {
            p50: at(500).map(upper),
            p99: at(990).map(upper),
            max: hist.iter().rposition(|&n| n > 0).map(upper),
        }
    }
}

impl Row {
    /// The row of one word, from its in-kernel totals.
    pub fn new(key: FutexKey, stats: &FutexStats, label: String) -> Row {
        Row {
            tgid: key.tgid,
            uaddr: key.uaddr,
            label,
            waiters_now: stats.waiters_now,
            max_waiters: stats.max_waiters,
            waits: stats.waits,
            wake_calls: stats.wake_calls,
            woken: stats.woken,
            timeouts: stats.timeouts,
            spurious: Spurious {
                eintr: stats.eintr,
                eagain: stats.eagain,
                lost_race: stats.lost_race,
                no_waker: stats.no_waker,
            },
            wait_ns: Percentiles::from_log2(&stats.wait_hist),
            drift_ns: Percentiles::from_log2(&stats.drift_hist),
        }
    }

    /// The key of the word.
    pub fn key(&self) -> FutexKey {
        FutexKey {
            tgid: self.tgid,
            pad: 0,
            uaddr: self.uaddr,
        }
    }
}

/// The column rows are sorted by (largest first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    /// Threads waiting now.
    WaitersNow,
    /// Most threads waiting at once.
    MaxWaiters,
    /// Wait calls.
    #[default]
    Waits,
    /// Wake calls.
    WakeCalls,
    /// Threads woken.
    Woken,
    /// Spurious wakeups, all kinds.
    Spurious,
    /// Timeouts.
    Timeouts,
    /// Timeout drift p99.
    Drift,
    /// Wait time p99.
    WaitTime,
}

impl SortKey {
    /// Every key, in the order the live view cycles through them.
    pub const ALL: [SortKey; 9] = [
        SortKey::WaitersNow,
        SortKey::MaxWaiters,
        SortKey::Waits,
        SortKey::WakeCalls,
        SortKey::Woken,
        SortKey::Spurious,
        SortKey::Timeouts,
        SortKey::Drift,
        SortKey::WaitTime,
    ];

    /// The key after this one in [`SortKey::ALL`], wrapping around.
    pub fn next(self) -> SortKey {
        let index = SortKey::ALL.iter().position(|&k| k == self).unwrap_or(0);
        SortKey::ALL[(index + 1) % SortKey::ALL.len()]
    }

    fn value(self, row: &Row) -> u64 {
        match self {
            SortKey::WaitersNow => row.waiters_now.max(0) as u64,
            SortKey::MaxWaiters => row.max_waiters.max(0) as u64,
            SortKey::Waits => row.waits,
            SortKey::WakeCalls => row.wake_calls,
            SortKey::Woken => row.woken,
            SortKey::Spurious => row.spurious.total(),
            SortKey::Timeouts => row.timeouts,
            SortKey::Drift => row.drift_ns.p99.unwrap_or(0),
            SortKey::WaitTime => row.wait_ns.p99.unwrap_or(0),
        }
    }
}

/// Sorts `rows` by `key`, largest first; ties by process then address, so the order is stable
/// from one refresh to the next.
pub fn sort_rows(rows: &mut [Row], key: SortKey) {
    rows.sort_by(|a, b| {
        key.value(b)
            .cmp(&key.value(a))
            .then(a.tgid.cmp(&b.tgid))
            .then(a.uaddr.cmp(&b.uaddr))
    });
}

/// Records that could not be reported, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Drops {
    /// Event records lost because the ring buffer was full (totals stay exact).
    pub ring_buffer_full: u64,
    /// Words or threads not recorded because a statistics map was full (totals incomplete).
    pub map_full: u64,
}

impl Drops {
    /// Whether anything was dropped.
    pub fn any(&self) -> bool {
        self.ring_buffer_full + self.map_full > 0
    }
}

/// Builds the rows of a statistics snapshot, labelling each word with `labels` (missing = "").
pub fn rows(stats: &[(FutexKey, FutexStats)], labels: &HashMap<FutexKey, String>) -> Vec<Row> {
    stats
        .iter()
        .map(|(key, stats)| {
            let label = labels.get(&normalized(*key)).cloned().unwrap_or_default();
            Row::new(*key, stats, label)
        })
        .collect()
}

/// The futex word a marker record is booked on, with its semaphore's address: every marker's
/// first argument is the semaphore, and the probes set the record's `uaddr` to the word (the
/// word argument, or for `acquired` and `timed_out` the word of the thread's last futex wait;
/// 0 if it made none).
pub fn semaphore_of_word(event: &Event) -> Option<(FutexKey, u64)> {
    if EventKind::from_u32(event.kind) != Some(EventKind::Marker) || event.uaddr == 0 {
        return None;
    }
    Some((
        FutexKey {
            tgid: event.tgid,
            pad: 0,
            uaddr: event.uaddr,
        },
        event.args[0],
    ))
}

/// The label of a futex word: the symbol it lives in if any, else the semaphore the markers
/// name for it (by symbol or address), else empty.
pub fn label(word_symbol: Option<String>, semaphore: Option<(u64, Option<String>)>) -> String {
    match (word_symbol, semaphore) {
        (Some(symbol), _) => symbol,
        (None, Some((_, Some(symbol)))) => format!("semaphore {symbol}"),
        (None, Some((address, None))) => format!("semaphore {address:#x}"),
        (None, None) => String::new(),
    }
}

/// The key with its padding cleared, so keys read from a map compare equal to built ones.
pub fn normalized(key: FutexKey) -> FutexKey {
    FutexKey { pad: 0, ..key }
}

/// How the traced target ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum Ending {
    /// The command exited with this status.
    Exited {
        /// Exit status.
        code: i32,
    },
    /// The command was killed by this signal.
    Killed {
        /// Signal number.
        signal: i32,
    },
    /// The traced process went away (attach mode).
    Gone,
    /// `--duration` elapsed.
    Duration,
    /// Interrupted (Ctrl-C or SIGTERM).
    Interrupted,
}

/// Everything the final summary says.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// What was traced, as the user named it.
    pub target: String,
    /// Processes traced: the command (or attached process) first, then its children by pid.
    pub pids: Vec<u32>,
    /// How long tracing lasted, in seconds.
    pub seconds: f64,
    /// How the trace ended.
    pub ending: Ending,
    /// Event records received from the kernel.
    pub events: u64,
    /// What was lost.
    pub drops: Drops,
    /// Warnings raised while tracing (missing hooks, no markers…), in order.
    pub notes: Vec<String>,
    /// One row per futex word, sorted by waits.
    pub futexes: Vec<Row>,
}

impl Summary {
    /// The summary as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a summary always serializes")
    }
}

fn hex<S: serde::Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("{value:#x}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futexscope_probes_common::markers::Marker;

    fn hist(entries: &[(usize, u64)]) -> [u64; HIST_BUCKETS] {
        let mut hist = [0; HIST_BUCKETS];
        for &(bucket, count) in entries {
            hist[bucket] = count;
        }
        hist
    }

    #[test]
    fn empty_histogram_has_no_percentiles() {
        assert_eq!(
            Percentiles::from_log2(&[0; HIST_BUCKETS]),
            Percentiles::default()
        );
    }

    #[test]
    fn percentiles_are_bucket_upper_bounds() {
        // 98 values in [1024, 2048), one in [2^20, 2^21), one in [2^30, 2^31).
        let p = Percentiles::from_log2(&hist(&[(10, 98), (20, 1), (30, 1)]));
        assert_eq!(p.p50, Some(2048));
        assert_eq!(p.p99, Some(1 << 21));
        assert_eq!(p.max, Some(1 << 31));
    }

    #[test]
    fn single_value_is_every_percentile() {
        let p = Percentiles::from_log2(&hist(&[(5, 1)]));
        assert_eq!((p.p50, p.p99, p.max), (Some(64), Some(64), Some(64)));
    }

    #[test]
    fn last_bucket_saturates() {
        let p = Percentiles::from_log2(&hist(&[(HIST_BUCKETS - 1, 3)]));
        assert_eq!(p.max, Some(1 << HIST_BUCKETS));
    }

    fn row(uaddr: u64, waits: u64, timeouts: u64) -> Row {
        let stats = FutexStats {
            waits,
            timeouts,
            ..FutexStats::ZERO
        };
        Row::new(
            FutexKey {
                tgid: 1,
                pad: 0,
                uaddr,
            },
            &stats,
            String::new(),
        )
    }

    #[test]
    fn sorts_largest_first_then_by_address() {
        let mut rows = vec![row(0x30, 5, 0), row(0x10, 9, 1), row(0x20, 5, 2)];
        sort_rows(&mut rows, SortKey::Waits);
        assert_eq!(
            rows.iter().map(|r| r.uaddr).collect::<Vec<_>>(),
            [0x10, 0x20, 0x30]
        );
        sort_rows(&mut rows, SortKey::Timeouts);
        assert_eq!(
            rows.iter().map(|r| r.uaddr).collect::<Vec<_>>(),
            [0x20, 0x10, 0x30]
        );
    }

    #[test]
    fn sort_keys_cycle_through_all() {
        let mut key = SortKey::Waits;
        for _ in 0..SortKey::ALL.len() {
            key = key.next();
        }
        assert_eq!(key, SortKey::Waits);
    }

    #[test]
    fn rows_take_labels_by_normalized_key() {
        let key = FutexKey {
            tgid: 7,
            pad: 0xdead,
            uaddr: 0x1000,
        };
        let labels = HashMap::from([(normalized(key), "SEM".to_owned())]);
        let rows = rows(&[(key, FutexStats::ZERO)], &labels);
        assert_eq!(rows[0].label, "SEM");
    }

    #[test]
    fn markers_name_the_semaphore_of_heap_words() {
        let mut event = Event {
            kind: EventKind::Marker as u32,
            tid: 2,
            tgid: 1,
            cpu: 0,
            ts_ns: 5,
            start_ns: 0,
            uaddr: 0x1008,
            uaddr2: 0,
            op: Marker::Acquired as u32,
            syscall: 0,
            ret: 0,
            deadline_ns: 0,
            args: [0x1000, 1, 0, 0, 0, 0],
            spurious: 0,
            clock: futexscope_probes_common::event::NO_CLOCK,
        };
        let (word, semaphore) = semaphore_of_word(&event).unwrap();
        assert_eq!((word.tgid, word.uaddr, semaphore), (1, 0x1008, 0x1000));
        event.uaddr = 0;
        assert_eq!(semaphore_of_word(&event), None);
        event.uaddr = 0x1008;
        event.kind = EventKind::Wait as u32;
        assert_eq!(semaphore_of_word(&event), None);

        assert_eq!(
            label(Some("POOL+8".into()), Some((0x1000, Some("POOL".into())))),
            "POOL+8"
        );
        assert_eq!(
            label(None, Some((0x1000, Some("QUEUE".into())))),
            "semaphore QUEUE"
        );
        assert_eq!(label(None, Some((0x1000, None))), "semaphore 0x1000");
        assert_eq!(label(None, None), "");
    }

    #[test]
    fn summary_json_has_hex_addresses_and_spurious_kinds() {
        let summary = Summary {
            target: "x".into(),
            pids: vec![1],
            seconds: 1.5,
            ending: Ending::Exited { code: 3 },
            events: 10,
            drops: Drops {
                ring_buffer_full: 2,
                map_full: 0,
            },
            notes: vec![],
            futexes: vec![row(0xabc, 4, 1)],
        };
        let json: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap();
        assert_eq!(json["futexes"][0]["uaddr"], "0xabc");
        assert_eq!(json["futexes"][0]["waits"], 4);
        assert_eq!(json["futexes"][0]["spurious"]["eintr"], 0);
        assert_eq!(json["ending"]["how"], "exited");
        assert_eq!(json["ending"]["code"], 3);
        assert_eq!(json["drops"]["ring_buffer_full"], 2);
    }
}
