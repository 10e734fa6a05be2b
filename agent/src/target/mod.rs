//! The process from outside: procfs paths and liveness ([`procfs`]), its container and pod
//! ([`cgroup`]), mappings and the PIE load bias
//! ([`maps`]), read-only remote memory ([`memory`]), opening a process for reading ([`open`]) and
//! finding Go processes on the machine ([`discovery`]), and why the kernel refused access ([`access`]).

pub mod access;
pub mod cgroup;
pub mod discovery;
pub mod k8s;
pub mod maps;
pub mod memory;
pub mod open;
pub mod procfs;
pub mod select;
pub mod state;
