//! Benchmark: find the runtime globals in a large `.symtab` (≥ 10 MB) and record time and peak RSS
//! growth. Goal: < 1 MiB growth, whatever the size of the table.
//!
//! A k3s-sized Go binary has an ~11 MB `.symtab`; none ships here, so this writes an ELF file with
//! the same shape: a real `.go.buildinfo` header, a `.symtab` of N `Elf64_Sym` entries with Go-like
//! names in `.strtab`, and the wanted `runtime.*` symbols placed near the end (worst case for a scan).
//! For comparison it also runs the naive method (read the whole file, iterate every symbol with the
//! `object` crate), in a child process so the two peaks do not mix.
//!
//! Usage: `cargo run --release -p goheap-benches --bin symtab_scan [SYMBOLS]` (default 480000).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

const WANTED: [&str; 4] = [
    "runtime.mbuckets",
    "runtime.MemProfileRate",
    "runtime.disableMemoryProfiling",
    "runtime.mProfCycle",
];

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resets the peak RSS counter (VmHWM) to the current RSS.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Writes a synthetic 64-bit little-endian ELF with `.go.buildinfo`, `.symtab`, `.strtab`, `.shstrtab`.
fn write_elf(path: &Path, nsyms: usize) -> std::io::Result<(u64, u64)> {
    let mut buildinfo = b"\xff Go buildinf:".to_vec();
    buildinfo.push(8);
    buildinfo.push(2);
    buildinfo.resize(32, 0);
    let ver = format!("go{}", goheap_benches::GO_VERSION);
    let ver = ver.as_bytes();
    buildinfo.push(ver.len() as u8);
    buildinfo.extend_from_slice(ver);
    buildinfo.push(0);
    buildinfo.resize(64, 0);

    let mut strtab: Vec<u8> = vec![0];
    let mut symtab: Vec<u8> = vec![0u8; 24];
    let pkgs = [
        "k8s.io/apimachinery/pkg/util/net",
        "github.com/containerd/containerd/v2/core",
        "google.golang.org/grpc/internal/transport",
        "main",
    ];
    let push_sym = |name: &str,
                    value: u64,
                    size: u64,
                    info: u8,
                    strtab: &mut Vec<u8>,
                    symtab: &mut Vec<u8>| {
        let off = strtab.len() as u32;
        strtab.extend_from_slice(name.as_bytes());
        strtab.push(0);
        let mut s = [0u8; 24];
        s[0..4].copy_from_slice(&off.to_le_bytes());
        s[4] = info;
        s[6..8].copy_from_slice(&1u16.to_le_bytes());
        s[8..16].copy_from_slice(&value.to_le_bytes());
        s[16..24].copy_from_slice(&size.to_le_bytes());
        symtab.extend_from_slice(&s);
    };
    for i in 0..nsyms {
        let name = format!(
            "{}.(*handler{}).serveRequest{}.func{}",
            pkgs[i % pkgs.len()],
            i / 7,
            i % 13,
            i % 5
        );
        push_sym(
            &name,
            0x400000 + 16 * i as u64,
            16,
            0x12,
            &mut strtab,
            &mut symtab,
        );
    }
    for (k, w) in WANTED.iter().enumerate() {
        push_sym(
            w,
            0x9000000 + 8 * k as u64,
            8,
            0x11,
            &mut strtab,
            &mut symtab,
        );
    }
    let shstrtab = b"\0.go.buildinfo\0.symtab\0.strtab\0.shstrtab\0".to_vec();
    let name_off = |n: &str| {
        shstrtab
            .windows(n.len())
            .position(|w| w == n.as_bytes())
            .unwrap() as u32
    };

    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let off_bi = 64u64;
    let off_sym = off_bi + buildinfo.len() as u64;
    let off_str = off_sym + symtab.len() as u64;
    let off_shs = off_str + strtab.len() as u64;
    let off_sh = (off_shs + shstrtab.len() as u64 + 7) & !7;
    // ELF header
    let mut h = Vec::with_capacity(64);
    h.extend_from_slice(b"\x7fELF\x02\x01\x01\0");
    h.extend_from_slice(&[0u8; 8]);
    h.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    h.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&0x401000u64.to_le_bytes()); // entry
    h.extend_from_slice(&0u64.to_le_bytes()); // phoff
    h.extend_from_slice(&off_sh.to_le_bytes()); // shoff
    h.extend_from_slice(&0u32.to_le_bytes()); // flags
    h.extend_from_slice(&64u16.to_le_bytes()); // ehsize
    h.extend_from_slice(&56u16.to_le_bytes()); // phentsize
    h.extend_from_slice(&0u16.to_le_bytes()); // phnum
    h.extend_from_slice(&64u16.to_le_bytes()); // shentsize
    h.extend_from_slice(&5u16.to_le_bytes()); // shnum
    h.extend_from_slice(&4u16.to_le_bytes()); // shstrndx
    f.write_all(&h)?;
    f.write_all(&buildinfo)?;
    f.write_all(&symtab)?;
    f.write_all(&strtab)?;
    f.write_all(&shstrtab)?;
    f.write_all(&vec![
        0u8;
        (off_sh - off_shs - shstrtab.len() as u64) as usize
    ])?;
    let sh = |name: u32,
              typ: u32,
              flags: u64,
              addr: u64,
              off: u64,
              size: u64,
              link: u32,
              info: u32,
              entsize: u64| {
        let mut s = Vec::with_capacity(64);
        s.extend_from_slice(&name.to_le_bytes());
        s.extend_from_slice(&typ.to_le_bytes());
        s.extend_from_slice(&flags.to_le_bytes());
        s.extend_from_slice(&addr.to_le_bytes());
        s.extend_from_slice(&off.to_le_bytes());
        s.extend_from_slice(&size.to_le_bytes());
        s.extend_from_slice(&link.to_le_bytes());
        s.extend_from_slice(&info.to_le_bytes());
        s.extend_from_slice(&8u64.to_le_bytes());
        s.extend_from_slice(&entsize.to_le_bytes());
        s
    };
    f.write_all(&sh(0, 0, 0, 0, 0, 0, 0, 0, 0))?;
    f.write_all(&sh(
        name_off(".go.buildinfo"),
        1,
        3,
        0x8000000,
        off_bi,
        buildinfo.len() as u64,
        0,
        0,
        0,
    ))?;
    f.write_all(&sh(
        name_off(".symtab"),
        2,
        0,
        0,
        off_sym,
        symtab.len() as u64,
        3,
        1,
        24,
    ))?;
    f.write_all(&sh(
        name_off(".strtab"),
        3,
        0,
        0,
        off_str,
        strtab.len() as u64,
        0,
        0,
        0,
    ))?;
    f.write_all(&sh(
        name_off(".shstrtab"),
        3,
        0,
        0,
        off_shs,
        shstrtab.len() as u64,
        0,
        0,
        0,
    ))?;
    f.flush()?;
    Ok((symtab.len() as u64, strtab.len() as u64))
}

