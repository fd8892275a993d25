//! The battery's experiments. Each uses its own futex words (see [`Words`]) so the probes'
//! per-word counts can be checked against the experiment's.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering},
        mpsc,
    },
    thread,
};

use serde::{Deserialize, Serialize};

use super::{Battery, Distribution, KernelReportError, Word, Words, sys};

/// How long a helper thread may take to fall asleep in a futex before the experiment fails.
pub(super) const FALL_ASLEEP_LIMIT_NS: u64 = 5_000_000_000;

pub(super) fn failed(experiment: &'static str, reason: impl Into<String>) -> KernelReportError {
    KernelReportError::Experiment {
        experiment,
        reason: reason.into(),
    }
}

/// Starts a thread that publishes its tid, then runs `body`.
pub(super) fn spawn_with_tid<T: Send + 'static>(
    body: impl FnOnce() -> T + Send + 'static,
) -> (thread::JoinHandle<T>, i32) {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        tx.send(sys::gettid())
            .expect("the spawner waits for the tid");
        body()
    });
    let tid = rx.recv().expect("the thread sends its tid first");
    (handle, tid)
}

pub(super) fn join<T>(
    experiment: &'static str,
    handle: thread::JoinHandle<T>,
) -> Result<T, KernelReportError> {
    handle
        .join()
        .map_err(|_| failed(experiment, "a helper thread panicked"))
}

/// The order in which W waiters parked one after another on one word were woken one at a time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WakeOrder {
    /// Waiters per trial.
    pub waiters: usize,
    /// Trials.
    pub trials: usize,
    /// Trials woken in the order they parked.
    pub fifo: usize,
    /// Trials woken in reverse order.
    pub lifo: usize,
    /// Trials woken in another order.
    pub other: usize,
    /// `fifo`, `lifo` or `mixed`: what the trials show.
    pub verdict: String,
    /// For each waiter, in the order they parked: the trials in which it was woken first.
    pub first_woken: Vec<usize>,
}

/// W threads park on one word, each only after the previous one is asleep; then FUTEX_WAKE
/// with count 1, W times, each after the previously woken thread reported.
pub fn wake_order(battery: Battery, words: &mut Words) -> Result<WakeOrder, KernelReportError> {
    const EXPERIMENT: &str = "wake order";
    let waiters = 4;
    let trials = battery.pick(5, 40);
    let word = words.new_word(EXPERIMENT);
    let mut orders = Vec::with_capacity(trials);
    for _ in 0..trials {
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for index in 0..waiters {
            let (word, order) = (Arc::clone(&word), Arc::clone(&order));
            let (handle, tid) = spawn_with_tid(move || {
                // The value stays 0, so the wait returns only when woken (a spurious
                // return would show as an order other than FIFO or LIFO).
                let result = word.wait(libc::FUTEX_WAIT, 0, None, 0);
                order.lock().expect("no panics while held").push(index);
                result
            });
            if !sys::wait_until_sleeping(tid, FALL_ASLEEP_LIMIT_NS) {
                return Err(failed(
                    EXPERIMENT,
                    "a waiter did not fall asleep within 5 s",
                ));
            }
            handles.push(handle);
        }
        for woken in 1..=waiters {
            let count = sys::wake(word.atomic(), 1)
                .map_err(|e| failed(EXPERIMENT, format!("FUTEX_WAKE: errno {e}")))?;
            if count != 1 {
                return Err(failed(
                    EXPERIMENT,
                    format!("FUTEX_WAKE(1) woke {count} with waiters parked"),
                ));
            }
            let start = sys::monotonic();
            while order.lock().expect("no panics while held").len() < woken {
                if sys::monotonic() - start > FALL_ASLEEP_LIMIT_NS {
                    return Err(failed(EXPERIMENT, "a woken waiter did not run within 5 s"));
                }
                thread::yield_now();
            }
        }
        for handle in handles {
            join(EXPERIMENT, handle)?
                .map_err(|e| failed(EXPERIMENT, format!("FUTEX_WAIT: errno {e}")))?;
        }
        orders.push(order.lock().expect("no panics while held").clone());
    }
    Ok(WakeOrder::classify(waiters, &orders))
}

