//! Builds a byte-level BPE `tokenizers::Tokenizer` from the `tokenizer.ggml.*` metadata of a
//! GGUF file, the way llama.cpp and `transformers` interpret those keys.
//!
//! Only the `gpt2` tokenizer model (byte-level BPE) is rebuilt here; sentencepiece vocabularies
//! (`llama`) need their `tokenizer.json`, because the GGUF keeps scores, not the normalizer and
//! byte-fallback setup that reproduces the reference ids.

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::{Result, RuntimeError};

/// The Llama-3 pre-tokenizer regex (from Meta's `tokenizer.json`): numbers in groups of three.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The Qwen2 pre-tokenizer regex: as Llama-3 but every digit on its own.
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// The pre-tokenizer families named by `tokenizer.ggml.pre` that we reproduce exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PreTokenizerKind {
    /// GPT-2's byte-level regex; `gpt2`, `default` or no key at all.
    Gpt2,
    /// SmolLM/StarCoder: every digit split off first, then GPT-2's regex.
    SmolLm,
    /// Llama-3's regex (digits in threes), merges ignored for whole-word vocabulary hits.
    Llama3,
    /// Qwen2's regex (single digits) after NFC normalization.
    Qwen2,
}

impl PreTokenizerKind {
    pub(crate) fn from_gguf_name(name: Option<&str>) -> Result<Self> {
        match name {
            // "gpt-2" is the name llama.cpp's converter writes for GPT-2's regex.
            None | Some("gpt2" | "gpt-2" | "default") => Ok(Self::Gpt2),
            Some("smollm") => Ok(Self::SmolLm),
            Some("llama-bpe") | Some("llama3") | Some("llama-v3") => Ok(Self::Llama3),
            Some("qwen2") | Some("deepseek-r1-qwen") => Ok(Self::Qwen2),
            Some(other) => Err(RuntimeError::Tokenizer {
                reason: format!(
                    "unsupported tokenizer.ggml.pre {other:?} (supported: gpt2, gpt-2, default, smollm, \
                     llama-bpe, llama3, qwen2); put the model's tokenizer.json next to it"
                ),
            }),
        }
    }

