//! The `.ebm` bundle: one file with everything the device needs.
//!
//! Layout (all integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `EDGEBERT` |
//! | 8 | 2 | format version ([`FORMAT_VERSION`]) |
//! | 10 | 2 | reserved, 0 |
//! | 12 | 4 | manifest length M |
//! | 16 | 8 | tokenizer.json length T |
//! | 24 | 8 | graph length O |
//! | 32 | M | manifest, postcard |
//! | 32+M | T | tokenizer.json, raw DEFLATE (RFC 1951) of its UTF-8 (version 1: stored as is) |
//! | 32+M+T | O | the graph: ONNX model protobuf, or (version 3) a compiled graph |
//! | 32+M+T+O | 4 | CRC-32 (IEEE) of every byte before it |
//!
//! The version is checked before anything else that depends on the layout, so a file from a newer
//! edgebert is refused by name rather than misread. Version 2 deflates the tokenizer (BERT's
//! 30k-piece vocabulary as JSON: 440 KB → about 170 KB); version 1 files still read. Version 3
//! is written only for a compiled graph (`edgebert compile`: tract's analysed graph as NNEF, see
//! [`crate::engine::Engine::compile`]), so a bundle with an ONNX graph stays readable by
//! version 2 readers and an older reader refuses a compiled one by its version. Version 4 adds
//! the model's reading defaults ([`crate::manifest::Defaults`]: a decision threshold, a long-text
//! mode), postcard-encoded right after the manifest in its section; it is written only when a
//! bundle has some, so that an older reader refuses such a bundle instead of ignoring them.

use std::borrow::Cow;
use std::path::Path;

use crate::error::{BundleError, Result};
use crate::fsutil;
use crate::manifest::Manifest;

/// The first eight bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"EDGEBERT";
/// The newest bundle format version this build reads (and writes, for a bundle with reading
/// defaults).
pub const FORMAT_VERSION: u16 = 4;
/// The version written for a bundle whose graph is compiled (and that has no reading defaults).
pub const COMPILED_FORMAT_VERSION: u16 = 3;
/// The version written for a bundle whose graph is ONNX.
pub const ONNX_FORMAT_VERSION: u16 = 2;
/// The oldest bundle format version this build reads.
pub const MIN_FORMAT_VERSION: u16 = 1;
/// Largest tokenizer.json a bundle may inflate to (a corrupt or hostile length is an error, not
/// an allocation).
const MAX_TOKENIZER_BYTES: usize = 64 << 20;
/// Bytes before the first section.
pub const HEADER_LEN: usize = 32;
const CHECKSUM_LEN: usize = 4;

/// A model bundle in memory: manifest, tokenizer and ONNX graph, not yet validated as a model.
///
/// [`crate::Classifier::from_bundle`] does the model-level checks (tokenizer vs embeddings, labels
/// vs logits, graph inputs).
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    pub manifest: Manifest,
    /// The HF `tokenizer.json`, as bytes.
    pub tokenizer_json: Vec<u8>,
    /// The graph, as bytes: ONNX protobuf, or a compiled graph ([`crate::engine::is_compiled`]).
    pub graph: Vec<u8>,
}

impl Bundle {
    /// Reads and checks a bundle file (container, version, checksum, manifest).
    pub fn read(path: impl AsRef<Path>) -> Result<Bundle> {
        let path = path.as_ref();
        let bytes = fsutil::read(path)?;
        Ok(Bundle::from_bytes(&bytes)?)
    }

