#!/usr/bin/env bash
# Ferrocast next to nginx-rtmp (Debian nginx + libnginx-mod-rtmp, HLS on) and xiu (the
# Rust live server, built from crates.io with `cargo install xiu`, HLS on) in one run,
# with the same publishers and the same HTTP load:
#   - origin CPU per ingested ~3 Mbps stream (utime+stime of the server from /proc),
#   - publish -> first playable (first part for ferrocast, first segment for nginx),
#   - playlist and segment requests/s and p99 under `wrk -t2 -c100 -d10s`.
# Prints a table of ratios (ferrocast / nginx). Loopback only; every process it
# starts is killed by its own PID; the system nginx is never started or touched
# (package installs run with a policy-rc.d that forbids service starts).
#
# Knobs (environment): STREAMS (10), CPU_SECS (30), WRK_SECS (10), PEERS ("nginx xiu"),
# XIU_VERSION (0.13.0), KEEP=1 keeps the temp dir (logs, configs) for inspection.
# SRS is not included: it builds its bundled dependencies from sources fetched over the
# network, which this kind of machine cannot reach.
set -euo pipefail

STREAMS=${STREAMS:-10}
CPU_SECS=${CPU_SECS:-30}
WRK_SECS=${WRK_SECS:-10}
PEERS=${PEERS:-"nginx xiu"}
# 0.14.0 panics on its first HLS stream unless S3 upload is configured (hls 0.5.6
# unwraps the S3 settings); 0.13.0 with its own lock file (hls 0.5.5) works.
XIU_VERSION=${XIU_VERSION:-0.13.0}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d /tmp/ferrocast-vs-nginx.XXXXXX)
PIDS=()

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

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

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

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
log "building ferrocast (release)"
(cd "$ROOT" && cargo build --release -q -p ferrocast-cli)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
FERROCAST=$TARGET_DIR/release/ferrocast
BENCH=("$FERROCAST" bench)

# --- the clip: ~3 Mbps H.264 (2 s GOP) + AAC, 10 s, made once ----------------------
CLIP=$TMP/clip-3mbps.flv
log "encoding the 3 Mbps clip"
ffmpeg -nostdin -loglevel error -y \
    -f lavfi -i "testsrc2=size=1280x720:rate=30" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -t 10 -c:v libx264 -preset veryfast -tune zerolatency -pix_fmt yuv420p \
    -b:v 2900k -minrate 2900k -maxrate 2900k -bufsize 2900k -x264-params nal-hrd=cbr \
    -g 60 -keyint_min 60 -sc_threshold 0 \
    -c:a aac -b:a 128k -f flv "$CLIP"

# --- helpers ---------------------------------------------------------------------------
cpu_ticks() { # utime + stime of a PID, in clock ticks
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
now_s() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.6f\", $* }"; }

wait_http() { # URL, seconds: until it answers at all
    local deadline=$(($(date +%s) + $2))
    until curl -s -o /dev/null --max-time 1 "$1"; do
        (($(date +%s) < deadline)) || { log "timeout waiting for $1"; return 1; }
        sleep 0.1
    done
}

