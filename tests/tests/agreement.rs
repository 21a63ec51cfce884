//! The runtime's logits for tiny exported models agree with an independent ndarray forward pass,
//! at several lengths, with padding, alone and batched.

use edgebert_quantize::Checkpoint;
use edgebert_runtime::{Bundle, Classifier, ClassifierOptions};
use edgebert_tests::{build_model, reference, TinySpec};

const TOLERANCE: f32 = 1e-4;

fn texts() -> Vec<String> {
    vec![
        "good".into(),                                     // 3 tokens: padded to 16
        "the movie was not good , it was boring !".into(), // padded to 16
        "this film is great and the acting is very fun".into(),
        "the plot was awful and i hate it ".repeat(3), // 32-bucket
        "a very good story and great acting , love it . ".repeat(5), // 64-bucket
        "boring ".repeat(200),                         // 4 windows of 52 tokens
        "xyzzy qqq unknownword 123 !!".into(),         // letters, ## pieces, digits
    ]
}

fn check(spec: &TinySpec, options: ClassifierOptions) {
    let dir = tempfile::tempdir().unwrap();
    let (_, ebm) = build_model(dir.path(), spec, 64).unwrap();
    let ckpt = Checkpoint::open(dir.path().join("checkpoint")).unwrap();
    let mut classifier = Classifier::open(&ebm, options).unwrap();
    let texts = texts();
    let batched = classifier.classify_batch(&texts).unwrap();
    for (text, batched) in texts.iter().zip(batched) {
        let single = classifier.classify(text).unwrap();
        // A long text's windows (the default `--long chunks`), weighted by their tokens.
        let reading = classifier.read(text).unwrap();
        let mut expected = vec![0f32; single.logits.len()];
        for w in &reading.windows {
            let share = w.ids.len() as f32 / reading.tokens() as f32;
            for (e, x) in expected
                .iter_mut()
                .zip(reference::logits(&ckpt, &w.ids, &w.type_ids))
            {
                *e += share * x;
            }
        }
        for (label, (got, want)) in single.logits.iter().zip(&expected).enumerate() {
            assert!(
                (got - want).abs() < TOLERANCE,
                "{} tokens, label {label}: runtime {got} vs reference {want}",
                reading.tokens()
            );
        }
        let batched = batched.unwrap();
        for (a, b) in batched.logits.iter().zip(&single.logits) {
            assert!((a - b).abs() < TOLERANCE, "batched {a} vs single {b}");
        }
        assert_eq!(
            (single.truncated, single.windows),
            (reading.truncated, reading.windows.len())
        );
    }
}

#[test]
fn logits_match_the_reference_at_every_length() {
    check(&TinySpec::default(), ClassifierOptions::default());
}

#[test]
fn three_labels_relu_and_one_layer_match_the_reference() {
    let spec = TinySpec {
        layers: 1,
        labels: vec!["a".into(), "b".into(), "c".into()],
        activation: "relu".into(),
        seed: 11,
        ..TinySpec::default()
    };
    check(
        &spec,
        ClassifierOptions {
            threads: 1,
            batch_size: 3,
            ..ClassifierOptions::default()
        },
    );
}

#[test]
fn multithreaded_runs_match_the_reference() {
    check(
        &TinySpec {
            seed: 3,
            ..TinySpec::default()
        },
        ClassifierOptions {
            threads: 2,
            batch_size: 4,
            ..ClassifierOptions::default()
        },
    );
}

#[test]
fn long_text_read_by_its_head_is_truncated_to_the_maximum_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (_, ebm) = build_model(dir.path(), &TinySpec::default(), 64).unwrap();
    let head = ClassifierOptions {
        long: Some(edgebert_runtime::text::LongText::Head),
        ..ClassifierOptions::default()
    };
    let mut c = Classifier::open(&ebm, head).unwrap();
    let p = c.classify(&"good movie ".repeat(100)).unwrap();
    assert!(p.truncated);
    assert_eq!((p.tokens, p.windows), (64, 1));
    let p = c.classify("good movie").unwrap();
    assert!(!p.truncated);
    assert_eq!(p.tokens, 4);
    assert_eq!(Bundle::read(&ebm).unwrap().manifest.max_seq_len, 64);
}

#[test]
fn probabilities_are_a_distribution_sorted_by_probability() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec {
        labels: vec!["x".into(), "y".into(), "z".into()],
        ..TinySpec::default()
    };
    let (_, ebm) = build_model(dir.path(), &spec, 32).unwrap();
    let mut c = Classifier::open(&ebm, ClassifierOptions::default()).unwrap();
    let p = c.classify("the story was fun").unwrap();
    let sum: f32 = p.scores.iter().map(|s| s.probability).sum();
    assert!((sum - 1.0).abs() < 1e-5);
    assert!(p
        .scores
        .windows(2)
        .all(|w| w[0].probability >= w[1].probability));
    assert_eq!(p.label, p.scores[0].label);
}
