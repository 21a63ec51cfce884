//! The reference for [`crate::kernels::attention`]: softmax attention straight from the
//! definition, in f64, on any CPU.

use crate::kernels::attention::Shape;

/// `softmax(q·kᵀ · scale + mask) · v` per head and text, in f64 (row-major `[batch, len, heads · d]`).
pub fn attention_reference(
    shape: Shape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: &[f32],
    scale: f32,
) -> Vec<f64> {
    let Shape {
        batch,
        len,
        heads,
        d,
    } = shape;
    let width = heads * d;
    let mut out = vec![0f64; batch * len * width];
    for b in 0..batch {
        let m = |j: usize| if mask.len() == len { mask[j] } else { mask[b * len + j] } as f64;
        let at = |i: usize, h: usize, t: usize| (b * len + i) * width + h * d + t;
        for h in 0..heads {
            for i in 0..len {
                let s: Vec<f64> = (0..len)
                    .map(|j| {
                        (0..d)
                            .map(|t| q[at(i, h, t)] as f64 * k[at(j, h, t)] as f64)
                            .sum::<f64>()
                            * scale as f64
                            + m(j)
                    })
                    .collect();
                let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for t in 0..d {
                    out[at(i, h, t)] = (0..len).map(|j| e[j] / sum * v[at(j, h, t)] as f64).sum();
                }
            }
        }
    }
    out
}
