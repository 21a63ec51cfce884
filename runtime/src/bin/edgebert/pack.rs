//! `edgebert pack`: a bundle from an ONNX model, a tokenizer.json and labels.

use std::path::Path;

use edgebert_runtime::cli::{exit, ModelSource};
use edgebert_runtime::{Classifier, ClassifierOptions};

use crate::Failure;

pub(crate) fn run(
    source: ModelSource,
    task: String,
    output: &Path,
    options: ClassifierOptions,
) -> Result<u8, Failure> {
    let mut bundle = source.to_bundle()?;
    bundle.manifest.task = task;
    // Validate before writing: a bundle that cannot run is never written.
    Classifier::from_bundle(&bundle, options)?;
    bundle.write(output, &source.inputs())?;
    eprintln!(
        "wrote {} ({} bytes)",
        output.display(),
        bundle.to_bytes().len()
    );
    Ok(exit::OK)
}
