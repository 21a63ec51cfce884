//! The runtime's fused attention (`Attention (edgebert)`, on x86_64 CPUs with AVX-512 or AVX2 +
//! FMA) against tract's
//! own operators (`EDGEBERT_ATTENTION=off`), through the binary, on a tiny model in both forms
//! tract leaves the graph in (analysed from ONNX, and read back from a compiled bundle).

use std::path::Path;

use edgebert_tests::REVIEW_TEXTS;
use edgebert_tests::{edgebert_ok, int8_bundle, profiled_operators, TinyModel, TinySpec};

fn edgebert(attention: &str, args: &[&str]) -> Vec<u8> {
    edgebert_ok(&[("EDGEBERT_ATTENTION", attention)], args)
}

fn probabilities(attention: &str, bundle: &Path) -> Vec<f64> {
    let mut args = vec!["--threads", "1", "classify", "--json", "--model"];
    args.push(bundle.to_str().unwrap());
    args.extend(REVIEW_TEXTS.iter().copied());
    let out = edgebert(attention, &args);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), REVIEW_TEXTS.len());
    lines
        .iter()
        .flat_map(|l| l["scores"].as_array().unwrap().clone())
        .map(|s| s["probability"].as_f64().unwrap())
        .collect()
}

/// The operators of the plans for 16 and 40 tokens.
fn operators(attention: &str, bundle: &Path) -> Vec<Vec<String>> {
    profiled_operators(&[("EDGEBERT_ATTENTION", attention)], Some(bundle), "16,40")
}

/// Whether this CPU runs the runtime's attention kernel (else the test says it was skipped).
fn ours_here() -> bool {
    let here = edgebert_runtime::kernels::attention::available();
    if !here {
        edgebert_tests::skipped("the fused attention: no attention kernel of ours on this CPU");
    }
    here
}

/// Heads of 16 columns (the kernel takes multiples of 16), the model quantized to int8 as the
/// shipped one: fused where the CPU has AVX-512 or AVX2 + FMA, in both graph forms, with the same answers as
/// tract's within float rounding.
#[test]
fn fused_attention_keeps_the_answers() {
    let spec = TinySpec {
        hidden: 64,
        heads: 4,
        intermediate: 128,
        ..TinySpec::default()
    };
    let m = TinyModel::with(&spec, 64);
    let int8 = int8_bundle(&m, REVIEW_TEXTS);
    let int8_path = m.path("int8.ebm");
    std::fs::write(&int8_path, int8.to_bytes()).unwrap();
    let compiled = m.path("compiled.ebm");
    edgebert(
        "on",
        &[
            "compile",
            int8_path.to_str().unwrap(),
            "-o",
            compiled.to_str().unwrap(),
        ],
    );
    let ours = ours_here();
    for bundle in [&int8_path, &compiled] {
        let (on, off) = (probabilities("on", bundle), probabilities("off", bundle));
        for (a, b) in on.iter().zip(&off) {
            assert!((a - b).abs() <= 1e-5, "{}: {a} vs {b}", bundle.display());
        }
        for ops in operators("off", bundle) {
            assert!(ops.iter().any(|o| o == "Softmax"), "{ops:?}");
            assert!(!ops.iter().any(|o| o == "Attention (edgebert)"), "{ops:?}");
        }
        for ops in operators("on", bundle) {
            let fused = ops.iter().any(|o| o == "Attention (edgebert)");
            assert_eq!(fused, ours, "{}: {ops:?}", bundle.display());
            assert_eq!(ops.iter().any(|o| o == "Softmax"), !fused, "{ops:?}");
        }
    }
}

/// Heads of 8 columns: tract's operators stay.
#[test]
fn heads_the_kernel_does_not_take_stay_with_tract() {
    let m = TinyModel::new();
    for ops in operators("on", &m.bundle) {
        assert!(ops.iter().any(|o| o == "Softmax"), "{ops:?}");
    }
}
