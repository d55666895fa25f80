#!/usr/bin/env bash
# Runs the same `confab bench` scenarios against confab and against the reference
# Socket.IO server (bench/peers/socketio), both on loopback on this machine,
# and writes bench/results/:
#   latest.jsonl  one JSON report per run (sweeps: one per step and a summary)
#   latest.md     the comparison tables, the goals of issue 7, the machine, the
#                 server configurations and the exact commands
#   latest.svg    the chart (`confab bench chart`), and latest.png when
#                 rsvg-convert is installed (Debian: librsvg2-bin)
#
#   bench/compare.sh            # from anywhere; needs cargo, node and npm
#
# Scenarios, each against both servers: connect (idle memory per connection),
# fanout 1k members × 100 msg/s (64 B and 1 KiB), 1k × 1000 msg/s, 10k × 10 msg/s,
# sweep (fan-out at rising rates until p99 > 50 ms), peer (50 pairs × 8 in flight,
# and the goal's point, 10 pairs × 24), and the kernel's floor for the latency
# goals' fan-outs (`confab bench floor`: no server). About 4–5 minutes of runs
# after the build.
#
# Environment: SOCKETIO_PEER (the peer's directory; default bench/peers/socketio),
# SECS (seconds per fan-out/peer run, default 5), CLIENTS (connect, default 5000), BIG_MEMBERS (default 10000), SWEEP_RATES (default
# 10,20,50,100,200,500,1000), SWEEP_BOUND_MS (default 50), PEER_PAIRS (default 50),
# PEER_GOAL_PAIRS and PEER_GOAL_WINDOW (default 10 and 24),
# RECV_THREADS (generator receive threads; default: one per two CPUs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEER_SRC="${SOCKETIO_PEER:-$ROOT/bench/peers/socketio}"
RESULTS="$ROOT/bench/results"
SECS="${SECS:-5}"
CLIENTS="${CLIENTS:-5000}"
BIG_MEMBERS="${BIG_MEMBERS:-10000}"
SWEEP_RATES="${SWEEP_RATES:-10,20,50,100,200,500,1000}"
SWEEP_BOUND_MS="${SWEEP_BOUND_MS:-50}"
PEER_PAIRS="${PEER_PAIRS:-50}"
PEER_GOAL_PAIRS="${PEER_GOAL_PAIRS:-10}"
PEER_GOAL_WINDOW="${PEER_GOAL_WINDOW:-24}"
RECV_THREADS="${RECV_THREADS:-0}"
APP_ID=1234567890
SECRET=fa94dd0f974cf2e293728a526b028271
# confab's limits, raised for benchmarking (defaults: docs/config.md).
CONFAB_ENV=(CONFAB_LIMITS_USER_SEND_RATE=1000000 CONFAB_LIMITS_USER_SEND_BURST=1000000
    CONFAB_LIMITS_APP_SEND_RATE=1000000)
STARTED=$(date +%s)
# The revision measured (before this run rewrites bench/results/).
REV="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
if [[ -n "$(cd "$ROOT" && git status --porcelain 2>/dev/null | head -1)" ]]; then REV="$REV+changes"; fi

for tool in cargo node npm; do
    command -v "$tool" >/dev/null || { echo "compare.sh: $tool is required" >&2; exit 1; }
done
[[ -f "$PEER_SRC/server.js" ]] || { echo "compare.sh: no Socket.IO peer at $PEER_SRC" >&2; exit 1; }

# Every connection is an open file on both sides; server and generator are
# separate processes, so each needs BIG_MEMBERS plus some.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT="$(ulimit -n)"
NOTE=""
if [[ "$FD_LIMIT" != unlimited ]] && (( BIG_MEMBERS + 200 > FD_LIMIT )); then
    NOTE="open-file limit $FD_LIMIT: the large fan-out ran with $((FD_LIMIT - 200)) members instead of $BIG_MEMBERS"
    echo "compare.sh: $NOTE" >&2
    BIG_MEMBERS=$((FD_LIMIT - 200))
fi

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
BUILT=$(date +%s)

echo "== Socket.IO peer"
PEER_DIR="$PEER_SRC"
if [[ ! -d "$PEER_DIR/node_modules" ]]; then
    # Installed into a copy under the work dir: the peer's directory may be
    # read-only (SOCKETIO_PEER pointing elsewhere).
    PEER_DIR="$WORK/socketio"
    mkdir -p "$PEER_DIR"
    cp "$PEER_SRC/package.json" "$PEER_SRC/package-lock.json" "$PEER_SRC/server.js" "$PEER_DIR/"
    (cd "$PEER_DIR" && npm ci --omit=dev --no-audit --no-fund --loglevel=error)
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

