//! OpenAI-compatible request and response bodies, plus loramux's extensions (`adapters` in
//! requests, `routing` in responses).

use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
pub struct ChatMessageIn {
    pub role: String,
    pub content: String,
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
    /// Extensions: top-k and repetition penalty.
    pub top_k: Option<usize>,
    pub repetition_penalty: Option<f32>,
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
    pub prompt: String,
    #[serde(flatten)]
    pub params: CommonParams,
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
