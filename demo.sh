#!/usr/bin/env bash
# Demo: profile a bundled Go workload from outside. Installs one Go toolchain (cached under
# ~/.cache/goheap), builds goheap and the heap fixture, starts the fixture, runs `goheap profile`
# against its pid, and opens the result with `go tool pprof -top`. Leaves goheap-demo.pb.gz here.
set -euo pipefail
cd "$(dirname "$0")"
GO_VERSION="${GO_VERSION:-1.24.11}"
# Only this toolchain and what building needs; none of the test suite's tools (Go 1.19, prometheus, ...).
export GOHEAP_GO_VERSIONS="$GO_VERSION" GOHEAP_TEST_TOOLS=0
bash fixtures/install-toolchains.sh
GOHEAP_SKIP_INSTALL=1 bash fixtures/build.sh
cargo build --release --locked -p goheap
cache="${GOHEAP_CACHE:-$HOME/.cache/goheap}"
fixture="$cache/fixtures/heapfixture/$GO_VERSION/default/heapfixture"
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
GOGC=off "$fixture" -ready "$work/ready" -profile "$work/self.pb.gz" 2>/dev/null &
pid=$!
for _ in $(seq 1 300); do [ -e "$work/ready" ] && break; sleep 0.1; done
[ -e "$work/ready" ] || { echo "demo: the fixture did not start" >&2; exit 1; }
echo "== goheap ps"
./target/release/goheap ps
echo
echo "== goheap profile --pid $pid -o goheap-demo.pb.gz"
./target/release/goheap profile --pid "$pid" -o goheap-demo.pb.gz
echo
echo "== go tool pprof -top goheap-demo.pb.gz (inuse_space)"
"$cache/go/$GO_VERSION/goroot/bin/go" tool pprof -top -nodecount=8 goheap-demo.pb.gz
