//! `futexscope-workload NAME ARGS…`: runs one scripted futex workload (see
//! `futexscope_integration_test::workload`, `flood` and `stdsync`) and prints its report, one
//! `key value` line each (`flood` and `std-sync` print their own lines).

use clap::Parser;
use futexscope_integration_test::{flood, stdsync, workload};

/// Scripted futex workloads with known counts, for futexscope's tests and benchmarks.
#[derive(Parser)]
#[command(name = "futexscope-workload")]
enum Workload {
    /// COUNT `FUTEX_WAIT` calls on a word that never matches: each returns `EAGAIN` at once.
    Eagain { count: u32 },
    /// COUNT waits that time out after MS, cycling through the three timeout clocks.
    Timeouts { count: u32, ms: u32 },
    /// COUNT threads parked on one word at once, then woken by one `FUTEX_WAKE`.
    Parked { count: u32 },
    /// One untimed wait interrupted COUNT times by a signal, then woken.
    Signals { count: u32 },
    /// A consumer that loses races for tokens the producer takes back.
    Stolen {
        rounds: u32,
        steals: u32,
        pause_ms: u32,
    },
    /// `futex_waitv` on two words: COUNT timeouts after MS, then one wakeup.
    Waitv { count: u32, ms: u32 },
    /// Joins a thread (glibc waits on the thread-id word the kernel wakes).
    Join,
    /// Fires stand-in marker sites around real futex waits.
    Markers,
    /// Exits while a thread sleeps inside a futex wait.
    Die,
    /// `timeouts COUNT MS`, then `parked PARKED` (its lines prefixed `parked_`).
    Mixed { count: u32, ms: u32, parked: u32 },
    /// Paced futex calls (EAGAIN waits) to measure the tracer's event rate.
    Flood {
        /// Target calls per second, all threads together.
        #[arg(long, default_value_t = 1_000_000)]
        rate: u64,
        /// How long.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Threads.
        #[arg(long, default_value_t = 2)]
        threads: u32,
    },
    /// A std `Mutex`/`Condvar` workload with known counts.
    StdSync {
        /// Condvar waits that time out.
        #[arg(long, default_value_t = 20)]
        timeouts: u32,
        /// Threads parked on one condvar at once.
        #[arg(long, default_value_t = 4)]
        parked: u32,
    },
}

fn main() {
    let lines = match Workload::parse() {
        Workload::Eagain { count } => vec![
            format!("word {:#x}", workload::eagain_waits(count)),
            format!("waits {count}"),
        ],
        Workload::Timeouts { count, ms } => workload::timeouts(count, ms),
        Workload::Parked { count } => workload::parked(count),
        Workload::Signals { count } => workload::signals(count),
        Workload::Stolen {
            rounds,
            steals,
            pause_ms,
        } => workload::stolen(rounds, steals, pause_ms),
        Workload::Waitv { count, ms } => workload::waitv(count, ms),
        Workload::Join => workload::join(),
        Workload::Markers => workload::markers(),
        Workload::Die => workload::die(),
        Workload::Mixed { count, ms, parked } => {
            let mut lines = workload::timeouts(count, ms);
            let parked = workload::parked(parked);
            lines.extend(parked.into_iter().map(|l| format!("parked_{l}")));
            lines
        }
        Workload::Flood {
            rate,
            seconds,
            threads,
        } => {
            let calls = flood::run(rate, seconds, threads);
            vec![format!("flood: {calls} futex calls in {seconds} s")]
        }
        Workload::StdSync { timeouts, parked } => {
            let counts = stdsync::run(timeouts, parked);
            vec![
                format!(
                    "std-sync: timed condvar {:#x}: {} timeouts",
                    counts.timed_condvar, counts.timeouts
                ),
                format!(
                    "std-sync: park condvar {:#x}: {} parked at once",
                    counts.park_condvar, counts.parked
                ),
            ]
        }
    };
    for line in lines {
        println!("{line}");
    }
}
