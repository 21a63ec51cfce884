//! The CPU features tract's kernels are chosen by, as tract itself sees them on this machine
//! (HWCAP on arm64, /proc/cpuinfo on armv7, cpuid on x86_64): what `edgebert board` prints.

use serde::Serialize;

/// The features that decide tract's matrix-product kernels here, and the int8 kernel they give.
#[derive(Debug, Clone, Serialize)]
pub struct KernelFeatures {
    /// `std::env::consts::ARCH` of this build.
    pub arch: &'static str,
    /// Feature name → present.
    pub features: Vec<(&'static str, bool)>,
    /// The int8 matrix-product kernel family tract picks with these features.
    pub int8_kernel: &'static str,
}

/// Reads the features the way tract does (same sources, same override variables).
pub fn kernel_features() -> KernelFeatures {
    #[cfg(target_arch = "aarch64")]
    {
        let dotprod = tract_linalg::arm64::has_dotprod();
        KernelFeatures {
            arch: std::env::consts::ARCH,
            features: vec![
                ("asimd", true),
                ("dotprod", dotprod),
                ("fp16", tract_linalg::arm64::has_fp16()),
            ],
            int8_kernel: if dotprod {
                "arm64 SDOT 8x8 (dotprod)"
            } else {
                "arm64 SMLAL 8x8"
            },
        }
    }
    #[cfg(target_arch = "arm")]
    {
        // tract-linalg's own test (private there): TRACT_CPU_ARM32_NEON, else cpuinfo's Features.
        let neon = match std::env::var("TRACT_CPU_ARM32_NEON").ok().as_deref() {
            Some("true" | "1") => true,
            Some("false" | "0") => false,
            _ => std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
                c.lines().any(|l| {
                    l.starts_with("Features") && (l.contains("neon") || l.contains("asimd"))
                })
            }),
        };
        KernelFeatures {
            arch: std::env::consts::ARCH,
            features: vec![("neon", neon)],
            int8_kernel: if neon {
                "armv7 NEON 8x4"
            } else {
                "generic (no NEON seen: slow)"
            },
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        KernelFeatures {
            arch: std::env::consts::ARCH,
            features: vec![("avx2+fma", avx2), ("avx512f", avx512)],
            int8_kernel: if avx2 { "x86_64 AVX2" } else { "generic" },
        }
    }
    #[cfg(not(any(target_arch = "aarch64", target_arch = "arm", target_arch = "x86_64")))]
    {
        KernelFeatures {
            arch: std::env::consts::ARCH,
            features: Vec::new(),
            int8_kernel: "generic",
        }
    }
}

/// Clears the upper halves of the AVX registers (`vzeroupper`) on x86_64 CPUs with AVX; nothing
/// elsewhere.
///
/// tract's AVX2/AVX-512 matrix kernels return with those halves in use, and every SSE
/// instruction that runs after that (our code and tract's own, built for baseline x86_64) pays
/// the AVX–SSE transition penalty: `DynamicQuantizeLinear` after a GELU ran 4.7× slower on
/// this machine (290 µs instead of 62 µs for 64×1536 values). The engine calls this after every
/// node; it costs one instruction.
#[inline]
pub fn clear_upper_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked just above), which is all vzeroupper needs.
        unsafe { vzeroupper() }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn vzeroupper() {
    std::arch::x86_64::_mm256_zeroupper()
}
