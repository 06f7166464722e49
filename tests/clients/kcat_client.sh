#!/usr/bin/env bash
# The client-matrix scenario with kcat (librdkafka's command-line client).
#
#   TERN_BIN=path/to/tern bash kcat_client.sh HOST:PORT
#
# Prints one `STEP <name> ok|FAIL <reason>|n/a <why>` line per step (see README.md). kcat has
# no admin API: create_topic, alter_config and bad_input are n/a, and the topic is created
# with `tern topic create` so that the other steps have it.
set -uo pipefail
bootstrap=$1
: "${TERN_BIN:?TERN_BIN must name the tern binary (for tern topic create)}"
client=kcat
topic=$client-t
group=$client-g
partitions=3
records=100
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0

step() { echo "STEP $*"; }
# fail STEP REASON... : a FAIL line with the reason on one line.
fail() {
  local name=$1
  shift
  echo "STEP $name FAIL $(echo "$*" | tr '\n' ' ' | cut -c1-300)"
  failed=1
}
# The last non-empty line of a file, for a reason.
last_line() { grep -v '^\s*$' "$1" | tail -n 1; }
# poll SECONDS COMMAND... : runs COMMAND every 0.2 s until it succeeds, for SECONDS at most.
poll() {
  local end=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.2
  done
}

# create_topic: kcat has no admin API.
topic_ready() {
  timeout 10 kcat -b "$bootstrap" -L -t "$topic" -m 5 >"$work/metadata.txt" 2>&1 \
    && grep -q "topic \"$topic\" with $partitions partitions" "$work/metadata.txt"
}
if ! timeout 30 "$TERN_BIN" topic create "$topic" --partitions "$partitions" \
  --replication-factor 1 -b "$bootstrap" >"$work/create.txt" 2>&1; then
  cat "$work/create.txt" >&2
  fail create_topic "tern topic create (needed by the other steps): $(last_line "$work/create.txt")"
elif ! poll 20 topic_ready; then
  cat "$work/metadata.txt" >&2
  fail create_topic "kcat -L does not show $topic with $partitions partitions within 20 s"
else
  step create_topic n/a "kcat has no admin API (topic made with tern topic create)"
fi

# produce: KEY:VALUE lines; kcat exits 1 if any delivery report is an error.
for i in $(seq 0 $((records - 1))); do echo "$client-$i:$client-$i"; done >"$work/expected.txt"
rc=0
timeout 60 kcat -b "$bootstrap" -P -t "$topic" -K: -X acks=all -X message.timeout.ms=30000 \
  <"$work/expected.txt" 2>"$work/produce.err" || rc=$?
if [ "$rc" = 0 ]; then
  step produce ok
else
  cat "$work/produce.err" >&2
  fail produce "kcat -P exited $rc: $(last_line "$work/produce.err")"
fi

# consume_group: a balanced consumer in the group, exiting at the end of every partition.
# kcat commits the offsets it has read when it closes (enable.auto.commit, the default).
consume() {
  timeout 60 kcat -b "$bootstrap" -G "$group" -X auto.offset.reset=earliest -e -q \
    -f '%k:%s\n' "$topic" >"$1" 2>"$1.err"
}
rc=0
consume "$work/consumed.txt" || rc=$?
if [ "$rc" != 0 ]; then
  cat "$work/consumed.txt.err" >&2
  fail consume_group "kcat -G exited $rc: $(last_line "$work/consumed.txt.err")"
elif ! sort "$work/expected.txt" | cmp -s - <(sort "$work/consumed.txt"); then
  fail consume_group "consumed $(wc -l <"$work/consumed.txt") records, expected the" \
    "$records produced ($(sort "$work/expected.txt" | comm -3 - <(sort "$work/consumed.txt") \
    | head -n 3 | tr -s '\t\n' '  '))"
else
  step consume_group ok
fi

# commit: kcat cannot commit on demand nor read committed offsets; its close commits, and a
# second consumer in the group must start at the committed offsets and read nothing.
rc=0
consume "$work/again.txt" || rc=$?
if [ "$rc" != 0 ]; then
  cat "$work/again.txt.err" >&2
  fail commit "second kcat -G exited $rc: $(last_line "$work/again.txt.err")"
elif [ -s "$work/again.txt" ]; then
  fail commit "a second consumer in $group read $(wc -l <"$work/again.txt") records again:" \
    "offsets not committed"
else
  step commit ok
fi

# list_offsets: earliest (-2) and latest (-1) of each partition with kcat -Q.
# query TIMESTAMP: "PARTITION OFFSET" lines, from "TOPIC [P] offset O" lines.
query() {
  local args=() p
  for p in $(seq 0 $((partitions - 1))); do args+=(-t "$topic:$p:$1"); done
  timeout 30 kcat -b "$bootstrap" -Q "${args[@]}" 2>"$work/query.err" \
    | sed -nE "s/^$topic \[([0-9]+)\] offset (-?[0-9]+)\$/\1 \2/p" | sort -n
}
earliest=$(query -2)
latest=$(query -1)
expected_parts=$(seq 0 $((partitions - 1)) | tr '\n' ' ')
if [ "$(echo "$earliest" | awk '{printf "%s ", $1}')" != "$expected_parts" ] \
  || [ "$(echo "$latest" | awk '{printf "%s ", $1}')" != "$expected_parts" ]; then
  cat "$work/query.err" >&2
  fail list_offsets "kcat -Q did not give every partition: earliest [$(echo $earliest)]" \
    "latest [$(echo $latest)] $(last_line "$work/query.err")"
elif [ "$(echo "$earliest" | awk '{s += ($2 != 0)} END {print s + 0}')" != 0 ]; then
  fail list_offsets "earliest offsets [$(echo $earliest)], expected 0 on each partition"
elif [ "$(echo "$latest" | awk '{s += $2} END {print s + 0}')" != "$records" ]; then
  fail list_offsets "latest offsets [$(echo $latest)] do not sum to $records"
else
  step list_offsets ok
fi

step alter_config n/a "kcat has no admin API"
step bad_input n/a "kcat has no admin API"
exit $failed
