//! Reading another process's memory, read-only.
//!
//! [`RemoteMemory`] is the small interface the bucket walker uses. Two implementations:
//! [`ProcMem`] (`pread` on `/proc/PID/mem`, one syscall per range) and [`VmReader`]
//! (`process_vm_readv`, up to `IOV_MAX` ranges per syscall, falling back to `ProcMem` when the kernel
//! refuses it, e.g. under a seccomp profile that blocks it). Neither ever writes: the only write goheap
//! can do is [`write_u64_proven`], used by force mode alone.

use std::cell::Cell;
use std::fs::File;
use std::io::IoSliceMut;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;

/// Linux `IOV_MAX`: iovecs per `process_vm_readv` call.
pub const IOV_MAX: usize = 1024;

/// Errors reading remote memory.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum MemoryError {
    #[error("process {0} is gone")]
    ProcessGone(i32),
    #[error("permission denied reading memory of process {0}")]
    PermissionDenied(i32),
    #[error("address {addr:#x}+{len} is not readable in process {pid}")]
    Unmapped { pid: i32, addr: u64, len: usize },
    #[error("reading memory of process {pid}: {errno}")]
    Other { pid: i32, errno: Errno },
}

/// One range to read in a batch: `buf.len()` bytes at `addr`.
pub struct ReadRequest<'a> {
    pub addr: u64,
    pub buf: &'a mut [u8],
    /// Set by the reader: how many bytes arrived (a short count means the rest was unreadable).
    pub got: usize,
}

/// Syscall accounting, so benchmarks and metrics can show the cost of a cycle.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    pub syscalls: u64,
    pub bytes: u64,
}

