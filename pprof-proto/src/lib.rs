//! pprof
