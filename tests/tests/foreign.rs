//! Graphs in the HF form but not from our exporter: other dim names, fixed batch, extra outputs,
//! no `token_type_ids`, inputs in another order. They load and give the same logits.

use edgebert_quantize::onnx::pb::tensor_shape_proto::dimension::Value as DimValue;
use edgebert_quantize::onnx::pb::type_proto::Value as TypeValue;
use edgebert_quantize::onnx::pb::ModelProto;
use edgebert_runtime::{Classifier, ClassifierOptions};
use edgebert_tests::TinyModel;

const TEXTS: &[&str] = &[
    "good movie",
    "the plot was boring and awful , i hate it",
    "fun",
];

fn logits(c: &mut Classifier) -> Vec<Vec<f32>> {
    TEXTS
        .iter()
        .map(|t| c.classify(t).unwrap().logits)
        .collect()
}

fn load(m: &TinyModel, name: &str, edit: impl FnOnce(&mut ModelProto)) -> Classifier {
    let onnx = m.edited_onnx(name, edit);
    Classifier::from_parts(
        std::fs::read(onnx).unwrap(),
        std::fs::read(m.tokenizer()).unwrap(),
        vec!["negative".into(), "positive".into()],
        64,
        ClassifierOptions {
            threads: 1,
            batch_size: 2,
            ..ClassifierOptions::default()
        },
    )
    .unwrap()
}

fn close(a: &[Vec<f32>], b: &[Vec<f32>]) {
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        assert!((x - y).abs() < 1e-5, "{x} vs {y}");
    }
}

#[test]
fn other_dim_names_extra_outputs_and_reordered_inputs() {
    let m = TinyModel::new();
    let mut ours = Classifier::open(&m.bundle, ClassifierOptions::default()).unwrap();
    let want = logits(&mut ours);
    let mut theirs = load(&m, "optimum-style.onnx", |model| {
        let g = model.graph.as_mut().unwrap();
        for vi in g.input.iter_mut().chain(g.output.iter_mut()) {
            if let Some(TypeValue::TensorType(t)) =
                vi.r#type.as_mut().and_then(|t| t.value.as_mut())
            {
                for d in &mut t.shape.as_mut().unwrap().dim {
                    if let Some(DimValue::DimParam(p)) = &mut d.value {
                        *p = if p == "batch" {
                            "batch_size".into()
                        } else {
                            "sequence_length".into()
                        };
                    }
                }
            }
        }
        g.input.reverse();
        // A second output, as exporters that also return hidden states write it.
        let mut extra = g.output[0].clone();
        extra.name = "/pooler/tanh".into();
        g.output.insert(0, extra);
    });
    close(&logits(&mut theirs), &want);
}

#[test]
fn a_graph_without_token_type_ids() {
    let m = TinyModel::new();
    let mut ours = Classifier::open(&m.bundle, ClassifierOptions::default()).unwrap();
    let want = logits(&mut ours);
    let mut theirs = load(&m, "no-token-types.onnx", |model| {
        let g = model.graph.as_mut().unwrap();
        g.input.retain(|i| i.name != "token_type_ids");
        // Every token is segment 0: add row 0 of the token-type table to all positions.
        let gather = g
            .node
            .iter_mut()
            .find(|n| n.name == "/embeddings/token_type")
            .unwrap();
        gather.input[1] = "/pooler/first_index".into();
    });
    close(&logits(&mut theirs), &want);
}
