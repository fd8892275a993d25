//! Semaphore benchmark (the workloads of `bench-spec`): the project's semaphore and its peers on
//! the same work in the same run.
//!
//! ```text
//! cargo build --release -p futexscope-semaphore-bench --bin sem-bench
//! target/release/sem-bench IMPL WORKLOAD [N] [THREADS]
//! target/release/sem-bench pair IMPL PEER WORKLOAD [N] [THREADS] [BLOCKS]
//! ```
//!
//! IMPL and PEER: `futexscope`, `std` (std Mutex + Condvar), `parking_lot` (parking_lot Mutex +
//! Condvar), `posix` (glibc `sem_t`; single-permit only, so no `multi`), `qt` (Qt 6's
//! `QSemaphore`). WORKLOAD: `uncontended`, `pingpong`, `prodcons`, `multi`, `timed`. N
//! operations (default 1,000,000), THREADS threads where the workload uses a count (default 2).
//! Prints one JSON object per run on one line.
//!
//! `pair` runs IMPL and PEER in one process, alternately, in BLOCKS counted blocks (default
//! 201) of N operations each, after one warm-up block of each: IMPL PEER, PEER IMPL, IMPL PEER, …
//! so that both see the same machine (the same busy threads, the same other load) from one
//! block to the next. Each block spawns its threads afresh. It prints one JSON line with the
//! median `ns_per_op` of each side and the distribution of the per-block ratios IMPL/PEER.
//!
//! `LOAD=K` in the environment runs the workload on a busy machine: K threads spin in a loop
//! (never blocking) from before the workload starts until it ends (in `pair`, until the last
//! block ends); `LOAD=cpus` starts one per CPU the process may use. The JSON line then has an
//! extra field `"load":K`.

use futexscope_semaphore::Semaphore;
use std::cell::UnsafeCell;
use std::ffi::c_int;
use std::process::ExitCode;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// What every semaphore under test offers the workloads.
trait BenchSemaphore: Sync {
    const NAME: &'static str;
    /// Whether acquire/release of more than one permit at a time is supported.
    const MULTI: bool = true;
    fn with_permits(permits: u32) -> Self;
    /// A semaphore in a heap allocation of its own, where the workloads keep every semaphore:
    /// glibc's `sem_t` and Qt's `QSemaphore` live there anyway (a `sem_t` must not move), and
    /// a semaphore on the workload's stack would share a cache line with the loop's own
    /// stores (measured: 1.03× `sem_t`'s `uncontended` time on the stack, 0.91–0.99× boxed).
    fn boxed(permits: u32) -> Box<Self>
    where
        Self: Sized,
    {
        Box::new(Self::with_permits(permits))
    }
    fn acquire(&self, n: u32);
    fn release(&self, n: u32);
    /// `true` if it got the permits within `timeout`.
    fn try_acquire_for(&self, n: u32, timeout: Duration) -> bool;
}

impl BenchSemaphore for Semaphore {
    const NAME: &'static str = "futexscope";
    fn with_permits(permits: u32) -> Self {
        Semaphore::new(permits)
    }
    fn acquire(&self, n: u32) {
        Semaphore::acquire(self, n).expect("acquire").forget();
    }
    fn release(&self, n: u32) {
        Semaphore::release(self, n).expect("release");
    }
    fn try_acquire_for(&self, n: u32, timeout: Duration) -> bool {
        Semaphore::try_acquire_for(self, n, timeout)
            .map(|permit| permit.forget())
            .is_ok()
    }
}

/// The textbook Mutex + Condvar semaphore, written once for both lock libraries. It counts its
/// sleepers so a release with nobody waiting makes no wake call, and wakes all sleepers on a
/// release, since a Condvar cannot pick the ones whose request now fits.
macro_rules! condvar_semaphore {
    ($name:ident, $label:literal, $mutex:ty, $condvar:ty, $lock:ident, $wait:ident, $wait_timeout:ident) => {
        struct $name {
            counts: $mutex,
            changed: $condvar,
        }

        impl BenchSemaphore for $name {
            const NAME: &'static str = $label;
            fn with_permits(permits: u32) -> Self {
                $name {
                    counts: <$mutex>::new((permits, 0)),
                    changed: <$condvar>::new(),
                }
            }
            fn acquire(&self, n: u32) {
                let mut counts = $lock(&self.counts);
                while counts.0 < n {
                    counts.1 += 1;
                    counts = $wait(&self.changed, counts);
                    counts.1 -= 1;
                }
                counts.0 -= n;
            }
            fn release(&self, n: u32) {
                let mut counts = $lock(&self.counts);
                counts.0 += n;
                if counts.1 > 0 {
                    self.changed.notify_all();
                }
            }
            fn try_acquire_for(&self, n: u32, timeout: Duration) -> bool {
                let deadline = Instant::now() + timeout;
                let mut counts = $lock(&self.counts);
                while counts.0 < n {
                    let now = Instant::now();
                    if now >= deadline {
                        return false;
                    }
                    counts.1 += 1;
                    counts = $wait_timeout(&self.changed, counts, deadline - now);
                    counts.1 -= 1;
                }
                counts.0 -= n;
                true
            }
        }
    };
}

