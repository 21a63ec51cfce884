//! The `serve` protocol: JSON lines in, JSON lines out, one answer per request line.
//!
//! A request is `{"text": "...", "id": <any>, "top_k": n}` or `{"texts": [...], ...}`. An answer
//! carries the same `id` and either the prediction(s) or `"error"`; a bad request never stops the
//! server.

use std::io::{BufRead, Write};
use std::sync::Mutex;

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
    reader: &mut impl BufRead,
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