# Sets FIRST: seconds from starting one publisher until the playlist lists something
# matching the pattern ("nan" if it never does while the publisher runs).
first_playable() { # name rtmp_base playlist_url pattern
    local name=$1 base=$2 url=$3 pattern=$4 t0 t1
    t0=$(now_s)
    "${BENCH[@]}" publish --url "$base" --streams 1 --key-prefix first --file "$CLIP" \
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

# Runs the whole workload against one server. Sets R_<name>_{cpu,first,pl_rps,...}.
url_of() { # template key: every @KEY@ in the template replaced by key
    echo "${1//@KEY@/$2}"
}

measure() { # name server_pid rtmp_base playlist_url_template(@KEY@) first_pattern segment_regex
    local name=$1 spid=$2 base=$3 url_fmt=$4 first_pattern=$5 seg_re=$6
    log "$name: publish -> first playable"
    first_playable "$name" "$base" "$(url_of "$url_fmt" first-0)" "$first_pattern"
    local first=$FIRST
    sleep 2

    log "$name: $STREAMS publishers, CPU over ${CPU_SECS}s"
    local total=$((3 + CPU_SECS + 2 * WRK_SECS + 8))
    "${BENCH[@]}" publish --url "$base" --streams "$STREAMS" --key-prefix bench --file "$CLIP" \
        --duration "$total" --json >"$TMP/$name-publish.json" 2>"$TMP/$name-publish.log" &
    local ppid=$!
    PIDS+=("$ppid")
    sleep 3 # connected and past the first GOP
    local c0 p0 t0 c1 p1 t1
    c0=$(cpu_ticks "$spid")
    p0=$(cpu_ticks "$ppid")
    t0=$(now_s)
    sleep "$CPU_SECS"
    c1=$(cpu_ticks "$spid")
    p1=$(cpu_ticks "$ppid")
    t1=$(now_s)
    local hz wall cpu pubcpu
    hz=$(getconf CLK_TCK)
    wall=$(calc "$t1 - $t0")
    cpu=$(echo "($c1 - $c0) / $hz / $wall * 100 / $STREAMS" | bc -l)
    pubcpu=$(echo "($p1 - $p0) / $hz / $wall * 100 / $STREAMS" | bc -l)

    local pl seg
    pl=$(url_of "$url_fmt" bench-0)
    seg=$(curl -fs --max-time 2 "$pl" | grep -E "$seg_re" | tail -n 1)
    seg="${pl%/*}/$seg"
    log "$name: wrk playlist $pl"
    read -r pl_rps pl_p99 pl_bad <<<"$(wrk_run "$pl")"
    log "$name: wrk segment $seg"
    read -r seg_rps seg_p99 seg_bad <<<"$(wrk_run "$seg")"
    local seg_bytes
    seg_bytes=$(curl -fs --max-time 2 "$seg" | wc -c)
    wait "$ppid" 2>/dev/null || true

    local connected
    connected=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["connected"], r["failed"], round(r["bitrate_per_stream_bps"]/1e6, 2))' "$TMP/$name-publish.json" 2>/dev/null || echo "? ? ?")
    printf -v "R_${name}_cpu" '%.3f' "$cpu"
    printf -v "R_${name}_pubcpu" '%.3f' "$pubcpu"
    printf -v "R_${name}_first" '%.2f' "$first"
    printf -v "R_${name}_pl_rps" '%.0f' "$pl_rps"
    printf -v "R_${name}_pl_p99" '%.2f' "$pl_p99"
    printf -v "R_${name}_seg_rps" '%.0f' "$seg_rps"
    printf -v "R_${name}_seg_p99" '%.2f' "$seg_p99"
    printf -v "R_${name}_info" 'publishers connected/failed/Mbit/s each: %s; wrk non-2xx: playlist %s, segment %s; segment %s bytes' \
        "$connected" "${pl_bad:-0}" "${seg_bad:-0}" "$seg_bytes"
}

# --- ferrocast ---------------------------------------------------------------------
F_RTMP=$(free_port)
F_HTTP=$(free_port)
log "starting ferrocast origin (rtmp $F_RTMP, http $F_HTTP)"
RUST_LOG=warn "$FERROCAST" origin --rtmp-listen "127.0.0.1:$F_RTMP" --http-listen "127.0.0.1:$F_HTTP" \
    >"$TMP/ferrocast.log" 2>&1 &
F_PID=$!
PIDS+=("$F_PID")
wait_http "http://127.0.0.1:$F_HTTP/readyz" 20
measure ferrocast "$F_PID" "rtmp://127.0.0.1:$F_RTMP/live" \
    "http://127.0.0.1:$F_HTTP/live/@KEY@/index.m3u8" '^#EXT-X-PART:' '^seg-[0-9]+\.m4s$'
kill "$F_PID" && wait "$F_PID" 2>/dev/null || true

