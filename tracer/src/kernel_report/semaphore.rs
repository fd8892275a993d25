//! The battery's experiments on the futexscope semaphore: in what order its waiters get
//! released permits, and how often a contended semaphore's futex waits end without the
//! permits (stolen) or without any wake (spurious), as futexscope's probes classify them from
//! the semaphore's own markers.

use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use futexscope_probes_common::{maps::FutexStats, markers::Marker};
use futexscope_semaphore::{Permit, Semaphore};
use serde::{Deserialize, Serialize};

use super::{
    Battery, KernelReportError,
    experiments::{FALL_ASLEEP_LIMIT_NS, WakeOrder, failed, join, spawn_with_tid},
    sys,
};
use crate::{
    collect::{ebpf::Probes, markers},
    decode::{self, Record},
    errors::Chain,
};

/// Wake order of semaphore waiters that each ask for the same number of permits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SemaphoreWakeOrder {
    /// Permits each waiter asks for (1: single-permit waiters, woken one per permit; 2 or
    /// more: multi-permit waiters, all woken by every release that makes 2 available).
    pub tokens: u32,
    /// The trials' orders: waiter `i` is the `i`-th to have parked.
    #[serde(flatten)]
    pub order: WakeOrder,
}

/// W threads each park in `acquire(tokens)` on a semaphore holding no permits, each only once
/// the previous one is registered and asleep; then `release(tokens)` W times, each after the
/// previous winner returned and every other waiter is asleep again. The order in which the
/// acquires return is the wake order: the kernel's for single-permit waiters (one futex wake
/// per permit), the kernel's and the scheduler's for multi-permit waiters (all are woken and
/// race for the permits).
pub fn wake_order(battery: Battery, tokens: u32) -> Result<SemaphoreWakeOrder, KernelReportError> {
    const EXPERIMENT: &str = "semaphore wake order";
    let waiters = 4;
    let trials = battery.pick(5, 40);
    let mut orders = Vec::with_capacity(trials);
    for _ in 0..trials {
        let semaphore = Arc::new(Semaphore::new(0));
        let order = Arc::new(Mutex::new(Vec::new()));
        let (mut handles, mut tids) = (Vec::new(), Vec::new());
        for index in 0..waiters {
            let (semaphore_, order_) = (Arc::clone(&semaphore), Arc::clone(&order));
            let (handle, tid) = spawn_with_tid(move || {
                // Kept taken, so the permits of one release go to exactly one waiter.
                let result = semaphore_.acquire(tokens).map(Permit::forget);
                order_.lock().expect("no panics while held").push(index);
                result
            });
            handles.push(handle);
            tids.push(tid);
            // Registered and asleep: in the futex wait (the acquire sleeps nowhere else).
            let registered = index as u32 + 1;
            if !until(|| semaphore.waiters() == registered && sys::is_sleeping(tid)) {
                return Err(failed(
                    EXPERIMENT,
                    "a waiter did not fall asleep in `acquire` within 5 s",
                ));
            }
        }
        for woken in 1..=waiters {
            semaphore
                .release(tokens)
                .map_err(|e| failed(EXPERIMENT, e.to_string()))?;
            if !until(|| order.lock().expect("no panics while held").len() >= woken) {
                return Err(failed(EXPERIMENT, "no waiter got the permits within 5 s"));
            }
            // Multi-permit waiters were all woken: the losers must be back asleep before the
            // next release, or it would find some of them running.
            let done = order.lock().expect("no panics while held").clone();
            if done.len() > woken {
                return Err(failed(EXPERIMENT, "two waiters got one release's permits"));
            }
            let left = (waiters - woken) as u32;
            let asleep = until(|| {
                semaphore.waiters() == left
                    && tids
                        .iter()
                        .enumerate()
                        .all(|(i, &tid)| done.contains(&i) || sys::is_sleeping(tid))
            });
            if !asleep {
                return Err(failed(
                    EXPERIMENT,
                    "a woken waiter did not get the permits or sleep again within 5 s",
                ));
            }
        }
        for handle in handles {
            join(EXPERIMENT, handle)?.map_err(|e| failed(EXPERIMENT, e.to_string()))?;
        }
        if semaphore.available() != 0 {
            return Err(failed(EXPERIMENT, "permits were left over"));
        }
        orders.push(order.lock().expect("no panics while held").clone());
    }
    Ok(SemaphoreWakeOrder {
        tokens,
        order: WakeOrder::classify(waiters, &orders),
    })
}

