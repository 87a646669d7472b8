//! A tiny eBPF assembler: instruction encoding and labels for jumps, enough to write
//! the steering program by hand without clang.

use std::collections::HashMap;

/// eBPF registers. R10 is the read-only frame pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reg {
    R0 = 0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
}

/// Memory access sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    B,
    H,
    W,
    DW,
}

impl Size {
    fn bits(self) -> u8 {
        match self {
            Size::W => 0x00,
            Size::H => 0x08,
            Size::B => 0x10,
            Size::DW => 0x18,
        }
    }
}

/// 64-bit ALU operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alu {
    Add = 0x00,
    Sub = 0x10,
    Mul = 0x20,
    Or = 0x40,
    /// Unsigned; a zero divisor leaves dst unchanged.
    Mod = 0x90,
    And = 0x50,
    Lsh = 0x60,
    Rsh = 0x70,
    Xor = 0xa0,
    Mov = 0xb0,
}

/// Conditional jumps (64-bit compares, unsigned unless named otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jmp {
    Eq = 0x10,
    Gt = 0x20,
    Ge = 0x30,
    Ne = 0x50,
    Lt = 0xa0,
    Le = 0xb0,
}

/// `bpf_map_lookup_elem`'s helper number.
pub const MAP_LOOKUP_ELEM: i32 = 1;

const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU: u8 = 0x04;
const CLASS_JMP: u8 = 0x05;
const CLASS_ALU64: u8 = 0x07;
const MODE_IMM: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
const SRC_K: u8 = 0x00;
const SRC_X: u8 = 0x08;
const OP_END: u8 = 0xd0;
const OP_CALL: u8 = 0x80;
const OP_EXIT: u8 = 0x90;
const OP_JA: u8 = 0x00;
/// `src_reg` of a 64-bit immediate load whose immediate is a map fd.
pub const PSEUDO_MAP_FD: u8 = 1;

/// One 8-byte eBPF instruction (`struct bpf_insn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    /// The kernel's byte layout: code, dst:4|src:4 (dst in the low nibble on
    /// little-endian), off (le16), imm (le32).
    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.src << 4) | (self.dst & 0x0f);
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
}

