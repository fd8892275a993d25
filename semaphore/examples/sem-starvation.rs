//! Measures whether a stream of `acquire(1)` starves an `acquire(4)` (Qt documents that it
//! can with `QSemaphore`). THREADS threads loop { acquire(1); WORK_NS of busy work;
//! release(1) } on a semaphore of 4; the main thread asks ATTEMPTS times for all 4 permits with
//! a 1 s timeout and reports how long each took and how many gave up.
//!
//! `cargo run --release -p futexscope-semaphore --example sem-starvation -- [THREADS] [ATTEMPTS] [WORK_NS]`

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
                "sem-starvation: arguments must be non-negative integers ({error})\nusage: sem-starvation [THREADS] [ATTEMPTS] [WORK_NS]"
            );
            return ExitCode::from(2);
        }
    };
    let threads = args.first().copied().unwrap_or(4);
    let attempts = args.get(1).copied().unwrap_or(20).max(1);
    let work_ns = args.get(2).copied().unwrap_or(1000);
    let timeout = Duration::from_secs(1);

    let sem = Semaphore::new(4);
    let stop = AtomicBool::new(false);
    let small_acquires = AtomicU64::new(0);
    let mut waits = Vec::new();
    let mut gave_up = 0u64;
    thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let permit = sem.acquire(1).unwrap();
                    busy(work_ns);
                    drop(permit);
                    small_acquires.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        thread::sleep(Duration::from_millis(50));
        for _ in 0..attempts {
            let start = Instant::now();
            match sem.try_acquire_for(4, timeout) {
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
        r#"{{"impl":"futexscope","workload":"starvation","threads":{threads},"work_ns":{work_ns},"attempts":{attempts},"gave_up_after_1s":{gave_up},"wait_us_p50":{},"wait_us_max":{},"small_acquires":{}}}"#,
        micros(waits.get(waits.len() / 2)),
        micros(waits.last()),
        small_acquires.load(Ordering::Relaxed),
    );
    ExitCode::SUCCESS
}
