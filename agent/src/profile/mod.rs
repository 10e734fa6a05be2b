//! Profiles: the pprof heap profile exactly as `writeHeapProto` writes it ([`heap`]), summaries for
//! people ([`summary`]) and one-shot profiling of a process ([`oneshot`]).

pub mod diff;
pub mod flamegraph;
pub mod heap;
pub mod oneshot;
pub mod summary;
pub mod window;
