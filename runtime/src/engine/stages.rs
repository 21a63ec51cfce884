//! Plans prepared on every core: the analysed graph is cut once, at load, into consecutive
//! pieces where the fewest values cross (between encoder layers, for a BERT), and a plan for a
//! shape optimises each piece on its own thread, then runs the pieces one after the other.
//!
//! Why: tract's optimiser (`into_optimized`) is sequential and is most of a cold start (≈ 50 ms
//! per plan on the build machine, several times that on a Pi core); the boards have four cores.
//! A piece is an ordinary `TypedModel`: the values it reads from earlier pieces are its inputs,
//! the constants it uses are shared with the whole graph (`Arc`, no copy), and the values later
//! pieces read are its outputs. Nothing is fused across a cut that tract would fuse there: the
//! cut points carry values that have two or more consumers (the residual stream and the
//! attention mask), which tract keeps in memory anyway.

use std::collections::HashMap;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::TractErrorContext;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::source::TypedSource;
use tract_onnx::tract_core::runtime::RunOptions;

use crate::contain::caught;

/// A piece of the graph: which operators it runs, and where its inputs and outputs are in the
/// whole. Its model is built from the whole graph when a plan needs it, so that an engine holds
/// the graph once.
struct Piece {
    /// The operators, in evaluation order; `None`: the whole graph as it is.
    nodes: Option<Vec<usize>>,
    /// For each input of the piece's model, the outlet of the whole graph it receives.
    reads: Vec<OutletId>,
    /// For each output of the piece's model, the outlet of the whole graph it stands for.
    writes: Vec<OutletId>,
}

/// Where the analysed graph is cut, ready to be planned for any shape.
pub(crate) struct Pieces {
    pieces: Vec<Piece>,
    inputs: Vec<OutletId>,
    outputs: Vec<OutletId>,
}

/// One shape's plan: the pieces' optimised states, in order; run by [`Pieces::run_with_eval`].
pub(crate) struct StagedState {
    stages: Vec<TypedSimpleState>,
}

/// The model of the operators `nodes` of `whole` (in evaluation order) with the values they
/// need from outside as inputs (constants are shared, not inputs) and `writes` as outputs.
/// Returns it with the outlets of `whole` its inputs receive.
fn piece_model(
    whole: &TypedModel,
    nodes: &[usize],
    writes: &[OutletId],
) -> TractResult<(TypedModel, Vec<OutletId>)> {
    let mut piece = TypedModel {
        symbols: whole.symbols.clone(),
        ..TypedModel::default()
    };
    let mut wired: HashMap<OutletId, OutletId> = HashMap::new();
    let mut reads = Vec::new();
    for &id in nodes {
        let node = whole.node(id);
        let mut inputs = TVec::new();
        for &input in &node.inputs {
            if let Some(&w) = wired.get(&input) {
                inputs.push(w);
                continue;
            }
            let source = whole.node(input.node);
            let fact = whole.outlet_fact(input)?;
            let w = if source.op_is::<Const>() {
                piece.wire_node(&source.name, source.op.clone(), &[])?[0]
            } else if let Some(konst) = &fact.konst {
                piece.add_const(format!("{}.{}", source.name, input.slot), konst.clone())?
            } else {
                reads.push(input);
                piece.add_source(
                    format!("{}.{}:in", source.name, input.slot),
                    fact.without_value(),
                )?
            };
            wired.insert(input, w);
            inputs.push(w);
        }
        let outputs = piece.wire_node(&node.name, node.op.clone(), &inputs)?;
        for (slot, &w) in outputs.iter().enumerate() {
            wired.insert(OutletId::new(id, slot), w);
        }
    }
    let outlets = writes
        .iter()
        .map(|o| {
            wired
                .get(o)
                .copied()
                .context("a piece's output outside the piece")
        })
        .collect::<TractResult<Vec<_>>>()?;
    piece.select_output_outlets(&outlets)?;
    Ok((piece, reads))
}

