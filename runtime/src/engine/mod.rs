//! The tract side: an ONNX BERT classifier graph loaded once, checked, and run through plans
//! prepared per input shape.

use std::collections::HashMap;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::RunOptions;

use crate::contain::caught;
use crate::error::ModelError;
use crate::text::Encoded;
use stages::{Pieces, StagedState};

mod compiled;
mod onnx;
mod pool;
mod profile;
mod stages;

pub use compiled::is_compiled;
use compiled::{load_compiled, typed_embedding_rows};
use onnx::load_onnx;
pub use profile::OpTime;

/// What one graph input receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputRole {
    /// `input_ids`: token ids.
    Ids,
    /// `attention_mask`: 1 for a token, 0 for padding.
    Mask,
    /// `token_type_ids`: segment ids (all 0 for one text).
    TypeIds,
}

impl InputRole {
    fn from_name(name: &str) -> Option<InputRole> {
        match name {
            "input_ids" => Some(InputRole::Ids),
            "attention_mask" => Some(InputRole::Mask),
            "token_type_ids" => Some(InputRole::TypeIds),
            _ => None,
        }
    }
}

/// A batch of token sequences, all padded to one length, row-major `[batch, len]`.
#[derive(Debug, Clone, Default)]
pub struct TokenBatch {
    pub batch: usize,
    pub len: usize,
    pub ids: Vec<i64>,
    pub mask: Vec<i64>,
    pub type_ids: Vec<i64>,
}

impl TokenBatch {
    /// Pads token sequences to `len` (ids with `pad_id`, mask 0, segment 0), row after row.
    pub fn padded(rows: &[&Encoded], len: usize, pad_id: i64) -> TokenBatch {
        let mut batch = TokenBatch {
            batch: rows.len(),
            len,
            ..Default::default()
        };
        for row in rows {
            let pad = len.saturating_sub(row.ids.len());
            debug_assert!(row.ids.len() <= len, "a row longer than its bucket");
            batch.ids.extend(
                row.ids
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(pad_id, pad)),
            );
            batch
                .mask
                .extend(std::iter::repeat_n(1, row.ids.len()).chain(std::iter::repeat_n(0, pad)));
            batch.type_ids.extend(
                row.type_ids
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(0, pad)),
            );
        }
        batch
    }
}

/// A loaded and checked ONNX classifier. Holds the decluttered graph with symbolic batch and
/// sequence axes, and an optimised plan (with its reusable state) per concrete shape it has run.
pub struct Engine {
    /// tract's analysed graph, as [`Engine::compile`] stores it.
    decluttered: TypedModel,
    /// The same with the runtime's fused operators ([`crate::rewrite::fuse`]): what plans are cut
    /// from and built of.
    fused: TypedModel,
    batch_sym: Symbol,
    seq_sym: Symbol,
    roles: Vec<InputRole>,
    logits: usize,
    embedding_rows: Option<usize>,
    run_options: RunOptions,
    pieces: Pieces,
    plans: HashMap<(usize, usize), StagedState>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("inputs", &self.roles)
            .field("logits", &self.logits)
            .field("embedding_rows", &self.embedding_rows)
            .field("pieces", &self.pieces.len())
            .field("plans", &self.plans.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// At most this many pieces are optimised in parallel (the boards have four cores).
const MAX_PIECES: usize = 4;

fn tract_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tract(format!("{e:#}"))
}

impl Engine {
    /// Parses and checks a graph: an ONNX model (operators tract implements, the HF input names,
    /// a `[batch, n]` logits output), or a graph compiled by [`Engine::compile`]. `threads` > 1
    /// runs matrix products on that many threads.
    ///
    /// Plans are prepared on every core: see [`Engine::load_in_pieces`].
    pub fn load(graph: &[u8], threads: usize) -> Result<Engine, ModelError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Engine::load_in_pieces(graph, threads, cores.min(MAX_PIECES))
    }

    /// [`Engine::load`], with the graph cut into at most `pieces` consecutive pieces that each
    /// plan optimises in parallel (tract's optimiser is sequential and most of a cold start).
    /// The pieces run one after the other, so answers do not depend on the cut; 1 plans the
    /// whole graph at once.
    pub fn load_in_pieces(
        graph: &[u8],
        threads: usize,
        pieces: usize,
    ) -> Result<Engine, ModelError> {
        let loaded = if is_compiled(graph) {
            load_compiled(graph)?
        } else {
            load_onnx(graph)?
        };
        Engine::from_loaded(loaded, threads, pieces)
    }

