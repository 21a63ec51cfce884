//! `serve` and `classify`'s plumbing: the JSON-lines protocol, the capped line reader, one stream
//! (stdin/stdout) and the Unix-socket server.
//!
//! The socket server (`socket`) is one event loop over every connection and one worker that owns
//! the classifier: a client that sends and does not read, stalls half-way through a line, floods
//! requests or connections only ever costs its own connection (see docs/reliability.md).

pub mod lines;
pub mod protocol;
#[cfg(all(unix, feature = "serve"))]
mod shares;
#[cfg(all(unix, feature = "serve"))]
pub mod socket;
#[cfg(feature = "serve")]
pub mod stream;

pub use lines::{classify_lines, read_line_capped, LineStatus, LinesError, MAX_REQUEST_BYTES};
pub use protocol::{answer, prediction_json, MAX_TEXTS};
#[cfg(all(unix, feature = "serve"))]
pub use shares::TOKENS_PER_TURN;
#[cfg(all(unix, feature = "serve"))]
pub use socket::{Limits, ListenError, ServeStats, Server, StopHandle};
#[cfg(feature = "serve")]
pub use stream::{exit_on_signal, serve_stream};