/// Permits available, threads asleep.
type Counts = (u32, u32);

fn std_lock(m: &std::sync::Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    m.lock().unwrap()
}

fn std_wait<'a>(
    c: &std::sync::Condvar,
    g: std::sync::MutexGuard<'a, Counts>,
) -> std::sync::MutexGuard<'a, Counts> {
    c.wait(g).unwrap()
}

fn std_wait_for<'a>(
    c: &std::sync::Condvar,
    g: std::sync::MutexGuard<'a, Counts>,
    timeout: Duration,
) -> std::sync::MutexGuard<'a, Counts> {
    c.wait_timeout(g, timeout).unwrap().0
}

fn pl_lock(m: &parking_lot::Mutex<Counts>) -> parking_lot::MutexGuard<'_, Counts> {
    m.lock()
}

fn pl_wait<'a>(
    c: &parking_lot::Condvar,
    mut g: parking_lot::MutexGuard<'a, Counts>,
) -> parking_lot::MutexGuard<'a, Counts> {
    c.wait(&mut g);
    g
}

fn pl_wait_for<'a>(
    c: &parking_lot::Condvar,
    mut g: parking_lot::MutexGuard<'a, Counts>,
    timeout: Duration,
) -> parking_lot::MutexGuard<'a, Counts> {
    c.wait_for(&mut g, timeout);
    g
}

condvar_semaphore!(
    StdSemaphore,
    "std",
    std::sync::Mutex<Counts>,
    std::sync::Condvar,
    std_lock,
    std_wait,
    std_wait_for
);
condvar_semaphore!(
    ParkingLotSemaphore,
    "parking_lot",
    parking_lot::Mutex<Counts>,
    parking_lot::Condvar,
    pl_lock,
    pl_wait,
    pl_wait_for
);

/// glibc's `sem_t`, boxed so it never moves after `sem_init`.
struct PosixSemaphore(Box<UnsafeCell<libc::sem_t>>);

// SAFETY: `sem_t` is made for use from many threads at once; it is only reached through the
// `sem_*` functions.
unsafe impl Sync for PosixSemaphore {}

