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
    assert_eq!(
        report.len(),
        16,
        "14 MatMuls and the word and position tables"
    );
    // The position table is read by a Slice: the int8 rows and their scales are sliced alike.
    let slices: Vec<&str> = q
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .filter(|n| n.op_type == "Slice" && n.name.starts_with("/embeddings/position"))
        .map(|n| n.input[0].as_str())
        .collect();
    assert_eq!(
        slices,
        [
            "bert.embeddings.position_embeddings.weight_quantized",
            "bert.embeddings.position_embeddings.weight_row_scale"
        ]
    );
    assert!(report.iter().all(|r| r.sqnr_db > 30.0), "{report:?}");

    let q_bytes = encode(&q);
    let ratio = q_bytes.len() as f64 / f32_bytes.len() as f64;
    // LayerNorms, biases and the token-type table stay f32: on a model this small they are a
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
    assert_eq!(report.len(), 14);
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

mod guard {
    use super::*;
    use edgebert_quantize::data::Columns;
    use edgebert_quantize::job::{quantize_to_file, EvalSpec, QuantizeJob};

    use edgebert_runtime::Bundle;

    const WORDS: &[&str] = &[
        "good", "bad", "great", "awful", "boring", "fun", "movie", "plot", "not", "very",
    ];

    /// Texts labelled with the f32 model's own answers: f32 accuracy is exactly 100%.
    fn eval_data(m: &TinyModel) -> std::path::PathBuf {
        let mut f32_model = Classifier::open(&m.bundle, ClassifierOptions::default()).unwrap();
        let mut lines = vec!["text,label".to_string()];
        for i in 0..60 {
            let text: Vec<&str> = (0..1 + i % 7)
                .map(|j| WORDS[(i * 7 + j * 3) % WORDS.len()])
                .collect();
            let text = text.join(" ");
            let label = f32_model.classify(&text).unwrap().label;
            lines.push(format!("{text},{label}"));
        }
        let path = m.path("eval.csv");
        std::fs::write(&path, lines.join("\n")).unwrap();
        path
    }

    fn job(m: &TinyModel, out: &str, max_drop: Option<f64>) -> QuantizeJob {
        QuantizeJob {
            input: m.bundle.clone(),
            output: m.path(out),
            onnx_out: None,
            tokenizer: None,
            labels: None,
            max_len: 64,
            options: DynamicOptions::default(),
            eval: Some(EvalSpec {
                data: eval_data(m),
                columns: Columns::default(),
                max_drop,
            }),
            prune_vocab: None,
            trim_vocab: false,
            calibration: None,
        }
    }

    #[test]
    fn evaluation_is_recorded_in_the_bundle() {
        let m = TinyModel::new();
        let summary = quantize_to_file(&job(&m, "int8.ebm", Some(50.0))).unwrap();
        let e = summary.eval.unwrap();
        assert_eq!(e.f32.accuracy, 1.0);
        assert_eq!(e.f32.examples, 60);
        assert!(e.int8.accuracy > 0.8, "{}", e.int8.accuracy);
        assert!(
            (e.agreement - e.int8.accuracy).abs() < 1e-12,
            "labels are f32's answers"
        );
        eprintln!(
            "tiny int8: accuracy {:.3}, drop {:.2} points",
            e.int8.accuracy,
            e.drop_points()
        );
        let b = Bundle::read(m.path("int8.ebm")).unwrap();
        let metric = |n: &str| {
            b.manifest
                .provenance
                .metrics
                .iter()
                .find(|x| x.name == n)
                .map(|x| x.value)
        };
        assert_eq!(metric("f32_accuracy"), Some(1.0));
        assert_eq!(metric("int8_accuracy"), Some(e.int8.accuracy));
        assert_eq!(metric("eval_examples"), Some(60.0));
    }

