//! Times every int8 graph form tract runs on a real exported model, with the test-only rewrites
//! of `edgebert_tests::int8` (per-tensor weights, ranges from the first 64 calibration texts):
//! how ARCHITECTURE.md's choice of graph form was measured.
//!
//! ```sh
//! cargo run --release -p edgebert-tests --example int8_forms -- \
//!   RUN/student.onnx STUDENT-F32.ebm RUN/data/calibration.txt
//! ```

use anyhow::{bail, Context, Result};
use edgebert_quantize::onnx::{decode, encode};
use edgebert_runtime::{bench, pack, Bundle, Classifier, ClassifierOptions};
use edgebert_tests::int8::{quantize, Form};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [onnx, f32_bundle, texts] = &args[..] else {
        bail!("usage: int8_forms MODEL.onnx F32.ebm TEXTS.txt");
    };
    let opts = ClassifierOptions {
        threads: 1,
        batch_size: 1,
        ..ClassifierOptions::default()
    };
    let bundle = Bundle::read(f32_bundle)?;
    let mut f32_model = Classifier::from_bundle(&bundle, opts.clone())?;
    let texts: Vec<String> = std::fs::read_to_string(texts)
        .with_context(|| texts.clone())?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(64)
        .map(String::from)
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batch = f32_model.encoder().batch(&refs, 128)?;
    let proto = decode(&std::fs::read(onnx).with_context(|| onnx.clone())?)?;
    let lengths = [16, 32, 64, 128];
    let f32_stats = bench::measure(&mut f32_model, &lengths, 40)?;
    println!("f32: p50 ms {}", p50s(&f32_stats));
    for form in [Form::Dynamic, Form::Qdq, Form::QLinear] {
        let q = quantize(&proto, form, &batch)?;
        let b = pack(
            encode(&q),
            bundle.tokenizer_json.clone(),
            bundle.manifest.labels.clone(),
            bundle.manifest.max_seq_len as usize,
            "int8",
        )?;
        let mut int8 = Classifier::from_bundle(&b, opts.clone())?;
        let mut agree = 0;
        for t in &texts {
            agree += usize::from(int8.classify(t)?.label == f32_model.classify(t)?.label);
        }
        let stats = bench::measure(&mut int8, &lengths, 40)?;
        println!(
            "{form:?}: same label as f32 on {agree}/{} texts; p50 ms {}",
            texts.len(),
            p50s(&stats)
        );
    }
    Ok(())
}

fn p50s(stats: &[bench::LengthStats]) -> String {
    stats
        .iter()
        .map(|s| format!("{}: {:.2}", s.tokens, s.p50_ms))
        .collect::<Vec<_>>()
        .join(", ")
}
