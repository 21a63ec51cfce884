//! Bad input, at the library level: every case gets a typed error that says what is wrong,
//! never a panic. (The CLI side, with exit codes, is in `cli.rs`.)

use edgebert_quantize::Checkpoint;
use edgebert_runtime::{
    pack, Bundle, BundleError, Classifier, ClassifierOptions, Error, InputError, ModelError,
};
use edgebert_tests::{TinyModel, TinySpec};

fn opts() -> ClassifierOptions {
    ClassifierOptions::default()
}

fn classifier(m: &TinyModel) -> Classifier {
    Classifier::open(&m.bundle, opts()).unwrap()
}

fn parts(m: &TinyModel, onnx: &std::path::Path, labels: &[&str]) -> Result<Classifier, Error> {
    Classifier::from_parts(
        std::fs::read(onnx).unwrap(),
        std::fs::read(m.tokenizer()).unwrap(),
        labels.iter().map(|s| s.to_string()).collect(),
        64,
        opts(),
    )
}

#[test]
fn empty_and_whitespace_texts_are_input_errors() {
    let m = TinyModel::new();
    let mut c = classifier(&m);
    for text in ["", " ", "\t\n  \r\n"] {
        assert!(
            matches!(c.classify(text), Err(Error::Input(InputError::Empty))),
            "{text:?}"
        );
    }
}

#[test]
fn a_batch_with_bad_texts_still_classifies_the_good_ones() {
    let m = TinyModel::new();
    let mut c = classifier(&m);
    let r = c
        .classify_batch(&["good", "", "bad movie", "\u{0}\u{1}"])
        .unwrap();
    assert!(r[0].is_ok() && r[2].is_ok());
    assert_eq!(r[1], Err(InputError::Empty));
    assert_eq!(r[3], Err(InputError::NoTokens));
}

#[test]
fn one_megabyte_on_one_line_is_truncated_not_fatal() {
    let m = TinyModel::new();
    let mut c = classifier(&m);
    let text = "the movie was good and ".repeat(1 << 20 >> 4);
    assert!(text.len() >= 1 << 20);
    let p = c.classify(&text).unwrap();
    assert!(p.truncated);
    // Read in chunks (the default): at most MAX_WINDOWS inputs of the maximum length.
    let most = edgebert_runtime::text::MAX_WINDOWS;
    assert_eq!((p.tokens, p.windows), (most * 64, most));
    // No spaces at all: one enormous "word".
    let p = c.classify(&"x".repeat(1 << 20)).unwrap();
    assert_eq!(p.tokens, 3);
}

#[test]
fn nul_control_characters_are_cleaned_and_only_control_is_an_error() {
    let m = TinyModel::new();
    let mut c = classifier(&m);
    let clean = c.classify("good movie").unwrap();
    let dirty = c.classify("good\u{0}\u{7} movie\u{1b}").unwrap();
    assert_eq!(
        clean.logits, dirty.logits,
        "control characters are removed by the normaliser"
    );
    assert!(matches!(
        c.classify("\u{0}\u{1}\u{2}"),
        Err(Error::Input(InputError::NoTokens))
    ));
}

#[test]
fn emoji_cjk_and_right_to_left_scripts_classify() {
    let m = TinyModel::new();
    let mut c = classifier(&m);
    for text in [
        "great 🎬🍿 film",
        "这部电影很好",
        "הסרט היה טוב",
        "الفيلم جيد",
        "e\u{301}te\u{301}",
        "🙂",
    ] {
        let p = c.classify(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let sum: f32 = p.scores.iter().map(|s| s.probability).sum();
        assert!(
            (sum - 1.0).abs() < 1e-5 && p.probability.is_finite(),
            "{text}"
        );
    }
}

#[test]
fn zero_byte_truncated_and_bit_flipped_bundles_are_refused() {
    let m = TinyModel::new();
    let bytes = std::fs::read(&m.bundle).unwrap();
    assert!(matches!(Bundle::from_bytes(&[]), Err(BundleError::Empty)));
    for cut in [1, 20, 40, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            matches!(
                Bundle::from_bytes(&bytes[..cut]),
                Err(BundleError::Truncated { .. })
            ),
            "cut at {cut}"
        );
    }
    for at in [40, bytes.len() / 3, bytes.len() - 10] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x10;
        assert!(
            matches!(
                Bundle::from_bytes(&flipped),
                Err(BundleError::Checksum { .. })
            ),
            "flip at {at}"
        );
    }
    let mut onnx_file = bytes.clone();
    onnx_file[..8].copy_from_slice(b"\x08\x08\x12\x08edge");
    assert!(matches!(
        Bundle::from_bytes(&onnx_file),
        Err(BundleError::BadMagic)
    ));
}

