#!/usr/bin/env bash
# A Ferrocast edge next to plain nginx, in one run, on loopback:
#   1. playlist requests/s: the edge's LL-HLS playlist vs nginx serving a snapshot of the
#      same playlist bytes as a static file (wrk -t2 -c100 --latency),
#   2. segment requests/s: the edge vs nginx serving the same seg-N.m4s as a static file,
#   3. concurrent LL-HLS viewers on one edge (`ferrocast bench view --mode ll`): behind-live
#      and part-request p99, errors, stalls, edge RSS per viewer, CPU of edge and bench tool,
#   4. part propagation origin -> edge: p50/p99 from the edge's
#      ferrocast_edge_propagation_delay_seconds histogram over a window,
#   5. the request-rate ceiling of this machine at each viewer count (phase `ceiling`,
#      not in the default PHASES): wrk -c<viewers> (and h2load -c<viewers> -m2 over h2c
#      when h2load is installed: apt-get install nghttp2-client) against nginx serving
#      the playlist as a static file and against the edge's playlist without blocking,
#      next to the request rate that many LL-HLS viewers need (a blocking reload and a
#      part per part).
# Origin and edge run as separate processes (QUIC relay with a development cluster CA),
# fed by one ~3 Mbps publisher (`ferrocast bench publish --file`).
#
# Every measurement is repeated REPEAT times; the script prints each run and the median.
# The load average is logged before each measurement: the machine may be shared.
#
# Knobs (environment):
#   REPEAT (3)            runs per measurement
#   WRK_SECS (10)         seconds per wrk run
#   VIEWERS ("1000 3000 10000")  viewer counts for phase 3
#   VIEW_SECS (50)        seconds per viewer run (ramp included)
#   RAMP (20)             seconds over which viewers join
#   PROP_SECS (30)        propagation window
#   NGINX_WORKERS (2)     nginx worker processes (ferrocast runs 2 tokio worker threads
#                         on this 2-core machine; tokio's default is one per core)
#   PHASES ("prop playlist segment viewers")  which phases to run ("ceiling" too)
#   PERF (0)              1: sample the edge with `perf record -e cpu-clock` during the
#                         edge's wrk runs and the largest viewer run, print the top symbols
#   CLIP_KBPS (2900)      video bitrate of the published clip (~3 Mbps with audio); lower
#                         it to separate per-viewer request cost from bytes copied
#   VIEW_HTTP2 (0)        1: each bench viewer uses one HTTP/2 (h2c) connection for all
#                         its requests (as browsers do) instead of two HTTP/1.1 ones; the
#                         edge then holds one socket per viewer, which is what lets 10,000
#                         viewers fit under a 20,000-descriptor limit
#   FRESH_EDGE (1)        1: restart the edge before each viewer run (independent runs,
#                         RSS growth measured from a fresh process); 0: one edge throughout
#   KEEP (0)              1: keep the temp dir (logs, JSON, configs)
#   FERROCAST (unset)     a ferrocast binary to measure instead of building this tree
#                         (e.g. an older build, for before/after figures)
#   EDGE_ARGS (unset)     extra flags for the edge, e.g. "--http-io-threads 2"
# Loopback only; every process started here is stopped by its own PID at exit.
set -euo pipefail

REPEAT=${REPEAT:-3}
WRK_SECS=${WRK_SECS:-10}
VIEWERS=${VIEWERS:-"1000 3000 10000"}
VIEW_SECS=${VIEW_SECS:-50}
RAMP=${RAMP:-20}
PROP_SECS=${PROP_SECS:-30}
NGINX_WORKERS=${NGINX_WORKERS:-2}
PHASES=${PHASES:-"prop playlist segment viewers"}
PERF=${PERF:-0}
FRESH_EDGE=${FRESH_EDGE:-1}
VIEW_HTTP2=${VIEW_HTTP2:-0}
CLIP_KBPS=${CLIP_KBPS:-2900}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d /tmp/ferrocast-edge-vs-nginx.XXXXXX)
PIDS=()

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

