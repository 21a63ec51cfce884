//! The shipped spam model, `models/spam-en.ebm`: it loads, carries its reading defaults and the
//! numbers measured when it was built (the same ones its card shows), and `edgebert classify
//! --email` on raw mails gives the obvious answers.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use edgebert_runtime::text::LongText;
use edgebert_runtime::Bundle;
use edgebert_tests::workspace_bin;

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/spam-en.ebm")
}

const SPAM: &str = "From: \"Best Deals\" <offers@cheap-meds.example>\r\n\
To: you@example.com\r\n\
Subject: =?utf-8?q?You_have_WON_=24500_-_claim_NOW!!!?=\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<html><body><p>CONGRATULATIONS!!! You have been selected to receive a <b>FREE</b> $500 gift card.\
 Click <a href=\"http://cheap-meds.example/claim\">HERE</a> to claim your prize now. Limited time\
 offer, act now! Lose 30 pounds in 30 days, guaranteed, no prescription needed. To be removed\
 from our mailing list reply with REMOVE in the subject.</p></body></html>\r\n";

const HAM: &str = "From: Alice <alice@example.org>\r\n\
To: dev-list@example.org\r\n\
Subject: Re: build failure on the test machine\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
\r\n\
I had a look at the failing build last night. The linker error comes from the old version of\r\n\
the library that is still installed in /usr/local; removing it and running configure again\r\n\
fixed it for me. Could you try that and tell me whether the tests pass on your side?\r\n\
\r\n\
Thanks,\r\nAlice\r\n";

#[test]
fn the_shipped_spam_model_carries_its_rule_and_numbers() {
    let path = shipped();
    let bytes = std::fs::metadata(&path).unwrap().len();
    assert!(bytes <= 15_000_000, "{bytes} bytes: the goal is ≤ 15 MB");
    let b = Bundle::read(&path).unwrap();
    let m = &b.manifest;
    assert_eq!(m.labels, ["ham", "spam"]);
    let d = m.defaults.decision.as_ref().expect("a spam threshold");
    assert_eq!(d.label, "spam");
    assert!((0.0..1.0).contains(&d.threshold));
    assert!(LongText::ALL.contains(&m.defaults.long.expect("a long-text mode")));
    let metric = |name: &str| {
        m.provenance
            .metrics
            .iter()
            .find(|x| x.name == name)
            .map(|x| x.value)
            .unwrap_or_else(|| panic!("no metric {name}"))
    };
    for name in [
        "test_accuracy",
        "test_spam_recall",
        "test_false_positive_rate",
        "threshold_dev_recall",
        "test_accuracy_teacher_f32",
    ] {
        assert!((0.0..=1.0).contains(&metric(name)), "{name}");
    }
    // The card shows the bundle's own numbers.
    let card = std::fs::read_to_string(path.with_extension("md")).unwrap();
    let acc = format!("accuracy {:.2}%", 100.0 * metric("test_accuracy"));
    assert!(card.contains(&acc), "the card does not say {acc}");
}

#[test]
fn raw_mails_get_the_obvious_answer() {
    let bin = workspace_bin("edgebert");
    for (mail, want) in [(SPAM, "spam"), (HAM, "ham")] {
        let mut child = Command::new(&bin)
            .args(["classify", "--json", "--model"])
            .arg(shipped())
            .args(["--email", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(mail.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["label"], want, "{v}");
    }
}
