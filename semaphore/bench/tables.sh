#!/bin/sh
# The runs behind the tables of docs/bench-semaphore.md: every row is a `sem-bench pair` run
# (IMPL and PEER alternating in blocks in one process), idle and with LOAD=cpus, repeated
# ROUNDS times (default 3) round-robin over the rows; then the `timed` overshoot runs, whole
# processes alternating. Each JSON line gets the 1-minute load average at its start
# ("loadavg"). Build first: cargo build --release -p futexscope-semaphore-bench
# Usage: semaphore/bench/tables.sh [SEM_BENCH] [ROUNDS] >runs.jsonl
set -eu
bench=${1:-target/release/sem-bench}
rounds=${2:-3}

# WORKLOAD N THREADS BLOCKS IMPL PEER (N operations per block)
rows='pingpong 1000 2 201 posix posix
pingpong 1000 2 201 futexscope futexscope
pingpong 1000 2 201 futexscope posix
pingpong 1000 2 201 futexscope qt
pingpong 1000 2 201 qt posix
prodcons 20000 2 201 futexscope posix
prodcons 20000 2 201 futexscope qt
prodcons 20000 4 201 futexscope posix
prodcons 20000 4 201 futexscope qt
uncontended 200000 1 201 futexscope posix
uncontended 200000 1 201 futexscope qt
multi 50000 2 201 futexscope qt
multi 50000 4 201 futexscope qt
timed 20 1 41 futexscope posix
timed 20 1 41 futexscope qt'

# Prints the JSON line of the command "$@", with the load average at its start.
record() {
    loadavg=$(cut -d' ' -f1 /proc/loadavg)
    "$@" | sed "s/}\$/,\"loadavg\":$loadavg}/"
}

for round in $(seq "$rounds"); do
    for load in idle cpus; do
        echo "$rows" | while read -r workload n threads blocks impl peer; do
            if [ "$load" = idle ]; then
                record "$bench" pair "$impl" "$peer" "$workload" "$n" "$threads" "$blocks"
            else
                LOAD=cpus record "$bench" pair "$impl" "$peer" "$workload" "$n" "$threads" "$blocks"
            fi
        done
    done
done
# timed overshoot (p50, p99 of 500 timed acquires per run), 5 runs of each, alternating.
for load in idle cpus; do
    for run in 1 2 3 4 5; do
        for impl in futexscope posix qt; do
            if [ "$load" = idle ]; then
                record "$bench" "$impl" timed 500
            else
                LOAD=cpus record "$bench" "$impl" timed 500
            fi
        done
    done
done
