//! OpenAI-compatible request and response bodies, plus loramux's extensions (`adapters` in
//! requests, `routing` in responses).

use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
pub struct ChatMessageIn {
    pub role: String,
    /// A string, an array of content parts, or null (an assistant turn that only called
    /// tools).
    #[serde(default)]
    pub content: Option<MessageContent>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One part of an array `content`: `{"type": "text", "text": ...}`; other types (images,
/// audio, files) are kept as their type name so the request can be refused by it.
#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

impl ChatMessageIn {
    /// The message's text. Text parts are joined by newlines (as vLLM does); a part of any
    /// other type is refused by name, and so is a null content outside an assistant turn.
    pub fn text(&self, index: usize) -> Result<String, super::errors::ApiError> {
        use super::errors::{clip, ApiError};
        match &self.content {
            Some(MessageContent::Text(t)) => Ok(t.clone()),
            None if self.role == "assistant" => Ok(String::new()),
            None => Err(ApiError::InvalidRequest(format!(
                "messages[{index}].content is null; only an assistant turn may omit it"
            ))),
            Some(MessageContent::Parts(parts)) => {
                let mut texts = Vec::with_capacity(parts.len());
                for (j, part) in parts.iter().enumerate() {
                    match (part.kind.as_str(), &part.text) {
                        ("text", Some(t)) => texts.push(t.as_str()),
                        ("text", None) => {
                            return Err(ApiError::InvalidRequest(format!(
                                "messages[{index}].content[{j}] has no `text`"
                            )))
                        }
                        (other, _) => {
                            return Err(ApiError::UnsupportedParameter {
                                field: format!("messages[{index}].content[{j}].type"),
                                reason: format!(
                                    "content parts of type {:?} are not implemented (text only)",
                                    clip(other)
                                ),
                            })
                        }
                    }
                }
                Ok(texts.join("\n"))
            }
        }
    }
}

/// `stream_options` of a streamed request.
#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
pub struct AdapterChoice {
    pub id: String,
    #[serde(default = "one")]
    pub weight: f32,
}

fn one() -> f32 {
    1.0
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// Fields shared by chat and text completions.
#[derive(Debug, Deserialize)]
pub struct CommonParams {
    #[serde(default = "auto")]
    pub model: String,
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stream: bool,
    pub adapters: Option<Vec<AdapterChoice>>,
    pub stream_options: Option<StreamOptions>,
    /// Choices to generate (non-streamed responses).
    pub n: Option<usize>,
    /// Extensions: top-k and repetition penalty.
    pub top_k: Option<usize>,
    pub repetition_penalty: Option<f32>,
    /// Every other field the client sent: checked by `unsupported::check`, never dropped.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

fn auto() -> String {
    "auto".into()
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessageIn>,
    #[serde(flatten)]
    pub params: CommonParams,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: PromptInput,
    #[serde(flatten)]
    pub params: CommonParams,
}

/// A text completion's `prompt`: text or token ids, alone or as a batch of one (what
/// lm-evaluation-harness sends).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Tokens(Vec<u32>),
    Texts(Vec<String>),
    TokenLists(Vec<Vec<u32>>),
}

/// One prompt, as text or as token ids.
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
}

impl PromptInput {
    /// The one prompt of the request; batches of several are refused by name.
    pub fn single(self) -> Result<Prompt, super::errors::ApiError> {
        let batch = |n: usize| super::errors::ApiError::UnsupportedParameter {
            field: "prompt".into(),
            reason: format!(
                "a batch of {n} prompts is not implemented: send one prompt per request"
            ),
        };
        match self {
            PromptInput::Text(t) => Ok(Prompt::Text(t)),
            PromptInput::Tokens(ids) => Ok(Prompt::Tokens(ids)),
            PromptInput::Texts(mut v) if v.len() == 1 => Ok(Prompt::Text(v.remove(0))),
            PromptInput::TokenLists(mut v) if v.len() == 1 => Ok(Prompt::Tokens(v.remove(0))),
            PromptInput::Texts(v) => Err(batch(v.len())),
            PromptInput::TokenLists(v) => Err(batch(v.len())),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Routing {
    /// `base`, `adapter`, `mixture` or `auto`.
    pub mode: &'static str,
    pub candidates: Vec<Scored>,
    /// The candidates' prior weights; under a learned gate each token reweighs them.
    pub weights: Vec<Weighted>,
    /// Present only when the learned gate mixed this request (the engine said so when it
    /// admitted it): which adapters it scored per token and which kept their prior weight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateUse>,
    /// What the learned gate gave each adapter for this response (once generation ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate_weights: Option<super::gate_report::GateWeights>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GateUse {
    /// `learned`: the per-token, per-layer gate.
    pub kind: &'static str,
    /// Experts kept per token and layer.
    pub top_k: usize,
    /// Adapters the gate scored from each token's hidden state.
    pub scored: Vec<String>,
    /// Adapters the gate was not trained on: they kept their retrieval prior as weight.
    pub prior: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Scored {
    pub id: String,
    pub score: f32,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Weighted {
    pub id: String,
    pub weight: f32,
}

#[derive(Debug, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}
