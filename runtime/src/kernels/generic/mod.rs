//! Portable kernels and the references the ISA-specific ones are tested against, on every CPU.

pub mod attention;
pub mod elementwise;
pub mod qgemm;