    #[test]
    fn over_the_guard_nothing_is_written() {
        let m = TinyModel::new();
        let err = quantize_to_file(&job(&m, "int8.ebm", Some(-1.0))).unwrap_err();
        assert!(
            matches!(err, edgebert_quantize::Error::AccuracyDrop { max, .. } if max == -1.0),
            "{err}"
        );
        assert!(!m.path("int8.ebm").exists());
        let out = std::process::Command::new(edgebert_tests::workspace_bin("edgebert-quantize"))
            .args([
                "dynamic",
                m.bundle.to_str().unwrap(),
                "-o",
                m.path("cli.ebm").to_str().unwrap(),
            ])
            .args([
                "--eval",
                m.path("eval.csv").to_str().unwrap(),
                "--max-drop=-1",
            ])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(4),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!m.path("cli.ebm").exists());
    }

    #[test]
    fn keep_f32_auto_keeps_the_worst_tensors_until_the_guard_holds() {
        let m = TinyModel::new();
        let mut j = job(&m, "auto.ebm", Some(0.0));
        j.options.keep_f32 = vec!["auto".into()];
        let summary = quantize_to_file(&j).unwrap();
        let e = summary.eval.as_ref().unwrap();
        assert!(e.drop_points() <= 0.0, "{}", e.drop_points());
        eprintln!("auto kept {:?}", summary.kept_f32);
        // What it kept is no longer quantized, and the rest is.
        for t in &summary.tensors {
            assert!(
                !summary.kept_f32.contains(&t.node),
                "{} both kept and quantized",
                t.node
            );
        }
        assert!(m.path("auto.ebm").exists());
        // An impossible guard: every tensor is tried, then nothing is written.
        let mut j = job(&m, "never.ebm", Some(-1.0));
        j.options.keep_f32 = vec!["auto".into()];
        assert!(matches!(
            quantize_to_file(&j),
            Err(edgebert_quantize::Error::AccuracyDrop { .. })
        ));
        assert!(!m.path("never.ebm").exists());
        // Without a guard there is nothing to aim for.
        let mut j = job(&m, "x.ebm", None);
        j.options.keep_f32 = vec!["auto".into()];
        assert!(matches!(
            quantize_to_file(&j),
            Err(edgebert_quantize::Error::Usage(_))
        ));
    }

    #[test]
    fn static_int8_is_calibrated_fixed_and_close_to_f32() {
        use edgebert_quantize::calibrate::Method;
        use edgebert_quantize::job::Calibration;
        let m = TinyModel::new();
        let texts = m.path("calibration.txt");
        let lines: Vec<String> = (0..40)
            .map(|i| {
                (0..1 + i % 9)
                    .map(|j| WORDS[(i * 5 + j * 7) % WORDS.len()])
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        std::fs::write(&texts, lines.join("\n")).unwrap();
        for method in [Method::Minmax, Method::Percentile, Method::Entropy] {
            let mut j = job(&m, "static.ebm", Some(10.0));
            j.calibration = Some(Calibration {
                texts: texts.clone(),
                method,
            });
            let summary = quantize_to_file(&j).unwrap();
            let e = summary.eval.unwrap();
            assert!(e.agreement >= 0.9, "{method:?}: agreement {}", e.agreement);
            let b = Bundle::read(m.path("static.ebm")).unwrap();
            assert_eq!(
                b.manifest.quantization,
                Quantization::StaticInt8 {
                    method: method.name().into()
                }
            );
            let graph = decode(&b.graph).unwrap().graph.unwrap();
            let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
            assert!(ops.contains(&"QuantizeLinear") && ops.contains(&"MatMulInteger"));
            assert!(!ops.contains(&"DynamicQuantizeLinear"), "{ops:?}");
            let mut f32 = Classifier::open(&m.bundle, ClassifierOptions::default()).unwrap();
            let mut int8 = Classifier::from_bundle(&b, ClassifierOptions::default()).unwrap();
            assert!(max_diff(&mut f32, &mut int8) < 0.25, "{method:?}");
        }
        // Calibration texts that are empty, or all one length, are refused; nothing is written.
        for (name, body) in [("empty.txt", "\n\n"), ("same.txt", "good\nbad\nfun\n")] {
            std::fs::write(m.path(name), body).unwrap();
            let mut j = job(&m, "bad-static.ebm", None);
            j.calibration = Some(Calibration {
                texts: m.path(name),
                method: Method::Minmax,
            });
            let err = quantize_to_file(&j).unwrap_err();
            assert!(
                matches!(err, edgebert_quantize::Error::Usage(_)),
                "{name}: {err}"
            );
            assert!(!m.path("bad-static.ebm").exists());
        }
    }

    #[test]
    fn activation_table_compares_every_quantized_output_and_the_logits() {
        use edgebert_quantize::activation::activation_errors;
        let m = TinyModel::new();
        let j = job(&m, "int8.ebm", None);
        let summary = quantize_to_file(&j).unwrap();
        // One row per quantized node, in the same order, and the logits last.
        assert_eq!(summary.activations.len(), summary.tensors.len() + 1);
        assert_eq!(summary.activation_texts, 60);
        for (a, t) in summary.activations.iter().zip(&summary.tensors) {
            assert_eq!((&a.node, &a.tensor), (&t.node, &t.output));
            assert!(a.sqnr_db.is_finite() && a.sqnr_db > 10.0, "{a:?}");
            assert!(a.values > 0);
        }
        let logits = summary.activations.last().unwrap();
        assert_eq!(logits.node, "logits");

        // The logits row, measured independently through the runtime's classifiers.
        let texts: Vec<String> = std::fs::read_to_string(m.path("eval.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect();
        let mut f32 = Classifier::open(&m.bundle, ClassifierOptions::default()).unwrap();
        let mut int8 = Classifier::open(m.path("int8.ebm"), ClassifierOptions::default()).unwrap();
        let (mut signal, mut noise) = (0f64, 0f64);
        for t in &texts {
            let (x, y) = (
                f32.classify(t).unwrap().logits,
                int8.classify(t).unwrap().logits,
            );
            for (u, v) in x.iter().zip(&y) {
                signal += f64::from(*u).powi(2);
                noise += f64::from(u - v).powi(2);
            }
        }
        let expected = 10.0 * (signal / noise).log10();
        assert!(
            (logits.sqnr_db - expected).abs() < 1e-3,
            "logits SQNR {} vs {expected} through the classifiers",
            logits.sqnr_db
        );

        // The f32 graph against itself: no error anywhere.
        let b = Bundle::read(&m.bundle).unwrap();
        let nodes: Vec<(String, String)> = summary
            .tensors
            .iter()
            .map(|t| (t.node.clone(), t.output.clone()))
            .collect();
        let same = activation_errors(
            &b,
            &b.graph,
            &nodes,
            &texts,
            &indicatif::ProgressBar::hidden(),
        )
        .unwrap();
        assert!(same
            .iter()
            .all(|a| a.sqnr_db == f64::INFINITY && a.relative_error == 0.0));

        // Reported as Markdown and as a second chart.
        let md = summary.markdown();
        assert!(
            md.contains("| node | output | SQNR (dB) | relative error |"),
            "{md}"
        );
        let written = summary.plot(&m.path("report")).unwrap();
        let svg = std::fs::read_to_string(
            written
                .iter()
                .find(|p| p.extension().unwrap() == "svg")
                .unwrap(),
        )
        .unwrap();
        assert!(svg.contains("int8 output error per node on 60 texts"));
        eprintln!("{md}");
    }

    #[test]
    fn eval_labels_that_are_not_the_models_are_refused() {
        let m = TinyModel::new();
        let data = m.path("bad.csv");
        std::fs::write(&data, "text,label\ngood movie,fresh\n").unwrap();
        let mut j = job(&m, "int8.ebm", None);
        j.eval.as_mut().unwrap().data = data;
        let err = quantize_to_file(&j).unwrap_err();
        assert!(
            err.to_string()
                .contains("`fresh` is not one of the model's labels"),
            "{err}"
        );
        assert!(!m.path("int8.ebm").exists());
    }
}
