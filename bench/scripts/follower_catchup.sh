#!/usr/bin/env bash
# Follower catch-up throughput against one QUIC stream, in one run.
#
# Starts `tern cluster dev --nodes 3 --shards-per-node 1`, creates a topic of one partition
# with three replicas, SIGKILLs one follower, writes MIB MiB (1 KiB records, acks=1, kcat)
# to the leader, restarts the follower and samples its partition directory until it holds
# as many bytes as the leader's: the catch-up rate is the bytes it fetched over the time
# from its first fetched byte to the last. Then `tern bench transport` measures what one
# QUIC stream carries on loopback (same frames, same machine). Prints both and the ratio.
#
# usage: bench/scripts/follower_catchup.sh [MIB]   (default 1024; needs kcat and a release build)
set -euo pipefail

MIB=${1:-1024}
TERN=${TERN:-target/release/tern}
DIR=$(mktemp -d "${TMPDIR:-/tmp}/tern-catchup.XXXXXX")
cleanup() {
    [ -n "${DEV_PID:-}" ] && kill -INT "$DEV_PID" 2>/dev/null && wait "$DEV_PID" 2>/dev/null || true
    [ -n "${RESTARTED:-}" ] && kill "$RESTARTED" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

"$TERN" cluster dev --nodes 3 --shards-per-node 1 --dir "$DIR/c" > "$DIR/dev.out" 2>&1 &
DEV_PID=$!
for _ in $(seq 100); do grep -q "node pids" "$DIR/dev.out" && break; sleep 0.2; done
BOOT=127.0.0.1:19092
for _ in $(seq 100); do
    "$TERN" topic create catchup --partitions 1 --replication-factor 3 -b $BOOT > /dev/null 2>&1 && break
    sleep 0.3
done
# Partition 0's row of `tern topic describe`: PARTITION LEADER REPLICAS ISR.
row() { "$TERN" topic describe catchup -b $BOOT 2>/dev/null | awk '$1 == "0" {print $2, $4}'; }
in_sync() { row | awk '{exit !(split($2, a, ",") == 3)}'; }
for _ in $(seq 100); do in_sync && break; sleep 0.2; done
LEADER=$(row | awk '{print $1}')
FOLLOWER=$(( LEADER % 3 + 1 ))
FPID=$(sed -n "s/^node $FOLLOWER: .*(pid \([0-9]*\),.*/\1/p" "$DIR/dev.out")
echo "leader $LEADER, follower $FOLLOWER (pid $FPID) killed"
kill -9 "$FPID"
sleep 1

RECORDS=$(( MIB * 1024 ))
awk -v n="$RECORDS" 'BEGIN { l = sprintf("%1023s", ""); gsub(/ /, "x", l); for (i = 0; i < n; i++) print l }' > "$DIR/payload"
kcat -P -b 127.0.0.1:$(( 19091 + LEADER )) -t catchup -p 0 -X acks=1 -X linger.ms=5 \
    -X batch.size=1000000 -X message.max.bytes=2000000 -l "$DIR/payload"
rm -f "$DIR/payload"
LDIR="$DIR/c/node-$LEADER/data/catchup-0"
FDIR="$DIR/c/node-$FOLLOWER/data/catchup-0"
size() { find "$1" -name '*.log' -printf '%s\n' 2>/dev/null | awk '{s+=$1} END {print s+0}'; }
TARGET=$(size "$LDIR")
echo "leader holds $TARGET bytes; restarting the follower"

# The restarted node runs outside cluster dev: the same config, its own process.
"$TERN" serve --config "$DIR/c/node-$FOLLOWER/tern.toml" > /dev/null 2>> "$DIR/c/node-$FOLLOWER/serve.log" &
RESTARTED=$!
START_BYTES=$(size "$FDIR")
FIRST=""
while :; do
    now=$(date +%s.%N)
    s=$(size "$FDIR")
    if [ -z "$FIRST" ] && [ "$s" -gt "$START_BYTES" ]; then FIRST=$now; FIRST_BYTES=$START_BYTES; fi
    [ "$s" -ge "$TARGET" ] && { LAST=$now; break; }
    sleep 0.05
done
BYTES=$(( TARGET - FIRST_BYTES ))
CATCHUP=$(awk -v b="$BYTES" -v a="$FIRST" -v z="$LAST" 'BEGIN {printf "%.1f", b / 1e6 / (z - a)}')
echo "follower caught up $BYTES bytes in $(awk -v a="$FIRST" -v z="$LAST" 'BEGIN {printf "%.2f", z - a}') s: $CATCHUP MB/s"

"$TERN" bench transport --total-mib "$MIB" --frame-kib 64 | tee "$DIR/transport.txt"
QUIC=$(sed -n 's/^quic *\([0-9.]*\) MB\/s.*/\1/p; s/^QUIC[^0-9]*\([0-9.]*\) MB\/s.*/\1/p' "$DIR/transport.txt" | head -1)
echo "catch-up $CATCHUP MB/s vs one QUIC stream ${QUIC:-?} MB/s: $(awk -v c="$CATCHUP" -v q="${QUIC:-0}" 'BEGIN {if (q > 0) printf "%.2f", c / q; else print "?"}')x"
