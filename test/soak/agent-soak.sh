#!/bin/bash
# The agent's long memory run (docs/agent.md, "Memory over hours"): `futexscope agent` traces
# every process on the host for SECONDS while short futex workloads under 300 distinct process
# names start and exit (about 10 a second, besides whatever else the host runs); every 30 s
# the agent's resident memory and its own gauges are appended to soak.tsv in the current
# directory. Needs root, curl, and release builds of futexscope and futexscope-workload:
#   cargo build --release -p futexscope -p futexscope-integration-test
#   sudo test/soak/agent-soak.sh 9000 target/release
set -euo pipefail
seconds=${1:?usage: agent-soak.sh SECONDS BIN_DIR}
bin=${2:?usage: agent-soak.sh SECONDS BIN_DIR}
port=${PORT:-19464}
work=$(mktemp -d)
churn= agent=
trap 'kill $churn 2>/dev/null || true; kill -INT $agent 2>/dev/null || true; wait || true; rm -rf "$work"' EXIT
for i in $(seq 0 299); do cp "$bin/futexscope-workload" "$work/soak$i"; done

"$bin/futexscope" agent --listen "127.0.0.1:$port" --grace 30s 2>agent.log &
agent=$!
sleep 3
start=$(date +%s)
(
  while (($(date +%s) - start < seconds)); do
    for i in $(seq 0 299); do
      "$work/soak$i" eagain 20 >/dev/null
      ((i % 25)) || "$work/soak$i" parked 4 >/dev/null
      ((i % 50)) || "$work/soak$i" timeouts 3 2 >/dev/null
      sleep 0.02
    done
  done
) &
churn=$!

gauge() { awk -v m="$1" '$1 == m { print $2 }' <<<"$metrics"; }
echo -e "seconds\trss_kib\ttracked_processes\ttracked_words\tseries" >soak.tsv
while kill -0 $churn 2>/dev/null; do
  metrics=$(curl -s "127.0.0.1:$port/metrics")
  echo -e "$(($(date +%s) - start))\t$(awk '/VmRSS/ { print $2 }' /proc/$agent/status)\t$(gauge futexscope_agent_tracked_processes)\t$(gauge futexscope_agent_tracked_words)\t$(gauge futexscope_agent_series)" >>soak.tsv
  sleep 30
done