impl WakeOrder {
    /// Classifies `orders`, one per trial: the indexes of `waiters` waiters, numbered in the
    /// order they parked, in the order they were woken.
    pub(crate) fn classify(waiters: usize, orders: &[Vec<usize>]) -> WakeOrder {
        let parked: Vec<usize> = (0..waiters).collect();
        let fifo = orders.iter().filter(|order| **order == parked).count();
        let lifo = orders
            .iter()
            .filter(|order| **order != parked && order.iter().rev().eq(parked.iter()))
            .count();
        let trials = orders.len();
        let verdict = match (fifo, lifo) {
            (f, _) if f == trials => "fifo",
            (_, l) if l == trials => "lifo",
            _ => "mixed",
        };
        let mut first_woken = vec![0; waiters];
        for first in orders.iter().filter_map(|order| order.first()) {
            first_woken[*first] += 1;
        }
        WakeOrder {
            waiters,
            trials,
            fifo,
            lifo,
            other: trials - fifo - lifo,
            verdict: verdict.into(),
            first_woken,
        }
    }
}

/// Wake-to-run latency: from just before FUTEX_WAKE to the woken thread running.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WakeLatency {
    /// Waker and waiter pinned to the same CPU.
    pub same_cpu: Distribution,
    /// Waker and waiter pinned to two different CPUs (`None` with one CPU).
    pub cross_cpu: Option<Distribution>,
}

/// Ping-pong between a waker and a waiter pinned to given CPUs; each sample is taken only when
/// the waiter was asleep when the wake was issued.
pub fn wake_latency(battery: Battery, words: &mut Words) -> Result<WakeLatency, KernelReportError> {
    let rounds = battery.pick(100, 1000);
    let cpus = sys::allowed_cpus();
    let same_cpu = ping_pong("wake latency, same CPU", cpus[0], cpus[0], rounds, words)?;
    let cross_cpu = match cpus.get(1) {
        Some(&other) => Some(ping_pong(
            "wake latency, cross CPU",
            cpus[0],
            other,
            rounds,
            words,
        )?),
        None => None,
    };
    Ok(WakeLatency {
        same_cpu,
        cross_cpu,
    })
}

fn ping_pong(
    experiment: &'static str,
    waker_cpu: usize,
    waiter_cpu: usize,
    rounds: usize,
    words: &mut Words,
) -> Result<Distribution, KernelReportError> {
    let ping = words.new_word(experiment);
    let pong = words.new_word(experiment);
    let woken_at = Arc::new(AtomicU64::new(0));
    let (waiter_ping, waiter_pong, waiter_woken_at) =
        (Arc::clone(&ping), Arc::clone(&pong), Arc::clone(&woken_at));
    let (waiter, waiter_tid) = spawn_with_tid(move || -> Result<Vec<bool>, String> {
        sys::pin_to_cpu(waiter_cpu).map_err(|e| e.to_string())?;
        let mut slept = Vec::with_capacity(rounds);
        for round in 1..=rounds as u32 {
            let mut did_sleep = false;
            // Acquire: pairs with the waker's Release store of the round number.
            while waiter_ping.atomic().load(Ordering::Acquire) != round {
                let result = waiter_ping.wait(libc::FUTEX_WAIT, round - 1, None, 0);
                did_sleep |= result == Ok(0);
            }
            // Release: publishes the wake-up time before the waker sees the round answered.
            waiter_woken_at.store(sys::monotonic(), Ordering::Release);
            slept.push(did_sleep);
            waiter_pong.atomic().store(round, Ordering::Release);
            sys::wake(waiter_pong.atomic(), 1).map_err(|e| format!("FUTEX_WAKE: errno {e}"))?;
        }
        Ok(slept)
    });
    let waker = thread::spawn(move || -> Result<Vec<i64>, String> {
        sys::pin_to_cpu(waker_cpu).map_err(|e| e.to_string())?;
        let mut latencies = Vec::with_capacity(rounds);
        for round in 1..=rounds as u32 {
            sys::wait_until_sleeping(waiter_tid, FALL_ASLEEP_LIMIT_NS);
            let woke_at = sys::monotonic();
            // Release: the waiter's Acquire load sees the new round once woken.
            ping.atomic().store(round, Ordering::Release);
            sys::wake(ping.atomic(), 1).map_err(|e| format!("FUTEX_WAKE: errno {e}"))?;
            // Acquire: pairs with the waiter's Release store of the round, after `woken_at`.
            while pong.atomic().load(Ordering::Acquire) != round {
                let _ = pong.wait(libc::FUTEX_WAIT, round - 1, None, 0);
            }
            latencies.push(woken_at.load(Ordering::Acquire) as i64 - woke_at as i64);
        }
        Ok(latencies)
    });
    let latencies = join(experiment, waker)?.map_err(|e| failed(experiment, e))?;
    let slept = join(experiment, waiter)?.map_err(|e| failed(experiment, e))?;
    let samples = latencies
        .into_iter()
        .zip(slept)
        .filter(|(_, slept)| *slept)
        .map(|(l, _)| l)
        .collect();
    Ok(Distribution::of(samples))
}

