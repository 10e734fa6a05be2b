//! The runtime's `unwinder` + `tracebackPCs` (runtime/traceback.go, Go 1.21+; `gentraceback` with a
//! pc buffer before, which records the same PCs): walking a goroutine's stack from a saved context
//! with the SP-delta (`pcsp`) tables, and recording "return PCs" with inlined frames expanded, as
//! `saveg` does for the goroutine profile.
//!
//! The stack is untrusted memory read from another process ([`StackWindow`]): every word is read
//! through a bounds check, the walk is bounded by `max` recorded PCs and by [`MAX_PHYSICAL_FRAMES`],
//! and a frame that makes no progress (`pc == lr && sp == fp`, or an SP that does not grow) ends it.

use super::*;

/// `abi.FuncFlagTopFrame`: the function marks the top of a stack (`goexit`, `mstart`, …).
const FUNC_FLAG_TOP_FRAME: u8 = 1;
/// `abi.FuncFlagSPWrite`: the function writes SP in a way the pcsp table does not describe.
const FUNC_FLAG_SP_WRITE: u8 = 2;
/// Most physical frames walked for one stack, whatever `max` says (a goroutine stack is at most
/// 1 GB; real stacks with more than this many frames are not worth walking from outside).
pub const MAX_PHYSICAL_FRAMES: usize = 100_000;

/// The memory of one goroutine stack, read in one piece: `bytes` are the target's memory at
/// `base` (a runtime address).
pub struct StackWindow<'a> {
    pub base: u64,
    pub bytes: &'a [u8],
}

impl StackWindow<'_> {
    /// The 8-byte word at runtime address `addr`, `None` outside the window.
    pub fn word(&self, addr: u64) -> Option<u64> {
        let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        let b = self.bytes.get(off..off.checked_add(8)?)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }
}

/// Where a walk starts: a goroutine's saved `sched` (or `syscallpc`/`syscallsp`), runtime addresses.
#[derive(Debug, Clone, Copy)]
pub struct UnwindStart {
    pub pc: u64,
    pub sp: u64,
    /// `sched.lr` (link-register architectures; 0 elsewhere and for syscalls).
    pub lr: u64,
    /// The context is `syscallsp`/`syscallpc` (the innermost frame's SPWrite flag is ignored).
    pub syscall: bool,
}

/// Why a walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnwindEnd {
    /// A top frame (`runtime.goexit`, …) or a frame with no caller was reached.
    Complete,
    /// `max` PCs were recorded.
    Truncated,
    /// A PC outside every Go function, a word outside the stack window, a function without
    /// pcsp table, an SPWrite function, or no progress.
    Broken,
}

