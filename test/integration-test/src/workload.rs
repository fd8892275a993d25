//! Scripted futex workloads with known counts (`futexscope-workload NAME ARGS…`). Each makes
//! real futex syscalls, through `futexscope::sys`, and reports what it saw (`key value` lines),
//! which the tests compare with the probes' numbers.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

use futexscope::sys;

/// Makes `count` `FUTEX_WAIT` calls on a private word whose value never matches, so each
/// returns `EAGAIN` at once. Returns the word's address.
pub fn eagain_waits(count: u32) -> usize {
    let word = AtomicU32::new(1);
    for _ in 0..count {
        let ret = sys::wait(&word, 0, None);
        assert_eq!(
            ret,
            Err(libc::EAGAIN),
            "FUTEX_WAIT on a mismatched word must fail"
        );
    }
    word.as_ptr() as usize
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
pub fn timeouts(count: u32, ms: u32) -> Vec<String> {
    let word = AtomicU32::new(0);
    let timeout_ns = u64::from(ms) * 1_000_000;
    let mut drifts = Vec::new();
    let mut timed_out = 0;
    for i in 0..count {
        let (ret, deadline, after) = match i % 3 {
            0 => {
                let start = sys::monotonic();
                let ret = sys::wait(&word, 0, Some(&sys::timespec(timeout_ns)));
                (ret, start + timeout_ns, sys::monotonic())
            }
            kind => {
                let (clock, flag) = if kind == 1 {
                    (libc::CLOCK_MONOTONIC, 0)
                } else {
                    (libc::CLOCK_REALTIME, libc::FUTEX_CLOCK_REALTIME)
                };
                let deadline = sys::now(clock) + timeout_ns;
                let op = libc::FUTEX_WAIT_BITSET | flag;
                let ts = sys::timespec(deadline);
                let ret = sys::futex(&word, op, 0, Some(&ts), None, u32::MAX);
                (ret, deadline, sys::now(clock))
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
pub fn parked(count: u32) -> Vec<String> {
    let word = Arc::new(AtomicU32::new(0));
    let (tids, woken_returns) = (
        Arc::new(std::sync::Mutex::new(Vec::new())),
        Arc::new(AtomicUsize::new(0)),
    );
    let threads: Vec<_> = (0..count)
        .map(|_| {
            let (word, tids, woken_returns) = (word.clone(), tids.clone(), woken_returns.clone());
            thread::spawn(move || {
                tids.lock().expect("tid list").push(sys::gettid());
                // Relaxed: the counter is read after join, which synchronises.
                if sys::wait(&word, 0, None) == Ok(0) {
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
    let woken = sys::wake(&word, i32::MAX).unwrap_or(0);
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

/// One thread waits untimed on a word; `count` signals interrupt it (a handler without
/// `SA_RESTART`, so each wait returns `EINTR`); then it is woken for good.
pub fn signals(count: u32) -> Vec<String> {
    let old_handler = sys::install_counting_handler(libc::SIGUSR1, false);
    let word = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (eintr, waits) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let (tid_send, tid_recv) = std::sync::mpsc::channel();
    let waiter = {
        let (word, done, eintr, waits) = (word.clone(), done.clone(), eintr.clone(), waits.clone());
        thread::spawn(move || {
            tid_send.send(sys::gettid()).expect("send tid");
            // Acquire: pairs with the Release store of `done` before the final wake.
            while !done.load(Ordering::Acquire) {
                // Relaxed counters: read after join.
                waits.fetch_add(1, Ordering::Relaxed);
                if sys::wait(&word, 0, None) == Err(libc::EINTR) {
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
        sys::signal_thread(tid, libc::SIGUSR1);
    }
    while eintr.load(Ordering::Relaxed) < count {
        thread::sleep(Duration::from_millis(1));
    }
    done.store(true, Ordering::Release);
    word.store(1, Ordering::Release);
    let _ = sys::wake(&word, 1);
    waiter.join().expect("waiter thread");
    sys::restore_signal(libc::SIGUSR1, &old_handler);
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
pub fn stolen(rounds: u32, steals: u32, pause_ms: u32) -> Vec<String> {
    let word = Arc::new(AtomicU32::new(0));
    let last_token = Arc::new(AtomicBool::new(false));
    let (tid_send, tid_recv) = std::sync::mpsc::channel();
    let consumer = {
        let (word, last_token) = (word.clone(), last_token.clone());
        thread::spawn(move || {
            tid_send.send(sys::gettid()).expect("send tid");
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
                just_woken = sys::wait(&word, 0, None) == Ok(0);
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
            woken_by_wakes += sys::wake(&word, 1).unwrap_or(0);
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
pub fn waitv(count: u32, ms: u32) -> Vec<String> {
    let words = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
    let call = |words: &[AtomicU32; 2], deadline: Option<u64>| {
        let list = words.each_ref().map(|w| sys::waitv_private(w, 0));
        sys::futex_waitv(&list, deadline.map(sys::timespec).as_ref())
    };
    let mut timed_out = 0;
    for _ in 0..count {
        let deadline = sys::monotonic() + u64::from(ms) * 1_000_000;
        if call(&words, Some(deadline)) == Err(libc::ETIMEDOUT) {
            timed_out += 1;
        }
    }
    let (tid_send, tid_recv) = std::sync::mpsc::channel();
    let waiter = {
        let words = words.clone();
        thread::spawn(move || {
            tid_send.send(sys::gettid()).expect("send tid");
            call(&words, None)
        })
    };
    let tid = tid_recv.recv().expect("waiter tid");
    wait_in_syscall(tid, libc::SYS_futex_waitv);
    let woken = sys::wake(&words[1], 1).unwrap_or(0);
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
pub fn join() -> Vec<String> {
    let worker = thread::spawn(|| thread::sleep(Duration::from_millis(300)));
    worker.join().expect("worker thread");
    vec!["joined 1".to_owned()]
}

/// A thread waits (untimed) on a word; once it sleeps in the kernel the process exits, killing
/// it inside the wait. Prints its report first, since it never returns.
pub fn die() -> Vec<String> {
    static WORD: AtomicU32 = AtomicU32::new(0);
    let (tid_send, tid_recv) = std::sync::mpsc::channel();
    thread::spawn(move || {
        tid_send.send(sys::gettid()).expect("send tid");
        let _ = sys::wait(&WORD, 0, None);
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
pub fn markers() -> Vec<String> {
    use marker_sites::*;
    // The state word of a semaphore with no tokens and this one multi-token waiter.
    const MULTI_WAITER: u64 = 1 << 48;
    let word = AtomicU32::new(1);
    let (sem, w) = (
        &word as *const AtomicU32 as u64 + 0x100,
        word.as_ptr() as u64,
    );
    let wait = || {
        let _ = sys::wait(&word, 0, None);
    };
    futexscope_workload_wait_begin(sem, w, 0, 3, 0, MULTI_WAITER);
    wait();
    futexscope_workload_wait_end(sem, w, 0, 3);
    futexscope_workload_wait_begin(sem, w, 0, 3, 0, MULTI_WAITER);
    wait();
    futexscope_workload_wait_end(sem, w, 0, 3);
    futexscope_workload_acquired(sem, 3);
    let deadline = sys::monotonic() + 1_000;
    futexscope_workload_wait_begin(sem, w, 0, 2, deadline, MULTI_WAITER);
    wait();
    futexscope_workload_wait_end(sem, w, -i64::from(libc::ETIMEDOUT), 2);
    futexscope_workload_timed_out(sem, 2, deadline, deadline + 5_000);
    let condvar = AtomicU32::new(0);
    thread::scope(|s| {
        s.spawn(|| {
            // Wakes the main thread once it is asleep on the word.
            while sys::wake(&condvar, 1) != Ok(1) {
                thread::sleep(Duration::from_millis(1));
            }
        });
        while sys::wait(&condvar, 0, None) != Ok(0) {}
    });
    thread::sleep(Duration::from_millis(5));
    condvar.store(1, Ordering::Relaxed);
    let _ = sys::wait(&condvar, 0, None);
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
