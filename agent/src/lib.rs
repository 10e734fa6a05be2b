//! goheap: read a running Go process's heap profile from outside.
//!
//! Pipeline: locate (`binary`, `symtab`, `buildinfo`) → read (`memory`, `maps`) → walk (`buckets`,
//! `layout`) → symbolize (`pclntab`, `stack`) → emit (`heap_profile`).

pub mod binary;
pub mod buckets;
pub mod buildinfo;
pub mod error;
pub mod layout;
pub mod maps;
pub mod memory;
pub mod symtab;
pub mod agent;
pub mod discovery;
pub mod heap_profile;
pub mod process;
pub mod profiler;