/// Which wait operation and clock a timed wait used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimedOp {
    /// FUTEX_WAIT with a relative timeout (CLOCK_MONOTONIC).
    WaitRelative,
    /// FUTEX_WAIT_BITSET with an absolute CLOCK_MONOTONIC deadline.
    WaitBitsetAbsolute,
}

/// How late timed waits that timed out returned, past their deadline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Overshoot {
    /// The operation.
    pub op: TimedOp,
    /// The requested timeout.
    pub timeout_ns: u64,
    /// The thread's timer slack during the waits.
    pub timer_slack_ns: u64,
    /// Return time minus deadline.
    pub overshoot: Distribution,
    /// Waits that returned ETIMEDOUT before their deadline (never expected).
    pub early: usize,
}

/// 100 µs, 1 ms and 10 ms timeouts, with the default timer slack and with 1 ns, for relative
/// FUTEX_WAIT and absolute FUTEX_WAIT_BITSET; each set in its own thread so the slack change
/// stays there.
pub fn timeout_overshoot(
    battery: Battery,
    words: &mut Words,
) -> Result<Vec<Overshoot>, KernelReportError> {
    const EXPERIMENT: &str = "timeout overshoot";
    let default_slack = sys::timer_slack();
    let mut results = Vec::new();
    for (timeout_ns, samples) in [
        (100_000, battery.pick(20, 200)),
        (1_000_000, battery.pick(10, 60)),
        (10_000_000, battery.pick(3, 15)),
    ] {
        for slack in [default_slack, 1] {
            for op in [TimedOp::WaitRelative, TimedOp::WaitBitsetAbsolute] {
                let word = words.new_word(EXPERIMENT);
                let handle = thread::spawn(move || -> Result<(Vec<i64>, usize), String> {
                    sys::set_timer_slack(slack).map_err(|e| format!("PR_SET_TIMERSLACK: {e}"))?;
                    let (mut overshoots, mut early) = (Vec::with_capacity(samples), 0);
                    while overshoots.len() + early < samples {
                        let start = sys::monotonic();
                        let (result, deadline) = match op {
                            TimedOp::WaitRelative => {
                                let timeout = sys::timespec(timeout_ns);
                                (
                                    word.wait(libc::FUTEX_WAIT, 0, Some(&timeout), 0),
                                    start + timeout_ns,
                                )
                            }
                            TimedOp::WaitBitsetAbsolute => {
                                let deadline = start + timeout_ns;
                                let at = sys::timespec(deadline);
                                let any = libc::FUTEX_BITSET_MATCH_ANY as u32;
                                (
                                    word.wait(libc::FUTEX_WAIT_BITSET, 0, Some(&at), any),
                                    deadline,
                                )
                            }
                        };
                        let returned = sys::monotonic();
                        match result {
                            Err(libc::ETIMEDOUT) if returned < deadline => early += 1,
                            Err(libc::ETIMEDOUT) => overshoots.push((returned - deadline) as i64),
                            // A stray signal: not a timeout, take another sample.
                            Err(libc::EINTR) => {}
                            other => {
                                return Err(format!(
                                    "a timed wait returned {other:?}, not ETIMEDOUT"
                                ));
                            }
                        }
                    }
                    Ok((overshoots, early))
                });
                let (overshoots, early) =
                    join(EXPERIMENT, handle)?.map_err(|e| failed(EXPERIMENT, e))?;
                results.push(Overshoot {
                    op,
                    timeout_ns,
                    timer_slack_ns: slack,
                    overshoot: Distribution::of(overshoots),
                    early,
                });
            }
        }
    }
    Ok(results)
}

