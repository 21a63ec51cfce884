//! The `edgebert-quantize` binary's contract that needs no model (and makes cargo build it for
//! the cross-crate tests).

use std::process::Command;

#[test]
fn usage_and_missing_checkpoint() {
    let bin = env!("CARGO_BIN_EXE_edgebert-quantize");
    let out = Command::new(bin).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = Command::new(bin)
        .args(["export", "/nonexistent", "-o", "/tmp/x.onnx"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("config.json"));
}
