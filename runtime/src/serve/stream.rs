//! `serve` on one stream (stdin/stdout): one client, answered in order.

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};

use super::lines::{read_line_capped, LineStatus, MAX_REQUEST_BYTES};
use super::protocol::{self, answer};
use crate::classifier::Classifier;

/// Serves one stream until EOF. Each answer is computed and written while holding the classifier,
/// so a shutdown ([`exit_on_signal`] takes the lock) never leaves half an answer. One client
/// only: the socket server ([`super::socket`]) never writes while holding the classifier.
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
            LineStatus::TooLong => protocol::too_long(MAX_REQUEST_BYTES),
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

/// On SIGTERM or SIGINT: waits for the answer in flight (it holds the classifier's lock), flushes
/// stdout and ends the process with status 0. Call it once, before [`serve_stream`].
pub fn exit_on_signal(classifier: Arc<Mutex<Classifier>>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _guard = classifier.lock().unwrap_or_else(|p| p.into_inner());
            let _ = std::io::stdout().flush();
            std::process::exit(0);
        }
    });
    Ok(())
}
