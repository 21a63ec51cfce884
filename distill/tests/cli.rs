//! `edgebert-distill` end to end on a tiny model: the commands, their files and exit codes.

use std::path::Path;
use std::process::{Command, Output};

use edgebert_tests::{write_checkpoint, TinySpec};

fn distill(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgebert-distill"))
        .args(args)
        .output()
        .expect("run edgebert-distill")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_data(path: &Path) {
    let mut s = String::from("review,stars\n");
    for i in 0..120 {
        let (word, stars) = if i % 2 == 0 {
            ("great", 5)
        } else {
            ("awful", 1)
        };
        s.push_str(&format!(
            "the film was {word} {},{stars}\n",
            ["!", ".", "?"][i % 3]
        ));
    }
    std::fs::write(path, s).unwrap();
}

#[test]
fn teacher_student_evaluate_export_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    write_checkpoint(
        &dir.path().join("base"),
        &TinySpec {
            bare: true,
            layers: 2,
            ..Default::default()
        },
    )
    .unwrap();
    write_data(&dir.path().join("d.csv"));
    let data = [
        "--data",
        &p("d.csv"),
        "--text-column",
        "review",
        "--label-column",
        "stars",
        "--label-map",
        "5=positive",
        "--label-map",
        "1=negative",
    ];
    let quick = [
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--lr",
        "1e-3",
        "--max-len",
        "32",
    ];
    let run = |cmd: &str, model: &str, out: &str, extra: &[&str]| {
        let mut a = vec![cmd, model, "-o", out];
        a.extend(data);
        a.extend(quick);
        a.extend(extra);
        distill(&a)
    };

    let o = run("finetune-teacher", &p("base"), &p("teacher"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("dev "));
    let o = run(
        "student",
        &p("teacher"),
        &p("student"),
        &["--layers", "1", "--gamma", "0.1"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let config = std::fs::read_to_string(dir.path().join("student/config.json")).unwrap();
    assert!(config.contains("\"num_hidden_layers\": 1"), "{config}");

    let o = distill(&["export", &p("student"), "-o", &p("student.ebm")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ebm = p("student.ebm");
    let mut a = vec!["evaluate", ebm.as_str(), "--json", "--split", "test"];
    a.extend(data);
    let o = distill(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["labels"], serde_json::json!(["negative", "positive"]));
    assert!(v["scores"]["examples"].as_u64().unwrap() > 0);

    let o = distill(&[
        "split",
        "--data",
        &p("d.csv"),
        "--text-column",
        "review",
        "--label-column",
        "stars",
        "-o",
        &p("splits"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let test = std::fs::read_to_string(dir.path().join("splits/test.csv")).unwrap();
    assert!(test.starts_with("text,label\n"), "{test}");

    // Errors: exit codes and messages.
    let o = run("finetune-teacher", &p("base"), &p("teacher"), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    let o = run("student", &p("teacher"), &p("s2"), &["--layers", "0,9"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("names layer 9"), "{}", stderr(&o));
    std::fs::write(dir.path().join("one.csv"), "review,stars\ngood,5\nfine,5\n").unwrap();
    let o = distill(&[
        "finetune-teacher",
        &p("base"),
        "-o",
        &p("t3"),
        "--data",
        &p("one.csv"),
        "--text-column",
        "review",
        "--label-column",
        "stars",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("one class"), "{}", stderr(&o));
    let o = run("finetune-teacher", &p("nothing-here"), &p("t4"), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));
}
