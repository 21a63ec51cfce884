//! The CPU features tract's kernels are chosen by, as tract itself sees them on this machine
//! (HWCAP on arm64, /proc/cpuinfo on armv7, cpuid on x86_64): what `edgebert board` prints.

use serde::Serialize;
#[cfg(target_arch = "x86_64")]
use tract_linalg::mmm::{AsInputValue, FusedSpec, MMMInputValue, MatMatMul};
#[cfg(target_arch = "x86_64")]
use tract_onnx::prelude::TractResult;

/// The features that decide tract's matrix-product kernels here, and the int8 kernel they give.
#[derive(Debug, Clone, Serialize)]
pub struct KernelFeatures {
    /// `std::env::consts::ARCH` of this build.
    pub arch: &'static str,
    /// Feature name → present.
    pub features: Vec<(&'static str, bool)>,
    /// The int8 matrix-product kernel family tract picks with these features.
    pub int8_kernel: &'static str,
    /// On x86_64 with AVX-512 VNNI: the int8 tile [`choose_int8_tile`] timed and chose.
    pub int8_tile: Option<Int8Tile>,
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
            int8_kernel: match crate::kernels::qgemm::enabled() {
                true => crate::kernels::qgemm::Kernel::best().map_or("generic", |k| k.name()),
                false if dotprod => "tract arm64 SDOT 8x8 (dotprod)",
                false => "tract arm64 SMLAL 8x8",
            },
            int8_tile: None,
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
            int8_tile: None,
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        let vnni = avx512 && std::arch::is_x86_feature_detected!("avx512vnni");
        let int8_tile = choose_int8_tile();
        KernelFeatures {
            arch: std::env::consts::ARCH,
            features: vec![
                ("avx2+fma", avx2),
                ("avx512f", avx512),
                ("avx512vnni", vnni),
            ],
            int8_kernel: match (crate::kernels::qgemm::enabled(), int8_tile) {
                (true, _) => crate::kernels::qgemm::Kernel::best().map_or("generic", |k| k.name()),
                (false, Some(Int8Tile { wide: true, .. })) => "tract x86_64 AVX-512 VNNI 16x16",
                (false, Some(_)) => "tract x86_64 AVX-512 VNNI 8x8",
                (false, None) if avx2 => "tract x86_64 AVX2 (slow: see docs/performance.md)",
                (false, None) => "generic",
            },
            int8_tile,
        }
    }
    #[cfg(not(any(target_arch = "aarch64", target_arch = "arm", target_arch = "x86_64")))]
    {
        KernelFeatures {
            arch: std::env::consts::ARCH,
            features: Vec::new(),
            int8_kernel: "generic",
            int8_tile: None,
        }
    }
}

/// How tract's int8 products are tiled on an x86_64 CPU with AVX-512 VNNI, as
/// [`choose_int8_tile`] decided it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Int8Tile {
    /// The 16×16 zmm kernel (`avx512vnni_mmm_i32_16x16`) rather than the 8×8 ymm one.
    pub wide: bool,
    /// Best time of one probe product (packing the activations + the product) with the 8×8
    /// kernel, µs; `None` where the verdict was not timed here (`TRACT_AVX512_FMA_UNITS` set).
    pub narrow_us: Option<f64>,
    /// The same with the 16×16 kernel.
    pub wide_us: Option<f64>,
}

/// tract's two AVX-512 VNNI int8 kernels, and the time the wide one must save to be chosen.
#[cfg(target_arch = "x86_64")]
const NARROW_KERNEL: &str = "avx512vnni_mmm_i32_8x8";
#[cfg(target_arch = "x86_64")]
const WIDE_KERNEL: &str = "avx512vnni_mmm_i32_16x16";
/// The probe is one product of one shape, and the wide tile packs into wider panels and pads
/// to 16 (8×8 pads to 8): it is taken only when clearly faster, by at least 10%.
#[cfg(target_arch = "x86_64")]
const WIDE_MARGIN: f64 = 0.9;

/// Picks tract's int8 tile on this CPU by timing both kernels on a product of the student's
/// shape, once per process, and tells tract (before its first plan; memoised). `None` where
/// there is no choice to make (no AVX-512 VNNI, or not x86_64).
///
/// Why: tract decides between its 8×8 ymm and 16×16 zmm VNNI kernels by probing the number of
/// 512-bit FMA ports (the wide tile only where there are two). Its kernels do not run at the
/// ports' peak, though, and the wide tile's register reuse matters more than the port count on
/// some single-port cores: on this project's Zen 4 host (one port, double-pumped) tract keeps
/// the 8×8 tile, and the 16×16 tile runs the products 17–21% faster. So the verdict is measured
/// on the thing it is about: the two kernels themselves, on a 384×384 weight and 32 tokens
/// (18 products of 30–45 µs: under a millisecond, on the tokenizer's thread). A value the user gave tract (`TRACT_AVX512_FMA_UNITS` in
/// the environment) is left to win: the answer is installed below the environment, as a
/// deployment default (`set_config_global`). Integer products are exact, so the choice changes
/// the speed only, never an answer.
pub fn choose_int8_tile() -> Option<Int8Tile> {
    static CHOICE: std::sync::OnceLock<Option<Int8Tile>> = std::sync::OnceLock::new();
    *CHOICE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            decide_int8_tile()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    })
}

