//! Containing panics inside dependencies that parse untrusted input.
//!
//! A bundle's tokenizer.json and ONNX graph pass the checksum when they were written that way, so
//! they are untrusted input. Fuzzing found panics inside both parsers we use: tokenizers 0.22.2
//! unwraps an error while deserialising a malformed decoder (`decoders/mod.rs:90`), and tract-hir
//! 0.23.9 indexes a `Transpose` `perm` beyond the rank (`ops/array/permute_axes.rs:21`). Each call
//! into them on such input goes through [`caught`], so a bad file is an error, never a crash.

use std::cell::Cell;
use std::fmt::Display;

thread_local! {
    static CONTAINING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning an error or a panic into a message.
pub(crate) fn caught<T, E: Display>(f: impl FnOnce() -> Result<T, E>) -> Result<T, String> {
    let outer = CONTAINING.with(|c| c.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINING.with(|c| c.set(outer));
    match result {
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

/// Installs a panic hook that stays silent for panics [`caught`] contains (they become errors
/// that the caller reports) and defers to the previous hook for every other panic. For binaries.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !CONTAINING.with(|c| c.get()) {
            previous(info);
        }
    }));
}
