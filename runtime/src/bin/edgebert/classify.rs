//! `edgebert classify`: texts from the arguments, a file or stdin; one answer line each.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::PathBuf;

use edgebert_runtime::cli::exit;
use edgebert_runtime::serve::{self, LinesError};
use edgebert_runtime::{Classifier, Error, Prediction};
use serde_json::json;

use crate::Failure;

/// Texts read per batch from a file or stdin.
const CHUNK_LINES: usize = 256;

/// Where an answer's text came from.
#[derive(Clone, Copy)]
enum Source<'a> {
    Argument,
    Line(usize),
    File(&'a str),
}

pub(crate) fn run(
    classifier: &mut Classifier,
    texts: Vec<String>,
    file: Option<PathBuf>,
    email: bool,
    json: bool,
    top_k: usize,
) -> Result<u8, Failure> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = 0usize;
    let mut emit = |out: &mut dyn Write, at: Source, result: Result<Prediction, String>| {
        if result.is_err() {
            failed += 1;
        }
        write_answer(out, at, result, json, top_k)
    };

    if email {
        // Each argument a raw e-mail file (`-` or none: one on stdin).
        let paths = if texts.is_empty() {
            vec!["-".to_string()]
        } else {
            texts
        };
        let read: Vec<Result<String, String>> = paths.iter().map(|p| email_text(p)).collect();
        let ok: Vec<&str> = read.iter().filter_map(|r| r.as_deref().ok()).collect();
        let mut answers = classifier.classify_batch(&ok)?.into_iter();
        for (path, r) in paths.iter().zip(read) {
            let result = match r {
                Ok(_) => answers
                    .next()
                    .map_or(Err("not classified".to_string()), |a| {
                        a.map_err(|e| e.to_string())
                    }),
                Err(e) => Err(e),
            };
            emit(&mut out, Source::File(path), result).map_err(Failure::io)?;
        }
    } else if !texts.is_empty() {
        for r in classifier.classify_batch(&texts)? {
            emit(&mut out, Source::Argument, r.map_err(|e| e.to_string())).map_err(Failure::io)?;
        }
    } else {
        let (mut reader, size): (Box<dyn BufRead>, Option<u64>) = match file.as_deref() {
            None => (Box::new(std::io::stdin().lock()), None),
            Some(p) if p.as_os_str() == "-" => (Box::new(std::io::stdin().lock()), None),
            Some(p) => {
                let f = std::fs::File::open(p).map_err(|e| {
                    Failure::from(Error::Io {
                        path: p.into(),
                        source: e,
                    })
                })?;
                let size = f.metadata().ok().map(|m| m.len());
                (Box::new(BufReader::new(f)), size)
            }
        };
        // A bar only for a file, when a person watches the terminal (not when output is piped).
        let watched = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        let bar = match size {
            Some(n) if watched => edgebert_runtime::progress::bytes_bar(n),
            _ => indicatif::ProgressBar::hidden(),
        };
        let lines = serve::classify_lines(
            classifier,
            &mut reader,
            CHUNK_LINES,
            |bytes| bar.inc(bytes),
            |n, r| emit(&mut out, Source::Line(n), r),
        );
        match lines {
            Ok(()) => {}
            Err(LinesError::Io(e)) => return Err(Failure::io(e)),
            Err(LinesError::Classify(e)) => return Err(e.into()),
            Err(e) => return Err(Failure::io(std::io::Error::other(e.to_string()))),
        }
        bar.finish_and_clear();
    }
    out.flush().map_err(Failure::io)?;
    Ok(if failed > 0 {
        exit::BAD_INPUT
    } else {
        exit::OK
    })
}

/// A raw e-mail file (`-`: stdin) as the text the model reads.
fn email_text(path: &str) -> Result<String, String> {
    let raw = if path == "-" {
        let mut raw = Vec::new();
        std::io::stdin()
            .read_to_end(&mut raw)
            .map(|_| raw)
            .map_err(|e| format!("stdin: {e}"))?
    } else {
        std::fs::read(path).map_err(|e| format!("{path}: {e}"))?
    };
    edgebert_runtime::email::email_text(&raw)
        .map(|e| e.text)
        .map_err(|e| format!("{path}: {e}"))
}

/// One answer: JSON, or the labels and probabilities tab-separated; an error also on stderr.
fn write_answer(
    out: &mut dyn Write,
    at: Source,
    result: Result<Prediction, String>,
    json: bool,
    top_k: usize,
) -> std::io::Result<()> {
    match result {
        Ok(p) if json => {
            let mut v = serve::prediction_json(&p, Some(top_k));
            match at {
                Source::Argument => {}
                Source::Line(n) => v["line"] = json!(n),
                Source::File(f) => v["file"] = json!(f),
            }
            writeln!(out, "{v}")
        }
        Ok(p) => {
            let labels: Vec<String> = p
                .scores
                .iter()
                .take(top_k)
                .map(|s| format!("{}\t{:.4}", s.label, s.probability))
                .collect();
            let note = match (p.truncated, p.windows) {
                (true, 1) => format!("\t(truncated to {} tokens)", p.tokens),
                (true, w) => format!("\t(truncated to {w} windows, {} tokens)", p.tokens),
                (false, 1) => String::new(),
                (false, w) => format!("\t({w} windows)"),
            };
            let file = match at {
                Source::File(f) => format!("{f}\t"),
                _ => String::new(),
            };
            writeln!(out, "{file}{}{note}", labels.join("\t"))
        }
        Err(msg) => {
            let (prefix, key) = match at {
                Source::Line(n) => (format!("line {n}: "), json!({ "line": n })),
                Source::File(_) => (String::new(), json!({})),
                Source::Argument => (String::new(), json!({ "line": null })),
            };
            eprintln!("error: {prefix}{msg}");
            if json {
                let mut v = key;
                v["error"] = json!(msg);
                if let Source::File(f) = at {
                    v["file"] = json!(f);
                }
                writeln!(out, "{v}")
            } else {
                Ok(())
            }
        }
    }
}
