//! A raw e-mail (RFC 5322 headers, MIME parts, transfer and charset encodings, HTML) as the text a
//! model reads: its subject, then its body text (every inline text part; HTML parts as text),
//! whitespace collapsed. The spam model is trained on texts made by this same function
//! (`edgebert-distill emails`), so what it reads on the device is what it learnt from.
//!
//! The parsing is mail-parser's (pure Rust; its own single-byte charsets, no encoding_rs).

use crate::error::InputError;

/// What an e-mail says, as one line of text.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailText {
    /// `subject` + newline + body, whitespace runs made single spaces.
    pub text: String,
    /// The `Date` header as Unix seconds, when it parses.
    pub date: Option<i64>,
}

/// Reads a raw e-mail. An input that has no header block, or neither subject nor body text, is
/// an error (`InputError::NotEmail`).
pub fn email_text(raw: &[u8]) -> Result<EmailText, InputError> {
    let message = mail_parser::MessageParser::default()
        .parse(raw)
        .ok_or(InputError::NotEmail)?;
    if message.headers().is_empty() {
        return Err(InputError::NotEmail);
    }
    let subject = message.subject().unwrap_or_default();
    let mut body = String::new();
    for pos in 0..message.text_body_count() {
        if let Some(t) = message.body_text(pos) {
            // HTML sent as text/plain (common in spam) is stripped too.
            if looks_like_html(&t) {
                body.push_str(&mail_parser::decoders::html::html_to_text(&t));
            } else {
                body.push_str(&t);
            }
            body.push(' ');
        }
    }
    let text = format!("{}\n{}", collapse(subject), collapse(&body));
    if text.trim().is_empty() {
        return Err(InputError::NotEmail);
    }
    Ok(EmailText {
        text: text.trim().to_string(),
        date: message.date().map(|d| d.to_timestamp()),
    })
}

/// Whether a text part is an HTML document in disguise.
fn looks_like_html(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    ["<html", "<body", "</p>", "<br>", "<table"]
        .iter()
        .filter(|tag| lower.contains(*tag))
        .count()
        >= 2
}

/// Whitespace runs (newlines included) as single spaces.
fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_and_plain_body() {
        let raw = b"From: a@b.example\r\nSubject: Cheap   meds\r\nDate: Sat, 14 Sep 2002 04:51:57 +0000\r\n\r\nBuy now!\r\n\r\nLimited   offer.\r\n";
        let e = email_text(raw).unwrap();
        assert_eq!(e.text, "Cheap meds\nBuy now! Limited offer.");
        assert_eq!(e.date, Some(1_031_979_117));
    }

    #[test]
    fn html_and_encoded_parts_become_text() {
        let raw = concat!(
            "From: a@b.example\r\n",
            "Subject: =?utf-8?q?Caf=C3=A9?=\r\n",
            "MIME-Version: 1.0\r\n",
            "Content-Type: multipart/alternative; boundary=\"XX\"\r\n\r\n",
            "--XX\r\nContent-Type: text/html; charset=iso-8859-1\r\n",
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            "<html><body><p>Gr=FC=DFe <b>from</b> the</p><br>caf=E9</body></html>\r\n",
            "--XX--\r\n",
        );
        let e = email_text(raw.as_bytes()).unwrap();
        assert_eq!(e.text, "Café\nGrüße from the café");
        assert_eq!(e.date, None);
    }

    #[test]
    fn html_sent_as_plain_text_is_stripped_and_plain_angle_brackets_kept() {
        let raw =
            b"Subject: Hi\r\n\r\n<HTML><BODY><p>Click <a href=\"x\">here</a></p></BODY></HTML>\r\n";
        assert_eq!(email_text(raw).unwrap().text, "Hi\nClick here");
        let raw = b"Subject: Re: patch\r\n\r\nuse Vec<u8> and x <b> y\r\n";
        assert_eq!(
            email_text(raw).unwrap().text,
            "Re: patch\nuse Vec<u8> and x <b> y"
        );
    }

    #[test]
    fn text_without_headers_is_not_an_email() {
        for raw in [&b""[..], b"just a line of text", b"\r\n\r\n"] {
            assert!(
                matches!(email_text(raw), Err(InputError::NotEmail)),
                "{raw:?}"
            );
        }
    }
}