#[test]
fn a_newer_format_version_is_named() {
    let m = TinyModel::new();
    let mut bytes = std::fs::read(&m.bundle).unwrap();
    bytes[8] = 9;
    let err = Bundle::from_bytes(&bytes).unwrap_err();
    assert!(matches!(
        err,
        BundleError::NewerVersion {
            found: 9,
            supported: edgebert_runtime::bundle::FORMAT_VERSION
        }
    ));
    assert!(err.to_string().contains("newer"), "{err}");
}

#[test]
fn an_operator_tract_lacks_is_named() {
    let m = TinyModel::new();
    let onnx = m.edited_onnx("unknown-op.onnx", |model| {
        let graph = model.graph.as_mut().unwrap();
        let node = graph.node.iter_mut().find(|n| n.op_type == "Tanh").unwrap();
        node.op_type = "FancyTanh".into();
    });
    let err = parts(&m, &onnx, &["negative", "positive"]).unwrap_err();
    assert!(
        matches!(&err, Error::Model(ModelError::UnsupportedOperators { ops }) if ops == &["FancyTanh"]),
        "{err}"
    );
    assert!(err.to_string().contains("FancyTanh"));
}

#[test]
fn a_tokenizer_that_is_not_json_is_refused() {
    let m = TinyModel::new();
    let err = Classifier::from_parts(
        std::fs::read(&m.onnx).unwrap(),
        b"this is { not json".to_vec(),
        vec!["negative".into(), "positive".into()],
        64,
        opts(),
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Model(ModelError::Tokenizer(_))),
        "{err}"
    );
}

#[test]
fn a_tokenizer_larger_than_the_embedding_table_is_refused() {
    let m = TinyModel::with(
        &TinySpec {
            vocab_rows: Some(50),
            ..TinySpec::default()
        },
        64,
    );
    let err = Classifier::open(&m.bundle, opts()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Model(ModelError::VocabTooLarge {
                vocab: 97,
                rows: 50
            })
        ),
        "{err}"
    );
}

#[test]
fn label_count_must_match_the_logits() {
    let m = TinyModel::new();
    let err = parts(&m, &m.onnx, &["a", "b", "c"]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Model(ModelError::LabelCount {
                labels: 3,
                logits: 2
            })
        ),
        "{err}"
    );
    assert!(matches!(
        parts(&m, &m.onnx, &["a"]),
        Err(Error::Model(ModelError::TooFewLabels))
    ));
}

#[test]
fn missing_and_unknown_graph_inputs_are_named() {
    let m = TinyModel::new();
    let onnx = m.edited_onnx("no-mask.onnx", |model| {
        let graph = model.graph.as_mut().unwrap();
        graph.input.retain(|i| i.name != "attention_mask");
    });
    let err = parts(&m, &onnx, &["negative", "positive"]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Model(ModelError::MissingInput {
                name: "attention_mask",
                ..
            })
        ),
        "{err}"
    );
    let onnx = m.edited_onnx("renamed.onnx", |model| {
        let graph = model.graph.as_mut().unwrap();
        for i in &mut graph.input {
            if i.name == "token_type_ids" {
                i.name = "segment_ids".into();
            }
        }
        for n in &mut graph.node {
            for i in &mut n.input {
                if i == "token_type_ids" {
                    *i = "segment_ids".into();
                }
            }
        }
    });
    let err = parts(&m, &onnx, &["negative", "positive"]).unwrap_err();
    assert!(
        matches!(&err, Error::Model(ModelError::UnknownInput { name }) if name == "segment_ids"),
        "{err}"
    );
}

#[test]
fn bytes_that_are_not_onnx_are_refused() {
    let m = TinyModel::new();
    let junk = m.path("junk.onnx");
    std::fs::write(&junk, b"\xff\xff\xff\xff not a protobuf").unwrap();
    let err = parts(&m, &junk, &["negative", "positive"]).unwrap_err();
    assert!(matches!(err, Error::Model(ModelError::NotOnnx(_))), "{err}");
}

#[test]
fn a_bare_bert_model_is_refused_by_the_exporter() {
    let dir = tempfile::tempdir().unwrap();
    edgebert_tests::write_checkpoint(
        dir.path(),
        &TinySpec {
            bare: true,
            ..TinySpec::default()
        },
    )
    .unwrap();
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(ckpt.prefix(), "");
    let err = edgebert_quantize::export(&ckpt).unwrap_err();
    assert!(matches!(err, edgebert_quantize::Error::NoClassifier));
    assert!(err.to_string().contains("no classification head"), "{err}");
}

