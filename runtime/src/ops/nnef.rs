//! Reading and writing compiled graphs (tract's NNEF) with the runtime's operators in them.

use tract_onnx::tract_hir::internal::*;

use super::DynamicQuantizeU8;

/// tract's NNEF with what edgebert's compiled graphs use beyond tract's own registries: our
/// `DynamicQuantizeU8`, and exact GELU (tract 0.23 declutters ONNX's erf pattern into
/// `GeluExact` but has no NNEF serialisation for it).
pub fn nnef() -> tract_nnef::framework::Nnef {
    use tract_onnx::WithOnnx;
    tract_nnef::nnef().with_onnx().with_registry(registry())
}

/// [`nnef`] for reading graphs from already loaded resources (`model_for_proto_model`): the same
/// operator registries, without the NNEF standard library's fragments (only the writer uses
/// them; `tract_nnef::nnef()` parses their 30 KB of text on every call, 5 ms of a cold start)
/// and without resource loaders.
pub(crate) fn nnef_reader() -> tract_nnef::framework::Nnef {
    use tract_onnx::WithOnnx;
    tract_nnef::framework::Nnef {
        stdlib: Vec::new(),
        registries: vec![tract_nnef::ops::tract_nnef(), tract_nnef::ops::tract_core()],
        resource_loaders: Vec::new(),
        allow_extended_identifier_syntax: false,
        extern_all_constants: false,
    }
    .with_onnx()
    .with_registry(registry())
}

fn registry() -> tract_nnef::internal::Registry {
    use tract_nnef::internal::{Registry, TypeName};
    let mut registry = Registry::new("edgebert");
    registry.register_dumper(nnef_dump_dynamic_quantize);
    registry.register_primitive(
        NNEF_DYNAMIC_QUANTIZE,
        &[TypeName::Scalar.tensor().named("input")],
        &[
            ("output", TypeName::Integer.tensor()),
            ("scale", TypeName::Scalar.tensor()),
            ("zero_point", TypeName::Integer.tensor()),
        ],
        nnef_load_dynamic_quantize,
    );
    registry.register_unit_element_wise(
        "edgebert_gelu_exact",
        &tract_onnx::tract_core::ops::nn::gelu_exact::GeluExact {},
    );
    registry
}

const NNEF_DYNAMIC_QUANTIZE: &str = "edgebert_dynamic_quantize_u8";

fn nnef_dump_dynamic_quantize(
    ast: &mut tract_nnef::internal::IntoAst,
    node: &TypedNode,
    _op: &DynamicQuantizeU8,
) -> TractResult<Option<Arc<tract_nnef::internal::RValue>>> {
    let input = ast.mapping[&node.inputs[0]].clone();
    Ok(Some(tract_nnef::internal::invocation(
        NNEF_DYNAMIC_QUANTIZE,
        &[input],
        &[],
    )))
}

fn nnef_load_dynamic_quantize(
    builder: &mut tract_nnef::internal::ModelBuilder,
    invocation: &tract_nnef::internal::ResolvedInvocation,
) -> TractResult<tract_nnef::internal::Value> {
    let input = invocation.named_arg_as(builder, "input")?;
    builder.wire(DynamicQuantizeU8, &[input])
}
