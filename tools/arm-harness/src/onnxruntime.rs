//! onnxruntime on one ONNX file: batch 1, one thread, its default (full) graph optimisation.

use std::borrow::Cow;
use std::time::Instant;

use edgebert_boards::marker;
use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;

use crate::option;

pub fn run(args: &[String]) -> Result<(), String> {
    let [lib, model, ..] = args else {
        return Err("ort needs LIB and MODEL".into());
    };
    let lengths: String = option(args, "--lengths", "16".to_string())?;
    let iterations: usize = option(args, "--iterations", 2)?;
    let lengths: Vec<usize> = lengths
        .split(',')
        .map(|l| l.parse().map_err(|_| format!("bad length {l}")))
        .collect::<Result<_, _>>()?;
    let e = |e: ort::Error| e.to_string();
    ort::init_from(lib)
        .map_err(|e| format!("cannot load {lib}: {e}"))?
        .commit();
    let start = Instant::now();
    let mut session = Session::builder()
        .map_err(e)?
        .with_intra_threads(1)
        .map_err(|e| e.to_string())?
        .with_inter_threads(1)
        .map_err(|e| e.to_string())?
        .commit_from_file(model)
        .map_err(e)?;
    let names: Vec<String> = session
        .inputs()
        .iter()
        .map(|i| i.name().to_string())
        .collect();
    println!("onnxruntime: {model} loaded in {:.1} ms", ms(start));
    for &n in &lengths {
        run_once(&mut session, &names, n)?;
        let mark = marker::length_mark(n);
        let start = Instant::now();
        for _ in 0..iterations.max(1) {
            marker::mark(mark);
            run_once(&mut session, &names, n)?;
            marker::mark(0);
        }
        println!(
            "{n} tokens: {:.3} ms per pass ({} passes)",
            ms(start) / iterations.max(1) as f64,
            iterations.max(1)
        );
    }
    Ok(())
}

/// One pass on `n` tokens: `[CLS] the … [SEP]`, attention everywhere, segment 0.
fn run_once(session: &mut Session, names: &[String], n: usize) -> Result<(), String> {
    let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
    for name in names {
        let values: Vec<i64> = if name.contains("mask") {
            vec![1; n]
        } else if name.contains("type") {
            vec![0; n]
        } else {
            (0..n)
                .map(|i| match i {
                    0 => 101,
                    i if i + 1 == n => 102,
                    _ => 1996,
                })
                .collect()
        };
        let tensor =
            Tensor::from_array((vec![1i64, n as i64], values)).map_err(|e| e.to_string())?;
        inputs.push((Cow::Owned(name.clone()), tensor.into()));
    }
    let outputs = session.run(inputs).map_err(|e| e.to_string())?;
    let (_, logits) = outputs[0]
        .try_extract_tensor::<f32>()
        .map_err(|e| e.to_string())?;
    if logits.iter().any(|v| !v.is_finite()) {
        return Err("onnxruntime gave a non-finite logit".into());
    }
    Ok(())
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}
