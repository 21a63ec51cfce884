//! Tokenization alone; one inference per length; 1 thread vs 2; batch 1 vs 8 — on a tiny model
//! built here. Report ratios from one run (criterion prints them side by side).

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

criterion_group!(inference, benches);
criterion_main!(inference);