/// What a handled signal did to a futex wait.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EintrCase {
    /// The wait had a timeout (a relative 10 s one).
    pub timed: bool,
    /// The handler was installed with SA_RESTART.
    pub sa_restart: bool,
    /// Trials.
    pub trials: usize,
    /// Trials where the wait returned EINTR.
    pub interrupted: usize,
    /// Trials where the wait went on after the handler ran (restarted) until woken.
    pub restarted: usize,
    /// `eintr`, `restarted` or `mixed`.
    pub verdict: String,
}

/// A thread waits (timed or not); once asleep it gets SIGUSR2, whose handler counts it. Either
/// the wait returns EINTR, or it goes on and is then woken by FUTEX_WAKE.
pub fn eintr(battery: Battery, words: &mut Words) -> Result<Vec<EintrCase>, KernelReportError> {
    const EXPERIMENT: &str = "EINTR";
    let trials = battery.pick(2, 8);
    let mut cases = Vec::new();
    for timed in [false, true] {
        for sa_restart in [false, true] {
            let word = words.new_word(EXPERIMENT);
            let old = sys::install_counting_handler(libc::SIGUSR2, sa_restart);
            let outcome = eintr_trials(&word, timed, trials);
            sys::restore_signal(libc::SIGUSR2, &old);
            let (interrupted, restarted) = outcome?;
            let verdict = match (interrupted, restarted) {
                (i, 0) if i == trials => "eintr",
                (0, r) if r == trials => "restarted",
                _ => "mixed",
            };
            cases.push(EintrCase {
                timed,
                sa_restart,
                trials,
                interrupted,
                restarted,
                verdict: verdict.into(),
            });
        }
    }
    Ok(cases)
}

