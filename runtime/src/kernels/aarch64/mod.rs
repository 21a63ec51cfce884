//! NEON kernels for the Raspberry Pi boards' cores (Cortex-A53, A72, A76): the room for them.
//!
//! Empty so far: on aarch64 the engine leaves tract's operators in place (its SMLAL and, with
//! dotprod, SDOT int8 kernels), and no fused operator of ours is put into the graph. A kernel
//! added here gets a portable reference in `generic/` and tests that run under
//! `qemu-aarch64 -cpu cortex-a53|cortex-a72|cortex-a76`.
