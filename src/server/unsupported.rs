//! The OpenAI request fields loramux does not implement, in one place: each is accepted only
//! with the value that means "off" (so clients that always send defaults keep working), and
//! refused otherwise with `unsupported_parameter` naming the field. Fields no rule knows are
//! refused too: nothing that could change the answer is dropped silently.

use super::errors::{clip, ApiError};
use serde_json::{Map, Value};

/// Fields that describe the request to the client's own bookkeeping and never change the
/// answer.
const INERT: &[&str] = &[
    "user",
    "metadata",
    "store",
    "service_tier",
    "parallel_tool_calls",
];

/// Checks the fields a request carried beyond the ones loramux implements.
pub fn check(fields: &Map<String, Value>) -> Result<(), ApiError> {
    for (name, value) in fields {
        if INERT.contains(&name.as_str()) || value.is_null() || means_off(name, value) {
            continue;
        }
        return Err(ApiError::UnsupportedParameter {
            field: clip(name),
            reason: reason(name).to_string(),
        });
    }
    Ok(())
}

/// The value of a known field that asks for nothing loramux lacks.
fn means_off(name: &str, value: &Value) -> bool {
    match name {
        "best_of" => value.as_u64() == Some(1),
        "echo" => value == &Value::Bool(false),
        "top_logprobs" => value.as_u64() == Some(0),
        "frequency_penalty" | "presence_penalty" => value.as_f64() == Some(0.0),
        "tools" | "functions" => value.as_array().is_some_and(Vec::is_empty),
        "logit_bias" => value.as_object().is_some_and(Map::is_empty),
        "tool_choice" | "function_call" => value.as_str() == Some("none"),
        "response_format" => value.get("type").and_then(Value::as_str) == Some("text"),
        "suffix" => value.as_str() == Some(""),
        _ => false,
    }
}

fn reason(name: &str) -> &'static str {
    match name {
        "best_of" => "server-side best-of ranking is not implemented (`n` is)",
        // The endpoint that has the field reads it before this check (`logprobs::requested`).
        "echo" => "`echo` is a field of text completions (/v1/completions)",
        "top_logprobs" => "`top_logprobs` is a chat field; text completions take `logprobs: N`",
        "tools" | "tool_choice" | "functions" | "function_call" => {
            "tool and function calling are not implemented"
        }
        "response_format" => "structured output is not implemented",
        "frequency_penalty" | "presence_penalty" | "logit_bias" => {
            "this penalty is not implemented (`repetition_penalty` is)"
        }
        "suffix" => "insertion (suffix) is not implemented",
        _ => "loramux does not know this field",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn defaults_pass_and_anything_else_is_named() {
        let off = json!({"top_logprobs": 0, "tools": [],
            "tool_choice": "none", "response_format": {"type": "text"}, "echo": false,
            "frequency_penalty": 0, "presence_penalty": 0.0, "logit_bias": {}, "user": "u1",
            "best_of": 1, "seed_extra": null});
        check(&fields(off)).expect("values that mean off are accepted");
        for (field, value) in [
            ("top_logprobs", json!(3)),
            (
                "tools",
                json!([{"type": "function", "function": {"name": "f"}}]),
            ),
            ("tool_choice", json!("required")),
            ("response_format", json!({"type": "json_object"})),
            ("echo", json!(true)),
            ("best_of", json!(3)),
            ("presence_penalty", json!(0.5)),
            ("logit_bias", json!({"42": 100})),
            ("frobnicate", json!(true)),
        ] {
            let err = check(&fields(json!({ field: value }))).expect_err(field);
            assert_eq!(err.code(), "unsupported_parameter", "{field}");
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
    }
}
