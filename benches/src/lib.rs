//! criterion benchmarks for edgebert (see `benches/`). They build their own models with the test
//! fixtures; the real teacher/student comparisons join once the pipeline ships those models.
