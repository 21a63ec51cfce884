//! `edgebert serve`: JSON lines on stdin/stdout or on a Unix socket ([`edgebert_runtime::serve`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use edgebert_runtime::cli::exit;
use edgebert_runtime::serve::{self, ListenError};
use edgebert_runtime::Classifier;

use crate::Failure;

pub(crate) fn run(classifier: Classifier, socket: Option<PathBuf>) -> Result<u8, Failure> {
    let shared = Arc::new(Mutex::new(classifier));
    serve::exit_on_signal(Arc::clone(&shared), socket.clone()).map_err(Failure::io)?;
    match socket {
        None => {
            serve::serve_stream(&shared, std::io::stdin().lock(), std::io::stdout().lock())
                .map_err(Failure::io)?;
        }
        Some(path) => match serve::listen_unix(&shared, &path) {
            Ok(()) => {}
            Err(ListenError::Io(e)) => return Err(Failure::io(e)),
            Err(e) => return Err(Failure::usage(e.to_string())),
        },
    }
    Ok(exit::OK)
}