/// Read-only access to a target's address space.
pub trait RemoteMemory {
    /// The target's pid.
    fn pid(&self) -> i32;
    /// Reads up to `buf.len()` bytes at `addr`; returns how many arrived (short at an unmapped page).
    fn read_partial(&self, addr: u64, buf: &mut [u8]) -> Result<usize, MemoryError>;
    /// Reads many ranges; fills each request's `got`. The default does one `read_partial` per range.
    fn read_batch(&self, reqs: &mut [ReadRequest<'_>]) -> Result<(), MemoryError> {
        for r in reqs.iter_mut() {
            r.got = self.read_partial(r.addr, r.buf)?;
        }
        Ok(())
    }
    /// Syscalls and bytes so far.
    fn stats(&self) -> ReadStats;

    /// Reads exactly `buf.len()` bytes at `addr`.
    fn read_exact(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let n = self.read_partial(addr, buf)?;
        if n < buf.len() {
            return Err(MemoryError::Unmapped {
                pid: self.pid(),
                addr,
                len: buf.len(),
            });
        }
        Ok(())
    }
    /// Reads a little-endian u64.
    fn read_u64(&self, addr: u64) -> Result<u64, MemoryError> {
        let mut b = [0u8; 8];
        self.read_exact(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    /// Reads a little-endian u32.
    fn read_u32(&self, addr: u64) -> Result<u32, MemoryError> {
        let mut b = [0u8; 4];
        self.read_exact(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    /// Reads one byte.
    fn read_u8(&self, addr: u64) -> Result<u8, MemoryError> {
        let mut b = [0u8; 1];
        self.read_exact(addr, &mut b)?;
        Ok(b[0])
    }
}

fn classify(pid: i32, errno: Errno, addr: u64, len: usize) -> MemoryError {
    match errno {
        Errno::ESRCH => MemoryError::ProcessGone(pid),
        Errno::EPERM | Errno::EACCES => MemoryError::PermissionDenied(pid),
        Errno::EIO | Errno::EFAULT => MemoryError::Unmapped { pid, addr, len },
        e => MemoryError::Other { pid, errno: e },
    }
}

/// `pread` on `/proc/PID/mem`, opened read-only.
pub struct ProcMem {
    pid: i32,
    file: File,
    stats: Cell<ReadStats>,
}

impl ProcMem {
    /// Opens `/proc/PID/mem` under `proc_root` read-only.
    pub fn open(proc_root: &Path, pid: i32) -> Result<ProcMem, MemoryError> {
        let path = proc_root.join(pid.to_string()).join("mem");
        let file = File::open(&path).map_err(|e| {
            let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
            match errno {
                Errno::ENOENT => MemoryError::ProcessGone(pid),
                other => classify(pid, other, 0, 0),
            }
        })?;
        Ok(ProcMem {
            pid,
            file,
            stats: Cell::new(ReadStats::default()),
        })
    }

    fn count(&self, bytes: usize) {
        let mut s = self.stats.get();
        s.syscalls += 1;
        s.bytes += bytes as u64;
        self.stats.set(s);
    }
}

impl RemoteMemory for ProcMem {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn read_partial(&self, addr: u64, buf: &mut [u8]) -> Result<usize, MemoryError> {
        if buf.is_empty() {
            return Ok(0);
        }
        // /proc/PID/mem takes the address as the file offset; offsets above i64::MAX are invalid.
        if addr > i64::MAX as u64 {
            return Err(MemoryError::Unmapped {
                pid: self.pid,
                addr,
                len: buf.len(),
            });
        }
        let r = self.file.read_at(buf, addr);
        match r {
            Ok(n) => {
                self.count(n);
                Ok(n)
            }
            Err(e) => {
                self.count(0);
                let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
                // A process that exited: its mem file reads 0 bytes or fails with ESRCH/EIO; tell the
                // two apart by whether the process directory still exists.
                if errno == Errno::EIO && !Path::new(&format!("/proc/{}", self.pid)).exists() {
                    return Err(MemoryError::ProcessGone(self.pid));
                }
                Err(classify(self.pid, errno, addr, buf.len()))
            }
        }
    }

    fn stats(&self) -> ReadStats {
        self.stats.get()
    }
}

/// `process_vm_readv` with up to [`IOV_MAX`] ranges per call; falls back to a [`ProcMem`] when the
/// syscall is refused (ENOSYS/EPERM from seccomp), so batched reads degrade to one pread per range.
pub struct VmReader {
    pid: i32,
    /// `/proc/PID/mem`, if it could be opened. It can't be for a non-root user holding only
    /// CAP_SYS_PTRACE when the target belongs to another user (the file is mode 0600, so opening it
    /// needs CAP_DAC_OVERRIDE too), while `process_vm_readv` only needs CAP_SYS_PTRACE.
    fallback: Result<ProcMem, MemoryError>,
    use_vm: Cell<bool>,
    stats: Cell<ReadStats>,
}

impl VmReader {
    /// Opens the reader. `/proc/PID/mem` is opened as the fallback when allowed; access itself is
    /// checked by the first read.
    pub fn open(proc_root: &Path, pid: i32) -> Result<VmReader, MemoryError> {
        let fallback = ProcMem::open(proc_root, pid);
        if let Err(MemoryError::ProcessGone(_)) = fallback {
            return Err(MemoryError::ProcessGone(pid));
        }
        Ok(VmReader {
            pid,
            fallback,
            use_vm: Cell::new(true),
            stats: Cell::new(ReadStats::default()),
        })
    }

    /// Whether `process_vm_readv` is in use (false after a refusal switched to pread).
    pub fn uses_process_vm_readv(&self) -> bool {
        self.use_vm.get()
    }

    fn count(&self, calls: u64, bytes: usize) {
        let mut s = self.stats.get();
        s.syscalls += calls;
        s.bytes += bytes as u64;
        self.stats.set(s);
    }

    /// One `process_vm_readv` over `reqs` (≤ IOV_MAX). Returns bytes transferred. The kernel stops at
    /// the first range that faults, so `got` is filled in order up to the total.
    fn readv_once(&self, reqs: &mut [ReadRequest<'_>]) -> Result<usize, Errno> {
        let remote: Vec<RemoteIoVec> = reqs
            .iter()
            .map(|r| RemoteIoVec {
                base: r.addr as usize,
                len: r.buf.len(),
            })
            .collect();
        let mut local: Vec<IoSliceMut<'_>> =
            reqs.iter_mut().map(|r| IoSliceMut::new(r.buf)).collect();
        let res = process_vm_readv(Pid::from_raw(self.pid), &mut local, &remote);
        drop(local);
        let n = res?;
        let mut left = n;
        for r in reqs.iter_mut() {
            let take = left.min(r.buf.len());
            r.got = take;
            left -= take;
        }
        Ok(n)
    }
}

impl RemoteMemory for VmReader {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn read_partial(&self, addr: u64, buf: &mut [u8]) -> Result<usize, MemoryError> {
        let mut one = [ReadRequest { addr, buf, got: 0 }];
        self.read_batch(&mut one)?;
        Ok(one[0].got)
    }

    fn read_batch(&self, reqs: &mut [ReadRequest<'_>]) -> Result<(), MemoryError> {
        let mut start = 0;
        while start < reqs.len() {
            if !self.use_vm.get() {
                let fallback = self.fallback.as_ref().map_err(|e| e.clone())?;
                for r in reqs[start..].iter_mut() {
                    r.got = fallback.read_partial(r.addr, r.buf)?;
                    self.count(1, r.got);
                }
                return Ok(());
            }
            let end = (start + IOV_MAX).min(reqs.len());
            let chunk = &mut reqs[start..end];
            match self.readv_once(chunk) {
                Ok(n) => {
                    self.count(1, n);
                    // Continue after the first range that did not arrive whole: that range is short
                    // (unreadable tail); retry the rest in the next call.
                    let whole = chunk.iter().take_while(|r| r.got == r.buf.len()).count();
                    start += if whole == chunk.len() {
                        whole
                    } else {
                        whole + 1
                    };
                }
                Err(Errno::ENOSYS) | Err(Errno::EPERM)
                    if self.stats.get().syscalls == 0 && self.fallback.is_ok() =>
                {
                    // Refused outright (seccomp, or kernel without the syscall): use pread from now on.
                    self.use_vm.set(false);
                }
                Err(Errno::EFAULT) => {
                    // The first range is unreadable: record it empty and go on with the rest.
                    self.count(1, 0);
                    chunk[0].got = 0;
                    start += 1;
                }
                Err(e) => {
                    self.count(1, 0);
                    let r = &chunk[0];
                    return Err(classify(self.pid, e, r.addr, r.buf.len()));
                }
            }
        }
        Ok(())
    }

    fn stats(&self) -> ReadStats {
        self.stats.get()
    }
}

/// Writes one u64 into the target at `addr` via `/proc/PID/mem`. Only force mode calls this, only for
/// `runtime.MemProfileRate`, and only at an address proven by a symbol table (the caller checks).
pub fn write_u64_proven(
    proc_root: &Path,
    pid: i32,
    addr: u64,
    value: u64,
) -> Result<(), MemoryError> {
    let path = proc_root.join(pid.to_string()).join("mem");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| {
            classify(
                pid,
                Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                addr,
                8,
            )
        })?;
    let n = file.write_at(&value.to_le_bytes(), addr).map_err(|e| {
        classify(
            pid,
            Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            addr,
            8,
        )
    })?;
    if n != 8 {
        return Err(MemoryError::Unmapped { pid, addr, len: 8 });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads this test process's own memory through both readers.
    #[test]
    fn reads_own_memory_both_ways() {
        let data: Vec<u64> = (0..4096u64).map(|i| i * 7 + 1).collect();
        let pid = std::process::id() as i32;
        let root = Path::new("/proc");
        let pm = ProcMem::open(root, pid).unwrap();
        let addr = data.as_ptr() as u64;
        assert_eq!(pm.read_u64(addr + 8 * 10).unwrap(), 71);
        let vm = VmReader::open(root, pid).unwrap();
        let mut bufs: Vec<[u8; 8]> = vec![[0u8; 8]; 3000];
        let mut reqs: Vec<ReadRequest<'_>> = bufs
            .iter_mut()
            .enumerate()
            .map(|(i, b)| ReadRequest {
                addr: addr + 8 * i as u64,
                buf: &mut b[..],
                got: 0,
            })
            .collect();
        vm.read_batch(&mut reqs).unwrap();
        assert!(reqs.iter().all(|r| r.got == 8));
        drop(reqs);
        for (i, b) in bufs.iter().enumerate() {
            assert_eq!(u64::from_le_bytes(*b), i as u64 * 7 + 1);
        }
        // 3000 ranges in ceil(3000/1024) = 3 syscalls.
        assert_eq!(vm.stats().syscalls, 3);
    }

    #[test]
    fn unmapped_reads_are_errors() {
        let pid = std::process::id() as i32;
        let pm = ProcMem::open(Path::new("/proc"), pid).unwrap();
        assert!(matches!(pm.read_u64(8), Err(MemoryError::Unmapped { .. })));
        assert!(matches!(
            pm.read_u64(u64::MAX - 4),
            Err(MemoryError::Unmapped { .. })
        ));
        let vm = VmReader::open(Path::new("/proc"), pid).unwrap();
        let good = 42u64;
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        let mut reqs = [
            ReadRequest {
                addr: 16,
                buf: &mut a,
                got: 0,
            },
            ReadRequest {
                addr: &good as *const u64 as u64,
                buf: &mut b,
                got: 0,
            },
        ];
        vm.read_batch(&mut reqs).unwrap();
        assert_eq!(reqs[0].got, 0);
        assert_eq!(reqs[1].got, 8);
        assert_eq!(u64::from_le_bytes(b), 42);
    }

    #[test]
    fn missing_process_is_gone() {
        // pid_max is at most 2^22; this pid cannot exist.
        assert!(matches!(
            ProcMem::open(Path::new("/proc"), 1 << 23),
            Err(MemoryError::ProcessGone(_))
        ));
    }
}