unsafe extern "C" {
    /// glibc 2.30+: `sem_timedwait` on a chosen clock (the `libc` crate does not bind it).
    fn sem_clockwait(
        sem: *mut libc::sem_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

impl BenchSemaphore for PosixSemaphore {
    const NAME: &'static str = "posix";
    const MULTI: bool = false;
    fn with_permits(permits: u32) -> Self {
        // SAFETY: an all-zero sem_t is only storage; `sem_init` below initialises it.
        let sem = PosixSemaphore(Box::new(UnsafeCell::new(unsafe { std::mem::zeroed() })));
        // SAFETY: the pointer is valid and the sem_t stays in its box until drop.
        let ret = unsafe { libc::sem_init(sem.0.get(), 0, permits) };
        assert_eq!(ret, 0, "`sem_init` failed");
        sem
    }
    fn acquire(&self, n: u32) {
        assert_eq!(n, 1, "`sem_t` takes one permit at a time");
        // SAFETY: initialised in `with_permits`, destroyed only in drop.
        while unsafe { libc::sem_wait(self.0.get()) } != 0 {
            assert_eq!(errno(), libc::EINTR, "`sem_wait` failed");
        }
    }
    fn release(&self, n: u32) {
        for _ in 0..n {
            // SAFETY: initialised in `with_permits`, destroyed only in drop.
            let ret = unsafe { libc::sem_post(self.0.get()) };
            assert_eq!(ret, 0, "`sem_post` failed");
        }
    }
    fn try_acquire_for(&self, n: u32, timeout: Duration) -> bool {
        assert_eq!(n, 1, "`sem_t` takes one permit at a time");
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid timespec to write.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let deadline_ns =
            now.tv_sec as u128 * 1_000_000_000 + now.tv_nsec as u128 + timeout.as_nanos();
        let deadline = libc::timespec {
            tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
        };
        loop {
            // SAFETY: initialised in `with_permits`; `deadline` is a valid timespec.
            if unsafe { sem_clockwait(self.0.get(), libc::CLOCK_MONOTONIC, &deadline) } == 0 {
                return true;
            }
            match errno() {
                libc::EINTR => continue,
                libc::ETIMEDOUT => return false,
                other => panic!("`sem_clockwait` failed with errno {other}"),
            }
        }
    }
}

impl Drop for PosixSemaphore {
    fn drop(&mut self) {
        // SAFETY: initialised in `with_permits`; nobody uses it any more (`&mut self`).
        unsafe { libc::sem_destroy(self.0.get()) };
    }
}

/// Qt's `QSemaphore` (Qt 6; futex-based on Linux), through the C++ shim `qt_shim.cpp`.
struct QtSemaphore(NonNull<QSemaphoreObject>);

/// The C++ `QSemaphore` object, only ever handled by pointer.
#[repr(C)]
struct QSemaphoreObject {
    _opaque: [u8; 0],
}

unsafe extern "C" {
    fn futexscope_qt_sem_new(permits: c_int) -> *mut QSemaphoreObject;
    fn futexscope_qt_sem_free(sem: *mut QSemaphoreObject);
    fn futexscope_qt_sem_acquire(sem: *mut QSemaphoreObject, n: c_int);
    fn futexscope_qt_sem_release(sem: *mut QSemaphoreObject, n: c_int);
    fn futexscope_qt_sem_try_acquire_ms(
        sem: *mut QSemaphoreObject,
        n: c_int,
        timeout_ms: c_int,
    ) -> bool;
}

// SAFETY: QSemaphore is documented thread-safe (all its functions may be called from any
// thread at once); it is only reached through the shim's functions.
unsafe impl Sync for QtSemaphore {}

/// A permit count as Qt's `int`.
fn qt_count(n: u32) -> c_int {
    c_int::try_from(n).expect("permit count fits a C int")
}

impl BenchSemaphore for QtSemaphore {
    const NAME: &'static str = "qt";
    fn with_permits(permits: u32) -> Self {
        // SAFETY: the shim only runs `new QSemaphore(permits)`.
        let sem = unsafe { futexscope_qt_sem_new(qt_count(permits)) };
        QtSemaphore(NonNull::new(sem).expect("`new QSemaphore` returned null"))
    }
    fn acquire(&self, n: u32) {
        // SAFETY: the object lives from `with_permits` until drop.
        unsafe { futexscope_qt_sem_acquire(self.0.as_ptr(), qt_count(n)) }
    }
    fn release(&self, n: u32) {
        // SAFETY: the object lives from `with_permits` until drop.
        unsafe { futexscope_qt_sem_release(self.0.as_ptr(), qt_count(n)) }
    }
    fn try_acquire_for(&self, n: u32, timeout: Duration) -> bool {
        // Qt 6.4 takes whole milliseconds (`tryAcquire(int n, int timeout)`).
        assert_eq!(
            timeout.subsec_nanos() % 1_000_000,
            0,
            "QSemaphore takes whole milliseconds"
        );
        let ms = c_int::try_from(timeout.as_millis()).expect("timeout fits a C int of ms");
        // SAFETY: the object lives from `with_permits` until drop.
        unsafe { futexscope_qt_sem_try_acquire_ms(self.0.as_ptr(), qt_count(n), ms) }
    }
}

impl Drop for QtSemaphore {
    fn drop(&mut self) {
        // SAFETY: made by `futexscope_qt_sem_new`; nobody uses it any more (`&mut self`).
        unsafe { futexscope_qt_sem_free(self.0.as_ptr()) }
    }
}

/// One run's figures.
struct Outcome {
    threads: u64,
    ns_per_op: f64,
    /// Timed workload only: overshoot p50, p99, max in µs.
    overshoot_us: Option<[f64; 3]>,
}

/// The `q` quantile (0 to 1) of `sorted`, the nearest rank.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn per_op(elapsed: Duration, ops: u64) -> f64 {
    elapsed.as_nanos() as f64 / ops.max(1) as f64
}

fn uncontended<S: BenchSemaphore>(ops: u64) -> Outcome {
    let sem = S::boxed(1);
    let start = Instant::now();
    for _ in 0..ops {
        sem.acquire(1);
        sem.release(1);
    }
    Outcome {
        threads: 1,
        ns_per_op: per_op(start.elapsed(), ops),
        overshoot_us: None,
    }
}

fn pingpong<S: BenchSemaphore>(ops: u64) -> Outcome {
    let (a, b) = (S::boxed(0), S::boxed(0));
    let start = Instant::now();
    thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..ops {
                a.release(1);
                b.acquire(1);
            }
        });
        s.spawn(|| {
            for _ in 0..ops {
                a.acquire(1);
                b.release(1);
            }
        });
    });
    Outcome {
        threads: 2,
        ns_per_op: per_op(start.elapsed(), ops),
        overshoot_us: None,
    }
}

