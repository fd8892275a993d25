//! Futexes shared between processes, keyed the way the kernel keys them: `futexscope run` on
//! small C programs built here with `cc` that wait in one process and wake from another, with
//! glibc's process-shared semaphores and raw non-private futex calls. Each program prints its
//! own counts; the summary must show one row for the shared futex with both processes, every
//! woken wait paired with a wake (no "woken with no wake"), and the export must draw the wake →
//! wait arrows from one process to the other.
//!
//! Needs root (the suite runs ignored tests as root); a test that cannot load eBPF fails.

mod common;

use std::{collections::HashMap, path::PathBuf, process::Command};

use serde_json::Value;

const PROGRAM: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* Each mode prints its ground truth, one line per process:
   ROLE pid=P addr=A key=value... */

static int rounds = 20;

/* A mapping that makes the next mmap land elsewhere than in the other process. */
static void shift_addresses(void) {
    void *dummy = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (dummy == MAP_FAILED) { perror("mmap"); exit(2); }
}

static int reap(pid_t child) {
    int status;
    if (waitpid(child, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "child failed\n");
        return 1;
    }
    return 0;
}

/* glibc process-shared semaphore in MAP_SHARED|MAP_ANONYMOUS memory, inherited over fork. */
static int fork_mode(void) {
    sem_t *sem = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sem == MAP_FAILED || sem_init(sem, 1, 0) != 0) { perror("sem"); return 2; }
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        for (int i = 0; i < rounds; i++) { usleep(3000); sem_post(sem); }
        printf("poster pid=%d addr=%p posts=%d\n", getpid(), (void *)sem, rounds);
        fflush(stdout);
        _exit(0);
    }
    for (int i = 0; i < rounds; i++)
        while (sem_wait(sem) != 0) {}
    printf("waiter pid=%d addr=%p waits=%d\n", getpid(), (void *)sem, rounds);
    return reap(child);
}

/* glibc named semaphore (sem_open: /dev/shm/sem.NAME), opened by each process on its own,
   at a different address in each. */
static int shm_mode(const char *name) {
    sem_unlink(name);
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        shift_addresses();
        sem_t *sem = sem_open(name, O_CREAT, 0600, 0);
        if (sem == SEM_FAILED) { perror("sem_open"); _exit(2); }
        for (int i = 0; i < rounds; i++) { usleep(3000); sem_post(sem); }
        printf("poster pid=%d addr=%p posts=%d\n", getpid(), (void *)sem, rounds);
        fflush(stdout);
        _exit(0);
    }
    sem_t *sem = sem_open(name, O_CREAT, 0600, 0);
    if (sem == SEM_FAILED) { perror("sem_open"); return 2; }
    for (int i = 0; i < rounds; i++)
        while (sem_wait(sem) != 0) {}
    printf("waiter pid=%d addr=%p waits=%d\n", getpid(), (void *)sem, rounds);
    int failed = reap(child);
    sem_unlink(name);
    return failed;
}

/* Raw non-private FUTEX_WAIT / FUTEX_WAKE on a word at offset 0x10 of a regular file mapped
   MAP_SHARED by each process on its own, at different addresses. */
static int file_mode(const char *path) {
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, 4096) != 0) { perror("file"); return 2; }
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) shift_addresses();
    char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (page == MAP_FAILED) { perror("mmap"); return 2; }
    _Atomic uint32_t *go = (_Atomic uint32_t *)(page + 0x10);
    _Atomic uint32_t *ack = (_Atomic uint32_t *)(page + 0x20);
    if (child == 0) {
        long wakes = 0, woken = 0;
        for (uint32_t i = 1; i <= (uint32_t)rounds; i++) {
            usleep(2000);
            atomic_store(go, i);
            long r = syscall(SYS_futex, go, FUTEX_WAKE, 1, NULL, NULL, 0);
            wakes++;
            if (r > 0) woken += r;
            while (atomic_load(ack) != i) usleep(100);
        }
        printf("waker pid=%d addr=%p wakes=%ld woken=%ld\n", getpid(), (void *)go, wakes, woken);
        fflush(stdout);
        _exit(0);
    }
    long waits = 0, woken = 0, eagain = 0;
    for (uint32_t i = 1; i <= (uint32_t)rounds; i++) {
        uint32_t v;
        while ((v = atomic_load(go)) != i) {
            long r = syscall(SYS_futex, go, FUTEX_WAIT, v, NULL, NULL, 0);
            waits++;
            if (r == 0) woken++;
            else if (errno == EAGAIN) eagain++;
        }
        atomic_store(ack, i);
    }
    printf("waiter pid=%d addr=%p waits=%ld woken=%ld eagain=%ld\n", getpid(), (void *)go, waits,
           woken, eagain);
    return reap(child);
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s fork|shm|file ARG [rounds]\n", argv[0]); return 2; }
    if (argc > 3) rounds = atoi(argv[3]);
    if (strcmp(argv[1], "fork") == 0) return fork_mode();
    if (strcmp(argv[1], "shm") == 0) return shm_mode(argv[2]);
    if (strcmp(argv[1], "file") == 0) return file_mode(argv[2]);
    return 2;
}
"#;

