//! Compiled bundles (`edgebert compile`, `Classifier::compile`): tract's analysed graph stored as
//! NNEF instead of the ONNX. Same answers, the checks of an ONNX bundle still made, bad bytes a
//! typed error.

use std::process::Command;

use edgebert_quantize::onnx::{decode, encode};
use edgebert_runtime::bundle::{COMPILED_FORMAT_VERSION, ONNX_FORMAT_VERSION};
use edgebert_runtime::engine::is_compiled;
use edgebert_runtime::{pack, Bundle, Classifier, ClassifierOptions, Error, ModelError};
use edgebert_tests::int8::{quantize, Form};
use edgebert_tests::REVIEW_TEXTS as TEXTS;
use edgebert_tests::{tokenizer_json_with, workspace_bin, TinyModel};

fn opts() -> ClassifierOptions {
    ClassifierOptions::default()
}

/// The tiny model's bundle in f32 and with its MatMuls int8 (DynamicQuantizeLinear form).
fn bundles(m: &TinyModel) -> Vec<(&'static str, Bundle)> {
    let f32_bundle = Bundle::read(&m.bundle).unwrap();
    let f32_model = Classifier::from_bundle(&f32_bundle, opts()).unwrap();
    let batch = f32_model.encoder().batch(TEXTS, 32).unwrap();
    let proto = decode(&std::fs::read(&m.onnx).unwrap()).unwrap();
    let q = quantize(&proto, Form::Dynamic, &batch).unwrap();
    let int8 = pack(
        encode(&q),
        f32_bundle.tokenizer_json.clone(),
        f32_bundle.manifest.labels.clone(),
        64,
        "int8",
    )
    .unwrap();
    vec![("f32", f32_bundle), ("int8", int8)]
}

#[test]
fn a_compiled_bundle_answers_as_its_onnx_bundle() {
    let m = TinyModel::new();
    for (name, bundle) in bundles(&m) {
        let compiled = Classifier::compile(&bundle, opts()).unwrap();
        assert!(!is_compiled(&bundle.graph) && is_compiled(&compiled.graph));
        assert_eq!(compiled.manifest, bundle.manifest);
        assert_eq!(compiled.tokenizer_json, bundle.tokenizer_json);
        let bytes = compiled.to_bytes();
        assert_eq!(Bundle::version_of(&bytes), Some(COMPILED_FORMAT_VERSION));
        assert_eq!(
            Bundle::version_of(&bundle.to_bytes()),
            Some(ONNX_FORMAT_VERSION)
        );

        let mut onnx = Classifier::from_bundle(&bundle, opts()).unwrap();
        let mut nnef = Classifier::from_bundle_bytes(&bytes, opts()).unwrap();
        // One at a time (length buckets 16 and 32) and together (a batch of 5).
        let together_a = onnx.classify_batch(TEXTS).unwrap();
        let together_b = nnef.classify_batch(TEXTS).unwrap();
        for (i, text) in TEXTS.iter().enumerate() {
            let (a, b) = (onnx.classify(text).unwrap(), nnef.classify(text).unwrap());
            assert_eq!(a.label, b.label, "{name}: {text}");
            for (x, y) in a.logits.iter().zip(&b.logits) {
                assert!((x - y).abs() <= 1e-6, "{name}: {text}: {x} vs {y}");
            }
            let (ta, tb) = (
                together_a[i].as_ref().unwrap(),
                together_b[i].as_ref().unwrap(),
            );
            for (x, y) in ta.logits.iter().zip(&tb.logits) {
                assert!((x - y).abs() <= 1e-6, "{name} batched: {text}: {x} vs {y}");
            }
        }
        if name == "int8" {
            // The compiled int8 graph still runs the runtime's own quantize operator.
            let ops = nnef.profile(TEXTS[0], 1).unwrap();
            assert!(
                ops.iter().any(|o| o.op == "DynamicQuantizeU8 (edgebert)"),
                "{ops:?}"
            );
        }
        let again = Classifier::compile(&compiled, opts()).unwrap_err();
        assert!(
            matches!(again, Error::Model(ModelError::AlreadyCompiled)),
            "{again}"
        );
    }
}

