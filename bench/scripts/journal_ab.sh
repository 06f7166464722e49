#!/usr/bin/env bash
# The shard journal's A/B on this machine, in one run: librdkafka's fixed-rate producer
# (examples/produce_bench.rs: 1 KiB records, acks=all, linger 1 ms, latency from the
# intended send time) against `tern serve` with journal.enable = true and false (flush =
# always both), against `tern bench null-broker`, and the disk's one-file group-commit
# floor, with the broker's CPU from /proc/<pid>/stat. Rounds alternate the order.
#
#   cargo build --release -p tern --bins --examples
#   bash bench/scripts/journal_ab.sh [rounds] [seconds] > journal-ab.txt
set -u
cd "$(dirname "$0")/../.."
ROUNDS=${1:-2}; SECS=${2:-15}
BIN=target/release/tern; BENCH=target/release/examples/produce_bench
D=target/journal-ab; mkdir -p $D

ready() { for _ in $(seq 1 200); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }
cpu() { awk '{print $14+$15}' /proc/$1/stat; }

run_tern() { # journal rate partitions
  rm -rf $D/data; local port=$((20000 + RANDOM % 10000))
  printf 'listeners = "127.0.0.1:%s"\nlog.dirs = "%s"\njournal.enable = %s\n' $port $D/data $1 > $D/tern.toml
  $BIN serve --config $D/tern.toml > $D/serve.log 2>&1 & local pid=$!
  ready $port
  local t0; t0=$(cpu $pid); local s0; s0=$(date +%s.%N)
  local out; out=$($BENCH --broker 127.0.0.1:$port --partitions $3 --rate-mb-per-s $2 --seconds $SECS --warmup-seconds 3 --linger-ms 1 2>&1 | grep -E "produce latency|delivered")
  local t1; t1=$(cpu $pid); local s1; s1=$(date +%s.%N)
  kill -TERM $pid; wait $pid 2>/dev/null
  printf 'tern journal=%s rate=%s p=%s cpu_cores=%.3f | %s\n' $1 $2 $3 "$(echo "($t1-$t0)/100/($s1-$s0)" | bc -l)" "$(echo $out | tr '\n' ' ')"
  # Each shard's disk writes against the bytes produced (logged at close).
  grep -o 'shard closed.*' $D/serve.log | sed 's/^/  /'
}

run_null() { # rate partitions
  $BIN bench null-broker --listen 127.0.0.1:0 > $D/null.out 2>&1 & local pid=$!
  for _ in $(seq 1 200); do grep -q listening $D/null.out && break; sleep 0.05; done
  local addr; addr=$(grep -o '127.0.0.1:[0-9]*' $D/null.out | head -1)
  local t0; t0=$(cpu $pid); local s0; s0=$(date +%s.%N)
  local out; out=$($BENCH --broker $addr --partitions $2 --rate-mb-per-s $1 --seconds $SECS --warmup-seconds 3 --linger-ms 1 2>&1 | grep -E "produce latency|delivered")
  local t1; t1=$(cpu $pid); local s1; s1=$(date +%s.%N)
  kill -TERM $pid; wait $pid 2>/dev/null
  printf 'null rate=%s p=%s cpu_cores=%.3f | %s\n' $1 $2 "$(echo "($t1-$t0)/100/($s1-$s0)" | bc -l)" "$(echo $out | tr '\n' ' ')"
}

floor() { # rate_mb partitions
  $BIN bench floor --partitions $2 --records-per-s $(( $1 * 1024 )) --duration-s 5 --dir $D/floor 2>&1 | grep -E "floor \(arr|CPU per" | sed "s/^/floor rate=$1 p=$2 /"
}

for r in $(seq 1 $ROUNDS); do
  echo "# round $r"
  for load in "5 8" "20 8" "50 8" "20 1000" "0 8"; do
    set -- $load
    if [ $((r % 2)) = 1 ]; then run_tern true $1 $2; run_tern false $1 $2; else run_tern false $1 $2; run_tern true $1 $2; fi
    run_null $1 $2
    [ "$1" != 0 ] && floor $1 1
  done
done
rm -rf $D
