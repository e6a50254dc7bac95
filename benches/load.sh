#!/usr/bin/env bash
# The load benchmark of issue 6, in one command:
#
#     benches/load.sh [seconds per run, default 10]   (ROUNDS=3 by default)
#
# It installs what it needs (wrk and nginx from Debian's packages; pgbench
# comes with PostgreSQL), builds tollgate in release mode, and starts on
# loopback only:
#   - a static JSON upstream (nginx, one worker),
#   - nginx as a plain keep-alive reverse proxy in front of it (no auth),
#   - tollgate in front of the same upstream (EdDSA keys, default settings),
# then measures, side by side in one run:
#   1. authenticated GET through tollgate (bearer) vs nginx, 64 connections;
#   2. the same with the access cookie;
#   3. tollgate's resident memory under that load;
#   4. a login flood (16 connections) beside the proxied load;
#   5. refresh on Postgres vs pgbench running the same statements;
# and prints one table. Postgres must answer on 127.0.0.1:5432 (user postgres).
set -euo pipefail

DURATION="${1:-10}"
ROUNDS="${ROUNDS:-3}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d /tmp/tollgate-bench.XXXXXX)"
PG_ADMIN="postgres://postgres@127.0.0.1:5432/postgres"
PG_DB="tollgate_bench_$$"
PASSWORD="correct horse battery"
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -f "$WORK/upstream.pid" ] && kill "$(cat "$WORK/upstream.pid")" 2>/dev/null || true
    [ -f "$WORK/proxy.pid" ] && kill "$(cat "$WORK/proxy.pid")" 2>/dev/null || true
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

echo "building tollgate (release)" >&2
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin tollgate --example argon2_verify
TOLLGATE="$ROOT/target/release/tollgate"

UPSTREAM_PORT=$(free_port)
PROXY_PORT=$(free_port)
GATEWAY_PORT=$(free_port)
PG_GATEWAY_PORT=$(free_port)

cat >"$WORK/upstream.conf" <<EOF
worker_processes 1;
pid $WORK/upstream.pid;
error_log $WORK/upstream.err warn;
events { worker_connections 4096; }
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
cat >"$WORK/proxy.conf" <<EOF
worker_processes auto;
pid $WORK/proxy.pid;
error_log $WORK/proxy.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    upstream api { server 127.0.0.1:$UPSTREAM_PORT; keepalive 128; }
    server {
        listen 127.0.0.1:$PROXY_PORT backlog=4096;
        keepalive_requests 1000000;
        location / {
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
nginx -c "$WORK/upstream.conf" -p "$WORK"
nginx -c "$WORK/proxy.conf" -p "$WORK"
wait_for "http://127.0.0.1:$PROXY_PORT/api/tickets"

# The gateway: default settings, EdDSA keys, the embedded SQLite store. The
# loopback peer is a trusted proxy so the login flood can spread itself over
# many client addresses with X-Forwarded-For, as clients behind a load
# balancer do; the throttle would otherwise (rightly) stop it.
mkdir -p "$WORK/gateway"
(cd "$WORK/gateway" && exec "$TOLLGATE" --listen "127.0.0.1:$GATEWAY_PORT" \
    --upstream "http://127.0.0.1:$UPSTREAM_PORT" --trusted-proxies 127.0.0.1/32 \
    >"$WORK/gateway.log" 2>&1) &
GATEWAY_PID=$!
PIDS+=("$GATEWAY_PID")
wait_for "http://127.0.0.1:$GATEWAY_PORT/health"

post_json() {
    curl -s -X POST "$1" -H 'content-type: application/json' -d "$2"
}
json_field() {
    python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"
}
credentials="{\"username\":\"bench\",\"password\":\"$PASSWORD\"}"
post_json "http://127.0.0.1:$GATEWAY_PORT/api/auth/register" "$credentials" >/dev/null
TOKEN=$(post_json "http://127.0.0.1:$GATEWAY_PORT/api/auth/login" "$credentials" | json_field access_token)

# wrk with latency; prints "req/s p50_ms p99_ms" and fails on any non-2xx answer.
load() {
    local out
    out=$(wrk --latency "$@")
    if grep -q "Non-2xx" <<<"$out"; then
        echo "non-2xx answers during: wrk $*" >&2
        echo "$out" >&2
        exit 1
    fi
    python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
def ms(label):
    value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
print(f"{rps:.0f} {ms('50%'):.2f} {ms('99%'):.2f}")
PY
}

# Samples the gateway's resident set every 200 ms, in KiB.
rss_sampler() {
    while kill -0 "$GATEWAY_PID" 2>/dev/null; do
        awk '/VmRSS/ {print $2}' "/proc/$GATEWAY_PID/status" >>"$WORK/rss"
        sleep 0.2
    done
}

URL_GATEWAY="http://127.0.0.1:$GATEWAY_PORT/api/tickets"
URL_PROXY="http://127.0.0.1:$PROXY_PORT/api/tickets"
WRK=(-t2 -c64 -d"${DURATION}s")

echo "warming up" >&2
wrk -t2 -c64 -d2s "$URL_PROXY" >/dev/null
wrk -t2 -c64 -d2s -H "Authorization: Bearer $TOKEN" "$URL_GATEWAY" >/dev/null

# The median of three interleaved rounds: this machine's throughput drifts
# by 10% and more from one run to the next.
median_of() {
    python3 -c "
import statistics, sys
rows = [list(map(float, line.split())) for line in sys.stdin if line.strip()]
rps, p50, p99 = (statistics.median(column) for column in zip(*rows))
print(f'{rps:.0f} {p50:.2f} {p99:.2f}')"
}
echo "1-3: proxied GET, nginx vs tollgate (bearer, cookie), $ROUNDS interleaved rounds" >&2
rss_sampler &
SAMPLER=$!
: >"$WORK/nginx" && : >"$WORK/bearer" && : >"$WORK/cookie"
run_one() {
    case "$1" in
        nginx) load "${WRK[@]}" "$URL_PROXY" >>"$WORK/nginx" ;;
        bearer) load "${WRK[@]}" -H "Authorization: Bearer $TOKEN" "$URL_GATEWAY" >>"$WORK/bearer" ;;
        cookie) load "${WRK[@]}" -H "Cookie: tollgate_access=$TOKEN" "$URL_GATEWAY" >>"$WORK/cookie" ;;
    esac
}
# Each round starts with another contender, so that none always runs first
# (or last) on a machine whose speed drifts under sustained load.
ORDER=(nginx bearer cookie)
for round in $(seq 0 $((ROUNDS - 1))); do
    for i in 0 1 2; do
        run_one "${ORDER[$(((round + i) % 3))]}"
    done
