#!/usr/bin/env bash
# Runs the same `confab bench` scenarios against confab and against the reference
# Socket.IO server (../shared/peers/socketio), both on loopback on this machine,
# and writes bench/results/latest.jsonl (one JSON report per run) and
# bench/results/latest.md (a comparison table).
#
#   bench/compare.sh            # from anywhere; needs cargo, node and npm
#
# Environment: SOCKETIO_PEER (the peer's directory; default ../shared/peers/socketio
# beside the repo), FANOUT_MEMBERS/FANOUT_RATE/FANOUT_SECS/PAYLOAD, PEER_PAIRS/PEER_SECS.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEER_SRC="${SOCKETIO_PEER:-$ROOT/../shared/peers/socketio}"
RESULTS="$ROOT/bench/results"
FANOUT_MEMBERS="${FANOUT_MEMBERS:-1000}"
FANOUT_RATE="${FANOUT_RATE:-100}"
FANOUT_SECS="${FANOUT_SECS:-10}"
PAYLOAD="${PAYLOAD:-64}"
PEER_PAIRS="${PEER_PAIRS:-50}"
PEER_SECS="${PEER_SECS:-10}"
APP_ID=1234567890
SECRET=fa94dd0f974cf2e293728a526b028271

for tool in cargo node npm; do
    command -v "$tool" >/dev/null || { echo "compare.sh: $tool is required" >&2; exit 1; }
