//! HF BERT checkpoint → ONNX `BertForSequenceClassification` graph, without Python.
//!
//! Inputs `input_ids`, `attention_mask`, `token_type_ids` (i64 `[batch, sequence]`), output
//! `logits` (f32 `[batch, labels]`), opset 17, dynamic batch and sequence axes. Initializers keep
//! their HF names; Linear weights are stored transposed (`[in, out]`) so they feed `MatMul`
//! directly, which is also the form the int8 quantizer rewrites.

use std::path::Path;

use edgebert_runtime::{Bundle, Metric};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::ModelProto;

use crate::checkpoint::{BertConfig, Checkpoint};
use crate::error::Error;
use crate::onnx::{attr_float, attr_int, attr_ints, value_info, Dim, GraphBuilder};

/// Added to attention scores of padding positions (as the original BERT): their softmax weight
/// underflows to exactly 0 without risking infinities.
pub const MASK_VALUE: f32 = -10000.0;

/// Exports a checkpoint with a classification head to an ONNX model.
pub fn export(ckpt: &Checkpoint) -> Result<ModelProto, Error> {
    let cfg = &ckpt.config;
    if !ckpt.has_classifier() {
        return Err(Error::NoClassifier);
    }
    if cfg.position_embedding_type != "absolute" {
        return Err(Error::Unsupported(format!(
            "position_embedding_type `{}` (edgebert exports absolute positions)",
            cfg.position_embedding_type
        )));
    }
    let activation = Activation::parse(&cfg.hidden_act)?;
    let (h, p) = (cfg.hidden_size, ckpt.prefix());
    let labels = ckpt
        .weights
        .get("classifier.weight")
        .map(|w| w.shape.first().copied().unwrap_or(0))
        .unwrap_or(0);
    let mut w = Weights {
        ckpt,
        g: GraphBuilder::default(),
    };

    // Embeddings: word + position (the first `sequence` rows) + token type, then LayerNorm.
    let words = w.table(
        &format!("{p}embeddings.word_embeddings.weight"),
        cfg.vocab_size,
        h,
    )?;
    let positions = w.table(
        &format!("{p}embeddings.position_embeddings.weight"),
        cfg.max_position_embeddings,
        h,
    )?;
    let types = w.table(
        &format!("{p}embeddings.token_type_embeddings.weight"),
        cfg.type_vocab_size,
        h,
    )?;
    let g = &mut w.g;
    let x = g.op("Gather", "/embeddings/word", &[&words, "input_ids"], vec![]);
    let shape = g.op("Shape", "/embeddings/shape", &["input_ids"], vec![]);
    let one = g.i64("/const/one", &[1], &[1]);
    let two = g.i64("/const/two", &[1], &[2]);
    let zero = g.i64("/const/zero", &[1], &[0]);
    let seq = g.op(
        "Slice",
        "/embeddings/sequence",
        &[&shape, &one, &two],
        vec![],
    );
    let pos = g.op(
        "Slice",
        "/embeddings/position",
        &[&positions, &zero, &seq, &zero],
        vec![],
    );
    let x = g.op("Add", "/embeddings/add_position", &[&x, &pos], vec![]);
    let tt = g.op(
        "Gather",
        "/embeddings/token_type",
        &[&types, "token_type_ids"],
        vec![],
    );
    let x = g.op("Add", "/embeddings/add_token_type", &[&x, &tt], vec![]);
    let mut x = w.layer_norm(
        &x,
        &format!("{p}embeddings.LayerNorm"),
        "/embeddings/LayerNorm",
        cfg,
    )?;

    // Additive attention mask, [batch, 1, 1, sequence]: 0 for tokens, MASK_VALUE for padding.
    let g = &mut w.g;
    let mask = g.op(
        "Cast",
        "/mask/cast",
        &["attention_mask"],
        vec![attr_int("to", DataType::Float as i64)],
    );
    let axes = g.i64("/mask/axes", &[2], &[1, 2]);
    let mask = g.op("Unsqueeze", "/mask/unsqueeze", &[&mask, &axes], vec![]);
    let onef = g.f32("/const/one_f32", &[], &[1.0]);
    let mask = g.op("Sub", "/mask/invert", &[&onef, &mask], vec![]);
    let big = g.f32("/mask/value", &[], &[MASK_VALUE]);
    let mask = g.op("Mul", "/mask/additive", &[&mask, &big], vec![]);

    for layer in 0..cfg.num_hidden_layers {
        x = w.encoder_layer(&x, &mask, layer, cfg, activation)?;
    }

    // Pooler (tanh over the first token) and classifier.
    let first_ix = w.g.i64("/pooler/first_index", &[], &[0]);
    let first = w.g.op(
        "Gather",
        "/pooler/first_token",
        &[&x, &first_ix],
        vec![attr_int("axis", 1)],
    );
    let pooled = w.linear(&first, &format!("{p}pooler.dense"), "/pooler/dense", h, h)?;
    let pooled = w.g.op("Tanh", "/pooler/tanh", &[&pooled], vec![]);
    let logits = w.linear(&pooled, "classifier", "/classifier", h, labels)?;
    w.g.op("Identity", "logits", &[&logits], vec![]);

    let ids = |name| {
        value_info(
            name,
            DataType::Int64,
            &[Dim::Named("batch"), Dim::Named("sequence")],
        )
    };
    let inputs = vec![
        ids("input_ids"),
        ids("attention_mask"),
        ids("token_type_ids"),
    ];
    let outputs = vec![value_info(
        "logits",
        DataType::Float,
        &[Dim::Named("batch"), Dim::Fixed(labels as i64)],
    )];
    let mut metadata = vec![(
        "edgebert.layers".to_string(),
        cfg.num_hidden_layers.to_string(),
    )];
    if let Some(labels) = cfg.labels() {
        metadata.push(("edgebert.labels".into(), labels.join(",")));
    }
    Ok(w.g.finish(
        "bert_for_sequence_classification",
        inputs,
        outputs,
        metadata,
    ))
}

