//! `edgebert serve`: JSON lines on stdin/stdout or on a Unix socket ([`edgebert_runtime::serve`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use edgebert_runtime::cli::exit;
use edgebert_runtime::serve::{self, Limits, ListenError, Server};
use edgebert_runtime::Classifier;

use crate::Failure;

pub(crate) fn run(
    classifier: Classifier,
    socket: Option<PathBuf>,
    limits: Limits,
) -> Result<u8, Failure> {
    let Some(path) = socket else {
        let shared = Arc::new(Mutex::new(classifier));
        serve::exit_on_signal(Arc::clone(&shared)).map_err(Failure::io)?;
        serve::serve_stream(&shared, std::io::stdin().lock(), std::io::stdout().lock())
            .map_err(Failure::io)?;
        return Ok(exit::OK);
    };
    let listen_failure = |e: ListenError| match e {
        ListenError::Io(e) => Failure::io(e),
        e => Failure::usage(e.to_string()),
    };
    let server = Server::bind(&path, limits).map_err(listen_failure)?;
    server
        .stop_handle()
        .stop_on_signals()
        .map_err(Failure::io)?;
    eprintln!("listening on {}", path.display());
    let stats = server.run(classifier).map_err(listen_failure)?;
    eprintln!("serve: stopped: {stats}");
    Ok(exit::OK)
}
