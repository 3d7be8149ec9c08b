//! Incremental detokenization for streaming: ids arrive one at a time, text leaves only once
//! it is complete UTF-8.
//!
//! Byte-level BPE splits multi-byte characters across tokens (an emoji is often three tokens),
//! and decoding a prefix of them yields U+FFFD. We decode a short window of recent ids and
//! hold text back while it ends in U+FFFD. The window starts one emitted chunk back because
//! some decoders (sentencepiece's leading-space rule) render a token differently at the start.

use crate::Result;

use super::Tokenizer;

/// Streaming detokenizer for one sequence. Build with [`Tokenizer::stream`].
#[derive(Debug, Clone)]
pub struct TokenStream {
    tokenizer: Tokenizer,
    skip_special: bool,
    /// The last emitted chunk's ids (decode context) followed by the pending ones; older ids
    /// are dropped so each step decodes a few ids, not the whole sequence.
    ids: Vec<u32>,
    /// `ids[..emitted]` is the last emitted chunk.
    emitted: usize,
}

impl TokenStream {
    pub fn new(tokenizer: Tokenizer, skip_special: bool) -> Self {
        Self {
            tokenizer,
            skip_special,
            ids: Vec::new(),
            emitted: 0,
        }
    }

    /// Feeds one id; returns the text it completes, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let Some(new) = self.pending_text()? else {
            return Ok(None);
        };
        // U+FFFD at the end means a character is still missing bytes; wait for the next id.
        if new.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        self.ids.drain(..self.emitted);
        self.emitted = self.ids.len();
        Ok(Some(new))
    }

    /// Whatever is still held back at the end of generation, with incomplete characters
    /// rendered as U+FFFD.
    pub fn finish(&mut self) -> Result<Option<String>> {
        let rest = self.pending_text()?;
        self.ids.clear();
        self.emitted = 0;
        Ok(rest)
    }

    /// The text the pending ids add after the context chunk, if any.
    fn pending_text(&self) -> Result<Option<String>> {
        let context = self.decode(&self.ids[..self.emitted])?;
        let text = self.decode(&self.ids)?;
        Ok(text
            .get(context.len()..)
            .filter(|new| !new.is_empty())
            .map(str::to_owned))
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, self.skip_special)
    }
}

#[cfg(test)]
mod tests {
    use crate::tokenizer::{gguf::synthetic_content, test_gguf};
    use crate::Tokenizer;

    #[test]
    fn emoji_split_across_tokens_is_emitted_whole() {
        let Some(content) = test_gguf() else { return };
        let tok = Tokenizer::from_gguf(&content).unwrap();
        let text = "I love 🦀 and 🎉!";
        // 🦀 is " ðŁ" + "¦" + "Ģ": ids 15107, 116, 218 (see the reference ids in mod.rs).
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(&ids[2..5], [15107, 116, 218]);

        let mut stream = tok.stream(false);
        let chunks: Vec<Option<String>> = ids.iter().map(|&id| stream.push(id).unwrap()).collect();
        assert_eq!(chunks[2], None);
        assert_eq!(chunks[3], None);
        assert_eq!(chunks[4].as_deref(), Some(" 🦀"));
        assert_eq!(stream.finish().unwrap(), None);
        let joined: String = chunks.into_iter().flatten().collect();
        assert_eq!(joined, text);
        assert!(!joined.contains('\u{FFFD}'));
    }

    #[test]
    fn special_tokens_are_skipped_when_asked() {
        let tok = Tokenizer::from_gguf(&synthetic_content(vec![])).unwrap();
        let ids = tok.encode("hello world<|im_end|>", false).unwrap();
        let mut stream = tok.stream(true);
        let text: String = ids
            .iter()
            .filter_map(|&id| stream.push(id).unwrap())
            .collect();
        assert_eq!(text, "hello world");

        let mut stream = tok.stream(false);
        let text: String = ids
            .iter()
            .filter_map(|&id| stream.push(id).unwrap())
            .collect();
        assert_eq!(text, "hello world<|im_end|>");
    }

    #[test]
    fn finish_flushes_an_incomplete_character() {
        let tok = Tokenizer::from_gguf(&synthetic_content(vec![])).unwrap();
        // The first byte of a 4-byte UTF-8 sequence, alone.
        let id = tok.token_id("ð").unwrap();
        let mut stream = tok.stream(false);
        assert_eq!(stream.push(id).unwrap(), None);
        assert_eq!(stream.finish().unwrap().as_deref(), Some("\u{FFFD}"));
    }
}