/// Builds the program once per test (tests run in parallel, each in its own directory).
fn build(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("shared-futexes-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("shared.c");
    std::fs::write(&source, PROGRAM).unwrap();
    let binary = dir.join("shared");
    common::compile_c(&source, &binary, &["-O1", "-g", "-pthread"]);
    binary
}

/// One process's line of ground truth: `ROLE pid=P addr=A key=value…`.
#[derive(Debug)]
struct Truth {
    pid: u32,
    addr: u64,
    counts: HashMap<String, u64>,
}

/// What one traced run produced.
struct Run {
    truth: HashMap<String, Truth>,
    summary: Value,
    export: Value,
}

impl Run {
    /// Traces `binary MODE ARG ROUNDS` with a JSON summary and a Chrome JSON export.
    fn of(binary: &PathBuf, mode: &str, arg: &str, rounds: u32) -> Run {
        let json = binary.with_extension("json");
        let export = binary.with_extension("trace.json");
        let output = Command::new(env!("CARGO_BIN_EXE_futexscope"))
            .args(["run", "--view", "quiet", "--json"])
            .arg(&json)
            .arg("--export")
            .arg(&export)
            .arg("--")
            .arg(binary)
            .args([mode, arg, &rounds.to_string()])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "futexscope must load its probes and trace (run as root): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let truth = stdout
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let role = fields.next()?.to_owned();
                let pairs: HashMap<&str, &str> = fields.filter_map(|f| f.split_once('=')).collect();
                let pid = pairs.get("pid")?.parse().ok()?;
                let addr =
                    u64::from_str_radix(pairs.get("addr")?.trim_start_matches("0x"), 16).ok()?;
                let counts = pairs
                    .iter()
                    .filter_map(|(k, v)| Some(((*k).to_owned(), v.parse().ok()?)))
                    .collect();
                Some((role, Truth { pid, addr, counts }))
            })
            .collect();
        let read = |path: &PathBuf| -> Value {
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
        };
        Run {
            truth,
            summary: read(&json),
            export: read(&export),
        }
    }

    fn truth(&self, role: &str) -> &Truth {
        self.truth
            .get(role)
            .unwrap_or_else(|| panic!("the program printed no `{role}` line: {:?}", self.truth))
    }

    /// The rows of the summary that name `pid`'s word at `addr` or list `pid`.
    fn rows_of(&self, pid: u32, addr: u64) -> Vec<&Value> {
        let addr = format!("{addr:#x}");
        self.summary["futexes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                (r["tgid"] == pid && r["uaddr"] == addr.as_str())
                    || r["shared"].is_object()
                        && r["pids"].as_array().unwrap().iter().any(|p| *p == pid)
            })
            .collect()
    }

    /// The one shared row used by both `waiter` and `poster`, checked: both pids, a key by
    /// file, and no separate per-process rows for either address.
    fn shared_row(&self, waiter: &Truth, poster: &Truth) -> &Value {
        let rows = self.rows_of(waiter.pid, waiter.addr);
        assert_eq!(rows.len(), 1, "one row for the futex: {:#}", self.summary);
        assert_eq!(
            self.rows_of(poster.pid, poster.addr).len(),
            1,
            "no separate row for the other process: {:#}",
            self.summary
        );
        let row = rows[0];
        let mut pids: Vec<u64> = row["pids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_u64().unwrap())
            .collect();
        pids.sort_unstable();
        let mut expected = vec![u64::from(waiter.pid), u64::from(poster.pid)];
        expected.sort_unstable();
        assert_eq!(pids, expected, "both processes use it: {row:#}");
        assert!(
            row["shared"]["ino"].as_u64().unwrap() > 0,
            "keyed by file: {row:#}"
        );
        assert_eq!(
            row["tgid"].as_u64(),
            Some(expected[0]),
            "tgid is the first user's: {row:#}"
        );
        assert_eq!(
            self.summary["drops"]["shared_key_fallback"], 0,
            "every lookup succeeded: {:#}",
            self.summary["drops"]
        );
        row
    }

    /// Flow arrows of the export from a slice of process `from` to one of process `to`.
    fn flows(&self, from: u32, to: u32) -> usize {
        let events = self.export["traceEvents"].as_array().unwrap();
        let pid_of = |ph: &str| -> HashMap<u64, u64> {
            events
                .iter()
                .filter(|e| e["ph"] == ph)
                .map(|e| (e["id"].as_u64().unwrap(), e["pid"].as_u64().unwrap()))
                .collect()
        };
        let (starts, ends) = (pid_of("s"), pid_of("f"));
        ends.iter()
            .filter(|(id, pid)| **pid == u64::from(to) && starts.get(id) == Some(&u64::from(from)))
            .count()
    }
}

