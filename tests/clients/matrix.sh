#!/usr/bin/env bash
# Client-compatibility matrix: one release `tern serve`, then the same scenario with each of
# five Kafka clients (confluent-kafka, kafka-python, aiokafka, kafkajs, kcat), each on its own
# topic and group, and a table of every step's result. Exits non-zero if any step failed.
#
#   bash tests/clients/matrix.sh                  uses target/release/tern
#   bash tests/clients/matrix.sh path/to/tern     (or TERN_BIN=path/to/tern)
#
# The clients are installed at pinned versions under target/clients/ (a Python venv and a
# node_modules), once: a rerun reuses them until requirements.txt or package-lock.json
# changes. Needs python3 with venv, node and npm, and kcat. See tests/clients/README.md.
set -euo pipefail
started=$SECONDS
if [ -n "${1:-}" ]; then TERN_BIN=$1; fi
# A relative $TERN_BIN is relative to the caller's directory.
if [ -n "${TERN_BIN:-}" ] && [ "${TERN_BIN#/}" = "$TERN_BIN" ]; then
  TERN_BIN="$PWD/$TERN_BIN"
fi
cd "$(dirname "$0")/../.."
root=$PWD
TERN_BIN=${TERN_BIN:-$root/target/release/tern}
here=tests/clients
CLIENT_TIMEOUT=${CLIENT_TIMEOUT:-120}
STEPS=(create_topic produce consume_group commit list_offsets alter_config bad_input)
CLIENTS=(confluent-kafka kafka-python aiokafka kafkajs kcat)

say() { echo "matrix: $*"; }
die() { echo "matrix: FAIL: $*" >&2; exit 1; }
[ -x "$TERN_BIN" ] || die "$TERN_BIN is missing (cargo build --release -p tern)"
for tool in python3 node npm kcat timeout; do
  command -v "$tool" >/dev/null || die "$tool is not installed (see $here/README.md)"
done

# --- Install the clients (reused while the pins are unchanged).
install_dir=$root/target/clients
venv=$install_dir/venv
node_dir=$install_dir/node
logs=$install_dir/last-run
mkdir -p "$install_dir"
rm -rf "$logs"
mkdir -p "$logs"
declare -A install_error=()

t0=$SECONDS
if ! cmp -s "$here/requirements.txt" "$venv/.installed-requirements.txt"; then
  say "installing the Python clients into target/clients/venv"
  rm -rf "$venv"
  if python3 -m venv "$venv" >"$logs/pip-install.log" 2>&1 \
    && "$venv/bin/pip" install --disable-pip-version-check --no-input -q \
      -r "$here/requirements.txt" >>"$logs/pip-install.log" 2>&1; then
    cp "$here/requirements.txt" "$venv/.installed-requirements.txt"
  else
    cat "$logs/pip-install.log" >&2
    for c in confluent-kafka kafka-python aiokafka; do
      install_error[$c]="pip install failed: $(tail -n 1 "$logs/pip-install.log")"
    done
  fi
fi
if ! cmp -s "$here/package-lock.json" "$node_dir/.installed-package-lock.json"; then
  say "installing kafkajs into target/clients/node"
  rm -rf "$node_dir"
  mkdir -p "$node_dir"
  cp "$here/package.json" "$here/package-lock.json" "$node_dir/"
  if (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error) \
    >"$logs/npm-install.log" 2>&1; then
    cp "$here/package-lock.json" "$node_dir/.installed-package-lock.json"
  else
    cat "$logs/npm-install.log" >&2
    install_error[kafkajs]="npm ci failed: $(tail -n 1 "$logs/npm-install.log")"
  fi
fi
install_s=$((SECONDS - t0))

# The versions for the table: what is installed (the pins), and kcat's Debian package.
declare -A version=()
pyver() { "$venv/bin/python" -c "$1" 2>/dev/null || echo "?"; }
version[confluent-kafka]=$(pyver 'import confluent_kafka as c; print(f"{c.version()} (librdkafka {c.libversion()[0]})")')
version[kafka-python]=$(pyver 'import kafka; print(kafka.__version__)')
version[aiokafka]=$(pyver 'import aiokafka; print(aiokafka.__version__)')
version[kafkajs]=$(node -p "require('$node_dir/node_modules/kafkajs/package.json').version" 2>/dev/null || echo "?")
version[kcat]=$(kcat -V 2>&1 | sed -nE 's/^Version ([^ ]+) .*librdkafka ([^ ]+).*/\1 (librdkafka \2)/p' | head -n 1)