done
[[ -f "$PEER_SRC/server.js" ]] || { echo "compare.sh: no Socket.IO peer at $PEER_SRC" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/confab-compare.XXXXXX")"
CONFAB_PID=""
PEER_PID=""
cleanup() {
    local rc=$?
    for pid in $CONFAB_PID $PEER_PID; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $CONFAB_PID $PEER_PID; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT

echo "== building confab (release)"
(cd "$ROOT" && cargo build --release --quiet -p confab-cli --bin confab)
CONFAB="$ROOT/target/release/confab"

echo "== Socket.IO peer"
PEER_DIR="$PEER_SRC"
if [[ ! -d "$PEER_DIR/node_modules" ]]; then
    # shared/ is read-only material: install a copy of the peer under the work dir.
    PEER_DIR="$WORK/socketio"
    mkdir -p "$PEER_DIR"
    cp "$PEER_SRC/package.json" "$PEER_SRC/package-lock.json" "$PEER_SRC/server.js" "$PEER_DIR/"
    (cd "$PEER_DIR" && npm ci --omit=dev --no-audit --no-fund)
fi

free_port() {
    node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# Waits until FILE contains TEXT (the server's ready line) or PID exits.
wait_for() {
    local file=$1 text=$2 pid=$3 name=$4
    for _ in $(seq 1 200); do
        grep -q "$text" "$file" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { echo "$name exited:" >&2; cat "$file" "$file.err" >&2 2>/dev/null; exit 1; }
        sleep 0.05
    done
    echo "$name did not start within 10 s" >&2
    exit 1
}

# 1000 members + senders are 1000+ sockets on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

CONFAB_PORT="$(free_port)"
echo "== starting confab serve on 127.0.0.1:$CONFAB_PORT"
(
    # Only our settings: drop any CONFAB_* from the caller's environment.
    for v in $(compgen -e | grep '^CONFAB_' || true); do unset "$v"; done
    export CONFAB_LIMITS_USER_SEND_RATE=1000000 CONFAB_LIMITS_USER_SEND_BURST=1000000 \
        CONFAB_LIMITS_APP_SEND_RATE=1000000
    exec "$CONFAB" serve --listen "127.0.0.1:$CONFAB_PORT" --data "$WORK/data" \
        --app "$APP_ID:$SECRET"
) >"$WORK/confab.out" 2>"$WORK/confab.out.err" </dev/null &
CONFAB_PID=$!
wait_for "$WORK/confab.out" "Press Ctrl-C" "$CONFAB_PID" "confab serve"

PEER_PORT="$(free_port)"
echo "== starting the Socket.IO peer on 127.0.0.1:$PEER_PORT"
(cd "$PEER_DIR" && PORT="$PEER_PORT" exec node server.js) \
    >"$WORK/peer.out" 2>"$WORK/peer.out.err" </dev/null &
PEER_PID=$!
wait_for "$WORK/peer.out" "listening" "$PEER_PID" "the Socket.IO peer"

mkdir -p "$RESULTS"
JSONL="$RESULTS/latest.jsonl"
MD="$RESULTS/latest.md"
: >"$JSONL"
FAILED=0

# bench TARGET SCENARIO ARGS...: one run, its JSON line appended to $JSONL.
bench() {
    local target=$1 scenario=$2
    shift 2
    local url pid
    if [[ $target == confab ]]; then
        url="ws://127.0.0.1:$CONFAB_PORT/ws"
        pid=$CONFAB_PID
    else
        url="ws://127.0.0.1:$PEER_PORT"
        pid=$PEER_PID
    fi
    echo "== $scenario on $target"
    local rc=0
    CONFAB_SECRET="$SECRET" "$CONFAB" bench "$scenario" --target "$target" --url "$url" \
        --app-id "$APP_ID" --server-pid "$pid" --json "$@" >"$WORK/run.json" || rc=$?
    if [[ -s "$WORK/run.json" ]]; then
        cat "$WORK/run.json" >>"$JSONL"
        cat "$WORK/run.json"
    fi
    if [[ $rc -ne 0 ]]; then
        echo "   (bench exited with $rc)" >&2
        FAILED=1
    fi
}

for target in confab socketio; do
    bench "$target" fanout --members "$FANOUT_MEMBERS" --rate "$FANOUT_RATE" \
        --duration "$FANOUT_SECS" --payload "$PAYLOAD"
    bench "$target" peer --pairs "$PEER_PAIRS" --duration "$PEER_SECS" --payload "$PAYLOAD"
done

node - "$JSONL" "$MD" "$(nproc 2>/dev/null || echo '?')" <<'EOF'
const fs = require("fs");
const [jsonl, md, cpus] = process.argv.slice(2);
const rows = fs.readFileSync(jsonl, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
const num = (v, d = 0) => (v === null || v === undefined ? "-" : Number(v).toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }));
const ms = (v) => (v === null || v === undefined ? "-" : Number(v).toFixed(2));
const what = (r) => r.scenario === "fanout"
  ? `fanout ${r.members} × ${r.rate} msg/s × ${r.duration} s, ${r.payload} B`
  : `peer ${r.pairs} pairs × ${r.duration} s, window ${r.window}, ${r.payload} B`;
let out = `# confab vs Socket.IO (${new Date().toISOString()})\n\n`;
out += `Same machine (${cpus} CPUs), loopback, one \`confab bench\` load generator for both. `;
out += "Latency is send → delivery, in ms. Server CPU and RSS are over the measured window (RSS at its end).\n\n";
out += "| scenario | target | deliveries/s | p50 ms | p99 ms | p999 ms | lost | server CPU s | deliveries / server CPU s | RSS MB |\n";
out += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
for (const r of rows) {
  out += `| ${what(r)} | ${r.target} | ${num(r.deliveries_per_s)} | ${ms(r.p50_ms)} | ${ms(r.p99_ms)} | ${ms(r.p999_ms)} | ${r.lost} | ${num(r.server_cpu_s, 2)} | ${num(r.deliveries_per_server_cpu_s)} | ${r.server_rss_kb == null ? "-" : (r.server_rss_kb / 1024).toFixed(1)} |\n`;
}
out += "\nFull reports: `latest.jsonl` (one JSON object per run).\n";
fs.writeFileSync(md, out);
process.stdout.write("\n" + out);
EOF

echo
echo "results: $JSONL"
echo "         $MD"
if [[ $FAILED -ne 0 ]]; then
    echo "compare.sh: at least one bench run reported a failure (see above)" >&2
    exit 1
fi