# CPU ticks (1/100 s) PID has used.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Waits (at most 30 s) until PID uses under 5 % of a core: a run's leftovers
# (an overloaded server still writing to closed connections) must not spill into
# the next run.
settle() {
    local pid=$1 a b
    for _ in $(seq 1 60); do
        a=$(ticks "$pid")
        sleep 0.5
        b=$(ticks "$pid")
        (( b - a <= 2 )) && return 0
    done
    echo "   (server $pid still busy after 30 s)" >&2
}

start_servers() {
    CONFAB_PORT="$(free_port)"
    rm -rf "$WORK/data"
    (
        # Only our settings: drop any CONFAB_* from the caller's environment.
        for v in $(compgen -e | grep '^CONFAB_' || true); do unset "$v"; done
        export "${CONFAB_ENV[@]}"
        exec "$CONFAB" serve --listen "127.0.0.1:$CONFAB_PORT" --data "$WORK/data" \
            --app "$APP_ID:$SECRET"
    ) >"$WORK/confab.out" 2>"$WORK/confab.out.err" </dev/null &
    CONFAB_PID=$!
    wait_for "$WORK/confab.out" "Press Ctrl-C" "$CONFAB_PID" "confab serve"
    PEER_PORT="$(free_port)"
    (cd "$PEER_DIR" && PORT="$PEER_PORT" exec node server.js) \
        >"$WORK/peer.out" 2>"$WORK/peer.out.err" </dev/null &
    PEER_PID=$!
    wait_for "$WORK/peer.out" "listening" "$PEER_PID" "the Socket.IO peer"
    echo "== confab on 127.0.0.1:$CONFAB_PORT (pid $CONFAB_PID), Socket.IO on 127.0.0.1:$PEER_PORT (pid $PEER_PID)"
}

mkdir -p "$RESULTS"
JSONL="$RESULTS/latest.jsonl"
MD="$RESULTS/latest.md"
COMMANDS="$WORK/commands"
: >"$JSONL"
: >"$COMMANDS"
FAILED=0

# bench TARGET SCENARIO ARGS...: one run, its JSON lines appended to $JSONL.
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
    settle "$pid"
    echo "== $scenario $* on $target ($(( $(date +%s) - STARTED )) s in)"
    local auth=""
    [[ $target == confab ]] && auth=" --app-id $APP_ID --secret …"
    echo "confab bench $scenario --target $target --url $url --server-pid PID --json $*$auth" >>"$COMMANDS"
    local rc=0
    CONFAB_SECRET="$SECRET" "$CONFAB" bench "$scenario" --target "$target" --url "$url" \
        --app-id "$APP_ID" --server-pid "$pid" --recv-threads "$RECV_THREADS" --json "$@" \
        >"$WORK/run.json" || rc=$?
    record "$rc"
}

# record RC: appends the run's JSON to $JSONL and shows it. Exit code 1: the run
# completed but lost or duplicated deliveries (a result, e.g. of overload);
# anything else non-zero: the run itself failed.
record() {
    local rc=$1
    if [[ -s "$WORK/run.json" ]]; then
        cat "$WORK/run.json" >>"$JSONL"
        cat "$WORK/run.json"
    fi
    if [[ $rc -eq 1 ]]; then
        echo "   (deliveries lost or duplicated: see the report)" >&2
    elif [[ $rc -ne 0 ]]; then
        echo "   (bench exited with $rc)" >&2
        FAILED=1
    fi
}

# floor ARGS...: `confab bench floor` (no server: the kernel's own cost of one
# write per member), with both servers idle.
floor() {
    settle "$CONFAB_PID"
    settle "$PEER_PID"
    echo "== floor $* ($(( $(date +%s) - STARTED )) s in)"
    echo "confab bench floor --json $*" >>"$COMMANDS"
    local rc=0
    "$CONFAB" bench floor --json "$@" >"$WORK/run.json" || rc=$?
    record "$rc"
}

# both SCENARIO ARGS...: the run against confab, then against Socket.IO.
both() {
    bench confab "$@"
    bench socketio "$@"
}