fn eintr_trials(
    word: &Arc<Word>,
    timed: bool,
    trials: usize,
) -> Result<(usize, usize), KernelReportError> {
    const EXPERIMENT: &str = "EINTR";
    let (mut interrupted, mut restarted) = (0, 0);
    for _ in 0..trials {
        let finished = Arc::new(AtomicI32::new(0));
        let (waiter_word, waiter_finished) = (Arc::clone(word), Arc::clone(&finished));
        let (handle, tid) = spawn_with_tid(move || {
            let timeout = sys::timespec(10_000_000_000);
            let result = waiter_word.wait(libc::FUTEX_WAIT, 0, timed.then_some(&timeout), 0);
            // Release: the main thread reads it after seeing the wait end.
            waiter_finished.store(1, Ordering::Release);
            result
        });
        if !sys::wait_until_sleeping(tid, FALL_ASLEEP_LIMIT_NS) {
            return Err(failed(
                EXPERIMENT,
                "the waiter did not fall asleep within 5 s",
            ));
        }
        // Relaxed: the counter is only compared with itself across the handler's run.
        let handled_before = sys::SIGNALS_HANDLED.load(Ordering::Relaxed);
        sys::signal_thread(tid, libc::SIGUSR2);
        // Wait for the handler to run, then give an interrupted wait time to return.
        let start = sys::monotonic();
        while sys::SIGNALS_HANDLED.load(Ordering::Relaxed) == handled_before {
            if sys::monotonic() - start > FALL_ASLEEP_LIMIT_NS {
                return Err(failed(
                    EXPERIMENT,
                    "the signal handler did not run within 5 s",
                ));
            }
            thread::yield_now();
        }
        // After the handler, the thread either returns to user space (EINTR) or re-enters the
        // wait: wait until it is finished or asleep again.
        let start = sys::monotonic();
        loop {
            // Acquire: pairs with the waiter's Release store.
            if finished.load(Ordering::Acquire) == 1 {
                break;
            }
            if sys::is_sleeping(tid) && sys::monotonic() - start > 20_000_000 {
                sys::wake(word.atomic(), 1)
                    .map_err(|e| failed(EXPERIMENT, format!("FUTEX_WAKE: errno {e}")))?;
            }
            if sys::monotonic() - start > FALL_ASLEEP_LIMIT_NS {
                return Err(failed(
                    EXPERIMENT,
                    "the waiter neither returned nor slept again within 5 s",
                ));
            }
            thread::yield_now();
        }
        match join(EXPERIMENT, handle)? {
            Err(libc::EINTR) => interrupted += 1,
            Ok(0) => restarted += 1,
            other => return Err(failed(EXPERIMENT, format!("the wait returned {other:?}"))),
        }
    }
    Ok((interrupted, restarted))
}

/// `futex_waitv` behaviour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Waitv {
    /// Waiting on two words and waking the second returns index 1.
    pub returns_woken_index: bool,
    /// A word whose value differs makes the call fail with EAGAIN at once.
    pub mismatch_gives_eagain: bool,
    /// An absolute CLOCK_MONOTONIC deadline 1 ms ahead gives ETIMEDOUT.
    pub deadline_gives_etimedout: bool,
}

fn waitv_call(entries: &[sys::FutexWaitv], deadline_ns: Option<u64>) -> Result<libc::c_long, i32> {
    let deadline = deadline_ns.map(sys::timespec);
    let deadline_ptr = deadline
        .as_ref()
        .map_or(std::ptr::null(), |d| d as *const libc::timespec);
    // SAFETY: `entries` and `deadline` are live for the call; the words they name are live
    // atomics owned by the caller.
    sys::check(unsafe {
        libc::syscall(
            sys::SYS_FUTEX_WAITV,
            entries.as_ptr(),
            entries.len() as u32,
            0u32,
            deadline_ptr,
            libc::CLOCK_MONOTONIC,
        )
    })
}

/// Runs the `futex_waitv` checks (only called when the kernel has it).
pub fn waitv(words: &mut Words) -> Result<Waitv, KernelReportError> {
    const EXPERIMENT: &str = "futex_waitv";
    let first = words.new_word(EXPERIMENT);
    let second = words.new_word(EXPERIMENT);
    let (a, b) = (Arc::clone(&first), Arc::clone(&second));
    let (handle, tid) = spawn_with_tid(move || {
        let entries = [
            sys::waitv_private(a.atomic(), 0),
            sys::waitv_private(b.atomic(), 0),
        ];
        let result = waitv_call(&entries, None);
        a.count(&result);
        b.count(&result);
        result
    });
    if !sys::wait_until_sleeping(tid, FALL_ASLEEP_LIMIT_NS) {
        return Err(failed(
            EXPERIMENT,
            "the waiter did not fall asleep within 5 s",
        ));
    }
    sys::wake(second.atomic(), 1)
        .map_err(|e| failed(EXPERIMENT, format!("FUTEX_WAKE: errno {e}")))?;
    let returns_woken_index = join(EXPERIMENT, handle)? == Ok(1);

    second.atomic().store(7, Ordering::Relaxed);
    let entries = [
        sys::waitv_private(first.atomic(), 0),
        sys::waitv_private(second.atomic(), 0),
    ];
    let mismatch = waitv_call(&entries, None);
    // One call waiting on both words: a wait on each, as the probes count it.
    first.count(&mismatch);
    second.count(&mismatch);
    let mismatch_gives_eagain = mismatch == Err(libc::EAGAIN);

    let entries = [sys::waitv_private(first.atomic(), 0)];
    let timed = waitv_call(&entries, Some(sys::monotonic() + 1_000_000));
    first.count(&timed);
    let deadline_gives_etimedout = timed == Err(libc::ETIMEDOUT);
    Ok(Waitv {
        returns_woken_index,
        mismatch_gives_eagain,
        deadline_gives_etimedout,
    })
}