#[cfg(target_arch = "x86_64")]
fn decide_int8_tile() -> Option<Int8Tile> {
    if !std::arch::is_x86_feature_detected!("avx512vnni") {
        return None;
    }
    const KNOB: &str = "TRACT_AVX512_FMA_UNITS";
    if let Some(given) = std::env::var_os(KNOB) {
        return Some(Int8Tile {
            wide: given == "2",
            narrow_us: None,
            wide_us: None,
        });
    }
    let kernel = |name: &str| {
        tract_linalg::mmm_routines::declared()
            .map(|r| (r.make)())
            .find(|k| k.name() == name && k.runnable())
    };
    let (narrow, wide) = (kernel(NARROW_KERNEL)?, kernel(WIDE_KERNEL)?);
    let (narrow_us, wide_us) = time_int8_kernels(&*narrow, &*wide).ok()?;
    let choice = Int8Tile {
        wide: wide_us < narrow_us * WIDE_MARGIN,
        narrow_us: Some(narrow_us),
        wide_us: Some(wide_us),
    };
    // Fails only when a value was installed before (then that value stands).
    let _ =
        tract_onnx::tract_core::knobs::set_config_global(KNOB, if choice.wide { "2" } else { "1" });
    Some(choice)
}

/// Best-of-rounds time, µs, of packing a 384×32 int8 activation and multiplying it by a packed
/// 384×384 int8 weight, for each kernel, the two interleaved (so that a frequency change or a
/// busy moment falls on both).
#[cfg(target_arch = "x86_64")]
fn time_int8_kernels(narrow: &dyn MatMatMul, wide: &dyn MatMatMul) -> TractResult<(f64, f64)> {
    use tract_onnx::prelude::{DatumType, Tensor};
    const ROUNDS: usize = 8;
    let (m, k, n) = (384, 384, 32);
    let weight = Tensor::zero_dt(DatumType::I8, &[m, k])?;
    let activation = Tensor::zero_dt(DatumType::I8, &[k, n])?;
    // Packing 1 is i8 × i8, the one tract's quantized products use; the weight is packed once,
    // as a plan does, the activation each time.
    let narrow_weight = narrow.packings()[1].0.prepare_one(&weight, 1, 0)?;
    let wide_weight = wide.packings()[1].0.prepare_one(&weight, 1, 0)?;
    let once = |mmm: &dyn MatMatMul, packed_weight: &dyn MMMInputValue| -> TractResult<f64> {
        let start = std::time::Instant::now();
        let packed = mmm.packings()[1].1.prepare_one(&activation, 0, 1)?;
        // SAFETY: both operands were packed by this kernel's own packing 1, for m × k and k × n,
        // and the kernel runs on this CPU (the caller asked `runnable()`).
        unsafe {
            mmm.run(
                m,
                n,
                &[FusedSpec::AddMatMul {
                    a: AsInputValue::Borrowed(packed_weight),
                    b: AsInputValue::Borrowed(&*packed),
                    packing: 1,
                }],
            )?
        };
        Ok(start.elapsed().as_secs_f64() * 1e6)
    };
    // One untimed round: first touches, and the clock settling after the first zmm work.
    once(narrow, &*narrow_weight)?;
    once(wide, &*wide_weight)?;
    let (mut best_narrow, mut best_wide) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..ROUNDS {
        best_narrow = best_narrow.min(once(narrow, &*narrow_weight)?);
        best_wide = best_wide.min(once(wide, &*wide_weight)?);
    }
    Ok((best_narrow, best_wide))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Where tract has the two VNNI tiles, both are timed and the faster (by the margin) is
    /// installed in tract's knob, below the environment.
    #[test]
    fn the_int8_tile_is_timed_and_given_to_tract() {
        let tile = choose_int8_tile();
        #[cfg(target_arch = "x86_64")]
        {
            let vnni = std::arch::is_x86_feature_detected!("avx512vnni");
            assert_eq!(tile.is_some(), vnni);
            let Some(tile) = tile else { return };
            if std::env::var_os("TRACT_AVX512_FMA_UNITS").is_some() {
                assert!(tile.narrow_us.is_none() && tile.wide_us.is_none());
                return;
            }
            let (narrow, wide) = (tile.narrow_us.unwrap(), tile.wide_us.unwrap());
            assert!(narrow.is_finite() && wide.is_finite() && narrow > 0.0 && wide > 0.0);
            assert_eq!(tile.wide, wide < narrow * WIDE_MARGIN, "{tile:?}");
            assert_eq!(
                tract_linalg::knobs::TRACT_AVX512_FMA_UNITS.get().as_deref(),
                Some(if tile.wide { "2" } else { "1" })
            );
            assert_eq!(choose_int8_tile(), Some(tile), "decided once");
        }
        #[cfg(not(target_arch = "x86_64"))]
        assert_eq!(tile, None);
    }
}
