//! Linux GPIO through the character device (`/dev/gpiochipN`) and `linux-embedded-hal`'s
//! [`CdevPin`] (cargo feature `gpio`). Opening is where the errors a user can fix show up (no
//! chip, a pin in use, no permission), so each one names the chip and line.

use std::path::{Path, PathBuf};

use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
pub use linux_embedded_hal::CdevPin;

/// The chip the Raspberry Pi's 40-pin header is on: `gpiochip0` on every board here (on a Pi 5
/// with kernel ≥ 6.6.45 it is `gpiochip0` again; older Pi 5 kernels named it `gpiochip4`).
pub const DEFAULT_CHIP: &str = "/dev/gpiochip0";

/// A pin that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open GPIO line {line} of {} for `{purpose}`: {message}", chip.display())]
pub struct OpenError {
    pub chip: PathBuf,
    pub line: u32,
    pub purpose: String,
    pub message: String,
}

/// Requests `line` of `chip` as an output, driven low, labelled `edgebert` (as `gpioinfo` shows).
pub fn open_output(chip: &Path, line: u32, purpose: &str) -> Result<CdevPin, OpenError> {
    let fail = |e: &dyn std::fmt::Display| OpenError {
        chip: chip.to_owned(),
        line,
        purpose: purpose.to_owned(),
        message: e.to_string(),
    };
    let mut c = Chip::new(chip).map_err(|e| fail(&e))?;
    let handle = c
        .get_line(line)
        .and_then(|l| l.request(LineRequestFlags::OUTPUT, 0, "edgebert"))
        .map_err(|e| fail(&e))?;
    CdevPin::new(handle).map_err(|e| fail(&e))
}