#[test]
fn a_corrupt_checkpoint_is_refused_by_the_exporter() {
    let m = TinyModel::new();
    std::fs::write(
        m.checkpoint.join("model.safetensors"),
        b"\x10\0\0\0\0\0\0\0{\"a\":",
    )
    .unwrap();
    let err = Checkpoint::open(&m.checkpoint).unwrap_err();
    assert!(
        matches!(err, edgebert_quantize::Error::Safetensors { .. }),
        "{err}"
    );
    std::fs::write(m.checkpoint.join("config.json"), b"{").unwrap();
    assert!(matches!(
        Checkpoint::open(&m.checkpoint),
        Err(edgebert_quantize::Error::Config { .. })
    ));
}

#[test]
fn writing_never_replaces_an_input() {
    let m = TinyModel::new();
    let before = std::fs::read(&m.onnx).unwrap();
    let bundle = pack(
        before.clone(),
        std::fs::read(m.tokenizer()).unwrap(),
        vec!["n".into(), "p".into()],
        64,
        "t",
    )
    .unwrap();
    let err = bundle.write(&m.onnx, &[m.onnx.as_path()]).unwrap_err();
    assert!(matches!(err, Error::OutputIsInput(_)));
    assert_eq!(std::fs::read(&m.onnx).unwrap(), before);
    let err =
        edgebert_quantize::export_to_file(&m.checkpoint, &m.checkpoint.join("config.json"), 64)
            .unwrap_err();
    assert!(err.to_string().contains("also an input"), "{err}");
}

#[test]
fn a_graph_that_makes_tract_panic_is_an_error_not_a_crash() {
    // Found by fuzzing: tract-hir 0.23.9 indexes a Transpose `perm` without checking the rank.
    let m = TinyModel::new();
    let onnx = m.edited_onnx("bad-perm.onnx", |model| {
        let graph = model.graph.as_mut().unwrap();
        let node = graph
            .node
            .iter_mut()
            .find(|n| n.op_type == "Transpose")
            .unwrap();
        node.attribute[0].ints = vec![0, 2, 1, 123];
    });
    let err = parts(&m, &onnx, &["negative", "positive"]).unwrap_err();
    assert!(
        matches!(&err, Error::Model(ModelError::Tract(msg)) if msg.contains("rejected by the parser")),
        "{err}"
    );
}

#[test]
fn a_tokenizer_that_makes_tokenizers_panic_is_an_error_not_a_crash() {
    // Found by fuzzing: tokenizers 0.22.2 unwraps the error of a malformed decoder object.
    let m = TinyModel::new();
    let json = std::fs::read_to_string(m.tokenizer()).unwrap();
    let broken = json.replacen("\"decoder\":{", "\"decoder\":{&", 1);
    assert_ne!(broken, json);
    let err = Classifier::from_parts(
        std::fs::read(&m.onnx).unwrap(),
        broken.into_bytes(),
        vec!["negative".into(), "positive".into()],
        64,
        opts(),
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Model(ModelError::Tokenizer(_))),
        "{err}"
    );
}

#[test]
fn a_bundle_in_memory_loads_without_a_copy_and_is_checked_like_a_file() {
    let m = TinyModel::new();
    let bytes = std::fs::read(&m.bundle).unwrap();
    let mut borrowed = Classifier::from_bundle_bytes(&bytes, opts()).unwrap();
    let mut owned = Classifier::from_bundle(&Bundle::from_bytes(&bytes).unwrap(), opts()).unwrap();
    for text in ["the movie was good", "awful plot , boring acting"] {
        assert_eq!(
            borrowed.classify(text).unwrap(),
            owned.classify(text).unwrap()
        );
    }
    let view = Bundle::parse(&bytes).unwrap();
    assert_eq!(
        view.graph.as_ptr_range().start,
        bytes[bytes.len() - 4 - view.graph.len()..].as_ptr()
    );
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 1;
    assert!(matches!(
        Classifier::from_bundle_bytes(&flipped, opts()),
        Err(Error::Bundle(BundleError::Checksum { .. }))
    ));
    assert!(matches!(
        Classifier::from_bundle_bytes(&bytes[..bytes.len() - 1], opts()),
        Err(Error::Bundle(BundleError::Truncated { .. }))
    ));
}
