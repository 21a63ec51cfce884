//! Vocabulary pruning on a tiny model: ids stay consistent between tokenizer and embeddings, texts
//! inside the kept vocabulary get exactly the same logits, other texts still run.

use edgebert_quantize::prune::prune_vocab;
use edgebert_runtime::{Bundle, Classifier, ClassifierOptions};
use edgebert_tests::TinyModel;

#[test]
fn pruning_keeps_the_logits_of_covered_texts_and_shrinks_the_table() {
    let m = TinyModel::new();
    let bundle = Bundle::read(&m.bundle).unwrap();
    let corpus: Vec<String> = ["the movie was good", "bad acting !", "a boring plot"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (pruned, report) = prune_vocab(&bundle, &corpus).unwrap();
    assert_eq!(report.corpus_lines, 3);
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
        &edgebert_quantize::onnx::decode(&bundle.onnx).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let mut q = bundle.clone();
    q.onnx = edgebert_quantize::onnx::encode(&int8);
    let err = prune_vocab(&q, &corpus).unwrap_err().to_string();
    assert!(err.contains("prune before quantizing"), "{err}");
    // A corpus without text.
    assert!(prune_vocab(&bundle, &[String::new()]).is_err());
}
