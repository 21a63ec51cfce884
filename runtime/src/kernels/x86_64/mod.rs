//! x86_64 kernels: AVX2 (every x86_64 CPU of the last decade) and AVX-512 (VNNI), each compiled
//! with `#[target_feature]` and called only after a run-time check.

pub mod attention_avx2;
pub mod attention_avx512;
pub mod qgemm_avx2;
pub mod qgemm_avx512vnni;
