//! Chat templates: the model's own Jinja template (GGUF `tokenizer.chat_template`, or a
//! `tokenizer_config.json`) rendered to a prompt string the way Hugging Face
//! `apply_chat_template` does, with a documented ChatML fallback for models without one.
//!
//! The environment mirrors transformers' `ImmutableSandboxedEnvironment`: `trim_blocks` and
//! `lstrip_blocks` on, loop controls, `raise_exception(msg)`, Python string/dict methods
//! (`.strip()`, `.startswith()`, `.items()` via minijinja-contrib's pycompat), and a `tojson`
//! that writes what Python's `json.dumps(ensure_ascii=False)` writes.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value as GgufValue};
use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::{Result, RuntimeError, Tokenizer};

const TEMPLATE_NAME: &str = "chat_template";

/// The fallback for models that ship no template: ChatML, which SmolLM, Qwen and many
/// fine-tunes use. A model that never saw these markers will read them as plain text, so
/// callers should log [`ChatTemplate::is_fallback`].
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template plus the special-token strings it may reference.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    is_fallback: bool,
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error is reported here, not at the first request.
    pub fn new(
        source: impl Into<String>,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<Self> {
        Ok(Self {
            env: environment(source.into())?,
            bos_token,
            eos_token,
            is_fallback: false,
        })
    }

    /// The ChatML fallback ([`CHATML_TEMPLATE`]).
    pub fn chatml(bos_token: Option<String>, eos_token: Option<String>) -> Result<Self> {
        let mut template = Self::new(CHATML_TEMPLATE, bos_token, eos_token)?;
        template.is_fallback = true;
        Ok(template)
    }

    /// The GGUF's `tokenizer.chat_template`, or ChatML when it has none. BOS/EOS strings come
    /// from the tokenizer built from the same file.
    pub fn from_gguf(content: &Content, tokenizer: &Tokenizer) -> Result<Self> {
        let bos = tokenizer.bos_id().and_then(|id| tokenizer.token_str(id));
        let eos = tokenizer.eos_id().and_then(|id| tokenizer.token_str(id));
        match content.metadata.get("tokenizer.chat_template") {
            None => Self::chatml(bos, eos),
            Some(GgufValue::String(source)) => Self::new(source.clone(), bos, eos),
            Some(other) => Err(RuntimeError::ChatTemplate {
                reason: format!(
                    "GGUF tokenizer.chat_template should be a string, found {:?}",
                    other.value_type()
                ),
            }),
        }
    }

    /// The `chat_template` of a `tokenizer_config.json` (a string, or a list of named
    /// templates of which we take `default`), else a `chat_template.jinja` beside it (where
    /// newer transformers save it), else ChatML.
    pub fn from_tokenizer_config(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| RuntimeError::io(path, e))?;
        let config: TokenizerConfig =
            serde_json::from_str(&text).map_err(|e| RuntimeError::ChatTemplate {
                reason: format!("{}: {e}", path.display()),
            })?;
        let bos = config.bos_token.map(SpecialToken::into_content);
        let eos = config.eos_token.map(SpecialToken::into_content);
        let source = match config.chat_template {
            Some(ConfigTemplate::One(source)) => Some(source),
            Some(ConfigTemplate::Named(list)) => {
                let default = list.into_iter().find(|t| t.name == "default");
                Some(
                    default
                        .map(|t| t.template)
                        .ok_or_else(|| RuntimeError::ChatTemplate {
                            reason: format!(
                                "{}: no chat_template named \"default\"",
                                path.display()
                            ),
                        })?,
                )
            }
            None => {
                let jinja = path.with_file_name("chat_template.jinja");
                match std::fs::read_to_string(&jinja) {
                    Ok(source) => Some(source),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(RuntimeError::io(jinja, e)),
                }
            }
        };
        match source {
            Some(source) => Self::new(source, bos, eos),
            None => Self::chatml(bos, eos),
        }
    }

    /// Whether this is the ChatML fallback rather than the model's own template.
    pub fn is_fallback(&self) -> bool {
        self.is_fallback
    }

    /// Renders the conversation; `add_generation_prompt` appends the assistant header.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(template_error)?;
        // Like transformers, pass only the special tokens the model has: a template testing
        // `bos_token is defined` must see the same thing here.
        let mut context = BTreeMap::from([
            ("messages", Value::from_serialize(messages)),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
        ]);
        if let Some(bos) = &self.bos_token {
            context.insert("bos_token", Value::from(bos.as_str()));
        }
        if let Some(eos) = &self.eos_token {
            context.insert("eos_token", Value::from(eos.as_str()));
        }
        template.render(context).map_err(template_error)
    }
}

