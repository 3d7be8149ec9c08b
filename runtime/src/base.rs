//! `BaseModel`: the decoder, its tokenizer and its chat template, loaded together from one
//! GGUF file or Hugging Face folder.

use crate::weights::{self, TokenizerSource, WeightDtype, WeightSource};
use crate::{ChatMessage, ChatTemplate, LlamaModel, ModelBackend, Result, RuntimeError, Tokenizer};
use std::path::Path;

pub struct BaseModel {
    pub model: LlamaModel,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
}

impl BaseModel {
    pub fn load(path: &Path, dtype: WeightDtype) -> Result<Self> {
        Self::load_on(path, dtype, &ModelBackend::Host)
    }

    /// Loads the model on `backend` (see [`crate::DeviceChoice::backend`]).
    pub fn load_on(path: &Path, dtype: WeightDtype, backend: &ModelBackend) -> Result<Self> {
        let mut source = weights::open(path)?;
        let (tokenizer, template) = load_text(source.as_ref(), path)?;
        let model = LlamaModel::load_on(source.as_mut(), dtype, backend)?;
        Ok(Self {
            model,
            tokenizer,
            template,
        })
    }

    /// Token ids of a one-message chat, ready for the assistant's reply.
    pub fn chat_prompt_ids(&self, user: &str) -> Result<Vec<u32>> {
        self.chat_ids(&[ChatMessage::new("user", user)])
    }

    /// Renders the chat template (with the generation prompt) and tokenizes it. Special
    /// tokens come from the rendered text, so no BOS is added on top.
    pub fn chat_ids(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let text = self.template.render(messages, true)?;
        self.tokenizer.encode(&text, false)
    }

    /// The trainable twin of this model's weights, read again from `path`.
    pub fn train_model(path: &Path) -> Result<crate::train::TrainModel> {
        crate::train::TrainModel::load(weights::open(path)?.as_mut())
    }

    /// Token ids of a raw prompt: the text as is, BOS only when the model asks for it.
    pub fn raw_ids(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text, true)
    }
}

/// The tokenizer and chat template of a model, without loading its weights.
pub fn load_text(source: &dyn WeightSource, path: &Path) -> Result<(Tokenizer, ChatTemplate)> {
    match source.tokenizer_source() {
        TokenizerSource::Gguf(content) => {
            let tokenizer = Tokenizer::from_gguf(&content)?;
            let template = ChatTemplate::from_gguf(&content, &tokenizer)?;
            Ok((tokenizer, template))
        }
        TokenizerSource::File {
            tokenizer_json,
            chat_template,
        } => {
            let tokenizer = Tokenizer::from_file(&tokenizer_json)?;
            let dir = tokenizer_json.parent().unwrap_or(Path::new("."));
            let template = match chat_template {
                Some(_) => ChatTemplate::from_tokenizer_config(dir.join("tokenizer_config.json"))?,
                None => ChatTemplate::chatml(None, None)?,
            };
            Ok((tokenizer, template))
        }
        TokenizerSource::Absent => Err(RuntimeError::UnsupportedModel {
            reason: format!("{} has no tokenizer", path.display()),
        }),
    }
}

/// Token ids of a one-message chat rendered with `template`, ready for the reply.
pub fn chat_prompt_ids(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    user: &str,
) -> Result<Vec<u32>> {
    let text = template.render(&[ChatMessage::new("user", user)], true)?;
    tokenizer.encode(&text, false)
}