impl Pieces {
    /// Cuts `model` into at most `parts` pieces of about the same number of operators, each cut
    /// where the fewest non-constant values cross (searched within a fifth of the graph around
    /// the even split).
    pub(crate) fn cut(model: &TypedModel, parts: usize) -> TractResult<Pieces> {
        let order: Vec<usize> = model
            .eval_order()?
            .into_iter()
            .filter(|&id| {
                let node = model.node(id);
                !node.op_is::<Const>() && !node.op_is::<TypedSource>()
            })
            .collect();
        let n = order.len();
        let mut position = vec![usize::MAX; model.nodes().len()];
        for (at, &id) in order.iter().enumerate() {
            position[id] = at;
        }
        let computed = |o: &OutletId| position[o.node] != usize::MAX;
        if parts <= 1 || n < 2 || !model.outputs.iter().all(computed) {
            // One piece: the whole graph, planned as it is.
            return Ok(Pieces {
                pieces: vec![Piece {
                    nodes: None,
                    reads: model.inputs.clone(),
                    writes: model.outputs.clone(),
                }],
                inputs: model.inputs.clone(),
                outputs: model.outputs.clone(),
            });
        }
        // crossing[c]: values computed before position c and read at c or later.
        let mut crossing = vec![0i64; n + 1];
        for &id in &order {
            for (slot, output) in model.node(id).outputs.iter().enumerate() {
                if output.fact.konst.is_some() {
                    continue;
                }
                let last = output
                    .successors
                    .iter()
                    .map(|s| position[s.node])
                    .filter(|&p| p != usize::MAX)
                    .max();
                let escapes = model.outputs.contains(&OutletId::new(id, slot));
                let end = if escapes { Some(n) } else { last };
                if let Some(end) = end {
                    for c in &mut crossing[position[id] + 1..=end.min(n)] {
                        *c += 1;
                    }
                }
            }
        }
        let parts = parts.min(n);
        let window = n / 10;
        let mut cuts = vec![0];
        for k in 1..parts {
            let target = k * n / parts;
            let lo = (target.saturating_sub(window)).max(cuts[cuts.len() - 1] + 1);
            let hi = (target + window).min(n - 1);
            if lo > hi {
                continue;
            }
            let best = (lo..=hi)
                .min_by_key(|&c| (crossing[c], c.abs_diff(target)))
                .unwrap_or(target);
            cuts.push(best);
        }
        cuts.push(n);

        let piece_of = |id: usize| {
            let p = position[id];
            cuts.windows(2).position(|w| (w[0]..w[1]).contains(&p))
        };
        let mut pieces = Vec::with_capacity(cuts.len() - 1);
        for (index, range) in cuts.windows(2).enumerate() {
            let nodes = order[range[0]..range[1]].to_vec();
            // What this piece computes and a later piece (or the caller) reads.
            let mut writes = Vec::new();
            for &id in &nodes {
                for (slot, output) in model.node(id).outputs.iter().enumerate() {
                    let outlet = OutletId::new(id, slot);
                    let later = output
                        .successors
                        .iter()
                        .any(|s| piece_of(s.node).is_some_and(|p| p > index));
                    if later || model.outputs.contains(&outlet) {
                        writes.push(outlet);
                    }
                }
            }
            // Built once here to learn its inputs (and that it builds at all).
            let (_, reads) = piece_model(model, &nodes, &writes)?;
            pieces.push(Piece {
                nodes: Some(nodes),
                reads,
                writes,
            });
        }
        Ok(Pieces {
            pieces,
            inputs: model.inputs.clone(),
            outputs: model.outputs.clone(),
        })
    }

    /// How many pieces the graph was cut into.
    pub(crate) fn len(&self) -> usize {
        self.pieces.len()
    }

