//! Microkernels whose throughput the cores' optimisation guides publish: the cycle model in
//! `scripts/arm_bench.py` is checked against them before its estimates are trusted. Each loop
//! body is 8 instructions of one kind (independent accumulators unless named `chain`) plus the
//! loop's `subs` and `b.ne`; it runs under mark 1.

use edgebert_boards::marker;

use crate::option;

pub const NAMES: [&str; 7] = [
    "fmla-independent",
    "fmla-chain",
    "smlal-independent",
    "sdot-independent",
    "sadalp-independent",
    "ldr-q",
    "add-independent",
];

pub fn run(args: &[String]) -> Result<(), String> {
    let name = args.first().ok_or("micro needs a kernel name")?;
    let iterations: u64 = option(args, "--iterations", 100_000)?;
    #[cfg(target_arch = "aarch64")]
    {
        let kernel: unsafe fn(u64) = match name.as_str() {
            "fmla-independent" => aarch64::fmla_independent,
            "fmla-chain" => aarch64::fmla_chain,
            "smlal-independent" => aarch64::smlal_independent,
            "sdot-independent" => {
                if !std::arch::is_aarch64_feature_detected!("dotprod") {
                    return Err("this core has no dotprod".into());
                }
                aarch64::sdot_independent
            }
            "sadalp-independent" => aarch64::sadalp_independent,
            "ldr-q" => aarch64::ldr_q,
            "add-independent" => aarch64::add_independent,
            _ => return Err(format!("no microkernel {name}")),
        };
        marker::mark(1);
        // SAFETY: dotprod was checked above for the one kernel that needs it.
        unsafe { kernel(iterations.max(1)) };
        marker::mark(0);
        println!("{name}: {iterations} iterations");
        Ok(())
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        let _ = (iterations, marker::mark);
        Err(format!("the microkernels ({name}) are AArch64 code"))
    }
}

#[cfg(target_arch = "aarch64")]
mod aarch64 {
    use core::arch::asm;

    macro_rules! eight_ops_loop {
        ($name:ident, $($op:literal),+ $(; $attr:meta)?) => {
            /// # Safety
            /// Needs the target features it is compiled with.
            $(#[$attr])?
            pub unsafe fn $name(iterations: u64) {
                let buffer = [0u8; 256];
                // SAFETY: register-only arithmetic and loads inside `buffer`.
                unsafe {
                    asm!(
                        "// {p} {x0} {x1} {x2} {x3}",
                        "movi v0.16b, #0", "movi v1.16b, #0", "movi v2.16b, #0", "movi v3.16b, #0",
                        "movi v4.16b, #0", "movi v5.16b, #0", "movi v6.16b, #0", "movi v7.16b, #0",
                        "movi v8.16b, #0", "movi v9.16b, #0",
                        "2:",
                        $($op,)+
                        "subs {n}, {n}, #1",
                        "b.ne 2b",
                        n = inout(reg) iterations => _,
                        p = in(reg) buffer.as_ptr(),
                        x0 = out(reg) _, x1 = out(reg) _, x2 = out(reg) _, x3 = out(reg) _,
                        out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _,
                        out("v5") _, out("v6") _, out("v7") _, out("v8") _, out("v9") _,
                        options(nostack, readonly),
                    );
                }
            }
        };
    }

    eight_ops_loop!(
        fmla_independent,
        "fmla v0.4s, v8.4s, v9.4s",
        "fmla v1.4s, v8.4s, v9.4s",
        "fmla v2.4s, v8.4s, v9.4s",
        "fmla v3.4s, v8.4s, v9.4s",
        "fmla v4.4s, v8.4s, v9.4s",
        "fmla v5.4s, v8.4s, v9.4s",
        "fmla v6.4s, v8.4s, v9.4s",
        "fmla v7.4s, v8.4s, v9.4s"
    );
    eight_ops_loop!(
        fmla_chain,
        "fmla v0.4s, v8.4s, v9.4s",
        "fmla v0.4s, v8.4s, v9.4s",
        "fmla v0.4s, v8.4s, v9.4s",
        "fmla v0.4s, v8.4s, v9.4s",
        "fmla v0.4s, v8.4s, v9.4s",
        "fmla v0.4s, v8.4s, v9.4s",
        "fmla v0.4s, v8.4s, v9.4s",
        "fmla v0.4s, v8.4s, v9.4s"
    );
    eight_ops_loop!(
        smlal_independent,
        "smlal v0.8h, v8.8b, v9.8b",
        "smlal v1.8h, v8.8b, v9.8b",
        "smlal v2.8h, v8.8b, v9.8b",
        "smlal v3.8h, v8.8b, v9.8b",
        "smlal v4.8h, v8.8b, v9.8b",
        "smlal v5.8h, v8.8b, v9.8b",
        "smlal v6.8h, v8.8b, v9.8b",
        "smlal v7.8h, v8.8b, v9.8b"
    );
    eight_ops_loop!(sdot_independent,
        "sdot v0.4s, v8.16b, v9.16b", "sdot v1.4s, v8.16b, v9.16b", "sdot v2.4s, v8.16b, v9.16b",
        "sdot v3.4s, v8.16b, v9.16b", "sdot v4.4s, v8.16b, v9.16b", "sdot v5.4s, v8.16b, v9.16b",
        "sdot v6.4s, v8.16b, v9.16b", "sdot v7.4s, v8.16b, v9.16b"; target_feature(enable = "dotprod"));
    eight_ops_loop!(
        sadalp_independent,
        "sadalp v0.4s, v8.8h",
        "sadalp v1.4s, v8.8h",
        "sadalp v2.4s, v8.8h",
        "sadalp v3.4s, v8.8h",
        "sadalp v4.4s, v8.8h",
        "sadalp v5.4s, v8.8h",
        "sadalp v6.4s, v8.8h",
        "sadalp v7.4s, v8.8h"
    );
    eight_ops_loop!(
        ldr_q,
        "ldr q0, [{p}]",
        "ldr q1, [{p}, #16]",
        "ldr q2, [{p}, #32]",
        "ldr q3, [{p}, #48]",
        "ldr q4, [{p}, #64]",
        "ldr q5, [{p}, #80]",
        "ldr q6, [{p}, #96]",
        "ldr q7, [{p}, #112]"
    );
    eight_ops_loop!(
        add_independent,
        "add {x0}, {x0}, #1",
        "add {x1}, {x1}, #1",
        "add {x2}, {x2}, #1",
        "add {x3}, {x3}, #1",
        "add {x0}, {x0}, #2",
        "add {x1}, {x1}, #2",
        "add {x2}, {x2}, #2",
        "add {x3}, {x3}, #2"
    );
}