/// Exports `dir` and writes an ONNX file, or a bundle when `out` ends in `.ebm`.
pub fn export_to_file(dir: &Path, out: &Path, max_seq_len: usize) -> Result<(), Error> {
    let ckpt = Checkpoint::open(dir)?;
    let onnx = crate::onnx::encode(&export(&ckpt)?);
    let inputs = [
        dir.join("config.json"),
        dir.join("model.safetensors"),
        dir.join("tokenizer.json"),
    ];
    let inputs: Vec<&Path> = inputs.iter().map(|p| p.as_path()).collect();
    if out.extension().is_some_and(|e| e == "ebm") {
        let bundle = bundle_for(&ckpt, onnx, max_seq_len)?;
        bundle.write(out, &inputs)?;
    } else {
        edgebert_runtime::fsutil::write_atomic(out, &onnx, &inputs)?;
    }
    Ok(())
}

/// Packs an exported graph with the checkpoint's tokenizer and labels.
pub fn bundle_for(ckpt: &Checkpoint, onnx: Vec<u8>, max_seq_len: usize) -> Result<Bundle, Error> {
    let cfg = &ckpt.config;
    let n = ckpt
        .weights
        .get("classifier.weight")
        .map_or(0, |w| w.shape[0]);
    let labels = cfg
        .labels()
        .unwrap_or_else(|| (0..n).map(|i| format!("LABEL_{i}")).collect());
    let max_len = max_seq_len.min(cfg.max_position_embeddings);
    let mut bundle = edgebert_runtime::pack(
        onnx,
        ckpt.tokenizer_json.clone(),
        labels,
        max_len,
        "classification",
    )?;
    bundle.manifest.provenance.created_by = "edgebert-quantize export".into();
    bundle.manifest.provenance.metrics.push(Metric {
        name: "layers".into(),
        value: cfg.num_hidden_layers as f64,
    });
    Ok(bundle)
}

/// The FFN activation.
#[derive(Debug, Clone, Copy)]
enum Activation {
    GeluErf,
    GeluTanh,
    Relu,
}

impl Activation {
    fn parse(name: &str) -> Result<Activation, Error> {
        match name {
            "gelu" => Ok(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => Err(Error::Unsupported(format!("hidden_act `{other}`"))),
        }
    }
}

/// Reads checkpoint weights into graph constants.
struct Weights<'a> {
    ckpt: &'a Checkpoint,
    g: GraphBuilder,
}

