//! AArch64 instruction words sorted into the classes a throughput model needs (Arm ARM, "A64
//! instruction set encoding", top-level groups by bits 28:25). Only what the cost differs by is
//! told apart: multiply-accumulate kinds, loads from stores, 128-bit transfers.

/// What one retired instruction is, for counting and for the cycle estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Class {
    /// B, BL, B.cond, CBZ, TBZ, BR, RET…
    Branch,
    /// Any load (scalar or SIMD, single, pair, structure, literal, atomic).
    Load,
    Store,
    /// Scalar integer data processing, moves, and system instructions (hints, barriers, MRS).
    Int,
    /// Scalar integer multiply(-add) and divide.
    IntMul,
    /// Scalar floating point (arithmetic, conversion, compare, FMADD).
    Fp,
    /// Vector floating-point multiply and multiply-accumulate (FMUL, FMLA, FMLS; by element too).
    SimdFmla,
    /// Vector integer multiply(-accumulate): SMLAL/UMLAL/SMLSL, SMULL/UMULL, MLA/MLS, MUL.
    SimdMlal,
    /// Dot products: SDOT, UDOT (dotprod, Cortex-A76 and later).
    SimdDot,
    /// Pairwise add(-accumulate) long: SADALP, UADALP, SADDLP, UADDLP.
    SimdAdalp,
    /// Every other Advanced SIMD instruction (vector and scalar forms).
    SimdOther,
}

pub const CLASSES: [Class; 11] = [
    Class::Branch,
    Class::Load,
    Class::Store,
    Class::Int,
    Class::IntMul,
    Class::Fp,
    Class::SimdFmla,
    Class::SimdMlal,
    Class::SimdDot,
    Class::SimdAdalp,
    Class::SimdOther,
];

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Branch => "branch",
            Class::Load => "load",
            Class::Store => "store",
            Class::Int => "int",
            Class::IntMul => "int_mul",
            Class::Fp => "fp",
            Class::SimdFmla => "simd_fmla",
            Class::SimdMlal => "simd_mlal",
            Class::SimdDot => "simd_dot",
            Class::SimdAdalp => "simd_adalp",
            Class::SimdOther => "simd_other",
        }
    }
}

/// One decoded instruction: its class and, for a load or store, how many 128-bit registers it
/// moves (0 for narrower transfers): an in-order A53 moves 64 bits per cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    pub class: Class,
    pub q_transfers: u8,
}

fn bits(w: u32, hi: u32, lo: u32) -> u32 {
    (w >> lo) & ((1 << (hi - lo + 1)) - 1)
}

/// Sorts one A64 instruction word.
pub fn classify(w: u32) -> Decoded {
    let plain = |class| Decoded {
        class,
        q_transfers: 0,
    };
    let (b28, b27, b26, b25) = (
        bits(w, 28, 28),
        bits(w, 27, 27),
        bits(w, 26, 26),
        bits(w, 25, 25),
    );
    if b27 == 0 {
        return match (b28, b26) {
            // 101x: branches, exception generation, system.
            (1, 1) if bits(w, 31, 22) == 0b11_0101_0100 => plain(Class::Int),
            (1, 1) => plain(Class::Branch),
            // 100x: data processing, immediate (and the reserved/SVE space, 0xxx with bit 27 clear).
            _ => plain(Class::Int),
        };
    }
    if b25 == 0 {
        return load_store(w);
    }
    if b26 == 0 {
        // x101: data processing, register. Three-source (MADD, SMULL, UMULH…) and divides.
        let three_source = bits(w, 28, 24) == 0b11011;
        let divide =
            bits(w, 30, 30) == 0 && bits(w, 28, 21) == 0b1101_0110 && bits(w, 15, 11) == 0b00001;
        return plain(if three_source || divide {
            Class::IntMul
        } else {
            Class::Int
        });
    }
    // x111: SIMD and floating point.
    if b28 == 1 && bits(w, 30, 30) == 0 {
        return plain(Class::Fp);
    }
    if b28 == 1 {
        // Advanced SIMD scalar: by-element FMLA/FMLS/FMUL on one lane is scalar FP work.
        let by_element = bits(w, 24, 24) == 1 && bits(w, 10, 10) == 0;
        let fp_mul = matches!(bits(w, 15, 12), 0b0001 | 0b0101 | 0b1001);
        return plain(if by_element && fp_mul && bits(w, 29, 29) == 0 {
            Class::Fp
        } else {
            Class::SimdOther
        });
    }
    plain(vector(w))
}

