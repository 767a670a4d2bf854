#!/usr/bin/env bash
# Ferrocast next to nginx-rtmp (Debian nginx + libnginx-mod-rtmp, HLS on) and xiu (the
# Rust live server, built from crates.io with `cargo install xiu`, HLS on) in one run,
# with the same publishers and the same HTTP load. Two phases (PHASES):
#
#   origin   one server at a time with STREAMS publishers of a ~3 Mbps clip:
#            - origin CPU per ingested stream (utime+stime of the server from /proc),
#            - publish -> first playable (first part for ferrocast, first segment for
#              the others),
#            - playlist and segment requests/s and p99 under `wrk -t2 -c100`.
#   viewers  one ~3 Mbps stream published to a fresh server per run, then classic-HLS
#            viewers (`ferrocast bench view --mode classic`, how a non-LL player
#            behaves) at each count of VIEWERS, plus LL-HLS viewers of Ferrocast as an
#            extra target (ferrocast-ll). Servers interleaved per count (order rotated
#            every run), REPEAT runs each. Per run: errors, stalls, request p99, behind
#            live p50/p99, server CPU, server RSS before and peak (master + workers for
#            nginx), bench CPU. Behind live is measured from the media for every server
#            (`--clock pts`: the publisher's first frame + the segment's first video
#            timestamp, calibrated per run with ffprobe on the stream's first segment),
#            since nginx-rtmp and xiu write no PROGRAM-DATE-TIME.
#            A count of 0 runs the same setup without viewers: the RSS growth of the
#            server alone (its media window and caches filling), subtracted from the
#            other counts' growth for "memory per viewer, net".
#
# Prints the table of ratios (ferrocast / peer) of medians over the REPEAT runs, and
# writes every run as `key value` lines to RESULTS_OUT (for bench/scripts/chart.py).
# Loopback only; every process it starts is killed by its own PID; the system nginx is
# never started or touched (package installs run with a policy-rc.d that forbids
# service starts).
#
# Knobs (environment):
#   PHASES ("origin viewers")   which phases to run
#   REPEAT (3)                  runs per server (origin phase) and per count (viewers)
#   PEERS ("nginx xiu")         peers next to ferrocast
#   STREAMS (10), CPU_SECS (30), WRK_SECS (10)         origin phase
#   VIEWERS ("0 100 300 1000 2000")  viewer counts (0 = the server alone, see above)
#   VIEW_SECS (40), RAMP (10)   seconds per viewer run (ramp included) and ramp
#   LL (1)                      1: also LL-HLS viewers of ferrocast (target ferrocast-ll)
#   NGINX_WORKERS (2)           nginx workers in the viewer phase (ferrocast runs one
#                               tokio worker and one I/O thread per core; the origin
#                               phase keeps nginx-rtmp at one worker, master_process off)
#   FERROCAST (unset)           a ferrocast binary to measure instead of building this tree
#   XIU (unset)                 a xiu binary to use instead of `xiu` on PATH or building
#                               XIU_VERSION (0.13.0) from crates.io
#   RESULTS_OUT (unset)         copy the per-run `key value` results there
#   KEEP=1                      keep the temp dir (logs, configs, JSON) for inspection
# SRS is not included: it builds its bundled dependencies from sources fetched over the
# network, which this kind of machine cannot reach.
set -euo pipefail

PHASES=${PHASES:-"origin viewers"}
REPEAT=${REPEAT:-3}
STREAMS=${STREAMS:-10}
CPU_SECS=${CPU_SECS:-30}
WRK_SECS=${WRK_SECS:-10}
PEERS=${PEERS:-"nginx xiu"}
VIEWERS=${VIEWERS:-"0 100 300 1000 2000"}
VIEW_SECS=${VIEW_SECS:-40}
RAMP=${RAMP:-10}
LL=${LL:-1}
NGINX_WORKERS=${NGINX_WORKERS:-2}
# 0.14.0 panics on its first HLS stream unless S3 upload is configured (hls 0.5.6
# unwraps the S3 settings); 0.13.0 with its own lock file (hls 0.5.5) works.
XIU_VERSION=${XIU_VERSION:-0.13.0}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d /tmp/ferrocast-vs-nginx.XXXXXX)
PIDS=()

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