/// Polls `condition` (yielding in between) for at most [`FALL_ASLEEP_LIMIT_NS`]; whether it
/// became true.
fn until(mut condition: impl FnMut() -> bool) -> bool {
    let start = sys::monotonic();
    while !condition() {
        if sys::monotonic() - start > FALL_ASLEEP_LIMIT_NS {
            return false;
        }
        thread::yield_now();
    }
    true
}

/// A contended semaphore's wakeups.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContendedSemaphore {
    /// Threads contending.
    pub threads: usize,
    /// Permits the semaphore holds (fewer than `threads * tokens`).
    pub permits: u32,
    /// Permits each acquire asks for.
    pub tokens: u32,
    /// Acquires the experiment made (0 when it did not run).
    pub acquires: u64,
    /// What the probes saw, or why they could not watch.
    pub wakeups: Wakeups,
}

/// The probes' account of a contended semaphore's futex waits, or why there is none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Wakeups {
    /// Traced by the probes with the semaphore's markers attached.
    Measured(TracedWakeups),
    /// Not measured: the probes or the markers were unavailable.
    NotMeasured {
        /// Why.
        reason: String,
    },
}

/// Counts of one contended run, from futexscope's probes. The per-word counts are the
/// probes' exact totals over the semaphore's futex words; `slept_acquires` and `marker_waits`
/// come from the `acquired` and `wait_begin` marker records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TracedWakeups {
    /// Acquires that made at least one futex wait (`acquired` markers).
    pub slept_acquires: u64,
    /// Futex waits the semaphore announced (`wait_begin` markers).
    pub marker_waits: u64,
    /// Futex wait calls on the semaphore's words, as the probes' syscall hooks counted them.
    pub futex_waits: u64,
    /// Waits that returned 0 (woken).
    pub woken: u64,
    /// Woken waits followed by `acquired`: the wake gave the permits.
    pub satisfied: u64,
    /// Woken waits followed by another wait without `acquired` (the probes' "lost the race"):
    /// another thread took the permits first.
    pub stolen: u64,
    /// Woken waits with no wake call on the word since the wait began (the probes' "no
    /// waker").
    pub spurious: u64,
    /// Of `spurious` (as far as their records were kept), those during whose start a wake
    /// call on the word was inside the kernel: the probes compare wake-call counts at the
    /// wait's syscall entry, so that call may have been the waker after all.
    pub spurious_wake_in_flight: u64,
    /// Waits that found the word already changed (EAGAIN).
    pub eagain: u64,
    /// Waits interrupted by a signal.
    pub eintr: u64,
    /// Event records the probes dropped during the run (the marker counts are then short).
    pub dropped_records: u64,
}

impl TracedWakeups {
    /// Where the independent counts disagree; empty when they all agree.
    pub fn disagreements(&self, acquires: u64) -> Vec<String> {
        let mut found = Vec::new();
        if self.marker_waits != self.futex_waits {
            found.push(format!(
                "markers count {} waits, syscall hooks {}",
                self.marker_waits, self.futex_waits
            ));
        }
        if self.woken != self.satisfied + self.stolen {
            found.push(format!(
                "{} woken but {} satisfied + {} stolen",
                self.woken, self.satisfied, self.stolen
            ));
        }
        if self.slept_acquires > acquires {
            found.push(format!(
                "{} slept acquires of {acquires} acquires",
                self.slept_acquires
            ));
        }
        if self.dropped_records > 0 {
            found.push(format!("{} records dropped", self.dropped_records));
        }
        found
    }
}

/// Attaches the probes' marker program to all the semaphore markers of this very binary, so the
/// probes see what the semaphore experiments' acquires want and the `wait_begin` records give
/// the semaphore's own count of its waits; `Err` says why not.
pub fn attach_own_markers(probes: &mut Probes) -> Result<(), String> {
    let exe = Path::new("/proc/self/exe");
    let attached =
        markers::attach_file(probes, exe, exe, markers::MarkerSet::All).map_err(|e| {
            format!(
                "cannot attach to this binary's semaphore markers: {}",
                Chain(&e)
            )
        })?;
    if !attached.skipped.is_empty() {
        return Err(format!(
            "some semaphore marker sites cannot be read: {}",
            attached.skipped.join("; ")
        ));
    }
    if attached.sites == 0 {
        return Err(
            "this binary's semaphore has no markers (built without the `markers` feature)".into(),
        );
    }
    Ok(())
}