/// An Advanced SIMD vector instruction (bit 28 clear).
fn vector(w: u32) -> Class {
    let masked = |mask: u32, value: u32| w & mask == value;
    // Three same / three different / two-register misc: bits 28:24 = 01110, bit 21 = 1.
    // By element: bits 28:24 = 01111, bit 10 = 0.
    if masked(0xBF20_FC00, 0x0E20_CC00) // FMLA/FMLS (vector)
        || masked(0xBFA0_FC00, 0x2E20_DC00) // FMUL (vector)
        || masked(0x9F00_0400 | 0x2000_0000, 0x0F00_0000) && matches!(bits(w, 15, 12), 0b0001 | 0b0101 | 0b1001)
        && bits(w, 23, 23) == 1
    // FMLA/FMLS/FMUL (by element, single/double)
    {
        return Class::SimdFmla;
    }
    if masked(0x9FE0_FC00, 0x0E80_9400) || masked(0x9FC0_F400, 0x0F80_E000) {
        return Class::SimdDot; // SDOT/UDOT (vector, by element)
    }
    if masked(0x9F20_FC00, 0x0E20_8000) // SMLAL/UMLAL
        || masked(0x9F20_FC00, 0x0E20_A000) // SMLSL/UMLSL
        || masked(0x9F20_FC00, 0x0E20_C000) // SMULL/UMULL
        || masked(0x9F20_FC00, 0x0E20_9400) // MLA/MLS
        || masked(0xBF20_FC00, 0x0E20_9C00) // MUL
        || masked(0x9F00_0400, 0x0F00_0000) && matches!(bits(w, 15, 12), 0b0010 | 0b0110 | 0b1010 | 0b0000 | 0b0100 | 0b1000)
    // SMLAL/SMLSL/SMULL, MLA/MLS/MUL (by element)
    {
        return Class::SimdMlal;
    }
    if masked(0x9F3F_BC00, 0x0E20_2800) {
        return Class::SimdAdalp; // SADDLP/UADDLP (opcode 00010), SADALP/UADALP (00110)
    }
    Class::SimdOther
}

