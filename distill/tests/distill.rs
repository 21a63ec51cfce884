//! Distillation on tiny models built here (no network, CPU, seconds): the student's init, the
//! losses' gradients, training that learns, exact resume, agreement with the exported ONNX run by
//! tract, and bad input.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use edgebert_distill::data::DataSpec;
use edgebert_distill::jobs::{self, DeviceChoice, TrainArgs};
use edgebert_distill::loss::{cosine, cross_entropy, kl_t2};
use edgebert_distill::model::{Batch, Bert};
use edgebert_distill::train::{cosine_targets, Settings};
use edgebert_distill::{DistillError, LossWeights};
use edgebert_runtime::text::TextEncoder;
use edgebert_runtime::{Classifier, ClassifierOptions};
use edgebert_tests::{write_checkpoint, TinySpec};

const POSITIVE: &[&str] = &["good", "great", "fun", "love"];
const NEGATIVE: &[&str] = &["bad", "awful", "boring", "hate"];
const FILLER: &[&str] = &[
    "the", "movie", "film", "plot", "acting", "story", "was", "is", "very", "it", "this", "and",
];

/// A separable sentiment task in the tiny vocabulary: a review's label is the polarity of its one
/// sentiment word; movies (groups) hold several reviews.
fn write_data(path: &Path, n: usize, seed: u64) {
    let mut rng = edgebert_tests::Rng::new(seed);
    let mut pick = |words: &[&str]| {
        words[(rng.uniform() * words.len() as f32) as usize % words.len()].to_string()
    };
    let mut out = String::from("text,category,movie\n");
    for i in 0..n {
        let positive = i % 2 == 0;
        let mut words: Vec<String> = (0..2 + i % 7).map(|_| pick(FILLER)).collect();
        let at = i % words.len();
        words.insert(at, pick(if positive { POSITIVE } else { NEGATIVE }));
        out.push_str(&format!(
            "{},{},m{}\n",
            words.join(" "),
            if positive { "fresh" } else { "rotten" },
            i % 23
        ));
    }
    std::fs::write(path, out).unwrap();
}

fn spec(data: &Path) -> DataSpec {
    let mut s = DataSpec::new(data);
    s.label_column = "category".into();
    s.group_by = Some("movie".into());
    s.rename = vec![
        ("fresh".into(), "positive".into()),
        ("rotten".into(), "negative".into()),
    ];
    s
}

fn settings() -> Settings {
    Settings {
        epochs: 3,
        batch_size: 16,
        lr: 2e-3,
        warmup: 0.1,
        patience: 3,
        checkpoint_every: 5,
        seed: 3,
        max_len: 32,
        log_every: 2,
        ..Default::default()
    }
}

fn teacher_spec(layers: usize, bare: bool) -> TinySpec {
    TinySpec {
        layers,
        bare,
        max_positions: 64,
        ..Default::default()
    }
}

fn train_args(data: &Path, out: PathBuf) -> TrainArgs {
    TrainArgs {
        data: spec(data),
        settings: settings(),
        device: DeviceChoice::Cpu,
        out,
        resume: false,
        force: false,
        stop_after: None,
    }
}

fn tokens(tokenizer_json: &[u8], texts: &[&str]) -> Vec<(Vec<u32>, Vec<u32>)> {
    let enc = TextEncoder::from_json(tokenizer_json, 64).unwrap();
    texts
        .iter()
        .map(|t| {
            let e = enc.encode(t).unwrap();
            (
                e.ids.iter().map(|&i| i as u32).collect(),
                e.type_ids.iter().map(|&i| i as u32).collect(),
            )
        })
        .collect()
}

fn batch(rows: &[(Vec<u32>, Vec<u32>)]) -> Batch {
    let r: Vec<(&[u32], &[u32])> = rows
        .iter()
        .map(|(a, b)| (a.as_slice(), b.as_slice()))
        .collect();
    Batch::new(&r, 0, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn the_student_copies_exactly_the_mapped_tensors() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &teacher_spec(4, false)).unwrap();
    let (teacher, _) = Bert::open(dir.path(), &Device::Cpu).unwrap();
    let student = teacher.student(&[0, 2]).unwrap();
    assert_eq!(student.config.num_hidden_layers, 2);
    let names: Vec<&str> = student.vars().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 5 + 2 * 16 + 4, "{names:?}");
    for (name, var) in student.vars() {
        let source = match name.strip_prefix("bert.encoder.layer.") {
            Some(rest) => {
                let (j, tail) = rest.split_once('.').unwrap();
                let t = [0, 2][j.parse::<usize>().unwrap()];
                format!("bert.encoder.layer.{t}.{tail}")
            }
            None => name.to_string(),
        };
        assert_eq!(
            values(var.as_tensor()),
            values(teacher.tensor(&source).unwrap()),
            "{name} ← {source}"
        );
    }
    // A copy, not a view: training the student leaves the teacher alone.
    let (_, v) = student.vars().next().unwrap();
    v.set(&v.as_tensor().zeros_like().unwrap()).unwrap();
    let name = student.vars().next().unwrap().0;
    assert!(values(teacher.tensor(name).unwrap())
        .iter()
        .any(|&x| x != 0.0));
    // Bad layer maps.
    assert!(matches!(
        teacher.student(&[0, 4]),
        Err(DistillError::NoSuchLayer {
            layer: 4,
            layers: 4
        })
    ));
    assert!(matches!(
        teacher.student(&[2, 1]),
        Err(DistillError::BadLayerMap(_))
    ));
    assert!(matches!(
        teacher.student(&[]),
        Err(DistillError::BadLayerMap(_))
    ));
    assert_eq!(cosine_targets(&[0, 2], 4), [1, 3]);
}

