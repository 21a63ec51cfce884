//! The demo bundle the README's first command uses stays loadable, and it is the test fixture it
//! claims to be; the README's figures for the built-in model are the shipped bundle's own.

use edgebert_quantize::Checkpoint;
use edgebert_runtime::{Bundle, Classifier, ClassifierOptions};
use edgebert_tests::{reference, TinyModel};

#[test]
fn the_shipped_demo_bundle_is_the_tiny_fixture() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/demo-tiny.ebm");
    let bundle = Bundle::read(path).unwrap();
    assert_eq!(bundle.manifest.task, "demo-random-weights");
    let mut demo = Classifier::from_bundle(&bundle, ClassifierOptions::default()).unwrap();
    let fixture = TinyModel::new();
    let ckpt = Checkpoint::open(&fixture.checkpoint).unwrap();
    let text = "a gripping, beautiful film";
    let p = demo.classify(text).unwrap();
    let e = demo.encode(text).unwrap();
    let want = reference::logits(&ckpt, &e.ids, &e.type_ids);
    for (a, b) in p.logits.iter().zip(&want) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}

#[test]
fn the_readme_quotes_the_built_in_models_own_test_accuracy() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let bundle = Bundle::read(format!("{root}/models/sentiment-en.ebm")).unwrap();
    let metric = |name: &str| {
        let m = bundle
            .manifest
            .provenance
            .metrics
            .iter()
            .find(|m| m.name == name);
        100.0 * m.unwrap_or_else(|| panic!("no {name} in the bundle")).value
    };
    let sentence = format!(
        "Test accuracy {:.2}% (teacher {:.2}%)",
        metric("test_accuracy"),
        metric("test_accuracy_teacher_f32")
    );
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let begin = "<!-- built-in model figures:";
    let end = "<!-- /built-in model figures -->";
    let marked = &readme[readme.find(begin).expect("README's figures marker")
        ..readme.find(end).expect("README's figures end marker")];
    assert!(
        marked.contains(&sentence),
        "README.md says {marked:?}, the bundle: {sentence:?} (scripts/build-default-model writes it)"
    );
}
