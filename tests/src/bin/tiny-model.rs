//! Writes a tiny random-weight BERT checkpoint, its ONNX export and bundle into a directory (the
//! same fixture the tests use), plus `expected.json`: tract's logits for a padded batch of two
//! texts, so that other runtimes can be checked against it (scripts/onnx_interop.py); and the same
//! for `model-int8.onnx`, its dynamic int8 quantization (`expected-int8.json`), and
//! `model-int8-static.onnx`, its static (calibrated, percentile) int8 form
//! (`expected-int8-static.json`).
//!
//! Usage: tiny-model DIR [MAX_LEN]

use anyhow::{anyhow, Context, Result};
use edgebert_runtime::engine::Engine;
use edgebert_runtime::{Classifier, ClassifierOptions};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(
        args.next()
            .ok_or_else(|| anyhow!("usage: tiny-model DIR [MAX_LEN]"))?,
    );
    let max_len = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let (onnx, ebm) =
        edgebert_tests::build_model(&dir, &edgebert_tests::TinySpec::default(), max_len)?;

    let classifier = Classifier::open(&ebm, ClassifierOptions::default())?;
    let texts = ["the movie was not good , it was boring !", "fun"];
    let len = 16;
    let batch = classifier.encoder().batch(&texts, len)?;
    // The f32 export and its dynamic int8 quantization, each with tract's logits.
    let f32_bytes = std::fs::read(&onnx)?;
    let (int8, _) = edgebert_quantize::dynamic::quantize_dynamic(
        &edgebert_quantize::onnx::decode(&f32_bytes)?,
        &Default::default(),
    )?;
    let int8_bytes = edgebert_quantize::onnx::encode(&int8);
    std::fs::write(dir.join("model-int8.onnx"), &int8_bytes)?;
    let proto = edgebert_quantize::onnx::decode(&f32_bytes)?;
    let options = Default::default();
    let acts = edgebert_quantize::dynamic::activation_inputs(&proto, &options)?;
    let calibration: Vec<String> = ["good", "a very boring plot", "the acting was great fun !"]
        .iter()
        .chain(&texts)
        .map(|s| s.to_string())
        .collect();
    let ranges = edgebert_quantize::calibrate::calibrate(
        &edgebert_runtime::Bundle::read(&ebm)?,
        &acts,
        &calibration,
        edgebert_quantize::calibrate::Method::Percentile,
        &indicatif::ProgressBar::hidden(),
    )?;
    let (int8_static, _) = edgebert_quantize::dynamic::quantize_static(&proto, &options, &ranges)?;
    let static_bytes = edgebert_quantize::onnx::encode(&int8_static);
    std::fs::write(dir.join("model-int8-static.onnx"), &static_bytes)?;
    for (bytes, name) in [
        (f32_bytes, "expected.json"),
        (int8_bytes, "expected-int8.json"),
        (static_bytes, "expected-int8-static.json"),
    ] {
        let mut engine = Engine::load(&bytes, 1)?;
        let logits = engine.run(&batch).map_err(|e| anyhow!(e))?;
        let rows = |v: &[i64]| v.chunks(len).map(|r| r.to_vec()).collect::<Vec<_>>();
        let expected = serde_json::json!({
            "inputs": {"input_ids": rows(&batch.ids), "attention_mask": rows(&batch.mask),
                "token_type_ids": rows(&batch.type_ids)},
            "logits": logits.chunks(engine.logits()).collect::<Vec<_>>(),
        });
        std::fs::write(dir.join(name), expected.to_string()).context("expected logits")?;
    }
    println!(
        "{}\n{}\n{}",
        dir.join("checkpoint").display(),
        onnx.display(),
        ebm.display()
    );
    Ok(())
}