start_servers
# Memory per idle connection first, on fresh servers.
both connect --clients "$CLIENTS"
both fanout --members 1000 --rate 100 --duration "$SECS" --payload 64
both fanout --members 1000 --rate 1000 --duration "$SECS" --payload 64 --drain-max 15
both fanout --members 1000 --rate 100 --duration "$SECS" --payload 1024
both fanout --members "$BIG_MEMBERS" --rate 10 --duration "$SECS" --payload 64 --drain-max 20
both sweep --members 1000 --rates "$SWEEP_RATES" --duration "$SECS" --payload 64 \
    --p99-bound-ms "$SWEEP_BOUND_MS" --drain-max 10
both peer --pairs "$PEER_PAIRS" --duration "$SECS" --payload 64
# The peer goal's point: fewer senders, deeper pipelines (same offered concurrency
# order); each sender's stored sends ride one SQLite commit together.
both peer --pairs "$PEER_GOAL_PAIRS" --window "$PEER_GOAL_WINDOW" --duration "$SECS" --payload 64
# What the latency goals' fan-outs cost the kernel alone on this machine.
# (At 10 and 1 bursts/s too: where the goal's rate queues, a slower one still
# bounds a single burst.)
floor --members 1000 --rate 100 --duration "$SECS"
floor --members 1000 --rate 10 --duration "$SECS"
floor --members "$BIG_MEMBERS" --rate 10 --duration "$SECS"
floor --members "$BIG_MEMBERS" --rate 1 --duration "$SECS"

ELAPSED=$(( $(date +%s) - STARTED ))
CPU_MODEL="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')"
MEM_GIB="$(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo 2>/dev/null)"
MACHINE="$(nproc) CPUs ($CPU_MODEL), ${MEM_GIB} GiB, $(uname -sr), node $(node --version)"

node - "$JSONL" "$MD" "$MACHINE" "$REV" "$COMMANDS" "$NOTE" "${CONFAB_ENV[*]}" "$PEER_GOAL_PAIRS" "$PEER_GOAL_WINDOW" <<'EOF'
const fs = require("fs");
const [jsonl, md, machine, rev, commandsFile, note, confabEnv, goalPairs, goalWindow] = process.argv.slice(2);
const rows = fs.readFileSync(jsonl, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
const num = (v, d = 0) => (v === null || v === undefined ? "-" : Number(v).toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }));
const ms = (v) => (v === null || v === undefined ? "-" : Number(v) >= 100 ? Number(v).toFixed(0) : Number(v).toFixed(2));
const k = (n) => (n >= 1000 && n % 1000 === 0 ? `${n / 1000}k` : `${n}`);
const name = (t) => (t === "socketio" ? "Socket.IO" : t);
const find = (pred) => ({ confab: rows.find((r) => r.target === "confab" && pred(r)), socketio: rows.find((r) => r.target === "socketio" && pred(r)) });

let out = `# confab beside Socket.IO — ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC\n\n`;
out += `Machine: ${machine}. Both servers and the one \`confab bench\` load generator share it, on loopback. `;
out += `confab ${rev}; Socket.IO 4.8.1 (the reference peer, one Node process). Latency is send → delivery in ms; `;
out += "server CPU and RSS are the server process's over the measured window (`/proc`), and so is the load generator's own CPU (`bench_cpu_s`).\n\n";
if (note) out += `Note: ${note}.\n\n`;

