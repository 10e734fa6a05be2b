//! pc-value tables: the varint-delta encoded tables that map a PC to a value (line, file, SP
//! delta, pcdata), and the file/line lookups built on them.

use super::names::{cstr, lossy};
use super::*;

impl Pclntab {
    /// `pcvalue(f, off, targetpc, strict=false)`: value of the table at `off` for `target`,
    /// -1 if absent or malformed.
    pub(super) fn pcvalue(&self, f: &FuncInfo, off: u32, target: u64) -> i32 {
        if off == 0 {
            return -1;
        }
        let (s, e) = self.pctab;
        let Some(tab) = self.data.get(s..e) else {
            return -1;
        };
        let Some(mut p) = tab.get(off as usize..) else {
            return -1;
        };
        let mut pc = f.entry;
        let mut val: i32 = -1;
        // Every step consumes at least two bytes, so this loop ends within len(p)/2 steps.
        loop {
            let first = pc == f.entry;
            let Some((np, npc, nval)) = self.step(p, pc, val, first) else {
                return -1;
            };
            p = np;
            if target < npc {
                return nval;
            }
            pc = npc;
            val = nval;
        }
    }

    /// `step`: one (value delta, pc delta) pair. `None` at the end of the table or on truncation.
    pub(super) fn step<'a>(
        &self,
        p: &'a [u8],
        pc: u64,
        val: i32,
        first: bool,
    ) -> Option<(&'a [u8], u64, i32)> {
        let b0 = *p.first()?;
        if b0 == 0 && !first {
            return None;
        }
        let (n, uvdelta) = readvarint(p)?;
        let val = val.wrapping_add((0u32.wrapping_sub(uvdelta & 1) ^ (uvdelta >> 1)) as i32);
        let p = p.get(n..)?;
        let (n, pcdelta) = readvarint(p)?;
        let p = p.get(n..)?;
        let pc = pc.wrapping_add(u64::from(pcdelta.wrapping_mul(self.quantum)));
        Some((p, pc, val))
    }

    pub(super) fn pcdata_value(&self, f: &FuncInfo, table: u32, target: u64) -> i32 {
        if table >= f.npcdata {
            return -1;
        }
        let hs = self.func_header_size();
        let Some(off) = rd_u32(&self.data, f.off + hs + table as usize * 4) else {
            return -1;
        };
        self.pcvalue(f, off, target)
    }

    /// `funcdata(f, i)` as an offset into `gofunc_data`.
    pub(super) fn funcdata_off(&self, f: &FuncInfo, i: u32) -> Option<usize> {
        if i >= u32::from(f.nfuncdata) {
            return None;
        }
        let hs = self.func_header_size();
        let p = f.off + hs + (f.npcdata as usize).checked_mul(4)? + i as usize * 4;
        let off = rd_u32(&self.data, p)?;
        if off == u32::MAX {
            return None;
        }
        Some(off as usize)
    }

    /// `funcline1(f, pc, false)`.
    pub(super) fn funcline(&self, f: &FuncInfo, pc: u64) -> (String, i64) {
        let fileno = self.pcvalue(f, f.pcfile, pc);
        let line = self.pcvalue(f, f.pcln, pc);
        let (fs, fe) = self.filetab;
        if fileno == -1 || line == -1 || fileno as i64 >= (fe - fs) as i64 {
            return ("?".to_string(), 0);
        }
        (self.funcfile(f, fileno), i64::from(line))
    }

    pub(super) fn funcfile(&self, f: &FuncInfo, fileno: i32) -> String {
        let (cs, ce) = self.cutab;
        let idx = f.cu_offset.wrapping_add(fileno as u32) as usize;
        let Some(fileoff) = self
            .data
            .get(cs..ce)
            .and_then(|t| rd_u32(t, idx.checked_mul(4)?))
        else {
            return "?".to_string();
        };
        if fileoff == u32::MAX {
            return "?".to_string();
        }
        let (fs, fe) = self.filetab;
        match self
            .data
            .get(fs..fe)
            .and_then(|t| cstr(t, fileoff as usize))
        {
            Some(s) => lossy(s),
            None => "?".to_string(),
        }
    }
}

/// `runtime.readvarint`: (bytes read, value) of a `uint32` varint. `None` if the varint runs off
/// the table or is longer than 5 bytes (a malformed table).
pub(super) fn readvarint(p: &[u8]) -> Option<(usize, u32)> {
    let (n, v) = crate::binary::varint::read_uvarint(p, 5)?;
    Some((n, v as u32))
}
