//! `edgebert compile`: a bundle with tract's analysed graph instead of the ONNX.

use std::path::Path;

use edgebert_runtime::cli::exit;
use edgebert_runtime::{Bundle, Classifier, ClassifierOptions, Error};

use crate::Failure;

pub(crate) fn run(bundle: &Path, output: &Path, options: ClassifierOptions) -> Result<u8, Failure> {
    let raw = edgebert_runtime::fsutil::read(bundle)?;
    let original = Bundle::from_bytes(&raw).map_err(Error::from)?;
    let compiled = Classifier::compile(&original, options)?.to_bytes();
    edgebert_runtime::fsutil::write_atomic(output, &compiled, &[bundle])?;
    eprintln!(
        "wrote {} ({} bytes; the ONNX bundle: {} bytes)",
        output.display(),
        compiled.len(),
        raw.len()
    );
    Ok(exit::OK)
}
