//! Peak RSS (VmHWM), RSS and time after each loading phase of a bundle: where the memory and
//! the cold start go. ONNX and compiled bundles alike:
//! `cargo run --release -p edgebert-tests --example rss_phases -- models/sentiment-en.ebm`
use edgebert_runtime::engine::Engine;
use edgebert_runtime::text::TextEncoder;
use edgebert_runtime::Bundle;

static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn status(phase: &str) {
    let ms = START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64()
        * 1e3;
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        s.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    println!(
        "{phase:<28} {ms:6.1} ms   RSS {:6.1} MiB   peak {:6.1} MiB",
        kib("VmRSS:"),
        kib("VmHWM:")
    );
}

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or("models/sentiment-en.ebm".into());
    status("start");
    let bytes = std::fs::read(&path)?;
    status("file read");
    let b = Bundle::parse(&bytes)?;
    status("bundle parsed");
    let enc = TextEncoder::from_json(&b.tokenizer_json, b.manifest.max_seq_len as usize)?;
    status("tokenizer");
    let mut engine = Engine::load(b.graph, 1)?;
    status("engine loaded (decluttered)");
    drop(bytes);
    status("file bytes dropped");
    engine.prepare(1, 16)?;
    status("plan 1x16 prepared");
    engine.prepare(1, 128)?;
    status("plan 1x128 prepared");
    let batch = enc.batch(&["a fine film"], 16)?;
    engine.run(&batch).map_err(anyhow::Error::msg)?;
    status("first answer");
    Ok(())
}
