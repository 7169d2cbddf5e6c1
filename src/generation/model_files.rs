//! What a checkpoint directory says about generation beyond `config.json`'s architecture: the
//! end-of-sequence and padding token ids, read from `generation_config.json` first (as
//! transformers does) and then from `config.json`, and which of the tokenizer files are there.

use serde_json::Value;
use std::path::{Path, PathBuf};

/// The files next to a checkpoint's weights that generation reads, if present. `kiln compile`
/// copies them into its output so that `kiln generate` runs from the artefacts as from the
/// checkpoint.
pub const GENERATION_FILES: [&str; 5] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
];

/// The special token ids generation needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialIds {
    /// The end-of-sequence ids: generating any of them ends a prompt's output. Empty when the
    /// checkpoint names none.
    pub eos: Vec<i64>,
    /// The id that pads shorter prompts of a batch. It is masked out, so it only has to be a
    /// token of the vocabulary: `pad_token_id`, else the first end id, else 0 (the first of
    /// them inside the vocabulary; tiny test configs often name ids beyond theirs).
    pub pad: i64,
}

impl SpecialIds {
    /// Reads the ids from `dir/generation_config.json` and `dir/config.json`: each key is taken
    /// from the first file that sets it to something other than null. `eos_token_id` may be
    /// an integer or a list of integers. `vocab` is the model's vocabulary size.
    pub fn read(dir: &Path, vocab: usize) -> Result<SpecialIds, String> {
        let files: Vec<(PathBuf, Value)> = ["generation_config.json", "config.json"]
            .iter()
            .map(|name| dir.join(name))
            .filter(|path| path.is_file())
            .map(|path| {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let json = serde_json::from_str(&text)
                    .map_err(|e| format!("{}: not valid JSON: {e}", path.display()))?;
                Ok((path, json))
            })
            .collect::<Result<_, String>>()?;
        let lookup = |key: &str| -> Option<(&PathBuf, &Value)> {
            files
                .iter()
                .find_map(|(path, json)| json.get(key).filter(|v| !v.is_null()).map(|v| (path, v)))
        };
        let eos = match lookup("eos_token_id") {
            None => Vec::new(),
            Some((path, value)) => token_ids(value).ok_or_else(|| {
                format!(
                    "{}: `eos_token_id` must be a token id or a list of them, not {value}",
                    path.display()
                )
            })?,
        };
        let pad = match lookup("pad_token_id") {
            None => None,
            Some((path, value)) => Some(value.as_i64().filter(|&id| id >= 0).ok_or_else(|| {
                format!(
                    "{}: `pad_token_id` must be a token id, not {value}",
                    path.display()
                )
            })?),
        };
        let pad = pad
            .into_iter()
            .chain(eos.iter().copied())
            .find(|&id| (id as usize) < vocab)
            .unwrap_or(0);
        Ok(SpecialIds { eos, pad })
    }
}

/// `value` as non-negative token ids: one integer or a list of them.
fn token_ids(value: &Value) -> Option<Vec<i64>> {
    let one = |v: &Value| v.as_i64().filter(|&id| id >= 0);
    match value {
        Value::Array(items) => items.iter().map(one).collect(),
        v => one(v).map(|id| vec![id]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(tag: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-special-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn generation_config_comes_first_and_lists_are_read() {
        let dir = dir_with(
            "lists",
            &[
                (
                    "config.json",
                    r#"{"eos_token_id": 2, "pad_token_id": null}"#,
                ),
                ("generation_config.json", r#"{"eos_token_id": [7, 9]}"#),
            ],
        );
        let ids = SpecialIds::read(&dir, 10).unwrap();
        assert_eq!(
            ids,
            SpecialIds {
                eos: vec![7, 9],
                pad: 7
            }
        );
        // An id beyond the vocabulary never pads.
        assert_eq!(SpecialIds::read(&dir, 5).unwrap().pad, 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_bad_end_id_names_the_file_and_key() {
        let dir = dir_with(
            "bad",
            &[("config.json", r#"{"eos_token_id": "two", "x": 1}"#)],
        );
        let err = SpecialIds::read(&dir, 10).unwrap_err();
        assert!(
            err.contains("config.json") && err.contains("eos_token_id"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
