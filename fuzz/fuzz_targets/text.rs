//! Fuzzes the tokenizer path: any bytes as a text (as sent, when valid UTF-8, and lossily decoded)
//! through normalisation, tokenization, truncation and the demo model, alone and in a batch. Any
//! panic is a bug; an error is a fine answer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: edgebert_runtime::contain::install_panic_hook(), |data: &[u8]| {
    let mut classifier = edgebert_fuzz::demo_classifier().lock().unwrap();
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
