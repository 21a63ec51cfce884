//! The shipped default model, `models/sentiment-en.ebm`: it loads, its manifest carries the
//! metrics and provenance measured when it was built, unambiguous reviews get the obvious label,
//! and the `edgebert` binary uses it when no model is given.

use std::path::PathBuf;
use std::process::Command;

use edgebert_runtime::{Bundle, Classifier, ClassifierOptions, Quantization};
use edgebert_tests::{edgebert_ok, profiled_operators, workspace_bin};

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/sentiment-en.ebm")
}

const OBVIOUS: &[(&str, &str)] = &[
    (
        "a wonderful, moving film with brilliant performances",
        "positive",
    ),
    ("one of the best movies of the year", "positive"),
    ("an absolute delight from start to finish", "positive"),
    ("a dull, tedious mess with terrible acting", "negative"),
    ("boring, predictable and far too long", "negative"),
    ("the worst film i have seen in years", "negative"),
];

#[test]
fn the_shipped_model_carries_its_numbers_and_gets_the_obvious_right() {
    let path = shipped();
    let bytes = std::fs::metadata(&path).unwrap().len();
    assert!(
        bytes <= 18_000_000,
        "{bytes} bytes: the bundle must stay ≤ 18 MB"
    );
    let bundle = Bundle::read(&path).unwrap();
    let m = &bundle.manifest;
    assert_eq!(m.labels, ["negative", "positive"]);
    assert_eq!(m.quantization, Quantization::DynamicInt8);
    let p = &m.provenance;
    assert!(
        p.teacher
            .as_deref()
            .unwrap_or("")
            .contains("all-MiniLM-L6-v2"),
        "{p:?}"
    );
    assert!(
        p.data.as_deref().unwrap_or("").contains("Rotten Tomatoes"),
        "{p:?}"
    );
    let metric = |name: &str| p.metrics.iter().find(|x| x.name == name).map(|x| x.value);
    for name in [
        "test_accuracy",
        "test_accuracy_student_f32",
        "test_accuracy_teacher_f32",
        "int8_accuracy",
        "f32_accuracy",
    ] {
        let v = metric(name).unwrap_or_else(|| panic!("no metric {name} in {:?}", p.metrics));
        assert!((0.5..=1.0).contains(&v), "{name} = {v}");
    }
    let mut c = Classifier::from_bundle(&bundle, ClassifierOptions::default()).unwrap();
    for (text, want) in OBVIOUS {
        let got = c.classify(text).unwrap();
        assert_eq!(got.label, *want, "{text}: {got:?}");
    }
}

#[test]
fn edgebert_classify_needs_no_model_file() {
    let out = edgebert_ok(&[], &["classify", "--json", OBVIOUS[0].0, OBVIOUS[3].0]);
    let labels: Vec<String> = String::from_utf8_lossy(&out)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["label"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(labels, ["positive", "negative"]);
    let info = edgebert_ok(&[], &["info"]);
    assert!(String::from_utf8_lossy(&info).contains("Rotten Tomatoes"));
}

#[test]
fn the_built_in_model_is_the_shipped_model_compiled() {
    let onnx = Bundle::read(shipped()).unwrap();
    let built_in = std::fs::read(shipped().with_file_name("sentiment-en.compiled.ebm")).unwrap();
    // Classifier::compile also checks the compiled graph's answers against the ONNX graph's.
    let fresh = Classifier::compile(&onnx, ClassifierOptions::default())
        .unwrap()
        .to_bytes();
    assert!(
        fresh == built_in,
        "models/sentiment-en.compiled.ebm is not `edgebert compile models/sentiment-en.ebm` \
         with this build's tract: run it again"
    );
    // And that is what the binary embeds.
    let info = Command::new(workspace_bin("edgebert"))
        .args(["info", "--json"])
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["graph"], "compiled");
    assert_eq!(info["bytes"]["total"], built_in.len());
    // Once: a copy per use of a constant `include_bytes!` once put it in the binary twice.
    let binary = std::fs::read(workspace_bin("edgebert")).unwrap();
    let probe = &built_in[built_in.len() / 2..built_in.len() / 2 + 256];
    let copies = binary.windows(probe.len()).filter(|w| *w == probe).count();
    assert_eq!(
        copies, 1,
        "the binary holds the built-in model {copies} times"
    );
}

/// The built-in model's pages can be handed back once it is loaded: the bytes read the same
/// afterwards, and a second classifier loads from them.
#[test]
fn the_built_in_model_reads_the_same_after_its_pages_are_released() {
    let bytes = edgebert_runtime::embedded_model().expect("tests build the runtime with its model");
    let before = bytes.to_vec();
    let mut first = Classifier::from_bundle_bytes(bytes, ClassifierOptions::default()).unwrap();
    edgebert_runtime::release_embedded_model();
    assert!(bytes == &before[..]);
    let mut second = Classifier::from_bundle_bytes(bytes, ClassifierOptions::default()).unwrap();
    let text = "a gorgeous, moving film";
    assert_eq!(
        first.classify(text).unwrap().logits,
        second.classify(text).unwrap().logits
    );
}