fn environment(source: String) -> Result<Environment<'static>> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_filter("tojson", tojson);
    env.add_template_owned(TEMPLATE_NAME, source)
        .map_err(template_error)?;
    Ok(env)
}

fn template_error(e: Error) -> RuntimeError {
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        reason.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    RuntimeError::ChatTemplate { reason }
}

/// Templates call this to reject a conversation (e.g. roles that do not alternate).
fn raise_exception(message: String) -> std::result::Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("template raised an exception: {message}"),
    ))
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent)`. minijinja's
/// own filter escapes `<`, `>`, `&` and `'` for HTML and writes compact separators, which
/// would change the prompt a model was trained on (tool schemas are rendered this way).
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let written = match indent {
        Some(n) => {
            let spaces = " ".repeat(n);
            let formatter = serde_json::ser::PrettyFormatter::with_indent(spaces.as_bytes());
            value.serialize(&mut serde_json::Serializer::with_formatter(
                &mut out, formatter,
            ))
        }
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            PythonCompactFormatter,
        )),
    };
    written.map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let json = String::from_utf8(out)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    Ok(Value::from_safe_string(json))
}

/// Python's default `json.dumps` separators: `", "` and `": "`.
struct PythonCompactFormatter;

impl serde_json::ser::Formatter for PythonCompactFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// The parts of a `tokenizer_config.json` the template needs.
#[derive(Deserialize)]
struct TokenizerConfig {
    chat_template: Option<ConfigTemplate>,
    bos_token: Option<SpecialToken>,
    eos_token: Option<SpecialToken>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ConfigTemplate {
    One(String),
    Named(Vec<NamedTemplate>),
}

#[derive(Deserialize)]
struct NamedTemplate {
    name: String,
    template: String,
}

/// `"<s>"` or `{"content": "<s>", ...}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum SpecialToken {
    Text(String),
    Added { content: String },
}

