//! Thin wrappers over the system calls futexscope makes itself (the kernel report's battery,
//! the probes' loader, and the test workloads of `test/integration-test`): futex and futex2,
//! whether each futex system call exists, clocks, CPU affinity, timer slack, signals, and a
//! thread's scheduler state.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use futexscope_probes_common::abi::syscalls;
pub use futexscope_probes_common::abi::{FUTEX2_PRIVATE, FUTEX2_SIZE_U32, FutexWaitv};

/// `futex_waitv(2)` (Linux 5.16).
pub const SYS_FUTEX_WAITV: libc::c_long = syscalls::FUTEX_WAITV as libc::c_long;
/// `futex_wake(2)` (Linux 6.7).
pub const SYS_FUTEX_WAKE: libc::c_long = syscalls::FUTEX_WAKE as libc::c_long;
/// `futex_wait(2)` (Linux 6.7).
pub const SYS_FUTEX_WAIT: libc::c_long = syscalls::FUTEX_WAIT as libc::c_long;
/// `futex_requeue(2)` (Linux 6.7).
pub const SYS_FUTEX_REQUEUE: libc::c_long = syscalls::FUTEX_REQUEUE as libc::c_long;

/// A private 32-bit `futex_waitv` entry for `word` expecting `val`.
pub fn waitv_private(word: &AtomicU32, val: u32) -> FutexWaitv {
    FutexWaitv {
        val: u64::from(val),
        uaddr: word.as_ptr() as u64,
        flags: FUTEX2_SIZE_U32 | FUTEX2_PRIVATE,
        reserved: 0,
    }
}

/// The `errno` of the last failed call.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Result of a raw syscall: the return value or the errno.
pub fn check(ret: libc::c_long) -> Result<libc::c_long, i32> {
    if ret == -1 { Err(errno()) } else { Ok(ret) }
}

/// `futex(word, op | FUTEX_PRIVATE_FLAG, val, timeout, uaddr2, val3)`.
pub fn futex(
    word: &AtomicU32,
    op: i32,
    val: u32,
    timeout: Option<&libc::timespec>,
    uaddr2: Option<&AtomicU32>,
    val3: u32,
) -> Result<libc::c_long, i32> {
    let timeout = timeout.map_or(std::ptr::null(), |t| t as *const libc::timespec);
    let uaddr2 = uaddr2.map_or(std::ptr::null(), |w| w.as_ptr().cast_const());
    // SAFETY: `word` and `uaddr2` (when given) are live aligned 32-bit atomics and `timeout`
    // is null or points to a live timespec, all for the duration of the call; the kernel reads
    // (and for wake-op writes) only those.
    check(unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op | libc::FUTEX_PRIVATE_FLAG,
            val,
            timeout,
            uaddr2,
            val3,
        )
    })
}

/// FUTEX_CMP_REQUEUE: if `source` holds `expected`, wakes `wake` of its waiters and moves up to
/// `requeue` others to `target`; returns how many were woken or moved.
pub fn cmp_requeue(
    source: &AtomicU32,
    wake: i32,
    requeue: i32,
    target: &AtomicU32,
    expected: u32,
) -> Result<libc::c_long, i32> {
    // SAFETY: both words are live aligned atomics; the requeue count travels by value in the
    // timeout argument, as FUTEX_CMP_REQUEUE defines.
    check(unsafe {
        libc::syscall(
            libc::SYS_futex,
            source.as_ptr(),
            libc::FUTEX_CMP_REQUEUE | libc::FUTEX_PRIVATE_FLAG,
            wake,
            requeue as libc::c_long,
            target.as_ptr(),
            expected,
        )
    })
}

/// `FUTEX_WAIT` (relative `timeout`, none: until woken): sleeps while `word` holds `expected`;
/// `Err(EAGAIN)` at once if it does not.
pub fn wait(
    word: &AtomicU32,
    expected: u32,
    timeout: Option<&libc::timespec>,
) -> Result<libc::c_long, i32> {
    futex(word, libc::FUTEX_WAIT, expected, timeout, None, 0)
}

