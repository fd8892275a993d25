//! Scripted futex workloads with known counts, for tests and demos. Each makes real futex
//! syscalls and reports what it saw (`key value` lines), which the tests compare with the
//! probes' numbers.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

/// Makes `count` `FUTEX_WAIT` calls on a private word whose value never matches, so each
/// returns `EAGAIN` at once. Returns the word's address.
pub fn eagain_waits(count: u32) -> usize {
    let word = AtomicU32::new(1);
    for _ in 0..count {
        let ret = futex_wait(&word, 0, None);
        assert_eq!(
            ret,
            Err(libc::EAGAIN),
            "FUTEX_WAIT on a mismatched word must fail"
        );
    }
    word.as_ptr() as usize
}

/// Why a workload could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// Unknown workload name or bad arguments.
    #[error(
        "usage: futexscope-workload eagain N | timeouts K MS | parked W | signals N | stolen ROUNDS STEALS PAUSE_MS | waitv K MS | join | markers | die | mixed K MS W"
    )]
    Usage,
}

/// Runs the workload named by `args[0]` and returns its report lines.
pub fn run(args: &[String]) -> Result<Vec<String>, WorkloadError> {
    let num = |i: usize| -> Result<u32, WorkloadError> {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .ok_or(WorkloadError::Usage)
    };
    Ok(match args.first().map(String::as_str) {
        Some("eagain") => {
            let count = num(1)?;
            vec![
                format!("word {:#x}", eagain_waits(count)),
                format!("waits {count}"),
            ]
        }
        Some("timeouts") => timeouts(num(1)?, num(2)?),
        Some("parked") => parked(num(1)?),
        Some("signals") => signals(num(1)?),
        Some("stolen") => stolen(num(1)?, num(2)?, num(3)?),
        Some("waitv") => waitv(num(1)?, num(2)?),
        Some("join") => join(),
        Some("markers") => markers(),
        Some("die") => die(),
        Some("mixed") => {
            let mut lines = timeouts(num(1)?, num(2)?);
            lines.extend(parked(num(3)?).into_iter().map(|l| format!("parked_{l}")));
            lines
        }
        _ => return Err(WorkloadError::Usage),
    })
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as i64,
        tv_nsec: (ns % 1_000_000_000) as i64,
    }
}

/// A futex(2) call on `word`; `Err(errno)` on failure.
fn futex(
    word: &AtomicU32,
    op: i32,
    val: u32,
    timeout: Option<&libc::timespec>,
    val3: u32,
) -> Result<i64, i32> {
    let timeout = timeout.map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned 32-bit atomic and `timeout` null or a live timespec;
    // uaddr2 is unused by the ops called here.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op,
            val,
            timeout,
            std::ptr::null::<u32>(),
            val3,
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(ret)
    }
}

/// Plain `FUTEX_WAIT` (relative timeout).
fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    timeout: Option<&libc::timespec>,
) -> Result<i64, i32> {
    futex(
        word,
        libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
        expected,
        timeout,
        0,
    )
}

