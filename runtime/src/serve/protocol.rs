//! The `serve` protocol: JSON lines in, JSON lines out, one answer per request line.
//!
//! A request is `{"text": "...", "id": <any>, "top_k": n}` or `{"texts": [...], ...}`. An answer
//! carries the same `id` and either the prediction(s) or `"error"`; a bad request never stops the
//! server.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::classifier::{Classifier, Prediction};
use crate::error::InputError;

/// Most texts one `texts` request may carry: a request is answered as a whole, so its size bounds
/// how long the others wait behind it and how soon a shutdown can finish it.
pub const MAX_TEXTS: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(default)]
    id: Value,
    text: Option<String>,
    texts: Option<Vec<String>>,
    top_k: Option<usize>,
}

/// A well-formed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Echoed in the answer (`null` when the request had none).
    pub id: Value,
    pub texts: Texts,
    /// Labels kept in each prediction's `scores` (all when `None`).
    pub top_k: Option<usize>,
}

/// What a request asks to classify.
#[derive(Debug, Clone, PartialEq)]
pub enum Texts {
    /// `"text"`: answered with one prediction.
    One(String),
    /// `"texts"`: answered with `"results"`, one per text, in order.
    Many(Vec<String>),
}

/// Reads one request line; `Err` holds the error answer to send back.
pub fn parse(line: &[u8]) -> Result<Request, Value> {
    let text = std::str::from_utf8(line).map_err(
        |e| json!({"id": null, "error": format!("invalid UTF-8 at byte {}", e.valid_up_to())}),
    )?;
    let wire: Wire = serde_json::from_str(text)
        .map_err(|e| json!({"id": null, "error": format!("bad request: {e}")}))?;
    let id = wire.id;
    let texts = match (wire.text, wire.texts) {
        (Some(text), None) => Texts::One(text),
        (None, Some(texts)) if texts.len() > MAX_TEXTS => {
            let n = texts.len();
            return Err(error(
                &id,
                format!("bad request: {n} texts, at most {MAX_TEXTS}"),
            ));
        }
        (None, Some(texts)) => Texts::Many(texts),
        _ => {
            return Err(error(
                &id,
                "bad request: give exactly one of `text` or `texts`".into(),
            ))
        }
    };
    Ok(Request {
        id,
        texts,
        top_k: wire.top_k,
    })
}

/// The error answer to a request with this `id`.
pub fn error(id: &Value, message: String) -> Value {
    json!({"id": id, "error": message})
}

/// The answer to a request line over `max` bytes (its `id` is never read: the line is not).
pub fn too_long(max: usize) -> Value {
    error(&Value::Null, format!("request longer than {max} bytes"))
}

/// The `id` of a request line, as far as it can be read (`null` otherwise): for answering a
/// request that will not be classified (the server is stopping).
pub fn request_id(line: &[u8]) -> Value {
    #[derive(Deserialize)]
    struct IdOnly {
        #[serde(default)]
        id: Value,
    }
    serde_json::from_slice::<IdOnly>(line)
        .map(|r| r.id)
        .unwrap_or(Value::Null)
}

/// A prediction as JSON, keeping the `top_k` most probable labels (all when `None`).
pub fn prediction_json(p: &Prediction, top_k: Option<usize>) -> Value {
    let k = top_k.unwrap_or(p.scores.len()).max(1);
    json!({
        "label": p.label,
        "probability": p.probability,
        "scores": p.scores.iter().take(k).collect::<Vec<_>>(),
        "tokens": p.tokens,
        "windows": p.windows,
        "truncated": p.truncated,
    })
}

/// The answer to a `text` request: its prediction with the request's `id`, or its error.
pub fn one_json(
    id: &Value,
    top_k: Option<usize>,
    result: &Result<Prediction, InputError>,
) -> Value {
    match result {
        Ok(p) => {
            let mut v = prediction_json(p, top_k);
            v["id"] = id.clone();
            v
        }
        Err(e) => error(id, e.to_string()),
    }
}

/// The answer to a `texts` request: `"results"`, one per text, in order.
pub fn many_json(
    id: &Value,
    top_k: Option<usize>,
    results: &[Result<Prediction, InputError>],
) -> Value {
    let results: Vec<Value> = results
        .iter()
        .map(|r| match r {
            Ok(p) => prediction_json(p, top_k),
            Err(e) => json!({"error": e.to_string()}),
        })
        .collect();
    json!({"id": id, "results": results})
}

/// Answers one request line.
pub fn answer(classifier: &mut Classifier, line: &[u8]) -> Value {
    let Request { id, texts, top_k } = match parse(line) {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let (texts, one) = match texts {
        Texts::One(t) => (vec![t], true),
        Texts::Many(ts) => (ts, false),
    };
    match classifier.classify_batch(&texts) {
        Ok(results) if one => match results.first() {
            Some(r) => one_json(&id, top_k, r),
            None => error(&id, InputError::Empty.to_string()),
        },
        Ok(results) => many_json(&id, top_k, &results),
        Err(e) => error(&id, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_or_answered_with_an_error() {
        let r = parse(br#"{"id": 7, "text": "fine", "top_k": 1}"#).unwrap();
        assert_eq!(r.id, json!(7));
        assert_eq!(r.texts, Texts::One("fine".into()));
        assert_eq!(r.top_k, Some(1));
        let r = parse(br#"{"texts": ["a", "b"]}"#).unwrap();
        assert_eq!(r.id, Value::Null);
        assert_eq!(r.texts, Texts::Many(vec!["a".into(), "b".into()]));

        let bad = |line: &[u8]| {
            parse(line).unwrap_err()["error"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert!(bad(b"\xff{}").starts_with("invalid UTF-8 at byte 0"));
        assert!(bad(b"{").starts_with("bad request"));
        assert!(bad(br#"{"text": "a", "texts": ["b"]}"#).contains("exactly one"));
        assert!(bad(br#"{"id": 1, "text": "a", "extra": 2}"#).contains("unknown field"));
        let many =
            serde_json::to_vec(&json!({"id": 3, "texts": vec!["x"; MAX_TEXTS + 1]})).unwrap();
        let answer = parse(&many).unwrap_err();
        assert_eq!(answer["id"], json!(3));
        assert!(answer["error"].as_str().unwrap().contains("at most 256"));
        assert!(
            parse(&serde_json::to_vec(&json!({"texts": vec!["x"; MAX_TEXTS]})).unwrap()).is_ok()
        );
    }

    #[test]
    fn the_id_is_read_even_from_a_request_that_will_not_be_run() {
        assert_eq!(request_id(br#"{"id": "a-1", "text": "x"}"#), json!("a-1"));
        assert_eq!(request_id(br#"{"text": "x"}"#), Value::Null);
        assert_eq!(request_id(b"not json"), Value::Null);
    }
}
