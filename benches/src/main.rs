//! Lists goheap's benchmarks.
fn main() {
    println!("goheap benchmarks (build goheap first: cargo build --release -p goheap):");
    println!("  cargo run --release -p goheap-benches --bin cycle_cost   # read syscalls and CPU per cycle, 1k and 10k buckets");
    println!("  cargo run --release -p goheap-benches --bin agent_load   # agent RSS and CPU with 50 Go processes, 10 s interval");
    println!("  cargo run --release -p goheap-benches --bin node_scale   # issue #9: Debian's Go daemons, 50 processes of 23 binaries: time to readable, RSS, growth per binary");
    println!("  cargo run --release -p goheap-benches --bin cli_profile   # issue #9: goheap profile vs the target's /debug/pprof/heap, 10k buckets: wall time, peak RSS");
    println!("  cargo run --release -p goheap-benches --bin observer_effect   # issue #9: caddy under wrk with and without the agent at 1 s");
}
