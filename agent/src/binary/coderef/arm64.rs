//! arm64 (A64). Go's linker always materialises a global's address with an `ADRP` immediately
//! followed by the instruction that completes it (`ADD`, or a load/store with the low 12 bits as
//! offset); an `ADD` may in turn be followed by a zero-offset load/store/atomic on that register.
//! Only those adjacent pairs/triples are tracked.

use super::{Access, GlobalRef, InsnSummary};

/// A register known to hold an address for the next instruction only.
#[derive(Debug, Clone, Copy)]
struct KnownBase {
    reg: u32,
    addr: u64,
    /// True for `ADRP` (4 KiB page, low bits come from the next instruction).
    page: bool,
}

pub(super) fn decode(code: &[u8], pc0: u64) -> Vec<InsnSummary> {
    let mut out = Vec::with_capacity(code.len() / 4);
    let mut base: Option<KnownBase> = None;
    for (i, word) in code.chunks_exact(4).enumerate() {
        let Some(pc) = u64::try_from(i)
            .ok()
            .and_then(|i| i.checked_mul(4))
            .and_then(|o| pc0.checked_add(o))
        else {
            break;
        };
        let w = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        let mut global = None;
        let mut next_base = None;
        let immediate = arm64_immediate(w);

        if let Some(adrp) = arm64_adrp(w, pc) {
            next_base = Some(KnownBase {
                reg: adrp.0,
                addr: adrp.1,
                page: true,
            });
        } else if let Some(b) = base {
            if let Some((rd, rn, imm)) = arm64_add_imm(w) {
                if rn == b.reg && b.page {
                    let target = b.addr.wrapping_add(imm);
                    global = Some(GlobalRef {
                        target,
                        access: Access::Address,
                        size: 0,
                    });
                    next_base = Some(KnownBase {
                        reg: rd,
                        addr: target,
                        page: false,
                    });
                }
            } else if let Some(m) = arm64_memory(w) {
                if m.rn == b.reg {
                    global = Some(GlobalRef {
                        target: b.addr.wrapping_add(m.offset),
                        access: m.access,
                        size: m.size,
                    });
                }
            }
        }
        out.push(InsnSummary {
            addr: pc,
            global,
            immediate,
        });
        base = next_base;
    }
    out
}

/// `ADRP Xd, label` → (d, page address).
fn arm64_adrp(w: u32, pc: u64) -> Option<(u32, u64)> {
    if w & 0x9F00_0000 != 0x9000_0000 {
        return None;
    }
    let rd = w & 31;
    let immlo = u64::from((w >> 29) & 3);
    let immhi = u64::from((w >> 5) & 0x7_FFFF);
    let imm21 = (immhi << 2) | immlo;
    // Sign-extend 21 bits, then scale by 4 KiB pages.
    let offset = (((imm21 << 43) as i64) >> 43).wrapping_mul(4096);
    Some((rd, (pc & !0xFFF).wrapping_add(offset as u64)))
}

/// 64-bit `ADD Xd, Xn, #imm{, LSL #12}` → (d, n, imm).
fn arm64_add_imm(w: u32) -> Option<(u32, u32, u64)> {
    if w & 0xFF80_0000 != 0x9100_0000 {
        return None;
    }
    let shift = (w >> 22) & 1;
    let imm = u64::from((w >> 10) & 0xFFF) << (12 * shift);
    Some((w & 31, (w >> 5) & 31, imm))
}

/// A load/store with a base register and immediate offset.
struct Arm64Memory {
    rn: u32,
    offset: u64,
    access: Access,
    size: u8,
}

