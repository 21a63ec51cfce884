//! Marks in the instruction stream for counting on emulated cores: `scripts/arm-bench` runs the
//! device binary under `qemu-aarch64` with the `edgebert-qemu-count` plugin, which attributes every
//! retired instruction to the mark set last ([`mark`]); `edgebert bench` marks each timed pass with
//! its length and `edgebert bench --profile` each node with its operator kind, so instruction counts
//! per pass and per operator come out of one emulated run.
//!
//! A mark is three unallocated hints (NOPs on every ARMv8 core) around a loop: `hint #0x7a`
//! (begin), `hint #0x7b` once per unit of the mark's value, `hint #0x7c` (end). The plugin counts
//! the middle hint between the other two: the mark's value needs no symbol (the shipped binary
//! is stripped), no memory access and no register read (qemu 7.2's plugin API has none; its
//! memory callbacks never fire under qemu-user 7.2 here). A mark costs about 3 instructions per
//! unit of its value; it is set only by `edgebert bench`, on other CPUs it does nothing.

/// Marks go from 0 (no mark: outside every pass) to `MARK_LIMIT - 1`.
pub const MARK_LIMIT: usize = 2048;

/// The instruction words the plugin looks for: `hint #0x7a`, `#0x7b`, `#0x7c`
/// (`0xd503201f | imm << 5`).
pub const MARK_BEGIN: u32 = 0xd503_2f5f;
pub const MARK_STEP: u32 = 0xd503_2f7f;
pub const MARK_END: u32 = 0xd503_2f9f;

/// Marks from here on name operator kinds ([`op_mark`]); below it, `edgebert bench` marks passes
/// with their length in tokens.
pub const OP_MARKS: u16 = 1024;

/// Sets the current mark to `id` (clamped below [`MARK_LIMIT`]).
#[inline(never)]
pub fn mark(id: u16) {
    #[cfg(target_arch = "aarch64")]
    {
        let units = usize::from(id).min(MARK_LIMIT - 1);
        // SAFETY: hints (NOPs) and a register countdown; no memory is touched.
        unsafe {
            core::arch::asm!(
                "hint #0x7a",
                "cbz {n}, 3f",
                "2:",
                "hint #0x7b",
                "subs {n}, {n}, #1",
                "b.ne 2b",
                "3:",
                "hint #0x7c",
                n = inout(reg) units => _,
                options(nostack, nomem),
            );
        }
    }
    #[cfg(not(target_arch = "aarch64"))]
    let _ = id;
}

/// The mark for the `index`-th operator kind of a profile.
pub fn op_mark(index: usize) -> u16 {
    (usize::from(OP_MARKS) + index).min(MARK_LIMIT - 1) as u16
}

/// The mark for a timed pass over `tokens` tokens (below [`OP_MARKS`]; longer passes share the
/// last pass mark).
pub fn length_mark(tokens: usize) -> u16 {
    tokens.min(usize::from(OP_MARKS) - 1) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hints_are_0x7a_to_0x7c() {
        // HINT #imm: 1101_0101_0000_0011_0010 CRm:op2 1_1111, imm = CRm:op2 (7 bits).
        assert_eq!(MARK_BEGIN, 0xd503_201f | (0x7a << 5));
        assert_eq!(MARK_STEP, 0xd503_201f | (0x7b << 5));
        assert_eq!(MARK_END, 0xd503_201f | (0x7c << 5));
    }

    #[test]
    fn marks_run_anywhere_and_ops_stay_in_range() {
        mark(16);
        mark(u16::MAX);
        assert_eq!(op_mark(0), OP_MARKS);
        assert_eq!(usize::from(op_mark(1 << 20)), MARK_LIMIT - 1);
        assert_eq!(length_mark(64), 64);
        assert_eq!(length_mark(1 << 40), OP_MARKS - 1);
    }
}