#[test]
fn candle_forward_agrees_with_the_exported_onnx_run_by_tract() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("teacher");
    write_checkpoint(&ckpt, &teacher_spec(4, false)).unwrap();
    let (teacher, tokenizer_json) = Bert::open(&ckpt, &Device::Cpu).unwrap();
    let student = teacher.student(&[1, 3]).unwrap();
    let student_dir = dir.path().join("student");
    student.save(&student_dir, &tokenizer_json).unwrap();
    let ebm = dir.path().join("student.ebm");
    edgebert_quantize::export_to_file(&student_dir, &ebm, 64).unwrap();
    let mut classifier = Classifier::open(&ebm, ClassifierOptions::default()).unwrap();
    let texts = [
        "good",
        "the movie was very boring and the acting awful",
        "i love it !",
    ];
    let toks = tokens(&tokenizer_json, &texts);
    // All at once (padded to the longest) and one by one.
    let padded: Vec<Vec<f32>> = student
        .forward(&batch(&toks), None)
        .unwrap()
        .logits
        .to_vec2()
        .unwrap();
    for (i, text) in texts.iter().enumerate() {
        let alone: Vec<Vec<f32>> = student
            .forward(&batch(&toks[i..=i]), None)
            .unwrap()
            .logits
            .to_vec2()
            .unwrap();
        let tract = classifier.classify(text).unwrap().logits;
        for k in 0..2 {
            assert!(
                (alone[0][k] - tract[k]).abs() < 1e-4,
                "{text}: candle {:?} tract {tract:?}",
                alone[0]
            );
            assert!(
                (padded[i][k] - tract[k]).abs() < 1e-4,
                "{text} padded: {:?} vs {tract:?}",
                padded[i]
            );
        }
    }
    // Reloaded from disk: the same network.
    let (again, _) = Bert::open(&student_dir, &Device::Cpu).unwrap();
    assert_eq!(
        values(&again.forward(&batch(&toks), None).unwrap().logits),
        values(&student.forward(&batch(&toks), None).unwrap().logits)
    );
}

#[test]
fn every_trainable_tensor_gets_a_gradient_from_each_loss() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &teacher_spec(2, false)).unwrap();
    let (teacher, tokenizer_json) = Bert::open(dir.path(), &Device::Cpu).unwrap();
    let student = teacher.student(&[1]).unwrap();
    let toks = tokens(
        &tokenizer_json,
        &["a good film", "boring", "this plot is very bad !"],
    );
    let b = batch(&toks);
    let labels = Tensor::new(&[1u32, 0, 0], &Device::Cpu).unwrap();
    let t_out = teacher.forward(&b, None).unwrap();
    let mut rng = edgebert_distill::rng::Rng::new(1);
    let out = student.forward(&b, Some(&mut rng)).unwrap();
    let terms = [
        ("ce", cross_entropy(&out.logits, &labels).unwrap()),
        (
            "kl",
            kl_t2(&out.logits, &t_out.logits.detach(), 2.0).unwrap(),
        ),
        (
            "cos",
            cosine(&out.hidden[1], &t_out.hidden[2].detach(), &b.mask).unwrap(),
        ),
    ];
    for (what, loss) in terms {
        let grads = loss.backward().unwrap();
        for (name, var) in student.vars() {
            // The cosine term is on hidden states: the pooler and classifier play no part in it.
            if what == "cos" && (name.starts_with("classifier") || name.contains("pooler")) {
                continue;
            }
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{what}: no gradient for {name}"));
            let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{what}: gradient of {name} is {norm}"
            );
        }
        // The teacher is frozen: no gradient reaches it.
        for (name, var) in teacher.vars() {
            assert!(
                grads.get(var.as_tensor()).is_none(),
                "{what}: teacher {name} got a gradient"
            );
        }
    }
}

