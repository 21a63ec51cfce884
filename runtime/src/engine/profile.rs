//! [`Engine::profile`]: a clock around every node of a prepared plan, for `edgebert bench --profile`.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use edgebert_boards::marker;

use tract_onnx::prelude::*;

use super::{eval_node, on_pool, Engine, TokenBatch};

impl Engine {
    /// Runs a batch `runs` times through its plan (after one untimed run), timing every node;
    /// returns the time per operator kind, most expensive first. This is tract's own per-node
    /// evaluation with a clock around it, so the sum is close to one plain run.
    pub fn profile(&mut self, tokens: &TokenBatch, runs: usize) -> Result<Vec<OpTime>, String> {
        self.run(tokens)?;
        let runs = runs.max(1);
        let mut by_op: HashMap<String, (HashSet<String>, std::time::Duration)> = HashMap::new();
        for _ in 0..runs {
            let inputs = self.inputs(tokens)?;
            let state = self
                .plans
                .get_mut(&(tokens.batch, tokens.len))
                .ok_or("no plan")?;
            let pieces = &self.pieces;
            let by_op = &mut by_op;
            on_pool(&self.run_options, || {
                pieces.run_with_eval(
                    state,
                    inputs,
                    |ctx: &tract_onnx::tract_core::plan::EvalContext<'_>,
                     op_state: Option<
                        &mut (dyn tract_onnx::tract_core::ops::OpState + 'static),
                    >,
                     node: &TypedNode,
                     input: TVec<TValue>| {
                        let label = op_label(node);
                        marker::mark(op_mark(&label));
                        let start = std::time::Instant::now();
                        let out = eval_node(ctx, op_state, node, input);
                        let elapsed = start.elapsed();
                        marker::mark(0);
                        let entry = by_op.entry(label).or_default();
                        // By name: node ids are per piece, names are the whole graph's.
                        if !entry.0.contains(&node.name) {
                            entry.0.insert(node.name.clone());
                        }
                        entry.1 += elapsed;
                        out
                    },
                )
            })
            .map_err(|e| format!("{e:#}"))?;
        }
        let mut out: Vec<OpTime> = by_op
            .into_iter()
            .map(|(op, (nodes, total))| OpTime {
                mark: op_mark(&op),
                op,
                nodes: nodes.len(),
                ms_per_run: total.as_secs_f64() * 1e3 / runs as f64,
            })
            .collect();
        out.sort_by(|a, b| b.ms_per_run.total_cmp(&a.ms_per_run));
        Ok(out)
    }
}

/// Time that one kind of operator of the optimised plan took, from [`Engine::profile`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OpTime {
    /// tract's operator name after optimisation (`EinSum`, `DynamicQuantizeU8 (edgebert)`…); a
    /// matrix product's names its kernel too (`OptMatMul (avx512vnni_mmm_i32_8x8)`).
    pub op: String,
    /// Nodes of the plan that run this operator.
    pub nodes: usize,
    /// Mean milliseconds per run, all its nodes together.
    pub ms_per_run: f64,
    /// The mark its nodes ran under ([`edgebert_boards::marker`]): the same operator kind has the
    /// same mark for the whole process, so an emulator's count per mark is a count per operator.
    pub mark: u16,
}

/// The process-wide mark of an operator kind, given in order of first appearance.
fn op_mark(label: &str) -> u16 {
    static KINDS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut kinds = KINDS.lock().unwrap_or_else(|e| e.into_inner());
    let index = match kinds.iter().position(|k| k == label) {
        Some(i) => i,
        None => {
            kinds.push(label.to_string());
            kinds.len() - 1
        }
    };
    marker::op_mark(index)
}

/// An operator's name in a profile: tract's name, and for a matrix product the kernel tract
/// chose for it (`OptMatMul (avx512vnni_mmm_i32_16x16)`), which tells int8 products from f32
/// ones and shows the tile.
pub(super) fn op_label(node: &TypedNode) -> String {
    use tract_onnx::tract_core::ops::matmul::optimized::OptMatMul;
    let name = node.op().name();
    match node.op_as::<OptMatMul>() {
        Some(product) => {
            let mut kernels: Vec<&str> = product.mmm.iter().map(|k| k.name()).collect();
            kernels.dedup();
            format!("{name} ({})", kernels.join(", "))
        }
        None => name.to_string(),
    }
}
