//! The demo bundle the README's first command uses stays loadable, and it is the test fixture it
//! claims to be.

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