#[test]
fn fine_tuning_then_distillation_learn_a_separable_task() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    write_checkpoint(&base, &teacher_spec(4, true)).unwrap();
    let data = dir.path().join("reviews.csv");
    write_data(&data, 320, 5);
    let teacher_dir = dir.path().join("teacher");
    let mut args = train_args(&data, teacher_dir.clone());
    args.settings.epochs = 6;
    let t = jobs::finetune_teacher(&base, None, args).unwrap();
    let t_dev = t.dev.as_ref().unwrap().accuracy;
    assert!(t_dev >= 0.9, "teacher dev accuracy {t_dev}");
    let records =
        edgebert_distill::train::read_metrics(&teacher_dir.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = records
        .iter()
        .filter_map(|r| match r {
            edgebert_distill::train::MetricRecord::Step { loss, .. } => Some(*loss),
            _ => None,
        })
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (first, last) = (mean(&losses[..4]), mean(&losses[losses.len() - 4..]));
    assert!(last < first * 0.5, "loss did not fall: {losses:?}");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "report.md",
        "training.png",
        "training.svg",
    ] {
        assert!(teacher_dir.join(f).is_file(), "{f}");
    }
    assert!(
        !teacher_dir.join("state").exists(),
        "checkpoints are cleaned up"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(teacher_dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["id2label"]["1"], "positive");
    assert_eq!(config["label2id"]["negative"], 0);

    // The student starts from layers 0 and 2 and learns from the teacher's soft targets.
    let student_dir = dir.path().join("student");
    let loss = LossWeights {
        gamma: 0.5,
        ..Default::default()
    };
    let s = jobs::distil_student(
        &teacher_dir,
        None,
        loss,
        None,
        train_args(&data, student_dir.clone()),
    )
    .unwrap();
    assert!(
        s.dev.as_ref().unwrap().accuracy >= 0.9,
        "student dev {:?}",
        s.dev
    );
    assert!(s.teacher_test.is_some());
    assert!(student_dir.join("teacher-logits.bin").is_file());
    let report = std::fs::read_to_string(student_dir.join("report.md")).unwrap();
    assert!(
        report.contains("| teacher | test |") && report.contains("[0, 2]"),
        "{report}"
    );

    // Evaluated through tract (bundle) and candle (checkpoint): the same test accuracy.
    let ebm = dir.path().join("student.ebm");
    edgebert_quantize::export_to_file(&student_dir, &ebm, 32).unwrap();
    let model = |path: &Path| jobs::EvalModel {
        path: path.to_path_buf(),
        tokenizer: None,
        labels: None,
        max_len: 32,
        long: None,
    };
    let (_, by_tract) = jobs::evaluate(
        &model(&ebm),
        &spec(&data),
        jobs::Which::Test,
        DeviceChoice::Cpu,
    )
    .unwrap();
    let (_, by_candle) = jobs::evaluate(
        &model(&student_dir),
        &spec(&data),
        jobs::Which::Test,
        DeviceChoice::Cpu,
    )
    .unwrap();
    assert_eq!(by_tract.confusion, by_candle.confusion);
    assert_eq!(by_candle, s.test.clone().unwrap());

    // A finished run is not overwritten without --force.
    let again = jobs::distil_student(
        &teacher_dir,
        None,
        loss,
        None,
        train_args(&data, student_dir.clone()),
    );
    assert!(
        matches!(again, Err(DistillError::Finished { .. })),
        "{again:?}"
    );

    // With a transfer set (its labels dropped), its teacher logits in two shards, merged: more
    // steps per epoch, and the student still learns the task.
    let extra = dir.path().join("extra.csv");
    write_data(&extra, 160, 9);
    let texts: Vec<String> = std::fs::read_to_string(&extra)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    let transfer_texts = dir.path().join("transfer.txt");
    std::fs::write(&transfer_texts, texts.join("\n")).unwrap();
    let parts: Vec<PathBuf> = (0..2)
        .map(|k| {
            let out = dir.path().join(format!("part{k}.jsonl"));
            let shard = edgebert_distill::transfer::Shard { index: k, count: 2 };
            edgebert_distill::transfer::teacher_logits(
                &teacher_dir,
                &transfer_texts,
                shard,
                32,
                16,
                &Device::Cpu,
                &out,
            )
            .unwrap();
            out
        })
        .collect();
    let merged = dir.path().join("transfer-logits.jsonl");
    edgebert_distill::transfer::merge(&parts, &merged).unwrap();
    let transfer = |logits: &Path| jobs::TransferArgs {
        texts: transfer_texts.clone(),
        logits: Some(logits.to_path_buf()),
    };
    let with = jobs::distil_student(
        &teacher_dir,
        None,
        loss,
        Some(transfer(&merged)),
        train_args(&data, dir.path().join("student-transfer")),
    )
    .unwrap();
    let per_epoch = |o: &edgebert_distill::train::Outcome| o.steps / o.epochs_run;
    assert!(
        per_epoch(&with) > per_epoch(&s),
        "{} vs {}",
        with.steps,
        s.steps
    );
    assert!(with.dev.as_ref().unwrap().accuracy >= 0.9, "{:?}", with.dev);
    // One shard alone is not a transfer set.
    let partial = jobs::distil_student(
        &teacher_dir,
        None,
        loss,
        Some(transfer(&parts[0])),
        train_args(&data, dir.path().join("student-partial")),
    );
    assert!(
        matches!(&partial, Err(DistillError::BadData { message, .. }) if message.contains("merge")),
        "{partial:?}"
    );
}

