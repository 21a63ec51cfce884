//! Text → token ids, with the bundled HF tokenizer.json.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use tokenizers::{Encoding, PostProcessor, Token, Tokenizer};

use crate::contain::caught;
use crate::error::{InputError, ModelError};

/// One model input (a text, or a window of one) as token ids, special tokens included, before
/// padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<i64>,
    pub type_ids: Vec<i64>,
    /// The text had more tokens than this input holds.
    pub truncated: bool,
}

/// How a text longer than the model's maximum length is read. Stored in bundles (postcard, by
/// variant index): new variants go at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum LongText {
    /// Its first tokens only (what the model was trained on when its training texts were cut).
    #[serde(rename = "head")]
    Head,
    /// Its first quarter of a window and its last three quarters: reviews, mails and articles
    /// tend to give their verdict at the end (Sun et al. 2019, "How to Fine-Tune BERT for Text
    /// Classification", found head + tail best on IMDB).
    #[serde(rename = "head+tail")]
    HeadTail,
    /// All of it, in windows of (nearly) equal size, the logits averaged weighted by each
    /// window's tokens; at most [`MAX_WINDOWS`] windows, spread evenly over a longer text.
    #[default]
    #[serde(rename = "chunks")]
    Chunks,
}

/// The most windows [`LongText::Chunks`] runs for one text (2,000 or so words with a 128-token
/// model); a longer text is read in that many windows spread over it, and counts as truncated.
pub const MAX_WINDOWS: usize = 16;

impl LongText {
    pub const ALL: [LongText; 3] = [LongText::Head, LongText::HeadTail, LongText::Chunks];

    /// The command-line name: `head`, `head+tail`, `chunks`.
    pub fn name(self) -> &'static str {
        match self {
            LongText::Head => "head",
            LongText::HeadTail => "head+tail",
            LongText::Chunks => "chunks",
        }
    }
}

impl fmt::Display for LongText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LongText {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        LongText::ALL
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| format!("`{s}` is not one of head, head+tail, chunks"))
    }
}

/// A text as the model reads it: one input, or several windows whose logits are averaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// At least one.
    pub windows: Vec<Encoded>,
    /// Some of the text's tokens are in no window.
    pub truncated: bool,
}

impl Reading {
    /// Tokens the model runs for this text, special tokens included.
    pub fn tokens(&self) -> usize {
        self.windows.iter().map(|w| w.ids.len()).sum()
    }
}

/// The tokenizer of a model and the model's maximum length.
#[derive(Clone)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    /// Tokens of the text per input: the maximum length less the special tokens.
    room: usize,
    pad_id: u32,
    pad_token: String,
    id_bound: usize,
    lowercase: bool,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder")
            .field("pad", &self.pad_token)
            .field("id_bound", &self.id_bound)
            .finish()
    }
}

impl TextEncoder {
    /// Reads a tokenizer.json; the model's sequences are at most `max_len` tokens.
    pub fn from_json(json: &[u8], max_len: usize) -> Result<TextEncoder, ModelError> {
        let mut tokenizer =
            caught(|| Tokenizer::from_bytes(json)).map_err(ModelError::Tokenizer)?;
        let (pad_id, pad_token) = match tokenizer.get_padding() {
            Some(p) => (p.pad_id, p.pad_token.clone()),
            None => ["[PAD]", "<pad>"]
                .iter()
                .find_map(|t| tokenizer.token_to_id(t).map(|id| (id, t.to_string())))
                .ok_or_else(|| ModelError::MissingSpecialToken("[PAD]".into()))?,
        };
        tokenizer.with_padding(None);
        // Texts are cut into the model's inputs here (`read`), not by the tokenizer.
        tokenizer
            .with_truncation(None)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let special = tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        if special >= max_len {
            return Err(ModelError::MaxLen(max_len));
        }
        let id_bound = tokenizer
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1);
        let lowercase = normalizer_lowercases(json);
        Ok(TextEncoder {
            tokenizer,
            room: max_len - special,
            pad_id,
            pad_token,
            id_bound,
            lowercase,
        })
    }

    /// One more than the largest token id the tokenizer can emit.
    pub fn id_bound(&self) -> usize {
        self.id_bound
    }

    /// Tokenizes texts and pads them into one batch of `len` tokens per row.
    pub fn batch(
        &self,
        texts: &[&str],
        len: usize,
    ) -> Result<crate::engine::TokenBatch, InputError> {
        let rows = texts
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<Vec<_>, _>>()?;
        let rows: Vec<&Encoded> = rows.iter().collect();
        Ok(crate::engine::TokenBatch::padded(
            &rows,
            len,
            i64::from(self.pad_id),
        ))
    }

    /// The padding token and its id.
    pub fn pad(&self) -> (&str, u32) {
        (&self.pad_token, self.pad_id)
    }

    /// Whether the normaliser lowercases text.
    pub fn lowercase(&self) -> bool {
        self.lowercase
    }

    /// Tokenizes one text, special tokens included, cut at the maximum length (its head).
    pub fn encode(&self, text: &str) -> Result<Encoded, InputError> {
        let mut r = self.read(text, LongText::Head)?;
        Ok(r.windows.swap_remove(0))
    }

    /// Tokenizes one text into the model's inputs, reading a long one as `long` says.
    pub fn read(&self, text: &str, long: LongText) -> Result<Reading, InputError> {
        if text.trim().is_empty() {
            return Err(InputError::Empty);
        }
        let content = self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|e| InputError::Tokenizer(e.to_string()))?;
        if content.get_special_tokens_mask().iter().all(|&s| s == 1) {
            return Err(InputError::NoTokens);
        }
        let n = content.len();
        let windows = windows(n, self.room, long);
        let kept: usize = windows.iter().flatten().map(|r| r.len()).sum();
        let truncated = kept < n;
        let windows = windows
            .into_iter()
            .map(|ranges| {
                let held: usize = ranges.iter().map(|r| r.len()).sum();
                self.input(&content, &ranges, held < n)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Reading { windows, truncated })
    }

    /// One model input: the tokens of `content` in `ranges`, with the special tokens added.
    fn input(
        &self,
        content: &Encoding,
        ranges: &[Range<usize>],
        truncated: bool,
    ) -> Result<Encoded, InputError> {
        let (ids, pieces, offsets) = (
            content.get_ids(),
            content.get_tokens(),
            content.get_offsets(),
        );
        let tokens: Vec<Token> = ranges
            .iter()
            .flat_map(|r| r.clone())
            .map(|i| Token::new(ids[i], pieces[i].clone(), offsets[i]))
            .collect();
        let encoding = self
            .tokenizer
            .post_process(Encoding::from_tokens(tokens, 0), None, true)
            .map_err(|e| InputError::Tokenizer(e.to_string()))?;
        Ok(Encoded {
            ids: encoding.get_ids().iter().map(|&i| i64::from(i)).collect(),
            type_ids: encoding
                .get_type_ids()
                .iter()
                .map(|&i| i64::from(i))
                .collect(),
            truncated,
        })
    }
}

