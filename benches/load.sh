#!/usr/bin/env bash
# The load benchmark of issues 6 and 14, in one command:
#
#     benches/load.sh [seconds per run, default 10]
#
# (ROUNDS=3 interleaved rounds, TOKENS=100000 distinct tokens, IDLE=10000
# idle connections by default.) It installs what it needs (wrk and nginx
# from Debian's packages; pgbench comes with PostgreSQL), builds tollgate and
# its bench helpers in release mode, and starts on loopback only:
#   - a static JSON upstream (nginx, one worker) and a WebSocket echo,
#   - nginx as a plain keep-alive reverse proxy in front of it (no auth),
#     once without and once with an access log to a file,
#   - tollgate in front of the same upstream (EdDSA keys, default settings),
#     once with logs at warn and once at info to a file,
# then measures, side by side in one run:
#   1. authenticated GET through tollgate (bearer) vs nginx, 64 connections,
#      with the server CPU per request of each (the proxy's own process:
#      the upstream's share is not in it);
#   2. the same with access logs on for both;
#   3. the same with the access cookie;
#   4. tollgate's resident memory under that load, with IDLE idle
#      keep-alive connections open (each made one request) and after they
#      closed; nginx's beside it;
#   5. a login flood (16 connections) beside the proxied load;
#   6. a WebSocket echo at 64 connections through tollgate vs direct;
#   7. TOKENS distinct live tokens, rotated over at 64 connections;
#   8. refresh on Postgres vs pgbench running the same statements;
# and prints one table. Postgres must answer on 127.0.0.1:5432 (user postgres).
set -euo pipefail

DURATION="${1:-10}"
ROUNDS="${ROUNDS:-3}"
TOKENS="${TOKENS:-100000}"
IDLE="${IDLE:-10000}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d /tmp/tollgate-bench.XXXXXX)"
PG_ADMIN="postgres://postgres@127.0.0.1:5432/postgres"
PG_DB="tollgate_bench_$$"
PASSWORD="correct horse battery"
PIDS=()
# The idle-connection runs hold thousands of sockets open at once.
ulimit -n "$(ulimit -Hn)"

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for conf in upstream proxy proxy_logs; do
        [ -f "$WORK/$conf.pid" ] && kill "$(cat "$WORK/$conf.pid")" 2>/dev/null || true
    done
    psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

need() {
    command -v "$1" >/dev/null 2>&1 && return
    echo "installing $2" >&2
    if ! apt-get install -y -qq "$2" >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1
        apt-get install -y -qq "$2" >/dev/null
    fi
}
need wrk wrk
need nginx nginx
need pgbench postgresql-contrib

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_for() {
    for _ in $(seq 1 100); do curl -s -o /dev/null "$1" && return; sleep 0.1; done
    echo "nothing answers at $1" >&2
    exit 1
}

echo "building tollgate and the bench helpers (release)" >&2
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin tollgate \
    --example argon2_verify --example ws_echo --example ws_load
TOLLGATE="${TOLLGATE:-$ROOT/target/release/tollgate}"
EXAMPLES="$ROOT/target/release/examples"

UPSTREAM_PORT=$(free_port)
WS_PORT=$(free_port)
PROXY_PORT=$(free_port)
PROXY_LOGS_PORT=$(free_port)
GATEWAY_PORT=$(free_port)
GATEWAY_LOGS_PORT=$(free_port)
PG_GATEWAY_PORT=$(free_port)