# Forget a PID once it has been waited for, so that cleanup never signals a reused PID.
forget() {
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ "${KEEP:-0}" == 1 ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

has_phase() { [[ " $PHASES " == *" $1 "* ]]; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
free_udp_port() {
    python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The viewer bench keeps two connections per viewer: it needs file descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
FD_LIMIT=$(ulimit -n)

# --- what we need ------------------------------------------------------------------
for tool in nginx wrk ffmpeg curl python3; do
    command -v "$tool" >/dev/null || {
        log "$tool missing: run bench/scripts/compare-nginx.sh once (it installs nginx, wrk, ffmpeg) or apt-get install it"
        exit 1
    }
done
[[ $PERF == 1 ]] && ! command -v perf >/dev/null && { log "PERF=1 needs perf"; exit 1; }

if [[ -n ${FERROCAST:-} ]]; then
    log "using $FERROCAST (not building)"
else
    log "building ferrocast (release)"
    (cd "$ROOT" && cargo build --release -q -p ferrocast-cli)
    FERROCAST=${CARGO_TARGET_DIR:-$ROOT/target}/release/ferrocast
fi

CLIP=$TMP/clip.flv
log "encoding the clip (${CLIP_KBPS} kbit/s video + 128 kbit/s audio)"
ffmpeg -nostdin -loglevel error -y \
    -f lavfi -i "testsrc2=size=1280x720:rate=30" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -t 10 -c:v libx264 -preset veryfast -tune zerolatency -pix_fmt yuv420p \
    -b:v "${CLIP_KBPS}k" -minrate "${CLIP_KBPS}k" -maxrate "${CLIP_KBPS}k" -bufsize "${CLIP_KBPS}k" -x264-params nal-hrd=cbr \
    -g 60 -keyint_min 60 -sc_threshold 0 \
    -c:a aac -b:a 128k -f flv "$CLIP"

# --- helpers ---------------------------------------------------------------------------
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
now_s() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.6f\", $* }"; }
HZ=$(getconf CLK_TCK)
median() { printf '%s\n' "$@" | python3 -c '
import sys, statistics
v = [float(x) for x in sys.stdin.read().split() if x not in ("nan", "")]
print("%.6g" % statistics.median(v) if v else "nan")'; }

wait_http() { # URL, seconds
    local deadline=$(($(date +%s) + $2))
    until curl -fs -o /dev/null --max-time 1 "$1"; do
        (($(date +%s) < deadline)) || { log "timeout waiting for $1"; return 1; }
        sleep 0.2
    done
}

# wrk against a URL while sampling the server's CPU -> "req/s p99_ms non2xx errors cpu%"
wrk_run() { # url server_pid [perf-tag]
    local out rps p99 non2xx sockerr c0 c1 t0 t1 perf_pid=""
    if [[ $PERF == 1 && -n ${3:-} ]]; then
        perf record -q -e cpu-clock -F 999 -g -p "$2" -o "$TMP/perf-$3.data" -- sleep "$WRK_SECS" \
            >/dev/null 2>&1 &
        perf_pid=$!
    fi
    c0=$(cpu_ticks "$2")
    t0=$(now_s)
    out=$(wrk -t2 -c"${WRK_CONNS:-100}" -d"${WRK_SECS}s" --timeout 5s --latency "$1" 2>&1)
    c1=$(cpu_ticks "$2")
    t1=$(now_s)
    [[ -n $perf_pid ]] && wait "$perf_pid" 2>/dev/null || true
    echo "$out" >>"$TMP/wrk.log"
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    p99=$(awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }
        print v }' <<<"$out")
    non2xx=$(awk '/Non-2xx/ { print $NF }' <<<"$out")
    sockerr=$(awk '/Socket errors/ { n = 0; for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) n += $i; print n }' <<<"$out")
    echo "${rps:-nan} ${p99:-nan} ${non2xx:-0} ${sockerr:-0} $(calc "($c1 - $c0) / $HZ / ($t1 - $t0) * 100")"
}

perf_top() { # tag
    [[ $PERF == 1 && -s $TMP/perf-$1.data ]] || return 0
    echo "perf (cpu-clock) of the edge during $1, top symbols (self):"
    # awk, not head: no SIGPIPE under pipefail
    perf report -q --stdio --no-children --sort symbol -i "$TMP/perf-$1.data" 2>/dev/null |
        awk '/^ +[0-9.]+%/ && n++ < 25 { printf "  %8s %s %s\n", $1, $2, $3 }' || true
}

# --- origin + edge + one publisher ------------------------------------------------------
"$FERROCAST" certs "$TMP/tls" >/dev/null
O_RTMP=$(free_port)
O_HTTP=$(free_port)
O_QUIC=$(free_udp_port)
E_HTTP=$(free_port)
O_ADMIN=$(free_port)
E_ADMIN=$(free_port) # /metrics is on the admin port
log "starting origin (rtmp $O_RTMP, http $O_HTTP, quic $O_QUIC) and edge (http $E_HTTP)"
RUST_LOG=warn "$FERROCAST" origin --tls-dir "$TMP/tls" --rtmp-listen "127.0.0.1:$O_RTMP" \
    --http-listen "127.0.0.1:$O_HTTP" --admin-listen "127.0.0.1:$O_ADMIN" --quic-listen "127.0.0.1:$O_QUIC" >"$TMP/origin.log" 2>&1 &
O_PID=$!
PIDS+=("$O_PID")
wait_http "http://127.0.0.1:$O_HTTP/readyz" 20
start_edge() {
    RUST_LOG=warn "$FERROCAST" edge --tls-dir "$TMP/tls" --origin "127.0.0.1:$O_QUIC" \
        --http-listen "127.0.0.1:$E_HTTP" --admin-listen "127.0.0.1:$E_ADMIN" --idle-unsubscribe 600 ${EDGE_ARGS:-} >>"$TMP/edge.log" 2>&1 &
    E_PID=$!
    PIDS+=("$E_PID")
    wait_http "http://127.0.0.1:$E_HTTP/readyz" 20
}
start_edge

"$FERROCAST" bench publish --url "rtmp://127.0.0.1:$O_RTMP/live" --streams 1 --key-prefix edge \
    --file "$CLIP" --duration 7200 >"$TMP/publish.log" 2>&1 &
PUB_PID=$!
PIDS+=("$PUB_PID")
EDGE=http://127.0.0.1:$E_HTTP
EDGE_ADMIN=http://127.0.0.1:$E_ADMIN
PL_URL=$EDGE/live/edge-0/index.m3u8
log "waiting for $PL_URL"
deadline=$(($(date +%s) + 30))
until curl -fs --max-time 2 "$PL_URL" 2>/dev/null | grep -q '^seg-[0-9]*\.m4s$'; do
    (($(date +%s) < deadline)) || { log "the edge never listed a segment"; tail "$TMP"/*.log >&2; exit 1; }
    sleep 0.5
done
sleep 3

# --- nginx: plain static files ---------------------------------------------------------
N_HTTP=$(free_port)
N_H2C=$(free_port)
ND=$TMP/nginx
mkdir -p "$ND/www/live/edge-0" "$ND/tmp"
# master + NGINX_WORKERS workers (master_process off would run a single worker, i.e.
# one core against ferrocast's two). The master is our child; it stops its workers.
cat >"$ND/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $NGINX_WORKERS;
pid $ND/nginx.pid;
error_log $ND/error.log warn;
worker_rlimit_nofile $FD_LIMIT;
events { worker_connections $(((FD_LIMIT - 100) / NGINX_WORKERS)); }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path $ND/tmp/body;
    proxy_temp_path $ND/tmp/proxy;
    fastcgi_temp_path $ND/tmp/fastcgi;
    uwsgi_temp_path $ND/tmp/uwsgi;
    scgi_temp_path $ND/tmp/scgi;
    types { application/vnd.apple.mpegurl m3u8; video/iso.segment m4s; }
    server {
        listen 127.0.0.1:$N_HTTP;
        listen 127.0.0.1:$N_H2C http2;
        root $ND/www;
        # The same response headers the edge sends (CORS, Cache-Control).
        location ~ \.m3u8\$ { add_header Cache-Control "max-age=1"; add_header Access-Control-Allow-Origin "*"; }
        location ~ \.m4s\$ { add_header Cache-Control "max-age=31536000, immutable"; add_header Access-Control-Allow-Origin "*"; }
    }
}
EOF
curl -fs "$PL_URL" >"$ND/www/live/edge-0/index.m3u8"
# Running as root, the workers drop to `nobody`: let them reach the files (and only them).
chmod 711 "$TMP" "$ND"
chmod -R a+rX "$ND/www"
nginx -p "$ND" -e "$ND/error.log" -c "$ND/nginx.conf" >"$ND/stdout.log" 2>&1 &
N_PID=$!
PIDS+=("$N_PID")
NGINX=http://127.0.0.1:$N_HTTP
wait_http "$NGINX/live/edge-0/index.m3u8" 10 || { cat "$ND/error.log" >&2; exit 1; }
nginx_cpu_pid() { echo "$N_PID"; } # master; workers summed below
nginx_ticks() { # master + workers
    local t=0 p
    for p in $N_PID $(cat "/proc/$N_PID/task/$N_PID/children" 2>/dev/null); do
        t=$((t + $(cpu_ticks "$p")))
    done
    echo "$t"
}

RESULTS=$TMP/results.txt
: >"$RESULTS"
put() { echo "$*" >>"$RESULTS"; }
get_all() { awk -v k="$1" '$1 == k { print $2 }' "$RESULTS"; }
med() { median $(get_all "$1"); }

# wrk against nginx with CPU summed over master and workers.
wrk_nginx() { # url -> same fields as wrk_run
    local a b t0 t1 r
    a=$(nginx_ticks)
    t0=$(now_s)
    r=$(wrk_run "$1" "$N_PID")
    b=$(nginx_ticks)
    t1=$(now_s)
    read -r rps p99 n2 se _ <<<"$r"
    echo "$rps $p99 $n2 $se $(calc "($b - $a) / $HZ / ($t1 - $t0) * 100")"
}

record_wrk() { # key fields...
    local key=$1 rps=$2 p99=$3 n2=$4 se=$5 cpu=$6
    put "$key.rps $rps"
    put "$key.p99 $p99"
    put "$key.cpu $cpu"
    put "$key.bad $((n2 + se))"
    log "  $key: $rps req/s, p99 $p99 ms, non-2xx+socket errors $((n2 + se)), server CPU $(printf %.0f "$cpu") %"
}

# --- 4. propagation (first: the quietest moment of the run) --------------------------------
cache_bytes() { # bytes held by the edge's object cache
    curl -fs --max-time 2 "$EDGE_ADMIN/metrics" | awk '/^ferrocast_edge_cache_size_bytes / { print $2; f = 1 } END { if (!f) print 0 }'
}
metric_buckets() { # -> "le count" lines
    curl -fs --max-time 2 "$EDGE_ADMIN/metrics" |
        awk '/^ferrocast_edge_propagation_delay_seconds_bucket/ {
            match($0, /le="[^"]+"/); le = substr($0, RSTART + 4, RLENGTH - 5); print le, $NF }'
}
quantiles() { # before-file after-file -> "n p50_ms p99_ms p50_bucket p99_bucket"
    python3 - "$1" "$2" <<'EOF'
import sys
def read(p):
    d = {}
    for line in open(p):
        le, n = line.split()
        d[le] = float(n)
    return d
a, b = read(sys.argv[1]), read(sys.argv[2])
bounds = sorted(b, key=lambda s: float("inf") if s == "+Inf" else float(s))
cum = [(float("inf") if le == "+Inf" else float(le), b[le] - a.get(le, 0)) for le in bounds]
n = cum[-1][1]
def q(p):
    if n == 0:
        return float("nan"), float("nan")
    want, lo, prev = p * n, 0.0, 0.0
    for ub, c in cum:
        if c >= want:
            if ub == float("inf"):
                return lo * 1000, lo * 1000
            # linear within the bucket, as Prometheus' histogram_quantile does
            return (lo + (ub - lo) * (want - prev) / max(c - prev, 1e-9)) * 1000, ub * 1000
        lo, prev = ub, c
    return float("nan"), float("nan")
p50, b50 = q(0.5)
p99, b99 = q(0.99)
print("%d %.2f %.2f %g %g" % (n, p50, p99, b50, b99))
EOF
}
if has_phase prop; then
    log "phase 4: propagation origin -> edge over ${PROP_SECS}s x $REPEAT (one LL viewer keeps the stream subscribed)"
    for r in $(seq "$REPEAT"); do
        log "  load $(load)"
        "$FERROCAST" bench view --url "$PL_URL" --viewers 1 --mode ll --duration "$((PROP_SECS + 2))" \
            >/dev/null 2>&1 &
        vp=$!
        PIDS+=("$vp")
        metric_buckets >"$TMP/prop-before"
        sleep "$PROP_SECS"
        metric_buckets >"$TMP/prop-after"
        wait "$vp" 2>/dev/null || true
        forget "$vp"
        read -r n p50 p99 b50 b99 <<<"$(quantiles "$TMP/prop-before" "$TMP/prop-after")"
        put "prop.n $n"
        put "prop.p50 $p50"
        put "prop.p99 $p99"
        put "prop.b50 $b50"
        put "prop.b99 $b99"
        log "  run $r: $n objects, p50 $p50 ms (bucket <= $b50 ms), p99 $p99 ms (bucket <= $b99 ms)"
    done
fi

# --- 1. playlist --------------------------------------------------------------------------
if has_phase playlist; then
    log "phase 1: playlist req/s, edge vs nginx static ($REPEAT x ${WRK_SECS}s each, order alternating)"
    for r in $(seq "$REPEAT"); do
        curl -fs "$PL_URL" >"$ND/www/live/edge-0/index.m3u8.new"
        chmod a+r "$ND/www/live/edge-0/index.m3u8.new"
        mv "$ND/www/live/edge-0/index.m3u8.new" "$ND/www/live/edge-0/index.m3u8"
        put "pl.bytes $(wc -c <"$ND/www/live/edge-0/index.m3u8")"
        for who in $( ((r % 2)) && echo "edge nginx" || echo "nginx edge"); do
            log "  load $(load) before $who"
            if [[ $who == edge ]]; then
                record_wrk pl.edge $(wrk_run "$PL_URL" "$E_PID" "playlist-$r")
            else
                record_wrk pl.nginx $(wrk_nginx "$NGINX/live/edge-0/index.m3u8")
            fi
        done
    done
fi

# --- 2. segment ---------------------------------------------------------------------------
if has_phase segment; then
    log "phase 2: segment req/s, edge vs nginx static ($REPEAT x ${WRK_SECS}s each, order alternating)"
    for r in $(seq "$REPEAT"); do
        # The newest complete segment: it stays in the edge's window (10 x 2 s) for both runs.
        seg=$(curl -fs "$PL_URL" | grep -E '^seg-[0-9]+\.m4s$' | tail -n 1)
        curl -fs "$EDGE/live/edge-0/$seg" -o "$ND/www/live/edge-0/$seg"
        chmod a+r "$ND/www/live/edge-0/$seg"
        put "seg.bytes $(wc -c <"$ND/www/live/edge-0/$seg")"
        for who in $( ((r % 2)) && echo "edge nginx" || echo "nginx edge"); do
            log "  load $(load) before $who ($seg)"
            if [[ $who == edge ]]; then
                record_wrk seg.edge $(wrk_run "$EDGE/live/edge-0/$seg" "$E_PID" "segment-$r")
            else
                record_wrk seg.nginx $(wrk_nginx "$NGINX/live/edge-0/$seg")
            fi
        done
    done
fi
# --- 5. the machine's request-rate ceiling at the viewer counts ----------------------------
# h2load over h2c -> "req/s p99_ms": -m2, a viewer's blocking reload and part in flight at once.
# A request count, not a duration (-D): with thousands of connections h2load's timed mode
# was seen to keep a few hundred of them going for many minutes; bounded anyway.
h2load_run() { # url conns
    local out n=$((WRK_SECS * 50000 / $2 * $2))
    ((n < $2 * 10)) && n=$(($2 * 10))
    out=$(timeout $((WRK_SECS * 6 + 30)) h2load -t2 -c"$2" -m2 -n"$n" "$1" 2>&1) || true
    echo "$out" >>"$TMP/h2load.log"
    awk '/^finished in/ { rps = $4 } /^status codes:/ { ok = $3 }
        END { printf "%s %s\n", rps ? rps : "nan", ok ? ok : 0 }' <<<"$out"
}
if has_phase ceiling; then
    # Parts per second of the stream, from the newest complete segment of the playlist.
    pps=$(curl -fs "$PL_URL" | awk '/^#EXT-X-PART:/ { n++ } /^#EXTINF:/ { d = $0; sub(/^#EXTINF:/, "", d); sub(/,.*/, "", d); last_n = n; last_d = d; n = 0 }
        END { if (last_d > 0) printf "%.3f", last_n / last_d; else print "nan" }')
    log "phase 5: request-rate ceiling at each viewer count ($pps parts/s: an LL viewer makes $(calc "2 * $pps") req/s)"
    for v in $VIEWERS; do
        ((v + 200 > FD_LIMIT)) && { log "  $v connections: over the descriptor limit $FD_LIMIT, skipped"; continue; }
        put "ceil.$v.need $(calc "2 * $pps * $v")"
        for who in nginx edge; do
            log "  load $(load) before $who, $v connections"
            if [[ $who == edge ]]; then
                read -r rps p99 n2 se cpu <<<"$(WRK_CONNS=$v wrk_run "$PL_URL?_HLS_skip=YES" "$E_PID")"
            else
                read -r rps p99 n2 se cpu <<<"$(WRK_CONNS=$v wrk_nginx "$NGINX/live/edge-0/index.m3u8")"
            fi
            put "ceil.$v.$who.h1 $rps"
            put "ceil.$v.$who.h1bad $((n2 + se))"
            log "    $who HTTP/1.1 (wrk -c$v): $rps req/s, p99 $p99 ms, non-2xx+socket errors $((n2 + se))"
            if command -v h2load >/dev/null; then
                sleep 2
                if [[ $who == edge ]]; then
                    read -r rps ok <<<"$(h2load_run "$PL_URL?_HLS_skip=YES" "$v")"
                else
                    read -r rps ok <<<"$(h2load_run "http://127.0.0.1:$N_H2C/live/edge-0/index.m3u8" "$v")"
                fi
                put "ceil.$v.$who.h2 $rps"
                log "    $who h2c (h2load -c$v -m2): $rps req/s, $ok 2xx"
            fi
            sleep 3
        done
    done
fi

kill "$N_PID" 2>/dev/null && wait "$N_PID" 2>/dev/null || true
forget "$N_PID"

# --- 3. concurrent LL-HLS viewers -----------------------------------------------------------
# One bench process holds 2 sockets per viewer; split the viewers over processes so that
# each stays well inside its descriptor limit.
CONNS_PER_VIEWER=$([[ $VIEW_HTTP2 == 1 ]] && echo 1 || echo 2)
PER_PROC=$(((FD_LIMIT - 500) / CONNS_PER_VIEWER))
((PER_PROC > 5000)) && PER_PROC=5000
combine() { # json files -> one line of figures
    python3 - "$@" <<'EOF'
import json, sys
rs = [json.load(open(p)) for p in sys.argv[1:]]
def worst(get):
    v = [get(r) for r in rs]
    v = [x for x in v if x is not None]
    return max(v) if v else float("nan")
p = lambda r, k: (r.get("latency_behind_live") or {}).get(k)
part = lambda r, k: ((r.get("by_kind", {}).get("part") or {}).get("latency") or {}).get(k)
hint = lambda r, k: ((r.get("by_kind", {}).get("preload_hint") or {}).get("latency") or {}).get(k)
causes = {}
for r in rs:
    for k, n in r.get("errors_by_cause", {}).items():
        causes[k] = causes.get(k, 0) + n
print(sum(r["viewers_with_media"] for r in rs),
      sum(r["requests"] for r in rs), sum(r["errors"] for r in rs),
      sum(r["stalls"] for r in rs), sum(r["rejoins"] for r in rs),
      "%.1f" % worst(lambda r: p(r, "p50_ms")), "%.1f" % worst(lambda r: p(r, "p99_ms")),
      "%.1f" % worst(lambda r: part(r, "p99_ms")), "%.1f" % worst(lambda r: hint(r, "p99_ms")),
      ",".join("%s=%d" % kv for kv in sorted(causes.items())) or "-")
EOF
}
steady() { # from_second logs... -> "median_ms max_ms" of per-second p99 behind live
    local from=$1
    shift
    awk -v from="$from" '/behind live p50/ {
            t = $2; sub(/s\]/, "", t); gsub(/\[/, "", t); if (t + 0 < from) next
            v = $NF; sub(/s$/, "", v); print v * 1000 }' "$@" |
        python3 -c '
import sys, statistics
v = [float(x) for x in sys.stdin.read().split()]
print("%.0f %.0f" % (statistics.median(v), max(v)) if v else "nan nan")'
}
if has_phase viewers; then
    log "phase 3: LL-HLS viewers on one edge (${VIEW_SECS}s runs, ${RAMP}s ramp; fd limit $FD_LIMIT per process, <= $PER_PROC viewers per bench process)"
    biggest=$(printf '%s\n' $VIEWERS | sort -n | tail -n 1)
    for v in $VIEWERS; do
        for r in $(seq "$REPEAT"); do
            if [[ $FRESH_EDGE == 1 ]]; then
                # A fresh edge per run: RSS growth is then not hidden by what the
                # allocator kept from earlier runs, and runs are independent.
                kill "$E_PID" 2>/dev/null && wait "$E_PID" 2>/dev/null || true
                forget "$E_PID"
                start_edge
                curl -fs --max-time 10 -o /dev/null "$PL_URL" || true # subscribe
                sleep 6 # the stream state and cache settle (parts and segments arrive)
            else
                sleep 5 # let the previous run's connections close
            fi
            log "  load $(load) before $v viewers, run $r"
            nproc_=$(((v + PER_PROC - 1) / PER_PROC))
            rss0=$(rss_kib "$E_PID")
            cache0=$(cache_bytes)
            e0=$(cpu_ticks "$E_PID")
            o0=$(cpu_ticks "$O_PID")
            t0=$(now_s)
            vpids=()
            files=()
            for i in $(seq "$nproc_"); do
                n=$((v / nproc_ + (i <= v % nproc_ ? 1 : 0)))
                f=$TMP/view-$v-$r-$i.json
                files+=("$f")
                "$FERROCAST" bench view --url "$PL_URL" --viewers "$n" --mode ll --ramp "$RAMP" \
                    --duration "$VIEW_SECS" $([[ $VIEW_HTTP2 == 1 ]] && echo --http2) --json >"$f" 2>"$TMP/view-$v-$r-$i.log" &
                vpids+=($!)
                PIDS+=($!)
            done
            perf_pid=""
            if [[ $PERF == 1 && $v == "$biggest" && $r == 1 ]]; then
                (sleep "$RAMP" && exec perf record -q -e cpu-clock -F 999 -g -p "$E_PID" \
                    -o "$TMP/perf-viewers-$v.data" -- sleep 10) >/dev/null 2>&1 &
                perf_pid=$!
                PIDS+=("$perf_pid")
            fi
            # Sample while the viewers run: peak edge RSS, and the bench tool's CPU just
            # before it exits (its /proc entry is gone afterwards).
            peak=$rss0
            cache_peak=$cache0
            peak_fds=0
            b_ticks=0
            declare -A last=()
            while :; do
                alive=0
                for p in "${vpids[@]}"; do
                    if [[ -e /proc/$p/stat ]]; then
                        alive=1
                        last[$p]=$(cpu_ticks "$p" 2>/dev/null || echo "${last[$p]:-0}")
                    fi
                done
                cur=$(rss_kib "$E_PID")
                ((cur > peak)) && { peak=$cur; cache_peak=$(cache_bytes); }
                fds=$(find /proc/"$E_PID"/fd -mindepth 1 -maxdepth 1 | wc -l)
                ((fds > peak_fds)) && peak_fds=$fds
                e1=$(cpu_ticks "$E_PID")
                o1=$(cpu_ticks "$O_PID")
                t1=$(now_s)
                ((alive)) || break
                sleep 1
            done
            for p in "${vpids[@]}"; do
                wait "$p" 2>/dev/null || true
                forget "$p"
                b_ticks=$((b_ticks + ${last[$p]:-0}))
            done
            unset last
            [[ -n $perf_pid ]] && { wait "$perf_pid" 2>/dev/null || true; forget "$perf_pid"; }
            wall=$(calc "$t1 - $t0")
            read -r media reqs errs stalls rejoins bl50 bl99 part99 hint99 causes <<<"$(combine "${files[@]}")"
            # Steady state: the per-second behind-live p99 each bench process prints, after
            # the ramp (joining viewers start up to a GOP behind, which dominates the
            # whole-run p99 of short runs). Worst second and median second.
            read -r ss_med ss_max <<<"$(steady "$((RAMP + 3))" "${files[@]/%.json/.log}")"
            per=$(calc "($peak - $rss0) * 1024 / $v")
            # The object cache fills for `cache-idle` (60 s) after the stream starts,
            # whatever the number of viewers: its growth is not a per-viewer cost.
            per_net=$(calc "(($peak - $rss0) * 1024 - ($cache_peak - $cache0)) / $v")
            k="view$v"
            put "$k.media $media"
            put "$k.errors $errs"
            put "$k.reqs $reqs"
            put "$k.stalls $stalls"
            put "$k.bl50 $bl50"
            put "$k.bl99 $bl99"
            put "$k.part99 $part99"
            put "$k.hint99 $hint99"
            put "$k.ss99med $ss_med"
            put "$k.ss99max $ss_max"
            put "$k.fds $peak_fds"
            put "$k.rss0 $rss0"
            put "$k.peak $peak"
            put "$k.per $per"
            put "$k.pernet $per_net"
            put "$k.cachegrowth $(calc "($cache_peak - $cache0) / 1048576")"
            log "  edge peak descriptors $peak_fds"
            put "$k.edgecpu $(calc "($e1 - $e0) / $HZ / $wall * 100")"
            put "$k.origincpu $(calc "($o1 - $o0) / $HZ / $wall * 100")"
            put "$k.benchcpu $(calc "$b_ticks / $HZ / $wall * 100")"
            log "  $v viewers ($nproc_ bench procs): $media with media, $reqs req, $errs errors ($causes), $stalls stalls, $rejoins rejoins; behind live p50 $bl50 ms p99 $bl99 ms (steady-state per-second p99: median $ss_med, worst $ss_max ms); part p99 $part99 ms; hint p99 $hint99 ms; edge RSS $rss0 -> $peak KiB ($(printf %.0f "$per") B/viewer; $(printf %.0f "$per_net") B/viewer without the cache's growth of $(calc "($cache_peak - $cache0) / 1048576") MiB); CPU edge $(printf %.0f "$(calc "($e1 - $e0) / $HZ / $wall * 100")") %, bench $(printf %.0f "$(calc "$b_ticks / $HZ / $wall * 100")") %"
        done
    done
    accept_fail=$(grep -c 'accept failed' "$TMP/edge.log" || true)
    ((accept_fail > 0)) && log "edge logged $accept_fail 'accept failed' warnings (descriptor limit $FD_LIMIT): $(grep -m1 'accept failed' "$TMP/edge.log")"
