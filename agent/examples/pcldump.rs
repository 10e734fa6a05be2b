//! Prints what `Pclntab` finds in a Go ELF binary and times parsing and lookups.
//! Usage: cargo run --release --example pcldump -- <binary>
fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: pcldump <go-elf-binary>");
        std::process::exit(2);
    };
    let data = std::fs::read(&path).expect("read binary");
    let t0 = std::time::Instant::now();
    let tab = match goheap::pclntab::Pclntab::parse(&data) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    let parse = t0.elapsed();
    println!(
        "{path}: file {} bytes, go {:?}, {:?}, {} funcs, text {:#x}, moduledata {:#x}, gofunc {:#x}, owned {} bytes, parse {:?}",
        data.len(),
        tab.go_version(),
        tab.format(),
        tab.num_funcs(),
        tab.text_start(),
        tab.moduledata_addr(),
        tab.gofunc_addr(),
        tab.owned_bytes(),
        parse
    );
    let pcs: Vec<u64> = tab
        .funcs()
        .map(|f| f.entry + (f.end - f.entry) / 2 + 1)
        .collect();
    let t1 = std::time::Instant::now();
    let mut frames = 0usize;
    for &pc in &pcs {
        frames += tab.frames_for_pcs(&[pc]).len();
    }
    let el = t1.elapsed();
    println!(
        "{} single-PC CallersFrames lookups ({} frames) in {:?} ({:?}/lookup)",
        pcs.len(),
        frames,
        el,
        el / pcs.len().max(1) as u32
    );
}
