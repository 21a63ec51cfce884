//! NEON kernels for the Raspberry Pi boards' cores, picked at run time from the CPU's features
//! (HWCAP) as tract does:
//!
//! - [`qgemm_dot`]: the int8 product with `sdot`, on cores with the dot product (Cortex-A76,
//!   Pi 5);
//! - [`qgemm_mull`]: the int8 product with 8-bit `smull`/`smlal2` + `sadalp`, on the others
//!   (Cortex-A53 of the Pi Zero 2 W and Pi 3, Cortex-A72 of the Pi 4);
//! - [`attention_neon`]: the attention's two row loops (scores, and the softmax-weighted sum of
//!   the values), 4 lanes;
//! - [`quantize_neon`]: the dynamic quantization's loop (round, convert, narrow in one
//!   instruction each).
//!
//! Each is held to its portable reference (`generic/`); the tests run under
//! `qemu-aarch64 -cpu cortex-a53|cortex-a72|cortex-a76` (scripts/qemu-check).

pub mod attention_neon;
pub mod qgemm_dot;
pub mod qgemm_mull;
pub mod quantize_neon;

/// `shifted` ← the rows of `a` minus 128 as i8 (`x ^ 0x80`): the signed form both kernels
/// multiply ([`crate::kernels::qgemm::Kernel::activation_offset`]).
pub(crate) fn shift_rows(a: &[u8], shifted: &mut Vec<i8>) {
    shifted.clear();
    shifted.extend(a.iter().map(|&x| (x ^ 0x80) as i8));
}