    pub(crate) fn pre_tokenizer(self) -> Result<PreTokenizerWrapper> {
        // `trim_offsets` only affects offsets, which we never expose; HF files set it to true.
        let byte_level = |use_regex: bool| ByteLevel::new(false, true, use_regex);
        let split = |regex: &str| {
            Split::new(
                SplitPattern::Regex(regex.to_owned()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| RuntimeError::Tokenizer {
                reason: format!("pre-tokenizer regex: {e}"),
            })
        };
        Ok(match self {
            Self::Gpt2 => byte_level(true).into(),
            Self::SmolLm => {
                Sequence::new(vec![Digits::new(true).into(), byte_level(true).into()]).into()
            }
            Self::Llama3 => {
                Sequence::new(vec![split(LLAMA3_REGEX)?.into(), byte_level(false).into()]).into()
            }
            Self::Qwen2 => {
                Sequence::new(vec![split(QWEN2_REGEX)?.into(), byte_level(false).into()]).into()
            }
        })
    }

    /// Llama-3's `tokenizer.json` sets `ignore_merges`: a pre-token that is itself in the
    /// vocabulary becomes that one token even when no merge path reaches it.
    fn ignore_merges(self) -> bool {
        matches!(self, Self::Llama3)
    }

    /// llama.cpp's default when `tokenizer.ggml.add_bos_token` is absent.
    fn default_add_bos(self) -> bool {
        matches!(self, Self::Llama3)
    }
}

/// Everything the runtime's `Tokenizer` needs, read out of GGUF metadata.
pub(crate) struct GgufTokenizer {
    pub(crate) inner: tokenizers::Tokenizer,
    pub(crate) bos: Option<u32>,
    pub(crate) eos: Option<u32>,
    /// End-of-turn / end-of-message ids the file names besides eos.
    pub(crate) extra_end_ids: Vec<u32>,
    pub(crate) add_bos: bool,
    pub(crate) add_eos: bool,
}

pub(crate) fn build(content: &Content) -> Result<GgufTokenizer> {
    let model = string_meta(content, "tokenizer.ggml.model")?;
    match model {
        Some("gpt2") => {}
        Some(other) => {
            return Err(RuntimeError::Tokenizer {
                reason: format!(
                    "GGUF tokenizer model {other:?} is not byte-level BPE and cannot be rebuilt \
                     from the GGUF; put the model's tokenizer.json next to the model file"
                ),
            })
        }
        None => {
            return Err(RuntimeError::Tokenizer {
                reason: "GGUF has no tokenizer.ggml.model; put the model's tokenizer.json next \
                         to the model file"
                    .into(),
            })
        }
    }
    let pre = PreTokenizerKind::from_gguf_name(string_meta(content, "tokenizer.ggml.pre")?)?;
    let tokens = string_array(content, "tokenizer.ggml.tokens")?;
    let merges = string_array(content, "tokenizer.ggml.merges")?
        .into_iter()
        .enumerate()
        .map(|(i, merge)| split_merge(i, merge))
        .collect::<Result<Vec<_>>>()?;
    let token_types = match content.metadata.get("tokenizer.ggml.token_type") {
        Some(value) => Some(int_array(value, "tokenizer.ggml.token_type")?),
        None => None,
    };
    if let Some(types) = &token_types {
        if types.len() != tokens.len() {
            return Err(RuntimeError::Tokenizer {
                reason: format!(
                    "tokenizer.ggml.token_type has {} entries for {} tokens",
                    types.len(),
                    tokens.len()
                ),
            });
        }
    }
    let id_meta = |key: &str| -> Result<Option<u32>> {
        let id = u32_meta(content, key)?;
        match id {
            Some(id) if id as usize >= tokens.len() => Err(RuntimeError::Tokenizer {
                reason: format!(
                    "{key} = {id} is outside the {}-token vocabulary",
                    tokens.len()
                ),
            }),
            _ => Ok(id),
        }
    };
    let bos = id_meta("tokenizer.ggml.bos_token_id")?;
    let eos = id_meta("tokenizer.ggml.eos_token_id")?;
    let unk = id_meta("tokenizer.ggml.unknown_token_id")?;
    let pad = id_meta("tokenizer.ggml.padding_token_id")?;
    let eot = id_meta("tokenizer.ggml.eot_token_id")?;
    let eom = id_meta("tokenizer.ggml.eom_token_id")?;
    let add_bos =
        bool_meta(content, "tokenizer.ggml.add_bos_token")?.unwrap_or(pre.default_add_bos());
    let add_eos = bool_meta(content, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);

    // Later duplicates win, as in llama.cpp's and transformers' GGUF readers.
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(id, token)| (token.clone(), id as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(pre.ignore_merges())
        .build()
        .map_err(|e| RuntimeError::Tokenizer {
            reason: format!("GGUF vocabulary/merges: {e}"),
        })?;

    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(pre.pre_tokenizer()?));
    if pre == PreTokenizerKind::Qwen2 {
        inner.with_normalizer(Some(NFC));
    }
    inner.with_decoder(Some(ByteLevel::new(false, true, true)));

    // Control tokens are matched whole in text (so `<|im_start|>` is one id) and dropped by
    // `decode(.., skip_special = true)`. User-defined tokens are matched whole too but are
    // ordinary text when decoding, as in llama.cpp and in HF files (`special: false`).
    let named_specials: Vec<u32> = [bos, eos, unk, pad, eot, eom]
        .into_iter()
        .flatten()
        .collect();
    let mut special = Vec::new();
    let mut user_defined = Vec::new();
    for (id, token) in tokens.iter().enumerate() {
        let kind = token_types.as_ref().and_then(|t| t.get(id).copied());
        if kind == Some(TOKEN_TYPE_CONTROL) || named_specials.contains(&(id as u32)) {
            special.push(AddedToken::from(token.clone(), true));
        } else if kind == Some(TOKEN_TYPE_USER_DEFINED) {
            user_defined.push(AddedToken::from(token.clone(), false).normalized(false));
        }
    }
    inner.add_special_tokens(&special);
    inner.add_tokens(&user_defined);

    Ok(GgufTokenizer {
        inner,
        bos,
        eos,
        extra_end_ids: [eot, eom].into_iter().flatten().collect(),
        add_bos,
        add_eos,
    })
}

/// GGUF merges are `"left right"`; byte-level symbols never contain a literal space.
fn split_merge(index: usize, merge: String) -> Result<(String, String)> {
    match merge.split_once(' ') {
        Some((left, right)) if !left.is_empty() && !right.is_empty() => {
            Ok((left.to_owned(), right.to_owned()))
        }
        _ => Err(RuntimeError::Tokenizer {
            reason: format!("tokenizer.ggml.merges[{index}] = {merge:?} is not \"left right\""),
        }),
    }
}

fn string_meta<'a>(content: &'a Content, key: &str) -> Result<Option<&'a str>> {
    match content.metadata.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(wrong_type(key, "a string", other)),
    }
}