/// `total` split into `parts` shares that differ by at most one.
fn share(total: u64, parts: u64, index: u64) -> u64 {
    total / parts + u64::from(index < total % parts)
}

fn prodcons<S: BenchSemaphore>(ops: u64, threads: u64) -> Outcome {
    let producers = (threads / 2).max(1);
    let consumers = threads.saturating_sub(producers).max(1);
    let (free, used) = (S::boxed(64), S::boxed(0));
    let start = Instant::now();
    thread::scope(|s| {
        for p in 0..producers {
            let (free, used) = (&free, &used);
            s.spawn(move || {
                for _ in 0..share(ops, producers, p) {
                    free.acquire(1);
                    used.release(1);
                }
            });
        }
        for c in 0..consumers {
            let (free, used) = (&free, &used);
            s.spawn(move || {
                for _ in 0..share(ops, consumers, c) {
                    used.acquire(1);
                    free.release(1);
                }
            });
        }
    });
    Outcome {
        threads: producers + consumers,
        ns_per_op: per_op(start.elapsed(), ops),
        overshoot_us: None,
    }
}

fn multi<S: BenchSemaphore>(ops: u64, threads: u64) -> Outcome {
    let sem = S::boxed(4);
    let start = Instant::now();
    thread::scope(|s| {
        for t in 0..threads {
            let sem = &sem;
            s.spawn(move || {
                let mut rng =
                    0x9e37_79b9_7f4a_7c15u64 ^ (t + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
                for _ in 0..ops / threads {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let k = 1 + (rng % 4) as u32;
                    sem.acquire(k);
                    sem.release(k);
                }
            });
        }
    });
    let done = ops / threads * threads;
    Outcome {
        threads,
        ns_per_op: per_op(start.elapsed(), done),
        overshoot_us: None,
    }
}

fn timed<S: BenchSemaphore>(ops: u64) -> Outcome {
    const TIMEOUT: Duration = Duration::from_millis(1);
    let sem = S::boxed(0);
    let mut overshoots = Vec::with_capacity(ops as usize);
    let start = Instant::now();
    for _ in 0..ops {
        let call = Instant::now();
        assert!(
            !sem.try_acquire_for(1, TIMEOUT),
            "an empty semaphore gave a permit"
        );
        let elapsed = call.elapsed();
        assert!(
            elapsed >= TIMEOUT,
            "{} gave up after {elapsed:?}, before its timeout",
            S::NAME
        );
        overshoots.push((elapsed - TIMEOUT).as_nanos() as f64 / 1000.0);
    }
    let total = start.elapsed();
    overshoots.sort_by(f64::total_cmp);
    Outcome {
        threads: 1,
        ns_per_op: per_op(total, ops),
        overshoot_us: Some([0.5, 0.99, 1.0].map(|q| quantile(&overshoots, q))),
    }
}

fn run<S: BenchSemaphore>(workload: &str, ops: u64, threads: u64) -> Result<Outcome, String> {
    Ok(match workload {
        "uncontended" => uncontended::<S>(ops),
        "pingpong" => pingpong::<S>(ops),
        "prodcons" => prodcons::<S>(ops, threads),
        "multi" if !S::MULTI => {
            return Err(format!(
                "`{}` has no multi-permit acquire, so no `multi` workload",
                S::NAME
            ));
        }
        "multi" => multi::<S>(ops, threads),
        "timed" => timed::<S>(ops),
        other => return Err(format!("unknown workload `{other}`")),
    })
}

const USAGE: &str = "usage: [LOAD=K|cpus] sem-bench IMPL WORKLOAD [N] [THREADS]
       [LOAD=K|cpus] sem-bench pair IMPL PEER WORKLOAD [N] [THREADS] [BLOCKS]
  IMPL, PEER  futexscope | std | parking_lot | posix | qt
  WORKLOAD    uncontended | pingpong | prodcons | multi | timed
  N           operations (default 1000000; in `pair`, per block)
  THREADS     threads for prodcons and multi (default 2)
  BLOCKS      `pair`: counted blocks of each (default 201), after one warm-up block of each
  LOAD        busy-looping threads beside the workload (default 0; cpus = one per CPU)";

/// The `LOAD` environment variable: how many busy threads to run beside the workload.
fn load_from_env() -> Result<u64, String> {
    match std::env::var("LOAD") {
        Err(std::env::VarError::NotPresent) => Ok(0),
        Err(std::env::VarError::NotUnicode(_)) => Err("LOAD is not text".to_owned()),
        Ok(text) if text == "cpus" => Ok(thread::available_parallelism()
            .map_err(|e| format!("LOAD=cpus: cannot count CPUs: {e}"))?
            .get() as u64),
        Ok(text) => text
            .parse()
            .map_err(|_| format!("LOAD must be a count or `cpus`, got `{text}`")),
    }
}

/// Runs `workload` with `load` threads busy-looping beside it: they start before it and stop
/// after it, and never block, so the workload's threads compete with them for every CPU.
fn with_load<T>(load: u64, workload: impl FnOnce() -> T) -> T {
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        for _ in 0..load {
            s.spawn(|| {
                let mut x = 0u64;
                // Relaxed: only a stop flag, read until it flips.
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..1000 {
                        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005) + 1);
                    }
                }
                std::hint::black_box(x);
            });
        }
        let result = workload();
        stop.store(true, Ordering::Relaxed);
        result
    })
}

