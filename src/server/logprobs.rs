//! OpenAI's log-probability fields: what a request asks for (chat: `logprobs: true` with
//! `top_logprobs: N`; text completions: `logprobs: N` and `echo`) and the two response
//! shapes (chat's `logprobs.content` entries, completions' parallel `tokens` /
//! `token_logprobs` / `top_logprobs` / `text_offset` lists).
//!
//! Each token is reported as its own decoded text; a token that is only part of a UTF-8
//! character decodes to U+FFFD, as in vLLM.

use super::errors::ApiError;
use super::generation::Kind;
use loramux_runtime::{LogprobRequest, TokenLogprob, Tokenizer, MAX_TOP_LOGPROBS};
use serde_json::{json, Map, Value};

/// What the request asks for, taking the fields it reads out of `other` (the rest are left
/// for `unsupported::check`: `echo` on chat, `top_logprobs` on text completions).
pub fn requested(
    kind: Kind,
    other: &mut Map<String, Value>,
) -> Result<(LogprobRequest, bool), ApiError> {
    let count = |field: &str, value: &Value| -> Result<usize, ApiError> {
        match value.as_u64() {
            Some(n) if n as usize <= MAX_TOP_LOGPROBS => Ok(n as usize),
            _ => Err(ApiError::InvalidRequest(format!(
                "`{field}` must be an integer from 0 to {MAX_TOP_LOGPROBS}"
            ))),
        }
    };
    let take =
        |other: &mut Map<String, Value>, field: &str| other.remove(field).filter(|v| !v.is_null());
    match kind {
        Kind::Chat => {
            let on = match take(other, "logprobs") {
                None => false,
                Some(Value::Bool(b)) => b,
                Some(_) => {
                    return Err(ApiError::InvalidRequest(
                        "`logprobs` must be true or false".into(),
                    ))
                }
            };
            let top = match take(other, "top_logprobs") {
                None => 0,
                Some(v) => count("top_logprobs", &v)?,
            };
            if top > 0 && !on {
                return Err(ApiError::InvalidRequest(
                    "`top_logprobs` needs `logprobs: true`".into(),
                ));
            }
            Ok((
                LogprobRequest {
                    generated: on,
                    prompt: false,
                    top,
                },
                false,
            ))
        }
        Kind::Text => {
            let top = match take(other, "logprobs") {
                None => None,
                Some(v) => Some(count("logprobs", &v)?),
            };
            let echo = match take(other, "echo") {
                None => false,
                Some(Value::Bool(b)) => b,
                Some(_) => {
                    return Err(ApiError::InvalidRequest(
                        "`echo` must be true or false".into(),
                    ))
                }
            };
            Ok((
                LogprobRequest {
                    generated: top.is_some(),
                    prompt: top.is_some() && echo,
                    top: top.unwrap_or(0),
                },
                echo,
            ))
        }
    }
}

fn token_text(tokenizer: &Tokenizer, id: u32) -> String {
    tokenizer.decode(&[id], false).unwrap_or_default()
}

/// A log-probability as JSON: `-inf` (a NaN logit upstream) has no JSON number, so it is
/// the most negative finite f32, as vLLM reports it.
fn number(logprob: f32) -> f32 {
    if logprob.is_finite() {
        logprob
    } else {
        f32::MIN
    }
}

/// Chat's `logprobs` object for a run of generated tokens.
pub fn chat(tokenizer: &Tokenizer, tokens: &[TokenLogprob]) -> Value {
    let entry = |id: u32, logprob: f32| {
        let token = token_text(tokenizer, id);
        json!({"token": token, "logprob": number(logprob), "bytes": token.as_bytes()})
    };
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let mut e = entry(t.token, t.logprob);
            e["top_logprobs"] = t.top.iter().map(|&(id, lp)| entry(id, lp)).collect();
            e
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// Text completions' `logprobs` object. `first` is the prompt's first token when the
/// prompt is echoed (it has no log-probability: nothing precedes it); `text_offset` counts
/// characters from the start of the returned text, beginning at `offset`.
pub fn completion(
    tokenizer: &Tokenizer,
    first: Option<u32>,
    tokens: &[TokenLogprob],
    offset: usize,
) -> Value {
    let mut stream = tokenizer.stream(false);
    let mut at = offset;
    let (mut texts, mut logprobs, mut tops, mut offsets) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut push = |id: u32, lp: Option<&TokenLogprob>| {
        offsets.push(at);
        at += stream
            .push(id)
            .ok()
            .flatten()
            .map_or(0, |piece| piece.chars().count());
        texts.push(token_text(tokenizer, id));
        logprobs.push(lp.map(|l| json!(number(l.logprob))).unwrap_or(Value::Null));
        tops.push(lp.map_or(Value::Null, |l| {
            let top: Map<String, Value> = l
                .top
                .iter()
                .map(|&(id, lp)| (token_text(tokenizer, id), json!(number(lp))))
                .collect();
            Value::Object(top)
        }));
    };
    if let Some(id) = first {
        push(id, None);
    }
    for t in tokens {
        push(t.token, Some(t));
    }
    json!({"tokens": texts, "token_logprobs": logprobs, "top_logprobs": tops,
        "text_offset": offsets})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn each_endpoint_reads_its_own_fields_and_leaves_the_others_for_refusal() {
        let mut chat = fields(json!({"logprobs": true, "top_logprobs": 3, "echo": true}));
        let (want, echo) = requested(Kind::Chat, &mut chat).unwrap();
        assert_eq!(
            want,
            LogprobRequest {
                generated: true,
                prompt: false,
                top: 3
            }
        );
        assert!(!echo);
        assert!(
            chat.contains_key("echo"),
            "chat has no echo: left for refusal"
        );

        let mut text = fields(json!({"logprobs": 2, "echo": true, "top_logprobs": 1}));
        let (want, echo) = requested(Kind::Text, &mut text).unwrap();
        assert_eq!(
            want,
            LogprobRequest {
                generated: true,
                prompt: true,
                top: 2
            }
        );
        assert!(echo);
        assert!(text.contains_key("top_logprobs"));

        let mut echo_only = fields(json!({"echo": true}));
        let (want, echo) = requested(Kind::Text, &mut echo_only).unwrap();
        assert!(echo && !want.any());

        for (kind, bad) in [
            (Kind::Chat, json!({"top_logprobs": 2})),
            (Kind::Chat, json!({"logprobs": true, "top_logprobs": 21})),
            (Kind::Chat, json!({"logprobs": 1})),
            (Kind::Text, json!({"logprobs": true})),
            (Kind::Text, json!({"logprobs": -1})),
        ] {
            let err = requested(kind, &mut fields(bad.clone())).expect_err(&bad.to_string());
            assert_eq!(err.code(), "invalid_request", "{bad}");
        }
    }
}