fn bool_meta(content: &Content, key: &str) -> Result<Option<bool>> {
    match content.metadata.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(wrong_type(key, "a bool", other)),
    }
}

/// Token ids are written as u32 by llama.cpp, but other writers use other integer widths.
fn u32_meta(content: &Content, key: &str) -> Result<Option<u32>> {
    let Some(value) = content.metadata.get(key) else {
        return Ok(None);
    };
    let id = as_i64(value).ok_or_else(|| wrong_type(key, "an integer", value))?;
    u32::try_from(id)
        .map(Some)
        .map_err(|_| RuntimeError::Tokenizer {
            reason: format!("{key} = {id} is not a valid token id"),
        })
}

fn string_array(content: &Content, key: &str) -> Result<Vec<String>> {
    let value = content
        .metadata
        .get(key)
        .ok_or_else(|| RuntimeError::Tokenizer {
            reason: format!("GGUF has no {key}"),
        })?;
    let Value::Array(items) = value else {
        return Err(wrong_type(key, "an array of strings", value));
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => Ok(s.clone()),
            other => Err(wrong_type(key, "an array of strings", other)),
        })
        .collect()
}

fn int_array(value: &Value, key: &str) -> Result<Vec<i64>> {
    let Value::Array(items) = value else {
        return Err(wrong_type(key, "an array of integers", value));
    };
    items
        .iter()
        .map(|item| as_i64(item).ok_or_else(|| wrong_type(key, "an array of integers", item)))
        .collect()
}

fn as_i64(value: &Value) -> Option<i64> {
    Some(match *value {
        Value::U8(v) => v.into(),
        Value::I8(v) => v.into(),
        Value::U16(v) => v.into(),
        Value::I16(v) => v.into(),
        Value::U32(v) => v.into(),
        Value::I32(v) => v.into(),
        Value::U64(v) => i64::try_from(v).ok()?,
        Value::I64(v) => v,
        _ => return None,
    })
}

fn wrong_type(key: &str, expected: &str, found: &Value) -> RuntimeError {
    RuntimeError::Tokenizer {
        reason: format!(
            "GGUF {key} should be {expected}, found {:?}",
            found.value_type()
        ),
    }
}