    /// How many pieces each plan is optimised in.
    pub fn pieces(&self) -> usize {
        self.pieces.len()
    }

    fn from_loaded(loaded: Loaded, threads: usize, pieces: usize) -> Result<Engine, ModelError> {
        let Loaded {
            decluttered,
            batch_sym,
            seq_sym,
            roles,
            embedding_rows,
        } = loaded;
        let fact = decluttered.output_fact(0).map_err(tract_err)?;
        if fact.datum_type != f32::datum_type() || fact.rank() != 2 {
            return Err(ModelError::BadOutput(format!("{fact:?}")));
        }
        let logits = fact.shape[1]
            .to_i64()
            .ok()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| ModelError::BadOutput(format!("label axis is not fixed: {fact:?}")))?;

        let run_options = RunOptions {
            executor: (threads > 1)
                .then(|| tract_linalg::multithread::Executor::multithread(threads)),
            ..Default::default()
        };
        // Fused before the cut, so that no piece boundary can split a pattern (the answers must
        // not depend on the cut) and the work is done once, not per plan.
        let fused = caught(|| {
            let mut fused = decluttered.clone();
            if crate::rewrite::enabled() {
                crate::rewrite::fuse(&mut fused)?;
            }
            TractResult::Ok(fused)
        })
        .map_err(ModelError::Tract)?;
        let pieces = caught(|| Pieces::cut(&fused, pieces)).map_err(ModelError::Tract)?;
        Ok(Engine {
            decluttered,
            fused,
            batch_sym,
            seq_sym,
            roles,
            logits,
            embedding_rows,
            run_options,
            pieces,
            plans: HashMap::new(),
        })
    }

    /// The graph as tract holds it after analysis (typed and decluttered), serialised as tract's
    /// NNEF (a tar): [`Engine::load`] reads it back without parsing ONNX or analysing the graph
    /// again, which is most of a cold start. The form is tract's own, tied to the tract version
    /// that wrote it.
    pub fn compile(&self) -> Result<Vec<u8>, ModelError> {
        // The check on token ids must survive compilation: refuse a graph where it would not.
        if self.embedding_rows.is_some()
            && typed_embedding_rows(&self.decluttered) != self.embedding_rows
        {
            return Err(ModelError::Compile(
                "the word-embedding table is not found in the analysed graph".into(),
            ));
        }
        caught(|| {
            crate::ops::nnef().write_to_tar_with_config(&self.decluttered, Vec::new(), false, true)
        })
        .map_err(ModelError::Compile)
    }

    /// Width of the logits output: the number of labels the model predicts.
    pub fn logits(&self) -> usize {
        self.logits
    }

    /// Rows of the word-embedding table, when the graph shows it (a Gather on `input_ids` from a
    /// constant); token ids must stay below it.
    pub fn embedding_rows(&self) -> Option<usize> {
        self.embedding_rows
    }

    /// Whether the graph takes `token_type_ids`.
    pub fn has_input(&self, role: InputRole) -> bool {
        self.roles.contains(&role)
    }

    /// Prepares the plan for a `[batch, len]` input once; later runs of that shape reuse it.
    pub fn prepare(&mut self, batch: usize, len: usize) -> Result<(), ModelError> {
        if self.plans.contains_key(&(batch, len)) {
            return Ok(());
        }
        let subs = HashMap::from([
            (self.batch_sym.clone(), (batch as i64).to_dim()),
            (self.seq_sym.clone(), (len as i64).to_dim()),
        ]);
        let state = self
            .pieces
            .plan(&self.fused, &subs, &self.run_options)
            .map_err(ModelError::Tract)?;
        self.plans.insert((batch, len), state);
        Ok(())
    }

    fn inputs(&self, tokens: &TokenBatch) -> Result<TVec<TValue>, String> {
        let shape = [tokens.batch, tokens.len];
        self.roles
            .iter()
            .map(|role| {
                let data = match role {
                    InputRole::Ids => &tokens.ids,
                    InputRole::Mask => &tokens.mask,
                    InputRole::TypeIds => &tokens.type_ids,
                };
                Tensor::from_shape(&shape, data).map(|t| t.into_tvalue())
            })
            .collect::<TractResult<_>>()
            .map_err(|e| format!("{e:#}"))
    }

    /// Runs a batch; returns the logits row-major, `[batch, logits]`.
    pub fn run(&mut self, tokens: &TokenBatch) -> Result<Vec<f32>, String> {
        self.prepare(tokens.batch, tokens.len)
            .map_err(|e| e.to_string())?;
        let inputs = self.inputs(tokens)?;
        let state = self
            .plans
            .get_mut(&(tokens.batch, tokens.len))
            .ok_or("no plan")?;
        let pieces = &self.pieces;
        let outputs = on_pool(&self.run_options, || {
            pieces.run_with_eval(state, inputs, eval_node)
        })
        .map_err(|e| format!("{e:#}"))?;
        let view = outputs[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| format!("{e:#}"))?;
        if view.shape() != [tokens.batch, self.logits] {
            return Err(format!("unexpected logits shape {:?}", view.shape()));
        }
        Ok(view.iter().copied().collect())
    }
}

