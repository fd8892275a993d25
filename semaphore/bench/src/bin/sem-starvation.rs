//! Measures whether a stream of `acquire(1)` starves an `acquire(4)` (Qt documents that it
//! can with `QSemaphore`). THREADS threads loop { acquire(1); busy work for WORK_NS to
//! WORK_MAX_NS (uniformly, default WORK_NS); release(1) } on a semaphore of 4; the main thread
//! asks ATTEMPTS times for all 4 permits with a TIMEOUT_MS timeout (default 1000; 0 = an
//! untimed `acquire(4)`) and reports how long each took and how many gave up.
//!
//! `cargo run --release -p futexscope-semaphore-bench --bin sem-starvation -- [THREADS] [ATTEMPTS] [WORK_NS] [WORK_MAX_NS] [TIMEOUT_MS]`

use futexscope_semaphore::Semaphore;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

fn busy(nanos: u64) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_nanos(nanos) {
        std::hint::spin_loop();
    }
}

fn main() -> ExitCode {
    let args: Vec<u64> = match std::env::args().skip(1).map(|a| a.parse::<u64>()).collect() {
        Ok(args) => args,
        Err(error) => {
            eprintln!(
                "sem-starvation: arguments must be non-negative integers ({error})\nusage: sem-starvation [THREADS] [ATTEMPTS] [WORK_NS] [WORK_MAX_NS] [TIMEOUT_MS]"
            );
            return ExitCode::from(2);
        }
    };
    let threads = args.first().copied().unwrap_or(4);
    let attempts = args.get(1).copied().unwrap_or(20).max(1);
    let work_ns = args.get(2).copied().unwrap_or(1000);
    let work_max_ns = args.get(3).copied().unwrap_or(work_ns).max(work_ns);
    let timeout_ms = args.get(4).copied().unwrap_or(1000);
    let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));

    let sem = Semaphore::new(4);
    let stop = AtomicBool::new(false);
    let small_acquires = AtomicU64::new(0);
    let mut waits = Vec::new();
    let mut gave_up = 0u64;
    thread::scope(|s| {
        for id in 0..threads {
            let (sem, stop, small_acquires) = (&sem, &stop, &small_acquires);
            s.spawn(move || {
                // xorshift64, seeded per thread: hold times uniform in WORK_NS..=WORK_MAX_NS.
                let mut seed = 0x9e37_79b9_7f4a_7c15 ^ (id + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
                while !stop.load(Ordering::Relaxed) {
                    let permit = sem.acquire(1).unwrap();
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    busy(work_ns + seed % (work_max_ns - work_ns + 1));
                    drop(permit);
                    small_acquires.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        thread::sleep(Duration::from_millis(50));
        for _ in 0..attempts {
            let start = Instant::now();
            let result = match timeout {
                Some(timeout) => sem.try_acquire_for(4, timeout),
                None => sem.acquire(4),
            };
            match result {
                Ok(permit) => {
                    waits.push(start.elapsed());
                    drop(permit);
                }
                Err(_) => gave_up += 1,
            }
            thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
    });
    waits.sort();
    // JSON has no NaN: `null` when no attempt succeeded.
    let micros = |d: Option<&Duration>| {
        d.map_or("null".to_owned(), |d| {
            format!("{:.1}", d.as_secs_f64() * 1e6)
        })
    };
    println!(
        r#"{{"impl":"futexscope","workload":"starvation","threads":{threads},"work_ns":{work_ns},"work_max_ns":{work_max_ns},"timeout_ms":{timeout_ms},"attempts":{attempts},"gave_up":{gave_up},"wait_us_p50":{},"wait_us_p99":{},"wait_us_max":{},"small_acquires":{}}}"#,
        micros(waits.get(waits.len() / 2)),
        micros(waits.get((waits.len() * 99).div_ceil(100).saturating_sub(1))),
        micros(waits.last()),
        small_acquires.load(Ordering::Relaxed),
    );
    ExitCode::SUCCESS
}