#[test]
fn a_compiled_graph_keeps_the_tokenizer_check() {
    let m = TinyModel::new();
    let mut compiled = Classifier::compile(&Bundle::read(&m.bundle).unwrap(), opts()).unwrap();
    let extra: Vec<String> = (0..40).map(|i| format!("extra{i}")).collect();
    compiled.tokenizer_json = tokenizer_json_with(&extra).into_bytes();
    let err = Classifier::from_bundle(&compiled, opts()).unwrap_err();
    assert!(
        matches!(err, Error::Model(ModelError::VocabTooLarge { .. })),
        "{err}"
    );
}

#[test]
fn a_damaged_compiled_graph_is_a_typed_error() {
    let m = TinyModel::new();
    let compiled = Classifier::compile(&Bundle::read(&m.bundle).unwrap(), opts()).unwrap();
    let graph = &compiled.graph;
    let text_at = graph
        .windows(9)
        .position(|w| w == b"version 1")
        .expect("graph.nnef in the tar");
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut garbled = graph.clone();
    garbled[text_at..text_at + 9].copy_from_slice(b"vers!on 1");
    cases.push(("garbled graph text", garbled));
    cases.push(("truncated", graph[..graph.len() / 2].to_vec()));
    let mut zeroed = graph.clone();
    let half = zeroed.len() / 2;
    zeroed[half..].iter_mut().for_each(|b| *b = 0);
    cases.push(("second half zeroed", zeroed));
    for (what, bytes) in cases {
        assert!(is_compiled(&bytes), "{what}");
        let bundle = Bundle {
            graph: bytes,
            ..compiled.clone()
        };
        let err = Classifier::from_bundle_bytes(&bundle.to_bytes(), opts()).unwrap_err();
        assert!(
            matches!(err, Error::Model(ModelError::Compiled(_))),
            "{what}: {err}"
        );
        assert!(
            err.to_string().contains(edgebert_runtime::TRACT_VERSION),
            "{what}: {err}"
        );
    }
}