/// Runs `f` on the plan's pool with its threads kept awake ([`self::pool::run_hot`]) when it
/// has one, else here.
fn on_pool<R: Send>(options: &RunOptions, f: impl FnOnce() -> R + Send) -> R {
    match &options.executor {
        Some(tract_linalg::multithread::Executor::MultiThread(pool)) => {
            self::pool::run_hot(pool, f)
        }
        _ => f(),
    }
}

/// What loading a graph yields, before the checks common to both forms.
struct Loaded {
    decluttered: TypedModel,
    batch_sym: Symbol,
    seq_sym: Symbol,
    roles: Vec<InputRole>,
    embedding_rows: Option<usize>,
}

/// The inputs' roles from their names; `input_ids` and `attention_mask` are required.
fn input_roles(input_names: &[String]) -> Result<Vec<InputRole>, ModelError> {
    let mut roles = Vec::with_capacity(input_names.len());
    for name in input_names {
        roles.push(
            InputRole::from_name(name)
                .ok_or_else(|| ModelError::UnknownInput { name: name.clone() })?,
        );
    }
    for (role, name) in [
        (InputRole::Ids, "input_ids"),
        (InputRole::Mask, "attention_mask"),
    ] {
        if !roles.contains(&role) {
            return Err(ModelError::MissingInput {
                name,
                found: input_names.to_vec(),
            });
        }
    }
    Ok(roles)
}

/// tract's own node evaluation, followed by [`crate::cpu::clear_upper_state`].
fn eval_node(
    ctx: &tract_onnx::tract_core::plan::EvalContext<'_>,
    op_state: Option<&mut (dyn tract_onnx::tract_core::ops::OpState + 'static)>,
    node: &TypedNode,
    input: TVec<TValue>,
) -> TractResult<TVec<TValue>> {
    let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, input);
    crate::cpu::clear_upper_state();
    out
}

#[cfg(all(test, feature = "default-model"))]
mod tests {
    use super::*;

    /// The built-in model's graph for one 1×`len` text, optimised by tract, with and without
    /// [`crate::rewrite::fuse_dequantize_bias`]: the fused plan has one `DequantizeBias` per int8
    /// product with a bias and no `Cast` after them, and the same logits to the bit.
    #[test]
    fn fusing_the_dequantization_changes_no_bit() {
        let bundle = crate::bundle::Bundle::parse(crate::EMBEDDED_MODEL).unwrap();
        let loaded = load_compiled(bundle.graph).unwrap();
        for len in [16usize, 37] {
            let concrete = one_text(&loaded, len);
            let casts_i32 = |m: &TypedModel| {
                m.nodes
                    .iter()
                    .filter(|n| {
                        n.op().name() == "Cast"
                            && m.outlet_fact(n.inputs[0]).unwrap().datum_type == i32::datum_type()
                    })
                    .count()
            };
            let mut fused = concrete.clone();
            let count = crate::rewrite::fuse_dequantize_bias(&mut fused).unwrap();
            // Q, K, V, attention output, two feed-forward products per layer, 3 layers, at least.
            assert!(count >= 18, "{count} fused");
            let (fused, plain) = (
                fused.into_optimized().unwrap(),
                concrete.into_optimized().unwrap(),
            );
            let named = |m: &TypedModel, name: &str| {
                m.nodes.iter().filter(|n| n.op().name() == name).count()
            };
            let dequantize_bias = |m: &TypedModel| {
                m.nodes
                    .iter()
                    .filter(|n| n.op_is::<crate::ops::DequantizeBias>())
                    .count()
            };
            assert_eq!(dequantize_bias(&fused), count);
            // The GELU after each layer's first feed-forward product, in the same pass.
            assert_eq!(named(&fused, "DequantizeBias+Gelu (edgebert)"), 3);
            assert_eq!(named(&fused, "GeluExact"), 0);
            assert_eq!(casts_i32(&fused) + count, casts_i32(&plain));

            let inputs = sample_inputs(&loaded, len);
            let (a, b) = (logits(fused, &inputs), logits(plain, &inputs));
            assert_eq!(
                a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "{a:?} vs {b:?}"
            );
        }
    }

