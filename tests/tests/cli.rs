//! The `edgebert` and `edgebert-quantize` binaries end to end on a tiny model: output formats,
//! exit codes (0 ok, 1 usage, 2 bad input or model, 3 failure), bad input, serve.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use edgebert_tests::{workspace_bin, TinyModel, TinySpec};
use serde_json::Value;

fn edgebert() -> Command {
    Command::new(workspace_bin("edgebert"))
}

fn run_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = edgebert()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || input.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_lines(o: &Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn classify_texts_as_arguments_plain_and_json() {
    let m = TinyModel::new();
    let out = edgebert()
        .args([
            "classify",
            "--model",
            s(&m.bundle),
            "good movie",
            "bad plot",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        let (label, prob) = l.split_once('\t').unwrap();
        assert!(label == "negative" || label == "positive");
        assert!((0.5..=1.0).contains(&prob.parse::<f32>().unwrap()));
    }
    let out = edgebert()
        .args([
            "classify",
            "--model",
            s(&m.bundle),
            "--json",
            "--top-k",
            "2",
            "good movie",
        ])
        .output()
        .unwrap();
    let v = &json_lines(&out)[0];
    assert_eq!(v["scores"].as_array().unwrap().len(), 2);
    assert_eq!(v["label"], v["scores"][0]["label"]);
    assert_eq!(v["truncated"], false);
}

#[test]
fn stdin_lines_with_invalid_utf8_empty_lines_and_a_huge_line() {
    let m = TinyModel::new();
    let mut input = b"good movie\n\xff\xfe broken\n\nbad plot\n".to_vec();
    input.extend("boring ".repeat(150_000).as_bytes()); // ~1 MB on the last line, no newline
    let out = run_with_stdin(&["classify", "--model", s(&m.bundle), "--json"], &input);
    assert_eq!(out.status.code(), Some(2), "some lines failed");
    let v = json_lines(&out);
    assert_eq!(v.len(), 5, "one answer per line, in order");
    assert_eq!(v[0]["line"], 1);
    assert!(v[0]["label"].is_string());
    assert!(v[1]["error"].as_str().unwrap().contains("invalid UTF-8"));
    assert_eq!(v[2]["error"], "empty text");
    assert!(v[3]["label"].is_string());
    assert_eq!(v[4]["truncated"], true);
    assert!(stderr(&out).contains("error: line 2: invalid UTF-8"));
}

#[test]
fn file_input_and_progress_bar_absent_when_piped() {
    let m = TinyModel::new();
    let file = m.path("texts.txt");
    std::fs::write(&file, "good\nbad\nfun\n".repeat(100)).unwrap();
    let out = edgebert()
        .args(["classify", "--model", s(&m.bundle), "--file", s(&file)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out).lines().count(), 300);
    assert!(
        stderr(&out).is_empty(),
        "no progress bar when not on a terminal"
    );
    let out = edgebert()
        .args([
            "classify",
            "--model",
            s(&m.bundle),
            "--file",
            "/nonexistent",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn empty_text_argument_is_exit_two_with_a_clear_error() {
    let m = TinyModel::new();
    let out = edgebert()
        .args(["classify", "--model", s(&m.bundle), "good", "  "])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stdout(&out).lines().count(),
        1,
        "the good text is still classified"
    );
    assert_eq!(stderr(&out).trim(), "error: empty text");
}

#[test]
fn corrupt_bundles_exit_two_with_one_line() {
    let m = TinyModel::new();
    let bytes = std::fs::read(&m.bundle).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("zero.ebm", vec![], "empty"),
        ("cut.ebm", bytes[..bytes.len() / 2].to_vec(), "truncated"),
        (
            "flip.ebm",
            {
                let mut b = bytes.clone();
                b[100] ^= 1;
                b
            },
            "checksum",
        ),
        (
            "newer.ebm",
            {
                let mut b = bytes.clone();
                b[8] = 9;
                b
            },
            "newer",
        ),
    ];
    for (name, data, what) in cases {
        let path = m.path(name);
        std::fs::write(&path, data).unwrap();
        for args in [
            vec!["classify", "--model", s(&path), "good"],
            vec!["info", s(&path)],
        ] {
            let out = edgebert().args(&args).output().unwrap();
            assert_eq!(out.status.code(), Some(2), "{name}");
            let err = stderr(&out);
            assert!(
                err.starts_with("error: ") && err.contains(what),
                "{name}: {err}"
            );
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
}

#[test]
fn plain_onnx_with_tokenizer_and_labels_runs_and_packs() {
    let m = TinyModel::new();
    let config = m.checkpoint.join("config.json");
    let tokenizer = m.tokenizer();
    let args = ["--model", s(&m.onnx), "--tokenizer", s(&tokenizer)];
    let out = edgebert()
        .arg("classify")
        .args(args)
        .args(["--labels", "negative,positive", "good"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let via_onnx = stdout(&out);
    let out = edgebert()
        .arg("classify")
        .args(args)
        .args(["--labels", s(&config), "good"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), via_onnx, "labels from config.json id2label");

    let packed = m.path("packed.ebm");
    let out = edgebert()
        .arg("pack")
        .args(args)
        .args([
            "--labels",
            "negative,positive",
            "--task",
            "sentiment",
            "-o",
            s(&packed),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = edgebert()
        .args(["classify", "--model", s(&packed), "good"])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&out),
        via_onnx,
        "the packed bundle answers as the parts do"
    );
    let info: Value = serde_json::from_slice(
        &edgebert()
            .args(["info", "--json", s(&packed)])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(info["manifest"]["task"], "sentiment");
    assert_eq!(info["manifest"]["labels"][1], "positive");
    assert_eq!(info["manifest"]["tokenizer"]["lowercase"], true);
    assert_eq!(info["format_version"], 2);
    let tokenizer_json = std::fs::read(m.tokenizer()).unwrap().len();
    assert_eq!(info["bytes"]["tokenizer"], tokenizer_json, "inflated");
    assert!(
        info["bytes"]["total"].as_u64().unwrap()
            < (info["bytes"]["onnx"].as_u64().unwrap() + tokenizer_json as u64),
        "the tokenizer is stored deflated: {info}"
    );
    let out = edgebert().args(["info", s(&packed)]).output().unwrap();
    assert!(stdout(&out).contains("negative, positive"));

    // Mismatched labels: refused, nothing written; the output can never be an input.
    let bad = m.path("bad.ebm");
    let out = edgebert()
        .arg("pack")
        .args(args)
        .args(["--labels", "a,b,c", "-o", s(&bad)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!bad.exists());
    let before = std::fs::read(&m.onnx).unwrap();
    let out = edgebert()
        .arg("pack")
        .args(args)
        .args(["--labels", "a,b", "-o", s(&m.onnx)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("also an input"));
    assert_eq!(std::fs::read(&m.onnx).unwrap(), before);
}

#[test]
fn an_unknown_operator_is_named_on_the_command_line() {
    let m = TinyModel::new();
    let onnx = m.edited_onnx("odd.onnx", |model| {
        let node = model
            .graph
            .as_mut()
            .unwrap()
            .node
            .iter_mut()
            .find(|n| n.op_type == "Erf")
            .unwrap();
        node.op_type = "ErfPlusPlus".into();
    });
    let tokenizer = m.tokenizer();
    let out = edgebert()
        .args([
            "classify",
            "--model",
            s(&onnx),
            "--tokenizer",
            s(&tokenizer),
            "--labels",
            "a,b",
            "good",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("ErfPlusPlus"), "{}", stderr(&out));
}

#[test]
fn serve_answers_json_lines_and_survives_bad_requests() {
    let m = TinyModel::new();
    let requests: &[u8] = concat!(
        "{\"id\": 1, \"text\": \"good movie\"}\n",
        "this is not json\n",
        "\u{1}\n",
        "{\"id\": 2, \"text\": \"\"}\n",
        "{\"id\": 3, \"texts\": [\"bad\", \"fun film\"], \"top_k\": 1}\n",
        "{\"id\": 4}\n",
    )
    .as_bytes();
    let mut requests = requests.to_vec();
    // Line 3 becomes invalid UTF-8.
    let at = requests.iter().position(|&b| b == 1).unwrap();
    requests.splice(at..at + 1, [0xff, 0xfe]);
    let out = run_with_stdin(&["serve", "--model", s(&m.bundle)], &requests);
    assert_eq!(
        out.status.code(),
        Some(0),
        "EOF is a clean shutdown: {}",
        stderr(&out)
    );
    let v = json_lines(&out);
    assert_eq!(v.len(), 6);
    assert_eq!(v[0]["id"], 1);
    assert!(v[0]["label"].is_string());
    assert!(v[1]["error"].as_str().unwrap().starts_with("bad request"));
    assert!(v[2]["error"].as_str().unwrap().contains("UTF-8"));
    assert_eq!(v[3]["id"], 2);
    assert_eq!(v[3]["error"], "empty text");
    assert_eq!(v[4]["results"].as_array().unwrap().len(), 2);
    assert_eq!(v[4]["results"][0]["scores"].as_array().unwrap().len(), 1);
    assert!(v[5]["error"].is_string());
}

#[test]
fn serve_on_a_socket_and_stop_cleanly_on_sigterm() {
    use std::os::unix::net::UnixStream;
    let m = TinyModel::new();
    let socket = m.path("edgebert.sock");
    let mut child = edgebert()
        .args(["serve", "--model", s(&m.bundle), "--socket", s(&socket)])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The server says when it listens: wait for that line rather than sleeping.
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.starts_with("listening on"), "{line}");
    for id in 0..2 {
        let mut conn = UnixStream::connect(&socket).unwrap();
        writeln!(conn, "{{\"id\": {id}, \"text\": \"great acting\"}}").unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let answer: Value = serde_json::from_reader(BufReader::new(&conn)).unwrap();
        assert_eq!(answer["id"], id);
        assert!(answer["label"].is_string());
    }
    // A second server on the same socket is refused, not allowed to steal it.
    let out = edgebert()
        .args(["serve", "--model", s(&m.bundle), "--socket", s(&socket)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("in use"));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(!socket.exists(), "the socket file is removed on shutdown");
}

#[test]
fn bench_reports_every_length_as_json() {
    let m = TinyModel::new();
    let out = edgebert()
        .args([
            "bench",
            s(&m.bundle),
            "--json",
            "--iterations",
            "3",
            "--lengths",
            "16,32,64,500",
            "--threads",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let lengths: Vec<u64> = v["lengths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["tokens"].as_u64().unwrap())
        .collect();
    assert_eq!(
        lengths,
        [16, 32, 64],
        "500 exceeds the model maximum (64) and is skipped"
    );
    for l in v["lengths"].as_array().unwrap() {
        assert!(l["p50_ms"].as_f64().unwrap() <= l["p95_ms"].as_f64().unwrap());
        assert!(l["texts_per_s"].as_f64().unwrap() > 0.0);
    }
    assert!(v["cold_start_ms"].as_f64().unwrap() > 0.0);
    assert!(v["peak_rss_kib"].as_u64().unwrap() > 0);
}

#[test]
fn bench_profile_lists_operators_per_length() {
    let m = TinyModel::new();
    let out = edgebert()
        .args([
            "bench",
            s(&m.bundle),
            "--profile",
            "--json",
            "--iterations",
            "2",
            "--lengths",
            "16,32",
            "--threads",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let lengths = v["lengths"].as_array().unwrap();
    assert_eq!(lengths.len(), 2);
    for l in lengths {
        let ops = l["ops"].as_array().unwrap();
        assert!(ops
            .iter()
            .any(|o| o["op"].as_str().unwrap().contains("MatMul")
                || o["op"].as_str().unwrap().contains("EinSum")));
        let sum: f64 = ops.iter().map(|o| o["ms_per_run"].as_f64().unwrap()).sum();
        assert!((sum - l["total_ms"].as_f64().unwrap()).abs() < 1e-9);
    }
    let out = edgebert()
        .args([
            "bench",
            s(&m.bundle),
            "--profile",
            "--iterations",
            "1",
            "--lengths",
            "16",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("16 tokens:") && text.contains("share"),
        "{text}"
    );
}

#[test]
fn quantize_export_writes_onnx_and_bundles_and_refuses_a_bare_model() {
    let m = TinyModel::with(
        &TinySpec {
            seed: 21,
            ..TinySpec::default()
        },
        64,
    );
    let bin = workspace_bin("edgebert-quantize");
    let onnx = m.path("again.onnx");
    let out = Command::new(&bin)
        .args(["export", s(&m.checkpoint), "-o", s(&onnx)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&onnx).unwrap(),
        std::fs::read(&m.onnx).unwrap(),
        "export is deterministic"
    );
    let ebm = m.path("again.ebm");
    let out = Command::new(&bin)
        .args(["export", s(&m.checkpoint), "-o", s(&ebm), "--max-len", "32"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = edgebert()
        .args(["info", "--json", s(&ebm)])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["manifest"]["max_seq_len"], 32);

    let bare = m.path("bare");
    edgebert_tests::write_checkpoint(
        &bare,
        &TinySpec {
            bare: true,
            ..TinySpec::default()
        },
    )
    .unwrap();
    let out = Command::new(&bin)
        .args(["export", s(&bare), "-o", s(&m.path("bare.onnx"))])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bare BertModel"), "{}", stderr(&out));
    assert!(!m.path("bare.onnx").exists());
}

#[test]
fn quantize_dynamic_bundle_to_bundle_and_its_refusals() {
    let m = TinyModel::new();
    let bin = workspace_bin("edgebert-quantize");
    let out_ebm = m.path("int8.ebm");
    let report = m.path("report.md");
    let out = Command::new(&bin)
        .args([
            "dynamic",
            s(&m.bundle),
            "-o",
            s(&out_ebm),
            "--report",
            s(&report),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("| `/classifier/MatMul` |"));
    assert!(std::fs::read_to_string(&report).unwrap().contains("SQNR"));
    assert!(m.path("report.png").is_file() && m.path("report.svg").is_file());
    let info: Value = serde_json::from_slice(
        &edgebert()
            .args(["info", "--json", s(&out_ebm)])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(info["manifest"]["quantization"], "DynamicInt8");
    assert_eq!(
        info["manifest"]["labels"][0], "negative",
        "labels and tokenizer carried over"
    );
    let out = edgebert()
        .args(["classify", "--model", s(&out_ebm), "good movie"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));

    let before = std::fs::read(&m.bundle).unwrap();
    let out = Command::new(&bin)
        .args(["dynamic", s(&m.bundle), "-o", s(&m.bundle)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read(&m.bundle).unwrap(), before, "input untouched");
    let out = Command::new(&bin)
        .args(["dynamic", s(&m.onnx), "-o", s(&m.path("x.ebm"))])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "ONNX → bundle needs --tokenizer and --labels"
    );
    let out = Command::new(&bin)
        .args(["dynamic", s(&out_ebm), "-o", s(&m.path("again.ebm"))])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no MatMul"), "{}", stderr(&out));
    assert!(!m.path("again.ebm").exists());
}

#[test]
fn quantize_annotate_records_provenance_and_metrics() {
    let m = TinyModel::new();
    let bin = workspace_bin("edgebert-quantize");
    let out_ebm = m.path("annotated.ebm");
    let out = Command::new(&bin)
        .args([
            "annotate",
            s(&m.bundle),
            "-o",
            s(&out_ebm),
            "--teacher",
            "tiny teacher",
            "--data",
            "synthetic",
            "--metric",
            "test_accuracy=0.75",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let info: Value = serde_json::from_slice(
        &edgebert()
            .args(["info", "--json", s(&out_ebm)])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let p = &info["manifest"]["provenance"];
    assert_eq!(p["teacher"], "tiny teacher");
    assert_eq!(p["data"], "synthetic");
    assert!(p["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["name"] == "test_accuracy" && x["value"] == 0.75));
    // Not over its input; a metric must be a number.
    let before = std::fs::read(&m.bundle).unwrap();
    let out = Command::new(&bin)
        .args(["annotate", s(&m.bundle), "-o", s(&m.bundle), "--data", "x"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(std::fs::read(&m.bundle).unwrap(), before);
    let out = Command::new(&bin)
        .args([
            "annotate",
            s(&m.bundle),
            "-o",
            s(&out_ebm),
            "--metric",
            "a=b",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn raw_emails_are_read_as_subject_and_body_text() {
    let m = TinyModel::new();
    let plain = m.path("plain.eml");
    std::fs::write(
        &plain,
        "From: a@b.example\r\nSubject: great film\r\n\r\nthe acting was\r\n  very good !\r\n",
    )
    .unwrap();
    let html = m.path("html.eml");
    std::fs::write(
        &html,
        "Subject: awful plot\r\nContent-Type: text/html\r\n\r\n<html><body><p>boring <b>movie</b></p></body></html>\r\n",
    )
    .unwrap();
    let not_mail = m.path("note.txt");
    std::fs::write(&not_mail, "just a line").unwrap();
    let out = edgebert()
        .args(["classify", "--model", s(&m.bundle), "--json", "--email"])
        .args([s(&plain), s(&html), s(&not_mail)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "one file is not an e-mail");
    let v = json_lines(&out);
    assert_eq!(v.len(), 3, "one answer per file, in order");
    assert_eq!(v[0]["file"], s(&plain));
    assert!(v[2]["error"].as_str().unwrap().contains("not an e-mail"));
    // Each mail answers as its subject and body text would.
    let texts = out_of(
        &m,
        &[
            "great film\nthe acting was very good !",
            "awful plot\nboring movie",
        ],
    );
    for (mail, text) in v.iter().zip(&texts) {
        assert_eq!(mail["probability"], text["probability"]);
        assert_eq!(mail["tokens"], text["tokens"]);
    }
    // One mail on stdin.
    let piped = run_with_stdin(
        &["classify", "--model", s(&m.bundle), "--json", "--email"],
        &std::fs::read(&plain).unwrap(),
    );
    assert!(piped.status.success(), "{}", stderr(&piped));
    assert_eq!(json_lines(&piped)[0]["probability"], v[0]["probability"]);
}

fn out_of(m: &TinyModel, texts: &[&str]) -> Vec<Value> {
    let out = edgebert()
        .args(["classify", "--model", s(&m.bundle), "--json"])
        .args(texts)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    json_lines(&out)
}
