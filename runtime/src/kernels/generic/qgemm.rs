//! The reference for [`crate::kernels::qgemm`]'s kernels: plain integer arithmetic on the packed
//! weights (so the packing is checked too), on any CPU.

use crate::kernels::qgemm::PackedWeights;

/// `Σ_k (a[i, k] − a0) · w[j, k]` for every row of `a` (row-major, `k` bytes each), rows of
/// `n_pad` sums, as [`crate::kernels::qgemm::products`] hands them out, for any kernel's packing.
pub fn products_reference(a: &[u8], a0: u8, w: &PackedWeights) -> Vec<i32> {
    let (k, n_pad, data) = (w.k(), w.n_pad(), w.data());
    let rows = a.len() / k;
    let offset = w.kernel().activation_offset();
    let mut out = w.start(a0).repeat(rows);
    for (row, y) in a.chunks_exact(k).zip(out.chunks_exact_mut(n_pad)) {
        for (j, y) in y.iter_mut().enumerate() {
            for (kk, &x) in row.iter().enumerate() {
                *y += (x as i32 - offset) * data[w.index(j, kk)] as i32;
            }
        }
    }
    out
}
