//! The runtime's own tract operators, one per file: where ours is measurably faster than
//! tract's on the int8 path, or does in one pass what tract does in several. `register` puts the
//! ONNX ones into tract-onnx's parser; the fused ones are put into the analysed graph by
//! [`crate::rewrite`]; [`nnef`] reads and writes them in compiled graphs. Their loops live in
//! [`crate::kernels`].

pub mod attention;
pub mod dequantize_bias;
pub mod dynamic_quantize;
pub mod layer_norm;
pub mod nnef;
pub mod quant_linear;

pub use attention::Attention;
pub use dequantize_bias::DequantizeBias;
pub use dynamic_quantize::DynamicQuantizeU8;
pub use layer_norm::LayerNorm;
pub use nnef::nnef;
pub(crate) use nnef::nnef_reader;
pub use quant_linear::QuantLinear;

use tract_onnx::model::OnnxOpRegister;

/// Puts our operators into a parser's register, over tract's.
pub fn register(ops: &mut OnnxOpRegister) {
    ops.insert(
        "DynamicQuantizeLinear",
        dynamic_quantize::dynamic_quantize_linear,
    );
}