out += "## Goals of issue 7\n\nThe last column is the kernel alone on this machine (`confab bench floor`: the same connections, one write per member, no server; p99 measured as in the fan-out runs), where it bounds a goal. *queued*: at that rate the kernel alone falls behind, so the figure is no bound; the one after it, at a slower rate, is for a single burst.\n\n| goal | confab | Socket.IO | kernel alone |\n|---|---:|---:|---:|\n";
const f1 = find((r) => r.scenario === "fanout" && r.members === 1000 && r.rate === 1000 && r.payload === 64);
const f2 = find((r) => r.scenario === "fanout" && r.members === 1000 && r.rate === 100 && r.payload === 64);
const f3 = find((r) => r.scenario === "fanout" && r.members >= 5000 && r.rate === 10);
const c = find((r) => r.scenario === "connect");
const p = find((r) => r.scenario === "peer" && r.pairs === Number(goalPairs) && r.window === Number(goalWindow));
const cell = (r, get, fmt) => (r ? fmt(get(r)) : "-");
const fl = (pred) => rows.find((r) => r.scenario === "floor" && pred(r));
// A queued floor is no bound; the same burst at a slower rate still is.
const floorCell = (r, slower) => (r ? `${ms(r.p99_ms)} ms${r.queued ? " (queued)" : ""}${r.queued && slower && !slower.queued ? `; at ${slower.rate}/s: ${ms(slower.p99_ms)} ms` : ""}` : "-");
const goal = (label, set, get, fmt, fr) => { out += `| ${label} | ${cell(set.confab, get, fmt)} | ${cell(set.socketio, get, fmt)} | ${fr === undefined ? "-" : floorCell(...fr)} |\n`; };
goal("fan-out 1k × 1000 msg/s: deliveries per server CPU-second ≥ 1,500,000 (Socket.IO ≈ 100,000)", f1, (r) => r.deliveries_per_server_cpu_s, (v) => num(v));
goal("fan-out 1k × 100 msg/s: p99 ≤ 5 ms (Socket.IO 63 ms)", f2, (r) => r.p99_ms, (v) => `${ms(v)} ms`, [fl((r) => r.members === 1000 && r.rate === 100), fl((r) => r.members === 1000 && r.rate === 10)]);
goal(`fan-out ${k(f3.confab ? f3.confab.members : 10000)} × 10 msg/s: p99 ≤ 20 ms (Socket.IO 2,200 ms)`, f3, (r) => r.p99_ms, (v) => `${ms(v)} ms`, [fl((r) => r.members >= 5000 && r.rate === 10), fl((r) => r.members >= 5000 && r.rate === 1)]);
goal("server memory per idle logged-in connection ≤ 4 KiB (Socket.IO ≈ 15 KiB)", c, (r) => r.server_rss_per_connection_kb, (v) => `${num(v, 1)} KiB`);
goal(`durable peer messages acknowledged/s ≥ 50,000 (${goalPairs} pairs × ${goalWindow} in flight)`, p, (r) => r.acked_per_s, (v) => num(v));
goal("… with p99 ack ≤ 10 ms", p, (r) => r.ack_p99_ms, (v) => `${ms(v)} ms`);

out += "\n## Fan-out\n\n| members × msg/s, body | target | deliveries/s | p50 | p99 | p999 | max | lost | server CPU s | deliveries / server CPU s | server RSS MiB | generator CPU s |\n";
out += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
const mib = (kb) => (kb === null || kb === undefined ? "-" : (kb / 1024).toFixed(0));
for (const r of rows.filter((r) => r.scenario === "fanout")) {
  out += `| ${k(r.members)} × ${r.rate}, ${r.payload} B | ${name(r.target)} | ${num(r.deliveries_per_s)} | ${ms(r.p50_ms)} | ${ms(r.p99_ms)} | ${ms(r.p999_ms)} | ${ms(r.max_ms)} | ${num(r.lost)} | ${num(r.server_cpu_s, 2)} | ${num(r.deliveries_per_server_cpu_s)} | ${mib(r.server_rss_kb)} | ${num(r.bench_cpu_s, 2)} |\n`;
}

out += `\n## Sweep (1k members, ${rows.find((r) => r.scenario === "sweep")?.duration ?? "?"} s per rate, until p99 > ${rows.find((r) => r.scenario === "sweep")?.p99_bound_ms ?? "?"} ms or loss)\n\n`;
out += "| target | msg/s | deliveries/s | p50 | p99 | p999 | lost | deliveries / server CPU s | within bound |\n|---|---:|---:|---:|---:|---:|---:|---:|---|\n";
for (const r of rows.filter((r) => r.scenario === "sweep" && r.step)) {
  out += `| ${name(r.target)} | ${num(r.rate)} | ${num(r.deliveries_per_s)} | ${ms(r.p50_ms)} | ${ms(r.p99_ms)} | ${ms(r.p999_ms)} | ${num(r.lost)} | ${num(r.deliveries_per_server_cpu_s)} | ${r.within_bound ? "yes" : "no"} |\n`;
}
out += "\n";
for (const r of rows.filter((r) => r.scenario === "sweep" && r.summary)) {
  out += r.saturation_rate === null
    ? `- ${name(r.target)}: no rate met the bound (${r.stopped_because}).\n`
    : `- ${name(r.target)}: saturation at ${num(r.saturation_rate)} msg/s = ${num(r.saturation_deliveries_per_s)} deliveries/s (p99 ${ms(r.saturation_p99_ms)} ms)${r.stopped_because ? `; stopped at ${num(r.stopped_at_rate)} msg/s: ${r.stopped_because}` : ""}.\n`;
}

