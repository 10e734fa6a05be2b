//! amd64: the fixed-address memory operands (RIP-relative or absolute) and `LEA`s of one function,
//! decoded with iced-x86.

use iced_x86::{
    Decoder, DecoderOptions, Instruction, InstructionInfoFactory, Mnemonic, OpAccess, OpKind,
    Register,
};

use super::{Access, GlobalRef, InsnSummary};

pub(super) fn decode(code: &[u8], ip: u64) -> Vec<InsnSummary> {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut insn = Instruction::default();
    let mut info = InstructionInfoFactory::new();
    let mut out = Vec::with_capacity(code.len() / 4);
    while decoder.can_decode() {
        decoder.decode_out(&mut insn);
        if insn.is_invalid() {
            continue;
        }
        let mut global = None;
        let mut immediate = None;
        for op in 0..insn.op_count() {
            match insn.op_kind(op) {
                OpKind::Memory => {
                    if matches!(insn.segment_prefix(), Register::FS | Register::GS) {
                        continue;
                    }
                    let target = if insn.is_ip_rel_memory_operand() {
                        Some(insn.ip_rel_memory_address())
                    } else if insn.memory_base() == Register::None
                        && insn.memory_index() == Register::None
                    {
                        Some(insn.memory_displacement64())
                    } else {
                        None
                    };
                    if let Some(target) = target {
                        let access = amd64_access(&mut info, &insn, op);
                        let size = if access == Access::Address {
                            0
                        } else {
                            u8::try_from(insn.memory_size().size()).unwrap_or(0)
                        };
                        global = Some(GlobalRef {
                            target,
                            access,
                            size,
                        });
                    }
                }
                OpKind::Immediate8
                | OpKind::Immediate16
                | OpKind::Immediate32
                | OpKind::Immediate64
                | OpKind::Immediate8to16
                | OpKind::Immediate8to32
                | OpKind::Immediate8to64
                | OpKind::Immediate32to64 => immediate = insn.try_immediate(op).ok(),
                _ => {}
            }
        }
        out.push(InsnSummary {
            addr: insn.ip(),
            global,
            immediate,
        });
    }
    out
}

/// Classifies the memory operand `op` of `insn` from iced's per-operand access table.
fn amd64_access(info: &mut InstructionInfoFactory, insn: &Instruction, op: u32) -> Access {
    if insn.mnemonic() == Mnemonic::Lea {
        return Access::Address;
    }
    match info.info(insn).try_op_access(op) {
        Ok(OpAccess::Read | OpAccess::CondRead) => Access::Load,
        Ok(OpAccess::Write | OpAccess::CondWrite) => Access::Store,
        Ok(OpAccess::ReadWrite | OpAccess::ReadCondWrite) => Access::ReadModifyWrite,
        _ => Access::Address,
    }
}
