//! Compiled graphs: tract's analysed graph as NNEF in a tar ([`super::Engine::compile`] writes
//! it), read back without ONNX parsing, typing or decluttering.

use std::collections::{HashMap, HashSet};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::TractErrorContext;

use super::{input_roles, tract_err, Loaded};
use crate::contain::caught;
use crate::error::ModelError;

/// Whether a graph is a compiled one ([`Engine::compile`]: a tar, `ustar` at byte 257) rather
/// than ONNX protobuf.
pub fn is_compiled(graph: &[u8]) -> bool {
    graph.get(257..262) == Some(b"ustar")
}

pub(super) fn load_compiled(bytes: &[u8]) -> Result<Loaded, ModelError> {
    let mut model = read_compiled(bytes).map_err(ModelError::Compiled)?;
    crate::rewrite::identity_casts::drop_identity_casts(&mut model).map_err(tract_err)?;
    let input_names: Vec<String> = model
        .input_outlets()
        .map_err(tract_err)?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect();
    let roles = input_roles(&input_names)?;
    let batch_sym = model.sym("batch");
    let seq_sym = model.sym("sequence");
    let expected = [batch_sym.to_dim(), seq_sym.to_dim()];
    for (ix, name) in input_names.iter().enumerate() {
        let fact = model.input_fact(ix).map_err(tract_err)?;
        if fact.datum_type != i64::datum_type() || fact.shape.to_tvec()[..] != expected[..] {
            return Err(ModelError::Compiled(format!(
                "input `{name}` is not [batch, sequence] i64: {fact:?}"
            )));
        }
    }
    if model.outputs.len() != 1 {
        return Err(ModelError::BadOutput(format!(
            "{} outputs in the compiled graph",
            model.outputs.len()
        )));
    }
    let embedding_rows = typed_embedding_rows(&model);
    Ok(Loaded {
        decluttered: model,
        batch_sym,
        seq_sym,
        roles,
        embedding_rows,
    })
}

/// tract's `model_for_read`, shortened for the tar [`Engine::compile`] writes (`graph.nnef` and
/// `.dat` tensors): the graph's text is parsed on a second thread while the tensors are read
/// straight from the bundle's bytes (tract's reader copies each through a buffer first), and the
/// operator registries are built without the NNEF standard library ([`crate::ops::nnef_reader`]).
/// About 7 ms of a 120 ms cold start. Any other tar goes through tract's own reader.
fn read_compiled(bytes: &[u8]) -> Result<TypedModel, String> {
    use tract_nnef::ast::{Identifier, ProtoModel};
    let Some((text, dats)) = caught(|| compiled_entries(bytes))? else {
        return caught(|| crate::ops::nnef().model_for_read(&mut &bytes[..]));
    };
    std::thread::scope(|scope| {
        let doc = scope.spawn(|| caught(|| tract_nnef::ast::parse::parse_document(text)));
        let read = caught(|| {
            let nnef = crate::ops::nnef_reader();
            let mut tensors = HashMap::with_capacity(dats.len());
            for (id, mut data) in dats {
                let tensor = tract_nnef::tensors::read_tensor(&mut data)
                    .with_context(|| format!("reading tensor {id}"))?;
                tensors.insert(Identifier(id), Arc::new(tensor));
            }
            TractResult::Ok((nnef, tensors))
        });
        let doc = doc
            .join()
            .unwrap_or_else(|_| Err("the graph parser panicked".into()));
        let (nnef, tensors) = read?;
        let proto = ProtoModel {
            doc: doc?,
            tensors,
            quantization: None,
            resources: HashMap::new(),
        };
        caught(|| nnef.model_for_proto_model(&proto))
    })
}

/// A compiled graph's text and its tensors' bytes, by resource id, borrowed from the tar; `None`
/// when the tar holds anything else (tract's reader handles it then).
#[allow(clippy::type_complexity)]
fn compiled_entries(bytes: &[u8]) -> TractResult<Option<(&str, Vec<(String, &[u8])>)>> {
    let mut text = None;
    let mut dats = Vec::new();
    for entry in tar::Archive::new(bytes).entries()? {
        let entry = entry?;
        let start = usize::try_from(entry.raw_file_position())?;
        let data = start
            .checked_add(usize::try_from(entry.size())?)
            .and_then(|end| bytes.get(start..end))
            .context("a tar entry runs past the end of the graph")?;
        let path = entry.path()?;
        let name = path.to_str().context("a tar entry's name is not UTF-8")?;
        if name == tract_nnef::resource::GRAPH_NNEF_FILENAME && text.is_none() {
            text = Some(std::str::from_utf8(data)?);
        } else if let Some(id) = name.strip_suffix(".dat") {
            if id.is_empty() || id.starts_with("./") || id.split('/').any(|c| c.starts_with('.')) {
                return Ok(None);
            }
            dats.push((id.to_string(), data));
        } else {
            return Ok(None);
        }
    }
    Ok(text.map(|text| (text, dats)))
}

/// [`embedding_rows`] on an analysed graph: the constant a `Gather` indexes with `input_ids`,
/// possibly through casts and reshapes.
pub(super) fn typed_embedding_rows(model: &TypedModel) -> Option<usize> {
    use tract_onnx::tract_core::ops::array::Gather;
    use tract_onnx::tract_core::ops::cast::Cast;
    use tract_onnx::tract_core::ops::change_axes::AxisOp;
    let mut ids: HashSet<OutletId> = model
        .input_outlets()
        .ok()?
        .iter()
        .filter(|o| model.node(o.node).name == "input_ids")
        .copied()
        .collect();
    for id in model.eval_order().ok()? {
        let node = model.node(id);
        let Some(first) = node.inputs.first() else {
            continue;
        };
        if node.op_is::<Gather>() && node.inputs.get(1).is_some_and(|i| ids.contains(i)) {
            let table = model.outlet_fact(*first).ok()?;
            if table.konst.is_some() {
                return table.shape.first()?.to_i64().ok()?.try_into().ok();
            }
        } else if (node.op_is::<Cast>() || node.op_is::<AxisOp>()) && ids.contains(first) {
            ids.insert(OutletId::new(id, 0));
        }
    }
    None
}
