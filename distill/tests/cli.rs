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

#[test]
fn teacher_logits_in_shards_merge_into_what_one_pass_gives() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    write_checkpoint(&dir.path().join("teacher"), &TinySpec::default()).unwrap();
    let mut texts: Vec<String> = (0..23)
        .map(|i| {
            format!(
                "the film was {} and {} !",
                ["great", "awful", "fun"][i % 3],
                "very ".repeat(i % 5)
            )
        })
        .collect();
    texts[4] = "   ".into(); // blank: no logits, in every shard alike
    std::fs::write(p("texts.txt"), texts.join("\n") + "\n").unwrap();
    let logits = |shard: &str, out: &str| {
        distill(&[
            "teacher-logits",
            &p("teacher"),
            "--texts",
            &p("texts.txt"),
            "--shard",
            shard,
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "-o",
            &p(out),
        ])
    };
    let whole = logits("0/1", "whole.jsonl");
    assert!(whole.status.success(), "{}", stderr(&whole));
    for k in 0..3 {
        let o = logits(&format!("{k}/3"), &format!("part{k}.jsonl"));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let merge = |parts: &[&str], out: &str| {
        let mut args = vec!["merge-logits".to_string()];
        args.extend(parts.iter().map(|s| p(s)));
        args.extend(["-o".into(), p(out)]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        distill(&args)
    };
    let o = merge(
        &["part2.jsonl", "part0.jsonl", "part1.jsonl"],
        "merged.jsonl",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let read = |n: &str| edgebert_distill::transfer::read(Path::new(&p(n))).unwrap();
    let (one, merged) = (read("whole.jsonl"), read("merged.jsonl"));
    let as_merged = edgebert_distill::transfer::Header {
        shards: 3,
        shard: None,
        ..one.header.clone()
    };
    assert_eq!(
        as_merged, merged.header,
        "the same teacher, texts and settings"
    );
    assert_eq!(one.rows.len(), 23);
    assert!(one.rows[4].logits.is_none() && one.rows[5].logits.is_some());
    for (a, b) in one.rows.iter().zip(&merged.rows) {
        assert_eq!(a.line, b.line);
        match (&a.logits, &b.logits) {
            (Some(a), Some(b)) => assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)),
            (a, b) => assert_eq!(a, b),
        }
    }

    // A shard missing, one given twice, one of other texts, a truncated shard: refused, no file.
    let missing = merge(&["part0.jsonl", "part1.jsonl"], "bad.jsonl");
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("shard 2/3 is missing"),
        "{}",
        stderr(&missing)
    );
    let twice = merge(&["part0.jsonl", "part1.jsonl", "part1.jsonl"], "bad.jsonl");
    assert_eq!(twice.status.code(), Some(2));
    assert!(stderr(&twice).contains("is also in"), "{}", stderr(&twice));
    std::fs::write(p("other.txt"), "good\nbad\nfun\n").unwrap();
    let o = distill(&[
        "teacher-logits",
        &p("teacher"),
        "--texts",
        &p("other.txt"),
        "--shard",
        "2/3",
        "--device",
        "cpu",
        "-o",
        &p("other2.jsonl"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let other = merge(&["part0.jsonl", "part1.jsonl", "other2.jsonl"], "bad.jsonl");
    assert_eq!(other.status.code(), Some(2));
    assert!(
        stderr(&other).contains("not of the same pass"),
        "{}",
        stderr(&other)
    );
    let part1 = std::fs::read_to_string(p("part1.jsonl")).unwrap();
    let cut: Vec<&str> = part1.lines().collect();
    std::fs::write(p("cut1.jsonl"), cut[..cut.len() - 1].join("\n")).unwrap();
    let truncated = merge(&["part0.jsonl", "cut1.jsonl", "part2.jsonl"], "bad.jsonl");
    assert_eq!(truncated.status.code(), Some(2));
    assert!(
        stderr(&truncated).contains("truncated"),
        "{}",
        stderr(&truncated)
    );
    assert!(!dir.path().join("bad.jsonl").exists());
    // Never over an input.
    let over = merge(
        &["part0.jsonl", "part1.jsonl", "part2.jsonl"],
        "part0.jsonl",
    );
    assert_ne!(over.status.code(), Some(0));
    assert_eq!(read("part0.jsonl").rows.len(), 8);
    let bad_shard = logits("3/3", "x.jsonl");
    assert_eq!(bad_shard.status.code(), Some(1));
}

#[test]
fn emails_become_a_csv_split_by_date_within_each_folder() {
    let dir = tempfile::tempdir().unwrap();
    let mail = |folder: &str, name: &str, day: usize, subject: &str| {
        let d = dir.path().join(folder);
        std::fs::create_dir_all(&d).unwrap();
        let text = format!(
            "From: x@y.example\r\nDate: {day:02} Sep 2002 10:00:00 +0000\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n"
        );
        std::fs::write(d.join(name), text).unwrap();
    };
    // Ten in each folder, written in an order unlike their dates; the second ham folder is all
    // newer than the first (as SpamAssassin's hard ham is), yet trains as much as it tests.
    for i in 0..10 {
        let day = 1 + (i * 7) % 10;
        mail(
            "ham",
            &format!("{i:02}.eml"),
            day,
            &format!("meeting {day}"),
        );
        mail(
            "spam",
            &format!("{i:02}.eml"),
            day + 10,
            &format!("offer {day}"),
        );
        mail(
            "hard",
            &format!("{i:02}.eml"),
            day + 20,
            &format!("newsletter {day}"),
        );
    }
    mail("spam", "copy.eml", 28, "offer 3"); // the same text as another: left out
    std::fs::write(dir.path().join("spam").join("junk.bin"), "no headers here").unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let o = distill(&[
        "emails",
        &format!("ham={}", p("ham")),
        &format!("spam={}", p("spam")),
        &format!("ham={}", p("hard")),
        "-o",
        &p("mail.csv"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("1 duplicates left out, 1 files not e-mails"),
        "{out}"
    );
    let mut r = csv::Reader::from_path(p("mail.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    assert_eq!(rows.len(), 30);
    for (group, label, oldest) in [
        ("ham", "ham", "meeting 1\n"),
        ("spam", "spam", "offer 1\n"),
        ("hard", "ham", "newsletter 1\n"),
    ] {
        let of: Vec<&csv::StringRecord> = rows.iter().filter(|x| &x[3] == group).collect();
        assert!(of.iter().all(|x| &x[1] == label), "{group}");
        let splits: Vec<&str> = of.iter().map(|x| &x[2]).collect();
        assert_eq!(
            splits,
            [vec!["train"; 8], vec!["dev"], vec!["test"]].concat(),
            "{group}"
        );
        // Oldest first: the test row is the newest mail.
        let days: Vec<i64> = of.iter().map(|x| x[4].parse::<i64>().unwrap()).collect();
        assert!(days.windows(2).all(|w| w[0] < w[1]), "{days:?}");
        assert!(of[0][0].starts_with(oldest), "{:?}", &of[0][0]);
    }
    let missing = distill(&["emails", &format!("ham={}", p("nope")), "-o", &p("x.csv")]);
    assert_ne!(missing.status.code(), Some(0));
}