/// Wakes at most `count` waiters of `word`; returns how many were woken.
pub fn wake(word: &AtomicU32, count: i32) -> Result<libc::c_long, i32> {
    futex(word, libc::FUTEX_WAKE, count as u32, None, None, 0)
}

/// `futex_waitv(2)`: sleeps until one of `waiters` is woken (returns its index), or until the
/// absolute CLOCK_MONOTONIC `deadline` (none: no limit); `Err(EAGAIN)` if a word does not hold
/// its expected value.
pub fn futex_waitv(
    waiters: &[FutexWaitv],
    deadline: Option<&libc::timespec>,
) -> Result<libc::c_long, i32> {
    let deadline = deadline.map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY:
    // - `waiters` points to `waiters.len()` initialised `struct futex_waitv` entries, live for
    //   the call; the kernel only reads them and the words they name, and fails with EFAULT
    //   for an address that is not mapped.
    // - `deadline` is null or points to a live timespec.
    check(unsafe {
        libc::syscall(
            SYS_FUTEX_WAITV,
            waiters.as_ptr(),
            waiters.len() as libc::c_uint,
            0u32,
            deadline,
            libc::CLOCK_MONOTONIC,
        )
    })
}

/// Reads `clock` in nanoseconds.
pub fn now(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; the clocks used here always exist.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic() -> u64 {
    now(libc::CLOCK_MONOTONIC)
}

/// A timespec of `ns` nanoseconds.
pub fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// The calling thread's id.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t and `cpu` is below CPU_SETSIZE (checked by callers
    // through the online CPU count).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 means this thread.
    let ret = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid out-pointer of the size passed; pid 0 means this thread.
    let ret = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if ret != 0 {
        return vec![0];
    }
    // SAFETY: `set` was filled by sched_getaffinity; CPU_ISSET only reads it.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// The calling thread's timer slack in nanoseconds (`PR_GET_TIMERSLACK`).
pub fn timer_slack() -> u64 {
    // SAFETY: PR_GET_TIMERSLACK takes no pointer arguments.
    let ret = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
    ret as u64
}

/// Sets the calling thread's timer slack (`PR_SET_TIMERSLACK`).
pub fn set_timer_slack(ns: u64) -> std::io::Result<()> {
    // SAFETY: PR_SET_TIMERSLACK takes the slack by value, no pointers.
    let ret = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0) };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether thread `tid` of this process is asleep (state `S` in `/proc/self/task/<tid>/stat`).
pub fn is_sleeping(tid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).is_ok_and(|stat| {
        // The state follows the parenthesised command name, which may itself contain spaces.
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('S'))
    })
}

/// Waits until thread `tid` is asleep, for at most `limit_ns`; returns whether it was.
pub fn wait_until_sleeping(tid: i32, limit_ns: u64) -> bool {
    let start = monotonic();
    while monotonic() - start < limit_ns {
        if is_sleeping(tid) {
            return true;
        }
        std::thread::yield_now();
    }
    false
}

/// Number of times [`count_signal`] ran.
pub static SIGNALS_HANDLED: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_signal(_signal: libc::c_int) {
    // Relaxed: a plain event counter; the reader synchronises with the handled thread
    // through the join or the futex word it checks afterwards.
    SIGNALS_HANDLED.fetch_add(1, Ordering::Relaxed);
}

/// Installs a counting handler for `signal`, with `SA_RESTART` when `restart`; returns the
/// previous disposition for [`restore_signal`].
pub fn install_counting_handler(signal: i32, restart: bool) -> libc::sigaction {
    // SAFETY: an all-zero sigaction is valid (empty mask, no flags).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = count_signal as *const () as usize;
    action.sa_flags = if restart { libc::SA_RESTART } else { 0 };
    // SAFETY: an all-zero sigaction is a valid out-value.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid; the handler only touches an atomic (async-signal-safe).
    unsafe { libc::sigaction(signal, &action, &mut old) };
    old
}

