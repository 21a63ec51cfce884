//! The `edgebert` binary's command-line contract that needs no model: help, version, usage errors.
//! (Being an integration test of this package, it also makes cargo build the binary that the
//! cross-crate tests in `tests/` run.)

use std::process::Command;

fn edgebert(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgebert"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_and_version_exit_zero() {
    for args in [&["--help"][..], &["--version"], &["classify", "--help"]] {
        let out = edgebert(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty());
    }
}

#[test]
fn usage_errors_exit_one() {
    // (`classify` with no text and no model is not one: it reads stdin with the built-in model.)
    for args in [
        &[][..],
        &["bogus"],
        &["classify", "--threads", "0", "x"],
        &["classify", "--top-k", "x"],
        &["serve", "--tokenizer", "t.json"],
        &["classify", "--model", "m.onnx", "x"],
    ] {
        let out = edgebert(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_missing_bundle_is_bad_input() {
    let out = edgebert(&["info", "/nonexistent/model.ebm"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: /nonexistent/model.ebm:"), "{err}");
}
