#!/usr/bin/env bash
# Partition leader failover on this machine: three `tern serve` nodes on 127.0.0.1 (every
# node a voter), a topic with one partition, replication factor 3 and min.insync.replicas 2;
# KILLS times: SIGKILL the partition's leader and time until an acks=all produce through the
# survivors succeeds (the new leader elected from the ISR once the dead broker is fenced);
# then restart it and wait until the ISR is whole again.
#
#   cargo build --release -p tern
#   bash bench/scripts/leader_failover.sh [kills] [session_timeout_ms]
set -u
cd "$(dirname "$0")/../.."
KILLS=${1:-20}; SESSION_MS=${2:-9000}
BIN=$PWD/target/release/tern
D=$PWD/target/leader-failover; rm -rf "$D"; mkdir -p "$D"
"$BIN" cert dev --nodes 3 --out "$D/certs" > "$D/cert.out"
CID=$(grep -o 'cluster.id = "[^"]*"' "$D/cert.out" | cut -d'"' -f2)
KP=(0 39092 39093 39094); CP=(0 39192 39193 39194)
VOTERS="1@127.0.0.1:${CP[1]},2@127.0.0.1:${CP[2]},3@127.0.0.1:${CP[3]}"
declare -A PID
start() { # id
  local id=$1
  cat > "$D/n$id.toml" <<CFG
node.id = $id
cluster.id = "$CID"
listeners = "PLAINTEXT://127.0.0.1:${KP[$id]},CONTROLLER://127.0.0.1:${CP[$id]}"
log.dirs = "$D/data$id"
cores = [0]
journal.file.bytes = 8388608
controller.quorum.voters = "$VOTERS"
broker.session.timeout.ms = $SESSION_MS
quic.tls.cert = "$D/certs/node-$id.crt"
quic.tls.key = "$D/certs/node-$id.key"
quic.tls.ca = "$D/certs/ca.crt"
CFG
  "$BIN" serve --config "$D/n$id.toml" >> "$D/n$id.out" 2>> "$D/n$id.log" &
  PID[$id]=$!
}
status() { "$BIN" cluster status -b "127.0.0.1:${KP[$1]}" 2>/dev/null; }
# Leader and ISR size of partition 0, from node $1.
leader() { "$BIN" topic describe failover -b "127.0.0.1:${KP[$1]}" 2>/dev/null | awk '$1 == "0" {print $2}'; }
isr_full() { "$BIN" topic describe failover -b "127.0.0.1:${KP[$1]}" 2>/dev/null | awk '$1 == "0" {print $4}' | grep -q '^[0-9],[0-9],[0-9]$'; }
now_ms() { date +%s%3N; }
for id in 1 2 3; do start $id; done
until status 1 | grep -q "brokers      3" && ! status 1 | grep -q fenced && status 1 | grep -q "controller   [1-3]"; do sleep 0.1; done
"$BIN" topic create failover --partitions 1 --replication-factor 3 --config min.insync.replicas=2 -b 127.0.0.1:${KP[1]} > /dev/null
until isr_full 1; do sleep 0.1; done
for k in $(seq 1 "$KILLS"); do
  l=$(leader 1); [ "${l:-0}" -ge 1 ] 2>/dev/null || l=$(leader 2)
  a=$(( l % 3 + 1 )); b=$(( a % 3 + 1 ))
  live="127.0.0.1:${KP[$a]},127.0.0.1:${KP[$b]}"
  echo "before-$k" | "$BIN" produce failover -p 0 --acks all -b "$live" > /dev/null 2>&1
  t0=$(now_ms); kill -9 "${PID[$l]}"; wait "${PID[$l]}" 2>/dev/null
  until echo "after-$k" | timeout 5 "$BIN" produce failover -p 0 --acks all -b "$live" > /dev/null 2>&1; do sleep 0.05; done
  t1=$(now_ms)
  echo "kill $k: leader $l; first acks=all produce through the new leader $(leader $a) after $((t1 - t0)) ms" | tee -a "$D/kills.txt"
  start $l
  until isr_full $a; do sleep 0.1; done
done
for id in 1 2 3; do kill -TERM "${PID[$id]}" 2>/dev/null; done; wait
awk '{print $(NF-1)}' "$D/kills.txt" | sort -n | awk '{a[NR]=$1} END {printf "leader failover over %d kills: median %d ms, max %d ms (session timeout '"$SESSION_MS"' ms)\n", NR, a[int((NR+1)/2)], a[NR]}'
