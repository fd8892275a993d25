//! A paced stream of futex calls for measuring the tracer's event rate
//! (`futexscope-workload flood`, which `examples/trace-overhead.rs` traces): threads make
//! `FUTEX_WAIT` calls that return `EAGAIN` at once (one wait event each), spread evenly to
//! reach a target rate.

use std::{
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use futexscope::sys;

/// Makes about `rate` futex calls per second for `seconds`, over `threads` threads; returns
/// the number of calls made.
pub fn run(rate: u64, seconds: f64, threads: u32) -> u64 {
    let word = AtomicU32::new(1);
    let calls = AtomicU64::new(0);
    let threads = threads.max(1);
    let per_thread_rate = (rate / u64::from(threads)).max(1);
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let start = Instant::now();
                let mut made = 0u64;
                while Instant::now() < end {
                    // Calls due by now at the target rate; make them in a burst, then yield.
                    let due = (start.elapsed().as_secs_f64() * per_thread_rate as f64) as u64;
                    while made < due {
                        // EAGAIN at once: the word holds 1, not the expected 0.
                        let _ = sys::wait(&word, 0, None);
                        made += 1;
                    }
                    thread::sleep(Duration::from_micros(200));
                }
                // Relaxed: only read after the scope joins every thread.
                calls.fetch_add(made, Ordering::Relaxed);
            });
        }
    });
    calls.into_inner()
}
