//! Tokenization alone; one inference per length; 1 thread vs all; batch 1 vs 8 — on a tiny model
//! built here; then the real models: the built-in student (int8, `models/sentiment-en.ebm`) always,
//! and, when `EDGEBERT_BENCH_DIR` names the folder `scripts/bench-compare` fills
//! (`{teacher,student}-{f32,int8}.ebm`), f32 vs int8 and teacher vs student at 16/32/64/128
//! tokens, 1 thread vs all, batch 1 vs 16. Report ratios from one run (criterion prints them side
//! by side); `cargo test --benches` runs each once as a smoke test.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use edgebert_runtime::bench::synthetic_text;
use edgebert_runtime::{Classifier, ClassifierOptions};
use edgebert_tests::{TinyModel, TinySpec};

fn model() -> TinyModel {
    let spec = TinySpec {
        hidden: 64,
        heads: 4,
        intermediate: 256,
        layers: 3,
        ..TinySpec::default()
    };
    TinyModel::with(&spec, 128)
}

fn benches(c: &mut Criterion) {
    let m = model();
    let options = |threads, batch_size| ClassifierOptions {
        threads,
        batch_size,
        ..ClassifierOptions::default()
    };
    let mut single = Classifier::open(&m.bundle, options(1, 8)).expect("tiny bundle");

    let mut g = c.benchmark_group("tokenize");
    for len in [16, 64, 128] {
        let text = synthetic_text(&single, len).expect("text");
        g.bench_with_input(BenchmarkId::from_parameter(len), &text, |b, t| {
            b.iter(|| single.encode(t))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("classify");
    for threads in [1, 2] {
        let mut classifier = Classifier::open(&m.bundle, options(threads, 8)).expect("tiny bundle");
        classifier.prepare_all().expect("plans");
        for len in [16, 32, 64, 128] {
            let text = synthetic_text(&classifier, len).expect("text");
            g.bench_with_input(
                BenchmarkId::new(format!("{threads}-thread"), len),
                &text,
                |b, t| b.iter(|| classifier.classify(t).expect("classify")),
            );
        }
    }
    g.finish();

    let mut g = c.benchmark_group("batch");
    let text = synthetic_text(&single, 32).expect("text");
    single.prepare_all().expect("plans");
    for batch in [1usize, 8] {
        let texts = vec![text.as_str(); batch];
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(BenchmarkId::new("len32", batch), &texts, |b, t| {
            b.iter(|| single.classify_batch(t).expect("classify"))
        });
    }
    g.finish();
}

/// The real models to time: the built-in one, plus the bench-compare set when present.
fn real_models() -> Vec<(String, std::path::PathBuf)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut models = vec![(
        "builtin-student-int8".to_string(),
        root.join("models/sentiment-en.ebm"),
    )];
    if let Some(dir) = std::env::var_os("EDGEBERT_BENCH_DIR") {
        for m in ["student", "teacher"] {
            for p in ["f32", "int8"] {
                let path = std::path::Path::new(&dir).join(format!("{m}-{p}.ebm"));
                if path.exists() {
                    models.push((format!("{m}-{p}"), path));
                }
            }
        }
    }
    models
}

fn real(c: &mut Criterion) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let thread_settings: Vec<usize> = if cores > 1 { vec![1, cores] } else { vec![1] };
    for (name, path) in real_models() {
        let mut g = c.benchmark_group(format!("real/{name}"));
        g.sample_size(20);
        for &threads in &thread_settings {
            let mut classifier = match Classifier::open(
                &path,
                ClassifierOptions {
                    threads,
                    batch_size: 16,
                    ..ClassifierOptions::default()
                },
            ) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("skipping {}: {e}", path.display());
                    continue;
                }
            };
            for len in [16, 32, 64, 128] {
                let Some(text) = synthetic_text(&classifier, len) else {
                    continue;
                };
                g.throughput(Throughput::Elements(1));
                g.bench_with_input(
                    BenchmarkId::new(format!("{threads}-thread/batch-1"), len),
                    &text,
                    |b, t| b.iter(|| classifier.classify(t).expect("classify")),
                );
                let texts = vec![text.as_str(); 16];
                g.throughput(Throughput::Elements(16));
                g.bench_with_input(
                    BenchmarkId::new(format!("{threads}-thread/batch-16"), len),
                    &texts,
                    |b, t| b.iter(|| classifier.classify_batch(t).expect("classify")),
                );
            }
        }
        g.finish();
    }
}

criterion_group!(inference, benches, real);
criterion_main!(inference);
