//! Scripted futex workloads with known counts, run by `futexscope workload` for tests and demos.

/// Makes `count` `FUTEX_WAIT` calls on a private word whose value never matches, so each
/// returns `EAGAIN` at once. Returns the word's address.
pub fn eagain_waits(count: u32) -> usize {
    let word = std::sync::atomic::AtomicU32::new(1);
    for _ in 0..count {
        // SAFETY: `word` is a live, aligned 32-bit atomic; FUTEX_WAIT reads it and returns
        // EAGAIN because it holds 1, not the expected 0. The timeout pointer is null.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                0u32,
                std::ptr::null::<libc::timespec>(),
            )
        };
        assert_eq!(ret, -1, "FUTEX_WAIT on a mismatched word must fail");
    }
    word.as_ptr() as usize
}