/// How long a contending thread holds its permits, and then pauses before asking again.
const HOLD: Duration = Duration::from_micros(50);

/// `threads` threads each acquire `tokens` permits of a semaphore holding `permits`, hold them
/// for a short sleep, release them and sleep as long again, `operations` times each, while this thread drains the
/// probes' records. `probes` is `Err(why)` when the probes or markers are unavailable: the
/// result then says so and nothing runs.
pub fn contended(
    battery: Battery,
    probes: Result<&mut Probes, &str>,
    permits: u32,
    tokens: u32,
) -> Result<ContendedSemaphore, KernelReportError> {
    const EXPERIMENT: &str = "contended semaphore";
    let threads = 4;
    let operations = battery.pick(50, 400) as u64;
    let probes = match probes {
        Ok(probes) => probes,
        Err(why) => {
            return Ok(ContendedSemaphore {
                threads,
                permits,
                tokens,
                acquires: 0,
                wakeups: Wakeups::NotMeasured { reason: why.into() },
            });
        }
    };
    let probe_error =
        |e: &(dyn std::error::Error + 'static)| failed(EXPERIMENT, Chain(e).to_string());
    // Records of the earlier experiments: not this one's.
    probes.read_events(|_| {});
    let drops_before = probes.drops().map_err(|e| probe_error(&e))?;
    let semaphore = Arc::new(Semaphore::new(permits));
    let range = {
        let start = Arc::as_ptr(&semaphore) as u64;
        start..start + size_of::<Semaphore>() as u64
    };
    // A freed semaphore of an earlier experiment may have had the same address: count only
    // what happens from now on.
    let stats_before = semaphore_stats(probes, &range).map_err(|e| probe_error(&e))?;
    let acquires = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (semaphore, acquires) = (Arc::clone(&semaphore), Arc::clone(&acquires));
            thread::spawn(move || -> Result<(), String> {
                for _ in 0..operations {
                    let permit = semaphore.acquire(tokens).map_err(|e| e.to_string())?;
                    // Relaxed: a plain event counter, read after the join.
                    acquires.fetch_add(1, Ordering::Relaxed);
                    // Held across a sleep, so the others exhaust their spinning and sleep.
                    thread::sleep(HOLD);
                    drop(permit);
                    // And a pause before the next acquire, so the released permits are not
                    // simply taken back by the releaser: the woken waiter races the threads
                    // coming back from their pause.
                    thread::sleep(HOLD);
                }
                Ok(())
            })
        })
        .collect();
    let (mut slept_acquires, mut marker_waits) = (0, 0);
    // (word, syscall entry, syscall exit) of the wake calls, and the waits the probes found
    // woken with no waker.
    let (mut wakes, mut no_waker) = (Vec::new(), Vec::new());
    let mut tally = |probes: &mut Probes| {
        probes.read_events(|event| {
            let on_semaphore = |call: &decode::Call| range.contains(&call.uaddr);
            let times = |call: &decode::Call| (call.uaddr, call.start_ns, call.end_ns);
            match Record::decode(event) {
                // A marker record of this semaphore (every marker's first argument is `sem`).
                Some(Record::Marker(hit)) if hit.semaphore() == range.start => match hit.marker {
                    Some(Marker::Acquired) => slept_acquires += 1,
                    Some(Marker::WaitBegin) => marker_waits += 1,
                    _ => {}
                },
                Some(Record::Wake(wake)) if on_semaphore(&wake.call) => {
                    wakes.push(times(&wake.call));
                }
                Some(Record::Wait(wait))
                    if on_semaphore(&wait.call) && wait.spurious.no_waker() =>
                {
                    no_waker.push(times(&wait.call));
                }
                _ => {}
            }
        });
    };
    while !handles.iter().all(thread::JoinHandle::is_finished) {
        probes
            .wait_for_events(Duration::from_millis(5))
            .map_err(|e| probe_error(&e))?;
        tally(probes);
    }
    for handle in handles {
        join(EXPERIMENT, handle)?.map_err(|e| failed(EXPERIMENT, e))?;
    }
    tally(probes);
    let spurious_wake_in_flight = wake_in_flight(&no_waker, &wakes);
    let drops_after = probes.drops().map_err(|e| probe_error(&e))?;
    let stats = semaphore_stats(probes, &range).map_err(|e| probe_error(&e))?;
    let delta = |field: fn(&FutexStats) -> u64| field(&stats) - field(&stats_before);
    Ok(ContendedSemaphore {
        threads,
        permits,
        tokens,
        // Relaxed: every thread that counted has been joined.
        acquires: acquires.load(Ordering::Relaxed),
        wakeups: Wakeups::Measured(TracedWakeups {
            slept_acquires,
            marker_waits,
            futex_waits: delta(|s| s.waits),
            woken: delta(|s| s.wakeups),
            satisfied: delta(|s| s.woken_satisfied),
            stolen: delta(|s| s.lost_race),
            spurious: delta(|s| s.no_waker),
            spurious_wake_in_flight,
            eagain: delta(|s| s.eagain),
            eintr: delta(|s| s.eintr),
            dropped_records: (drops_after.ring_buffer_full - drops_before.ring_buffer_full)
                + (drops_after.map_full - drops_before.map_full),
        }),
    })
}

