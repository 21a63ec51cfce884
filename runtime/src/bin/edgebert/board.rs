//! `edgebert board`: the detected board, threads, CPU features and whether the model fits.

use edgebert_runtime::cli::{exit, BoardReport};
use edgebert_runtime::{bench, Classifier};

use crate::Failure;

pub(crate) fn run(
    mut classifier: Classifier,
    detection: &edgebert_boards::Detection,
    threads: usize,
    json: bool,
) -> Result<u8, Failure> {
    // The memory figure that matters is a real answer at the longest length.
    let longest = classifier.buckets().last().copied().unwrap_or(16);
    if let Some(text) = bench::synthetic_text(&classifier, longest) {
        classifier.classify(&text)?;
    }
    let report = BoardReport::new(detection, threads, bench::peak_rss_kib());
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(exit::OK)
}