    /// The analysed graph for one text of `len` tokens.
    fn one_text(loaded: &Loaded, len: usize) -> TypedModel {
        let subs = HashMap::from([
            (loaded.batch_sym.clone(), 1.to_dim()),
            (loaded.seq_sym.clone(), (len as i64).to_dim()),
        ]);
        loaded.decluttered.set_symbols(&subs).unwrap()
    }

    /// The logits of an optimised model on `inputs`.
    fn logits(model: TypedModel, inputs: &TVec<TValue>) -> Vec<f32> {
        let out = model.into_runnable().unwrap().run(inputs.clone()).unwrap();
        out[0]
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    }

    /// A `[1, len]` text of a few repeated ids, its last three tokens padding.
    fn sample_inputs(loaded: &Loaded, len: usize) -> TVec<TValue> {
        loaded
            .roles
            .iter()
            .map(|role| {
                let values: Vec<i64> = (0..len as i64)
                    .map(|i| match role {
                        InputRole::Ids => [101, 2023, 3185, 2001, 6429, 999][i as usize % 6],
                        InputRole::Mask => i64::from(i < len as i64 - 3),
                        InputRole::TypeIds => 0,
                    })
                    .collect();
                tract_ndarray::Array2::from_shape_vec((1, len), values)
                    .unwrap()
                    .into_tvalue()
            })
            .collect()
    }

