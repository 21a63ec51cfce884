//! A bundle's reading defaults: `edgebert-quantize threshold` chooses a decision threshold within
//! a false-positive budget on held-out examples and stores it (and the long-text mode) in the
//! bundle; `edgebert` answers by it unless told otherwise, and a compiled copy keeps it.

use std::process::{Command, Output};

use edgebert_runtime::bundle::{FORMAT_VERSION, ONNX_FORMAT_VERSION};
use edgebert_runtime::manifest::Decision;
use edgebert_runtime::text::LongText;
use edgebert_runtime::{Bundle, Classifier, ClassifierOptions};
use edgebert_tests::{workspace_bin, TinyModel};
use serde_json::Value;

const TEXTS: [&str; 12] = [
    "the good movie",
    "a bad plot",
    "great fun",
    "boring and awful",
    "i love the movie",
    "not good",
    "the plot was fun",
    "awful awful awful",
    "was it great",
    "the movie was boring",
    "fun love great good",
    "bad not boring",
];

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Each text's probability of `positive` under the plain model.
fn positive_probability(c: &mut Classifier) -> Vec<f32> {
    c.classify_batch(&TEXTS)
        .unwrap()
        .into_iter()
        .map(|p| {
            let p = p.unwrap();
            p.scores
                .iter()
                .find(|s| s.label == "positive")
                .unwrap()
                .probability
        })
        .collect()
}

