//! What the fuzz targets share: the demo model, loaded once per process.

use std::sync::{Mutex, OnceLock};

use edgebert_runtime::{Classifier, ClassifierOptions};

/// The demo bundle (a seed of the `bundle` target: one mode byte, then the bundle).
static DEMO: &[u8] = include_bytes!("../seeds/demo-raw");

/// The demo model as a classifier, shared by every input of a run.
pub fn demo_classifier() -> &'static Mutex<Classifier> {
    static C: OnceLock<Mutex<Classifier>> = OnceLock::new();
    C.get_or_init(|| {
        let c = Classifier::from_bundle_bytes(&DEMO[1..], ClassifierOptions::default());
        Mutex::new(c.expect("the demo bundle loads"))
    })
}