/// Builds a program; jumps name labels, resolved by `finish`.
#[derive(Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: HashMap<&'static str, usize>,
    fixups: Vec<(usize, &'static str)>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }

    fn push(&mut self, i: Insn) -> &mut Self {
        self.insns.push(i);
        self
    }

    /// Defines `name` at the next instruction.
    pub fn label(&mut self, name: &'static str) -> &mut Self {
        let prev = self.labels.insert(name, self.insns.len());
        assert!(prev.is_none(), "label {name} defined twice");
        self
    }

    pub fn alu64_imm(&mut self, op: Alu, dst: Reg, imm: i32) -> &mut Self {
        self.push(Insn {
            code: CLASS_ALU64 | SRC_K | op as u8,
            dst: dst as u8,
            imm,
            ..Default::default()
        })
    }

    pub fn alu64_reg(&mut self, op: Alu, dst: Reg, src: Reg) -> &mut Self {
        self.push(Insn {
            code: CLASS_ALU64 | SRC_X | op as u8,
            dst: dst as u8,
            src: src as u8,
            ..Default::default()
        })
    }

    pub fn mov_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.alu64_imm(Alu::Mov, dst, imm)
    }

    pub fn mov(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.alu64_reg(Alu::Mov, dst, src)
    }

    /// Converts the low `bits` (16, 32, 64) of `dst` from host to big-endian order.
    pub fn to_be(&mut self, dst: Reg, bits: i32) -> &mut Self {
        self.push(Insn {
            code: CLASS_ALU | OP_END | SRC_X,
            dst: dst as u8,
            imm: bits,
            ..Default::default()
        })
    }

    /// dst = *(size *)(src + off)
    pub fn load(&mut self, size: Size, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.push(Insn {
            code: CLASS_LDX | MODE_MEM | size.bits(),
            dst: dst as u8,
            src: src as u8,
            off,
            imm: 0,
        })
    }

    /// *(size *)(dst + off) = src
    pub fn store(&mut self, size: Size, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(Insn {
            code: CLASS_STX | MODE_MEM | size.bits(),
            dst: dst as u8,
            src: src as u8,
            off,
            imm: 0,
        })
    }

    /// *(size *)(dst + off) = imm
    pub fn store_imm(&mut self, size: Size, dst: Reg, off: i16, imm: i32) -> &mut Self {
        self.push(Insn {
            code: CLASS_ST | MODE_MEM | size.bits(),
            dst: dst as u8,
            off,
            imm,
            ..Default::default()
        })
    }

    /// dst = the map with this fd (two instruction slots).
    pub fn load_map_fd(&mut self, dst: Reg, fd: i32) -> &mut Self {
        self.push(Insn {
            code: CLASS_LD | MODE_IMM | Size::DW.bits(),
            dst: dst as u8,
            src: PSEUDO_MAP_FD,
            off: 0,
            imm: fd,
        });
        self.push(Insn::default())
    }

    pub fn jmp_imm(&mut self, op: Jmp, dst: Reg, imm: i32, target: &'static str) -> &mut Self {
        self.fixups.push((self.insns.len(), target));
        self.push(Insn {
            code: CLASS_JMP | SRC_K | op as u8,
            dst: dst as u8,
            imm,
            ..Default::default()
        })
    }

    pub fn jmp_reg(&mut self, op: Jmp, dst: Reg, src: Reg, target: &'static str) -> &mut Self {
        self.fixups.push((self.insns.len(), target));
        self.push(Insn {
            code: CLASS_JMP | SRC_X | op as u8,
            dst: dst as u8,
            src: src as u8,
            ..Default::default()
        })
    }

    /// Unconditional jump.
    pub fn ja(&mut self, target: &'static str) -> &mut Self {
        self.fixups.push((self.insns.len(), target));
        self.push(Insn {
            code: CLASS_JMP | OP_JA,
            ..Default::default()
        })
    }

    /// Calls a kernel helper by number.
    pub fn call(&mut self, helper: i32) -> &mut Self {
        self.push(Insn {
            code: CLASS_JMP | OP_CALL,
            imm: helper,
            ..Default::default()
        })
    }

    /// `r0 = bpf_map_lookup_elem(map_fd, fp + key_at)`: the key lies on the stack at
    /// `key_at` (negative); r0 is the value or 0, r1-r5 are clobbered.
    pub fn map_lookup(&mut self, map_fd: i32, key_at: i16) -> &mut Self {
        self.load_map_fd(Reg::R1, map_fd)
            .mov(Reg::R2, Reg::R10)
            .alu64_imm(Alu::Add, Reg::R2, key_at as i32)
            .call(MAP_LOOKUP_ELEM)
    }

    pub fn exit(&mut self) -> &mut Self {
        self.push(Insn {
            code: CLASS_JMP | OP_EXIT,
            ..Default::default()
        })
    }

    /// Resolves jump targets. Fails on an undefined label or an offset out of range.
    pub fn finish(mut self) -> Result<Vec<Insn>, String> {
        for &(at, name) in &self.fixups {
            let target = *self
                .labels
                .get(name)
                .ok_or_else(|| format!("undefined label {name}"))?;
            let off = target as i64 - (at as i64 + 1);
            self.insns[at].off =
                i16::try_from(off).map_err(|_| format!("jump to {name} out of range"))?;
        }
        Ok(self.insns)
    }
}

