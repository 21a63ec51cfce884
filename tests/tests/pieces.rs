//! Plans optimised in pieces (`Engine::load_in_pieces`): the graph cut into consecutive pieces,
//! each optimised on its own thread and run one after the other, answers exactly as the plan of
//! the whole graph, for every form of graph we ship (ONNX and compiled, f32 and int8) and the
//! built-in model; and so does a plan run on several threads.

use edgebert_runtime::engine::Engine;
use edgebert_runtime::text::TextEncoder;
use edgebert_runtime::{embedded_model, Bundle, Classifier, ClassifierOptions};
use edgebert_tests::REVIEW_TEXTS as TEXTS;
use edgebert_tests::{int8_bundle, TinyModel};

/// The tests of this file one at a time: each optimises plans on every core, and the threaded one
/// keeps up to four workers spinning through its runs (`pool::run_hot`); side by side on CI's two
/// cores they only take turns at the cores, and spinning workers make the turns slow.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// Logits of the first text at length 16 and of all texts at each length (≥ 32), from an engine
/// cut in `pieces` that runs on `threads`.
fn logits(
    graph: &[u8],
    enc: &TextEncoder,
    threads: usize,
    pieces: usize,
    lens: &[usize],
) -> Vec<Vec<f32>> {
    let mut engine = Engine::load_in_pieces(graph, threads, pieces).unwrap();
    assert_eq!(engine.pieces(), pieces, "the graph was cut in fewer pieces");
    let mut out = Vec::new();
    // One short text alone (batch 1, the smallest bucket), then all texts at each length.
    out.push(engine.run(&enc.batch(&TEXTS[..1], 16).unwrap()).unwrap());
    for &len in lens {
        out.push(engine.run(&enc.batch(TEXTS, len).unwrap()).unwrap());
    }
    out
}

fn same_answers_in_pieces(name: &str, bundle: &Bundle, lens: &[usize]) {
    let enc = TextEncoder::from_json(&bundle.tokenizer_json, bundle.manifest.max_seq_len as usize)
        .unwrap();
    let whole = logits(&bundle.graph, &enc, 1, 1, lens);
    assert!(whole.iter().flatten().all(|x| x.is_finite()));
    for pieces in 2..=4 {
        let cut = logits(&bundle.graph, &enc, 1, pieces, lens);
        assert_eq!(cut, whole, "{name}: {pieces} pieces answer differently");
    }
}

#[test]
fn tiny_models_answer_the_same_in_pieces() {
    let _serial = one_at_a_time();
    let m = TinyModel::new();
    let f32_bundle = Bundle::read(&m.bundle).unwrap();
    let opts = ClassifierOptions::default();
    let int8 = int8_bundle(&m, TEXTS);
    for (name, bundle) in [("f32", f32_bundle), ("int8", int8)] {
        same_answers_in_pieces(name, &bundle, &[32, 64]);
        let compiled = Classifier::compile(&bundle, opts.clone()).unwrap();
        same_answers_in_pieces(&format!("{name} compiled"), &compiled, &[32, 64]);
    }
}

#[test]
fn the_built_in_model_answers_the_same_in_pieces() {
    let _serial = one_at_a_time();
    let bytes = embedded_model().expect("built with the default model");
    let bundle = Bundle::from_bytes(bytes).unwrap();
    same_answers_in_pieces("built-in", &bundle, &[32, 128]);
}

#[test]
fn the_built_in_model_answers_the_same_on_several_threads() {
    let _serial = one_at_a_time();
    // On several threads the plan runs on a worker of the engine's pool with the others kept
    // awake (runtime/src/engine/pool.rs) and tract splits products, chains and softmax between them by
    // rows and tiles, never inside a sum: the answers are the single thread's to the bit. Many
    // runs back to back, because a pool that could deadlock would do it between two of them.
    let bytes = embedded_model().expect("built with the default model");
    let bundle = Bundle::from_bytes(bytes).unwrap();
    let enc = TextEncoder::from_json(&bundle.tokenizer_json, 128).unwrap();
    let lens = [32, 128];
    let one = logits(&bundle.graph, &enc, 1, 1, &lens);
    for threads in [2, 4] {
        for pieces in [1, 2] {
            let mut engine = Engine::load_in_pieces(&bundle.graph, threads, pieces).unwrap();
            for round in 0..20 {
                let got = [16, 32, 128].map(|len| {
                    let texts = if len == 16 { &TEXTS[..1] } else { TEXTS };
                    engine.run(&enc.batch(texts, len).unwrap()).unwrap()
                });
                assert_eq!(
                    got.as_slice(),
                    one.as_slice(),
                    "{threads} threads, {pieces} pieces, round {round}"
                );
            }
        }
    }
}

#[test]
fn more_pieces_than_operators_still_answer() {
    let _serial = one_at_a_time();
    // Asking for more pieces than the graph has operators cuts it at most between every two;
    // the engine reports how many pieces it made, and they answer as the whole.
    let m = TinyModel::new();
    let bundle = Bundle::read(&m.bundle).unwrap();
    let enc = TextEncoder::from_json(&bundle.tokenizer_json, 64).unwrap();
    let mut many = Engine::load_in_pieces(&bundle.graph, 1, 10_000).unwrap();
    assert!(
        many.pieces() >= 2 && many.pieces() < 10_000,
        "{}",
        many.pieces()
    );
    let mut one = Engine::load_in_pieces(&bundle.graph, 1, 1).unwrap();
    let batch = enc.batch(TEXTS, 32).unwrap();
    assert_eq!(many.run(&batch).unwrap(), one.run(&batch).unwrap());
}