impl Pclntab {
    /// `tracebackPCs(u, 0, buf[:max])` from `start`: return PCs (unrelocated ELF addresses) of the
    /// stack, inlined calls expanded (each entry is a call PC + 1), and why the walk ended.
    /// `bias` is the load bias (runtime address − ELF address); `uses_lr` is true on arm64.
    pub fn traceback_pcs(
        &self,
        start: UnwindStart,
        bias: u64,
        stack: &StackWindow<'_>,
        uses_lr: bool,
        max: usize,
    ) -> (Vec<u64>, UnwindEnd) {
        let mut out = Vec::new();
        let elf = |pc: u64| pc.wrapping_sub(bias);
        let mut pc = elf(start.pc);
        let mut sp = start.sp;
        let mut lr = if uses_lr { elf(start.lr) } else { 0 };
        if uses_lr && start.lr == 0 {
            lr = 0;
        }
        let Some(mut f) = self.find_func_index(pc).and_then(|i| self.func_info(i)) else {
            return (out, UnwindEnd::Broken);
        };
        let mut callee_id: u8 = 0;
        let mut trap = false;
        let mut innermost = true;
        for _ in 0..MAX_PHYSICAL_FRAMES {
            // resolveInternal
            let (pcsp, flag) = self.unwind_fields(&f);
            if pcsp == 0 {
                return (out, UnwindEnd::Broken);
            }
            let mut flag = flag;
            if innermost && start.syscall {
                flag &= !FUNC_FLAG_SP_WRITE;
            }
            let delta = self.pcvalue(&f, pcsp, pc);
            if delta < 0 {
                return (out, UnwindEnd::Broken);
            }
            let mut fp = sp.saturating_add(delta as u64);
            if !uses_lr {
                fp = fp.saturating_add(8);
            }
            let top = flag & FUNC_FLAG_TOP_FRAME != 0;
            if top {
                lr = 0;
            } else if flag & FUNC_FLAG_SP_WRITE != 0 {
                // unwindSilentErrors: an SPWrite function ends the walk, innermost or not.
                lr = 0;
            } else if uses_lr {
                if (innermost && sp < fp) || lr == 0 {
                    match stack.word(sp) {
                        Some(w) => lr = elf(w),
                        None => return (out, UnwindEnd::Broken),
                    }
                }
            } else if lr == 0 {
                match stack.word(fp - 8) {
                    Some(w) => lr = elf(w),
                    None => return (out, UnwindEnd::Broken),
                }
            }
            // tracebackPCs: record this frame, inlined calls expanded.
            let sym_pc = if !trap && pc > f.entry { pc - 1 } else { pc };
            let (tree, mut uf) = self.inline_unwinder(&f, sym_pc);
            let mut depth = 0;
            while uf.pc != 0 && depth <= MAX_INLINE_DEPTH {
                let Some(sf) = self.src_func(&f, tree, uf) else {
                    break;
                };
                if !(self.is_wrapper(sf.func_id) && self.elide_wrapper_calling(callee_id)) {
                    if out.len() >= max {
                        return (out, UnwindEnd::Truncated);
                    }
                    out.push(uf.pc.wrapping_add(1));
                }
                callee_id = sf.func_id;
                if uf.index < 0 {
                    break;
                }
                uf = self.inline_next(&f, tree, uf);
                depth += 1;
            }
            // next
            if lr == 0 {
                return (
                    out,
                    if top {
                        UnwindEnd::Complete
                    } else {
                        UnwindEnd::Broken
                    },
                );
            }
            let Some(flr) = self.find_func_index(lr).and_then(|i| self.func_info(i)) else {
                return (out, UnwindEnd::Broken);
            };
            if (pc == lr && sp == fp) || fp <= sp {
                return (out, UnwindEnd::Broken);
            }
            let injected = self.is_injected_call(&f);
            trap = injected;
            callee_id = f.func_id;
            f = flr;
            pc = lr;
            lr = 0;
            sp = fp;
            innermost = false;
            if uses_lr && injected {
                // sighandler saved LR on the stack before faking the call.
                let Some(x) = stack.word(sp) else {
                    return (out, UnwindEnd::Broken);
                };
                sp = sp.saturating_add(16);
                match self.find_func_index(pc).and_then(|i| self.func_info(i)) {
                    None => return (out, UnwindEnd::Broken),
                    Some(f2) => {
                        if self.pcvalue(&f2, self.unwind_fields(&f2).0, pc) == 0 {
                            lr = elf(x);
                        }
                        f = f2;
                    }
                }
            }
        }
        (out, UnwindEnd::Broken)
    }

    /// `_func.pcsp` and `_func.flag`.
    fn unwind_fields(&self, f: &FuncInfo) -> (u32, u8) {
        let flag_off = match self.format {
            TableFormat::Go118 => 37,
            TableFormat::Go120 => 41,
        };
        (
            rd_u32(&self.data, f.off + 16).unwrap_or(0),
            self.data.get(f.off + flag_off).copied().unwrap_or(0),
        )
    }

    /// `sigpanic`, `asyncPreempt` or `debugCallV2`: functions the signal handler makes the
    /// goroutine "call", so the caller's PC is not a return address.
    fn is_injected_call(&self, f: &FuncInfo) -> bool {
        if Some(f.func_id) == self.ids.sigpanic {
            return true;
        }
        let name = self.table_name_bytes(f.name_off);
        name == b"runtime.asyncPreempt" || name == b"runtime.debugCallV2"
    }

    /// Raw symbol name of the function containing `pc` (unrelocated), e.g. to classify a
    /// goroutine's start function; `None` outside every Go function.
    pub fn func_raw_name(&self, pc: u64) -> Option<String> {
        let f = self.find_func_index(pc).and_then(|i| self.func_info(i))?;
        Some(names::lossy(self.table_name_bytes(f.name_off)))
    }
}
