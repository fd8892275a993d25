//! Hang guards shared by the integration tests: every test that can block runs under a
//! deadline and, past it, fails with the semaphore's state instead of hanging CI.
//!
//! The deadline is a hang bound, not a timing check: 30 s by default (generous on a loaded
//! machine, where a healthy test takes milliseconds to seconds), 900 s with
//! `FUTEXSCOPE_THOROUGH=1`, `FUTEXSCOPE_HANG_SECS` to set it. A test whose threads are stuck cannot unwind (a scope joins its threads, and a
//! lost wake-up never ends), so a hung test prints its name and the state straight to stderr
//! (past the harness's output capture) and ends the test process with status 101.
#![allow(dead_code)] // each test binary uses part of it

use futexscope_semaphore::Semaphore;
use std::fmt::Debug;
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

/// How long a test may block before it counts as hung.
pub fn hang_limit() -> Duration {
    let secs = std::env::var("FUTEXSCOPE_HANG_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(
            if std::env::var_os("FUTEXSCOPE_THOROUGH").is_some_and(|v| v != "0") {
                900
            } else {
                30
            },
        );
    Duration::from_secs(secs)
}

/// Fails the test process: `what` is still not done after the hang limit; `state` shows why.
pub fn hung(what: &str, state: &dyn Debug) -> ! {
    let test = thread::current().name().unwrap_or("?").to_owned();
    let _ = writeln!(
        std::io::stderr(),
        "\ntest {test} HUNG: {what} after {:?}; state: {state:?}",
        hang_limit()
    );
    std::process::exit(101);
}

/// Runs `body` on its own thread and waits for it at most the hang limit; past it, fails
/// naming `state` (the semaphore or semaphores the body uses).
pub fn within<R: Send>(state: &(dyn Debug + Sync), body: impl FnOnce() -> R + Send) -> R {
    let name = thread::current().name().map(str::to_owned);
    thread::scope(|s| {
        let mut builder = thread::Builder::new();
        if let Some(name) = name {
            builder = builder.name(name);
        }
        let handle = builder
            .spawn_scoped(s, body)
            .expect("spawning the test body");
        let start = Instant::now();
        while !handle.is_finished() {
            if start.elapsed() > hang_limit() {
                hung("the test body is still blocked", state);
            }
            thread::sleep(Duration::from_millis(1));
        }
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Waits until `condition` holds, at most the hang limit; past it, fails naming `what`.
pub fn wait_until(what: &str, sem: &Semaphore, condition: impl Fn(&Semaphore) -> bool) {
    let start = Instant::now();
    while !condition(sem) {
        if start.elapsed() > hang_limit() {
            hung(what, sem);
        }
        thread::sleep(Duration::from_micros(200));
    }
}

/// Waits until exactly `n` threads are registered as waiting on `sem`.
pub fn wait_for_waiters(sem: &Semaphore, n: u32) {
    wait_until(&format!("waiting for {n} registered waiters"), sem, |s| {
        s.waiters() == n
    });
}
