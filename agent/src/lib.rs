//! goheap: read a running Go process's heap profile from outside.
//!
//! Pipeline: locate (`binary`, `symtab`, `buildinfo`) → read (`memory`, `maps`) → walk (`buckets`,
//! `layout`) → symbolize (`pclntab`, `stack`) → emit (`heap_profile`).

pub mod agent;
pub mod binary;
pub mod buckets;
pub mod buildinfo;
pub mod coderef;
pub mod debugfile;
pub mod discovery;
pub mod error;
pub mod heap_profile;
pub mod layout;
pub mod maps;
pub mod memory;
pub mod pclntab;
pub mod process;
pub mod profiler;
pub mod stack;
pub mod symbolizer;
pub mod symtab;