/// The figures of a `pair` run.
struct Paired {
    threads: u64,
    /// `ns_per_op` of IMPL's blocks, sorted.
    impl_ns: Vec<f64>,
    /// `ns_per_op` of PEER's blocks, sorted.
    peer_ns: Vec<f64>,
    /// IMPL/PEER of each block pair, sorted.
    ratios: Vec<f64>,
}

impl Paired {
    /// The JSON line, without its closing brace.
    fn json(&self, implementation: &str, peer: &str, workload: &str, ops: u64) -> String {
        let ratio = |q| quantile(&self.ratios, q);
        let [low, high] = median_ci95(&self.ratios);
        let above = |limit: f64| self.ratios.iter().filter(|&&r| r > limit).count();
        format!(
            r#"{{"impl":"{implementation}","peer":"{peer}","workload":"{workload}","ops":{ops},"threads":{},"blocks":{},"ns_per_op":{:.1},"peer_ns_per_op":{:.1},"ratio_p50":{:.3},"ratio_p50_ci95":[{:.3},{:.3}],"ratio_p10":{:.3},"ratio_p90":{:.3},"ratio_min":{:.3},"ratio_max":{:.3},"blocks_above_1":{},"blocks_above_1_5":{}"#,
            self.threads,
            self.ratios.len(),
            quantile(&self.impl_ns, 0.5),
            quantile(&self.peer_ns, 0.5),
            ratio(0.5),
            low,
            high,
            ratio(0.1),
            ratio(0.9),
            ratio(0.0),
            ratio(1.0),
            above(1.0),
            above(1.5),
        )
    }
}

/// A 95 % confidence interval of the median of `sorted`, distribution-free: the order statistics
/// at ranks n/2 ∓ 1.96·√n/2 (the normal approximation of the binomial count of values below
/// the median), clamped to the sample.
fn median_ci95(sorted: &[f64]) -> [f64; 2] {
    let n = sorted.len() as f64;
    let half_width = 1.96 * n.sqrt() / 2.0;
    let low = (n / 2.0 - half_width).floor().max(0.0) as usize;
    let high = ((n / 2.0 + half_width).ceil() as usize).min(sorted.len() - 1);
    [sorted[low], sorted[high]]
}