# Forget a PID once it has been waited for, so that cleanup never signals a reused PID.
forget() {
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}
stop() { # pid: kill it, wait for it, forget it
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget "$1"
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
has_peer() { [[ " $PEERS " == *" $1 "* ]]; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
free_udp_port() {
    python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Viewers hold two connections each (playlists, media): they need descriptors, and so
# do the servers. The limit cannot be raised everywhere; the viewers are split over
# bench processes to stay inside it.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT=$(ulimit -n)

# --- what we need ------------------------------------------------------------------
install_missing() {
    local need=()
    command -v nginx >/dev/null || need+=(nginx)
    [[ -e /usr/lib/nginx/modules/ngx_rtmp_module.so ]] || need+=(libnginx-mod-rtmp)
    command -v wrk >/dev/null || need+=(wrk)
    command -v ffmpeg >/dev/null || need+=(ffmpeg)
    command -v curl >/dev/null || need+=(curl)
    command -v python3 >/dev/null || need+=(python3)
    [[ ${#need[@]} -eq 0 ]] && return
    log "installing ${need[*]}"
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    # Keep the package scripts from starting the system nginx on port 80.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod +x "$policy"
        made_policy=1
    fi
    local ok=0
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}" >"$TMP/apt.log" 2>&1 && ok=1
    if [[ $ok == 0 ]]; then
        "${sudo[@]}" apt-get update -qq >>"$TMP/apt.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}" >>"$TMP/apt.log" 2>&1 && ok=1
    fi
    [[ $made_policy == 1 ]] && "${sudo[@]}" rm -f "$policy"
    [[ $ok == 1 ]] || { cat "$TMP/apt.log" >&2; exit 1; }
}
install_missing

# --- ferrocast, release (debug CPU figures would be meaningless) ---------------------
if [[ -n ${FERROCAST:-} ]]; then
    log "using $FERROCAST (not building)"
else
    log "building ferrocast (release)"
    (cd "$ROOT" && cargo build --release -q -p ferrocast-cli)
    FERROCAST=${CARGO_TARGET_DIR:-$ROOT/target}/release/ferrocast
fi
BENCH=("$FERROCAST" bench)

# --- xiu: XIU, or on PATH, or built once from crates.io -------------------------------
if has_peer xiu; then
    XIU=${XIU:-$(command -v xiu || true)}
    if [[ -z $XIU ]]; then
        XIU_ROOT=${CARGO_TARGET_DIR:-$ROOT/target}/peers/xiu-$XIU_VERSION
        if [[ ! -x $XIU_ROOT/bin/xiu ]]; then
            log "building xiu $XIU_VERSION from crates.io (once; a few minutes)"
            # Its WebRTC part links libopus (found through pkg-config).
            if ! pkg-config --exists opus 2>/dev/null; then
                local_sudo=()
                [[ $(id -u) -eq 0 ]] || local_sudo=(sudo)
                DEBIAN_FRONTEND=noninteractive "${local_sudo[@]}" apt-get install -y -q \
                    libopus-dev pkg-config >"$TMP/xiu-apt.log" 2>&1 || true
            fi
            # --locked: its own lock file, not newer (broken) dependency releases.
            cargo install xiu --locked --version "$XIU_VERSION" --root "$XIU_ROOT" \
                --target-dir "${CARGO_TARGET_DIR:-$ROOT/target}/peers/build" >"$TMP/xiu-build.log" 2>&1 ||
                { log "xiu did not build; skipping it (see $TMP/xiu-build.log)"; }
        fi
        [[ -x $XIU_ROOT/bin/xiu ]] && XIU=$XIU_ROOT/bin/xiu
    fi
    [[ -n $XIU ]] && log "xiu: $XIU"
else
    XIU=""
fi
SERVERS=(ferrocast)
has_peer nginx && SERVERS+=(nginx)
[[ -n $XIU ]] && SERVERS+=(xiu)

# --- the clip: ~3 Mbps H.264 (2 s GOP, no B-frames) + AAC, 10 s, made once ------------
CLIP=$TMP/clip-3mbps.flv
log "encoding the 3 Mbps clip"
ffmpeg -nostdin -loglevel error -y \
    -f lavfi -i "testsrc2=size=1280x720:rate=30" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -t 10 -c:v libx264 -preset veryfast -tune zerolatency -pix_fmt yuv420p \
    -b:v 2900k -minrate 2900k -maxrate 2900k -bufsize 2900k -x264-params nal-hrd=cbr \
    -g 60 -keyint_min 60 -sc_threshold 0 \
    -c:a aac -b:a 128k -f flv "$CLIP"
# The clip's first video timestamp (ms; its audio starts at 0): `bench publish` sends
# timestamp 0 at the moment it records, so the first video frame leaves this much later.
CLIP_V0=$(ffprobe -v error -select_streams v:0 -show_entries packet=dts_time -read_intervals '%+#1' \
    -of csv=p=0 "$CLIP" | awk 'NR == 1 { printf "%.0f", $1 * 1000 }')
CLIP_V0=${CLIP_V0:-0}

# --- helpers ---------------------------------------------------------------------------
cpu_ticks() { # utime + stime of a PID, in clock ticks (0 once it is gone)
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
status_kib() { # pid field -> kB (0 once it is gone)
    awk -v f="$2:" '$1 == f { print $2; found = 1 } END { if (!found) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0
}
now_s() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.6f\", $* }"; }
HZ=$(getconf CLK_TCK)

wait_http() { # URL, seconds: until it answers at all
    local deadline=$(($(date +%s) + $2))
    until curl -s -o /dev/null --max-time 1 "$1"; do
        (($(date +%s) < deadline)) || { log "timeout waiting for $1"; return 1; }
        sleep 0.1
    done
}

RESULTS=$TMP/results.txt
: >"$RESULTS"
put() { echo "$*" >>"$RESULTS"; }
get_all() { awk -v k="$1" '$1 == k { print $2 }' "$RESULTS"; }
median() { printf '%s\n' "$@" | python3 -c '
import sys, statistics
v = [float(x) for x in sys.stdin.read().split() if x not in ("nan", "")]
print("%.6g" % statistics.median(v) if v else "nan")'; }
med() { median $(get_all "$1"); }
runs() { get_all "$1" | xargs printf '%s ' | sed 's/ $//'; }

# --- servers -----------------------------------------------------------------------------
# start_server NAME PHASE sets S_PID (the process we started: nginx's master), RTMP_BASE,
# PL_FMT (playlist URL with @KEY@ for the stream key), FIRST_PATTERN (a playlist line
# that means "playable") and SEG_RE (a segment URI line).
S_PID=""
url_of() { echo "${1//@KEY@/$2}"; }

server_pids() { # the server's processes: the one we started and its children (workers)
    echo "$S_PID"
    cat "/proc/$S_PID/task/$S_PID/children" 2>/dev/null || true
}
server_ticks() {
    local t=0 p
    for p in $(server_pids); do t=$((t + $(cpu_ticks "$p"))); done
    echo "$t"
}
server_kib() { # field (VmRSS, VmHWM): summed over the server's processes
    local t=0 p
    for p in $(server_pids); do t=$((t + $(status_kib "$p" "$1"))); done
    echo "$t"
}

start_ferrocast() { # phase
    local rtmp http
    rtmp=$(free_port)
    http=$(free_port)
    if [[ $1 == origin ]]; then
        RUST_LOG=warn "$FERROCAST" origin --rtmp-listen "127.0.0.1:$rtmp" --http-listen "127.0.0.1:$http" \
            >>"$TMP/ferrocast.log" 2>&1 &
    else
        # Origin and edge in one process: viewers are served by the edge, as in production.
        RUST_LOG=warn "$FERROCAST" standalone --rtmp-listen "127.0.0.1:$rtmp" --http-listen "127.0.0.1:$http" \
            --origin-http-listen "127.0.0.1:$(free_port)" --quic-listen "127.0.0.1:$(free_udp_port)" \
            --grpc-listen 127.0.0.1:0 >>"$TMP/ferrocast.log" 2>&1 &
    fi
    S_PID=$!
    PIDS+=("$S_PID")
    wait_http "http://127.0.0.1:$http/readyz" 20
    RTMP_BASE=rtmp://127.0.0.1:$rtmp/live
    PL_FMT="http://127.0.0.1:$http/live/@KEY@/index.m3u8"
    FIRST_PATTERN='^#EXT-X-PART:'
    SEG_RE='^seg-[0-9]+\.m4s$'
}

start_nginx() { # phase
    local rtmp http nd=$TMP/nginx master=off workers=1
    rtmp=$(free_port)
    http=$(free_port)
    rm -rf "$nd"
    mkdir -p "$nd/hls" "$nd/tmp"
    # Origin phase: one worker (nginx-rtmp's live state is per worker, and CPU per stream
    # is what is compared). Viewer phase: NGINX_WORKERS workers serve the HLS files the
    # publishing worker writes, as nginx serves static files on all cores.
    if [[ $1 == viewers ]]; then
        master=on
        workers=$NGINX_WORKERS
    fi
    cat >"$nd/nginx.conf" <<EOF
daemon off;
master_process $master;
worker_processes $workers;
# Workers keep root's rights: they write HLS files under this temp dir.
user root;
worker_rlimit_nofile $((FD_LIMIT > 20000 ? 20000 : FD_LIMIT));
pid $nd/nginx.pid;
error_log $nd/error.log warn;
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
events { worker_connections $((FD_LIMIT > 20000 ? 10000 : FD_LIMIT / 2)); }
rtmp {
    server {
        listen 127.0.0.1:$rtmp;
        chunk_size 4096;
        application live {
            live on;
            record off;
            hls on;
            hls_path $nd/hls;
            hls_fragment 2s;
            hls_playlist_length 10s;
        }
    }
}
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path $nd/tmp/body;
    proxy_temp_path $nd/tmp/proxy;
    fastcgi_temp_path $nd/tmp/fastcgi;
    uwsgi_temp_path $nd/tmp/uwsgi;
    scgi_temp_path $nd/tmp/scgi;
    types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
    server {
        listen 127.0.0.1:$http;
        location /hls/ {
            alias $nd/hls/;
            add_header Cache-Control no-cache;
        }
    }
}
EOF
    nginx -p "$nd" -e "$nd/error.log" -c "$nd/nginx.conf" >"$nd/stdout.log" 2>&1 &
    S_PID=$!
    PIDS+=("$S_PID")
    wait_http "http://127.0.0.1:$http/hls/" 10 || { cat "$nd/error.log" >&2; exit 1; }
    RTMP_BASE=rtmp://127.0.0.1:$rtmp/live
    PL_FMT="http://127.0.0.1:$http/hls/@KEY@.m3u8"
    FIRST_PATTERN='\.ts$'
    SEG_RE='\.ts$'
}

start_xiu() { # phase
    local rtmp http xd=$TMP/xiu
    rtmp=$(free_port)
    http=$(free_port)
    rm -rf "$xd"
    mkdir -p "$xd"
    # xiu writes its HLS files under its working directory and serves them from there.
    (cd "$xd" && exec "$XIU" --rtmp "$rtmp" --hls "$http" --log warn) >"$xd/xiu.log" 2>&1 &
    S_PID=$!
    PIDS+=("$S_PID")
    wait_http "http://127.0.0.1:$http/" 10 || { cat "$xd/xiu.log" >&2; exit 1; }
    RTMP_BASE=rtmp://127.0.0.1:$rtmp/live
    PL_FMT="http://127.0.0.1:$http/live/@KEY@/@KEY@.m3u8"
    FIRST_PATTERN='\.ts$'
    SEG_RE='^[0-9]+\.ts$'
}

start_server() { "start_$1" "$2"; }
stop_server() { stop "$S_PID"; S_PID=""; }

rotate() { # n items...: the items rotated left by n
    local n=$1
    shift
    local a=("$@") i
    for ((i = 0; i < ${#a[@]}; i++)); do printf '%s ' "${a[$(((i + n) % ${#a[@]}))]}"; done
}

# --- phase "origin" ------------------------------------------------------------------------
# Sets FIRST: seconds from starting one publisher until the playlist lists something
# matching the pattern ("nan" if it never does while the publisher runs).
first_playable() { # name playlist_url pattern
    local name=$1 url=$2 pattern=$3 t0 t1
    t0=$(now_s)
    "${BENCH[@]}" publish --url "$RTMP_BASE" --streams 1 --key-prefix first --file "$CLIP" \
        --duration 8 --json >"$TMP/$name-first.json" 2>/dev/null &
    local pid=$!
    PIDS+=("$pid")
    while true; do
        if curl -fs --max-time 1 "$url" 2>/dev/null | grep -Eq "$pattern"; then
            t1=$(now_s)
            break
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            t1=""
            break
        fi
        sleep 0.02
    done
    wait "$pid" 2>/dev/null || true
    forget "$pid"
    if [[ -z $t1 ]]; then FIRST=nan; else FIRST=$(calc "$t1 - $t0"); fi
}

wrk_run() { # url -> "req/s p99_ms non2xx"
    local out rps p99 non2xx
    out=$(wrk -t2 -c100 -d"${WRK_SECS}s" --timeout 5s --latency "$1" 2>&1)
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    p99=$(awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }
        print v }' <<<"$out")
    non2xx=$(awk '/Non-2xx/ { print $NF }' <<<"$out")
    echo "${rps:-nan} ${p99:-nan} ${non2xx:-0}"
}

measure_origin() { # name run
    local name=$1 r=$2
    start_server "$name" origin
    log "$name (origin run $r, load $(load)): publish -> first playable"
    first_playable "$name" "$(url_of "$PL_FMT" first-0)" "$FIRST_PATTERN"
    local first=$FIRST
    sleep 2

    log "$name: $STREAMS publishers, CPU over ${CPU_SECS}s"
    local total=$((3 + CPU_SECS + 2 * WRK_SECS + 8))
    "${BENCH[@]}" publish --url "$RTMP_BASE" --streams "$STREAMS" --key-prefix bench --file "$CLIP" \
        --duration "$total" --json >"$TMP/$name-publish-$r.json" 2>"$TMP/$name-publish-$r.log" &
    local ppid=$!
    PIDS+=("$ppid")
    sleep 3 # connected and past the first GOP
    local c0 p0 t0 c1 p1 t1
    c0=$(server_ticks)
    p0=$(cpu_ticks "$ppid")
    t0=$(now_s)
    sleep "$CPU_SECS"
    c1=$(server_ticks)
    p1=$(cpu_ticks "$ppid")
    t1=$(now_s)
    local wall
    wall=$(calc "$t1 - $t0")

    local pl seg
    pl=$(url_of "$PL_FMT" bench-0)
    seg=$(curl -fs --max-time 2 "$pl" | grep -E "$SEG_RE" | tail -n 1)
    seg="${pl%/*}/$seg"
    log "$name: wrk playlist $pl"
    read -r pl_rps pl_p99 pl_bad <<<"$(wrk_run "$pl")"
    log "$name: wrk segment $seg"
    read -r seg_rps seg_p99 seg_bad <<<"$(wrk_run "$seg")"
    local seg_bytes
    seg_bytes=$(curl -fs --max-time 2 "$seg" | wc -c)
    wait "$ppid" 2>/dev/null || true
    forget "$ppid"
    stop_server

    local connected k=org.$name
    connected=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%d/%d/%.2f" % (r["connected"], r["failed"], r["bitrate_per_stream_bps"]/1e6))' "$TMP/$name-publish-$r.json" 2>/dev/null || echo "?")
    put "$k.cpu $(calc "($c1 - $c0) / $HZ / $wall * 100 / $STREAMS")"
    put "$k.pubcpu $(calc "($p1 - $p0) / $HZ / $wall * 100 / $STREAMS")"
    put "$k.first $first"
    put "$k.pl_rps $pl_rps"
    put "$k.pl_p99 $pl_p99"
    put "$k.seg_rps $seg_rps"
    put "$k.seg_p99 $seg_p99"
    put "$k.seg_bytes $seg_bytes"
    put "$k.bad $((${pl_bad:-0} + ${seg_bad:-0}))"
    put "$k.publishers $connected"
    log "$name run $r: CPU/stream $(calc "($c1 - $c0) / $HZ / $wall * 100 / $STREAMS") %, first playable $first s, playlist $pl_rps req/s p99 $pl_p99 ms, segment ($seg_bytes B) $seg_rps req/s p99 $seg_p99 ms, non-2xx $pl_bad/$seg_bad, publishers connected/failed/Mbit/s $connected"
}

if has_phase origin; then
    log "phase origin: ${SERVERS[*]}, $REPEAT runs, order rotated"
    for r in $(seq "$REPEAT"); do
        for name in $(rotate "$((r - 1))" "${SERVERS[@]}"); do
            measure_origin "$name" "$r"
        done
    done
fi

# --- phase "viewers" -----------------------------------------------------------------------
TARGETS=("${SERVERS[@]}")
[[ $LL == 1 ]] && TARGETS+=(ferrocast-ll)
# One bench process holds 2 sockets per viewer; keep each well inside the limit.
PER_PROC=$(((FD_LIMIT - 500) / 2))
((PER_PROC > 5000)) && PER_PROC=5000

# The first video timestamp (ms) of the stream's first segment, read by ffprobe: what
# the server writes for the publisher's first video frame (sent CLIP_V0 ms after the
# first frame). nginx-rtmp's HLS adds 700 ms to the publisher's timestamps, xiu keeps
# them, Ferrocast starts its video timeline at 0. "nan" if unknown.
first_ts_ms() { # playlist_url
    local pl=$1 text seg map f=$TMP/first-seg
    text=$(curl -fs --max-time 2 "$pl") || { echo nan; return; }
    if ! grep -q '^#EXT-X-MEDIA-SEQUENCE:0$' <<<"$text"; then
        grep -q '^#EXT-X-MEDIA-SEQUENCE' <<<"$text" && { echo nan; return; }
    fi
    seg=$(grep -Ev '^#|^$' <<<"$text" | head -n 1)
    map=$(sed -n 's/^#EXT-X-MAP:.*URI="\([^"]*\)".*/\1/p' <<<"$text" | head -n 1)
    : >"$f"
    [[ -n $map ]] && curl -fs --max-time 5 "${pl%/*}/$map" >>"$f"
    curl -fs --max-time 5 "${pl%/*}/$seg" >>"$f" || { echo nan; return; }
    ffprobe -v error -select_streams v:0 -show_entries packet=dts_time -read_intervals '%+#1' \
        -of csv=p=0 "$f" 2>/dev/null | awk 'NR == 1 && $1 != "" { printf "%.0f\n", $1 * 1000; ok = 1 } END { if (!ok) print "nan" }'
}

combine() { # json files -> one line of figures
    python3 - "$@" <<'EOF'
import json, sys
rs = []
for p in sys.argv[1:]:
    try:
        rs.append(json.load(open(p)))
    except Exception:
        pass
def worst(get):
    v = [get(r) for r in rs]
    v = [x for x in v if x is not None]
    return max(v) if v else float("nan")
pct = lambda d, k: (d or {}).get(k)
bl = lambda r, k: pct(r.get("latency_behind_live"), k)
rq = lambda r, k: pct(r.get("request_latency"), k)
kind = lambda r, name, k: pct((r.get("by_kind", {}).get(name) or {}).get("latency"), k)
secs = max([r["duration_secs"] for r in rs] or [float("nan")])
print(len(rs),
      sum(r["viewers_with_media"] for r in rs), sum(r["requests"] for r in rs),
      sum(r["errors"] for r in rs), sum(r["stalls"] for r in rs), sum(r["rejoins"] for r in rs),
      "%.1f" % worst(lambda r: bl(r, "p50_ms")), "%.1f" % worst(lambda r: bl(r, "p99_ms")),
      "%.1f" % worst(lambda r: rq(r, "p99_ms")),
      "%.1f" % worst(lambda r: kind(r, "playlist", "p99_ms")),
      "%.1f" % worst(lambda r: kind(r, "segment", "p99_ms")),
      "%.1f" % worst(lambda r: kind(r, "part", "p99_ms")),
      "%.1f" % (sum(r["requests"] for r in rs) / secs),
      "%.1f" % (sum(r["bytes"] for r in rs) * 8 / secs / 1e6),
      ",".join(sorted({"%s=%d" % kv for r in rs for kv in r.get("errors_by_cause", {}).items()})) or "-")
EOF
}

view_run() { # target viewers run
    local target=$1 v=$2 r=$3 server=${1%-ll} mode=classic
    [[ $target == *-ll ]] && mode=ll
    local tag=$target-$v-$r
    start_server "$server" viewers
    "${BENCH[@]}" publish --url "$RTMP_BASE" --streams 1 --key-prefix view --file "$CLIP" \
        --duration "$((VIEW_SECS + 60))" --json >"$TMP/pub-$tag.json" 2>"$TMP/pub-$tag.log" &
    local ppid=$! t0="" deadline
    PIDS+=("$ppid")
    deadline=$(($(date +%s) + 15))
    while [[ -z $t0 ]] && (($(date +%s) < deadline)); do
        t0=$(sed -n 's/.*first frame (timestamp 0) sent at unix ms \([0-9]*\).*/\1/p' "$TMP/pub-$tag.log" | head -n 1)
        [[ -n $t0 ]] || sleep 0.1
    done
    local pl
    pl=$(url_of "$PL_FMT" view-0)
    deadline=$(($(date +%s) + 30))
    until curl -fs --max-time 1 "$pl" 2>/dev/null | grep -Eq "$SEG_RE"; do
        if (($(date +%s) >= deadline)) || [[ -z $t0 ]]; then
            log "  $tag: the stream never listed a segment (first frame at '${t0}'); skipping the run"
            stop "$ppid"
            stop_server
            return
        fi
        sleep 0.1
    done
    local first_ts
    first_ts=$(first_ts_ms "$pl")
    if [[ $first_ts == nan ]]; then
        log "  $tag: could not read the first segment's timestamp; assuming 0"
        first_ts=0
    fi
    sleep 2
    log "  load $(load): $target, $v viewers ($mode), run $r; first video frame sent at $((t0 + CLIP_V0)), its timestamp in the stream $first_ts ms"

    local rss0 c0 t_start vpids=() files=() i n nproc_=0 f
    rss0=$(server_kib VmRSS)
    c0=$(server_ticks)
    t_start=$(now_s)
    if ((v > 0)); then
        nproc_=$(((v + PER_PROC - 1) / PER_PROC))
        for i in $(seq "$nproc_"); do
            n=$((v / nproc_ + (i <= v % nproc_ ? 1 : 0)))
            f=$TMP/view-$tag-$i.json
            files+=("$f")
            "${BENCH[@]}" view --url "$pl" --viewers "$n" --mode "$mode" --ramp "$RAMP" \
                --duration "$VIEW_SECS" --clock pts --published-at-ms "$((t0 + CLIP_V0))" --first-ts-ms "$first_ts" \
                --json >"$f" 2>"${f%.json}.log" &
            vpids+=($!)
            PIDS+=($!)
        done
    fi
    # Sample every half second: peak server RSS (summed over its processes) and the
    # bench processes' CPU just before they exit (their /proc entries go with them).
    local peak=$rss0 cur alive p b_ticks=0 c1 t_end
    declare -A last=()
    local until_s
    until_s=$(calc "$t_start + $VIEW_SECS")
    while :; do
        alive=0
        for p in "${vpids[@]}"; do
            if [[ -e /proc/$p/stat ]]; then
                alive=1
                last[$p]=$(cpu_ticks "$p")
            fi
        done
        cur=$(server_kib VmRSS)
        ((cur > peak)) && peak=$cur
        c1=$(server_ticks)
        t_end=$(now_s)
        if ((v > 0)); then
            ((alive)) || break
        else
            awk -v a="$t_end" -v b="$until_s" 'BEGIN { exit !(a >= b) }' && break
        fi
        sleep 0.5
    done
    local hwm
    hwm=$(server_kib VmHWM)
    for p in "${vpids[@]}"; do
        wait "$p" 2>/dev/null || true
        forget "$p"
        b_ticks=$((b_ticks + ${last[$p]:-0}))
    done
    unset last
    stop "$ppid"
    stop_server

    local wall k="vw.$target.$v"
    wall=$(calc "$t_end - $t_start")
    put "$k.rss0 $rss0"
    put "$k.peak $peak"
    put "$k.hwm $hwm"
    put "$k.growth $(calc "($peak - $rss0) * 1024")"
    put "$k.cpu $(calc "($c1 - $c0) / $HZ / $wall * 100")"
    put "$k.firstts $first_ts"
    put "$k.load $(cut -d' ' -f1 /proc/loadavg)"
    if ((v == 0)); then
        log "  $target alone: RSS $rss0 -> $peak KiB, CPU $(printf %.1f "$(calc "($c1 - $c0) / $HZ / $wall * 100")") %"
        return
    fi
    local nfiles media reqs errs stalls rejoins bl50 bl99 rq99 pl99 seg99 part99 rps mbps causes
    read -r nfiles media reqs errs stalls rejoins bl50 bl99 rq99 pl99 seg99 part99 rps mbps causes <<<"$(combine "${files[@]}")"
    if ((nfiles < nproc_)); then
        log "  $tag: $((nproc_ - nfiles)) bench process(es) wrote no report (see ${files[0]%.json}.log)"
        errs=$((errs + v)) # count the run as failed
    fi
    put "$k.media $media"
    put "$k.reqs $reqs"
    put "$k.rps $rps"
    put "$k.mbps $mbps"
    put "$k.errors $errs"
    put "$k.stalls $stalls"
    put "$k.rejoins $rejoins"
    put "$k.bl50 $bl50"
    put "$k.bl99 $bl99"
    put "$k.rq99 $rq99"
    put "$k.pl99 $pl99"
    put "$k.seg99 $seg99"
    put "$k.part99 $part99"
    put "$k.per $(calc "($peak - $rss0) * 1024 / $v")"
    put "$k.benchcpu $(calc "$b_ticks / $HZ / $wall * 100")"
    local ok=0
    [[ $errs == 0 && $media == "$v" ]] && awk -v p="$rq99" 'BEGIN { exit !(p < 1000) }' && ok=1
    put "$k.ok $ok"
    log "  $tag: $media/$v with media, $reqs req ($rps/s, $mbps Mbit/s), $errs errors ($causes), $stalls stalls, $rejoins rejoins; behind live p50 $bl50 ms p99 $bl99 ms; request p99 $rq99 ms (playlist $pl99, segment $seg99, part $part99); RSS $rss0 -> $peak KiB (HWM $hwm), $(printf %.0f "$(calc "($peak - $rss0) * 1024 / $v")") B/viewer; CPU server $(printf %.0f "$(calc "($c1 - $c0) / $HZ / $wall * 100")") %, bench $(printf %.0f "$(calc "$b_ticks / $HZ / $wall * 100")") %"
}

if has_phase viewers; then
    log "phase viewers: ${TARGETS[*]} at $VIEWERS viewers, ${VIEW_SECS}s runs (${RAMP}s ramp), $REPEAT runs; fd limit $FD_LIMIT, <= $PER_PROC viewers per bench process"
    ci=0
    for v in $VIEWERS; do
        for r in $(seq "$REPEAT"); do
            if ((v == 0)); then set -- "${SERVERS[@]}"; else set -- "${TARGETS[@]}"; fi
            for target in $(rotate "$((ci + r - 1))" "$@"); do
                view_run "$target" "$v" "$r"
            done
        done
        ci=$((ci + 1))
    done
fi

# --- the table -----------------------------------------------------------------------
fmt() { awk -v v="$1" 'BEGIN { if (v !~ /^-?[0-9.e+]+$/) print v; else if (v >= 100 || v <= -100) printf "%.0f\n", v;
    else if (v >= 1 || v <= -1) printf "%.2f\n", v; else printf "%.3f\n", v }'; }
ratio() { python3 -c 'import sys; a,b=map(float,sys.argv[1:]); print("%.2f" % (a/b) if b and a == a and b == b else "n/a")' "$1" "$2" 2>/dev/null || echo n/a; }
COLS=("${SERVERS[@]}")
row() { # label key-template (@S@ = server); values are medians over the runs
    local line c vals=()
    line=$(printf '%-46s' "$1")
    for c in "${COLS[@]}"; do
        vals+=("$(fmt "$(med "${2//@S@/$c}")")")
        line+=$(printf ' %11s' "${vals[-1]}")
    done
    for ((i = 1; i < ${#COLS[@]}; i++)); do line+=$(printf ' %9s' "$(ratio "${vals[0]}" "${vals[$i]}")"); done
    echo "$line"
}
raw_row() { # label values... (one per column)
    local line c i
    line=$(printf '%-46s' "$1")
    shift
    local vals=("$@")
    for c in "${vals[@]}"; do line+=$(printf ' %11s' "$c"); done
    for ((i = 1; i < ${#vals[@]}; i++)); do line+=$(printf ' %9s' "$(ratio "${vals[0]}" "${vals[$i]}")"); done
    echo "$line"
}
NONZERO=$(for v in $VIEWERS; do ((v > 0)) && echo "$v"; done | sort -n | xargs)
SMALLEST=$(echo "$NONZERO" | awk '{ print $1 }')
LARGEST=$(echo "$NONZERO" | awk '{ print $NF }')
mem_net() { # target viewers -> median over runs of (growth - median growth alone) / viewers, KiB
    local server=${1%-ll} base
    base=$(med "vw.$server.0.growth")
    [[ $base == nan ]] && base=0
    get_all "vw.$1.$2.growth" | python3 -c '
import sys, statistics
base, v = float(sys.argv[1]), float(sys.argv[2])
g = [float(x) for x in sys.stdin.read().split()]
print("%.1f" % (statistics.median((x - base) / v for x in g) / 1024) if g else "nan")' "$base" "$2"
}
most_viewers() { # target -> the largest count whose median run passed (0 errors, all with media, request p99 < 1 s)
    local best=0 v
    for v in $NONZERO; do
        [[ $(med "vw.$1.$v.ok") == 1 ]] && best=$v
    done
    echo "$best"
}

echo
echo "ferrocast vs ${COLS[*]:1} — medians of $REPEAT runs; $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')); load now $(load); $(date -u +%FT%TZ)"
header=$(printf '%-46s' metric)
for c in "${COLS[@]}"; do header+=$(printf ' %11s' "$c"); done
for c in "${COLS[@]:1}"; do header+=$(printf ' %9s' "f/${c}"); done
echo "$header"
if has_phase origin; then
    row "origin CPU per stream (% of a core)" "org.@S@.cpu"
    row "publish -> first playable (s)" "org.@S@.first"
    row "playlist req/s (wrk -c100)" "org.@S@.pl_rps"
    row "playlist p99 (ms)" "org.@S@.pl_p99"
    row "segment req/s (wrk -c100)" "org.@S@.seg_rps"
    row "segment p99 (ms)" "org.@S@.seg_p99"
fi
if has_phase viewers && [[ -n $NONZERO ]]; then
    vals=()
    for c in "${COLS[@]}"; do vals+=("$(mem_net "$c" "$LARGEST")"); done
    raw_row "memory per viewer @$LARGEST, net (KiB)" "${vals[@]}"
    vals=()
    for c in "${COLS[@]}"; do vals+=("$(median $(get_all "vw.$c.$LARGEST.per" | awk '{ printf "%.1f\n", $1 / 1024 }'))"); done
    raw_row "memory per viewer @$LARGEST, raw (KiB)" "${vals[@]}"
    vals=()
    for c in "${COLS[@]}"; do vals+=("$(most_viewers "$c")"); done
    raw_row "most viewers with request p99 < 1 s" "${vals[@]}"
    for v in $(echo "$SMALLEST $LARGEST" | xargs -n1 | sort -nu); do
        row "behind live p50 @$v (ms)" "vw.@S@.$v.bl50"
        row "behind live p99 @$v (ms)" "vw.@S@.$v.bl99"
        row "request p99 @$v (ms)" "vw.@S@.$v.rq99"
    done
fi
if has_phase origin; then
    for c in "${COLS[@]}"; do
        echo "$c origin runs: CPU $(runs "org.$c.cpu") | first $(runs "org.$c.first") | playlist $(runs "org.$c.pl_rps") req/s p99 $(runs "org.$c.pl_p99") | segment $(runs "org.$c.seg_rps") req/s p99 $(runs "org.$c.seg_p99") (~$(med "org.$c.seg_bytes") B) | non-2xx $(runs "org.$c.bad") | publishers conn/failed/Mbit/s $(runs "org.$c.publishers") | bench publisher CPU/stream $(med "org.$c.pubcpu") %"
    done
    echo "first playable = first part listed (ferrocast), first segment listed (the others)."
fi
if has_phase viewers; then
    echo
    echo "viewer runs (medians of $REPEAT; classic HLS unless -ll; behind live from the media clock):"
    printf '%-13s %6s %6s %6s %6s %8s %8s %8s %8s %8s %9s %8s %8s %8s %7s %7s %6s\n' target viewers media errors stalls "bl p50" "bl p99" "req p99" "seg p99" "pl p99" "req/s" "Mbit/s" "KiB/v" "net KiB" "srv %" "bench%" ok
    for t in "${TARGETS[@]}"; do
        for v in $VIEWERS; do
            k="vw.$t.$v"
            [[ -n $(get_all "$k.cpu") ]] || continue
            if ((v == 0)); then
                echo "$t alone (0 viewers): RSS growth KiB $(paste -d- <(get_all "$k.peak") <(get_all "$k.rss0") | bc | xargs), server CPU $(runs "$k.cpu") %"
                continue
            fi
            printf '%-13s %6s %6s %6s %6s %8s %8s %8s %8s %8s %9s %8s %8s %8s %7.0f %7s %6s\n' "$t" "$v" \
                "$(med "$k.media")" "$(med "$k.errors")" "$(med "$k.stalls")" "$(med "$k.bl50")" "$(med "$k.bl99")" \
                "$(med "$k.rq99")" "$(med "$k.seg99")" "$(med "$k.pl99")" "$(med "$k.rps")" "$(med "$k.mbps")" \
                "$(median $(get_all "$k.per" | awk '{ printf "%.1f\n", $1 / 1024 }'))" \
                "$(mem_net "$t" "$v")" "$(med "$k.cpu")" "$(fmt "$(med "$k.benchcpu")")" "$(runs "$k.ok" | tr -d ' ')"
            echo "              runs: errors $(runs "$k.errors"); bl p99 $(runs "$k.bl99"); req p99 $(runs "$k.rq99"); RSS growth KiB $(paste -d- <(get_all "$k.peak") <(get_all "$k.rss0") | bc | xargs); load $(runs "$k.load"); first ts $(runs "$k.firstts") ms"
        done
    done
    echo "  bl = behind live: received - (publisher's first frame + the segment's (part's) first video timestamp - the stream's first);"
    echo "  req p99 = request latency of the requests answered at once (playlists, init, segments; parts for -ll), the worst bench process;"
    echo "  KiB/v = (peak server VmRSS - VmRSS before) / viewers (nginx: master + workers); net = minus the server's growth alone (0 viewers);"
    echo "  ok = per run: 0 errors, every viewer got media, request p99 < 1 s; 'most viewers' = the largest count whose median run is ok."
fi
cp "$RESULTS" "${RESULTS_OUT:-/dev/null}" 2>/dev/null || true
