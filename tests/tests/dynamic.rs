//! `quantize::dynamic` on tiny exported models: the int8 graph runs through the runtime, stays
//! close to f32, shrinks, and leaves in f32 exactly what it is told to.

use edgebert_quantize::dynamic::{quantize_dynamic, DynamicOptions, QuantizeError};
use edgebert_quantize::onnx::{decode, encode};
use edgebert_runtime::{pack, Classifier, ClassifierOptions, Quantization};
use edgebert_tests::{TinyModel, TinySpec};

const TEXTS: &[&str] = &[
    "the movie was good",
    "awful plot , boring acting",
    "i love this film and the story is great fun",
    "it was very very boring and i hate it",
];

fn run(m: &TinyModel, onnx: Vec<u8>) -> Classifier {
    let tokenizer = std::fs::read(m.tokenizer()).unwrap();
    let bundle = pack(
        onnx,
        tokenizer,
        vec!["negative".into(), "positive".into()],
        64,
        "t",
    )
    .unwrap();
    Classifier::from_bundle(&bundle, ClassifierOptions::default()).unwrap()
}

fn max_diff(a: &mut Classifier, b: &mut Classifier) -> f32 {
    let mut worst = 0f32;
    for t in TEXTS {
        let (x, y) = (a.classify(t).unwrap().logits, b.classify(t).unwrap().logits);
        worst = x
            .iter()
            .zip(&y)
            .fold(worst, |w, (p, q)| w.max((p - q).abs()));
    }
    worst
}

#[test]
fn dynamic_int8_runs_close_to_f32_and_shrinks() {
    let spec = TinySpec {
        hidden: 64,
        intermediate: 128,
        ..TinySpec::default()
    };
    let m = TinyModel::with(&spec, 64);
    let f32_bytes = std::fs::read(&m.onnx).unwrap();
    let proto = decode(&f32_bytes).unwrap();
    let (q, report) = quantize_dynamic(&proto, &DynamicOptions::default()).unwrap();
    let ops: Vec<&str> = q
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type.as_str())
        .collect();
    // 2 layers × 6 weight MatMuls, pooler, classifier; the 4 attention MatMuls stay f32.
    assert_eq!(ops.iter().filter(|o| **o == "MatMulInteger").count(), 14);
    assert_eq!(ops.iter().filter(|o| **o == "MatMul").count(), 4);
    // Q, K and V share one DynamicQuantizeLinear of their input.
    assert_eq!(
        ops.iter()
            .filter(|o| **o == "DynamicQuantizeLinear")
            .count(),
        10
    );
    assert_eq!(report.len(), 15, "14 MatMuls and the embedding table");
    assert!(report.iter().all(|r| r.sqnr_db > 30.0), "{report:?}");

    let q_bytes = encode(&q);
    let ratio = q_bytes.len() as f64 / f32_bytes.len() as f64;
    // Position embeddings, LayerNorms and biases stay f32: on a model this small they are a
    // large share, so the whole file shrinks less than the quantized tensors (each ~4×).
    assert!(ratio < 0.5, "int8 graph is {ratio:.2} of f32");
    for r in &report {
        assert!(
            r.int8_bytes * 3 < r.f32_bytes,
            "{} shrank only to {}/{}",
            r.weight,
            r.int8_bytes,
            r.f32_bytes
        );
    }
    let mut f = run(&m, f32_bytes);
    let mut i = run(&m, q_bytes.clone());
    assert_eq!(
        pack(q_bytes, b"{}".to_vec(), vec![], 2, "t")
            .err()
            .map(|_| ()),
        Some(()),
        "pack still checks the tokenizer"
    );
    let worst = max_diff(&mut f, &mut i);
    let scale = TEXTS
        .iter()
        .flat_map(|t| f.classify(t).unwrap().logits)
        .fold(1f32, |m, v| m.max(v.abs()));
    eprintln!(
        "dynamic int8: size ratio {ratio:.3}, max |Δlogit| {worst:.4} (largest |logit| {scale:.2})"
    );
    assert!(worst > 0.0 && worst < 0.1 * scale, "int8 drifted {worst}");
    assert_eq!(i.manifest().quantization, Quantization::DynamicInt8);
}

#[test]
fn keep_f32_leaves_named_nodes_alone_and_refuses_unknown_names() {
    let m = TinyModel::new();
    let proto = decode(&std::fs::read(&m.onnx).unwrap()).unwrap();
    let keep = vec![
        "/classifier/MatMul".to_string(),
        "/embeddings/word".to_string(),
    ];
    let (q, report) = quantize_dynamic(
        &proto,
        &DynamicOptions {
            keep_f32: keep,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(report.len(), 13);
    let graph = q.graph.as_ref().unwrap();
    assert!(graph
        .node
        .iter()
        .any(|n| n.name == "/classifier/MatMul" && n.op_type == "MatMul"));
    assert!(graph
        .initializer
        .iter()
        .any(|t| t.name == "bert.embeddings.word_embeddings.weight"));
    let mut f = run(&m, std::fs::read(&m.onnx).unwrap());
    let mut i = run(&m, encode(&q));
    assert!(max_diff(&mut f, &mut i) < 0.1);

    let err = quantize_dynamic(
        &proto,
        &DynamicOptions {
            keep_f32: vec!["/nope".into()],
            ..Default::default()
        },
    );
    assert!(matches!(err, Err(QuantizeError::UnknownKeep(n)) if n == "/nope"));
}

#[test]
fn a_graph_with_nothing_to_quantize_is_an_error() {
    let m = TinyModel::new();
    let mut proto = decode(&std::fs::read(&m.onnx).unwrap()).unwrap();
    let (once, _) = quantize_dynamic(&proto, &DynamicOptions::default()).unwrap();
    assert!(matches!(
        quantize_dynamic(&once, &DynamicOptions::default()),
        Err(QuantizeError::NothingToQuantize)
    ));
    proto
        .graph
        .as_mut()
        .unwrap()
        .node
        .retain(|n| n.op_type != "MatMul");
    assert!(matches!(
        quantize_dynamic(&proto, &DynamicOptions::default()),
        Err(QuantizeError::NothingToQuantize)
    ));
}
