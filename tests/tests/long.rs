//! Texts longer than the model: `--long head|head+tail|chunks` read what they say, and a text in
//! chunks gets its windows' logits averaged.

use edgebert_runtime::text::{LongText, MAX_WINDOWS};
use edgebert_runtime::{Classifier, ClassifierOptions};
use edgebert_tests::{workspace_bin, TinyModel};

/// Tokens of text per input of the tiny model (maximum length 64, less `[CLS]` and `[SEP]`).
const ROOM: usize = 62;

/// `n` words of the tiny vocabulary, one token each, in an order that depends on `seed`.
fn words(n: usize, seed: usize) -> Vec<&'static str> {
    const W: [&str; 12] = [
        "the", "good", "movie", "bad", "plot", "was", "great", "not", "boring", "fun", "love",
        "awful",
    ];
    (0..n)
        .map(|i| W[(i * (seed + 1) + seed) % W.len()])
        .collect()
}

fn classifier(m: &TinyModel, long: LongText) -> Classifier {
    let options = ClassifierOptions {
        long: Some(long),
        ..ClassifierOptions::default()
    };
    Classifier::open(&m.bundle, options).unwrap()
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5)
}

#[test]
fn each_way_reads_the_part_of_a_long_text_it_says() {
    let m = TinyModel::new();
    let (a, b) = (words(ROOM, 1), words(ROOM, 2));
    let whole = format!("{} {}", a.join(" "), b.join(" "));
    let mut head = classifier(&m, LongText::Head);
    let alone = |c: &mut Classifier, w: &[&str]| {
        let p = c.classify(&w.join(" ")).unwrap();
        assert!(!p.truncated && p.windows == 1 && p.tokens == w.len() + 2);
        p.logits
    };
    let (la, lb) = (alone(&mut head, &a), alone(&mut head, &b));
    assert!(!close(&la, &lb), "the two halves must be told apart");

    let p = head.classify(&whole).unwrap();
    assert_eq!((p.windows, p.tokens, p.truncated), (1, 64, true));
    assert_eq!(p.logits, la, "head: the first {ROOM} tokens");

    let mut head_tail = classifier(&m, LongText::HeadTail);
    let p = head_tail.classify(&whole).unwrap();
    assert_eq!((p.windows, p.tokens, p.truncated), (1, 64, true));
    let ends: Vec<&str> = a[..ROOM / 4]
        .iter()
        .chain(&b[ROOM / 4..])
        .copied()
        .collect();
    assert_eq!(
        p.logits,
        alone(&mut head, &ends),
        "head+tail: a quarter, then the end"
    );

    let mut chunks = classifier(&m, LongText::Chunks);
    let p = chunks.classify(&whole).unwrap();
    assert_eq!((p.windows, p.tokens, p.truncated), (2, 128, false));
    let mean: Vec<f32> = la.iter().zip(&lb).map(|(x, y)| (x + y) / 2.0).collect();
    assert!(close(&p.logits, &mean), "{:?} vs {mean:?}", p.logits);
    let probability: f32 = edgebert_runtime::classifier::softmax(&p.logits)
        .into_iter()
        .fold(0.0, f32::max);
    assert_eq!(p.probability, probability);
}

#[test]
fn chunks_are_of_equal_size_and_a_text_of_one_window_is_read_as_before() {
    let m = TinyModel::new();
    let mut head = classifier(&m, LongText::Head);
    let mut chunks = classifier(&m, LongText::Chunks);
    // 63 tokens: two windows of 31 and 32 (with the special tokens: 33 and 34), not 62 and 1.
    let text = words(ROOM + 1, 3).join(" ");
    let p = chunks.classify(&text).unwrap();
    assert_eq!((p.windows, p.tokens, p.truncated), (2, 67, false));
    let w = words(ROOM + 1, 3);
    let first = head.classify(&w[..31].join(" ")).unwrap().logits;
    let second = head.classify(&w[31..].join(" ")).unwrap().logits;
    let mean: Vec<f32> = first
        .iter()
        .zip(&second)
        .map(|(x, y)| (x * 33.0 + y * 34.0) / 67.0)
        .collect();
    assert!(close(&p.logits, &mean), "{:?} vs {mean:?}", p.logits);
    // Exactly one input's worth: every way reads it whole, with the same logits.
    let text = words(ROOM, 4).join(" ");
    let want = head.classify(&text).unwrap();
    assert!(!want.truncated);
    for long in LongText::ALL {
        assert_eq!(
            classifier(&m, long).classify(&text).unwrap(),
            want,
            "{long}"
        );
    }
}

#[test]
fn a_huge_text_in_chunks_is_read_in_at_most_max_windows() {
    let m = TinyModel::new();
    let mut chunks = classifier(&m, LongText::Chunks);
    let p = chunks.classify(&"boring fun ".repeat(50_000)).unwrap();
    assert_eq!(
        (p.windows, p.tokens, p.truncated),
        (MAX_WINDOWS, MAX_WINDOWS * 64, true)
    );
    assert!(p.logits.iter().all(|x| x.is_finite()));
}

#[test]
fn a_batch_of_short_and_long_texts_answers_as_one_text_at_a_time() {
    let m = TinyModel::new();
    let texts: Vec<String> = (0..11)
        .map(|i| words([5, 70, 200, 40, 130][i % 5] + i, i).join(" "))
        .chain(["".to_string()])
        .collect();
    for long in LongText::ALL {
        let mut c = classifier(&m, long);
        let batch = c.classify_batch(&texts).unwrap();
        assert_eq!(batch.len(), texts.len());
        for (text, got) in texts.iter().zip(batch) {
            match (c.classify(text), got) {
                (Ok(one), Ok(got)) => {
                    assert_eq!((one.windows, one.tokens), (got.windows, got.tokens));
                    assert!(close(&one.logits, &got.logits), "{long}: {text}");
                }
                (Err(_), Err(e)) => assert_eq!(e.to_string(), "empty text"),
                (one, got) => panic!("{long}: {one:?} vs {got:?}"),
            }
        }
    }
}

#[test]
fn the_binary_takes_long_and_refuses_an_unknown_way() {
    let m = TinyModel::new();
    let text = words(3 * ROOM, 5).join(" ");
    let windows = |long: &str| {
        let out = std::process::Command::new(workspace_bin("edgebert"))
            .args(["classify", "--json", "--model"])
            .arg(&m.bundle)
            .args(["--long", long, &text])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["windows"].as_u64().unwrap()
    };
    assert_eq!(windows("head"), 1);
    assert_eq!(windows("head+tail"), 1);
    assert_eq!(windows("chunks"), 3);
    let out = std::process::Command::new(workspace_bin("edgebert"))
        .args(["classify", "--long", "tail", "good"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("head, head+tail, chunks"));
}