    /// Parses and checks a bundle held in memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<Bundle, BundleError> {
        let b = Bundle::parse(bytes)?;
        Ok(Bundle {
            manifest: b.manifest,
            tokenizer_json: b.tokenizer_json.into_owned(),
            graph: b.graph.to_vec(),
        })
    }

    /// Parses and checks a bundle held in memory without copying its model: the view borrows
    /// the ONNX bytes (and a version 1 tokenizer) from `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<BundleRef<'_>, BundleError> {
        let sections = Sections::parse(bytes)?;
        let body_end = bytes.len() - CHECKSUM_LEN;
        let stored = u32::from_le_bytes(read_array(bytes, body_end));
        let computed = crc32fast::hash(&bytes[..body_end]);
        if stored != computed {
            return Err(BundleError::Checksum { stored, computed });
        }
        let bad = |e: postcard::Error| BundleError::Manifest(e.to_string());
        let (mut manifest, rest): (Manifest, _) =
            postcard::take_from_bytes(sections.manifest).map_err(bad)?;
        if sections.version >= 4 {
            manifest.defaults = postcard::from_bytes(rest).map_err(bad)?;
        }
        let tokenizer_json = if sections.version >= 2 {
            Cow::Owned(
                miniz_oxide::inflate::decompress_to_vec_with_limit(
                    sections.tokenizer,
                    MAX_TOKENIZER_BYTES,
                )
                .map_err(|e| BundleError::Tokenizer(format!("{:?}", e.status)))?,
            )
        } else {
            Cow::Borrowed(sections.tokenizer)
        };
        Ok(BundleRef {
            manifest,
            tokenizer_json,
            graph: sections.graph,
        })
    }

    /// The oldest format version that can hold this bundle.
    pub fn version(&self) -> u16 {
        if !self.manifest.defaults.is_empty() {
            FORMAT_VERSION
        } else if crate::engine::is_compiled(&self.graph) {
            COMPILED_FORMAT_VERSION
        } else {
            ONNX_FORMAT_VERSION
        }
    }

    /// The format version of a bundle's bytes, when they start like a bundle.
    pub fn version_of(bytes: &[u8]) -> Option<u16> {
        (bytes.len() >= HEADER_LEN && bytes[..MAGIC.len()] == MAGIC)
            .then(|| u16::from_le_bytes(read_array(bytes, 8)))
    }

    /// Serialises the bundle.
    pub fn to_bytes(&self) -> Vec<u8> {
        // postcard fails only on types it cannot represent or a full fixed buffer; a manifest of
        // strings and numbers into a growable Vec is neither.
        let mut manifest = postcard::to_allocvec(&self.manifest).expect("manifest serialises");
        if self.version() >= 4 {
            manifest.extend(postcard::to_allocvec(&self.manifest.defaults).expect("serialises"));
        }
        let tokenizer = miniz_oxide::deflate::compress_to_vec(&self.tokenizer_json, 9);
        let mut out = Vec::with_capacity(
            HEADER_LEN + manifest.len() + tokenizer.len() + self.graph.len() + 4,
        );
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version().to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
        out.extend_from_slice(&(tokenizer.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.graph.len() as u64).to_le_bytes());
        out.extend_from_slice(&manifest);
        out.extend_from_slice(&tokenizer);
        out.extend_from_slice(&self.graph);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Writes the bundle atomically (temporary file, then rename), refusing to overwrite any of
    /// `inputs`.
    pub fn write(&self, path: impl AsRef<Path>, inputs: &[&Path]) -> Result<()> {
        fsutil::write_atomic(path.as_ref(), &self.to_bytes(), inputs)
    }
}

/// A checked bundle that borrows its model from the bytes it was parsed from
/// ([`Bundle::parse`]): loading the built-in model this way keeps one copy of it, not two.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleRef<'a> {
    pub manifest: Manifest,
    pub tokenizer_json: Cow<'a, [u8]>,
    pub graph: &'a [u8],
}

/// The three sections of a bundle, borrowed from its bytes.
struct Sections<'a> {
    version: u16,
    manifest: &'a [u8],
    tokenizer: &'a [u8],
    graph: &'a [u8],
}

