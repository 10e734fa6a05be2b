//! The `goheap` binary: everything lives in the library ([`goheap::cli`]).

fn main() -> std::process::ExitCode {
    goheap::cli::main()
}