/// Runs `workload` on IMPL and PEER alternately: one warm-up block of each, then `blocks`
/// counted pairs of blocks, IMPL first in even pairs and PEER first in odd ones, so that
/// neither side always runs after the other.
fn paired(
    run_impl: Runner,
    run_peer: Runner,
    workload: &str,
    ops: u64,
    threads: u64,
    blocks: u64,
) -> Result<Paired, String> {
    run_impl(workload, ops, threads)?;
    run_peer(workload, ops, threads)?;
    let mut result = Paired {
        threads: 0,
        impl_ns: Vec::new(),
        peer_ns: Vec::new(),
        ratios: Vec::new(),
    };
    for block in 0..blocks {
        let (mine, peers) = if block % 2 == 0 {
            let mine = run_impl(workload, ops, threads)?;
            (mine, run_peer(workload, ops, threads)?)
        } else {
            let peers = run_peer(workload, ops, threads)?;
            (run_impl(workload, ops, threads)?, peers)
        };
        result.threads = mine.threads;
        result.ratios.push(mine.ns_per_op / peers.ns_per_op);
        result.impl_ns.push(mine.ns_per_op);
        result.peer_ns.push(peers.ns_per_op);
    }
    for values in [&mut result.impl_ns, &mut result.peer_ns, &mut result.ratios] {
        values.sort_by(f64::total_cmp);
    }
    Ok(result)
}

fn main() -> ExitCode {
    match parse_and_run() {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("sem-bench: {message}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Runs one workload on one semaphore.
type Runner = fn(&str, u64, u64) -> Result<Outcome, String>;

fn runner(implementation: &str) -> Result<Runner, String> {
    Ok(match implementation {
        "futexscope" => run::<Semaphore>,
        "std" => run::<StdSemaphore>,
        "parking_lot" => run::<ParkingLotSemaphore>,
        "posix" => run::<PosixSemaphore>,
        "qt" => run::<QtSemaphore>,
        other => return Err(format!("unknown IMPL `{other}`")),
    })
}

/// The optional positive integer at `rest[index]`, or `default`.
fn number(rest: &[String], index: usize, name: &str, default: u64) -> Result<u64, String> {
    rest.get(index)
        .map_or(Ok(default), |text| match text.replace('_', "").parse() {
            Ok(0) | Err(_) => Err(format!("{name} must be a positive integer, got `{text}`")),
            Ok(value) => Ok(value),
        })
}

fn parse_and_run() -> Result<String, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let load = load_from_env()?;
    let mut line = match args.as_slice() {
        [pair, _, _, _, rest @ ..] if pair == "pair" && rest.len() > 3 => {
            return Err(format!("unexpected argument `{}`", rest[3]));
        }
        [pair, implementation, peer, workload, rest @ ..] if pair == "pair" => {
            let ops = number(rest, 0, "N", 1_000_000)?;
            let threads = number(rest, 1, "THREADS", 2)?;
            let blocks = number(rest, 2, "BLOCKS", 201)?;
            let (run_impl, run_peer) = (runner(implementation)?, runner(peer)?);
            let paired = with_load(load, || {
                paired(run_impl, run_peer, workload, ops, threads, blocks)
            })?;
            paired.json(implementation, peer, workload, ops)
        }
        [pair, ..] if pair == "pair" => {
            return Err("`pair` needs IMPL, PEER and WORKLOAD".to_owned());
        }
        [implementation, workload, rest @ ..] => {
            if rest.len() > 2 {
                return Err(format!("unexpected argument `{}`", rest[2]));
            }
            let ops = number(rest, 0, "N", 1_000_000)?;
            let threads = number(rest, 1, "THREADS", 2)?;
            let run = runner(implementation)?;
            let outcome = with_load(load, || run(workload, ops, threads))?;
            let mut line = format!(
                r#"{{"impl":"{implementation}","workload":"{workload}","ops":{ops},"threads":{},"ns_per_op":{:.1}"#,
                outcome.threads, outcome.ns_per_op
            );
            if let Some([p50, p99, max]) = outcome.overshoot_us {
                line += &format!(
                    r#","overshoot_us_p50":{p50:.1},"overshoot_us_p99":{p99:.1},"overshoot_us_max":{max:.1}"#
                );
            }
            line
        }
        _ => return Err("IMPL and WORKLOAD are required".to_owned()),
    };
    if load > 0 {
        line += &format!(r#","load":{load}"#);
    }
    line.push('}');
    Ok(line)
}
