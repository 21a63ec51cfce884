//! Raspberry Pi board profiles (targets, cores, memory, CPU features such as dotprod), detection
//! from what the device's kernel reports, and GPIO signalling generic over
//! `embedded_hal::digital::OutputPin`.
//!
//! The bottom of the dependency chain (`distill → quantize → runtime → boards`): it knows hardware,
//! not models. Everything board-specific is a value in [`profile::BOARDS`]; no other code asks
//! which board it runs on.

pub mod detect;
#[cfg(all(feature = "gpio", target_os = "linux"))]
pub mod linux;
pub mod marker;
pub mod profile;
pub mod signal;

/// The embedded-hal version the pins implement (1.0), for drivers built on this crate.
pub use embedded_hal;

pub use detect::{detect, detect_from, CpuInfo, Detection, DetectionSource, SystemFiles};
pub use profile::{Board, Core, Target};
pub use signal::{LabelSignal, SignalError};