/// A synthetic GGUF header for tests: a byte-level alphabet, a few merges and two controls.
#[cfg(test)]
pub(crate) fn synthetic_content(extra: Vec<(&str, Value)>) -> Content {
    use std::collections::HashMap;

    let mut alphabet: Vec<String> = ByteLevel::alphabet()
        .into_iter()
        .map(String::from)
        .collect();
    alphabet.sort();
    let mut tokens = vec!["<|endoftext|>".to_owned(), "<|im_end|>".to_owned()];
    tokens.extend(alphabet);
    let merges = [
        "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld",
    ];
    for merge in merges {
        tokens.push(merge.replace(' ', ""));
    }
    let mut types = vec![Value::I32(TOKEN_TYPE_CONTROL as i32); 2];
    types.resize(tokens.len(), Value::I32(1));
    let strings = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
    let mut metadata = HashMap::from([
        (
            "tokenizer.ggml.model".to_owned(),
            Value::String("gpt2".into()),
        ),
        ("tokenizer.ggml.tokens".to_owned(), strings(tokens)),
        (
            "tokenizer.ggml.merges".to_owned(),
            strings(merges.iter().map(|m| m.to_string()).collect()),
        ),
        ("tokenizer.ggml.token_type".to_owned(), Value::Array(types)),
        ("tokenizer.ggml.bos_token_id".to_owned(), Value::U32(0)),
        ("tokenizer.ggml.eos_token_id".to_owned(), Value::U32(1)),
    ]);
    for (key, value) in extra {
        metadata.insert(key.to_owned(), value);
    }
    Content {
        magic: candle_core::quantized::gguf_file::VersionedMagic::GgufV3,
        metadata,
        tensor_infos: HashMap::new(),
        tensor_data_offset: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

    fn pieces(kind: PreTokenizerKind, text: &str) -> Vec<String> {
        let pre = kind.pre_tokenizer().unwrap();
        let mut s = PreTokenizedString::from(text);
        pre.pre_tokenize(&mut s).unwrap();
        s.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(piece, _, _)| piece.to_owned())
            .collect()
    }

    #[test]
    fn pre_tokenizer_names_map_to_families() {
        assert_eq!(
            PreTokenizerKind::from_gguf_name(None).unwrap(),
            PreTokenizerKind::Gpt2
        );
        assert_eq!(
            PreTokenizerKind::from_gguf_name(Some("smollm")).unwrap(),
            PreTokenizerKind::SmolLm
        );
        assert_eq!(
            PreTokenizerKind::from_gguf_name(Some("llama-bpe")).unwrap(),
            PreTokenizerKind::Llama3
        );
        let err = PreTokenizerKind::from_gguf_name(Some("jais")).unwrap_err();
        assert!(err.to_string().contains("\"jais\""), "{err}");
    }

    #[test]
    fn digit_grouping_differs_per_family() {
        // Byte-level pieces: 'Ġ' is the space byte.
        assert_eq!(pieces(PreTokenizerKind::Gpt2, "x 12345"), ["x", "Ġ12345"]);
        assert_eq!(
            pieces(PreTokenizerKind::SmolLm, "x 123"),
            ["x", "Ġ", "1", "2", "3"]
        );
        assert_eq!(
            pieces(PreTokenizerKind::Llama3, "x 12345"),
            ["x", "Ġ", "123", "45"]
        );
        assert_eq!(
            pieces(PreTokenizerKind::Qwen2, "x 123"),
            ["x", "Ġ", "1", "2", "3"]
        );
        assert_eq!(
            pieces(PreTokenizerKind::Llama3, "I'M here"),
            ["I", "'M", "Ġhere"]
        );
    }

    #[test]
    fn synthetic_vocabulary_encodes_with_merges_and_controls() {
        let built = build(&synthetic_content(vec![])).unwrap();
        let enc = built.inner.encode("hello world<|im_end|>", false).unwrap();
        let toks = enc.get_tokens();
        assert_eq!(toks, ["hello", "Ġworld", "<|im_end|>"]);
        assert_eq!(enc.get_ids()[2], 1);
        assert_eq!(built.bos, Some(0));
        assert_eq!(built.eos, Some(1));
        assert!(!built.add_bos);
    }

    #[test]
    fn sentencepiece_gguf_asks_for_tokenizer_json() {
        let content = synthetic_content(vec![(
            "tokenizer.ggml.model",
            Value::String("llama".into()),
        )]);
        let err = build(&content).err().unwrap().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
    }

    #[test]
    fn bad_metadata_is_a_named_error() {
        let content = synthetic_content(vec![(
            "tokenizer.ggml.merges",
            Value::Array(vec![Value::String("nospace".into())]),
        )]);
        let err = build(&content).err().unwrap().to_string();
        assert!(err.contains("merges[0]"), "{err}");

        let content = synthetic_content(vec![("tokenizer.ggml.eos_token_id", Value::U32(1 << 20))]);
        let err = build(&content).err().unwrap().to_string();
        assert!(err.contains("eos_token_id"), "{err}");

        let content = synthetic_content(vec![(
            "tokenizer.ggml.pre",
            Value::String("mystery".into()),
        )]);
        let err = build(&content).err().unwrap().to_string();
        assert!(err.contains("mystery"), "{err}");
    }
}