fi

# --- the table -------------------------------------------------------------------------------
ratio() { python3 -c 'import sys; a,b=map(float,sys.argv[1:]); print("%.2f" % (a/b) if b else "n/a")' "$1" "$2" 2>/dev/null || echo n/a; }
row() { printf '%-44s %12s %12s %8s   %s\n' "$1" "$2" "$3" "$(ratio "$2" "$3")" "${4:-}"; }
runs() { get_all "$1" | xargs printf '%s ' | sed 's/ $//'; }
echo
echo "ferrocast edge vs nginx static — ${CLIP_KBPS} kbit/s video; medians of $REPEAT runs; $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')); nginx $NGINX_WORKERS workers; $(date -u +%FT%TZ)"
printf '%-44s %12s %12s %8s   %s\n' metric ferrocast nginx "ratio" "runs (ferrocast | nginx)"
if has_phase playlist; then
    row "playlist req/s ($(med pl.bytes) B, wrk -t2 -c100)" "$(med pl.edge.rps)" "$(med pl.nginx.rps)" "$(runs pl.edge.rps) | $(runs pl.nginx.rps)"
    row "playlist p99 (ms)" "$(med pl.edge.p99)" "$(med pl.nginx.p99)" "$(runs pl.edge.p99) | $(runs pl.nginx.p99)"
    row "playlist: server CPU (% of a core)" "$(med pl.edge.cpu)" "$(med pl.nginx.cpu)"
    echo "  non-2xx + socket errors: edge $(runs pl.edge.bad) | nginx $(runs pl.nginx.bad)"