fn streaming(path: &Path) {
    reset_peak();
    let before = status_kib("VmHWM:");
    let t = Instant::now();
    let bin = goheap::binary::GoBinary::open(path).expect("open");
    let (syms, stats) = bin
        .runtime_symbols_from_symtab()
        .expect("scan")
        .expect("symbols found");
    let el = t.elapsed();
    let after = status_kib("VmHWM:");
    assert_eq!(syms.mbuckets, 0x9000000);
    assert_eq!(syms.mem_profile_rate, 0x9000008);
    println!(
        "| goheap streaming scan | {:.1} ms | {} KiB | {} preads, {:.1} MiB read |",
        el.as_secs_f64() * 1e3,
        after.saturating_sub(before),
        stats.read_calls,
        stats.bytes_read as f64 / (1 << 20) as f64
    );
}

fn naive(path: &Path) {
    use object::{Object, ObjectSymbol};
    reset_peak();
    let before = status_kib("VmHWM:");
    let t = Instant::now();
    let data = std::fs::read(path).expect("read");
    let file = object::File::parse(&*data).expect("parse");
    let mut found = 0;
    let names: Vec<(String, u64)> = file
        .symbols()
        .map(|s| (s.name().unwrap_or("").to_string(), s.address()))
        .collect();
    for (n, _) in &names {
        if WANTED.contains(&n.as_str()) {
            found += 1;
        }
    }
    let el = t.elapsed();
    let after = status_kib("VmHWM:");
    assert_eq!(found, WANTED.len());
    println!(
        "| naive: read file, collect all symbols (like debug/elf Symbols()) | {:.1} ms | {} KiB | whole file |",
        el.as_secs_f64() * 1e3,
        after.saturating_sub(before)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "--naive" {
        naive(Path::new(&args[2]));
        return;
    }
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(480_000);
    let path: PathBuf =
        std::env::temp_dir().join(format!("goheap-bench-symtab-{}.elf", std::process::id()));
    let (symtab, strtab) = write_elf(&path, n).expect("write ELF");
    println!(
        "synthetic Go ELF: {} symbols, .symtab {:.1} MiB, .strtab {:.1} MiB\n",
        n + 4,
        symtab as f64 / (1 << 20) as f64,
        strtab as f64 / (1 << 20) as f64
    );
    println!("| method | time | peak RSS growth | I/O |\n|---|---|---|---|");
    // Warm the page cache so both methods measure parsing, not the disk.
    let _ = std::fs::read(&path);
    streaming(&path);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--naive")
        .arg(&path)
        .output()
        .expect("naive child");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let _ = std::fs::remove_file(&path);
}
