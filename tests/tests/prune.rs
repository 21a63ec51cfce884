//! Vocabulary pruning on a tiny model: ids stay consistent between tokenizer and embeddings, texts
//! inside the kept vocabulary get exactly the same logits, other texts still run; trimming cuts
//! exactly the pieces the tokenizer can never produce and changes no text's logits.

use edgebert_quantize::job::{quantize_to_file, QuantizeJob};
use edgebert_quantize::prune::prune_vocab;
use edgebert_runtime::{Bundle, Classifier, ClassifierOptions};
use edgebert_tests::{TinyModel, TinySpec};
use proptest::prelude::*;

#[test]
fn pruning_keeps_the_logits_of_covered_texts_and_shrinks_the_table() {
    let m = TinyModel::new();
    let bundle = Bundle::read(&m.bundle).unwrap();
    let corpus: Vec<String> = ["the movie was good", "bad acting !", "a boring plot"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (pruned, report) = prune_vocab(&bundle, Some(&corpus)).unwrap();
    assert_eq!(report.corpus_lines, Some(3));
    assert!(report.rows_after < report.rows_before, "{report:?}");
    assert!(report.onnx_bytes_after < report.onnx_bytes_before);
    // 5 special tokens + a–z, ##a–##z, 0–9 and ##0–##9 at most + the corpus words.
    assert!(report.rows_after <= 5 + 26 * 2 + 10 * 2 + 8, "{report:?}");
    assert_eq!(
        pruned.manifest.tokenizer.vocab_size as usize,
        report.rows_after
    );

    let mut before = Classifier::from_bundle(&bundle, ClassifierOptions::default()).unwrap();
    let mut after = Classifier::from_bundle(&pruned, ClassifierOptions::default()).unwrap();
    for text in [
        "the movie was good",
        "good",
        "a bad plot !",
        "the acting was boring",
    ] {
        let (a, b) = (
            before.classify(text).unwrap(),
            after.classify(text).unwrap(),
        );
        assert_eq!(a.tokens, b.tokens, "{text}");
        assert_eq!(
            a.logits, b.logits,
            "{text}: covered texts keep their exact logits"
        );
    }
    // A word the corpus never used is spelled with kept pieces instead and still classifies.
    let p = after.classify("great fun").unwrap();
    assert!(p.tokens > before.classify("great fun").unwrap().tokens);

    // Pruning an int8 (already quantized) table is refused with a reason.
    let (int8, _) = edgebert_quantize::dynamic::quantize_dynamic(
        &edgebert_quantize::onnx::decode(&bundle.graph).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let mut q = bundle.clone();
    q.graph = edgebert_quantize::onnx::encode(&int8);
    let err = prune_vocab(&q, Some(&corpus)).unwrap_err().to_string();
    assert!(err.contains("prune before quantizing"), "{err}");
    // A corpus without text.
    assert!(prune_vocab(&bundle, Some(&[String::new()])).is_err());
}

/// Pieces added to the tiny vocabulary: which of them a BERT tokenizer can produce.
const REACHABLE: &[&str] = &["中", "##ness", "xy", "##yz"];
const UNREACHABLE: &[&str] = &[
    "[unused0]", // split at the brackets
    "[unused1]",
    "##中", // a CJK character is always a word of its own
    "##!",  // so is punctuation
    "é",    // accents are stripped (lowercasing BERT normalizer)
    "##é",
    "x-y",
    "good!",
    "Good", // lowercased
];

fn trim_model() -> TinyModel {
    let extra = UNREACHABLE
        .iter()
        .chain(REACHABLE)
        .map(|s| s.to_string())
        .collect();
    TinyModel::with(
        &TinySpec {
            extra_vocab: extra,
            ..TinySpec::default()
        },
        64,
    )
}

fn piece_of(bundle: &Bundle) -> std::collections::BTreeSet<String> {
    let tok: serde_json::Value = serde_json::from_slice(&bundle.tokenizer_json).unwrap();
    tok["model"]["vocab"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

#[test]
fn trimming_cuts_exactly_the_pieces_the_tokenizer_cannot_produce() {
    let m = trim_model();
    let bundle = Bundle::read(&m.bundle).unwrap();
    let (trimmed, report) = prune_vocab(&bundle, None).unwrap();
    assert_eq!(report.corpus_lines, None);
    assert_eq!(report.unreachable, UNREACHABLE.len());
    let (before, after) = (piece_of(&bundle), piece_of(&trimmed));
    // The tiny vocabulary lists `a` and `##s` twice; the shadowed ids are never produced either.
    assert_eq!(report.rows_before, before.len() + 2);
    assert_eq!(report.rows_after, before.len() - UNREACHABLE.len());
    let cut: Vec<&str> = before.difference(&after).map(String::as_str).collect();
    let mut expected = UNREACHABLE.to_vec();
    expected.sort();
    assert_eq!(cut, expected);
    assert!(REACHABLE.iter().all(|p| after.contains(*p)));

    // With a corpus, the unreachable pieces go too, even single-character ones like `##中`.
    let corpus = vec!["good ! 中".to_string()];
    let (pruned, report) = prune_vocab(&bundle, Some(&corpus)).unwrap();
    assert_eq!(report.unreachable, UNREACHABLE.len());
    let kept = piece_of(&pruned);
    assert!(UNREACHABLE.iter().all(|p| !kept.contains(*p)));
    assert!(kept.contains("中") && kept.contains("!"));
}

#[test]
fn trimming_through_the_job_writes_the_renumbered_tokenizer_beside_a_plain_onnx() {
    let m = trim_model();
    let job = QuantizeJob {
        input: m.bundle.clone(),
        output: m.path("trimmed.ebm"),
        onnx_out: Some(m.path("trimmed.onnx")),
        tokenizer: None,
        labels: None,
        max_len: 64,
        options: Default::default(),
        eval: None,
        prune_vocab: None,
        trim_vocab: true,
        calibration: None,
    };
    let summary = quantize_to_file(&job).unwrap();
    let text = summary.markdown();
    assert!(
        text.contains("trimmed (every text tokenizes as before)"),
        "{text}"
    );
    assert!(
        text.contains("Bundle (graph, tokenizer, manifest)"),
        "{text}"
    );
    let bundle = Bundle::read(m.path("trimmed.ebm")).unwrap();
    assert_eq!(
        std::fs::read(m.path("trimmed.tokenizer.json")).unwrap(),
        bundle.tokenizer_json
    );
    assert_eq!(summary.bundle_bytes, Some(bundle.to_bytes().len()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Any text built from the added pieces' characters gets the same tokens and logits.
    #[test]
    fn trimming_changes_no_texts_logits(
        parts in proptest::collection::vec(
            prop::sample::select(vec![
                "good", "!", "中", "é", "[", "]", "unused0", "x-y", "Good", "ness", "x", "y",
                "movie", "-", " ", " ", "ed",
            ]),
            1..12,
        )
    ) {
        thread_local! {
            static MODELS: (TinyModel, Bundle, Bundle) = {
                let m = trim_model();
                let b = Bundle::read(&m.bundle).unwrap();
                let t = prune_vocab(&b, None).unwrap().0;
                (m, b, t)
            };
        }
        let text = parts.concat();
        MODELS.with(|(_, before, trimmed)| {
            let opts = ClassifierOptions::default();
            let mut a = Classifier::from_bundle(before, opts.clone()).unwrap();
            let mut b = Classifier::from_bundle(trimmed, opts).unwrap();
            match (a.classify(&text), b.classify(&text)) {
                (Ok(x), Ok(y)) => {
                    assert_eq!(x.tokens, y.tokens, "{text:?}");
                    assert_eq!(x.logits, y.logits, "{text:?}");
                }
                (x, y) => assert_eq!(x.is_err(), y.is_err(), "{text:?}"),
            }
        });
    }
}
