//! The runtime and the boards crate together: answers shown on (mock) GPIO pins through the
//! classifier's observer, and `edgebert board` / `--pin` on the command line.

use std::process::Command;

use edgebert_boards::LabelSignal;
use edgebert_runtime::cli::SignalObserver;
use edgebert_runtime::{Classifier, ClassifierOptions};
use edgebert_tests::{workspace_bin, TinyModel};
use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};
use serde_json::Value;

#[test]
fn each_classification_drives_busy_and_the_answer_pin() {
    let m = TinyModel::new();
    let mut plain = Classifier::open(&m.bundle, ClassifierOptions::default()).unwrap();
    let texts = ["good movie", "bad plot", "a film"];
    let answers: Vec<String> = texts
        .iter()
        .map(|t| plain.classify(t).unwrap().label)
        .collect();

    // The exact transactions the answers above must produce (min-prob 0: every answer lights).
    let mut expect: std::collections::HashMap<&str, Vec<T>> = [
        ("negative", vec![T::set(State::Low)]),
        ("positive", vec![T::set(State::Low)]),
    ]
    .into();
    let mut lit: Option<&str> = None;
    for a in &answers {
        if let Some(old) = lit.filter(|old| old != a) {
            expect.get_mut(old).unwrap().push(T::set(State::Low));
        }
        expect
            .get_mut(a.as_str())
            .unwrap()
            .push(T::set(State::High));
        lit = Some(a.as_str());
    }
    // A failing text (empty) lights nothing; a batch shows its last answer.
    if let Some(old) = lit {
        expect.get_mut(old).unwrap().push(T::set(State::Low));
    }
    let batch_last = plain.classify_batch(&["bad plot", "good movie"]).unwrap()[1]
        .clone()
        .unwrap()
        .label;
    expect
        .get_mut(batch_last.as_str())
        .unwrap()
        .push(T::set(State::High));
    let mut busy_expect = vec![T::set(State::Low)];
    for _ in 0..texts.len() + 2 {
        busy_expect.extend([T::set(State::High), T::set(State::Low)]);
    }
    // Dropping the observer clears everything.
    for e in expect.values_mut() {
        e.push(T::set(State::Low));
    }
    busy_expect.push(T::set(State::Low));

    let neg = Mock::new(&expect["negative"]);
    let pos = Mock::new(&expect["positive"]);
    let busy = Mock::new(&busy_expect);
    let (mut neg2, mut pos2, mut busy2) = (neg.clone(), pos.clone(), busy.clone());
    let signal = LabelSignal::new(
        vec![("negative".into(), neg), ("positive".into(), pos)],
        Some(busy),
        0.0,
    )
    .unwrap();
    let mut c = Classifier::open(&m.bundle, ClassifierOptions::default()).unwrap();
    c.set_observer(Box::new(SignalObserver::new(signal)));
    for t in texts {
        c.classify(t).unwrap();
    }
    assert!(c.classify("").is_err());
    c.classify_batch(&["bad plot", "good movie"]).unwrap();
    drop(c);
    neg2.done();
    pos2.done();
    busy2.done();
}

fn edgebert(args: &[&str]) -> std::process::Output {
    Command::new(workspace_bin("edgebert"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn board_reports_profile_threads_features_and_memory_fit() {
    let m = TinyModel::new();
    let out = edgebert(&[
        "board",
        "--board",
        "pi-zero-2w",
        "--json",
        "--model",
        m.bundle.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["board"], "pi-zero-2w");
    assert_eq!(v["core"], "Cortex-A53");
    assert_eq!(v["detected_by"], "Override");
    let threads = v["threads"].as_u64().unwrap();
    assert!((1..=4).contains(&threads), "{v}");
    assert!(v["model_peak_rss_mib"].as_f64().unwrap() > 1.0, "{v}");
    assert!(v["kernels"]["int8_kernel"].as_str().is_some(), "{v}");
    // A 120 KB model in a 512 MB board.
    assert_eq!(v["fits"], true, "{v}");

    let out = edgebert(&[
        "board",
        "--board",
        "pi3",
        "--threads",
        "1",
        "--model",
        m.bundle.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Raspberry Pi 3"), "{text}");
    assert!(text.contains("threads         1"), "{text}");
    assert!(text.contains("model fits"), "{text}");

    let out = edgebert(&["board", "--board", "pi6"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("known boards are pi-zero-2w, pi3, pi4, pi5")
    );
}

#[test]
fn pins_are_checked_and_opened_before_the_first_text() {
    let m = TinyModel::new();
    let model = m.bundle.to_str().unwrap();
    // A label the model does not have, a line given twice, a malformed pin: usage errors.
    for (args, needle) in [
        (vec!["--pin", "happy=5"], "no label `happy`"),
        (
            vec!["--pin", "positive=5", "--pin", "negative=5"],
            "line 5 is given to both",
        ),
        (
            vec!["--pin", "positive=5", "--busy-pin", "5"],
            "--busy-pin 5 is also",
        ),
        (vec!["--pin", "positive"], "expected LABEL=LINE"),
    ] {
        let mut all = vec!["classify", "--model", model];
        all.extend(args);
        all.push("good movie");
        let out = edgebert(&all);
        assert_eq!(out.status.code(), Some(1), "{all:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{all:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
    // A chip that does not exist: a clear error at start-up, nothing classified.
    let dir = tempfile::tempdir().unwrap();
    let chip = dir.path().join("gpiochip9");
    let out = edgebert(&[
        "classify",
        "--model",
        model,
        "--pin",
        "positive=27",
        "--gpio-chip",
        chip.to_str().unwrap(),
        "good movie",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open GPIO line 27") && err.contains("gpiochip9"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
