//! The plugin's totals and the JSON it writes at exit (read by `scripts/arm_bench.py`):
//!
//! ```json
//! {"classes": ["branch", ...], "overflow": false,
//!  "marks": [{"mark": 16, "insns": 123, "classes": [..], "q_transfers": 4,
//!             "functions": [{"name": "...", "insns": 99, "classes": [..]}, ...]}, ...]}
//! ```
//! `classes` arrays follow the top-level `classes` order; `functions` are the 40 largest.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use serde_json::json;

use crate::classify::CLASSES;

type Histogram = [u64; CLASSES.len()];

/// Functions listed per mark, largest first.
const FUNCTIONS_LISTED: usize = 40;

pub struct Counts {
    marks: Vec<u16>,
    symbols: Vec<String>,
    per_slot: Vec<(Histogram, u64, HashMap<u32, Histogram>)>,
}

impl Counts {
    pub fn new(marks: &[u16], symbols: Vec<String>) -> Self {
        Counts {
            marks: marks.to_vec(),
            symbols,
            per_slot: vec![([0; CLASSES.len()], 0, HashMap::new()); marks.len()],
        }
    }

    /// A block with `classes` instructions that ran `runs` times under `slot`.
    pub fn add(&mut self, slot: usize, symbol: u32, classes: &[u32], q: u32, runs: u64) {
        let Some((total, q_total, functions)) = self.per_slot.get_mut(slot) else {
            return;
        };
        let function = functions.entry(symbol).or_insert([0; CLASSES.len()]);
        for (i, &c) in classes.iter().enumerate() {
            total[i] += u64::from(c) * runs;
            function[i] += u64::from(c) * runs;
        }
        *q_total += u64::from(q) * runs;
    }

    pub fn to_json(&self, overflow: bool) -> String {
        let marks: Vec<_> = self
            .marks
            .iter()
            .zip(&self.per_slot)
            .map(|(mark, (total, q, functions))| {
                let mut fs: Vec<_> = functions.iter().collect();
                fs.sort_by_key(|(_, h)| std::cmp::Reverse(h.iter().sum::<u64>()));
                let fs: Vec<_> = fs
                    .into_iter()
                    .take(FUNCTIONS_LISTED)
                    .map(|(&s, h)| {
                        let name = self.symbols.get(s as usize).map_or("?", |n| n.as_str());
                        let name = readable(name);
                        json!({"name": name, "insns": h.iter().sum::<u64>(), "classes": h})
                    })
                    .collect();
                json!({"mark": mark, "insns": total.iter().sum::<u64>(), "classes": total,
                       "q_transfers": q, "functions": fs})
            })
            .collect();
        let names: Vec<_> = CLASSES.iter().map(|c| c.name()).collect();
        json!({"classes": names, "overflow": overflow, "marks": marks}).to_string()
    }
}

/// A Rust symbol demangled without its hash (`tract_linalg::frame::pack::pack_k_major`); other
/// names as they are.
fn readable(name: &str) -> String {
    match rustc_demangle::try_demangle(name) {
        Ok(d) => format!("{d:#}"),
        Err(_) => name.to_string(),
    }
}

/// Writes `text` to a temporary file beside `path`, then renames it over `path`.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let mut tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map(|_| ()).map_err(|e| e.error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_runs_times_block_counts() {
        let mut c = Counts::new(&[0, 16], vec!["f".into(), "g".into()]);
        let mut classes = [0u32; CLASSES.len()];
        classes[0] = 2;
        classes[3] = 5;
        c.add(1, 0, &classes, 1, 10);
        c.add(1, 1, &classes, 0, 1);
        c.add(0, 0, &classes, 0, 3);
        let v: serde_json::Value = serde_json::from_str(&c.to_json(false)).unwrap();
        assert_eq!(v["marks"][1]["mark"], 16);
        assert_eq!(v["marks"][1]["insns"], 77);
        assert_eq!(v["marks"][1]["q_transfers"], 10);
        assert_eq!(v["marks"][1]["functions"][0]["name"], "f");
        assert_eq!(v["marks"][1]["functions"][0]["insns"], 70);
        assert_eq!(v["marks"][0]["insns"], 21);
    }

    #[test]
    fn rust_names_are_demangled_without_hash() {
        assert_eq!(
            readable("_ZN12tract_linalg5frame4pack12pack_k_major17h22c424d28cae1b06E"),
            "tract_linalg::frame::pack::pack_k_major"
        );
        assert_eq!(
            readable(".packed_packed_loop_1_i8i8"),
            ".packed_packed_loop_1_i8i8"
        );
    }
}
