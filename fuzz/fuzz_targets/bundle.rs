//! Fuzzes the bundle loader: container checks, manifest, tokenizer and ONNX model validation.
//!
//! The first byte picks the mode. Odd: the rest gets a valid CRC-32 appended, so the fuzzer
//! reaches everything behind the checksum (manifest, tokenizer.json, ONNX, tract). Even: the
//! bytes go in as they are (container checks). Any panic that reaches the target is a bug.
//!
//! libfuzzer-sys's panic hook aborts on every panic, even one caught inside: the runtime contains
//! panics inside tract and tokenizers on purpose (`contain`), so the hook is replaced by the
//! runtime's, silent for those. A panic that escapes the runtime is printed and unwinds into
//! libfuzzer-sys, which aborts and reports it.
#![no_main]

use edgebert_runtime::{Bundle, Classifier, ClassifierOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: edgebert_runtime::contain::install_panic_hook(), |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
    }
    if let Ok(bundle) = Bundle::from_bytes(&bytes) {
        let _ = Classifier::from_bundle(&bundle, ClassifierOptions::default());
    }
});
