#!/usr/bin/env bash
# Two confab binaries side by side in one run, alternating, so the machine's
# drift hits both alike: memory per idle connection (bench connect) and fan-out
# CPU per delivery (bench fanout), each on a fresh server with a fresh data
# directory. The load generator is always B's.
#
# Usage: bench/ab.sh BIN_A BIN_B
#   e.g. build the old revision in a worktree, then
#   bench/ab.sh /tmp/confab-old target/release/confab
#
# Environment: ROUNDS (alternations, default 3), CLIENTS (connect, default
# 5000), MEMBERS and RATE (fan-out, default 1000 × 1000), SECS (fan-out
# seconds, default 5). Prints one JSON line per run and a summary table
# (median of the rounds).
set -euo pipefail

A="${1:?usage: bench/ab.sh BIN_A BIN_B}"
B="${2:?usage: bench/ab.sh BIN_A BIN_B}"
ROUNDS="${ROUNDS:-3}"
CLIENTS="${CLIENTS:-5000}"
MEMBERS="${MEMBERS:-1000}"
RATE="${RATE:-1000}"
SECS="${SECS:-5}"
APP_ID=1234567890
SECRET=fa94dd0f974cf2e293728a526b028271

for bin in "$A" "$B"; do
    [[ -x "$bin" ]] || { echo "ab.sh: $bin is not an executable" >&2; exit 1; }
done
command -v node >/dev/null || { echo "ab.sh: node is required (free ports, summary)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK="$(mktemp -d "${TMPDIR:-/tmp}/confab-ab.XXXXXX")"
PID=""
cleanup() {
    local rc=$?
    [[ -n "$PID" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT

free_port() {
    node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# serve BIN: starts BIN on a fresh data directory; sets PID and PORT.
serve() {
    local bin=$1
    PORT="$(free_port)"
    rm -rf "$WORK/data"
    (
        for v in $(compgen -e | grep '^CONFAB_' || true); do unset "$v"; done
        export CONFAB_LIMITS_USER_SEND_RATE=1000000 CONFAB_LIMITS_USER_SEND_BURST=1000000 \
            CONFAB_LIMITS_APP_SEND_RATE=1000000
        exec "$bin" serve --listen "127.0.0.1:$PORT" --data "$WORK/data" --app "$APP_ID:$SECRET"
    ) >"$WORK/serve.out" 2>&1 </dev/null &
    PID=$!
    for _ in $(seq 1 200); do
        grep -q "Press Ctrl-C" "$WORK/serve.out" 2>/dev/null && return 0
        kill -0 "$PID" 2>/dev/null || { cat "$WORK/serve.out" >&2; exit 1; }
        sleep 0.05
    done
    echo "ab.sh: $bin did not start within 10 s" >&2
    exit 1
}

stop() {
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
}

# run LABEL BIN SCENARIO ARGS...: one run on a fresh server, its JSON line
# tagged with the label.
run() {
    local label=$1 bin=$2 scenario=$3
    shift 3
    serve "$bin"
    echo "== $label: $scenario $*" >&2
    CONFAB_SECRET="$SECRET" "$B" bench "$scenario" --url "ws://127.0.0.1:$PORT/ws" \
        --app-id "$APP_ID" --server-pid "$PID" --json "$@" >"$WORK/run.json" || true
    stop
    node -e 'const fs=require("fs");for(const l of fs.readFileSync(process.argv[1],"utf8").split("\n")){if(l.trim())console.log(JSON.stringify({bin:process.argv[2],...JSON.parse(l)}))}' \
        "$WORK/run.json" "$label" | tee -a "$WORK/all.jsonl"
}

for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round of $ROUNDS" >&2
    for pair in "A:$A" "B:$B"; do
        run "${pair%%:*}" "${pair#*:}" connect --clients "$CLIENTS"
    done
    for pair in "B:$B" "A:$A"; do
        run "${pair%%:*}" "${pair#*:}" fanout --members "$MEMBERS" --rate "$RATE" \
            --duration "$SECS" --payload 64 --drain-max 15
    done
done

node - "$WORK/all.jsonl" "$A" "$B" <<'EOF'
const fs = require("fs");
const [file, a, b] = process.argv.slice(2);
const rows = fs.readFileSync(file, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
const median = (xs) => {
  const s = xs.filter((x) => typeof x === "number").sort((p, q) => p - q);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN;
};
const pick = (bin, scenario, key) =>
  rows.filter((r) => r.bin === bin && r.scenario === scenario).map((r) => r[key]);
const line = (what, scenario, key, digits) => {
  const va = pick("A", scenario, key), vb = pick("B", scenario, key);
  const fmt = (xs) => xs.map((x) => (typeof x === "number" ? x.toFixed(digits) : "?")).join(", ");
  console.log(`| ${what} | ${median(va).toFixed(digits)} (${fmt(va)}) | ${median(vb).toFixed(digits)} (${fmt(vb)}) |`);
};
console.log(`\nA: ${a}\nB: ${b}\n`);
console.log("| measure (median of the rounds; each round) | A | B |\n|---|---:|---:|");
line("server RSS per idle connection, KiB", "connect", "server_rss_per_connection_kb", 2);
line("fan-out deliveries per server CPU-second", "fanout", "deliveries_per_server_cpu_s", 0);
line("fan-out p99 latency, ms", "fanout", "p99_ms", 1);
EOF
