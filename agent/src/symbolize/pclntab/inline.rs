//! Inline trees (`FUNCDATA_InlTree` + `PCDATA_InlTreeIndex`): the runtime's `inlineUnwinder`.

use super::*;

impl Pclntab {
    pub(super) fn inlined_call(&self, tree: usize, index: i32) -> Option<InlinedCall> {
        let idx = usize::try_from(index).ok()?;
        let g = &self.gofunc_data;
        match self.format {
            TableFormat::Go118 => {
                let o = tree.checked_add(idx.checked_mul(20)?)?;
                Some(InlinedCall {
                    func_id: *g.get(o.checked_add(2)?)?,
                    name_off: rd_u32(g, o + 12)? as i32,
                    parent_pc: rd_u32(g, o + 16)? as i32,
                    start_line: 0,
                })
            }
            TableFormat::Go120 => {
                let o = tree.checked_add(idx.checked_mul(16)?)?;
                Some(InlinedCall {
                    func_id: *g.get(o)?,
                    name_off: rd_u32(g, o + 4)? as i32,
                    parent_pc: rd_u32(g, o + 8)? as i32,
                    start_line: rd_u32(g, o + 12)? as i32,
                })
            }
        }
    }

    /// `newInlineUnwinder(f, pc)`: inline tree offset and the innermost frame at `pc`.
    pub(super) fn inline_unwinder(&self, f: &FuncInfo, pc: u64) -> (Option<usize>, InlineFrame) {
        match self.funcdata_off(f, FUNCDATA_INL_TREE) {
            None => (None, InlineFrame { pc, index: -1 }),
            Some(t) => (Some(t), self.inline_resolve(f, pc)),
        }
    }

    pub(super) fn inline_resolve(&self, f: &FuncInfo, pc: u64) -> InlineFrame {
        InlineFrame {
            pc,
            index: self.pcdata_value(f, PCDATA_INL_TREE_INDEX, pc),
        }
    }

    /// `inlineUnwinder.next`. A corrupt tree entry ends the walk (pc 0).
    pub(super) fn inline_next(
        &self,
        f: &FuncInfo,
        tree: Option<usize>,
        uf: InlineFrame,
    ) -> InlineFrame {
        if uf.index < 0 {
            return InlineFrame {
                pc: 0,
                index: uf.index,
            };
        }
        let Some(call) = tree.and_then(|t| self.inlined_call(t, uf.index)) else {
            return InlineFrame { pc: 0, index: -1 };
        };
        self.inline_resolve(f, f.entry.wrapping_add(call.parent_pc as i64 as u64))
    }

    /// `inlineUnwinder.srcFunc`. `None` if the tree entry is unreadable.
    pub(super) fn src_func(
        &self,
        f: &FuncInfo,
        tree: Option<usize>,
        uf: InlineFrame,
    ) -> Option<SrcFunc> {
        if uf.index < 0 {
            return Some(SrcFunc {
                name_off: f.name_off,
                start_line: f.start_line,
                func_id: f.func_id,
            });
        }
        let c = self.inlined_call(tree?, uf.index)?;
        Some(SrcFunc {
            name_off: c.name_off,
            start_line: c.start_line,
            func_id: c.func_id,
        })
    }
}