impl<'a> Sections<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Sections<'a>, BundleError> {
        if bytes.is_empty() {
            return Err(BundleError::Empty);
        }
        let magic_len = bytes.len().min(MAGIC.len());
        if bytes[..magic_len] != MAGIC[..magic_len] {
            return Err(BundleError::BadMagic);
        }
        if bytes.len() < HEADER_LEN {
            return Err(BundleError::Truncated {
                expected: HEADER_LEN as u64,
                actual: bytes.len() as u64,
            });
        }
        let version = u16::from_le_bytes(read_array(bytes, 8));
        if version > FORMAT_VERSION {
            return Err(BundleError::NewerVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if version < MIN_FORMAT_VERSION {
            return Err(BundleError::OlderVersion {
                found: version,
                supported: MIN_FORMAT_VERSION,
            });
        }
        let manifest_len = u64::from(u32::from_le_bytes(read_array(bytes, 12)));
        let tokenizer_len = u64::from_le_bytes(read_array(bytes, 16));
        let onnx_len = u64::from_le_bytes(read_array(bytes, 24));
        // Lengths come from the file: add in u128 so that no value can overflow.
        let expected = HEADER_LEN as u128
            + u128::from(manifest_len)
            + u128::from(tokenizer_len)
            + u128::from(onnx_len)
            + CHECKSUM_LEN as u128;
        let actual = bytes.len() as u128;
        if actual < expected {
            return Err(BundleError::Truncated {
                expected: u64::try_from(expected).unwrap_or(u64::MAX),
                actual: actual as u64,
            });
        }
        if actual > expected {
            return Err(BundleError::TrailingBytes {
                extra: (actual - expected) as u64,
            });
        }
        // Every length now fits in the file, hence in usize.
        let (m, t) = (manifest_len as usize, tokenizer_len as usize);
        let rest = &bytes[HEADER_LEN..bytes.len() - CHECKSUM_LEN];
        let (manifest, rest) = rest.split_at(m);
        let (tokenizer, graph) = rest.split_at(t);
        Ok(Sections {
            version,
            manifest,
            tokenizer,
            graph,
        })
    }
}

fn read_array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Provenance, Quantization, TokenizerSettings};
    use proptest::prelude::*;

    fn sample() -> Bundle {
        Bundle {
            manifest: Manifest {
                task: "sentiment".into(),
                labels: vec!["negative".into(), "positive".into()],
                max_seq_len: 128,
                tokenizer: TokenizerSettings {
                    lowercase: true,
                    pad_token: "[PAD]".into(),
                    vocab_size: 30522,
                },
                quantization: Quantization::F32,
                provenance: Provenance {
                    created_by: "test".into(),
                    tool_version: "0".into(),
                    ..Default::default()
                },
                defaults: Default::default(),
            },
            tokenizer_json: b"{}".to_vec(),
            graph: vec![1, 2, 3, 4, 5],
        }
    }

    #[test]
    fn round_trips() {
        let b = sample();
        assert_eq!(Bundle::from_bytes(&b.to_bytes()).unwrap(), b);
    }

    #[test]
    fn reading_defaults_round_trip_and_need_version_4() {
        use crate::manifest::{Decision, Defaults};
        use crate::text::LongText;
        let plain = sample().to_bytes();
        assert_eq!(Bundle::version_of(&plain), Some(ONNX_FORMAT_VERSION));
        let mut b = sample();
        b.manifest.defaults = Defaults {
            long: Some(LongText::Head),
            decision: Some(Decision {
                label: "positive".into(),
                threshold: 0.75,
            }),
        };
        let bytes = b.to_bytes();
        assert_eq!(Bundle::version_of(&bytes), Some(FORMAT_VERSION));
        assert_eq!(FORMAT_VERSION, 4);
        assert_eq!(Bundle::from_bytes(&bytes).unwrap(), b);
        // The manifest section of a version 4 bundle is the version 3 manifest and more.
        assert!(bytes.len() > plain.len());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample().to_bytes();
        for n in 0..bytes.len() {
            assert!(
                Bundle::from_bytes(&bytes[..n]).is_err(),
                "prefix of {n} bytes accepted"
            );
        }
    }

    /// A version 1 file: the same layout with the tokenizer stored as is.
    fn version_1(b: &Bundle) -> Vec<u8> {
        let manifest = postcard::to_allocvec(&b.manifest).unwrap();
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
        out.extend_from_slice(&(b.tokenizer_json.len() as u64).to_le_bytes());
        out.extend_from_slice(&(b.graph.len() as u64).to_le_bytes());
        out.extend_from_slice(&manifest);
        out.extend_from_slice(&b.tokenizer_json);
        out.extend_from_slice(&b.graph);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    #[test]
    fn version_1_files_still_read_and_version_2_deflates_the_tokenizer() {
        let mut b = sample();
        b.tokenizer_json =
            br#"{"model": {"vocab": {"[PAD]": 0, "[UNK]": 1, "the": 2}}}"#.repeat(50);
        let v1 = version_1(&b);
        assert_eq!(Bundle::version_of(&v1), Some(1));
        assert_eq!(Bundle::from_bytes(&v1).unwrap(), b);
        let v2 = b.to_bytes();
        assert_eq!(Bundle::version_of(&v2), Some(ONNX_FORMAT_VERSION));
        assert!(v2.len() + 1000 < v1.len(), "{} vs {}", v2.len(), v1.len());
        assert_eq!(Bundle::from_bytes(&v2).unwrap(), b);
        assert_eq!(Bundle::version_of(b"EDGEBERT"), None);
    }

    #[test]
    fn a_tokenizer_section_that_does_not_inflate_is_an_error() {
        let b = sample();
        let mut bytes = version_1(&b);
        bytes[8] = 2; // claims a deflated tokenizer; `{}` is not DEFLATE data
        let end = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..end]);
        bytes[end..].copy_from_slice(&crc.to_le_bytes());
        let err = Bundle::from_bytes(&bytes).unwrap_err();
        assert!(matches!(err, BundleError::Tokenizer(_)), "{err}");
    }

    #[test]
    fn versions_are_named() {
        let mut bytes = sample().to_bytes();
        bytes[8] = 5;
        assert!(matches!(
            Bundle::from_bytes(&bytes),
            Err(BundleError::NewerVersion {
                found: 5,
                supported: 4
            })
        ));
        bytes[8] = 0;
        assert!(matches!(
            Bundle::from_bytes(&bytes),
            Err(BundleError::OlderVersion { .. })
        ));
    }

    proptest! {
        #[test]
        fn any_single_bit_flip_is_caught(bit in 0usize..(8 * 200)) {
            let mut bytes = sample().to_bytes();
            let bit = bit % (8 * bytes.len());
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(Bundle::from_bytes(&bytes).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Bundle::from_bytes(&bytes);
        }

        #[test]
        fn arbitrary_sections_round_trip(
            task in ".{0,20}",
            labels in proptest::collection::vec("[a-z]{1,8}", 2..5),
            tok in proptest::collection::vec(any::<u8>(), 0..100),
            onnx in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut b = sample();
            b.manifest.task = task;
            b.manifest.labels = labels;
            b.tokenizer_json = tok;
            b.graph = onnx;
            prop_assert_eq!(Bundle::from_bytes(&b.to_bytes()).unwrap(), b);
        }
    }
}