/// Restores the disposition `old` of `signal`.
pub fn restore_signal(signal: i32, old: &libc::sigaction) {
    // SAFETY: `old` came from sigaction; a null old-action pointer is allowed.
    unsafe { libc::sigaction(signal, old, std::ptr::null_mut()) };
}

/// Sends `signal` to thread `tid` of this process.
pub fn signal_thread(tid: i32, signal: i32) {
    // SAFETY: tgkill with our own pid and one of our thread ids has no memory effects.
    unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, signal) };
}

/// Whether a raw syscall result means the call exists.
fn exists(result: Result<libc::c_long, i32>) -> bool {
    result != Err(libc::ENOSYS)
}

/// `futex_waitv(NULL, 0, 0, NULL, 0)`: EINVAL (no waiters) when present.
pub fn futex_waitv_present() -> bool {
    // SAFETY: a null vector of length 0 is rejected before anything is read.
    exists(check(unsafe {
        libc::syscall(
            SYS_FUTEX_WAITV,
            std::ptr::null::<u8>(),
            0u32,
            0u32,
            std::ptr::null::<u8>(),
            0,
        )
    }))
}

/// `futex_wake(&word, 0, 0, ~0)`: EINVAL (invalid flags) when present.
pub fn futex2_wake_present() -> bool {
    let word = AtomicU32::new(0);
    // SAFETY: `word` is live; invalid flags are rejected before it is touched.
    exists(check(unsafe {
        libc::syscall(SYS_FUTEX_WAKE, word.as_ptr(), 0u64, 0i32, u32::MAX)
    }))
}

/// `futex_wait(&word, 0, 0, ~0, NULL, 0)`: EINVAL (invalid flags) when present.
pub fn futex2_wait_present() -> bool {
    let word = AtomicU32::new(0);
    // SAFETY: `word` is live; invalid flags are rejected before anything is read.
    exists(check(unsafe {
        libc::syscall(
            SYS_FUTEX_WAIT,
            word.as_ptr(),
            0u64,
            0u64,
            u32::MAX,
            std::ptr::null::<u8>(),
            0,
        )
    }))
}

/// `futex_requeue(NULL, 1, 0, 0)`: EINVAL (flags must be 0) when present.
pub fn futex2_requeue_present() -> bool {
    // SAFETY: non-zero flags are rejected before the null vector is read.
    exists(check(unsafe {
        libc::syscall(SYS_FUTEX_REQUEUE, std::ptr::null::<u8>(), 1u32, 0i32, 0i32)
    }))
}

/// `bpf(0xffff, NULL, 0)`: EINVAL (or EPERM) when the syscall exists.
pub fn bpf_syscall_present() -> bool {
    // SAFETY: an unknown command with a null attribute is rejected before anything is read.
    exists(check(unsafe {
        libc::syscall(libc::SYS_bpf, 0xffff, std::ptr::null::<u8>(), 0u32)
    }))
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC in ns, from the closest of a few paired readings.
pub fn realtime_offset_ns() -> i64 {
    let read = |clock| now(clock) as i64;
    let mut best = (i64::MAX, 0);
    for _ in 0..5 {
        let before = read(libc::CLOCK_MONOTONIC);
        let real = read(libc::CLOCK_REALTIME);
        let after = read(libc::CLOCK_MONOTONIC);
        if after - before < best.0 {
            best = (after - before, real - (before + (after - before) / 2));
        }
    }
    best.1
}

/// Where tracefs is mounted; mounts it at `/sys/kernel/tracing` if it is mounted nowhere (needs
/// CAP_SYS_ADMIN).
pub fn ensure_tracefs() -> std::io::Result<std::path::PathBuf> {
    use std::path::PathBuf;
    let mounted = |dir: &str| std::path::Path::new(dir).join("events").is_dir();
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if mounted(dir) {
            return Ok(PathBuf::from(dir));
        }
    }
    // SAFETY: every pointer is a NUL-terminated string literal, live for the call; no data.
    let ret = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(PathBuf::from("/sys/kernel/tracing"))
}