/// An input of one run of tokens.
fn span(tokens: Range<usize>) -> Vec<Range<usize>> {
    std::iter::once(tokens).collect()
}

/// Which of a text's `n` tokens go into which input, `room` tokens at most each.
fn windows(n: usize, room: usize, long: LongText) -> Vec<Vec<Range<usize>>> {
    let room = room.max(1);
    if n <= room {
        return vec![span(0..n)];
    }
    match long {
        LongText::Head => vec![span(0..room)],
        LongText::HeadTail => {
            let head = room / 4;
            vec![vec![0..head, n - (room - head)..n]]
        }
        LongText::Chunks => {
            let count = n.div_ceil(room);
            if count <= MAX_WINDOWS {
                // Equal shares (sizes differ by one at most): no short last window that would
                // weigh as much as a full one.
                (0..count)
                    .map(|i| span(i * n / count..(i + 1) * n / count))
                    .collect()
            } else {
                (0..MAX_WINDOWS)
                    .map(|i| {
                        let start = i * (n - room) / (MAX_WINDOWS - 1);
                        span(start..start + room)
                    })
                    .collect()
            }
        }
    }
}

/// Reads the normaliser's `lowercase` flag (BertNormalizer, or a Lowercase step in a Sequence).
fn normalizer_lowercases(json: &[u8]) -> bool {
    fn walk(v: &serde_json::Value) -> bool {
        match v.get("type").and_then(|t| t.as_str()) {
            Some("BertNormalizer") => v
                .get("lowercase")
                .and_then(|l| l.as_bool())
                .unwrap_or(false),
            Some("Lowercase") => true,
            Some("Sequence") => v
                .get("normalizers")
                .and_then(|n| n.as_array())
                .is_some_and(|a| a.iter().any(walk)),
            _ => false,
        }
    }
    serde_json::from_slice::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.get("normalizer").map(walk))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(n: usize, room: usize, long: LongText) -> Vec<Vec<(usize, usize)>> {
        windows(n, room, long)
            .into_iter()
            .map(|w| w.into_iter().map(|r| (r.start, r.end)).collect())
            .collect()
    }

    #[test]
    fn a_text_that_fits_is_one_window_whatever_the_way() {
        for long in LongText::ALL {
            assert_eq!(sizes(10, 10, long), vec![vec![(0, 10)]]);
            assert_eq!(sizes(1, 126, long), vec![vec![(0, 1)]]);
        }
    }

    #[test]
    fn long_texts_are_cut_as_named() {
        assert_eq!(sizes(1000, 126, LongText::Head), vec![vec![(0, 126)]]);
        assert_eq!(
            sizes(1000, 126, LongText::HeadTail),
            vec![vec![(0, 31), (905, 1000)]]
        );
        assert_eq!(
            sizes(300, 126, LongText::Chunks),
            vec![vec![(0, 100)], vec![(100, 200)], vec![(200, 300)]]
        );
        assert_eq!(
            sizes(127, 126, LongText::Chunks),
            vec![vec![(0, 63)], vec![(63, 127)]]
        );
    }

    #[test]
    fn chunks_cover_the_text_once_up_to_the_cap_then_spread_over_it() {
        for n in [127, 500, 2015, 2016, 2017, 100_000] {
            let w = sizes(n, 126, LongText::Chunks);
            assert!(w.len() <= MAX_WINDOWS);
            assert!(w.iter().all(|w| w.len() == 1 && w[0].1 - w[0].0 <= 126));
            assert_eq!(w[0][0].0, 0);
            assert_eq!(w.last().unwrap()[0].1, n, "the end is read");
            let contiguous = w.windows(2).all(|p| p[0][0].1 == p[1][0].0);
            assert_eq!(contiguous, n <= 126 * MAX_WINDOWS, "n = {n}");
        }
    }

    #[test]
    fn ways_have_names_both_ways() {
        for long in LongText::ALL {
            assert_eq!(long.to_string().parse::<LongText>(), Ok(long));
        }
        assert!("tail".parse::<LongText>().is_err());
    }
}