/// A futex call on one word: (word, syscall entry ns, syscall exit ns).
type Call = (u64, u64, u64);

/// How many of `waits` began while one of `wakes` on the same word was inside the kernel. The
/// probes count a wake call for a wait only if it entered the kernel after the wait did, but
/// one already inside may still have been its waker.
fn wake_in_flight(waits: &[Call], wakes: &[Call]) -> u64 {
    waits
        .iter()
        .filter(|(word, wait_start, _)| {
            wakes
                .iter()
                .any(|(w, start, end)| w == word && start <= wait_start && end >= wait_start)
        })
        .count() as u64
}

/// The probes' totals summed over the futex words of this process inside `range` (the
/// semaphore's memory, which holds its futex words).
fn semaphore_stats(
    probes: &Probes,
    range: &std::ops::Range<u64>,
) -> Result<FutexStats, crate::collect::ebpf::LoadError> {
    let tgid = std::process::id();
    let mut sum = FutexStats::ZERO;
    for (key, stats) in probes.futex_stats()? {
        if key.tgid == tgid && range.contains(&key.uaddr) {
            sum.waits += stats.waits;
            sum.wakeups += stats.wakeups;
            sum.woken_satisfied += stats.woken_satisfied;
            sum.lost_race += stats.lost_race;
            sum.no_waker += stats.no_waker;
            sum.eagain += stats.eagain;
            sum.eintr += stats.eintr;
        }
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::{TracedWakeups, wake_in_flight};

    #[test]
    fn a_wake_counts_as_in_flight_only_on_the_same_word_around_the_wait_start() {
        let wakes = [(0x10, 100, 200), (0x14, 300, 400)];
        let waits = [
            (0x10, 150, 500), // began while the wake on 0x10 was in the kernel
            (0x10, 250, 500), // that wake had returned
            (0x14, 150, 500), // the wake on 0x14 came later
            (0x18, 350, 500), // another word
            (0x14, 300, 301), // began as the wake entered
        ];
        assert_eq!(wake_in_flight(&waits, &wakes), 2);
        assert_eq!(wake_in_flight(&waits, &[]), 0);
    }

    #[test]
    fn disagreements_name_each_mismatch() {
        let agreeing = TracedWakeups {
            slept_acquires: 10,
            marker_waits: 12,
            futex_waits: 12,
            woken: 9,
            satisfied: 7,
            stolen: 2,
            spurious: 0,
            spurious_wake_in_flight: 0,
            eagain: 3,
            eintr: 0,
            dropped_records: 0,
        };
        assert!(agreeing.disagreements(10).is_empty());
        let found = TracedWakeups {
            futex_waits: 13,
            stolen: 1,
            dropped_records: 4,
            ..agreeing.clone()
        }
        .disagreements(9);
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found[0].contains("12 waits") && found[0].contains("13"));
        assert!(found[1].contains("9 woken"));
        assert!(found[2].contains("10 slept acquires of 9"));
        assert!(found[3].contains("4 records dropped"));
    }
}
