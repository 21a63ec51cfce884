//! The `serve` protocol: JSON lines in, JSON lines out, one answer per request line.
//!
//! A request is `{"text": "...", "id": <any>, "top_k": n}` or `{"texts": [...], ...}`. An answer
//! carries the same `id` and either the prediction(s) or `"error"`; a bad request never stops the
//! server.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::classifier::{Classifier, Prediction};

/// Longest request line accepted; longer ones are answered with an error and skipped.
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(default)]
    id: Value,
    text: Option<String>,
    texts: Option<Vec<String>>,
    top_k: Option<usize>,
}

/// A prediction as JSON, keeping the `top_k` most probable labels (all when `None`).
pub fn prediction_json(p: &Prediction, top_k: Option<usize>) -> Value {
    let k = top_k.unwrap_or(p.scores.len()).max(1);
    json!({
        "label": p.label,
        "probability": p.probability,
        "scores": p.scores.iter().take(k).collect::<Vec<_>>(),
        "tokens": p.tokens,
        "truncated": p.truncated,
    })
}

/// Answers one request line.
pub fn answer(classifier: &mut Classifier, line: &[u8]) -> Value {
    let text = match std::str::from_utf8(line) {
        Ok(t) => t,
        Err(e) => {
            return json!({"id": null, "error": format!("invalid UTF-8 at byte {}", e.valid_up_to())})
        }
    };
    let request: Request = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(e) => return json!({"id": null, "error": format!("bad request: {e}")}),
    };
    let id = request.id;
    let error = |msg: String| json!({"id": id.clone(), "error": msg});
    match (request.text, request.texts) {
        (Some(text), None) => match classifier.classify(&text) {
            Ok(p) => {
                let mut v = prediction_json(&p, request.top_k);
                v["id"] = id;
                v
            }
            Err(e) => error(e.to_string()),
        },
        (None, Some(texts)) => match classifier.classify_batch(&texts) {
            Ok(results) => {
                let results: Vec<Value> = results
                    .iter()
                    .map(|r| match r {
                        Ok(p) => prediction_json(p, request.top_k),
                        Err(e) => json!({"error": e.to_string()}),
                    })
                    .collect();
                json!({"id": id, "results": results})
            }
            Err(e) => error(e.to_string()),
        },
        _ => error("bad request: give exactly one of `text` or `texts`".into()),
    }
}

/// Serves one stream until EOF. Each answer is computed and written while holding the classifier,
/// so whoever takes the lock next (another connection, or a shutdown) never sees half an answer.
pub fn serve_stream(
    classifier: &Mutex<Classifier>,
    mut reader: impl BufRead,
    mut writer: impl Write,
) -> std::io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        let status = read_line_capped(&mut reader, &mut line, MAX_REQUEST_BYTES)?;
        let answer = match status {
            LineStatus::Eof => return Ok(()),
            LineStatus::TooLong => {
                json!({"id": null, "error": format!("request longer than {MAX_REQUEST_BYTES} bytes")})
            }
            LineStatus::Line if line.iter().all(u8::is_ascii_whitespace) => continue,
            LineStatus::Line => {
                let mut guard = classifier.lock().unwrap_or_else(|p| p.into_inner());
                let answer = answer(&mut guard, &line);
                writeln!(writer, "{answer}")?;
                writer.flush()?;
                continue;
            }
        };
        let _guard = classifier.lock().unwrap_or_else(|p| p.into_inner());
        writeln!(writer, "{answer}")?;
        writer.flush()?;
    }
}

/// Why [`listen_unix`] could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    #[error("{0} is in use by another server")]
    InUse(PathBuf),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Serves [`serve_stream`] on a Unix socket at `path`, one thread per connection, until the
/// process ends. A stale socket file left at `path` is replaced; a live server's socket, or a
/// file that is not a socket, is an error.
pub fn listen_unix(classifier: &Arc<Mutex<Classifier>>, path: &Path) -> Result<(), ListenError> {
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::net::{UnixListener, UnixStream};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ListenError::NotASocket(path.into()));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(ListenError::InUse(path.into()));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    eprintln!("listening on {}", path.display());
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: accept: {e}");
                continue;
            }
        };
        let classifier = Arc::clone(classifier);
        std::thread::spawn(move || {
            let reader = match stream.try_clone() {
                Ok(r) => BufReader::new(r),
                Err(e) => return eprintln!("error: connection: {e}"),
            };
            if let Err(e) = serve_stream(&classifier, reader, &stream) {
                eprintln!("error: connection: {e}");
            }
        });
    }
    Ok(())
}