/// Requeue behaviour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Requeue {
    /// FUTEX_CMP_REQUEUE with 3 waiters, wake 1, requeue the rest.
    pub cmp_requeue: RequeueOutcome,
    /// The same with futex2 `futex_requeue` (`None` when the kernel lacks it).
    pub futex2_requeue: Option<RequeueOutcome>,
}

/// What one requeue operation did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequeueOutcome {
    /// The call's return value (woken + requeued).
    pub returned: i64,
    /// Threads then woken from the target word by FUTEX_WAKE.
    pub woken_from_target: i64,
    /// A mismatched expected value made the call fail with EAGAIN.
    pub mismatch_gives_eagain: bool,
}

/// Runs FUTEX_CMP_REQUEUE, and futex2 `futex_requeue` when `futex2` says the kernel has it.
pub fn requeue(futex2: bool, words: &mut Words) -> Result<Requeue, KernelReportError> {
    let cmp_requeue = requeue_once("FUTEX_CMP_REQUEUE", words, |source, target, expected| {
        sys::cmp_requeue(source, 1, i32::MAX, target, expected)
    })?;
    let futex2_requeue = if futex2 {
        Some(requeue_once(
            "futex_requeue",
            words,
            |source, target, expected| {
                let entries = [
                    sys::waitv_private(source, expected),
                    sys::waitv_private(target, 0),
                ];
                // SAFETY: `entries` is a live two-element vector naming live atomics.
                sys::check(unsafe {
                    libc::syscall(
                        sys::SYS_FUTEX_REQUEUE,
                        entries.as_ptr(),
                        0u32,
                        1i32,
                        i32::MAX,
                    )
                })
            },
        )?)
    } else {
        None
    };
    Ok(Requeue {
        cmp_requeue,
        futex2_requeue,
    })
}

fn requeue_once(
    experiment: &'static str,
    words: &mut Words,
    requeue: impl Fn(&AtomicU32, &AtomicU32, u32) -> Result<libc::c_long, i32>,
) -> Result<RequeueOutcome, KernelReportError> {
    let waiters = 3;
    let source = words.new_word(experiment);
    let target = words.new_word(experiment);
    let mismatch_gives_eagain = requeue(source.atomic(), target.atomic(), 1) == Err(libc::EAGAIN);
    let mut handles = Vec::new();
    for _ in 0..waiters {
        let word = Arc::clone(&source);
        let (handle, tid) = spawn_with_tid(move || word.wait(libc::FUTEX_WAIT, 0, None, 0));
        if !sys::wait_until_sleeping(tid, FALL_ASLEEP_LIMIT_NS) {
            return Err(failed(
                experiment,
                "a waiter did not fall asleep within 5 s",
            ));
        }
        handles.push(handle);
    }
    let returned = requeue(source.atomic(), target.atomic(), 0)
        .map_err(|e| failed(experiment, format!("errno {e}")))?;
    // The requeued waiters now sleep on the target word: wake them all and count them.
    let woken_from_target = sys::wake(target.atomic(), i32::MAX)
        .map_err(|e| failed(experiment, format!("FUTEX_WAKE: errno {e}")))?;
    for handle in handles {
        join(experiment, handle)?
            .map_err(|e| failed(experiment, format!("a requeued wait returned errno {e}")))?;
    }
    Ok(RequeueOutcome {
        returned,
        woken_from_target,
        mismatch_gives_eagain,
    })
}
