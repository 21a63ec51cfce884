//! Fuzzes the tokenizer path: any bytes as a text (as sent, when valid UTF-8, and lossily decoded)
//! through normalisation, tokenization, truncation and the demo model, alone and in a batch. Any
//! panic is a bug; an error is a fine answer.
#![no_main]

use std::sync::{Mutex, OnceLock};

use edgebert_runtime::{Classifier, ClassifierOptions};
use libfuzzer_sys::fuzz_target;

/// The demo bundle (a seed of the `bundle` target: one mode byte, then the bundle).
static DEMO: &[u8] = include_bytes!("../seeds/demo-raw");

fn classifier() -> &'static Mutex<Classifier> {
    static C: OnceLock<Mutex<Classifier>> = OnceLock::new();
    C.get_or_init(|| {
        let c = Classifier::from_bundle_bytes(&DEMO[1..], ClassifierOptions::default());
        Mutex::new(c.expect("the demo bundle loads"))
    })
}

fuzz_target!(init: edgebert_runtime::contain::install_panic_hook(), |data: &[u8]| {
    let mut classifier = classifier().lock().unwrap();
    let lossy = String::from_utf8_lossy(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = classifier.classify(text);
    }
    let _ = classifier.encode(&lossy);
    let parts: Vec<&str> = lossy.split('\n').collect();
    if let Ok(results) = classifier.classify_batch(&parts) {
        assert_eq!(results.len(), parts.len(), "one result per text");
    }
});
