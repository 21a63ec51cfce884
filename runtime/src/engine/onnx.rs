//! ONNX graphs: parsed by tract-onnx with the runtime's operators registered, typed with
//! symbolic `batch` and `sequence` axes and decluttered once.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::{GraphProto, TensorProto};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::{GenericFactoid, ShapeFactoid};

use super::{input_roles, Loaded};
use crate::contain::caught;
use crate::error::ModelError;

pub(super) fn load_onnx(onnx_bytes: &[u8]) -> Result<Loaded, ModelError> {
    let mut onnx = tract_onnx::onnx();
    crate::ops::register(&mut onnx.op_register);
    let proto = onnx
        .proto_model_for_read(&mut &onnx_bytes[..])
        .map_err(|e| ModelError::NotOnnx(format!("{e:#}")))?;
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| ModelError::NotOnnx("no graph".into()))?;

    let mut unsupported: Vec<String> = graph
        .node
        .iter()
        .filter(|n| !onnx.op_register.0.contains_key(&n.op_type))
        .map(|n| n.op_type.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if !unsupported.is_empty() {
        unsupported.sort();
        return Err(ModelError::UnsupportedOperators { ops: unsupported });
    }

    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let input_names: Vec<String> = graph
        .input
        .iter()
        .map(|i| i.name.clone())
        .filter(|n| !initializers.contains(n.as_str()))
        .collect();
    let roles = input_roles(&input_names)?;
    let output_ix = graph
        .output
        .iter()
        .position(|o| o.name == "logits")
        .or(if graph.output.is_empty() {
            None
        } else {
            Some(0)
        })
        .ok_or(ModelError::NoOutput)?;
    let embedding_rows = embedding_rows(graph);

    // The protobuf holds a copy of every weight: drop it once tract has its own.
    let inputs = roles.len();
    let (decluttered, batch_sym, seq_sym) = caught(move || {
        let mut model = onnx.model_for_proto_model(&proto)?;
        drop(proto);
        let batch_sym = model.sym("batch");
        let seq_sym = model.sym("sequence");
        for ix in 0..inputs {
            let shape = ShapeFactoid::closed(tvec![
                GenericFactoid::Only(batch_sym.to_dim()),
                GenericFactoid::Only(seq_sym.to_dim())
            ]);
            model.set_input_fact(ix, InferenceFact::dt_shape(i64::datum_type(), shape))?;
        }
        let output = model.output_outlets()?[output_ix];
        model.select_output_outlets(&[output])?;
        let mut model = model.into_typed()?.into_decluttered()?;
        crate::rewrite::int8_weights::transpose_int8_weights(&mut model)?;
        TractResult::Ok((model, batch_sym, seq_sym))
    })
    .map_err(ModelError::Tract)?;
    Ok(Loaded {
        decluttered,
        batch_sym,
        seq_sym,
        roles,
        embedding_rows,
    })
}

/// Finds the word-embedding table: the constant that a `Gather` indexes with `input_ids`
/// (possibly through casts and reshapes, possibly stored int8 behind a `DequantizeLinear`).
fn embedding_rows<'g>(graph: &'g GraphProto) -> Option<usize> {
    const PASS_THROUGH: &[&str] = &[
        "Cast",
        "Identity",
        "Reshape",
        "Unsqueeze",
        "Squeeze",
        "Flatten",
    ];
    let initializers: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let producers: HashMap<&'g str, &'g tract_onnx::pb::NodeProto> = graph
        .node
        .iter()
        .flat_map(|n: &'g tract_onnx::pb::NodeProto| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    let constant_rows = |mut name: &'g str| -> Option<usize> {
        for _ in 0..4 {
            if let Some(t) = initializers.get(name) {
                return t.dims.first().and_then(|&d| usize::try_from(d).ok());
            }
            let node = producers.get(name)?;
            match node.op_type.as_str() {
                "Constant" => {
                    let t = node
                        .attribute
                        .iter()
                        .find(|a| a.name == "value")?
                        .t
                        .as_ref()?;
                    return t.dims.first().and_then(|&d| usize::try_from(d).ok());
                }
                "DequantizeLinear" | "Cast" | "Identity" => name = node.input.first()?,
                _ => return None,
            }
        }
        None
    };
    let mut ids: HashSet<&'g str> = HashSet::from(["input_ids"]);
    for node in &graph.node {
        let Some(first) = node.input.first() else {
            continue;
        };
        if PASS_THROUGH.contains(&node.op_type.as_str()) && ids.contains(first.as_str()) {
            ids.extend(node.output.iter().map(String::as_str));
        } else if node.op_type == "Gather"
            && node.input.get(1).is_some_and(|i| ids.contains(i.as_str()))
        {
            if let Some(rows) = constant_rows(first) {
                return Some(rows);
            }
        }
    }
    None
}