/// Loads and stores (bits 27 = 1, 25 = 0).
fn load_store(w: u32) -> Decoded {
    let simd = bits(w, 26, 26) == 1;
    let load_bit = bits(w, 22, 22) == 1;
    let (load, q_transfers) = if bits(w, 29, 28) == 0b11 {
        // Load/store register (all addressing modes): size 31:30, opc 23:22.
        let (size, opc) = (bits(w, 31, 30), bits(w, 23, 22));
        let q = simd && size == 0 && opc >= 2;
        let load = if simd { opc == 1 || opc == 3 } else { opc != 0 };
        (load, u8::from(q))
    } else if bits(w, 29, 28) == 0b10 {
        // Load/store pair: opc 31:30 (SIMD: 10 = Q registers), L = bit 22.
        let q = simd && bits(w, 31, 30) == 0b10;
        (load_bit, if q { 2 } else { 0 })
    } else if bits(w, 29, 27) == 0b011 && bits(w, 24, 24) == 0 {
        // Load register (literal).
        (true, u8::from(simd && bits(w, 31, 30) == 0b10))
    } else if bits(w, 31, 31) == 0 && bits(w, 29, 24) == 0b001100 && simd {
        // Advanced SIMD load/store multiple structures (LD1-4/ST1-4): registers from the opcode.
        let regs = match bits(w, 15, 12) {
            0b0000 | 0b0010 => 4,
            0b0100 | 0b0110 => 3,
            0b1000 | 0b1010 => 2,
            _ => 1,
        };
        let q = bits(w, 30, 30) == 1;
        (load_bit, if q { regs } else { 0 })
    } else {
        // Single structure, exclusives, atomics: bit 22 is L where it exists.
        (load_bit, 0)
    };
    Decoded {
        class: if load { Class::Load } else { Class::Store },
        q_transfers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(w: u32) -> Class {
        classify(w).class
    }

    // Words from `aarch64-linux-gnu-as` (binutils 2.40) listings.
    #[test]
    fn multiply_accumulate_kinds_are_told_apart() {
        assert_eq!(class(0x4e22cc20), Class::SimdFmla); // fmla v0.4s, v1.4s, v2.4s
        assert_eq!(class(0x4ea2cc20), Class::SimdFmla); // fmls v0.4s, v1.4s, v2.4s
        assert_eq!(class(0x6e22dc20), Class::SimdFmla); // fmul v0.4s, v1.4s, v2.4s
        assert_eq!(class(0x4f821020), Class::SimdFmla); // fmla v0.4s, v1.4s, v2.s[0]
        assert_eq!(class(0x4e829420), Class::SimdDot); // sdot v0.4s, v1.16b, v2.16b
        assert_eq!(class(0x6e829420), Class::SimdDot); // udot v0.4s, v1.16b, v2.16b
        assert_eq!(class(0x4f82e020), Class::SimdDot); // sdot v0.4s, v1.16b, v2.4b[0]
        assert_eq!(class(0x0e228020), Class::SimdMlal); // smlal v0.8h, v1.8b, v2.8b
        assert_eq!(class(0x4e228020), Class::SimdMlal); // smlal2 v0.8h, v1.16b, v2.16b
        assert_eq!(class(0x0e22c020), Class::SimdMlal); // smull v0.8h, v1.8b, v2.8b
        assert_eq!(class(0x4e229420), Class::SimdMlal); // mla v0.16b, v1.16b, v2.16b
        assert_eq!(class(0x0f822020), Class::SimdMlal); // smlal v0.2d, v1.2s, v2.s[0]
        assert_eq!(class(0x4e606820), Class::SimdAdalp); // sadalp v0.4s, v1.8h
        assert_eq!(class(0x4e602820), Class::SimdAdalp); // saddlp v0.4s, v1.8h
        assert_eq!(class(0x4e228420), Class::SimdOther); // add v0.16b, v1.16b, v2.16b
        assert_eq!(class(0x4e22d420), Class::SimdOther); // fadd v0.4s, v1.4s, v2.4s
        assert_eq!(class(0x4e0c0420), Class::SimdOther); // dup v0.4s, v1.s[1]
        assert_eq!(class(0x4ea29c20), Class::SimdMlal); // mul v0.4s, v1.4s, v2.4s
        assert_eq!(class(0x4fa29020), Class::SimdFmla); // fmul v0.4s, v1.4s, v2.s[1]
        assert_eq!(class(0x4fa28020), Class::SimdMlal); // mul v0.4s, v1.4s, v2.s[1]
        assert_eq!(class(0x2e628020), Class::SimdMlal); // umlal v0.4s, v1.4h, v2.4h
        assert_eq!(class(0x6e602820), Class::SimdAdalp); // uaddlp v0.4s, v1.8h
        assert_eq!(class(0x4e21d820), Class::SimdOther); // scvtf v0.4s, v1.4s
        assert_eq!(class(0x5fa21020), Class::Fp); // fmla s0, s1, v2.s[1]
    }

    #[test]
    fn scalar_groups() {
        assert_eq!(class(0x1e222820), Class::Fp); // fadd s0, s1, s2
        assert_eq!(class(0x1f020c20), Class::Fp); // fmadd s0, s1, s2, s3
        assert_eq!(class(0x8b020020), Class::Int); // add x0, x1, x2
        assert_eq!(class(0x91000420), Class::Int); // add x0, x1, #1
        assert_eq!(class(0x9b027c20), Class::IntMul); // mul x0, x1, x2
        assert_eq!(class(0x9ac20c20), Class::IntMul); // sdiv x0, x1, x2
        assert_eq!(class(0xd503201f), Class::Int); // nop
        assert_eq!(class(0xd5033bbf), Class::Int); // dmb ish
        assert_eq!(class(0x14000000), Class::Branch); // b .
        assert_eq!(class(0x54000001), Class::Branch); // b.ne .
        assert_eq!(class(0xd65f03c0), Class::Branch); // ret
        assert_eq!(class(0xb4000000), Class::Branch); // cbz x0, .
    }

    #[test]
    fn loads_stores_and_their_width() {
        let d = |w| {
            let d = classify(w);
            (d.class, d.q_transfers)
        };
        assert_eq!(d(0xf9400020), (Class::Load, 0)); // ldr x0, [x1]
        assert_eq!(d(0xf9000020), (Class::Store, 0)); // str x0, [x1]
        assert_eq!(d(0x39400020), (Class::Load, 0)); // ldrb w0, [x1]
        assert_eq!(d(0x3dc00020), (Class::Load, 1)); // ldr q0, [x1]
        assert_eq!(d(0x3d800020), (Class::Store, 1)); // str q0, [x1]
        assert_eq!(d(0xfd400020), (Class::Load, 0)); // ldr d0, [x1]
        assert_eq!(d(0xad400440), (Class::Load, 2)); // ldp q0, q1, [x2]
        assert_eq!(d(0xa9400440), (Class::Load, 0)); // ldp x0, x1, [x2]
        assert_eq!(d(0xa9000440), (Class::Store, 0)); // stp x0, x1, [x2]
        assert_eq!(d(0x4c402820), (Class::Load, 4)); // ld1 {v0.4s-v3.4s}, [x1]
        assert_eq!(d(0x4c407820), (Class::Load, 1)); // ld1 {v0.4s}, [x1]
        assert_eq!(d(0x4c007820), (Class::Store, 1)); // st1 {v0.4s}, [x1]
        assert_eq!(d(0x4cdf7820), (Class::Load, 1)); // ld1 {v0.4s}, [x1], #16
        assert_eq!(d(0x4d40c820), (Class::Load, 0)); // ld1r {v0.4s}, [x1]
        assert_eq!(d(0x58000000), (Class::Load, 0)); // ldr x0, .
        assert_eq!(d(0xbd400020), (Class::Load, 0)); // ldr s0, [x1]
        assert_eq!(d(0x6d400420), (Class::Load, 0)); // ldp d0, d1, [x1]
    }

    #[test]
    fn the_mark_hints_are_system_instructions() {
        use edgebert_boards::marker::{MARK_BEGIN, MARK_END, MARK_STEP};
        for hint in [MARK_BEGIN, MARK_STEP, MARK_END] {
            assert_eq!(class(hint), Class::Int);
        }
    }
}
