//! Fuzzes `serve`'s request path: the capped line reader over any bytes, then every line through
//! the protocol (`serve::answer`: UTF-8, JSON, the request's shape, `texts` bounds) and the demo
//! model, as the socket server and `serve` on stdin do. Any panic is a bug.
#![no_main]

use edgebert_runtime::serve::{self, LineStatus};
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: edgebert_runtime::contain::install_panic_hook(), |data: &[u8]| {
    let mut classifier = edgebert_fuzz::demo_classifier().lock().unwrap();
    let mut reader = data;
    let mut line = Vec::new();
    // A small cap, so that the over-long path is reached too.
    while let Ok(status) = serve::read_line_capped(&mut reader, &mut line, 4096) {
        match status {
            LineStatus::Eof => break,
            LineStatus::TooLong => {}
            LineStatus::Line => {
                let answer = serve::answer(&mut classifier, &line);
                assert!(answer.get("id").is_some(), "every answer has an id: {answer}");
                let _ = serve::protocol::request_id(&line);
            }
        }
        line.clear();
    }
});