fn arm64_memory(w: u32) -> Option<Arm64Memory> {
    let rn = (w >> 5) & 31;
    // LDR/STR (unsigned scaled 12-bit offset), general and SIMD&FP registers.
    if w & 0x3B00_0000 == 0x3900_0000 {
        let size_bits = w >> 30;
        let opc = (w >> 22) & 3;
        let simd = (w >> 26) & 1 == 1;
        let (bytes, access) = if simd {
            let bytes = if size_bits == 0 && opc & 2 != 0 {
                16
            } else {
                1u8 << size_bits
            };
            let access = if opc & 1 == 0 {
                Access::Store
            } else {
                Access::Load
            };
            (bytes, access)
        } else {
            if size_bits == 3 && opc == 2 {
                return None; // PRFM
            }
            let access = if opc == 0 {
                Access::Store
            } else {
                Access::Load
            };
            (1u8 << size_bits, access)
        };
        let offset = u64::from((w >> 10) & 0xFFF) * u64::from(bytes);
        return Some(Arm64Memory {
            rn,
            offset,
            access,
            size: bytes,
        });
    }
    // LDP/STP (signed offset), general registers.
    if w & 0x3BC0_0000 == 0x2900_0000 || w & 0x3BC0_0000 == 0x2940_0000 {
        if (w >> 26) & 1 == 1 {
            return None;
        }
        let reg_bytes: u8 = if w >> 31 == 1 { 8 } else { 4 };
        let imm7 = (((w >> 15) & 0x7F) << 25) as i32 >> 25;
        let offset = i64::from(imm7) * i64::from(reg_bytes);
        let access = if (w >> 22) & 1 == 1 {
            Access::Load
        } else {
            Access::Store
        };
        return Some(Arm64Memory {
            rn,
            offset: offset as u64,
            access,
            size: reg_bytes * 2,
        });
    }
    // Load/store exclusive and ordered (LDAR, STLR, LDAXR, STLXR, CAS…), base register only.
    if w & 0x3F00_0000 == 0x0800_0000 {
        let size = 1u8 << (w >> 30);
        let o2 = (w >> 23) & 1;
        let o1 = (w >> 21) & 1;
        let load = (w >> 22) & 1;
        let access = if o2 == 1 && o1 == 1 {
            Access::ReadModifyWrite // CAS family
        } else if load == 1 {
            Access::Load
        } else {
            Access::Store
        };
        return Some(Arm64Memory {
            rn,
            offset: 0,
            access,
            size,
        });
    }
    // LSE atomic memory operations (LDADD, SWP, …).
    if w & 0x3F20_0C00 == 0x3820_0000 {
        return Some(Arm64Memory {
            rn,
            offset: 0,
            access: Access::ReadModifyWrite,
            size: 1u8 << (w >> 30),
        });
    }
    None
}

/// Constant materialised by `MOVZ` or by `ORR Rd, ZR, #bitmask` (the `MOV` alias).
fn arm64_immediate(w: u32) -> Option<u64> {
    // MOVZ (32/64-bit)
    if w & 0x7F80_0000 == 0x5280_0000 {
        let hw = (w >> 21) & 3;
        return Some(u64::from((w >> 5) & 0xFFFF) << (16 * hw));
    }
    // ORR (immediate) with Rn = ZR
    if w & 0x7F80_0000 == 0x3200_0000 && (w >> 5) & 31 == 31 {
        let sf = w >> 31;
        let n = (w >> 22) & 1;
        let immr = (w >> 16) & 0x3F;
        let imms = (w >> 10) & 0x3F;
        return arm64_decode_bitmask(n, imms, immr, if sf == 1 { 64 } else { 32 });
    }
    None
}

/// A64 `DecodeBitMasks` for logical immediates (returns the `wmask`).
fn arm64_decode_bitmask(n: u32, imms: u32, immr: u32, datasize: u32) -> Option<u64> {
    let combined = (n << 6) | (!imms & 0x3F);
    if combined == 0 {
        return None;
    }
    let len = 31 - combined.leading_zeros(); // highest set bit
    if len < 1 {
        return None;
    }
    let esize = 1u32 << len;
    if esize > datasize {
        return None;
    }
    let levels = esize - 1;
    let s = imms & levels;
    let r = immr & levels;
    if s == levels {
        return None; // reserved
    }
    let ones: u64 = (1u64 << (s + 1)) - 1;
    let emask: u64 = if esize == 64 {
        u64::MAX
    } else {
        (1u64 << esize) - 1
    };
    let elem = if r == 0 {
        ones
    } else {
        ((ones >> r) | (ones << (esize - r))) & emask
    };
    let mut value = 0u64;
    let mut pos = 0;
    while pos < datasize {
        value |= elem << pos;
        pos += esize;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm64_bitmask_immediate_524288() {
        // ORR X0, XZR, #0x80000 as emitted by Go 1.19 (b26d03e0).
        assert_eq!(arm64_immediate(0xb26d03e0), Some(0x80000));
        // MOVZ W0, #1, LSL #16
        assert_eq!(arm64_immediate(0x52a00020), Some(0x10000));
    }

    #[test]
    fn arm64_adrp_and_ldr() {
        // ADRP R27, 1810432(PC) at 0x57438 ; MOVBU 2864(R27), R0
        let (rd, page) = arm64_adrp(0xd0000ddb, 0x57438).expect("adrp");
        assert_eq!(rd, 27);
        assert_eq!(page, 0x57000 + 1810432);
        let m = arm64_memory(0x396cc360).expect("ldrb");
        assert_eq!(
            (m.rn, m.offset, m.size, m.access),
            (27, 2864, 1, Access::Load)
        );
        // MOVD ZR, 1512(R27): STR XZR, [X27, #1512]
        let m = arm64_memory(0xf902f77f).expect("str");
        assert_eq!(
            (m.rn, m.offset, m.size, m.access),
            (27, 1512, 8, Access::Store)
        );
        // LDARW (R4), R4
        let m = arm64_memory(0x88dffc84).expect("ldar");
        assert_eq!((m.rn, m.offset, m.size, m.access), (4, 0, 4, Access::Load));
    }
}