/// On SIGTERM or SIGINT: waits for the answer in flight (it holds the classifier's lock), flushes
/// stdout, removes the socket file if there is one, and ends the process with status 0. Call it
/// once, before serving.
pub fn exit_on_signal(
    classifier: Arc<Mutex<Classifier>>,
    socket: Option<PathBuf>,
) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _guard = classifier.lock().unwrap_or_else(|p| p.into_inner());
            let _ = std::io::stdout().flush();
            if let Some(path) = &socket {
                let _ = std::fs::remove_file(path);
            }
            std::process::exit(0);
        }
    });
    Ok(())
}

/// Why [`classify_lines`] stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinesError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Classify(#[from] crate::Error),
}

/// Classifies every line of `reader` (each line its own text, numbered from 1), `chunk` lines at
/// a time through [`Classifier::classify_batch`], in order: `emit(line, answer)` for each, with
/// the line's own error (too long, invalid UTF-8, empty…) as its answer; `read(bytes)` after each
/// line read, for a progress bar. Memory stays bounded by the chunk, whatever the input's size.
pub fn classify_lines(
    classifier: &mut Classifier,
    reader: &mut dyn BufRead,
    chunk: usize,
    mut read: impl FnMut(u64),
    mut emit: impl FnMut(usize, Result<Prediction, String>) -> std::io::Result<()>,
) -> Result<(), LinesError> {
    let mut line_no = 0usize;
    let mut buf = Vec::new();
    loop {
        let mut lines: Vec<(usize, Result<String, String>)> = Vec::new();
        let mut eof = false;
        while lines.len() < chunk.max(1) {
            buf.clear();
            match read_line_capped(reader, &mut buf, MAX_REQUEST_BYTES)? {
                LineStatus::Eof => {
                    eof = true;
                    break;
                }
                LineStatus::TooLong => {
                    line_no += 1;
                    let e = format!("line longer than {MAX_REQUEST_BYTES} bytes");
                    lines.push((line_no, Err(e)));
                }
                LineStatus::Line => {
                    line_no += 1;
                    read(buf.len() as u64 + 1);
                    let text = String::from_utf8(std::mem::take(&mut buf)).map_err(|e| {
                        format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to())
                    });
                    lines.push((line_no, text));
                }
            }
        }
        let texts: Vec<&str> = lines
            .iter()
            .filter_map(|(_, t)| t.as_deref().ok())
            .collect();
        let mut results = classifier.classify_batch(&texts)?.into_iter();
        for (n, text) in &lines {
            let r = match text {
                Ok(_) => results
                    .next()
                    .unwrap_or(Err(crate::InputError::Empty))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.clone()),
            };
            emit(*n, r)?;
        }
        if eof {
            return Ok(());
        }
    }
}

/// What [`read_line_capped`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum LineStatus {
    Line,
    TooLong,
    Eof,
}

/// Reads one `\n`-terminated line (without the `\n`) of at most `cap` bytes; a longer line is
/// consumed and reported as `TooLong` without being held in memory.
pub fn read_line_capped(
    reader: &mut (impl BufRead + ?Sized),
    line: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<LineStatus> {
    let mut too_long = false;
    let mut read_any = false;
    loop {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(match (read_any, too_long) {
                (false, _) => LineStatus::Eof,
                (true, true) => LineStatus::TooLong,
                (true, false) => LineStatus::Line,
            });
        }
        read_any = true;
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > cap {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let consumed = done.unwrap_or(buf.len());
        reader.consume(consumed);
        if done.is_some() {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(if too_long {
                LineStatus::TooLong
            } else {
                LineStatus::Line
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_capped_without_losing_the_next_one() {
        let mut input = &b"short\r\nthis line is too long\nnext"[..];
        let mut line = Vec::new();
        assert_eq!(
            read_line_capped(&mut input, &mut line, 10).unwrap(),
            LineStatus::Line
        );
        assert_eq!(line, b"short");
        line.clear();
        assert_eq!(
            read_line_capped(&mut input, &mut line, 10).unwrap(),
            LineStatus::TooLong
        );
        line.clear();
        assert_eq!(
            read_line_capped(&mut input, &mut line, 10).unwrap(),
            LineStatus::Line
        );
        assert_eq!(line, b"next");
        line.clear();
        assert_eq!(
            read_line_capped(&mut input, &mut line, 10).unwrap(),
            LineStatus::Eof
        );
    }
}
