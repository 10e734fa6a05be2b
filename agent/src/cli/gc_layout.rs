//! The hidden `goheap gc-layout FILE…`: the generator of
//! [`crate::goroutine::gc_layout::GC_LAYOUTS`] (prints one table row per binary, from its DWARF).

use std::path::PathBuf;

use clap::Args;

use crate::cli::Failure;
use crate::goroutine::gc_layout::GcLayout;

/// `goheap gc-layout FILE…` (hidden).
#[derive(Args)]
pub struct GcLayoutArgs {
    /// Go binaries with DWARF (not built with -ldflags=-w).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn run(args: GcLayoutArgs) -> Result<(), Failure> {
    for f in &args.files {
        let bin = crate::binary::GoBinary::open(f)
            .map_err(|e| Failure::Other(anyhow::anyhow!("{}: {e}", f.display())))?;
        let l = GcLayout::from_dwarf(f).map_err(|e| Failure::Other(e.into()))?;
        let arch = crate::goroutine::layout::arch_name(bin.arch);
        println!(
            "{}",
            l.table_row(bin.go_version.minor, arch, &bin.go_version_raw)
        );
    }
    Ok(())
}
