#!/bin/sh
# Usage: ./run.sh TARGET SECONDS [extra libFuzzer flags]  (from agent/fuzz; build first with cargo fuzz build)
set -e
t=$1; secs=$2; shift 2
mkdir -p corpus/$t artifacts/$t logs
exec ./target/x86_64-unknown-linux-gnu/release/$t corpus/$t \
  -artifact_prefix=artifacts/$t/ -max_total_time=$secs -rss_limit_mb=2048 -timeout=10 \
  -max_len=4096 -print_final_stats=1 "$@" > logs/$t.log 2>&1