# --- The broker, as in .ci/kcat-smoke.sh. O_DIRECT needs a real filesystem: keep the data
# under target/, not in a tmpfs /tmp.
mkdir -p target/tmp
work=$(mktemp -d target/tmp/client-matrix.XXXXXX)
work=$(cd "$work" && pwd)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  cp "$work"/broker.* "$logs/" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
broker_fail() {
  echo "matrix: FAIL: $*" >&2
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
  kill -0 "$pid" 2>/dev/null || broker_fail "broker exited before listening"
  sleep 0.1
done
grep -q "^listening on $broker\$" "$work/broker.out" || broker_fail "no 'listening on $broker' within 60 s"
say "broker up on $broker (pid $pid)"

# --- One scenario per client, each bounded by $CLIENT_TIMEOUT seconds.
declare -A result=() reason=()
any_fail=0
broker_died=
# fail_all CLIENT REASON: every step of CLIENT fails for REASON.
fail_all() {
  local step
  for step in "${STEPS[@]}"; do result[$1.$step]=FAIL; reason[$1.$step]=$2; done
  any_fail=1
}
run_client() {
  local client=$1 out=$logs/$1.out err=$logs/$1.err rc=0 t=$SECONDS step line
  shift
  if [ -n "$broker_died" ]; then
    fail_all "$client" "not run: the broker died during the $broker_died scenario"
    return
  fi
  if [ -n "${install_error[$client]:-}" ]; then
    fail_all "$client" "${install_error[$client]}"
    return
  fi
  say "running $client"
  timeout -k 10 "$CLIENT_TIMEOUT" "$@" "$broker" >"$out" 2>"$err" </dev/null || rc=$?
  say "$client done in $((SECONDS - t)) s (exit $rc)"
  for step in "${STEPS[@]}"; do
    line=$(grep -m 1 "^STEP $step " "$out" || true)
    if [ -z "$line" ]; then
      result[$client.$step]=FAIL
      if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        reason[$client.$step]="timed out: the scenario ran past $CLIENT_TIMEOUT s"
      else
        reason[$client.$step]="the client exited $rc before this step: $(grep -v '^\s*$' "$err" | tail -n 1 | cut -c1-200)"
      fi
    else
      line=${line#"STEP $step "}
      result[$client.$step]=${line%% *}
      reason[$client.$step]=$([ "$line" = "${line#* }" ] || echo "${line#* }")
    fi
    [ "${result[$client.$step]}" = FAIL ] && any_fail=1
  done
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "matrix: the broker died during the $client scenario" >&2
    broker_died=$client
    any_fail=1
  fi
}

# No __pycache__ in the source tree; kafkajs from target/clients; kcat's scenario creates its
# topic with `tern topic create`.
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 NODE_PATH=$node_dir/node_modules TERN_BIN
run_client confluent-kafka "$venv/bin/python" "$here/confluent_kafka_client.py"
run_client kafka-python "$venv/bin/python" "$here/kafka_python_client.py"
run_client aiokafka "$venv/bin/python" "$here/aiokafka_client.py"
run_client kafkajs node "$here/kafkajs_client.js"
run_client kcat bash "$here/kcat_client.sh"

# --- The table; each FAIL and n/a is numbered, with its one-line reason below.
notes=()
{
  header="| client | version |"
  rule="|---|---|"
  for step in "${STEPS[@]}"; do header+=" $step |"; rule+="---|"; done
  echo
  echo "$header"
  echo "$rule"
  for client in "${CLIENTS[@]}"; do
    row="| $client | ${version[$client]:-?} |"
    for step in "${STEPS[@]}"; do
      cell=${result[$client.$step]}
      if [ "$cell" != ok ]; then
        notes+=("($((${#notes[@]} + 1))) $client $step $cell: ${reason[$client.$step]:-no reason given}")
        cell="$cell (${#notes[@]})"
      fi
      row+=" $cell |"
    done
    echo "$row"
  done
  echo
  for note in "${notes[@]}"; do echo "$note"; done
  echo
} | tee "$logs/table.md"

# On a failure: the stderr of each client that failed a step, and the broker's.
if [ "$any_fail" = 1 ]; then
  for client in "${CLIENTS[@]}"; do
    for step in "${STEPS[@]}"; do
      if [ "${result[$client.$step]}" = FAIL ] && [ -s "$logs/$client.err" ]; then
        echo "--- $client stderr (last 60 lines)"
        tail -n 60 "$logs/$client.err"
        break
      fi
    done
  done
  echo "--- broker stderr (last 200 lines)"
  tail -n 200 "$work/broker.err"
fi
say "install ${install_s} s, whole run $((SECONDS - started)) s; logs in target/clients/last-run/"
if [ "$any_fail" = 1 ]; then
  say "FAIL: some step failed (see the numbered reasons above)"
  exit 1
fi
say "OK: every step passed or is n/a"