#[test]
fn cli_compile_writes_a_compiled_bundle_that_answers_alike() {
    let m = TinyModel::new();
    let out = m.dir.path().join("compiled.ebm");
    let bin = workspace_bin("edgebert");
    let run = |args: &[&str]| Command::new(&bin).args(args).output().unwrap();
    let bundle = m.bundle.to_str().unwrap();
    let o = run(&["compile", bundle, "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let info = run(&["info", out.to_str().unwrap(), "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["graph"], "compiled");
    assert_eq!(info["format_version"], COMPILED_FORMAT_VERSION);
    let plain = run(&["info", bundle, "--json"]);
    let plain: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert_eq!(plain["graph"], "onnx");

    let classify = |model: &str| {
        let o = run(&["classify", "--model", model, "--json", TEXTS[2], TEXTS[1]]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    assert_eq!(classify(bundle), classify(out.to_str().unwrap()));

    // Never over its input; compiling a compiled bundle is refused; exit code 2 (bad model).
    let before = std::fs::read(&m.bundle).unwrap();
    let o = run(&["compile", bundle, "-o", bundle]);
    assert!(!o.status.success());
    assert_eq!(std::fs::read(&m.bundle).unwrap(), before);
    let twice = m.dir.path().join("twice.ebm");
    let o = run(&[
        "compile",
        out.to_str().unwrap(),
        "-o",
        twice.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("compiled already"));
    assert!(!twice.exists());
}

/// The int8 weights are stored `[n, k]` (`Engine` transposes them once at load, and compiled
/// graphs keep that form); the answers are tract's on the untouched graph.
#[test]
fn transposed_int8_weights_answer_as_tract_does_on_the_untouched_graph() {
    use tract_onnx::prelude::*;
    let m = TinyModel::new();
    let (_, int8) = bundles(&m).pop().unwrap();
    let compiled = Classifier::compile(&int8, opts()).unwrap();
    let graph = tar_entry(&compiled.graph, "graph.nnef");
    let graph = String::from_utf8(graph).unwrap();
    let einsums: Vec<&str> = graph
        .lines()
        .filter(|l| l.contains("tract_core_einsum_q"))
        .collect();
    assert!(!einsums.is_empty());
    for line in &einsums {
        assert!(line.contains("k,nk,"), "weights not transposed: {line}");
    }

    let mut ours = Classifier::from_bundle(&int8, opts()).unwrap();
    let model = tract_onnx::onnx()
        .model_for_read(&mut &int8.graph[..])
        .unwrap();
    // As `Engine` loads it (symbolic batch and sequence, typed, decluttered), less the transposition.
    let mut model = model;
    let (batch, sequence) = (model.sym("batch"), model.sym("sequence"));
    for ix in 0..model.inputs.len() {
        model
            .set_input_fact(
                ix,
                InferenceFact::dt_shape(i64::datum_type(), [batch.to_dim(), sequence.to_dim()]),
            )
            .unwrap();
    }
    let untouched = model
        .clone()
        .into_typed()
        .unwrap()
        .into_decluttered()
        .unwrap();
    let names: Vec<String> = model
        .input_outlets()
        .unwrap()
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect();
    for text in TEXTS {
        // The bucket `classify` pads to: padding takes part in the activations' quantization
        // range, so the same tokens padded to another length answer slightly differently.
        let tokens = ours.encoder().batch(&[text], 64).unwrap();
        let used = tokens.mask.iter().filter(|&&m| m == 1).count();
        let len = [16, 32, 64].into_iter().find(|&b| used <= b).unwrap();
        let batch = ours.encoder().batch(&[text], len).unwrap();
        let plan = untouched
            .set_symbols(&std::collections::HashMap::from([
                (untouched.sym("batch"), 1.to_dim()),
                (untouched.sym("sequence"), (len as i64).to_dim()),
            ]))
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let inputs: TVec<TValue> = names
            .iter()
            .map(|name| {
                let data = match name.as_str() {
                    "input_ids" => &batch.ids,
                    "attention_mask" => &batch.mask,
                    _ => &batch.type_ids,
                };
                Tensor::from_shape(&[1, len], data).unwrap().into_tvalue()
            })
            .collect();
        let theirs = plan.run(inputs).unwrap();
        let theirs = theirs[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<f32>>();
        let got = ours.classify(text).unwrap();
        assert_eq!(got.logits.len(), theirs.len());
        for (x, y) in got.logits.iter().zip(&theirs) {
            assert!((x - y).abs() <= 1e-5, "{text}: {x} vs {y}");
        }
    }
}

/// A compiled graph's tar with anything beyond `graph.nnef` and `.dat` tensors goes through
/// tract's own reader, and still loads.
#[test]
fn a_compiled_graph_with_other_entries_loads_through_tracts_reader() {
    let m = TinyModel::new();
    let (_, int8) = bundles(&m).pop().unwrap();
    let compiled = Classifier::compile(&int8, opts()).unwrap();
    let mut archive = tar::Archive::new(&compiled.graph[..]);
    let mut builder = tar::Builder::new(Vec::new());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        builder.append(&header, &data[..]).unwrap();
    }
    let note = b"written by hand\n";
    let mut header = tar::Header::new_gnu();
    header.set_path("NOTES.txt").unwrap();
    header.set_size(note.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, &note[..]).unwrap();
    let extended = Bundle {
        graph: builder.into_inner().unwrap(),
        ..compiled.clone()
    };
    assert!(is_compiled(&extended.graph));
    let mut a = Classifier::from_bundle(&compiled, opts()).unwrap();
    let mut b = Classifier::from_bundle(&extended, opts()).unwrap();
    for text in TEXTS {
        assert_eq!(
            a.classify(text).unwrap().logits,
            b.classify(text).unwrap().logits
        );
    }
}

fn tar_entry(tar_bytes: &[u8], name: &str) -> Vec<u8> {
    let mut archive = tar::Archive::new(tar_bytes);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some(name) {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            return data;
        }
    }
    panic!("no {name} in the tar")
}