cat >"$WORK/upstream.conf" <<EOF
worker_processes 1;
pid $WORK/upstream.pid;
error_log $WORK/upstream.err warn;
worker_rlimit_nofile 20000;
events { worker_connections 16384; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT backlog=4096;
        keepalive_requests 1000000;
        location / {
            default_type application/json;
            return 200 '{"tickets":[{"id":1,"title":"printer on fire"}]}';
        }
    }
}
EOF
# nginx as a plain keep-alive reverse proxy; $1 names it, $2 is its port,
# $3 its access_log directive.
nginx_proxy_conf() {
    cat <<EOF
worker_processes auto;
pid $WORK/$1.pid;
error_log $WORK/$1.err warn;
worker_rlimit_nofile 20000;
events { worker_connections 16384; }
http {
    $3
    upstream api { server 127.0.0.1:$UPSTREAM_PORT; keepalive 128; }
    server {
        listen 127.0.0.1:$2 backlog=4096;
        keepalive_requests 1000000;
        location / {
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}
nginx_proxy_conf proxy "$PROXY_PORT" "access_log off;" >"$WORK/proxy.conf"
nginx_proxy_conf proxy_logs "$PROXY_LOGS_PORT" "access_log $WORK/nginx-access.log;" >"$WORK/proxy_logs.conf"
nginx -c "$WORK/upstream.conf" -p "$WORK"
nginx -c "$WORK/proxy.conf" -p "$WORK"
nginx -c "$WORK/proxy_logs.conf" -p "$WORK"
wait_for "http://127.0.0.1:$PROXY_PORT/api/tickets"
wait_for "http://127.0.0.1:$PROXY_LOGS_PORT/api/tickets"
"$EXAMPLES/ws_echo" "127.0.0.1:$WS_PORT" &
PIDS+=("$!")

# The gateways: default settings but for --max-connections (the idle run
# holds 10,000 connections open beside the proxied load, the default's
# bound), EdDSA keys, the embedded SQLite store; one
# logging at warn, one at info (a line for every request) to a file. The
# loopback peer is a trusted proxy so the login flood can spread itself over
# many client addresses with X-Forwarded-For, as clients behind a load
# balancer do; the throttle would otherwise (rightly) stop it.
start_gateway() { # name port log-level
    mkdir -p "$WORK/$1"
    cd "$WORK/$1"
    RUST_LOG="$3" "$TOLLGATE" --listen "127.0.0.1:$2" \
        --route "/=http://127.0.0.1:$UPSTREAM_PORT" --route "/ws=http://127.0.0.1:$WS_PORT" \
        --trusted-proxies 127.0.0.1/32 --max-connections 20000 >"$WORK/$1.log" 2>&1 &
    PIDS+=("$!")
    cd - >/dev/null
}
start_gateway gateway "$GATEWAY_PORT" warn
GATEWAY_PID=${PIDS[-1]}
start_gateway gateway-logs "$GATEWAY_LOGS_PORT" info
GATEWAY_LOGS_PID=${PIDS[-1]}
wait_for "http://127.0.0.1:$GATEWAY_PORT/health"
wait_for "http://127.0.0.1:$GATEWAY_LOGS_PORT/health"

post_json() {
    curl -s -X POST "$1" -H 'content-type: application/json' -d "$2"
}
json_field() {
    python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"
}
credentials="{\"username\":\"bench\",\"password\":\"$PASSWORD\"}"
sign_up() { # port
    post_json "http://127.0.0.1:$1/api/auth/register" "$credentials" >/dev/null
    post_json "http://127.0.0.1:$1/api/auth/login" "$credentials" | json_field access_token
}
TOKEN=$(sign_up "$GATEWAY_PORT")
LOGS_TOKEN=$(sign_up "$GATEWAY_LOGS_PORT")

# CPU time (user + system) of processes, in clock ticks.
cpu_ticks() {
    local total=0 pid fields
    for pid in "$@"; do
        read -r -a fields <"/proc/$pid/stat"
        total=$((total + fields[13] + fields[14]))
    done
    echo "$total"
}
nginx_pids() { # name: the master and its workers
    local master
    master=$(cat "$WORK/$1.pid")
    echo "$master" $(pgrep -P "$master")
}
TICK=$(getconf CLK_TCK)

# wrk with latency, charging the CPU the processes PIDS (comma-separated)
# spent meanwhile; prints "req/s p50_ms p99_ms cpu_us_per_request" and fails
# on any non-2xx answer.
load() {
    local pids="$1" out before after
    shift
    before=$(cpu_ticks ${pids//,/ })
    out=$(wrk --latency "$@")
    after=$(cpu_ticks ${pids//,/ })
    if grep -q "Non-2xx" <<<"$out"; then
        echo "non-2xx answers during: wrk $*" >&2
        echo "$out" >&2
        exit 1
    fi
    python3 - "$out" "$((after - before))" "$TICK" <<'PY'
import re, sys
out, ticks, tick = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def ms(label):
    value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
requests = int(re.search(r"(\d+) requests in", out).group(1))
cpu_us = ticks / tick * 1e6 / max(requests, 1)
print(f"{rps:.0f} {ms('50%'):.2f} {ms('99%'):.2f} {cpu_us:.1f}")
PY
}

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# Samples the gateway's resident set every 200 ms, in KiB, into $1.
rss_sampler() {
    while kill -0 "$GATEWAY_PID" 2>/dev/null; do
        rss_kib "$GATEWAY_PID" >>"$1"
        sleep 0.2
    done
}

PATH_T="/api/tickets"
WRK=(-t2 -c64 -d"${DURATION}s")
NGINX_PIDS=$(nginx_pids proxy | tr ' ' ',')
NGINX_LOGS_PIDS=$(nginx_pids proxy_logs | tr ' ' ',')

echo "warming up" >&2
wrk -t2 -c64 -d2s "http://127.0.0.1:$PROXY_PORT$PATH_T" >/dev/null
wrk -t2 -c64 -d2s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$GATEWAY_PORT$PATH_T" >/dev/null
wrk -t2 -c64 -d2s -H "Authorization: Bearer $LOGS_TOKEN" "http://127.0.0.1:$GATEWAY_LOGS_PORT$PATH_T" >/dev/null

# The median of interleaved rounds, each column, then the first column's
# range over the rounds: this machine's throughput drifts by 10% and more
# from one run to the next.
median_of() {
    python3 -c "
import statistics, sys
rows = [list(map(float, line.split())) for line in sys.stdin if line.strip()]
columns = list(zip(*rows))
print(' '.join(f'{statistics.median(c):.2f}' for c in columns), f'{min(columns[0]):.0f}-{max(columns[0]):.0f}')"
}
echo "1-3: proxied GET, nginx vs tollgate (bearer, cookie, logs on), $ROUNDS interleaved rounds" >&2
rss_sampler "$WORK/rss" &
SAMPLER=$!
CONTENDERS=(nginx bearer cookie nginx_logs bearer_logs)
for contender in "${CONTENDERS[@]}"; do : >"$WORK/$contender"; done
run_one() {
    case "$1" in
        nginx) load "$NGINX_PIDS" "${WRK[@]}" "http://127.0.0.1:$PROXY_PORT$PATH_T" ;;
        bearer) load "$GATEWAY_PID" "${WRK[@]}" -H "Authorization: Bearer $TOKEN" \
            "http://127.0.0.1:$GATEWAY_PORT$PATH_T" ;;
        cookie) load "$GATEWAY_PID" "${WRK[@]}" -H "Cookie: tollgate_access=$TOKEN" \
            "http://127.0.0.1:$GATEWAY_PORT$PATH_T" ;;
        nginx_logs) load "$NGINX_LOGS_PIDS" "${WRK[@]}" "http://127.0.0.1:$PROXY_LOGS_PORT$PATH_T" ;;
        bearer_logs) load "$GATEWAY_LOGS_PID" "${WRK[@]}" -H "Authorization: Bearer $LOGS_TOKEN" \
            "http://127.0.0.1:$GATEWAY_LOGS_PORT$PATH_T" ;;
    esac >>"$WORK/$1"
}
# Each round starts with another contender, so that none always runs first
# (or last) on a machine whose speed drifts under sustained load.
for round in $(seq 0 $((ROUNDS - 1))); do
    for i in $(seq 0 $((${#CONTENDERS[@]} - 1))); do
        run_one "${CONTENDERS[$(((round + i) % ${#CONTENDERS[@]}))]}"
    done
done
kill "$SAMPLER" 2>/dev/null || true
for contender in "${CONTENDERS[@]}"; do
    read -r RPS P50 P99 CPU RANGE <<<"$(median_of <"$WORK/$contender")"
    name=${contender^^}
    declare "${name}_RPS=${RPS%.*}" "${name}_P50=$P50" "${name}_P99=$P99" \
        "${name}_CPU=$CPU" "${name}_RANGE=$RANGE"
done
read -r RSS_MEDIAN RSS_PEAK <<<"$(python3 -c "
import statistics
samples = [int(line) / 1024 for line in open('$WORK/rss') if line.strip()]
print(f'{statistics.median(samples):.1f} {max(samples):.1f}')")"

echo "4: $IDLE idle keep-alive connections, each after one proxied request" >&2
cat >"$WORK/idle.py" <<'PY'
import asyncio, sys
port, count, header = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
extra = f"{header}\r\n" if header else ""
request = f"GET /api/tickets HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()
async def one():
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:40]
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    await reader.readexactly(length)
    return writer
async def main():
    writers = []
    for start in range(0, count, 500):
        writers += await asyncio.gather(*(one() for _ in range(start, min(start + 500, count))))
    print("open", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for writer in writers:
        writer.close()
asyncio.run(main())
PY
# Opens the idle connections to port $1 (each request with header $2), runs
# the command after them while they are open, then closes them.
with_idle_connections() {
    local port="$1" header="$2"
    shift 2
    coproc IDLE_CLIENT { python3 "$WORK/idle.py" "$port" "$IDLE" "$header"; }
    local client_pid=$IDLE_CLIENT_PID
    read -r _ <&"${IDLE_CLIENT[0]}"
    "$@"
    echo done >&"${IDLE_CLIENT[1]}"
    wait "$client_pid"
}
nginx_rss_kib() {
    local total=0 pid
    for pid in $(nginx_pids proxy); do total=$((total + $(rss_kib "$pid"))); done
    echo "$total"
}
# Measured once the connections have sat idle a few seconds, as idle ones do.
measure_idle_gateway() {
    sleep 5
    GATEWAY_IDLE_RSS=$(rss_kib "$GATEWAY_PID")
    read -r _ _ IDLE_P99 _ <<<"$(load "$GATEWAY_PID" "${WRK[@]}" -H "Authorization: Bearer $TOKEN" \
        "http://127.0.0.1:$GATEWAY_PORT$PATH_T")"
}
measure_idle_nginx() {
    sleep 5
    NGINX_IDLE_RSS=$(nginx_rss_kib)
}
GATEWAY_BEFORE_RSS=$(rss_kib "$GATEWAY_PID")
NGINX_BEFORE_RSS=$(nginx_rss_kib)
with_idle_connections "$GATEWAY_PORT" "Authorization: Bearer $TOKEN" measure_idle_gateway
with_idle_connections "$PROXY_PORT" "" measure_idle_nginx
sleep 2
GATEWAY_AFTER_RSS=$(rss_kib "$GATEWAY_PID")
mib() { python3 -c "print(f'{$1 / 1024:.1f}')"; }

echo "5: login flood beside the proxied load" >&2
cat >"$WORK/login.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$credentials'
request = function()
    wrk.headers["X-Forwarded-For"] = string.format("10.%d.%d.%d",
        math.random(0, 255), math.random(0, 255), math.random(1, 254))
    return wrk.format()
end
EOF
VERIFY_MS=$("$EXAMPLES/argon2_verify")
CORES=$(nproc)
LOGIN_URL="http://127.0.0.1:$GATEWAY_PORT/api/auth/login"
read -r LOGIN_ALONE_RPS _ _ _ <<<"$(load "$GATEWAY_PID" -t2 -c16 -d"${DURATION}s" -s "$WORK/login.lua" "$LOGIN_URL")"
load "$GATEWAY_PID" -t2 -c16 -d"$((DURATION + 2))s" -s "$WORK/login.lua" "$LOGIN_URL" >"$WORK/flood" &
FLOOD=$!
sleep 1
read -r FLOODED_RPS FLOODED_P50 FLOODED_P99 _ <<<"$(load "$GATEWAY_PID" "${WRK[@]}" \
    -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$GATEWAY_PORT$PATH_T")"
wait "$FLOOD"
read -r LOGIN_RPS _ _ _ <"$WORK/flood"
LOGIN_IDEAL=$(python3 -c "print(f'{$CORES * 1000 / $VERIFY_MS:.1f}')")

echo "6: WebSocket echo, direct vs through tollgate, $ROUNDS interleaved rounds" >&2
: >"$WORK/ws_direct"
: >"$WORK/ws_gateway"
for _ in $(seq 1 "$ROUNDS"); do
    "$EXAMPLES/ws_load" "ws://127.0.0.1:$WS_PORT/ws/echo" 64 "$DURATION" >>"$WORK/ws_direct"
    "$EXAMPLES/ws_load" "ws://127.0.0.1:$GATEWAY_PORT/ws/echo" 64 "$DURATION" "$TOKEN" >>"$WORK/ws_gateway"
done
WS_DIRECT=$(median_of <"$WORK/ws_direct" | cut -d' ' -f1)
WS_GATEWAY=$(median_of <"$WORK/ws_gateway" | cut -d' ' -f1)

echo "7: $TOKENS distinct live tokens" >&2
# Minted by refreshing: four chains, one session each.
REFRESH_TOKENS=()
for i in 1 2 3 4; do
    REFRESH_TOKENS+=("$(curl -s -X POST "http://127.0.0.1:$GATEWAY_PORT/api/auth/login" \
        -H 'content-type: application/json' -H "X-Forwarded-For: 10.8.8.$i" -d "$credentials" \
        | json_field refresh_token)")
done
python3 - "$GATEWAY_PORT" "$TOKENS" "${REFRESH_TOKENS[@]}" >"$WORK/tokens" <<'PY'
import http.client, json, sys, threading
port, count, chains = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
minted = [[] for _ in chains]
def chain(i, refresh):
    connection = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(count // len(chains)):
        connection.request("POST", "/api/auth/refresh", json.dumps({"refresh_token": refresh}),
                           {"Content-Type": "application/json"})
        answer = json.loads(connection.getresponse().read())
        refresh = answer["refresh_token"]
        minted[i].append(answer["access_token"])
threads = [threading.Thread(target=chain, args=(i, r)) for i, r in enumerate(chains)]
for thread in threads: thread.start()
for thread in threads: thread.join()
for tokens in minted:
    print("\n".join(tokens))
PY
cat >"$WORK/tokens.lua" <<EOF
local next_id = 0
setup = function(thread)
    thread:set("id", next_id)
    next_id = next_id + 1
end
init = function(args)
    tokens = {}
    for line in io.lines("$WORK/tokens") do tokens[#tokens + 1] = line end
    at = id * math.floor(#tokens / 2)
end
request = function()
    at = at % #tokens + 1
    return wrk.format("GET", "$PATH_T", {["Authorization"] = "Bearer " .. tokens[at]})
end
EOF
: >"$WORK/one_token"
: >"$WORK/many_tokens"
for _ in $(seq 1 "$ROUNDS"); do
    load "$GATEWAY_PID" "${WRK[@]}" -H "Authorization: Bearer $TOKEN" \
        "http://127.0.0.1:$GATEWAY_PORT$PATH_T" >>"$WORK/one_token"
    load "$GATEWAY_PID" "${WRK[@]}" -s "$WORK/tokens.lua" "http://127.0.0.1:$GATEWAY_PORT$PATH_T" >>"$WORK/many_tokens"
done
ONE_TOKEN_RPS=$(median_of <"$WORK/one_token" | cut -d' ' -f1)
MANY_TOKENS_RPS=$(median_of <"$WORK/many_tokens" | cut -d' ' -f1)
MANY_TOKENS_RSS=$(rss_kib "$GATEWAY_PID")

echo "8: refresh on Postgres vs pgbench" >&2
psql -q "$PG_ADMIN" -c "CREATE DATABASE $PG_DB" >/dev/null
PG_URL="postgres://postgres@127.0.0.1:5432/$PG_DB"
mkdir -p "$WORK/pg-gateway"
cd "$WORK/pg-gateway"
RUST_LOG=warn "$TOLLGATE" --listen "127.0.0.1:$PG_GATEWAY_PORT" \
    --database-url "$PG_URL" --trusted-proxies 127.0.0.1/32 >"$WORK/pg-gateway.log" 2>&1 &
PG_GATEWAY_PID=$!
PIDS+=("$PG_GATEWAY_PID")
cd - >/dev/null
wait_for "http://127.0.0.1:$PG_GATEWAY_PORT/health"
post_json "http://127.0.0.1:$PG_GATEWAY_PORT/api/auth/register" "$credentials" >/dev/null
# One session per connection, each refreshing its own chain.
for _ in $(seq 1 16); do
    curl -s -X POST "http://127.0.0.1:$PG_GATEWAY_PORT/api/auth/login" -H 'content-type: application/json' \
        -H "X-Forwarded-For: 10.9.9.$((RANDOM % 250 + 1))" -d "$credentials" | json_field refresh_token
done >"$WORK/refresh_tokens"
cat >"$WORK/refresh.lua" <<EOF
local next_id = 0
setup = function(thread)
    thread:set("id", next_id)
    next_id = next_id + 1
end
init = function(args)
    local n = 0
    for line in io.lines("$WORK/refresh_tokens") do
        if n == id then token = line end
        n = n + 1
    end
end
request = function()
    return wrk.format("POST", "/api/auth/refresh", {["Content-Type"] = "application/json"},
        '{"refresh_token":"' .. token .. '"}')
end
response = function(status, headers, body)
    local fresh = body:match('"refresh_token":"([^"]+)"')
    if fresh then token = fresh end
end
EOF
read -r REFRESH_RPS REFRESH_P50 REFRESH_P99 _ <<<"$(load "$PG_GATEWAY_PID" -t16 -c16 -d"${DURATION}s" -s "$WORK/refresh.lua" "http://127.0.0.1:$PG_GATEWAY_PORT/api/auth/refresh")"

# pgbench runs the statements of one rotation (src/store/sessions.rs) in one
# transaction, each client on a session and tokens of its own.
psql -q "$PG_URL" >/dev/null <<'SQL'
INSERT INTO users (id, username, username_key, password_hash, roles, created_at)
    VALUES ('pgbench-user', 'pgbench', 'pgbench', 'x', '', 0);
INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at)
    SELECT 'pgbench-' || c, 'pgbench-user', 0, 0, 9999999999999 FROM generate_series(1, 16) c;
INSERT INTO refresh_tokens (token_hash, session_id, created_at)
    SELECT 'pgbench-' || c || '-' || n, 'pgbench-' || c, 0
    FROM generate_series(1, 16) c, generate_series(1, 1000) n;
SQL
cat >"$WORK/refresh.sql" <<'SQL'
\set n random(1, 1000)
\set c :client_id + 1
BEGIN;
UPDATE refresh_tokens SET use_count = use_count + 1, spent_at = COALESCE(spent_at, 1) WHERE token_hash = 'pgbench-' || :c || '-' || :n RETURNING session_id, spent_at, use_count;
SELECT s.user_id, s.expires_at, u.username, u.roles FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = 'pgbench-' || :c AND s.revoked_at IS NULL AND s.expires_at > 1 AND u.disabled_at IS NULL;
INSERT INTO refresh_tokens (token_hash, session_id, parent_hash, created_at) VALUES (md5(random()::text), 'pgbench-' || :c, 'pgbench-' || :c || '-' || :n, 1);
UPDATE sessions SET last_used_at = 1 WHERE id = 'pgbench-' || :c;
COMMIT;
SQL
PGBENCH_TPS=$(pgbench -n -M prepared -c16 -j2 -T"$DURATION" -f "$WORK/refresh.sql" "$PG_URL" 2>/dev/null \
    | awk '/^tps/ {printf "%.0f", $3; exit}')

ratio() { python3 -c "print(f'{$1 / $2:.2f}x')"; }
cat <<EOF

tollgate load benchmark, $(date -u +%Y-%m-%d), $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)),
wrk, nginx, upstream and tollgate all on this machine; ${DURATION}s per run, the
median of $ROUNDS interleaved rounds (the req/s range over the rounds in brackets).
CPU is the proxy's own processes (nginx: master and workers) per request.

| target | measurement | req/s | p50 ms | p99 ms | CPU µs/req | ratio (target) |
|---|---|---|---|---|---|---|
| - | nginx, plain keep-alive proxy | $NGINX_RPS ($NGINX_RANGE) | $NGINX_P50 | $NGINX_P99 | $NGINX_CPU | - |
| 1 | tollgate, bearer, 64 conn | $BEARER_RPS ($BEARER_RANGE) | $BEARER_P50 | $BEARER_P99 | $BEARER_CPU | $(ratio "$BEARER_RPS" "$NGINX_RPS") of nginx req/s (>= 1.0x); CPU $(ratio "$BEARER_CPU" "$NGINX_CPU") (<= 1.0x); p99 $(ratio "$BEARER_P99" "$NGINX_P99") (<= 1.5x) |
| - | nginx, access log to a file | $NGINX_LOGS_RPS ($NGINX_LOGS_RANGE) | $NGINX_LOGS_P50 | $NGINX_LOGS_P99 | $NGINX_LOGS_CPU | - |
| 2 | tollgate, bearer, info log to a file | $BEARER_LOGS_RPS ($BEARER_LOGS_RANGE) | $BEARER_LOGS_P50 | $BEARER_LOGS_P99 | $BEARER_LOGS_CPU | $(ratio "$BEARER_LOGS_RPS" "$NGINX_LOGS_RPS") of nginx with its log (>= 1.0x) |
| 3 | tollgate, access cookie, 64 conn | $COOKIE_RPS ($COOKIE_RANGE) | $COOKIE_P50 | $COOKIE_P99 | $COOKIE_CPU | $(ratio "$COOKIE_RPS" "$BEARER_RPS") of bearer (>= 0.95x) |
| 4 | tollgate resident memory under load | median ${RSS_MEDIAN} MiB, peak ${RSS_PEAK} MiB | | | | (<= 40 MiB) |
| 4 | with $IDLE idle connections open | $(mib "$GATEWAY_IDLE_RSS") MiB (+$(mib $((GATEWAY_IDLE_RSS - GATEWAY_BEFORE_RSS))) MiB; nginx +$(mib $((NGINX_IDLE_RSS - NGINX_BEFORE_RSS))) MiB) | | $IDLE_P99 | | (<= 64 MiB); p99 $(ratio "$IDLE_P99" "$BEARER_P99") of without (unchanged) |
| 4 | after they closed | $(mib "$GATEWAY_AFTER_RSS") MiB | | | | |
| 5 | bearer beside a 16-connection login flood | $FLOODED_RPS | $FLOODED_P50 | $FLOODED_P99 | | p99 $(ratio "$FLOODED_P99" "$BEARER_P99") of unflooded (< 2x) |
| 5 | logins/s during the flood (alone: $LOGIN_ALONE_RPS) | $LOGIN_RPS | | | | $(ratio "$LOGIN_RPS" "$LOGIN_IDEAL") of $CORES cores / ${VERIFY_MS} ms verify = $LOGIN_IDEAL/s; alone $(ratio "$LOGIN_ALONE_RPS" "$LOGIN_IDEAL") |
| 6 | WebSocket echo, 64 conn, messages/s | $WS_GATEWAY (direct: $WS_DIRECT) | | | | $(ratio "$WS_GATEWAY" "$WS_DIRECT") of direct (>= 0.9x) |
| 7 | $TOKENS distinct live tokens, 64 conn | $MANY_TOKENS_RPS (one token: $ONE_TOKEN_RPS) | | | | $(ratio "$MANY_TOKENS_RPS" "$ONE_TOKEN_RPS") of one token (>= 0.9x); RSS $(mib "$MANY_TOKENS_RSS") MiB (<= 64 MiB) |
| 8 | refresh on Postgres, 16 conn | $REFRESH_RPS | $REFRESH_P50 | $REFRESH_P99 | | $(ratio "$REFRESH_RPS" "$PGBENCH_TPS") of pgbench's $PGBENCH_TPS tps (>= 0.5x) |
EOF