fi
if has_phase segment; then
    row "segment req/s ($(med seg.bytes) B, wrk -t2 -c100)" "$(med seg.edge.rps)" "$(med seg.nginx.rps)" "$(runs seg.edge.rps) | $(runs seg.nginx.rps)"
    row "segment p99 (ms)" "$(med seg.edge.p99)" "$(med seg.nginx.p99)" "$(runs seg.edge.p99) | $(runs seg.nginx.p99)"
    row "segment: server CPU (% of a core)" "$(med seg.edge.cpu)" "$(med seg.nginx.cpu)"
    echo "  non-2xx + socket errors: edge $(runs seg.edge.bad) | nginx $(runs seg.nginx.bad)"
fi
if has_phase prop; then
    echo "propagation origin -> edge (ms): p50 $(med prop.p50) (runs $(runs prop.p50)), p99 $(med prop.p99) (runs $(runs prop.p99)); p99 bucket upper bounds $(runs prop.b99); objects per run $(runs prop.n)"
fi
if has_phase ceiling; then
    echo "request-rate ceiling: req/s of the playlist without blocking, at one connection per viewer (one run each);"
    echo "  'needed' = what that many LL-HLS viewers ask for (a blocking reload and a part per part)"
    printf '%-8s %10s %12s %12s %12s %12s\n' viewers needed "nginx h1" "edge h1" "nginx h2c" "edge h2c"
    for v in $VIEWERS; do
        [[ -n $(get_all "ceil.$v.need") ]] || continue
        printf '%-8s %10.0f %12s %12s %12s %12s\n' "$v" "$(med ceil.$v.need)" "$(med ceil.$v.nginx.h1)" \
            "$(med ceil.$v.edge.h1)" "$(get_all ceil.$v.nginx.h2 | head -n 1)" "$(get_all ceil.$v.edge.h2 | head -n 1)"
    done
