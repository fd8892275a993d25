//! `futexscope run` on an uninstrumented C program using pthread mutexes and condition
//! variables, built from source here with `cc`: waits, timeouts and waiters as the program's
//! own counts say.

mod common;

use std::{path::PathBuf, process::Command};

const PROGRAM: &str = r#"
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t timed_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t timed_cond = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t park_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t park_cond = PTHREAD_COND_INITIALIZER;
static int parked, released;

static void *park(void *arg) {
    (void)arg;
    pthread_mutex_lock(&park_mutex);
    parked++;
    while (!released)
        pthread_cond_wait(&park_cond, &park_mutex);
    pthread_mutex_unlock(&park_mutex);
    return NULL;
}

int main(int argc, char **argv) {
    int timeouts = 12, threads = 4, timed_out = 0;
    if (argc > 2) { sscanf(argv[1], "%d", &timeouts); sscanf(argv[2], "%d", &threads); }
    pthread_mutex_lock(&timed_mutex);
    for (int i = 0; i < timeouts; i++) {
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_nsec += 2000000;
        if (deadline.tv_nsec >= 1000000000) { deadline.tv_sec++; deadline.tv_nsec -= 1000000000; }
        if (pthread_cond_timedwait(&timed_cond, &timed_mutex, &deadline) == ETIMEDOUT)
            timed_out++;
    }
    pthread_mutex_unlock(&timed_mutex);

    pthread_t tids[64];
    for (int i = 0; i < threads; i++)
        pthread_create(&tids[i], NULL, park, NULL);
    for (;;) {
        pthread_mutex_lock(&park_mutex);
        int n = parked;
        pthread_mutex_unlock(&park_mutex);
        if (n == threads) break;
        usleep(1000);
    }
    usleep(200000);
    pthread_mutex_lock(&park_mutex);
    released = 1;
    pthread_cond_broadcast(&park_cond);
    pthread_mutex_unlock(&park_mutex);
    for (int i = 0; i < threads; i++)
        pthread_join(tids[i], NULL);
    printf("pthread: timed_cond %p: %d timeouts\n", (void *)&timed_cond, timed_out);
    printf("pthread: park_cond %p: %d parked at once\n", (void *)&park_cond, threads);
    return 0;
}
"#;

fn build() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("futexscope-cli-pthread-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("pthread_prog.c");
    std::fs::write(&source, PROGRAM).unwrap();
    let binary = dir.join("pthread_prog");
    common::compile_c(&source, &binary, &["-O1", "-g", "-pthread"]);
    binary
}

#[test]
#[ignore = "needs root"]
fn pthread_condvar_timeouts_and_waiters_match_the_programs_counts() {
    common::require_ebpf();
    let binary = build();
    let json = binary.with_extension("json");
    let (timeouts, threads) = (12, 4);
    let output = Command::new(env!("CARGO_BIN_EXE_futexscope"))
        .args(["run", "--view", "plain", "--json"])
        .arg(&json)
        .arg("--")
        .arg(&binary)
        .args([timeouts.to_string(), threads.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!(": {timeouts} timeouts")),
        "the program's own count: {stdout}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    std::fs::remove_dir_all(binary.parent().unwrap()).unwrap();
    let rows = summary["futexes"].as_array().unwrap();
    // glibc's condvar waits on a word inside the `pthread_cond_t`: find it by symbol.
    let named = |name: &str| -> Vec<&serde_json::Value> {
        rows.iter()
            .filter(|r| r["label"].as_str().unwrap().starts_with(name))
            .collect()
    };
    let total = |name: &str, field: &str| -> u64 {
        named(name).iter().map(|r| r[field].as_u64().unwrap()).sum()
    };
    assert_eq!(total("timed_cond", "waits"), timeouts, "{summary:#}");
    assert_eq!(total("timed_cond", "timeouts"), timeouts, "{summary:#}");
    assert_eq!(total("park_cond", "waits"), threads, "{summary:#}");
    let most_waiters = named("park_cond")
        .iter()
        .map(|r| r["max_waiters"].as_u64().unwrap())
        .max();
    assert_eq!(
        most_waiters,
        Some(threads),
        "all parked at once: {summary:#}"
    );
    assert_eq!(
        total("park_cond", "woken"),
        threads,
        "the broadcast woke them all: {summary:#}"
    );
}