    /// Builds every piece of `whole` (the graph [`Pieces::cut`] cut) and optimises it for the
    /// symbol values `subs`, each on its own thread (the first on this one); spawns the states.
    pub(crate) fn plan(
        &self,
        whole: &TypedModel,
        subs: &HashMap<Symbol, TDim>,
        options: &RunOptions,
    ) -> Result<StagedState, String> {
        // tract picks its int8 kernels while optimising: the tile is decided before (once).
        crate::cpu::choose_int8_tile();
        let optimise = |piece: &Piece| {
            caught(|| {
                let concrete = match &piece.nodes {
                    None => whole.set_symbols(subs)?,
                    Some(nodes) => piece_model(whole, nodes, &piece.writes)?
                        .0
                        .set_symbols(subs)?,
                };
                concrete
                    .into_optimized()?
                    .into_runnable_with_options(options)?
                    .spawn()
            })
        };
        let stages = std::thread::scope(|scope| {
            let others: Vec<_> = self.pieces[1..]
                .iter()
                .map(|piece| scope.spawn(move || optimise(piece)))
                .collect();
            let first = optimise(&self.pieces[0]);
            std::iter::once(first)
                .chain(others.into_iter().map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("the optimiser panicked".into()))
                }))
                .collect::<Result<Vec<_>, String>>()
        })?;
        Ok(StagedState { stages })
    }

    /// Runs `state`'s pieces in order with `eval` for every node; returns the graph's outputs.
    pub(crate) fn run_with_eval<E>(
        &self,
        state: &mut StagedState,
        inputs: TVec<TValue>,
        mut eval: E,
    ) -> TractResult<TVec<TValue>>
    where
        E: for<'a, 'b, 'c> FnMut(
            &'a tract_onnx::tract_core::plan::EvalContext<'a>,
            Option<&'b mut (dyn tract_onnx::tract_core::ops::OpState + 'static)>,
            &'c TypedNode,
            TVec<TValue>,
        ) -> TractResult<TVec<TValue>>,
    {
        if inputs.len() != self.inputs.len() {
            tract_onnx::tract_core::internal::bail!(
                "{} inputs given, the graph takes {}",
                inputs.len(),
                self.inputs.len()
            );
        }
        let mut values: HashMap<OutletId, TValue> =
            self.inputs.iter().copied().zip(inputs).collect();
        for (stage, piece) in state.stages.iter_mut().zip(&self.pieces) {
            let inputs = piece
                .reads
                .iter()
                .map(|o| values.get(o).cloned().context("a value no piece computed"))
                .collect::<TractResult<TVec<TValue>>>()?;
            let outputs = stage.run_plan_with_eval(inputs, &mut eval)?;
            values.extend(piece.writes.iter().copied().zip(outputs));
        }
        self.outputs
            .iter()
            .map(|o| values.remove(o).context("an output no piece computed"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::math;

    /// Blocks of `x → a = x + 1 → b = a · 2 → x' = a + b`: inside a block two values cross any
    /// cut (`a` and `b`, or `a` alone between the two products), between blocks one (`x'`).
    fn blocks(count: usize) -> TypedModel {
        let mut model = TypedModel::default();
        let mut x = model.add_source("x", f32::fact([3])).expect("source");
        for i in 0..count {
            let one = model
                .add_const(format!("one{i}"), tensor1(&[1f32]))
                .unwrap();
            let two = model
                .add_const(format!("two{i}"), tensor1(&[2f32]))
                .unwrap();
            let a = model
                .wire_node(format!("a{i}"), math::add(), &[x, one])
                .unwrap()[0];
            let b = model
                .wire_node(format!("b{i}"), math::mul(), &[a, two])
                .unwrap()[0];
            x = model
                .wire_node(format!("x{i}"), math::add(), &[a, b])
                .unwrap()[0];
        }
        model.select_output_outlets(&[x]).unwrap();
        model
    }

    #[test]
    fn cuts_fall_between_blocks_and_answer_as_the_whole() {
        let model = blocks(8);
        let input = tensor1(&[0.5f32, -1.0, 3.0]);
        let whole = model
            .clone()
            .into_runnable()
            .unwrap()
            .run(tvec![input.clone().into_tvalue()])
            .unwrap();
        for parts in 1..=4 {
            let pieces = Pieces::cut(&model, parts).unwrap();
            assert_eq!(pieces.len(), parts);
            for piece in &pieces.pieces {
                assert_eq!(piece.nodes.is_none(), parts == 1);
                // One value in (the block's input), one out: every cut is between blocks.
                assert_eq!(piece.reads.len(), 1, "{parts} pieces");
                assert_eq!(piece.writes.len(), 1, "{parts} pieces");
            }
            let mut state = pieces
                .plan(&model, &HashMap::new(), &RunOptions::default())
                .unwrap();
            let out = pieces
                .run_with_eval(
                    &mut state,
                    tvec![input.clone().into_tvalue()],
                    |ctx, op_state, node, inputs| {
                        tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs)
                    },
                )
                .unwrap();
            assert_eq!(out[0], whole[0], "{parts} pieces");
        }
    }
}