# --- nginx-rtmp --------------------------------------------------------------------
has_peer() { [[ " $PEERS " == *" $1 "* ]]; }
if has_peer nginx; then
N_RTMP=$(free_port)
N_HTTP=$(free_port)
ND=$TMP/nginx
mkdir -p "$ND/hls" "$ND/tmp"
cat >"$ND/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $ND/nginx.pid;
error_log $ND/error.log warn;
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
events { worker_connections 4096; }
rtmp {
    server {
        listen 127.0.0.1:$N_RTMP;
        chunk_size 4096;
        application live {
            live on;
            record off;
            hls on;
            hls_path $ND/hls;
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
    client_body_temp_path $ND/tmp/body;
    proxy_temp_path $ND/tmp/proxy;
    fastcgi_temp_path $ND/tmp/fastcgi;
    uwsgi_temp_path $ND/tmp/uwsgi;
    scgi_temp_path $ND/tmp/scgi;
    types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
    server {
        listen 127.0.0.1:$N_HTTP;
        location /hls/ {
            alias $ND/hls/;
            add_header Cache-Control no-cache;
        }
    }
}
EOF
log "starting nginx-rtmp (rtmp $N_RTMP, http $N_HTTP)"
nginx -p "$ND" -e "$ND/error.log" -c "$ND/nginx.conf" >"$ND/stdout.log" 2>&1 &
N_PID=$!
PIDS+=("$N_PID")
wait_http "http://127.0.0.1:$N_HTTP/hls/" 10 || { cat "$ND/error.log" >&2; exit 1; }
measure nginx "$N_PID" "rtmp://127.0.0.1:$N_RTMP/live" \
    "http://127.0.0.1:$N_HTTP/hls/@KEY@.m3u8" '\.ts$' '\.ts$'
kill "$N_PID" && wait "$N_PID" 2>/dev/null || true
fi

# --- xiu ---------------------------------------------------------------------------
XIU=""
if has_peer xiu; then
    XIU=$(command -v xiu || true)
    if [[ -z $XIU ]]; then
        XIU_ROOT=$ROOT/target/peers/xiu-$XIU_VERSION
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
                --target-dir "$ROOT/target/peers/build" >"$TMP/xiu-build.log" 2>&1 ||
                { log "xiu did not build; skipping it (see $TMP/xiu-build.log)"; }
        fi
        [[ -x $XIU_ROOT/bin/xiu ]] && XIU=$XIU_ROOT/bin/xiu
    fi
fi
if [[ -n $XIU ]]; then
    X_RTMP=$(free_port)
    X_HTTP=$(free_port)
    XD=$TMP/xiu
    mkdir -p "$XD"
    log "starting xiu (rtmp $X_RTMP, hls http $X_HTTP)"
    # xiu writes its HLS files under its working directory and serves them from there.
    (cd "$XD" && exec "$XIU" --rtmp "$X_RTMP" --hls "$X_HTTP" --log warn) >"$XD/xiu.log" 2>&1 &
    X_PID=$!
    PIDS+=("$X_PID")
    wait_http "http://127.0.0.1:$X_HTTP/" 10 || { cat "$XD/xiu.log" >&2; exit 1; }
    measure xiu "$X_PID" "rtmp://127.0.0.1:$X_RTMP/live" \
        "http://127.0.0.1:$X_HTTP/live/@KEY@/@KEY@.m3u8" '\.ts$' '^[0-9]+\.ts$'
    kill "$X_PID" && wait "$X_PID" 2>/dev/null || true
fi

# --- the table -----------------------------------------------------------------------
ratio() { python3 -c 'import sys; a,b=map(float,sys.argv[1:]); print("%.2f" % (a/b) if b else "n/a")' "$1" "$2" 2>/dev/null || echo n/a; }
val() { local v="R_${1}_$2"; echo "${!v:-n/a}"; }
COLS=(ferrocast)
has_peer nginx && COLS+=(nginx)
[[ -n $XIU ]] && COLS+=(xiu)
row() { # label metric
    local line c
    line=$(printf '%-40s' "$1")
    for c in "${COLS[@]}"; do line+=$(printf ' %12s' "$(val "$c" "$2")"); done
    for c in "${COLS[@]:1}"; do line+=$(printf ' %10s' "$(ratio "$(val ferrocast "$2")" "$(val "$c" "$2")")"); done
    echo "$line"
}
echo
echo "ferrocast vs ${COLS[*]:1} — $STREAMS publishers of a ~3 Mbps 2 s-GOP H.264+AAC clip; $(nproc) cores; $(date -u +%FT%TZ)"
header=$(printf '%-40s' metric)
for c in "${COLS[@]}"; do header+=$(printf ' %12s' "$c"); done
for c in "${COLS[@]:1}"; do header+=$(printf ' %10s' "f/${c}"); done
echo "$header"
row "origin CPU per stream (% of a core)" cpu
row "publish -> first playable (s)" first
row "playlist req/s (wrk -c100)" pl_rps
row "playlist p99 (ms)" pl_p99
row "segment req/s (wrk -c100)" seg_rps
row "segment p99 (ms)" seg_p99
for c in "${COLS[@]}"; do
    echo "$c: $(val "$c" info); bench publisher CPU $(val "$c" pubcpu) % of a core per stream"
done
echo "first playable = first part listed (ferrocast), first segment listed (the others)."
