//! More `--stacks` cases, each built here: a Rust release binary using std's `Mutex` and
//! `Condvar`; a stack through a shared library built without debug information (and
//! stripped); and a comparison with bpftrace's `ustack` (the kernel's frame-pointer walk) on a C
//! program built with frame pointers.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("futexscope-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `command` (a compiler), panicking with its output if it fails.
fn compile(command: &mut Command) {
    let output = command.output().expect("run the compiler");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `futexscope run --stacks --json` on `binary`; returns the summary.
fn trace(dir: &Path, binary: &Path) -> Value {
    let json = dir.join("summary.json");
    let output = Command::new(env!("CARGO_BIN_EXE_futexscope"))
        .args(["run", "--view", "quiet", "--stacks", "--json"])
        .arg(&json)
        .arg("--")
        .arg(binary)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap()
}

/// Every stack of `side` (`waiter_stacks` or `waker_stacks`) of every word, as frame lists.
fn stacks(summary: &Value, side: &str) -> Vec<Vec<String>> {
    summary["futexes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row[side].as_array().unwrap())
        .map(|stack| {
            stack["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

/// Index of the first frame of function `name` (`name (…)`), if any.
fn position(frames: &[String], name: &str) -> Option<usize> {
    frames
        .iter()
        .position(|f| f.starts_with(&format!("{name} (")))
}

const RUST_PROGRAM: &str = r#"
use std::sync::{Arc, Condvar, Mutex};

struct Tickets { count: Mutex<u32>, ready: Condvar }

#[inline(never)]
fn level_three(t: &Tickets) {
    let mut count = t.count.lock().unwrap();
    while *count == 0 { count = t.ready.wait(count).unwrap(); }
    *count -= 1;
}
#[inline(never)]
fn level_two(t: &Tickets) { level_three(t); std::hint::black_box(()); }
#[inline(never)]
fn level_one(t: &Tickets) { level_two(t); std::hint::black_box(()); }

fn give(t: &Tickets) { *t.count.lock().unwrap() += 1; t.ready.notify_one(); }
// Different constants, or the compiler merges the two identical functions into one.
#[inline(never)]
fn notify_from_alpha(t: &Tickets) { give(t); std::hint::black_box(1); }
#[inline(never)]
fn notify_from_beta(t: &Tickets) { give(t); std::hint::black_box(2); }

fn main() {
    let t = Arc::new(Tickets { count: Mutex::new(0), ready: Condvar::new() });
    let waiters: Vec<_> = (0..2).map(|_| {
        let t = t.clone();
        std::thread::spawn(move || for _ in 0..20 { level_one(&t) })
    }).collect();
    for i in 0..40 {
        std::thread::sleep(std::time::Duration::from_millis(2));
        if i % 2 == 0 { notify_from_alpha(&t) } else { notify_from_beta(&t) }
    }
    for w in waiters { w.join().unwrap(); }
}
"#;

#[test]
#[ignore = "needs root"]
fn rust_release_condvar_waiters_show_their_named_functions_in_order() {
    common::require_ebpf();
    let dir = scratch("stacks-rust");
    let source = dir.join("condvar_levels.rs");
    std::fs::write(&source, RUST_PROGRAM).unwrap();
    let binary = dir.join("condvar_levels");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    // A release build: optimized, no frame pointers, line tables for file:line.
    compile(
        Command::new(rustc)
            .args(["-O", "-C", "debuginfo=line-tables-only", "-o"])
            .arg(&binary)
            .arg(&source),
    );
    let summary = trace(&dir, &binary);
    std::fs::remove_dir_all(&dir).unwrap();
    // Line tables name functions by their short name (`level_three`), the symbol table by
    // their path (`condvar_levels::level_three`).
    let named = |frames: &[String], name: &str| {
        position(frames, name).or_else(|| position(frames, &format!("condvar_levels::{name}")))
    };
    let waiters: Vec<Vec<String>> = stacks(&summary, "waiter_stacks")
        .into_iter()
        .filter(|frames| named(frames, "level_one").is_some())
        .collect();
    assert!(!waiters.is_empty(), "{summary:#}");
    for frames in &waiters {
        let levels = [
            named(frames, "level_three"),
            named(frames, "level_two"),
            named(frames, "level_one"),
        ];
        assert!(
            levels.iter().all(Option::is_some) && levels.is_sorted(),
            "the three levels, leaf first: {frames:#?}"
        );
        let condvar = frames
            .iter()
            .position(|f| f.contains("std::sys::sync::condvar::"))
            .expect("std's condvar wait");
        assert!(condvar < levels[0].unwrap(), "{frames:#?}");
        assert!(
            frames[levels[0].unwrap()].contains("(condvar_levels.rs:"),
            "file:line from the line tables: {frames:#?}"
        );
    }
    // The word (a condvar in an `Arc`, no symbol) is labelled by the waiters' call site: the
    // first frame outside std's locking code.
    let condvar_row = summary["futexes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| {
            row["waiter_stacks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["site"].as_str().unwrap().contains("level_three"))
        })
        .expect("a word whose waiters' site is level_three");
    assert!(
        condvar_row["label"]
            .as_str()
            .unwrap()
            .starts_with("waited at "),
        "{condvar_row:#}"
    );
    let wakers = stacks(&summary, "waker_stacks");
    for function in ["notify_from_alpha", "notify_from_beta"] {
        assert!(
            wakers
                .iter()
                .any(|frames| named(frames, function).is_some()),
            "a waker stack through {function}: {wakers:#?}"
        );
    }
}

const LIBRARY: &str = r#"
#include <pthread.h>
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready = PTHREAD_COND_INITIALIZER;
static int tickets;
__attribute__((noinline)) static int lib_inner_wait(void) {
    pthread_mutex_lock(&lock);
    while (tickets == 0) pthread_cond_wait(&ready, &lock);
    tickets--;
    pthread_mutex_unlock(&lock);
    __asm__ volatile("" ::: "memory");
    return 1;
}
__attribute__((noinline)) int lib_wait_for_ticket(void) { int r = lib_inner_wait(); __asm__ volatile("" ::: "memory"); return r; }
void lib_give_ticket(void) {
    pthread_mutex_lock(&lock); tickets++; pthread_cond_signal(&ready); pthread_mutex_unlock(&lock);
}
"#;

const LIBRARY_USER: &str = r#"
#include <pthread.h>
#include <unistd.h>
int lib_wait_for_ticket(void);
void lib_give_ticket(void);
__attribute__((noinline)) void app_waits(void) { lib_wait_for_ticket(); __asm__ volatile("" ::: "memory"); }
static void *waiter(void *arg) { for (int i = 0; i < 20; i++) app_waits(); return arg; }
int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, waiter, NULL);
    for (int i = 0; i < 20; i++) { usleep(2000); lib_give_ticket(); }
    pthread_join(t, NULL);
    return 0;
}
"#;

#[test]
#[ignore = "needs root"]
fn a_stack_through_a_library_without_debug_info_names_it_by_symbol_or_offset() {
    common::require_ebpf();
    let dir = scratch("stacks-nodebug-lib");
    std::fs::write(dir.join("tickets.c"), LIBRARY).unwrap();
    std::fs::write(dir.join("app.c"), LIBRARY_USER).unwrap();
    // No -g, and stripped: exported functions keep their dynamic symbols, static ones have none.
    compile(Command::new("cc").current_dir(&dir).args([
        "-shared",
        "-fPIC",
        "-O2",
        "-s",
        "-pthread",
        "-o",
        "libtickets.so",
        "tickets.c",
    ]));
    compile(Command::new("cc").current_dir(&dir).args([
        "-O2",
        "-g",
        "-pthread",
        "-o",
        "app",
        "app.c",
        "-L.",
        "-ltickets",
        "-Wl,-rpath,$ORIGIN",
    ]));
    let summary = trace(&dir, &dir.join("app"));
    std::fs::remove_dir_all(&dir).unwrap();
    let waiters: Vec<Vec<String>> = stacks(&summary, "waiter_stacks")
        .into_iter()
        .filter(|frames| position(frames, "app_waits").is_some())
        .collect();
    assert!(!waiters.is_empty(), "{summary:#}");
    for frames in &waiters {
        let in_library: Vec<&String> = frames
            .iter()
            .filter(|f| f.contains("libtickets.so+0x"))
            .collect();
        assert!(
            in_library.len() >= 2,
            "the library's two frames: {frames:#?}"
        );
        // Without line information: a function by its symbol and module+offset, or the
        // module+offset alone.
        for frame in &in_library {
            assert!(
                frame.starts_with("lib_wait_for_ticket (libtickets.so+0x")
                    || frame.starts_with("libtickets.so+0x")
                    || frame.contains(" (libtickets.so+0x"),
                "{frame}"
            );
        }
        let exported = position(frames, "lib_wait_for_ticket").expect("the exported symbol");
        let cond_wait = frames
            .iter()
            .position(|f| f.contains("pthread_cond_wait"))
            .expect("glibc's condvar wait");
        let app = position(frames, "app_waits").unwrap();
        assert!(cond_wait < exported && exported < app, "{frames:#?}");
        assert!(
            frames[app].contains("app.c:"),
            "the caller, with debug info, has its line: {frames:#?}"
        );
    }
}

const FRAME_POINTER_PROGRAM: &str = r#"
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>
static _Atomic int word;
#define KEEP() __asm__ volatile("" ::: "memory")
__attribute__((noinline)) void fp_level_three(void) {
    while (atomic_load(&word) == 0) syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    atomic_store(&word, 0);
    KEEP();
}
__attribute__((noinline)) void fp_level_two(void) { fp_level_three(); KEEP(); }
__attribute__((noinline)) void fp_level_one(void) { fp_level_two(); KEEP(); }
static void *fp_waiter(void *arg) { for (int i = 0; i < 20; i++) fp_level_one(); return arg; }
int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, fp_waiter, NULL);
    for (int i = 0; i < 20; i++) {
        usleep(3000);
        atomic_store(&word, 1);
        syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
        while (atomic_load(&word) == 1) usleep(100);
    }
    pthread_join(t, NULL);
    return 0;
}
"#;

/// The program's own functions, in the order `frames` (`name (file:line)`) name them.
fn own_functions(frames: &[String]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|f| {
            let name = f.split(' ').next()?;
            (name.starts_with("fp_") || name == "main").then(|| name.to_owned())
        })
        .collect()
}

/// The functions of the (non-PIE) `binary` that the return addresses of a bpftrace `ustack`
/// (hex, leaf first) fall in, named by binutils' addr2line: bpftrace here prints addresses
/// only, its process being gone when it prints.
fn functions_at(binary: &Path, frames: &[String]) -> Vec<String> {
    let addresses: Vec<String> = frames
        .iter()
        .filter_map(|f| u64::from_str_radix(f.trim().strip_prefix("0x")?, 16).ok())
        // The executable's own addresses (non-PIE: its link addresses); a call's return
        // address minus one lies in the call.
        .filter(|&a| (0x40_0000..0x1000_0000).contains(&a))
        .map(|a| format!("{:#x}", a - 1))
        .collect();
    let output = Command::new("addr2line")
        .arg("-f")
        .arg("-e")
        .arg(binary)
        .args(&addresses)
        .output()
        .expect("run addr2line");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .step_by(2)
        .filter(|name| name.starts_with("fp_") || *name == "main")
        .map(str::to_owned)
        .collect()
}

#[test]
#[ignore = "needs root"]
fn frame_pointer_stacks_agree_with_bpftrace_ustack() {
    common::require_ebpf();
    if !Path::new("/sys/kernel/tracing/events").exists() {
        let status = Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status()
            .expect("run mount");
        assert!(status.success(), "cannot mount tracefs for bpftrace");
    }
    let dir = scratch("stacks-bpftrace");
    std::fs::write(dir.join("fp.c"), FRAME_POINTER_PROGRAM).unwrap();
    let binary = dir.join("fp");
    compile(Command::new("cc").current_dir(&dir).args([
        "-O2",
        "-g",
        "-fno-omit-frame-pointer",
        "-no-pie",
        "-pthread",
        "-o",
        "fp",
        "fp.c",
    ]));
    // bpftrace's frame-pointer walk at the exit of each FUTEX_WAIT that slept (ret 0).
    let script = "tracepoint:syscalls:sys_enter_futex /comm == \"fp\" && (args->op & 127) == 0/ \
         { @in[tid] = 1; } \
         tracepoint:syscalls:sys_exit_futex /@in[tid] == 1/ \
         { if (args->ret == 0) { @[ustack] = count(); } delete(@in[tid]); }";
    let output = Command::new("bpftrace")
        .args(["-e", script, "-c"])
        .arg(&binary)
        .output()
        .expect("run bpftrace");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    // `@[\n    frame\n    frame\n]: N` per stack; the busiest one.
    let theirs: Vec<String> = text
        .split("@[")
        .skip(1)
        .filter_map(|block| {
            let (frames, count) = block.split_once("]:")?;
            let count: u64 = count.trim().parse().ok()?;
            let frames: Vec<String> = frames.lines().map(str::to_owned).collect();
            Some((count, frames))
        })
        .max_by_key(|(count, _)| *count)
        .map(|(_, frames)| functions_at(&binary, &frames))
        .unwrap_or_default();
    let summary = trace(&dir, &binary);
    std::fs::remove_dir_all(&dir).unwrap();
    let ours = stacks(&summary, "waiter_stacks")
        .into_iter()
        .find(|frames| position(frames, "fp_level_one").is_some())
        .map(|frames| own_functions(&frames))
        .expect("our waiter stack");
    assert!(
        theirs.len() >= 2,
        "bpftrace walked into the program: {theirs:?}\n{text}"
    );
    // The walk by frame pointers misses at most the frame of the function that called
    // `syscall` (glibc's wrapper keeps no frame, so rbp still holds its caller's); every frame
    // it does find is ours, in the same order.
    let mut rest = ours.iter();
    assert!(
        theirs.iter().all(|f| rest.any(|o| o == f)),
        "bpftrace {theirs:?} is a subsequence of ours {ours:?}"
    );
    assert_eq!(
        ours,
        [
            "fp_level_three",
            "fp_level_two",
            "fp_level_one",
            "fp_waiter"
        ],
        "ours names every level, leaf first, to the thread's function (bpftrace: {theirs:?})"
    );
}