    /// [`crate::rewrite::fuse_layer_norm`] on the built-in model, after the dequantization's fusion
    /// as in a plan: every layer normalisation (the embeddings' and two per layer) becomes one
    /// `LayerNorm`, none of tract's `RmsNorm` is left, and the logits move by float rounding only.
    #[test]
    fn fusing_the_layer_norms_keeps_the_answers() {
        let bundle = crate::bundle::Bundle::parse(crate::EMBEDDED_MODEL).unwrap();
        let loaded = load_compiled(bundle.graph).unwrap();
        // The engine fuses the symbolic graph (before cutting it into pieces): all of it fuses
        // there too.
        let mut symbolic = loaded.decluttered.clone();
        let fused = crate::rewrite::fuse(&mut symbolic).unwrap();
        let named =
            |m: &TypedModel, name: &str| m.nodes.iter().filter(|n| n.op().name() == name).count();
        assert_eq!(named(&symbolic, "LayerNorm (edgebert)"), 7);
        let dequantize_bias = symbolic
            .nodes
            .iter()
            .filter(|n| n.op_is::<crate::ops::DequantizeBias>())
            .count();
        // A `QuantLinear` was a `DequantizeBias` first (two fusions).
        let quant_linear = symbolic
            .nodes
            .iter()
            .filter(|n| n.op_is::<crate::ops::QuantLinear>())
            .count();
        let attention = symbolic
            .nodes
            .iter()
            .filter(|n| n.op_is::<crate::ops::Attention>())
            .count();
        assert_eq!(fused, 7 + dequantize_bias + 2 * quant_linear + attention);
        assert!(dequantize_bias + quant_linear >= 18, "{fused}");
        for len in [16usize, 37] {
            let mut plain = one_text(&loaded, len);
            crate::rewrite::fuse_dequantize_bias(&mut plain).unwrap();
            let rms_norms = |m: &TypedModel| {
                m.nodes
                    .iter()
                    .filter(|n| n.op().name() == "RmsNorm")
                    .count()
            };
            let norms = rms_norms(&plain);
            assert_eq!(norms, 7, "the embeddings' and two per layer, 3 layers");
            let mut fused = plain.clone();
            assert_eq!(crate::rewrite::fuse_layer_norm(&mut fused).unwrap(), norms);
            let (fused, plain) = (
                fused.into_optimized().unwrap(),
                plain.into_optimized().unwrap(),
            );
            assert_eq!(rms_norms(&fused), 0);
            let inputs = sample_inputs(&loaded, len);
            let (a, b) = (logits(fused, &inputs), logits(plain, &inputs));
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{a:?} vs {b:?}");
            }
        }
    }

    /// [`crate::rewrite::fuse_quant_linear`] on the built-in model: on an x86_64 CPU with AVX2 or AVX-512 VNNI each
    /// int8 product and its dequantization become one `QuantLinear`, no i32 product of tract's
    /// is left, and the logits are the same to the bit, on one thread and split over two (a
    /// 37-token text is two shares of rows there). Elsewhere nothing is fused.
    #[test]
    fn fusing_the_int8_products_changes_no_bit() {
        use tract_linalg::multithread::{multithread_tract_scope, Executor};
        let bundle = crate::bundle::Bundle::parse(crate::EMBEDDED_MODEL).unwrap();
        let loaded = load_compiled(bundle.graph).unwrap();
        for len in [16usize, 37] {
            let mut plain = one_text(&loaded, len);
            let products = crate::rewrite::fuse_dequantize_bias(&mut plain).unwrap();
            let mut fused = plain.clone();
            let count = crate::rewrite::fuse_quant_linear(&mut fused).unwrap();
            if !crate::kernels::qgemm::enabled() {
                assert_eq!(count, 0);
                crate::kernels::skipped("fusing the int8 products: no int8 kernel of ours here");
                return;
            }
            assert_eq!(count, products, "every product with a bias");
            let named = |m: &TypedModel, name: &str| {
                m.nodes.iter().filter(|n| n.op().name() == name).count()
            };
            let (fused, plain) = (
                fused.into_optimized().unwrap(),
                plain.into_optimized().unwrap(),
            );
            assert_eq!(named(&fused, "QuantLinear+Gelu (edgebert)"), 3);
            assert_eq!(named(&fused, "QuantLinear (edgebert)"), count - 3);
            assert_eq!(named(&fused, "OffsetU8asI8"), 0);
            let i32_products = |m: &TypedModel| {
                m.nodes
                    .iter()
                    .filter(|n| {
                        n.op().name() == "OptMatMul"
                            && m.outlet_fact(OutletId::new(n.id, 0)).unwrap().datum_type
                                == i32::datum_type()
                    })
                    .count()
            };
            assert_eq!(i32_products(&plain), count);
            assert_eq!(i32_products(&fused), 0);
            let inputs = sample_inputs(&loaded, len);
            let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let want = bits(logits(plain, &inputs));
            assert_eq!(bits(logits(fused.clone(), &inputs)), want, "{len} tokens");
            let two = multithread_tract_scope(Executor::multithread(2), || {
                logits(fused.clone(), &inputs)
            });
            assert_eq!(bits(two), want, "{len} tokens, two threads");
        }
    }

    /// [`crate::rewrite::fuse_attention`] on the built-in model: on a CPU with AVX-512 or AVX2 each layer's
    /// attention (on the symbolic graph too) becomes one `Attention`, none of tract's `Softmax`
    /// is left, and the logits move by float rounding only; split over two threads, the same bits
    /// as one. Elsewhere nothing is fused.
    #[test]
    fn fusing_the_attention_keeps_the_answers() {
        use tract_linalg::multithread::{multithread_tract_scope, Executor};
        let bundle = crate::bundle::Bundle::parse(crate::EMBEDDED_MODEL).unwrap();
        let loaded = load_compiled(bundle.graph).unwrap();
        let mut symbolic = loaded.decluttered.clone();
        crate::rewrite::fuse_dequantize_bias(&mut symbolic).unwrap();
        let count = crate::rewrite::fuse_attention(&mut symbolic).unwrap();
        if !crate::kernels::attention::enabled() {
            assert_eq!(count, 0);
            crate::kernels::skipped("fusing the attention: no attention kernel of ours here");
            return;
        }
        assert_eq!(count, 3, "one per layer");
        for len in [16usize, 37] {
            let mut plain = one_text(&loaded, len);
            crate::rewrite::fuse_dequantize_bias(&mut plain).unwrap();
            let mut fused = plain.clone();
            assert_eq!(crate::rewrite::fuse_attention(&mut fused).unwrap(), 3);
            let (fused, plain) = (
                fused.into_optimized().unwrap(),
                plain.into_optimized().unwrap(),
            );
            let named = |m: &TypedModel, name: &str| {
                m.nodes.iter().filter(|n| n.op().name() == name).count()
            };
            assert_eq!(named(&plain, "Softmax"), 3);
            assert_eq!(named(&fused, "Softmax"), 0);
            assert_eq!(named(&fused, "Attention (edgebert)"), 3);
            let inputs = sample_inputs(&loaded, len);
            let (a, b) = (logits(fused.clone(), &inputs), logits(plain, &inputs));
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{a:?} vs {b:?}");
            }
            let two = multithread_tract_scope(Executor::multithread(2), || {
                logits(fused.clone(), &inputs)
            });
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&two), bits(&a), "{len} tokens, two threads");
        }
    }
}