/// The program as the bytes bpf(BPF_PROG_LOAD) reads.
pub fn encode_all(insns: &[Insn]) -> Vec<u8> {
    insns.iter().flat_map(|i| i.encode()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(f: impl FnOnce(&mut Asm)) -> [u8; 8] {
        let mut a = Asm::new();
        f(&mut a);
        a.finish().unwrap()[0].encode()
    }

    // Expected bytes are those clang/llvm-objdump print for the same instructions.
    #[test]
    fn encodes_alu_and_mov() {
        // r6 = r1
        assert_eq!(
            one(|a| {
                a.mov(Reg::R6, Reg::R1);
            }),
            [0xbf, 0x16, 0, 0, 0, 0, 0, 0]
        );
        // r0 = 2
        assert_eq!(
            one(|a| {
                a.mov_imm(Reg::R0, 2);
            }),
            [0xb7, 0x00, 0, 0, 2, 0, 0, 0]
        );
        // r4 += 14
        assert_eq!(
            one(|a| {
                a.alu64_imm(Alu::Add, Reg::R4, 14);
            }),
            [0x07, 0x04, 0, 0, 14, 0, 0, 0]
        );
        // r2 += -4
        assert_eq!(
            one(|a| {
                a.alu64_imm(Alu::Add, Reg::R2, -4);
            }),
            [0x07, 0x02, 0, 0, 0xfc, 0xff, 0xff, 0xff]
        );
        // r7 += r5
        assert_eq!(
            one(|a| {
                a.alu64_reg(Alu::Add, Reg::R7, Reg::R5);
            }),
            [0x0f, 0x57, 0, 0, 0, 0, 0, 0]
        );
        // r5 &= 15 ; r5 <<= 2 ; r4 >>= 4
        assert_eq!(
            one(|a| {
                a.alu64_imm(Alu::And, Reg::R5, 15);
            }),
            [0x57, 0x05, 0, 0, 15, 0, 0, 0]
        );
        assert_eq!(
            one(|a| {
                a.alu64_imm(Alu::Lsh, Reg::R5, 2);
            }),
            [0x67, 0x05, 0, 0, 2, 0, 0, 0]
        );
        assert_eq!(
            one(|a| {
                a.alu64_imm(Alu::Rsh, Reg::R4, 4);
            }),
            [0x77, 0x04, 0, 0, 4, 0, 0, 0]
        );
        // r8 = be16 r8
        assert_eq!(
            one(|a| {
                a.to_be(Reg::R8, 16);
            }),
            [0xdc, 0x08, 0, 0, 16, 0, 0, 0]
        );
    }

    #[test]
    fn encodes_memory_access() {
        // r2 = *(u32 *)(r1 + 0); r3 = *(u32 *)(r1 + 4)
        assert_eq!(
            one(|a| {
                a.load(Size::W, Reg::R2, Reg::R1, 0);
            }),
            [0x61, 0x12, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            one(|a| {
                a.load(Size::W, Reg::R3, Reg::R1, 4);
            }),
            [0x61, 0x13, 4, 0, 0, 0, 0, 0]
        );
        // r5 = *(u16 *)(r2 + 12); r5 = *(u8 *)(r7 + 0); r1 = *(u64 *)(r0 + 0)
        assert_eq!(
            one(|a| {
                a.load(Size::H, Reg::R5, Reg::R2, 12);
            }),
            [0x69, 0x25, 12, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            one(|a| {
                a.load(Size::B, Reg::R5, Reg::R7, 0);
            }),
            [0x71, 0x75, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            one(|a| {
                a.load(Size::DW, Reg::R1, Reg::R0, 0);
            }),
            [0x79, 0x01, 0, 0, 0, 0, 0, 0]
        );
        // *(u16 *)(r10 - 4) = r9 ; *(u64 *)(r0 + 0) = r1 ; *(u32 *)(r10 - 8) = 3
        assert_eq!(
            one(|a| {
                a.store(Size::H, Reg::R10, -4, Reg::R9);
            }),
            [0x6b, 0x9a, 0xfc, 0xff, 0, 0, 0, 0]
        );
        assert_eq!(
            one(|a| {
                a.store(Size::DW, Reg::R0, 0, Reg::R1);
            }),
            [0x7b, 0x10, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            one(|a| {
                a.store_imm(Size::W, Reg::R10, -8, 3);
            }),
            [0x62, 0x0a, 0xf8, 0xff, 3, 0, 0, 0]
        );
    }

    #[test]
    fn encodes_map_fd_load_as_two_slots() {
        let mut a = Asm::new();
        a.load_map_fd(Reg::R1, 7);
        let p = a.finish().unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].encode(), [0x18, 0x11, 0, 0, 7, 0, 0, 0]);
        assert_eq!(p[1].encode(), [0; 8]);
    }

    #[test]
    fn resolves_forward_and_backward_jumps() {
        let mut a = Asm::new();
        a.label("top")
            .jmp_imm(Jmp::Ne, Reg::R5, 8, "end") // 0: skips 1 and 2
            .jmp_reg(Jmp::Gt, Reg::R4, Reg::R3, "top") // 1: back to 0
            .ja("end") // 2
            .label("end")
            .call(1) // 3
            .exit(); // 4
        let p = a.finish().unwrap();
        assert_eq!(p[0].encode(), [0x55, 0x05, 2, 0, 8, 0, 0, 0]);
        assert_eq!(p[1].encode(), [0x2d, 0x34, 0xfe, 0xff, 0, 0, 0, 0]);
        assert_eq!(p[2].encode(), [0x05, 0x00, 0, 0, 0, 0, 0, 0]);
        assert_eq!(p[3].encode(), [0x85, 0x00, 0, 0, 1, 0, 0, 0]);
        assert_eq!(p[4].encode(), [0x95, 0x00, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn undefined_label_is_an_error() {
        let mut a = Asm::new();
        a.ja("nowhere");
        assert_eq!(a.finish().unwrap_err(), "undefined label nowhere");
    }
}
