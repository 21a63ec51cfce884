//! Reading lines of text in bounded memory: `classify`'s input and `serve`'s requests.

use std::io::BufRead;

use crate::classifier::{Classifier, Prediction};

/// Longest line accepted by default (a `serve` request or a text of `classify`); longer ones are
/// answered with an error and skipped without being held in memory.
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

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
