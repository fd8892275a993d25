//! A workload on std's `Mutex` and `Condvar` (futex-based on Linux: `FUTEX_WAIT_BITSET` with an
//! absolute deadline for timed waits) whose futex behaviour is known exactly, run by
//! `futexscope-workload std-sync` so tests can check the tracer against it.

use std::{
    sync::{Condvar, Mutex},
    thread,
    time::Duration,
};

/// Waited on with a timeout that always expires: nobody notifies it.
static TIMED_CONDVAR: Condvar = Condvar::new();
static TIMED_MUTEX: Mutex<()> = Mutex::new(());
/// Threads park here until all are parked, then are woken at once.
static PARK_CONDVAR: Condvar = Condvar::new();
/// Number of parked threads, and whether they may go.
static PARK_STATE: Mutex<(u32, bool)> = Mutex::new((0, false));

/// What the workload did, by its own count.
#[derive(Debug)]
pub struct StdSyncCounts {
    /// Address of the timed condvar (its futex word).
    pub timed_condvar: usize,
    /// Condvar waits that timed out.
    pub timeouts: u32,
    /// Address of the parking condvar (its futex word).
    pub park_condvar: usize,
    /// Threads parked at once on it.
    pub parked: u32,
}

/// Makes `timeouts` condvar waits that time out, then parks `parked` threads on another
/// condvar at once and wakes them all with one `notify_all`.
pub fn run(timeouts: u32, parked: u32) -> StdSyncCounts {
    let mut timed_out = 0;
    let mut guard = TIMED_MUTEX.lock().expect("not poisoned");
    for _ in 0..timeouts {
        let (next, result) = TIMED_CONDVAR
            .wait_timeout(guard, Duration::from_millis(2))
            .expect("not poisoned");
        guard = next;
        timed_out += u32::from(result.timed_out());
    }
    drop(guard);

    let threads: Vec<_> = (0..parked)
        .map(|_| {
            thread::spawn(|| {
                let mut state = PARK_STATE.lock().expect("not poisoned");
                state.0 += 1;
                while !state.1 {
                    state = PARK_CONDVAR.wait(state).expect("not poisoned");
                }
            })
        })
        .collect();
    loop {
        // A thread counted itself under the lock and released it only inside `wait`.
        if PARK_STATE.lock().expect("not poisoned").0 == parked {
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    // Let the last one get from `wait` into the kernel.
    thread::sleep(Duration::from_millis(200));
    PARK_STATE.lock().expect("not poisoned").1 = true;
    PARK_CONDVAR.notify_all();
    for thread in threads {
        thread.join().expect("parked thread");
    }
    StdSyncCounts {
        timed_condvar: &raw const TIMED_CONDVAR as usize,
        timeouts: timed_out,
        park_condvar: &raw const PARK_CONDVAR as usize,
        parked,
    }
}