#[test]
fn a_threshold_chosen_on_dev_is_stored_and_answered_by() {
    let m = TinyModel::new();
    let mut plain = Classifier::open(&m.bundle, ClassifierOptions::default()).unwrap();
    let p = positive_probability(&mut plain);
    // Gold labels: alternate, so there are six negatives.
    let gold: Vec<&str> = (0..TEXTS.len())
        .map(|i| if i % 2 == 0 { "positive" } else { "negative" })
        .collect();
    let dev = m.path("dev.csv");
    let mut csv = String::from("text,label\n");
    for (t, g) in TEXTS.iter().zip(&gold) {
        csv.push_str(&format!("{t},{g}\n"));
    }
    std::fs::write(&dev, csv).unwrap();

    let out_ebm = m.path("decided.ebm");
    let report = m.path("threshold.md");
    let out = Command::new(workspace_bin("edgebert-quantize"))
        .args(["threshold", s(&m.bundle), "-o", s(&out_ebm)])
        .args(["--label", "positive", "--max-false-positives", "0.34"])
        .args(["--eval", s(&dev), "--long", "head", "--report", s(&report)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let b = Bundle::read(&out_ebm).unwrap();
    let d = b.manifest.defaults.decision.clone().expect("a decision");
    assert_eq!(d.label, "positive");
    assert_eq!(b.manifest.defaults.long, Some(LongText::Head));
    assert_eq!(
        Bundle::version_of(&std::fs::read(&out_ebm).unwrap()),
        Some(FORMAT_VERSION)
    );
    assert_eq!(
        Bundle::version_of(&std::fs::read(&m.bundle).unwrap()),
        Some(ONNX_FORMAT_VERSION),
        "the input is untouched"
    );
    // Within the budget (34% of 6 negatives: 2); catching one more positive would break it;
    // and no threshold with the same recall has fewer false positives.
    let (negatives, positives): (Vec<f32>, Vec<f32>) = {
        let split = |odd: usize| (0..TEXTS.len()).filter(move |i| i % 2 == odd).map(|i| p[i]);
        (split(1).collect(), split(0).collect())
    };
    let fp_at = |t: f32| negatives.iter().filter(|&&x| x >= t).count();
    let fp = fp_at(d.threshold);
    assert!(fp <= 2, "{fp} false positives at {}", d.threshold);
    let missed = positives
        .iter()
        .copied()
        .filter(|&x| x < d.threshold)
        .fold(f32::NEG_INFINITY, f32::max);
    if missed.is_finite() {
        assert!(fp_at(missed) > 2, "catching {missed} was within budget");
    }
    let caught = positives
        .iter()
        .copied()
        .filter(|&x| x >= d.threshold)
        .fold(f32::INFINITY, f32::min);
    if caught.is_finite() {
        assert_eq!(
            fp_at(caught),
            fp,
            "a higher threshold catches as much with fewer"
        );
    }
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(text.contains("Decision threshold for `positive`"), "{text}");

    // The bundle answers by its threshold: positive exactly when p ≥ t.
    let mut decided = Classifier::open(&out_ebm, ClassifierOptions::default()).unwrap();
    assert_eq!(decided.long(), LongText::Head);
    for (pr, &pp) in decided.classify_batch(&TEXTS).unwrap().iter().zip(&p) {
        let pr = pr.as_ref().unwrap();
        let want = if pp >= d.threshold {
            "positive"
        } else {
            "negative"
        };
        assert_eq!(
            pr.label, want,
            "p(positive) = {pp}, threshold {}",
            d.threshold
        );
        let shown = pr.scores.iter().find(|s| s.label == pr.label).unwrap();
        assert_eq!(pr.probability, shown.probability);
    }
    // A caller's own rule wins: nothing reaches more than 1.
    let mut strict = Classifier::open(
        &out_ebm,
        ClassifierOptions {
            decision: Some("positive=1".parse::<Decision>().unwrap()),
            long: Some(LongText::Chunks),
            ..ClassifierOptions::default()
        },
    )
    .unwrap();
    assert_eq!(strict.long(), LongText::Chunks);
    for pr in strict.classify_batch(&TEXTS).unwrap() {
        assert_eq!(pr.unwrap().label, "negative");
    }

    // The command line: info shows it, --threshold overrides it, a compiled copy keeps it.
    let edgebert = workspace_bin("edgebert");
    let info = Command::new(&edgebert)
        .args(["info", "--json", s(&out_ebm)])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(v["defaults"]["long"], "head");
    assert_eq!(v["defaults"]["decision"]["label"], "positive");
    let text = Command::new(&edgebert)
        .args(["info", s(&out_ebm)])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("positive when p ≥"));
    let classify = |args: &[&str]| {
        Command::new(&edgebert)
            .args(["classify", "--json", "--model", s(&out_ebm)])
            .args(args)
            .arg(TEXTS[0])
            .output()
            .unwrap()
    };
    let o = classify(&["--threshold", "positive=0"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["label"], "positive", "{v}");
    let o = classify(&["--threshold", "spam=0.5"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("decision rule `spam"), "{}", stderr(&o));
    let o = classify(&["--threshold", "positive=1.5"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));

    let compiled = m.path("decided.compiled.ebm");
    let o = Command::new(&edgebert)
        .args(["compile", s(&out_ebm), "-o", s(&compiled)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let c = Bundle::read(&compiled).unwrap();
    assert_eq!(c.manifest.defaults, b.manifest.defaults);
}

#[test]
fn threshold_refuses_what_it_cannot_choose_from() {
    let m = TinyModel::new();
    let dev = m.path("dev.csv");
    std::fs::write(
        &dev,
        "text,label\nthe good movie,positive\ngreat fun,positive\n",
    )
    .unwrap();
    let run = |label: &str, budget: &str| {
        Command::new(workspace_bin("edgebert-quantize"))
            .args(["threshold", s(&m.bundle), "-o", s(&m.path("t.ebm"))])
            .args(["--label", label, "--max-false-positives", budget])
            .args(["--eval", s(&dev)])
            .output()
            .unwrap()
    };
    for (label, budget, says) in [
        (
            "positive",
            "0.01",
            "examples of `positive` and of other labels",
        ),
        ("spam", "0.01", "no label `spam`"),
        ("positive", "1.5", "not a share below 1"),
    ] {
        let o = run(label, budget);
        assert_ne!(o.status.code(), Some(0));
        assert!(stderr(&o).contains(says), "{}", stderr(&o));
        assert!(!m.path("t.ebm").exists());
    }
}
