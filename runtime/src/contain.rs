//! Containing panics inside dependencies that parse untrusted input.
//!
//! A bundle's tokenizer.json and ONNX graph pass the checksum when they were written that way, so
//! they are untrusted input. Fuzzing found panics inside both parsers we use: tokenizers 0.22.2
//! unwraps an error while deserialising a malformed decoder (`decoders/mod.rs:90`), and tract-hir
//! 0.23.9 indexes a `Transpose` `perm` beyond the rank (`ops/array/permute_axes.rs:21`). Each call
//! into them on such input goes through [`caught`], so a bad file is an error, never a crash.

use std::fmt::Display;

/// Runs `f`, turning an error or a panic into a message.
pub(crate) fn caught<T, E: Display>(f: impl FnOnce() -> Result<T, E>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(format!("rejected by the parser: {msg}"))
        }
    }
}