impl Weights<'_> {
    fn table(&mut self, name: &str, rows: usize, cols: usize) -> Result<String, Error> {
        let t = self.ckpt.weight(name, &[rows, cols])?;
        Ok(self.g.f32(name, &[rows, cols], &t.data))
    }

    /// `x · Wᵀ + b` for a HF Linear `{name}.weight` `[out, in]`, `{name}.bias` `[out]`.
    fn linear(
        &mut self,
        x: &str,
        name: &str,
        node: &str,
        inp: usize,
        out: usize,
    ) -> Result<String, Error> {
        let wname = format!("{name}.weight");
        let wt = self.ckpt.weight(&wname, &[out, inp])?;
        let mut transposed = vec![0f32; inp * out];
        for o in 0..out {
            for i in 0..inp {
                transposed[i * out + o] = wt.data[o * inp + i];
            }
        }
        let wname = self.g.f32(&wname, &[inp, out], &transposed);
        let bname = format!("{name}.bias");
        let b = self.ckpt.weight(&bname, &[out])?;
        let bname = self.g.f32(&bname, &[out], &b.data);
        let y = self
            .g
            .op("MatMul", &format!("{node}/MatMul"), &[x, &wname], vec![]);
        Ok(self
            .g
            .op("Add", &format!("{node}/Add"), &[&y, &bname], vec![]))
    }

    fn layer_norm(
        &mut self,
        x: &str,
        name: &str,
        node: &str,
        cfg: &BertConfig,
    ) -> Result<String, Error> {
        let h = cfg.hidden_size;
        // Old checkpoints call the LayerNorm parameters gamma/beta.
        let pick = |a: &str, b: &str| {
            let a = format!("{name}.{a}");
            if self.ckpt.weights.contains_key(&a) {
                a
            } else {
                format!("{name}.{b}")
            }
        };
        let (gname, bname) = (pick("weight", "gamma"), pick("bias", "beta"));
        let gamma = self.ckpt.weight(&gname, &[h])?;
        let beta = self.ckpt.weight(&bname, &[h])?;
        let gamma = self.g.f32(&gname, &[h], &gamma.data);
        let beta = self.g.f32(&bname, &[h], &beta.data);
        Ok(self.g.op(
            "LayerNormalization",
            node,
            &[x, &gamma, &beta],
            vec![
                attr_int("axis", -1),
                attr_float("epsilon", cfg.layer_norm_eps as f32),
            ],
        ))
    }

    fn encoder_layer(
        &mut self,
        x: &str,
        mask: &str,
        layer: usize,
        cfg: &BertConfig,
        act: Activation,
    ) -> Result<String, Error> {
        let (h, heads, dh, inter) = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.head_size(),
            cfg.intermediate_size,
        );
        let w = format!("{}encoder.layer.{layer}", self.ckpt.prefix());
        let n = format!("/encoder/layer.{layer}");
        let split = self.g.i64(
            &format!("{n}/attention/split_shape"),
            &[4],
            &[0, 0, heads as i64, dh as i64],
        );
        let merge = self.g.i64(
            &format!("{n}/attention/merge_shape"),
            &[3],
            &[0, 0, h as i64],
        );
        let heads_of = |this: &mut Self, part: &str, perm: &[i64]| -> Result<String, Error> {
            let y = this.linear(
                x,
                &format!("{w}.attention.self.{part}"),
                &format!("{n}/attention/{part}"),
                h,
                h,
            )?;
            let y = this.g.op(
                "Reshape",
                &format!("{n}/attention/{part}/split"),
                &[&y, &split],
                vec![],
            );
            Ok(this.g.op(
                "Transpose",
                &format!("{n}/attention/{part}/heads"),
                &[&y],
                vec![attr_ints("perm", perm)],
            ))
        };
        let q = heads_of(self, "query", &[0, 2, 1, 3])?;
        let k = heads_of(self, "key", &[0, 2, 3, 1])?;
        let v = heads_of(self, "value", &[0, 2, 1, 3])?;
        let g = &mut self.g;
        let scores = g.op(
            "MatMul",
            &format!("{n}/attention/scores"),
            &[&q, &k],
            vec![],
        );
        let scale = g.f32(&format!("{n}/attention/scale"), &[], &[(dh as f32).sqrt()]);
        let scores = g.op(
            "Div",
            &format!("{n}/attention/scaled"),
            &[&scores, &scale],
            vec![],
        );
        let scores = g.op(
            "Add",
            &format!("{n}/attention/masked"),
            &[&scores, mask],
            vec![],
        );
        let probs = g.op(
            "Softmax",
            &format!("{n}/attention/softmax"),
            &[&scores],
            vec![attr_int("axis", -1)],
        );
        let ctx = g.op(
            "MatMul",
            &format!("{n}/attention/context"),
            &[&probs, &v],
            vec![],
        );
        let ctx = g.op(
            "Transpose",
            &format!("{n}/attention/context/merge_heads"),
            &[&ctx],
            vec![attr_ints("perm", &[0, 2, 1, 3])],
        );
        let ctx = g.op(
            "Reshape",
            &format!("{n}/attention/context/merge"),
            &[&ctx, &merge],
            vec![],
        );
        let a = self.linear(
            &ctx,
            &format!("{w}.attention.output.dense"),
            &format!("{n}/attention/output"),
            h,
            h,
        )?;
        let a = self
            .g
            .op("Add", &format!("{n}/attention/residual"), &[&a, x], vec![]);
        let a = self.layer_norm(
            &a,
            &format!("{w}.attention.output.LayerNorm"),
            &format!("{n}/attention/LayerNorm"),
            cfg,
        )?;
        let i = self.linear(
            &a,
            &format!("{w}.intermediate.dense"),
            &format!("{n}/intermediate"),
            h,
            inter,
        )?;
        let i = self.activation(&i, &format!("{n}/intermediate/act"), act);
        let o = self.linear(
            &i,
            &format!("{w}.output.dense"),
            &format!("{n}/output"),
            inter,
            h,
        )?;
        let o = self
            .g
            .op("Add", &format!("{n}/output/residual"), &[&o, &a], vec![]);
        self.layer_norm(
            &o,
            &format!("{w}.output.LayerNorm"),
            &format!("{n}/output/LayerNorm"),
            cfg,
        )
    }

    fn activation(&mut self, x: &str, n: &str, act: Activation) -> String {
        let g = &mut self.g;
        match act {
            Activation::Relu => g.op("Relu", n, &[x], vec![]),
            Activation::GeluErf => {
                // 0.5 · x · (1 + erf(x / √2))
                let sqrt2 = g.f32(&format!("{n}/sqrt2"), &[], &[std::f32::consts::SQRT_2]);
                let one = g.f32(&format!("{n}/one"), &[], &[1.0]);
                let half = g.f32(&format!("{n}/half"), &[], &[0.5]);
                let y = g.op("Div", &format!("{n}/div"), &[x, &sqrt2], vec![]);
                let y = g.op("Erf", &format!("{n}/erf"), &[&y], vec![]);
                let y = g.op("Add", &format!("{n}/add"), &[&y, &one], vec![]);
                let y = g.op("Mul", &format!("{n}/mul"), &[x, &y], vec![]);
                g.op("Mul", &format!("{n}/half_mul"), &[&y, &half], vec![])
            }
            Activation::GeluTanh => {
                // 0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))
                let c = g.f32(
                    &format!("{n}/c"),
                    &[],
                    &[(2.0f32 / std::f32::consts::PI).sqrt()],
                );
                let k = g.f32(&format!("{n}/k"), &[], &[0.044715]);
                let three = g.f32(&format!("{n}/three"), &[], &[3.0]);
                let one = g.f32(&format!("{n}/one"), &[], &[1.0]);
                let half = g.f32(&format!("{n}/half"), &[], &[0.5]);
                let x3 = g.op("Pow", &format!("{n}/cube"), &[x, &three], vec![]);
                let y = g.op("Mul", &format!("{n}/kx3"), &[&x3, &k], vec![]);
                let y = g.op("Add", &format!("{n}/inner"), &[x, &y], vec![]);
                let y = g.op("Mul", &format!("{n}/scaled"), &[&y, &c], vec![]);
                let y = g.op("Tanh", &format!("{n}/tanh"), &[&y], vec![]);
                let y = g.op("Add", &format!("{n}/add"), &[&y, &one], vec![]);
                let y = g.op("Mul", &format!("{n}/mul"), &[x, &y], vec![]);
                g.op("Mul", &format!("{n}/half_mul"), &[&y, &half], vec![])
            }
        }
    }
}