#[test]
fn a_run_killed_and_resumed_ends_with_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    write_checkpoint(&base, &teacher_spec(2, true)).unwrap();
    let data = dir.path().join("reviews.csv");
    write_data(&data, 160, 9);
    let straight = dir.path().join("straight");
    jobs::finetune_teacher(&base, None, train_args(&data, straight.clone())).unwrap();

    let resumed = dir.path().join("resumed");
    let mut args = train_args(&data, resumed.clone());
    args.stop_after = Some(13); // checkpoints at 5 and 10 (and the epoch end at 8): 3 steps lost
    let cut = jobs::finetune_teacher(&base, None, args.clone()).unwrap();
    assert!(!cut.finished);
    // Without --resume an unfinished run is not silently restarted.
    let err = jobs::finetune_teacher(&base, None, train_args(&data, resumed.clone())).unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
    args.stop_after = None;
    args.resume = true;
    jobs::finetune_teacher(&base, None, args).unwrap();
    assert_eq!(
        std::fs::read(straight.join("model.safetensors")).unwrap(),
        std::fs::read(resumed.join("model.safetensors")).unwrap()
    );
    let lines = |d: &Path| {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("examples_per_s");
                v
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        lines(&straight),
        lines(&resumed),
        "the log has no gaps or repeats"
    );

    // Resuming someone else's run (other data) is refused.
    let other = dir.path().join("other.csv");
    write_data(&other, 160, 10);
    let mut args = train_args(&other, straight.clone());
    args.force = false;
    let mut partial = train_args(&other, dir.path().join("p"));
    partial.stop_after = Some(3);
    jobs::finetune_teacher(&base, None, partial).unwrap();
    let mut wrong = train_args(&data, dir.path().join("p"));
    wrong.resume = true;
    let err = jobs::finetune_teacher(&base, None, wrong).unwrap_err();
    assert!(
        matches!(err, DistillError::Resume { .. }) && err.to_string().contains("different"),
        "{err}"
    );
}

#[test]
fn bad_checkpoints_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.csv");
    write_data(&data, 60, 1);
    // A missing tensor: named, with its expected shape.
    let ckpt = dir.path().join("missing");
    write_checkpoint(&ckpt, &teacher_spec(2, true)).unwrap();
    let st = std::fs::read(ckpt.join("model.safetensors")).unwrap();
    let weights = edgebert_quantize::checkpoint::read_safetensors(&st).unwrap();
    let kept: Vec<(String, Vec<usize>, Vec<u8>)> = weights
        .iter()
        .filter(|(n, _)| n.as_str() != "encoder.layer.1.intermediate.dense.weight")
        .map(|(n, w)| {
            (
                n.clone(),
                w.shape.clone(),
                w.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = kept
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    std::fs::write(
        ckpt.join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    let err =
        jobs::finetune_teacher(&ckpt, None, train_args(&data, dir.path().join("o1"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "missing tensor `bert.encoder.layer.1.intermediate.dense.weight` (expected shape [64, 32])"
    );
    assert_eq!(err.exit_code(), 2);
    // A tokenizer that can emit ids beyond the embedding table.
    let small = dir.path().join("small");
    write_checkpoint(
        &small,
        &TinySpec {
            vocab_rows: Some(40),
            bare: true,
            ..Default::default()
        },
    )
    .unwrap();
    let err =
        jobs::finetune_teacher(&small, None, train_args(&data, dir.path().join("o2"))).unwrap_err();
    assert!(
        matches!(err, DistillError::TokenizerMismatch { rows: 40, .. }),
        "{err}"
    );
    // No config.json.
    let err = jobs::finetune_teacher(
        &dir.path().join("nowhere"),
        None,
        train_args(&data, dir.path().join("o3")),
    )
    .unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
    // Nothing was written for any of them.
    for o in ["o1", "o2", "o3"] {
        assert!(!dir.path().join(o).join("model.safetensors").exists());
    }
}
