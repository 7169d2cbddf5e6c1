//! The chat template of a checkpoint (Jinja, as transformers' `apply_chat_template` renders it),
//! rendered with `minijinja`: from `chat_template.jinja` when the checkpoint has one (how
//! transformers 4.43 and later save it), else from `chat_template` in `tokenizer_config.json`.

use minijinja::{context, Environment, Error, ErrorKind, Value};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

/// A checkpoint's chat template with the special-token strings it may refer to.
pub struct ChatTemplate {
    source: String,
    origin: PathBuf,
    bos_token: String,
    eos_token: String,
}

/// One message of a conversation.
#[derive(serde::Serialize)]
pub struct Message<'a> {
    /// `system`, `user` or `assistant`.
    pub role: &'a str,
    /// What was said.
    pub content: &'a str,
}

impl ChatTemplate {
    /// The chat template of the checkpoint in `dir`; an error naming the files looked in when
    /// it has none.
    pub fn open(dir: &Path) -> Result<ChatTemplate, String> {
        let config_path = dir.join("tokenizer_config.json");
        let config: Json = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| format!("{}: not valid JSON: {e}", config_path.display()))?,
            Err(_) => Json::Null,
        };
        let token = |key: &str| -> String {
            match &config[key] {
                Json::String(s) => s.clone(),
                // An AddedToken written out: {"content": "<s>", ...}.
                Json::Object(o) => o.get("content").and_then(Json::as_str).unwrap_or("").into(),
                _ => String::new(),
            }
        };
        let (bos_token, eos_token) = (token("bos_token"), token("eos_token"));
        let jinja_path = dir.join("chat_template.jinja");
        if let Ok(source) = std::fs::read_to_string(&jinja_path) {
            return Ok(ChatTemplate {
                source,
                origin: jinja_path,
                bos_token,
                eos_token,
            });
        }
        let source = match &config["chat_template"] {
            Json::String(s) => s.clone(),
            // Several named templates: [{"name": "default", "template": "..."}, ...].
            Json::Array(named) => named
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .ok_or_else(|| {
                    format!(
                        "{}: `chat_template` lists templates but none is named `default`",
                        config_path.display()
                    )
                })?
                .to_string(),
            Json::Null => {
                return Err(format!(
                    "{}: the checkpoint has no chat template (neither chat_template.jinja nor \
                     `chat_template` in tokenizer_config.json), which --chat needs",
                    dir.display()
                ))
            }
            other => {
                return Err(format!(
                    "{}: `chat_template` must be a string, not {other}",
                    config_path.display()
                ))
            }
        };
        Ok(ChatTemplate {
            source,
            origin: config_path,
            bos_token,
            eos_token,
        })
    }

    /// The prompt text for `messages`, ending with the template's opening of the assistant's
    /// turn (`add_generation_prompt`).
    pub fn render(&self, messages: &[Message]) -> Result<String, String> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        // Llama 3's templates put today's date in the system prompt, as transformers does.
        env.add_function("strftime_now", |format: String| -> Result<String, Error> {
            use std::fmt::Write;
            let mut date = String::new();
            write!(date, "{}", chrono::Local::now().format(&format)).map_err(|_| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!("bad date format {format:?}"),
                )
            })?;
            Ok(date)
        });
        let fail = |e: Error| {
            let mut text = e.to_string();
            if let Some(detail) = e.detail() {
                text = format!("{text}: {detail}");
            }
            format!(
                "{}: the chat template failed to render: {}",
                self.origin.display(),
                text
            )
        };
        env.add_template("chat", &self.source).map_err(fail)?;
        let template = env.get_template("chat").map_err(fail)?;
        template
            .render(context! {
                messages => Value::from(minijinja::value::Serde(messages)),
                add_generation_prompt => true,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-Instruct's template, as its tokenizer_config.json has it.
    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    fn template(source: &str) -> ChatTemplate {
        ChatTemplate {
            source: source.into(),
            origin: "tokenizer_config.json".into(),
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
        }
    }

    #[test]
    fn chatml_renders_as_transformers_does() {
        let user = [Message {
            role: "user",
            content: "Hi?",
        }];
        assert_eq!(
            template(CHATML).render(&user).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
             Face<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
        );
        let with_system = [
            Message {
                role: "system",
                content: "Be brief.",
            },
            Message {
                role: "user",
                content: "Hi?",
            },
        ];
        assert_eq!(
            template(CHATML).render(&with_system).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_methods_special_tokens_and_raise_exception_work() {
        let llama2 = "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}[INST] {{ m['content'].strip() }} [/INST]{% endfor %}";
        let user = [Message {
            role: "user",
            content: "  hello  ",
        }];
        assert_eq!(
            template(llama2).render(&user).unwrap(),
            "<s>[INST] hello [/INST]"
        );
        let system = [Message {
            role: "system",
            content: "x",
        }];
        let err = template(llama2).render(&system).unwrap_err();
        assert!(
            err.contains("tokenizer_config.json") && err.contains("no system role"),
            "{err}"
        );
        let err = template("{% for %}").render(&user).unwrap_err();
        assert!(err.contains("failed to render"), "{err}");
    }
}
