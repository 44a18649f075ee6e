#!/usr/bin/env bash
# `make run`: the whole system on one machine with nothing installed — the
# core on the embedded durable bus (its data under the run folder), the echo
# and approval plugins, the Lark emulator standing in for Lark with the
# playground (a chat window on it), and the admin console. It prints their
# URLs and a login token, sends a sample event every few seconds and prints
# each reply as the emulator records it, until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=bin/larkway
CORE=${LARKWAY_DEMO_LISTEN:-127.0.0.1:8090}
METRICS=${LARKWAY_DEMO_METRICS:-127.0.0.1:8093}
EMU=${LARKWAY_DEMO_EMULATOR:-127.0.0.1:8091}
ADMIN=${LARKWAY_DEMO_ADMIN:-127.0.0.1:8092}
INTERVAL=${LARKWAY_DEMO_INTERVAL:-5}
RUN=$(mktemp -d /tmp/larkway-demo.XXXXXX)

say() { printf '\033[1m[demo]\033[0m %s\n' "$*"; }

pids=()
cleanup() {
  trap - EXIT INT TERM
  say "stopping"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${LARKWAY_DEMO_KEEP:-}" ] || rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

sum=$(sha256sum bin/plugins/echo | cut -d' ' -f1)
approval_sum=$(sha256sum bin/plugins/approval | cut -d' ' -f1)
# Fresh tokens per run: the console's login for this demo.
OPERATOR_TOKEN=demo-operator-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
VIEWER_TOKEN=demo-viewer-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat >"$RUN/larkway.yaml" <<YAML
listen: $CORE
metrics: {listen: $METRICS}
log_level: info
bus:
  kind: embedded
  embedded: {dir: $RUN/data/bus}
apps:
  - id: cli_demo
    secret: demo-secret
    verification_token: demo-verification-token
    event_path: /lark/events
    base_url: http://$EMU
plugins:
  - name: echo
    path: $PWD/bin/plugins/echo
    sha256: $sum
  - name: approval
    path: $PWD/bin/plugins/approval
    sha256: $approval_sum
admin:
  listen: $ADMIN
  tokens:
    - {name: demo-operator, token: $OPERATOR_TOKEN, role: operator}
    - {name: demo-viewer, token: $VIEWER_TOKEN, role: viewer}
  console:
    playground_url: http://$EMU/playground
YAML

say "starting the Lark emulator on $EMU (logs: $RUN/emulator.log)"
"$BIN" emulator --listen "$EMU" --playground-core "http://$CORE/lark/events" --playground-app cli_demo \
  --playground-verification-token demo-verification-token --playground-console "http://$ADMIN/" >"$RUN/emulator.log" 2>&1 &
pids+=($!)
say "starting the core on $CORE with the echo and approval plugins (logs: $RUN/core.log)"
"$BIN" serve --config "$RUN/larkway.yaml" >"$RUN/core.log" 2>&1 &
core=$!
pids+=("$core")

for _ in $(seq 1 100); do
  curl -fsS "http://$CORE/readyz" >/dev/null 2>&1 && break
  kill -0 "$core" 2>/dev/null || { say "the core exited:"; cat "$RUN/core.log"; exit 1; }
  sleep 0.1
done
curl -fsS "http://$CORE/readyz" >/dev/null || { say "the core did not become ready:"; tail -n 50 "$RUN/core.log"; exit 1; }
say "ready"
say "  playground: http://$EMU/playground   (type as a user; try 'hello' or '/approve-request buy a laptop')"
say "  console:    http://$ADMIN/   log in with the operator token $OPERATOR_TOKEN"
say "              (read-only: viewer token $VIEWER_TOKEN; scripts: Authorization: Bearer TOKEN)"
say "  metrics:    http://$METRICS/metrics"
say "sending a sample message every ${INTERVAL}s to chat oc_demo_chat; Ctrl-C to stop"

seen=0
n=0
while true; do
  n=$((n + 1))
  printf '  → webhook: '
  "$BIN" send --url "http://$CORE/lark/events" --text "hello #$n from the demo" || true
  echo
  for _ in $(seq 1 50); do
    count=$(curl -fsS "http://$EMU/_emu/messages" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
    [ "$count" -gt "$seen" ] && break
    sleep 0.1
  done
  curl -fsS "http://$EMU/_emu/messages" | python3 -c '
import json, sys
msgs = json.load(sys.stdin)
for m in msgs['"$seen"':]:
    print("  ← Lark emulator recorded a bot %s to %s: %s" % ("reply" if m.get("parent_id") else "message", m.get("parent_id") or m.get("chat_id"), m.get("content")))
'
  seen=$count
  sleep "$INTERVAL"
done