done
kill "$SAMPLER" 2>/dev/null || true
read -r NGINX_RPS NGINX_P50 NGINX_P99 <<<"$(median_of <"$WORK/nginx")"
read -r BEARER_RPS BEARER_P50 BEARER_P99 <<<"$(median_of <"$WORK/bearer")"
read -r COOKIE_RPS COOKIE_P50 COOKIE_P99 <<<"$(median_of <"$WORK/cookie")"
read -r RSS_MEDIAN RSS_PEAK <<<"$(python3 -c "
import statistics
samples = [int(line) / 1024 for line in open('$WORK/rss') if line.strip()]
print(f'{statistics.median(samples):.1f} {max(samples):.1f}')")"

echo "4: login flood beside the proxied load" >&2
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
VERIFY_MS=$("$ROOT/target/release/examples/argon2_verify")
CORES=$(nproc)
read -r LOGIN_ALONE_RPS _ _ <<<"$(load -t2 -c16 -d"${DURATION}s" -s "$WORK/login.lua" "http://127.0.0.1:$GATEWAY_PORT/api/auth/login")"
load -t2 -c16 -d"$((DURATION + 2))s" -s "$WORK/login.lua" "http://127.0.0.1:$GATEWAY_PORT/api/auth/login" >"$WORK/flood" &
FLOOD=$!
sleep 1
read -r FLOODED_RPS FLOODED_P50 FLOODED_P99 <<<"$(load "${WRK[@]}" -H "Authorization: Bearer $TOKEN" "$URL_GATEWAY")"
wait "$FLOOD"
read -r LOGIN_RPS _ _ <"$WORK/flood"
LOGIN_IDEAL=$(python3 -c "print(f'{$CORES * 1000 / $VERIFY_MS:.1f}')")

echo "5: refresh on Postgres vs pgbench" >&2
psql -q "$PG_ADMIN" -c "CREATE DATABASE $PG_DB" >/dev/null
PG_URL="postgres://postgres@127.0.0.1:5432/$PG_DB"
mkdir -p "$WORK/pg-gateway"
(cd "$WORK/pg-gateway" && exec "$TOLLGATE" --listen "127.0.0.1:$PG_GATEWAY_PORT" \
    --database-url "$PG_URL" --trusted-proxies 127.0.0.1/32 >"$WORK/pg-gateway.log" 2>&1) &
PIDS+=("$!")
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
read -r REFRESH_RPS REFRESH_P50 REFRESH_P99 <<<"$(load -t16 -c16 -d"${DURATION}s" -s "$WORK/refresh.lua" "http://127.0.0.1:$PG_GATEWAY_PORT/api/auth/refresh")"

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
wrk, nginx, upstream and tollgate all on this machine; ${DURATION}s per run,
targets 1-2 the median of $ROUNDS interleaved rounds.

| target | measurement | req/s | p50 ms | p99 ms | ratio (target) |
|---|---|---|---|---|---|
| - | nginx, plain keep-alive proxy | $NGINX_RPS | $NGINX_P50 | $NGINX_P99 | - |
| 1 | tollgate, bearer, 64 conn | $BEARER_RPS | $BEARER_P50 | $BEARER_P99 | $(ratio "$BEARER_RPS" "$NGINX_RPS") of nginx req/s (>= 1.0x); p99 $(ratio "$BEARER_P99" "$NGINX_P99") of nginx (<= 1.5x) |
| 2 | tollgate, access cookie, 64 conn | $COOKIE_RPS | $COOKIE_P50 | $COOKIE_P99 | $(ratio "$COOKIE_RPS" "$BEARER_RPS") of bearer (>= 0.95x) |
| 3 | tollgate resident memory under load | median ${RSS_MEDIAN} MiB, peak ${RSS_PEAK} MiB | | | (<= 40 MiB) |
| 4 | bearer beside a 16-connection login flood | $FLOODED_RPS | $FLOODED_P50 | $FLOODED_P99 | p99 $(ratio "$FLOODED_P99" "$BEARER_P99") of unflooded (< 2x) |
| 4 | logins/s during the flood (alone: $LOGIN_ALONE_RPS) | $LOGIN_RPS | | | $(ratio "$LOGIN_RPS" "$LOGIN_IDEAL") of $CORES cores / ${VERIFY_MS} ms verify = $LOGIN_IDEAL/s (within 10%); alone $(ratio "$LOGIN_ALONE_RPS" "$LOGIN_IDEAL") |
| 5 | refresh on Postgres, 16 conn | $REFRESH_RPS | $REFRESH_P50 | $REFRESH_P99 | $(ratio "$REFRESH_RPS" "$PGBENCH_TPS") of pgbench's $PGBENCH_TPS tps (>= 0.5x) |
EOF
