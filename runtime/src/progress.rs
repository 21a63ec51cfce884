//! The progress bars of every long job (quantization, distillation, `classify --file`): one style,
//! on stderr, hidden by indicatif when stderr is not a terminal.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps named `label`; `set_message` adds a running figure (a loss, say).
pub fn bar(len: u64, label: &str) -> ProgressBar {
    styled(
        ProgressBar::new(len).with_prefix(label.to_string()),
        "{prefix} [{bar:30}] {pos}/{len} {msg} {per_sec} · {elapsed_precise} (ETA {eta})",
    )
}

/// A bar over `total` bytes of input (a file being read).
pub fn bytes_bar(total: u64) -> ProgressBar {
    styled(
        ProgressBar::new(total),
        "[{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} (ETA {eta})",
    )
}

fn styled(bar: ProgressBar, template: &str) -> ProgressBar {
    bar.with_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    )
}
