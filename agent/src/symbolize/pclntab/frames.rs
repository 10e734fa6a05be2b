//! What the runtime answers for PCs: `runtime.CallersFrames`, `FuncForPC`, and
//! `runtime_expandFinalInlineFrame`.

use super::names::lossy;
use super::*;

impl Pclntab {
    /// `runtime.FuncForPC(pc).Name()`: no pc adjustment; the innermost inlined function at `pc`.
    /// Empty string when `pc` is not in a Go function (`FuncForPC` returns nil).
    pub fn func_name_for_pc(&self, pc: u64) -> String {
        let Some(i) = self.find_func_index(pc) else {
            return String::new();
        };
        let Some(f) = self.func_info(i) else {
            return String::new();
        };
        let (tree, uf) = self.inline_unwinder(&f, pc);
        let name_off = match self.src_func(&f, tree, uf) {
            Some(sf) => sf.name_off,
            None => return String::new(),
        };
        self.print_name(self.name_bytes(name_off))
    }

    /// What `runtime.CallersFrames([]uintptr{pc})` yields as its first frame, or `None` when `pc`
    /// is outside every Go function (the runtime then returns a zero `Frame`).
    pub fn frame_at(&self, pc: u64) -> Option<Frame> {
        self.frames_for_pcs(&[pc]).into_iter().next()
    }

    /// Every frame a full `runtime.CallersFrames(pcs)` walk yields (`Frames.Next` until `more`
    /// is false), including the Go 1.23+ insertion of absent virtual inline PCs.
    pub fn frames_for_pcs(&self, pcs: &[u64]) -> Vec<Frame> {
        let mut out = Vec::with_capacity(pcs.len());
        let mut callers = pcs;
        let mut next_pc: u64 = 0;
        // Each iteration consumes a caller or a pending nextPC; nextPC is set at most once per
        // consumed caller, so this runs at most 2*len(pcs) times.
        loop {
            let pc;
            if next_pc != 0 {
                pc = next_pc;
                next_pc = 0;
            } else if let Some((&first, rest)) = callers.split_first() {
                pc = first;
                callers = rest;
            } else {
                break;
            }
            let Some(f) = self.find_func_index(pc).and_then(|i| self.func_info(i)) else {
                continue;
            };
            let entry = f.entry;
            let pc = if pc > entry { pc - 1 } else { pc };
            let (tree, uf) = self.inline_unwinder(&f, pc);
            let Some(sf) = self.src_func(&f, tree, uf) else {
                continue;
            };
            let inlined = uf.index >= 0;
            if inlined && self.rules.frames_elide_inlined_wrappers {
                let mut unext = self.inline_next(&f, tree, uf);
                let mut depth = 0;
                while unext.pc != 0 && depth < MAX_INLINE_DEPTH {
                    let Some(&c0) = callers.first() else { break };
                    if c0 == unext.pc.wrapping_add(1) {
                        break;
                    }
                    depth += 1;
                    let snext = self.src_func(&f, tree, unext);
                    if snext.is_some_and(|s| self.is_wrapper(s.func_id))
                        && self.elide_wrapper_calling(sf.func_id)
                    {
                        unext = self.inline_next(&f, tree, unext);
                        continue;
                    }
                    next_pc = unext.pc.wrapping_add(1);
                    break;
                }
            }
            let raw = self.name_bytes(sf.name_off);
            let (file, line) = self.funcline(&f, pc);
            out.push(Frame {
                pc,
                has_func: !inlined,
                inlined,
                function: self.print_name(raw),
                symbol_name: lossy(raw),
                file,
                line,
                start_line: i64::from(sf.start_line),
                entry,
                valid: true,
            });
        }
        out
    }

    /// `runtime_expandFinalInlineFrame(stk)`: if the last PC of `stk` is inside inlined code,
    /// replace it by the PCs (+1) of every logical frame of that inline stack, innermost first.
    pub fn expand_final_inline_frame(&self, stk: &[u64]) -> Vec<u64> {
        let mut out = stk.to_vec();
        let Some(&pc) = stk.last() else {
            return out;
        };
        let tracepc = pc.wrapping_sub(1);
        let Some(f) = self
            .find_func_index(tracepc)
            .and_then(|i| self.func_info(i))
        else {
            return out;
        };
        let (tree, uf) = self.inline_unwinder(&f, tracepc);
        if self.rules.expand_inline_with_unwinder {
            if uf.index < 0 {
                return out;
            }
            let mut callee_id = 0u8; // FuncIDNormal
            out.pop();
            let mut uf = uf;
            let mut depth = 0;
            while uf.pc != 0 && depth < MAX_INLINE_DEPTH {
                depth += 1;
                let Some(sf) = self.src_func(&f, tree, uf) else {
                    break;
                };
                if !(self.is_wrapper(sf.func_id) && self.elide_wrapper_calling(callee_id)) {
                    out.push(uf.pc.wrapping_add(1));
                }
                callee_id = sf.func_id;
                uf = self.inline_next(&f, tree, uf);
            }
        } else {
            // Go 1.19: walk the tree directly; the outermost PC is always appended.
            let Some(tree) = tree else {
                return out;
            };
            let mut last_id = 0u8;
            out.pop();
            let (mut pc, mut tracepc) = (pc, tracepc);
            for _ in 0..MAX_INLINE_DEPTH {
                let ix = self.pcdata_value(&f, PCDATA_INL_TREE_INDEX, tracepc);
                if ix < 0 {
                    break;
                }
                let Some(call) = self.inlined_call(tree, ix) else {
                    break;
                };
                if !(self.is_wrapper(call.func_id) && self.elide_wrapper_calling(last_id)) {
                    out.push(pc);
                }
                last_id = call.func_id;
                tracepc = f.entry.wrapping_add(call.parent_pc as i64 as u64);
                pc = tracepc.wrapping_add(1);
            }
            out.push(pc);
        }
        out
    }
}
