#!/usr/bin/env bash
# Journal replay speed and reopen time, on this machine:
# 1. produce as fast as librdkafka can into 8 partitions for a few seconds, SIGKILL the
#    broker, restart it: the "journal replayed" line gives records, bytes and milliseconds;
# 2. 1,000 partitions with data, a clean shutdown, a restart: time until it serves.
#   cargo build --release -p tern --bins --examples
#   bash bench/scripts/journal_replay.sh
set -u
cd "$(dirname "$0")/../.."
BIN=target/release/tern; BENCH=target/release/examples/produce_bench
D=target/journal-replay; rm -rf $D; mkdir -p $D
port=$((20000 + RANDOM % 10000))
printf 'listeners = "127.0.0.1:%s"\nlog.dirs = "%s"\njournal.files = 8\njournal.inplace.bytes = 0\n' $port $D/data > $D/tern.toml
# Serving means every shard has opened its partitions: `tern serve` prints "listening on"
# only then (the port itself accepts connections into its backlog earlier).
ready() { for _ in $(seq 1 4000); do grep -q "^listening on" "$1" 2>/dev/null && return 0; sleep 0.005; done; return 1; }

TERN_LOG=info $BIN serve --config $D/tern.toml > $D/serve.log 2>&1 & pid=$!
ready $D/serve.log
timeout 8 $BENCH --broker 127.0.0.1:$port --partitions 8 --rate-mb-per-s 0 --seconds 6 --warmup-seconds 0 --linger-ms 5 > /dev/null 2>&1 &
sleep 6; kill -KILL $pid; wait $pid 2>/dev/null; wait
s0=$(date +%s%N)
TERN_LOG=info $BIN serve --config $D/tern.toml > $D/serve2.log 2>&1 & pid=$!
ready $D/serve2.log; s1=$(date +%s%N)
echo "restart after SIGKILL: serving after $(( (s1 - s0) / 1000000 )) ms"
grep -h "journal replayed" $D/serve2.log | sed 's/\x1b\[[0-9;]*m//g'
kill -TERM $pid; wait $pid 2>/dev/null

$BIN serve --config $D/tern.toml > $D/serve3.log 2>&1 & pid=$!
ready $D/serve3.log
timeout 20 $BENCH --broker 127.0.0.1:$port --topic many --partitions 1000 --rate-mb-per-s 5 --seconds 5 --warmup-seconds 0 > /dev/null 2>&1
kill -TERM $pid; wait $pid 2>/dev/null
s0=$(date +%s%N)
$BIN serve --config $D/tern.toml > $D/serve4.log 2>&1 & pid=$!
ready $D/serve4.log; s1=$(date +%s%N)
echo "restart after a clean shutdown with 1,000 partitions of data: serving after $(( (s1 - s0) / 1000000 )) ms"
kill -TERM $pid; wait $pid 2>/dev/null
rm -rf $D
