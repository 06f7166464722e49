#!/usr/bin/env bash
# Smoke test with kcat (librdkafka's command-line client) against a release `tern serve`:
# metadata listing, 1,000 lines produced and consumed back identical, graceful stop (exit 0).
#
#   bash .ci/kcat-smoke.sh              uses target/release/tern
#   TERN_BIN=path bash .ci/kcat-smoke.sh
set -euo pipefail
# A relative $TERN_BIN is relative to the caller's directory.
if [ -n "${TERN_BIN:-}" ] && [ "${TERN_BIN#/}" = "$TERN_BIN" ]; then
  TERN_BIN="$PWD/$TERN_BIN"
fi
cd "$(dirname "$0")/.."
TERN_BIN=${TERN_BIN:-target/release/tern}
[ -x "$TERN_BIN" ] || { echo "kcat-smoke: $TERN_BIN is missing (cargo build --release -p tern)" >&2; exit 1; }
command -v kcat >/dev/null || { echo "kcat-smoke: kcat is not installed (apt-get install kcat)" >&2; exit 1; }

# O_DIRECT needs a real filesystem: keep the data under target/, not in a tmpfs /tmp.
mkdir -p target/tmp
work=$(mktemp -d target/tmp/kcat-smoke.XXXXXX)
work=$(cd "$work" && pwd)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "kcat-smoke: FAIL: $*" >&2
  echo "--- broker stderr" >&2
  cat "$work/broker.err" >&2 || true
  exit 1
}

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
broker="127.0.0.1:$port"
cat >"$work/tern.toml" <<EOF
listeners = "$broker"
log.dirs = "$work/data"
cores = [0]
EOF

"$TERN_BIN" serve --config "$work/tern.toml" >"$work/broker.out" 2>"$work/broker.err" &
pid=$!

# Wait for the ready line (60 s at most), failing early if the broker died.
for _ in $(seq 1 600); do
  grep -q '^listening on ' "$work/broker.out" && break
  kill -0 "$pid" 2>/dev/null || fail "broker exited before listening"
  sleep 0.1
done
grep -q "^listening on $broker\$" "$work/broker.out" || fail "no 'listening on $broker' within 60 s"
echo "kcat-smoke: broker up on $broker (pid $pid)"

timeout 120 kcat -b "$broker" -L -m 30 >"$work/metadata.txt" 2>&1 || { cat "$work/metadata.txt" >&2; fail "kcat -L"; }
grep -Eq "broker [0-9]+ at 127\.0\.0\.1:$port" "$work/metadata.txt" \
  || { cat "$work/metadata.txt" >&2; fail "metadata does not list the broker"; }

seq 1 1000 | timeout 120 kcat -b "$broker" -P -t lines -X acks=all 2>"$work/produce.err" \
  || { cat "$work/produce.err" >&2; fail "kcat -P"; }

# -e: exit at the end of the partition (the whole run is bounded by timeout).
timeout 120 kcat -b "$broker" -C -t lines -o beginning -e -q >"$work/consumed.txt" \
  2>"$work/consume.err" \
  || { cat "$work/consume.err" >&2; fail "kcat -C"; }
count=$(wc -l <"$work/consumed.txt")
[ "$count" -eq 1000 ] || fail "consumed $count lines, expected 1000"
seq 1 1000 | cmp -s - "$work/consumed.txt" || fail "consumed lines differ from seq 1 1000"
echo "kcat-smoke: 1000 lines produced and consumed back identical"

kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
[ "$status" -eq 0 ] || fail "broker exited with status $status after SIGTERM"
echo "kcat-smoke: OK (broker stopped with status 0)"