fi
if has_phase viewers; then
    printf '%-8s %8s %7s %7s %9s %9s %9s %9s %9s %9s %9s %9s %8s %8s %8s\n' viewers media errors stalls "bl p50ms" "bl p99ms" "ss p99" "ss worst" "part p99" "hint p99" "B/viewer" "B/v net" "edge %" "bench %" "orig %"
    for v in $VIEWERS; do
        k="view$v"
        printf '%-8s %8s %7s %7s %9s %9s %9s %9s %9s %9s %9.0f %9.0f %8.0f %8.0f %8.0f\n' "$v" \
            "$(med $k.media)" "$(med $k.errors)" "$(med $k.stalls)" "$(med $k.bl50)" "$(med $k.bl99)" \
            "$(med $k.ss99med)" "$(med $k.ss99max)" \
            "$(med $k.part99)" "$(med $k.hint99)" "$(med $k.per)" "$(med $k.pernet)" "$(med $k.edgecpu)" "$(med $k.benchcpu)" "$(med $k.origincpu)"
        echo "         runs: behind-live p99 $(runs $k.bl99); steady worst-second p99 $(runs $k.ss99max); edge peak fds $(runs $k.fds); errors $(runs $k.errors); stalls $(runs $k.stalls); B/viewer net $(runs $k.pernet); cache growth MiB $(runs $k.cachegrowth); RSS KiB before/peak $(paste -d/ <(get_all $k.rss0) <(get_all $k.peak) | xargs)"
    done
    echo "  ss = per-second behind-live p99 after the ramp (+3 s): median second / worst second."
    echo "  bl = latency behind live of each part as received (worst bench process); part/hint p99 = request latency of part GETs / preload-hint GETs (held until the part exists)."
    echo "  viewers over $([[ $VIEW_HTTP2 == 1 ]] && echo 'one HTTP/2 connection each' || echo 'two HTTP/1.1 connections each'); B/v net = B/viewer without the object cache's growth during the run (ferrocast_edge_cache_size_bytes)."
    echo "  B/viewer = (peak edge VmRSS during the run - VmRSS before) / viewers. CPU in % of one core, averaged over the run (2 cores = 200 %)."
fi
for tag in $(seq "$REPEAT" | sed 's/^/playlist-/') $(seq "$REPEAT" | sed 's/^/segment-/') "viewers-$(printf '%s\n' $VIEWERS | sort -n | tail -n 1)"; do
    [[ $tag == playlist-1 || $tag == segment-1 || $tag == viewers-* ]] && perf_top "$tag"
done
cp "$RESULTS" "${RESULTS_OUT:-/dev/null}" 2>/dev/null || true
