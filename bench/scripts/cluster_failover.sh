#!/usr/bin/env bash
# Controller failover on this machine: three `tern serve` nodes on 127.0.0.1 (every node a
# voter), KILLS times: SIGKILL the controller leader, time until a survivor's DescribeCluster
# names a new controller, and until Metadata shows the dead broker's partitions without a
# leader (its session timeout, RF = 1); then restart it and wait until it is live again.
#
#   cargo build --release -p tern
#   bash bench/scripts/cluster_failover.sh [kills] [session_timeout_ms]
set -u
cd "$(dirname "$0")/../.."
KILLS=${1:-20}; SESSION_MS=${2:-3000}
BIN=$PWD/target/release/tern
D=$PWD/target/cluster-failover; rm -rf "$D"; mkdir -p "$D"
"$BIN" cert dev --nodes 3 --out "$D/certs" > "$D/cert.out"
CID=$(grep -o 'cluster.id = "[^"]*"' "$D/cert.out" | cut -d'"' -f2)
KP=(0 29092 29093 29094); CP=(0 29192 29193 29194)
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
broker.heartbeat.interval.ms = 500
quic.tls.cert = "$D/certs/node-$id.crt"
quic.tls.key = "$D/certs/node-$id.key"
quic.tls.ca = "$D/certs/ca.crt"
CFG
  "$BIN" serve --config "$D/n$id.toml" >> "$D/n$id.out" 2>> "$D/n$id.log" &
  PID[$id]=$!
}
status() { "$BIN" cluster status -b "127.0.0.1:${KP[$1]}" 2>/dev/null; }
now_ms() { date +%s%3N; }
for id in 1 2 3; do start $id; done
until status 1 | grep -q "brokers      3" && ! status 1 | grep -q fenced && status 1 | grep -q "controller   [1-3]"; do sleep 0.1; done
"$BIN" topic create failover --partitions 6 -b 127.0.0.1:${KP[1]} > /dev/null
for k in $(seq 1 "$KILLS"); do
  ctl=$(status 1 | awk '/^controller/ {print $2}')
  [ "$ctl" -ge 1 ] 2>/dev/null || ctl=$(status 2 | awk '/^controller/ {print $2}')
  other=$(( ctl % 3 + 1 ))
  t0=$(now_ms); kill -9 "${PID[$ctl]}"; wait "${PID[$ctl]}" 2>/dev/null
  until c=$(status $other | awk '/^controller/ {print $2}') && [ "${c:-0}" -ge 1 ] && [ "$c" != "$ctl" ]; do sleep 0.02; done
  t1=$(now_ms)
  until status $other | grep -q "partitions without a leader: [1-9]"; do sleep 0.05; done
  t2=$(now_ms)
  echo "kill $k: node $ctl; new controller $c after $((t1 - t0)) ms; its partitions leaderless after $((t2 - t0)) ms" | tee -a "$D/kills.txt"
  # Restarted in this shell (not a pipeline's subshell), so the final kill reaches it.
  start $ctl
  until status $other | grep -q "brokers      3" && ! status $other | grep -q fenced && status $other | grep -q "without a leader: none"; do sleep 0.1; done
done
for id in 1 2 3; do kill -TERM "${PID[$id]}" 2>/dev/null; done; wait
awk '{print $9}' "$D/kills.txt" | sort -n | awk '{a[NR]=$1} END {printf "controller failover over %d kills: median %d ms, max %d ms\n", NR, a[int((NR+1)/2)], a[NR]}'
awk '{print $15}' "$D/kills.txt" | sort -n | awk '{a[NR]=$1} END {printf "dead broker partitions leaderless: median %d ms, max %d ms (session timeout '"$SESSION_MS"' ms)\n", a[int((NR+1)/2)], a[NR]}'
