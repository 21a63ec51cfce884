//! Writes a tiny random-weight BERT checkpoint and its ONNX export and bundle into a directory:
//! the same fixture the tests use, for trying the tools by hand and for the demo bundle.
//!
//! Usage: tiny-model DIR [MAX_LEN]

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(
        args.next()
            .ok_or_else(|| anyhow::anyhow!("usage: tiny-model DIR [MAX_LEN]"))?,
    );
    let max_len = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let (onnx, ebm) =
        edgebert_tests::build_model(&dir, &edgebert_tests::TinySpec::default(), max_len)?;
    println!(
        "{}\n{}\n{}",
        dir.join("checkpoint").display(),
        onnx.display(),
        ebm.display()
    );
    Ok(())
}
