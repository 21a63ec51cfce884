//! `edgebert info`: a bundle's manifest, format and sizes.

use std::borrow::Cow;
use std::path::PathBuf;

use edgebert_runtime::cli::{exit, BundleSummary};

use crate::Failure;

pub(crate) fn run(bundle: Option<PathBuf>, json: bool) -> Result<u8, Failure> {
    let raw = match &bundle {
        Some(path) => Cow::Owned(edgebert_runtime::fsutil::read(path)?),
        None => Cow::Borrowed(crate::built_in()?),
    };
    let summary = BundleSummary::of(&raw)?;
    if json {
        println!("{}", summary.json());
    } else {
        print!("{}", summary.text());
    }
    Ok(exit::OK)
}
