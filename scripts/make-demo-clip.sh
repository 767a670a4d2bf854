#!/usr/bin/env bash
# Regenerates cli/assets/demo.flv, the clip that `ferrocast standalone --demo` publishes in a loop.
#
# Made entirely from ffmpeg's lavfi sources, so it needs no input file and no network:
#   video  testsrc2 + a burned-in running clock and frame counter (drawtext, DejaVu Sans Mono)
#   audio  a 440 Hz sine with an 880 Hz beep at the start of every second, so the beep lands on
#          each keyframe and A/V sync can be checked by eye and ear.
#
# Byte-for-byte reproducible on the same ffmpeg/libx264 build (Debian bookworm: ffmpeg 5.1,
# libx264 0.164): bitexact flags keep version strings out of the container, and one encoder
# thread keeps x264's frame-threading from changing the bitstream with the core count.
#
# Needs: ffmpeg (with libx264, libfreetype), fonts-dejavu-core.
# Usage: scripts/make-demo-clip.sh [OUTPUT]   (default: cli/assets/demo.flv beside this script)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/cli/assets/demo.flv}"
font=/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf

command -v ffmpeg >/dev/null || { echo "make-demo-clip: ffmpeg not found (apt-get install ffmpeg)" >&2; exit 1; }
# Refuse rather than silently fall back to another font: the output must be the same every time.
[ -r "$font" ] || { echo "make-demo-clip: $font missing (apt-get install fonts-dejavu-core)" >&2; exit 1; }

# Burned-in overlay: stream time (h:m:s.ms) and frame number, readable at 640x360.
overlay="drawtext=fontfile=${font}:fontsize=24:fontcolor=white:box=1:boxcolor=black@0.6:boxborderw=8"
overlay+=":x=(w-tw)/2:y=h-th-24:text='ferrocast  %{pts\\:hms}  frame %{n}'"

mkdir -p "$(dirname "$out")"
tmp="$(mktemp "${out}.XXXXXX")"
trap 'rm -f "$tmp"' EXIT

args=(
  -hide_banner -loglevel error -nostdin -y
  # Sources: exactly 8 s (240 frames) of 640x360 at 30 fps, and 8 s of 48 kHz sine
  # (beep_factor=2 -> an 880 Hz beep at the start of every second). 8 s because it is the
  # shortest length that is whole in both tracks' frames and in GOPs: 240 video frames
  # (8 GOPs of 30), 375 AAC frames of 1024 samples at 48 kHz. The demo publisher loops the
  # clip, and a loop length that is not whole in either track would leave a hole (or an
  # overlap) in that track's timeline at every loop point, which players stall on.
  -f lavfi -i "testsrc2=size=640x360:rate=30:duration=8"
  -f lavfi -i "sine=frequency=440:beep_factor=2:sample_rate=48000:duration=8"
  # Video: visible clock, 4:2:0 as every player expects.
  # Audio: 2176 samples of silence put *before* t=0. x264 with 2 B-frames (b-pyramid) starts
  # DTS 2 frames (3200 samples' worth) before the first PTS; the AAC encoder's priming adds
  # 1024 samples before its first input sample. 1024 + 2176 = 3200, so after ffmpeg shifts
  # timestamps to be non-negative, the first video tag and the first audio tag both sit at
  # 0 ms and the first picture (PTS 67 ms) and the first beep are exactly in sync.
  -filter_complex "[0:v]${overlay},format=yuv420p[v];[1:a]adelay=delays=2176S:all=1,asetpts=PTS-2176/SR/TB[a]"
  -map "[v]" -map "[a]"
  # --- video: H.264 High@3.1 (avc1.64001f), what OBS/ffmpeg publishers typically send
  -c:v libx264 -profile:v high -level:v 3.1
  -preset medium -tune zerolatency       # zerolatency: no lookahead/mbtree, like a live encoder
  -threads 1                             # deterministic bitstream whatever the core count
  -r 30                                  # constant 30 fps
  -g 30 -keyint_min 30 -sc_threshold 0   # an IDR exactly every 30 frames (1 s), never in between,
                                         # so every segment/part boundary logic sees fixed GOPs
  -bf 2                                  # B-frames on (zerolatency turns them off): exercises
                                         # composition-time offsets (pts != dts) in the origin
  -b:v 400k -maxrate 400k -bufsize 400k  # ~400 kbps, capped like a live CBR-ish encode
  -pix_fmt yuv420p
  # --- audio: AAC-LC, 48 kHz stereo, 96 kbps
  -c:a aac -profile:a aac_low -ar 48000 -ac 2 -b:a 96k
  # --- container
  -fflags +bitexact -flags:v +bitexact -flags:a +bitexact   # no encoder version strings
  -f flv
)

ffmpeg "${args[@]}" "$tmp"
chmod 644 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
echo "make-demo-clip: wrote $out ($(stat -c %s "$out") bytes)"