fn futex_wake(word: &AtomicU32, count: u32) -> i64 {
    futex(
        word,
        libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
        count,
        None,
        0,
    )
    .unwrap_or(0)
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Waits until thread `tid` of this process is inside syscall `number`.
fn wait_in_syscall(tid: i32, number: i64) {
    let path = format!("/proc/self/task/{tid}/syscall");
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && text.split_whitespace().next() == Some(&number.to_string())
        {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// `count` waits that time out after `ms`, in turn plain `FUTEX_WAIT` (relative),
/// `FUTEX_WAIT_BITSET` (absolute CLOCK_MONOTONIC) and `FUTEX_WAIT_BITSET|FUTEX_CLOCK_REALTIME`
/// (absolute CLOCK_REALTIME). Reports each wait's drift as this thread measured it: the clock
/// read after the return minus the deadline.
fn timeouts(count: u32, ms: u32) -> Vec<String> {
    let word = AtomicU32::new(0);
    let timeout_ns = u64::from(ms) * 1_000_000;
    let mut drifts = Vec::new();
    let mut timed_out = 0;
    for i in 0..count {
        let (ret, deadline, after) = match i % 3 {
            0 => {
                let start = clock_ns(libc::CLOCK_MONOTONIC);
                let ret = futex_wait(&word, 0, Some(&timespec(timeout_ns)));
                (ret, start + timeout_ns, clock_ns(libc::CLOCK_MONOTONIC))
            }
            kind => {
                let (clock, flag) = if kind == 1 {
                    (libc::CLOCK_MONOTONIC, 0)
                } else {
                    (libc::CLOCK_REALTIME, libc::FUTEX_CLOCK_REALTIME)
                };
                let deadline = clock_ns(clock) + timeout_ns;
                let op = libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG | flag;
                let ret = futex(&word, op, 0, Some(&timespec(deadline)), u32::MAX);
                (ret, deadline, clock_ns(clock))
            }
        };
        if ret == Err(libc::ETIMEDOUT) {
            timed_out += 1;
        }
        drifts.push((after - deadline).to_string());
    }
    vec![
        format!("word {:#x}", word.as_ptr() as usize),
        format!("timeouts {timed_out}"),
        format!("drift_ns {}", drifts.join(" ")),
    ]
}

/// `count` threads wait (untimed `FUTEX_WAIT`) on one word; once all are asleep in the kernel,
/// one `FUTEX_WAKE` wakes them all.
fn parked(count: u32) -> Vec<String> {
    let word = Arc::new(AtomicU32::new(0));
    let (tids, woken_returns) = (
        Arc::new(std::sync::Mutex::new(Vec::new())),
        Arc::new(AtomicUsize::new(0)),
    );
    let threads: Vec<_> = (0..count)
        .map(|_| {
            let (word, tids, woken_returns) = (word.clone(), tids.clone(), woken_returns.clone());
            thread::spawn(move || {
                tids.lock().expect("tid list").push(gettid());
                // Relaxed: the counter is read after join, which synchronises.
                if futex_wait(&word, 0, None) == Ok(0) {
                    woken_returns.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    while tids.lock().expect("tid list").len() < count as usize {
        thread::sleep(Duration::from_millis(1));
    }
    for &tid in tids.lock().expect("tid list").iter() {
        wait_in_syscall(tid, libc::SYS_futex);
    }
    // Release: the store is ordered before the wake; the waiters re-read nothing but the
    // futex word, which the kernel compares under its own lock.
    word.store(1, Ordering::Release);
    let woken = futex_wake(&word, i32::MAX as u32);
    for t in threads {
        t.join().expect("waiter thread");
    }
    vec![
        format!("word {:#x}", Arc::as_ptr(&word) as usize),
        format!("parked {count}"),
        format!("woken {woken}"),
        format!("woken_returns {}", woken_returns.load(Ordering::Relaxed)),
    ]
}

extern "C" fn on_signal(_: libc::c_int) {}

/// One thread waits untimed on a word; `count` signals interrupt it (a handler without
/// `SA_RESTART`, so each wait returns `EINTR`); then it is woken for good.
fn signals(count: u32) -> Vec<String> {
    // SAFETY: installing a handler that does nothing, with a zeroed, then filled sigaction.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut());
    }
    let word = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (eintr, waits) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let (tid_send, tid_recv) = std::sync::mpsc::channel();
    let waiter = {
        let (word, done, eintr, waits) = (word.clone(), done.clone(), eintr.clone(), waits.clone());
        thread::spawn(move || {
            tid_send.send(gettid()).expect("send tid");
            // Acquire: pairs with the Release store of `done` before the final wake.
            while !done.load(Ordering::Acquire) {
                // Relaxed counters: read after join.
                waits.fetch_add(1, Ordering::Relaxed);
                if futex_wait(&word, 0, None) == Err(libc::EINTR) {
                    eintr.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let tid = tid_recv.recv().expect("waiter tid");
    for sent in 0..count {
        // Wait until the previous signal was seen and the thread sleeps again.
        while eintr.load(Ordering::Relaxed) < sent {
            thread::sleep(Duration::from_millis(1));
        }
        wait_in_syscall(tid, libc::SYS_futex);
        // SAFETY: signalling a live thread of this process.
        unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR1) };
    }
    while eintr.load(Ordering::Relaxed) < count {
        thread::sleep(Duration::from_millis(1));
    }
    done.store(true, Ordering::Release);
    word.store(1, Ordering::Release);
    futex_wake(&word, 1);
    waiter.join().expect("waiter thread");
    vec![
        format!("word {:#x}", Arc::as_ptr(&word) as usize),
        format!("signals {count}"),
        format!("eintr {}", eintr.load(Ordering::Relaxed)),
        format!("waits {}", waits.load(Ordering::Relaxed)),
    ]
}

/// A consumer waits for a token (word = 1) on the word; the producer, `rounds` times, first
/// `steals` times posts a token, wakes the consumer and takes the token back at once (the
/// consumer, woken, usually finds nothing and waits again: a lost race), then posts one for
/// real. After each token the consumer pauses `pause_ms` before waiting again. Reports what
/// the consumer saw: wakeups, wakeups followed by waiting again with no token (lost races).
fn stolen(rounds: u32, steals: u32, pause_ms: u32) -> Vec<String> {
    let word = Arc::new(AtomicU32::new(0));
    let last_token = Arc::new(AtomicBool::new(false));
    let (tid_send, tid_recv) = std::sync::mpsc::channel();
    let consumer = {
        let (word, last_token) = (word.clone(), last_token.clone());
        thread::spawn(move || {
            tid_send.send(gettid()).expect("send tid");
            let (mut woken, mut lost, mut acquired, mut waits) = (0, 0, 0, 0);
            let mut just_woken = false;
            loop {
                // Acquire: takes the token the producer published (and sees `last_token`).
                if word
                    .compare_exchange(1, 0, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    acquired += 1;
                    just_woken = false;
                    if last_token.load(Ordering::Relaxed) {
                        break;
                    }
                    thread::sleep(Duration::from_millis(u64::from(pause_ms)));
                    continue;
                }
                if just_woken {
                    lost += 1;
                }
                waits += 1;
                just_woken = futex_wait(&word, 0, None) == Ok(0);
                if just_woken {
                    woken += 1;
                }
            }
            (woken, lost, acquired, waits)
        })
    };
    let tid = tid_recv.recv().expect("consumer tid");
    let (mut wake_calls, mut woken_by_wakes) = (0, 0);
    for round in 0..rounds {
        for give in 0..=steals {
            wait_in_syscall(tid, libc::SYS_futex);
            if round + 1 == rounds && give == steals {
                // Relaxed: published by the Release store of the token below.
                last_token.store(true, Ordering::Relaxed);
            }
            // Release: publishes the token.
            word.store(1, Ordering::Release);
            woken_by_wakes += futex_wake(&word, 1);
            wake_calls += 1;
            if give < steals {
                // Take it back if the consumer has not yet (if it has, it pauses and waits
                // again later, which is no lost race).
                let _ = word.compare_exchange(1, 0, Ordering::Acquire, Ordering::Relaxed);
            }
        }
        // The producer never takes back the last token of a round: wait for the consumer.
        while word.load(Ordering::Acquire) == 1 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    let (woken, lost, acquired, waits) = consumer.join().expect("consumer thread");
    vec![
        format!("word {:#x}", Arc::as_ptr(&word) as usize),
        format!("wake_calls {wake_calls}"),
        format!("woken_by_wakes {woken_by_wakes}"),
        format!("woken {woken}"),
        format!("lost {lost}"),
        format!("acquired {acquired}"),
        format!("waits {waits}"),
    ]
}

/// `futex_waitv` on two words: `count` waits that time out after `ms` (absolute
/// CLOCK_MONOTONIC deadline), then one woken by a `FUTEX_WAKE` on the second word.
fn waitv(count: u32, ms: u32) -> Vec<String> {
    use futexscope_probes_common::abi::{FUTEX2_PRIVATE, FUTEX2_SIZE_U32, FutexWaitv};
    let words = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
    let call = |words: &[AtomicU32; 2], deadline: Option<u64>| -> Result<i64, i32> {
        let list: Vec<FutexWaitv> = words
            .iter()
            .map(|w| FutexWaitv {
                val: 0,
                uaddr: w.as_ptr() as u64,
                flags: FUTEX2_SIZE_U32 | FUTEX2_PRIVATE,
                reserved: 0,
            })
            .collect();
        let ts = deadline.map(timespec);
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `list` holds two valid futex_waitv entries pointing at live words; `ts_ptr`
        // is null or a live timespec.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_futex_waitv,
                list.as_ptr(),
                2u32,
                0u32,
                ts_ptr,
                libc::CLOCK_MONOTONIC,
            )
        };
        if ret < 0 {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(ret)
        }
    };
    let mut timed_out = 0;
    for _ in 0..count {
        let deadline = clock_ns(libc::CLOCK_MONOTONIC) + u64::from(ms) * 1_000_000;
        if call(&words, Some(deadline)) == Err(libc::ETIMEDOUT) {
            timed_out += 1;
        }
    }
    let (tid_send, tid_recv) = std::sync::mpsc::channel();
    let waiter = {
        let words = words.clone();
        thread::spawn(move || {
            tid_send.send(gettid()).expect("send tid");
            call(&words, None)
        })
    };
    let tid = tid_recv.recv().expect("waiter tid");
    wait_in_syscall(tid, libc::SYS_futex_waitv);
    let woken = futex_wake(&words[1], 1);
    let result = waiter.join().expect("waiter thread");
    vec![
        format!("word0 {:#x}", words[0].as_ptr() as usize),
        format!("word1 {:#x}", words[1].as_ptr() as usize),
        format!("timeouts {timed_out}"),
        format!("woken {woken}"),
        format!("woken_index {}", result.unwrap_or(-1)),
    ]
}

/// Joins a thread that exits after a pause: glibc's `pthread_join` waits on the thread-id word,
/// which the kernel clears and wakes at thread exit without any wake call.
fn join() -> Vec<String> {
    let worker = thread::spawn(|| thread::sleep(Duration::from_millis(300)));
    worker.join().expect("worker thread");
    vec!["joined 1".to_owned()]
}

/// A thread waits (untimed) on a word; once it sleeps in the kernel the process exits, killing
/// it inside the wait. Prints its report first, since it never returns.
fn die() -> Vec<String> {
    static WORD: AtomicU32 = AtomicU32::new(0);
    let (tid_send, tid_recv) = std::sync::mpsc::channel();
    thread::spawn(move || {
        tid_send.send(gettid()).expect("send tid");
        let _ = futex_wait(&WORD, 0, None);
    });
    wait_in_syscall(tid_recv.recv().expect("waiter tid"), libc::SYS_futex);
    println!("word {:#x}", WORD.as_ptr() as usize);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(0)
}

/// Stand-ins for the semaphore's marker sites: functions whose entry a test attaches the
/// marker program to, with the arguments in the System V argument registers (rdi, rsi, rdx,
/// rcx, r8, r9), as `futexscope_probes_common::markers::MARKERS` orders them. Each also keeps
/// its own marker number, so no two have the same code: the linker would fold those into one
/// address (`wait_end` and `timed_out` take the same four arguments).
pub mod marker_sites {
    /// `wait_begin(sem, word, expected, wanted, deadline_ns, state)`.
    #[unsafe(no_mangle)]
    #[inline(never)]
    pub extern "C" fn futexscope_workload_wait_begin(
        sem: u64,
        word: u64,
        expected: u64,
        wanted: u64,
        deadline_ns: u64,
        state: u64,
    ) {
        std::hint::black_box((0u8, sem, word, expected, wanted, deadline_ns, state));
    }

    /// `wait_end(sem, word, result, wanted)`.
    #[unsafe(no_mangle)]
    #[inline(never)]
    pub extern "C" fn futexscope_workload_wait_end(sem: u64, word: u64, result: i64, wanted: u64) {
        std::hint::black_box((1u8, sem, word, result, wanted));
    }

    /// `acquired(sem, tokens)`.
    #[unsafe(no_mangle)]
    #[inline(never)]
    pub extern "C" fn futexscope_workload_acquired(sem: u64, tokens: u64) {
        std::hint::black_box((4u8, sem, tokens));
    }

    /// `timed_out(sem, wanted, deadline_ns, now_ns)`.
    #[unsafe(no_mangle)]
    #[inline(never)]
    pub extern "C" fn futexscope_workload_timed_out(
        sem: u64,
        wanted: u64,
        deadline_ns: u64,
        now_ns: u64,
    ) {
        std::hint::black_box((5u8, sem, wanted, deadline_ns, now_ns));
    }
}

/// Fires the stand-in marker sites in a known order around real (EAGAIN) futex waits: one wait
/// woken, then waiting again without `acquired` (a lost race), then woken and `acquired`; then
/// a timed wait that gives up 5 µs after its deadline. Then, in the same thread, a
/// condition-variable-like word the markers never name: one wait really woken, and 5 ms later
/// another wait on it, which is no lost race.
fn markers() -> Vec<String> {
    use marker_sites::*;
    // The state word of a semaphore with no tokens and this one multi-token waiter.
    const MULTI_WAITER: u64 = 1 << 48;
    let word = AtomicU32::new(1);
    let (sem, w) = (
        &word as *const AtomicU32 as u64 + 0x100,
        word.as_ptr() as u64,
    );
    let wait = || {
        let _ = futex_wait(&word, 0, None);
    };
    futexscope_workload_wait_begin(sem, w, 0, 3, 0, MULTI_WAITER);
    wait();
    futexscope_workload_wait_end(sem, w, 0, 3);
    futexscope_workload_wait_begin(sem, w, 0, 3, 0, MULTI_WAITER);
    wait();
    futexscope_workload_wait_end(sem, w, 0, 3);
    futexscope_workload_acquired(sem, 3);
    let deadline = clock_ns(libc::CLOCK_MONOTONIC) + 1_000;
    futexscope_workload_wait_begin(sem, w, 0, 2, deadline, MULTI_WAITER);
    wait();
    futexscope_workload_wait_end(sem, w, -i64::from(libc::ETIMEDOUT), 2);
    futexscope_workload_timed_out(sem, 2, deadline, deadline + 5_000);
    let condvar = AtomicU32::new(0);
    thread::scope(|s| {
        s.spawn(|| {
            // Wakes the main thread once it is asleep on the word.
            while futex_wake(&condvar, 1) != 1 {
                thread::sleep(Duration::from_millis(1));
            }
        });
        while futex_wait(&condvar, 0, None) != Ok(0) {}
    });
    thread::sleep(Duration::from_millis(5));
    condvar.store(1, Ordering::Relaxed);
    let _ = futex_wait(&condvar, 0, None);
    vec![
        format!("condvar {:#x}", condvar.as_ptr() as u64),
        format!("word {w:#x}"),
        format!("sem {sem:#x}"),
        format!("deadline {deadline}"),
        "tokens_asked 8".to_owned(),
        "lost_race 1".to_owned(),
        "woken_satisfied 1".to_owned(),
        "caller_drift 5000".to_owned(),
    ]
}