out += "\n## Peer (durable on confab: acknowledged after the SQLite commit; Socket.IO stores nothing)\n\n";
out += "| pairs × window | target | acked/s | ack p50 | ack p99 | ack p999 | delivery p99 | lost | server CPU s | server RSS MiB |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
for (const r of rows.filter((r) => r.scenario === "peer")) {
  out += `| ${r.pairs} × ${r.window} | ${name(r.target)} | ${num(r.acked_per_s)} | ${ms(r.ack_p50_ms)} | ${ms(r.ack_p99_ms)} | ${ms(r.ack_p999_ms)} | ${ms(r.p99_ms)} | ${num(r.lost)} | ${num(r.server_cpu_s, 2)} | ${mib(r.server_rss_kb)} |\n`;
}

out += "\n## Connect (logins, then 3 s idle)\n\n| clients | target | logins/s | login p50 | login p99 | failed | server RSS per idle connection |\n|---:|---|---:|---:|---:|---:|---:|\n";
for (const r of rows.filter((r) => r.scenario === "connect")) {
  out += `| ${num(r.clients)} | ${name(r.target)} | ${num(r.logins_per_s)} | ${ms(r.p50_ms)} | ${ms(r.p99_ms)} | ${num(r.failed)} | ${num(r.server_rss_per_connection_kb, 1)} KiB |\n`;
}

out += "\n## Kernel floor (`confab bench floor`: no server)\n\n";
out += "The members' connections, as in the fan-out runs, with a child process reading them in one epoll loop; at each burst one thread per CPU writes one WebSocket frame to every member, and nothing else runs. Latency is measured as in the fan-out runs: from the burst's due time to the kernel's receive time at the member's socket. Its p99 is the least any server that writes each message to each member on its own reaches here, unless the bursts *queued*: one started more than half an interval late behind the ones before, so one write per member per message does not keep up here and the p99 is no bound.\n\n";
out += "| members × bursts/s | frame | sending threads | CPU per write | reader CPU per frame | one burst, written | p50 | p99 | p999 | lost | queued |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
for (const r of rows.filter((r) => r.scenario === "floor")) {
  out += `| ${k(r.members)} × ${r.rate} | ${r.frame_bytes} B | ${r.threads} | ${num(r.send_cpu_us, 2)} µs | ${num(r.read_cpu_us, 2)} µs | ${num(r.burst_cpu_ms, 1)} ms CPU | ${ms(r.p50_ms)} | ${ms(r.p99_ms)} | ${ms(r.p999_ms)} | ${num(r.lost)} | ${r.queued ? `yes (${ms(r.max_start_lag_ms)} ms late)` : "no"} |\n`;
}

out += "\n## Configuration and commands\n\n";
out += `- confab: \`confab serve --listen 127.0.0.1:PORT --data TMPDIR --app ${"APP:SECRET"}\` with ${confabEnv.split(" ").map((e) => `\`${e}\``).join(", ")} (rate limits raised for benchmarking; everything else default: SQLite store, local broker).\n`;
out += "- Socket.IO: `PORT=PORT node server.js` of shared/peers/socketio (websocket transport only, no per-message deflate).\n";
out += "- Each run waits until the server it drives is idle (< 5 % of a core) before it starts.\n\n```sh\n";
out += fs.readFileSync(commandsFile, "utf8");
out += "```\n\nFull reports: `latest.jsonl`; chart: `latest.svg`.\n";
fs.writeFileSync(md, out);
process.stdout.write("\n" + out);
EOF

echo "== chart"
"$CONFAB" bench chart --input "$JSONL" --output "$RESULTS/latest.svg" --png \
    --subtitle "$(date -u +%Y-%m-%d), $(nproc) CPUs, loopback; confab $REV, Socket.IO 4.8.1"

echo
echo "results: $JSONL"
echo "         $MD"
echo "         $RESULTS/latest.svg"
echo "took $ELAPSED s in all, $(( ELAPSED - (BUILT - STARTED) )) s after the build"
if [[ $FAILED -ne 0 ]]; then
    echo "compare.sh: at least one bench run reported a failure (see above)" >&2
    exit 1
fi