fn count(row: &Value, field: &str) -> u64 {
    row[field].as_u64().unwrap()
}

/// Waits of the row that returned 0 (woken): the rest timed out, were interrupted or found
/// the value changed.
fn woken_waits(row: &Value) -> u64 {
    count(row, "waits")
        - count(row, "timeouts")
        - count(&row["spurious"], "eintr")
        - count(&row["spurious"], "eagain")
}

/// The checks common to the glibc semaphore cases: the poster's wakes end the waiter's waits.
fn check_semaphore_run(run: &Run, rounds: u64) {
    let (waiter, poster) = (run.truth("waiter"), run.truth("poster"));
    assert_eq!(waiter.counts["waits"], rounds);
    assert_eq!(poster.counts["posts"], rounds);
    let row = run.shared_row(waiter, poster);
    // glibc's sem_wait sleeps only when the value is 0 and sem_post wakes only when a waiter
    // announced itself, so the counts are at most the program's, and at least one round
    // slept (the poster sleeps 3 ms before each post).
    let woken = woken_waits(row);
    assert!(
        (1..=rounds).contains(&woken),
        "woken waits within the program's sem_wait calls: {row:#}"
    );
    assert!(count(row, "wake_calls") <= rounds, "{row:#}");
    assert_eq!(
        count(&row["spurious"], "no_waker"),
        0,
        "every woken wait had a wake (from the other process): {row:#}"
    );
    assert_eq!(
        count(row, "woken"),
        woken,
        "each wake's count is a woken wait: {row:#}"
    );
    assert_eq!(
        run.flows(poster.pid, waiter.pid) as u64,
        woken,
        "one arrow from the poster's wake to each woken wait of the waiter"
    );
}

#[test]
#[ignore = "needs root"]
fn a_semaphore_in_shared_anonymous_memory_pairs_across_fork() {
    common::require_ebpf();
    let binary = build("fork");
    let rounds = 40;
    let run = Run::of(&binary, "fork", "-", rounds);
    let (waiter, poster) = (run.truth("waiter"), run.truth("poster"));
    assert_eq!(waiter.addr, poster.addr, "fork keeps the address");
    check_semaphore_run(&run, u64::from(rounds));
    std::fs::remove_dir_all(binary.parent().unwrap()).unwrap();
}

#[test]
#[ignore = "needs root"]
fn a_named_semaphore_at_different_addresses_is_one_futex() {
    common::require_ebpf();
    let binary = build("shm");
    let rounds = 40;
    let name = format!("/futexscope-test-{}", std::process::id());
    let run = Run::of(&binary, "shm", &name, rounds);
    let (waiter, poster) = (run.truth("waiter"), run.truth("poster"));
    assert_ne!(waiter.addr, poster.addr, "each process mapped it elsewhere");
    check_semaphore_run(&run, u64::from(rounds));
    let row = run.rows_of(waiter.pid, waiter.addr)[0];
    let label = row["label"].as_str().unwrap();
    // Named by its file while a process still maps it (glibc creates it under a temporary
    // name and links it: the mapping shows that name, deleted), else by device and inode.
    assert!(
        (label.starts_with("/dev/shm/sem.") && label.ends_with("+0x0"))
            || label.starts_with("dev "),
        "{row:#}"
    );
    std::fs::remove_dir_all(binary.parent().unwrap()).unwrap();
}

#[test]
#[ignore = "needs root"]
fn raw_futex_calls_on_a_shared_file_mapping_match_the_programs_counts() {
    common::require_ebpf();
    let binary = build("file");
    let rounds = 40;
    let file = binary.with_extension("data");
    let run = Run::of(&binary, "file", file.to_str().unwrap(), rounds);
    let (waiter, waker) = (run.truth("waiter"), run.truth("waker"));
    assert_ne!(waiter.addr, waker.addr, "each process mapped it elsewhere");
    let row = run.shared_row(waiter, waker);
    assert_eq!(
        row["shared"]["offset"], "0x10",
        "the word's offset in the file: {row:#}"
    );
    // Raw calls: the program's counts are exact.
    assert_eq!(count(row, "waits"), waiter.counts["waits"], "{row:#}");
    assert_eq!(woken_waits(row), waiter.counts["woken"], "{row:#}");
    assert_eq!(
        count(&row["spurious"], "eagain"),
        waiter.counts["eagain"],
        "{row:#}"
    );
    assert_eq!(count(row, "wake_calls"), waker.counts["wakes"], "{row:#}");
    assert_eq!(count(row, "woken"), waker.counts["woken"], "{row:#}");
    assert_eq!(count(&row["spurious"], "no_waker"), 0, "{row:#}");
    assert_eq!(
        run.flows(waker.pid, waiter.pid) as u64,
        waiter.counts["woken"],
        "one arrow from the waker's process to each woken wait"
    );
    std::fs::remove_dir_all(binary.parent().unwrap()).unwrap();
}