/// The int8 tile (tract's 8×8 or 16×16 AVX-512 VNNI kernel, `cpu::choose_int8_tile`) changes
/// the speed, never an answer: the built-in model with each tile forced gives the same
/// probabilities to the bit, at lengths in four buckets, and each plan really uses the tile it
/// was given. On a CPU without AVX-512 VNNI the setting is inert and only the answers are
/// compared.
#[test]
fn the_int8_tile_changes_no_answer() {
    let texts = [
        "a fine film",
        "a gorgeous, moving film whose quiet second half earns every one of its tears",
        &"the plot wanders, the jokes land late and the actors seem unsure why they came. "
            .repeat(3),
        &"a slow, careful and finally devastating portrait of a family coming apart. ".repeat(6),
    ];
    // With tract's products (the tile is theirs; ours replace them on AVX-512 VNNI).
    let run = |units: &str, args: &[&str]| {
        edgebert_ok(
            &[("TRACT_AVX512_FMA_UNITS", units), ("EDGEBERT_QGEMM", "off")],
            args,
        )
    };
    let mut classify = vec!["classify", "--json"];
    classify.extend(texts.iter().copied());
    let narrow = run("1", &classify);
    let wide = run("2", &classify);
    assert_eq!(
        String::from_utf8_lossy(&narrow),
        String::from_utf8_lossy(&wide)
    );
    let answers = String::from_utf8_lossy(&narrow).lines().count();
    assert_eq!(answers, texts.len());

    let board: serde_json::Value = serde_json::from_slice(&run("2", &["board", "--json"])).unwrap();
    let vnni = board["kernels"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f[0] == "avx512vnni" && f[1] == true);
    if !vnni {
        assert!(board["kernels"]["int8_tile"].is_null(), "{board}");
        edgebert_tests::skipped("tract's int8 tiles: no AVX-512 VNNI on this CPU");
        return;
    }
    for (units, kernel, wide) in [
        ("1", "avx512vnni_mmm_i32_8x8", false),
        ("2", "avx512vnni_mmm_i32_16x16", true),
    ] {
        let board: serde_json::Value =
            serde_json::from_slice(&run(units, &["board", "--json"])).unwrap();
        assert_eq!(board["kernels"]["int8_tile"]["wide"], wide, "{board}");
        let envs = [("TRACT_AVX512_FMA_UNITS", units), ("EDGEBERT_QGEMM", "off")];
        for ops in profiled_operators(&envs, None, "16,64") {
            assert!(
                ops.contains(&format!("OptMatMul ({kernel})")),
                "TRACT_AVX512_FMA_UNITS={units}: {ops:?}"
            );
        }
    }
}

/// The runtime's int8 kernel (`QuantLinear`, on x86_64 CPUs with AVX2 or AVX-512 VNNI) against tract's products
/// (`EDGEBERT_QGEMM=off`), on one thread and two: the same answers to the printed digit (the
/// engine's tests compare the logits' bits), and each plan's profile names the products that ran.
#[test]
fn our_int8_kernel_changes_no_answer() {
    let long =
        "a slow, careful and finally devastating portrait of a family coming apart. ".repeat(6);
    let texts = [
        "a fine film",
        "the plot wanders and the jokes land late",
        &long,
    ];
    let run = |qgemm: &str, args: &[&str]| edgebert_ok(&[("EDGEBERT_QGEMM", qgemm)], args);
    let mut answers = Vec::new();
    for qgemm in ["off", "on"] {
        for threads in ["1", "2"] {
            let mut args = vec!["--threads", threads, "classify", "--json"];
            args.extend(texts.iter().copied());
            answers.push(String::from_utf8_lossy(&run(qgemm, &args)).into_owned());
        }
    }
    assert_eq!(answers[0].lines().count(), texts.len());
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:#?}");

    let board: serde_json::Value =
        serde_json::from_slice(&run("on", &["board", "--json"])).unwrap();
    // x86_64 with AVX2 or AVX-512 VNNI: the board names our kernel; elsewhere tract's.
    let kernel = board["kernels"]["int8_kernel"].as_str().unwrap();
    let ours_here = kernel.starts_with("edgebert");
    if !ours_here {
        edgebert_tests::skipped(&format!("our int8 kernel: this CPU runs {kernel}"));
    }
    for qgemm in ["off", "on"] {
        for ops in profiled_operators(&[("EDGEBERT_QGEMM", qgemm)], None, "16,64") {
            let ours = ops.iter().filter(|o| o.starts_with("QuantLinear")).count();
            let expected = if qgemm == "on" && ours_here { 2 } else { 0 };
            assert_eq!(ours, expected, "EDGEBERT_QGEMM={qgemm}: {ops:?}");
            if expected > 0 {
                assert!(
                    !ops.iter().any(|o| o.contains("_i32_")),
                    "tract's int8 products left: {ops:?}"
                );
            }
        }
    }
}
