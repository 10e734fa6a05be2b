//! goheap: read a running Go process's heap profile from outside.
//!
//! Pipeline: locate (`binary`, `symtab`, `buildinfo`) → read (`memory`, `maps`) → walk (`buckets`,
//! `layout`) → symbolize (`pclntab`, `stack`) → emit (`heap_profile`).
pub mod coderef;
pub mod debugfile;
