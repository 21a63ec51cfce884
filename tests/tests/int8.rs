//! int8 graphs run: the tiny model's MatMuls rewritten as DynamicQuantizeLinear + MatMulInteger,
//! as QuantizeLinear/DequantizeLinear pairs, and as QLinearMatMul, all through the runtime, each
//! close to the f32 model and recognised as int8 by `pack`.

use edgebert_quantize::onnx::{decode, encode};
use edgebert_runtime::engine::TokenBatch;
use edgebert_runtime::{pack, Classifier, ClassifierOptions, Quantization};
use edgebert_tests::int8::{quantize, Form};
use edgebert_tests::TinyModel;

const TEXTS: &[&str] = &[
    "the movie was good",
    "awful plot , boring acting",
    "i love this film and the story is great fun",
    "not bad",
    "it was very very boring and i hate it",
    "great acting !",
];

fn calibration(c: &Classifier) -> TokenBatch {
    c.encoder().batch(TEXTS, 16).unwrap()
}

#[test]
fn every_int8_form_runs_close_to_f32() {
    let m = TinyModel::new();
    let opts = ClassifierOptions::default();
    let mut f32_model = Classifier::open(&m.bundle, opts.clone()).unwrap();
    let batch = calibration(&f32_model);
    let proto = decode(&std::fs::read(&m.onnx).unwrap()).unwrap();
    let tokenizer = std::fs::read(m.tokenizer()).unwrap();
    let labels = vec!["negative".to_string(), "positive".to_string()];
    for (form, ops, scheme) in [
        (
            Form::Dynamic,
            &["DynamicQuantizeLinear", "MatMulInteger"][..],
            Quantization::DynamicInt8,
        ),
        (
            Form::Qdq,
            &["QuantizeLinear", "DequantizeLinear"],
            Quantization::StaticInt8 {
                method: "unknown".into(),
            },
        ),
        (
            Form::QLinear,
            &["QLinearMatMul"],
            Quantization::StaticInt8 {
                method: "unknown".into(),
            },
        ),
    ] {
        let q = quantize(&proto, form, &batch).unwrap();
        let graph = q.graph.as_ref().unwrap();
        for op in ops {
            assert!(
                graph.node.iter().any(|n| n.op_type == *op),
                "{form:?} has no {op}"
            );
        }
        let bytes = encode(&q);
        let bundle = pack(bytes, tokenizer.clone(), labels.clone(), 64, "int8").unwrap();
        assert_eq!(bundle.manifest.quantization, scheme);
        let mut int8 = Classifier::from_bundle(&bundle, opts.clone()).unwrap();
        let mut worst = 0f32;
        for t in TEXTS {
            let a = f32_model.classify(t).unwrap().logits;
            let b = int8.classify(t).unwrap().logits;
            for (x, y) in a.iter().zip(&b) {
                worst = worst.max((x - y).abs());
            }
        }
        let scale = TEXTS
            .iter()
            .flat_map(|t| f32_model.classify(t).unwrap().logits)
            .fold(0f32, |m, v| m.max(v.abs()));
        eprintln!("{form:?}: max |Δlogit| {worst:.4} (largest |logit| {scale:.3})");
        assert!(
            worst > 0.0,
            "{form:?}: identical to f32, so nothing was quantized"
        );
        assert!(
            worst < 0.1 * scale.max(1.0),
            "{form:?}: int8 drifted {worst} from f32"
        );
    }
}

#[test]
fn profile_times_every_node_and_runs_our_dynamic_quantize() {
    let m = TinyModel::new();
    let opts = ClassifierOptions::default();
    let f32_model = Classifier::open(&m.bundle, opts.clone()).unwrap();
    let batch = calibration(&f32_model);
    let proto = decode(&std::fs::read(&m.onnx).unwrap()).unwrap();
    let q = quantize(&proto, Form::Dynamic, &batch).unwrap();
    let dynamic_nodes = q
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .filter(|n| n.op_type == "DynamicQuantizeLinear")
        .count();
    let tokenizer = std::fs::read(m.tokenizer()).unwrap();
    let labels = vec!["negative".to_string(), "positive".to_string()];
    let bundle = pack(encode(&q), tokenizer, labels, 64, "int8").unwrap();
    let mut int8 = Classifier::from_bundle(&bundle, opts.clone()).unwrap();
    let before = int8.classify(TEXTS[2]).unwrap().logits;

    let ops = int8.profile(TEXTS[2], 3).unwrap();
    let ours = ops
        .iter()
        .find(|o| o.op == "DynamicQuantizeU8 (edgebert)")
        .expect("the runtime's DynamicQuantizeLinear replaces tract's");
    // tract merges the quantizations of one activation (the graph quantizes it once per MatMul).
    assert!(
        (1..=dynamic_nodes).contains(&ours.nodes),
        "{} of {dynamic_nodes}",
        ours.nodes
    );
    assert!(
        !ops.iter()
            .any(|o| o.op.starts_with("DynamicQuantizeLinear")),
        "{ops:?}"
    );
    assert!(ops.iter().all(|o| o.nodes > 0));
    assert!(ops.windows(2).all(|w| w[0].ms_per_run >= w[1].ms_per_run));
    assert!(ops.iter().map(|o| o.ms_per_run).sum::<f64>() > 0.0);
    // Profiling runs the same plan: the answer afterwards is unchanged.
    assert_eq!(int8.classify(TEXTS[2]).unwrap().logits, before);
}