impl SpecialToken {
    fn into_content(self) -> String {
        match self {
            Self::Text(s) | Self::Added { content: s } => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::test_gguf;

    fn user(text: &str) -> ChatMessage {
        ChatMessage::new("user", text)
    }

    #[test]
    fn smollm2_template_matches_transformers() {
        let Some(content) = test_gguf() else { return };
        let tokenizer = Tokenizer::from_gguf(&content).unwrap();
        let template = ChatTemplate::from_gguf(&content, &tokenizer).unwrap();
        assert!(!template.is_fallback());
        // Expected strings: transformers 5.x `tokenizer.apply_chat_template(messages,
        // tokenize=False, add_generation_prompt=True)` on the same GGUF, run once.
        let prompt = template.render(&[user("What is 2+2?")], true).unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by \
             Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        let with_system = [
            ChatMessage::new("system", "You are a pirate."),
            user("What is 2+2?"),
        ];
        assert_eq!(
            template.render(&with_system, true).unwrap(),
            "<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\n\
             What is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
        let turns = [
            user("Hi"),
            ChatMessage::new("assistant", "Hello!"),
            user("Bye"),
        ];
        assert_eq!(
            template.render(&turns, true).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by \
             Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n\
             Hello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
        );
        let without_prompt = template.render(&[user("Hi")], false).unwrap();
        assert!(without_prompt.ends_with("<|im_start|>user\nHi<|im_end|>\n"));
    }

    #[test]
    fn raise_exception_becomes_an_error() {
        let source = "{% for m in messages %}{% if m.role == 'system' %}\
                      {{ raise_exception('System role not supported') }}{% endif %}\
                      {{ m.content }}{% endfor %}";
        let template = ChatTemplate::new(source, None, None).unwrap();
        assert_eq!(template.render(&[user("ok")], false).unwrap(), "ok");
        let err = template
            .render(&[ChatMessage::new("system", "x")], false)
            .unwrap_err();
        assert!(matches!(err, RuntimeError::ChatTemplate { .. }));
        assert!(
            err.to_string().contains("System role not supported"),
            "{err}"
        );
    }

    #[test]
    fn syntax_error_is_reported_at_load() {
        let err =
            ChatTemplate::new("{% for m in messages %}{{ m.content }}", None, None).unwrap_err();
        assert!(matches!(err, RuntimeError::ChatTemplate { .. }));
        assert!(err.to_string().contains("syntax error"), "{err}");
    }

    /// Llama-3 Instruct's shape: `bos_token`, Python `.strip()`, `{% break %}`, block tags on
    /// their own indented lines (trim_blocks + lstrip_blocks remove that whitespace; the
    /// newlines after `}}` stay, as in Jinja2). Expected text from transformers'
    /// `_compile_jinja_template(LLAMA3_STYLE).render(...)`, the path `apply_chat_template` takes.
    const LLAMA3_STYLE: &str = "{{- bos_token }}
{% for message in messages %}
    {% if message['role'] == 'system' and not loop.first %}
        {{- raise_exception('system message must come first') }}
    {% endif %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}
    {{- message['content'].strip() + '<|eot_id|>' }}
    {% if message['content'].startswith('STOP') %}{% break %}{% endif %}
{% endfor %}
{% if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{% endif %}
";

    #[test]
    fn llama3_style_template_renders() {
        let template = ChatTemplate::new(
            LLAMA3_STYLE,
            Some("<|begin_of_text|>".into()),
            Some("<|eot_id|>".into()),
        )
        .unwrap();
        let messages = [
            ChatMessage::new("system", "  Be brief.\n"),
            user(" Hi there "),
        ];
        assert_eq!(
            template.render(&messages, true).unwrap(),
            "<|begin_of_text|>\n<|start_header_id|>system<|end_header_id|>\n\nBe brief.\
             <|eot_id|>\n<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>\n\
             <|start_header_id|>assistant<|end_header_id|>\n\n\n"
        );
        let stop = [user("STOP here"), user("never rendered")];
        assert_eq!(
            template.render(&stop, false).unwrap(),
            "<|begin_of_text|>\n<|start_header_id|>user<|end_header_id|>\n\nSTOP here<|eot_id|>\n"
        );
        let late_system = [user("a"), ChatMessage::new("system", "b")];
        let err = template.render(&late_system, false).unwrap_err();
        assert!(
            err.to_string().contains("system message must come first"),
            "{err}"
        );
    }

    #[test]
    fn missing_bos_token_is_undefined_like_transformers() {
        let template =
            ChatTemplate::new("{% if bos_token is defined %}B{% endif %}x", None, None).unwrap();
        assert_eq!(template.render(&[], false).unwrap(), "x");
    }

    #[test]
    fn tojson_writes_what_python_json_dumps_writes() {
        let source = "{{ {'a': [1, 'é<&>'], 'b': none} | tojson }}|{{ [1, {'k': true}] | tojson(indent=2) }}";
        let template = ChatTemplate::new(source, None, None).unwrap();
        // Python: json.dumps(x, ensure_ascii=False) and json.dumps(y, indent=2).
        assert_eq!(
            template.render(&[], false).unwrap(),
            "{\"a\": [1, \"é<&>\"], \"b\": null}|[\n  1,\n  {\n    \"k\": true\n  }\n]"
        );
    }

    #[test]
    fn chatml_fallback_and_tokenizer_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("tokenizer_config.json");
        std::fs::write(&config, r#"{"eos_token": {"content": "<|im_end|>"}}"#).unwrap();
        let template = ChatTemplate::from_tokenizer_config(&config).unwrap();
        assert!(template.is_fallback());
        assert_eq!(
            template.render(&[user("hi")], true).unwrap(),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );

        std::fs::write(
            &config,
            r#"{"bos_token": "<s>", "chat_template": [
                {"name": "tool_use", "template": "tools"},
                {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}"}]}"#,
        )
        .unwrap();
        let template = ChatTemplate::from_tokenizer_config(&config).unwrap();
        assert!(!template.is_fallback());
        assert_eq!(template.render(&[user("hi")], false).unwrap(), "<s>hi");

        std::fs::write(&config, "{}").unwrap();
        std::fs::write(
            dir.path().join("chat_template.jinja"),
            "[{{ messages[0].content }}]\n",
        )
        .unwrap();
        let template = ChatTemplate::from_tokenizer_config(&config).unwrap();
        // Jinja drops the single trailing newline of a template source, as transformers does.
        assert_eq!(template.render(&[user("hi")], false).unwrap(), "[hi]");
    }
}
