//! The export streams: over a longer capture its file grows and futexscope's memory does not.

use std::process::Command;

/// Two Python threads handing a turn back and forth on a `threading.Condition` for
/// `sys.argv[1]` seconds: futex waits and wakes at every hand-off, paced (a sleep of 100 µs
/// per turn) so that a debug build of futexscope keeps up and the file grows with the time.
const PING_PONG: &str = r#"
import sys, threading, time
stop = time.monotonic() + float(sys.argv[1])
cond = threading.Condition()
turn = [0]
def player(me):
    with cond:
        while time.monotonic() < stop:
            while turn[0] != me:
                if not cond.wait(0.5):
                    return
            time.sleep(0.0001)
            turn[0] = 1 - me
            cond.notify()
        turn[0] = 1 - me
        cond.notify()
threads = [threading.Thread(target=player, args=(i,)) for i in (0, 1)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"#;

/// Peak resident memory of futexscope (KiB) and the export's size (bytes) for a capture of
/// `seconds` of the ping-pong.
#[expect(
    clippy::zombie_processes,
    reason = "waited for with wait4, which also gives its resource usage"
)]
fn capture(seconds: u32, file_name: &str) -> (i64, u64) {
    let path = std::env::temp_dir().join(format!(
        "futexscope-export-memory-{}-{file_name}",
        std::process::id()
    ));
    let child = Command::new(env!("CARGO_BIN_EXE_futexscope"))
        .args(["run", "--view", "quiet", "--export"])
        .arg(&path)
        .args(["--", "python3", "-c", PING_PONG, &seconds.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start futexscope");
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `child` is our child and has not been waited for; `status` and `usage` are valid
    // for writes. Its `ru_maxrss` is the peak of futexscope and of the children it waited
    // for (the Python program, which is smaller).
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "futexscope failed: status {status:#x}"
    );
    let size = std::fs::metadata(&path).expect("the export").len();
    std::fs::remove_file(&path).unwrap();
    (usage.ru_maxrss, size)
}

#[test]
#[ignore = "needs root"]
fn export_memory_stays_flat_over_a_longer_capture() {
    let (short_kib, short_bytes) = capture(2, "short.pftrace");
    let (long_kib, long_bytes) = capture(8, "long.pftrace");
    let report = format!(
        "2 s: peak {} MiB, file {} MiB; 8 s: peak {} MiB, file {} MiB",
        short_kib / 1024,
        short_bytes >> 20,
        long_kib / 1024,
        long_bytes >> 20
    );
    eprintln!("{report}");
    assert!(long_bytes > 3 * short_bytes, "the file grows: {report}");
    // Keeping the whole timeline, the 8 s capture peaked about 15 MiB higher (1.7 bytes of
    // memory per byte of file); streamed, the peaks are the same.
    assert!(
        long_kib < short_kib + 4 * 1024,
        "memory stays within 4 MiB of the short capture's: {report}"
    );
}
