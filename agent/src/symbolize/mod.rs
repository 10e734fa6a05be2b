//! Symbolization: `.gopclntab` parsed by its parts ([`pclntab`]), the per-binary symbolizer
//! ([`symbolizer`]) and stacks to pprof locations as `runtime/pprof` builds them ([`locations`]).

pub mod cache;
pub mod locations;
pub mod pclntab;
pub mod symbolizer;

pub use symbolizer::Symbolizer;
