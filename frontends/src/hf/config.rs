//! Reading a Hugging Face `config.json` into a normalized [`HfConfig`].
//!
//! Hugging Face model families spell the same hyperparameters differently (`hidden_size` vs
//! `n_embd`, `layer_norm_eps` vs `layer_norm_epsilon` vs `rms_norm_eps`), and transformers 5
//! renamed a few keys (`torch_dtype` became `dtype`; `rope_theta` and `rope_scaling` moved into
//! `rope_parameters`). [`read_config`] accepts both generations of spelling for the supported
//! architectures and validates the result, reporting every problem as one line that names the
//! file.

use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The model body a checkpoint describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Architecture {
    /// `BertModel` and the BERT family whose body is a `BertModel` (`BertForMaskedLM`, ...).
    Bert,
    /// `GPT2LMHeadModel`.
    Gpt2,
    /// LLaMA-style decoders: `LlamaForCausalLM`, `MistralForCausalLM`, `Qwen2ForCausalLM`.
    Llama,
    /// `GPTNeoXForCausalLM`: fused per-head `query_key_value`, partial RoPE, parallel or
    /// sequential residual.
    GptNeoX,
    /// `PhiForCausalLM`: partial RoPE, attention and MLP in parallel from one LayerNorm.
    Phi,
    /// `DistilBertModel` and the DistilBERT family whose body is a `DistilBertModel`.
    DistilBert,
}

impl Architecture {
    /// True for the causal language models (which have a decode entry point).
    pub fn is_causal(self) -> bool {
        !matches!(self, Architecture::Bert | Architecture::DistilBert)
    }
}

/// An MLP activation, from `hidden_act` (GPT-2 `activation_function`, DistilBERT `activation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: the exact GELU, `x * Phi(x)` with the error function.
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`: GELU with the tanh approximation.
    GeluTanh,
    /// `relu`.
    Relu,
    /// `silu`, `swish`: `x * sigmoid(x)`.
    Silu,
    /// `quick_gelu`: `x * sigmoid(1.702 x)`.
    QuickGelu,
}

/// The largest size a config may give (products of two sizes then fit in 64 bits).
const MAX_SIZE: u64 = u32::MAX as u64;

/// The activation names kiln accepts, as listed in error messages.
const ACTIVATIONS: &str = "gelu, gelu_new, gelu_pytorch_tanh, relu, silu, swish, quick_gelu";

impl Activation {
    /// The activation a Hugging Face name denotes, or `None` if kiln does not support it.
    pub fn from_name(name: &str) -> Option<Activation> {
        Some(match name {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            "quick_gelu" => Activation::QuickGelu,
            _ => return None,
        })
    }
}

/// Rotary-embedding position scaling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE (also used for architectures without rotary embeddings).
    None,
    /// Positions divided by `factor`.
    Linear {
        /// The position divisor.
        factor: f32,
    },
    /// Dynamic NTK scaling: the base grows once the sequence exceeds `original_max_positions`.
    Dynamic {
        /// The scaling factor.
        factor: f32,
        /// The context length the model was trained with.
        original_max_positions: usize,
    },
}

/// The hyperparameters of a supported checkpoint, in one spelling for every family.
#[derive(Clone, Debug, PartialEq)]
pub struct HfConfig {
    /// The model family.
    pub architecture: Architecture,
    /// The architecture name from `architectures[0]`, or the canonical name derived from
    /// `model_type` when `architectures` is absent (e.g. `LlamaForCausalLM`).
    pub architecture_name: String,
    /// Model width (`hidden_size`, GPT-2 `n_embd`).
    pub hidden_size: usize,
    /// Number of transformer blocks (`num_hidden_layers`, GPT-2 `n_layer`).
    pub num_layers: usize,
    /// Number of query heads (`num_attention_heads`, GPT-2 `n_head`).
    pub num_heads: usize,
    /// Number of key/value heads (`num_key_value_heads`; equal to `num_heads` without GQA).
    pub num_kv_heads: usize,
    /// Per-head width (`head_dim`, default `hidden_size / num_heads`).
    pub head_dim: usize,
    /// MLP inner width (`intermediate_size`, GPT-2 `n_inner`, default `4 * n_embd`).
    pub intermediate_size: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Maximum sequence length (`max_position_embeddings`, GPT-2 `n_positions`).
    pub max_positions: usize,
    /// LayerNorm / RMSNorm epsilon.
    pub norm_eps: f32,
    /// The MLP activation (`hidden_act`, GPT-2 `activation_function`, DistilBERT `activation`).
    pub activation: Activation,
    /// Number of token types (BERT `type_vocab_size`; 0 for other families).
    pub type_vocab_size: usize,
    /// The RoPE base (`rope_theta` or `rope_parameters.rope_theta`; 0 without rotary embeddings).
    pub rope_theta: f32,
    /// The RoPE position scaling.
    pub rope_scaling: RopeScaling,
    /// How many leading dims of each head RoPE rotates: `head_dim` for LLaMA,
    /// `int(head_dim * partial_rotary_factor)` for GPT-NeoX and Phi, 0 without RoPE.
    pub rotary_dim: usize,
    /// GPT-NeoX `use_parallel_residual`: `x + attn(ln1(x)) + mlp(ln2(x))` instead of two
    /// residual steps (false for the other families).
    pub parallel_residual: bool,
    /// Whether the LM head shares the token-embedding matrix.
    pub tie_word_embeddings: bool,
    /// Whether the query/key/value projections have biases (always for BERT, GPT-2 and Qwen2).
    pub qkv_bias: bool,
    /// The stored weight dtype (`dtype` or `torch_dtype`, default `float32`), e.g. `bfloat16`.
    pub dtype: String,
    /// Per layer, the sliding attention window: a query sees itself and the `window - 1` keys
    /// before it. From Mistral's `sliding_window`, Qwen2's `use_sliding_window` with
    /// `max_window_layers` (the layers from that index on), or `layer_types`
    /// (`sliding_attention` / `full_attention`); empty when no layer has a window.
    pub sliding_windows: Vec<Option<usize>>,
}

/// The supported architecture names, as listed in error messages.
const SUPPORTED: &str = "BertModel and the BERT family, DistilBertModel and the DistilBERT \
                         family, GPT2LMHeadModel, GPTNeoXForCausalLM, LlamaForCausalLM, \
                         MistralForCausalLM, PhiForCausalLM, Qwen2ForCausalLM";

/// BERT-family heads whose body is a `BertModel`.
const BERT_FAMILY: &[&str] = &[
    "BertModel",
    "BertForMaskedLM",
    "BertForPreTraining",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertForQuestionAnswering",
    "BertForMultipleChoice",
    "BertForNextSentencePrediction",
    "BertLMHeadModel",
];

/// DistilBERT-family heads whose body is a `DistilBertModel`.
const DISTILBERT_FAMILY: &[&str] = &[
    "DistilBertModel",
    "DistilBertForMaskedLM",
    "DistilBertForSequenceClassification",
    "DistilBertForTokenClassification",
    "DistilBertForQuestionAnswering",
    "DistilBertForMultipleChoice",
];

/// Reads and validates `{dir}/config.json`.
///
/// Errors are one line naming the file: a missing or unreadable file, invalid JSON, a missing
/// required key, a key of the wrong type, a non-positive size, heads that do not divide the
/// width, an unsupported architecture or an unsupported RoPE scaling type.
pub fn read_config(dir: &Path) -> Result<HfConfig, String> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_config(&path, &text)
}

/// Parses the text of a `config.json`; `path` is used only in error messages.
pub fn parse_config(path: &Path, text: &str) -> Result<HfConfig, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("{}: invalid JSON: {e}", path.display()))?;
    let obj = value
        .as_object()
        .ok_or_else(|| format!("{}: expected a JSON object", path.display()))?;
    let c = Cfg {
        path: path.to_path_buf(),
        obj,
    };
    let (architecture, architecture_name) = c.architecture()?;
    let model_type = c.opt_str("model_type")?.unwrap_or_default();
    let dtype = match c.opt_str("dtype")? {
        Some(d) => d,
        None => c
            .opt_str("torch_dtype")?
            .unwrap_or_else(|| "float32".into()),
    };
    let dtype = dtype.strip_prefix("torch.").unwrap_or(&dtype).to_string();

    let config = match architecture {
        Architecture::Bert => {
            let hidden_size = c.req_usize("hidden_size")?;
            let num_heads = c.req_usize("num_attention_heads")?;
            HfConfig {
                architecture,
                architecture_name,
                hidden_size,
                num_layers: c.req_usize("num_hidden_layers")?,
                num_heads,
                num_kv_heads: num_heads,
                head_dim: c.divide(hidden_size, num_heads, "hidden_size", "num_attention_heads")?,
                intermediate_size: c.req_usize("intermediate_size")?,
                vocab_size: c.req_usize("vocab_size")?,
                max_positions: c.req_usize("max_position_embeddings")?,
                norm_eps: c.opt_eps("layer_norm_eps")?.unwrap_or(1e-12),
                activation: c.activation("hidden_act", "gelu")?,
                type_vocab_size: c.opt_usize("type_vocab_size")?.unwrap_or(2),
                rope_theta: 0.0,
                rope_scaling: RopeScaling::None,
                rotary_dim: 0,
                parallel_residual: false,
                tie_word_embeddings: c.opt_bool("tie_word_embeddings")?.unwrap_or(true),
                qkv_bias: true,
                dtype,
                sliding_windows: Vec::new(),
            }
        }
        Architecture::Gpt2 => {
            let hidden_key = c.first_present(&["n_embd", "hidden_size"]);
            let heads_key = c.first_present(&["n_head", "num_attention_heads"]);
            let hidden_size = c.req_usize(hidden_key)?;
            let num_heads = c.req_usize(heads_key)?;
            let intermediate_size = match c.opt_usize("n_inner")? {
                Some(n) => n,
                None => hidden_size
                    .checked_mul(4)
                    .ok_or_else(|| c.err(format_args!("key `{hidden_key}` is too large")))?,
            };
            HfConfig {
                architecture,
                architecture_name,
                hidden_size,
                num_layers: c.req_usize(c.first_present(&["n_layer", "num_hidden_layers"]))?,
                num_heads,
                num_kv_heads: num_heads,
                head_dim: c.divide(hidden_size, num_heads, hidden_key, heads_key)?,
                intermediate_size,
                vocab_size: c.req_usize("vocab_size")?,
                max_positions: c
                    .req_usize(c.first_present(&["n_positions", "max_position_embeddings"]))?,
                norm_eps: c.opt_eps("layer_norm_epsilon")?.unwrap_or(1e-5),
                activation: c.activation("activation_function", "gelu_new")?,
                type_vocab_size: 0,
                rope_theta: 0.0,
                rope_scaling: RopeScaling::None,
                rotary_dim: 0,
                parallel_residual: false,
                tie_word_embeddings: c.opt_bool("tie_word_embeddings")?.unwrap_or(true),
                qkv_bias: true,
                dtype,
                sliding_windows: Vec::new(),
            }
        }
        Architecture::Llama => {
            let hidden_size = c.req_usize("hidden_size")?;
            let num_heads = c.req_usize("num_attention_heads")?;
            let num_kv_heads = c.opt_usize("num_key_value_heads")?.unwrap_or(num_heads);
            if num_heads.checked_rem(num_kv_heads) != Some(0) {
                return Err(c.err(format_args!(
                    "`num_attention_heads` ({num_heads}) is not a multiple of \
                     `num_key_value_heads` ({num_kv_heads})"
                )));
            }
            let head_dim = match c.opt_usize("head_dim")? {
                Some(d) => d,
                None => c.divide(hidden_size, num_heads, "hidden_size", "num_attention_heads")?,
            };
            let max_positions = c.req_usize("max_position_embeddings")?;
            let (rope_theta, rope_scaling) = c.rope(max_positions, &["rope_theta"])?;
            let is_qwen2 = model_type == "qwen2" || architecture_name == "Qwen2ForCausalLM";
            let num_layers = c.req_usize("num_hidden_layers")?;
            // LLaMA itself has no sliding window (transformers ignores the key there).
            let sliding_windows = match architecture_name.as_str() {
                "MistralForCausalLM" | "Qwen2ForCausalLM" => {
                    c.sliding_windows(num_layers, is_qwen2)?
                }
                _ => Vec::new(),
            };
            HfConfig {
                architecture,
                architecture_name,
                hidden_size,
                num_layers,
                num_heads,
                num_kv_heads,
                head_dim,
                intermediate_size: c.req_usize("intermediate_size")?,
                vocab_size: c.req_usize("vocab_size")?,
                max_positions,
                norm_eps: c.opt_eps("rms_norm_eps")?.unwrap_or(1e-6),
                activation: c.activation("hidden_act", "silu")?,
                type_vocab_size: 0,
                rope_theta,
                rope_scaling,
                rotary_dim: head_dim,
                parallel_residual: false,
                tie_word_embeddings: c.opt_bool("tie_word_embeddings")?.unwrap_or(false),
                qkv_bias: is_qwen2 || c.opt_bool("attention_bias")?.unwrap_or(false),
                dtype,
                sliding_windows,
            }
        }
        Architecture::GptNeoX | Architecture::Phi => {
            let neox = architecture == Architecture::GptNeoX;
            let hidden_size = c.req_usize("hidden_size")?;
            let num_heads = c.req_usize("num_attention_heads")?;
            let num_kv_heads = if neox {
                num_heads
            } else {
                c.opt_usize("num_key_value_heads")?.unwrap_or(num_heads)
            };
            if num_heads.checked_rem(num_kv_heads) != Some(0) {
                return Err(c.err(format_args!(
                    "`num_attention_heads` ({num_heads}) is not a multiple of \
                     `num_key_value_heads` ({num_kv_heads})"
                )));
            }
            let head_dim = match (neox, c.opt_usize("head_dim")?) {
                (false, Some(d)) => d,
                _ => c.divide(hidden_size, num_heads, "hidden_size", "num_attention_heads")?,
            };
            if !neox && c.opt_bool("qk_layernorm")? == Some(true) {
                return Err(c.err(format_args!("`qk_layernorm` true is not supported")));
            }
            let max_positions = c.req_usize("max_position_embeddings")?;
            let theta_keys: &[&str] = if neox {
                &["rotary_emb_base", "rope_theta"]
            } else {
                &["rope_theta"]
            };
            let (rope_theta, rope_scaling) = c.rope(max_positions, theta_keys)?;
            let default_fraction = if neox { 0.25 } else { 0.5 };
            let rotary_dim = c.rotary_dim(head_dim, neox, default_fraction)?;
            HfConfig {
                architecture,
                architecture_name,
                hidden_size,
                num_layers: c.req_usize("num_hidden_layers")?,
                num_heads,
                num_kv_heads,
                head_dim,
                intermediate_size: c.req_usize("intermediate_size")?,
                vocab_size: c.req_usize("vocab_size")?,
                max_positions,
                norm_eps: c.opt_eps("layer_norm_eps")?.unwrap_or(1e-5),
                activation: c.activation("hidden_act", if neox { "gelu" } else { "gelu_new" })?,
                type_vocab_size: 0,
                rope_theta,
                rope_scaling,
                rotary_dim,
                parallel_residual: neox && c.opt_bool("use_parallel_residual")?.unwrap_or(true),
                tie_word_embeddings: c.opt_bool("tie_word_embeddings")?.unwrap_or(false),
                qkv_bias: !neox || c.opt_bool("attention_bias")?.unwrap_or(true),
                dtype,
                sliding_windows: Vec::new(),
            }
        }
        Architecture::DistilBert => {
            let hidden_key = c.first_present(&["dim", "hidden_size"]);
            let heads_key = c.first_present(&["n_heads", "num_attention_heads"]);
            let hidden_size = c.req_usize(hidden_key)?;
            let num_heads = c.req_usize(heads_key)?;
            HfConfig {
                architecture,
                architecture_name,
                hidden_size,
                num_layers: c.req_usize(c.first_present(&["n_layers", "num_hidden_layers"]))?,
                num_heads,
                num_kv_heads: num_heads,
                head_dim: c.divide(hidden_size, num_heads, hidden_key, heads_key)?,
                intermediate_size: c
                    .req_usize(c.first_present(&["hidden_dim", "intermediate_size"]))?,
                vocab_size: c.req_usize("vocab_size")?,
                max_positions: c.req_usize("max_position_embeddings")?,
                // DistilBERT's LayerNorms hard-code their epsilon.
                norm_eps: 1e-12,
                activation: c.activation("activation", "gelu")?,
                type_vocab_size: 0,
                rope_theta: 0.0,
                rope_scaling: RopeScaling::None,
                rotary_dim: 0,
                parallel_residual: false,
                tie_word_embeddings: c.opt_bool("tie_word_embeddings")?.unwrap_or(true),
                qkv_bias: true,
                dtype,
                sliding_windows: Vec::new(),
            }
        }
    };
    Ok(config)
}

/// A parsed `config.json` with its path, for lookups that report errors.
struct Cfg<'a> {
    path: PathBuf,
    obj: &'a Map<String, Value>,
}

impl Cfg<'_> {
    /// A one-line error naming the file.
    fn err(&self, msg: std::fmt::Arguments<'_>) -> String {
        format!("{}: {msg}", self.path.display())
    }

    /// The value of `key` in `obj`, treating JSON `null` as absent.
    fn get<'v>(obj: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
        obj.get(key).filter(|v| !v.is_null())
    }

    /// The first of `keys` present in the file, or the first key if none is (for the error).
    fn first_present<'k>(&self, keys: &[&'k str]) -> &'k str {
        keys.iter()
            .copied()
            .find(|k| Self::get(self.obj, k).is_some())
            .unwrap_or(keys[0])
    }

    /// Resolves the architecture from `architectures[0]`, or from `model_type` without it.
    fn architecture(&self) -> Result<(Architecture, String), String> {
        let first = match Self::get(self.obj, "architectures") {
            Some(Value::Array(list)) => match list.first() {
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => {
                    return Err(self.err(format_args!(
                        "key `architectures` must be a list of strings, got {other}"
                    )))
                }
                None => None,
            },
            Some(other) => {
                return Err(self.err(format_args!(
                    "key `architectures` must be a list of strings, got {other}"
                )))
            }
            None => None,
        };
        if let Some(name) = first {
            let arch = if BERT_FAMILY.contains(&name.as_str()) {
                Architecture::Bert
            } else if DISTILBERT_FAMILY.contains(&name.as_str()) {
                Architecture::DistilBert
            } else if name == "GPT2LMHeadModel" {
                Architecture::Gpt2
            } else if name == "GPTNeoXForCausalLM" {
                Architecture::GptNeoX
            } else if name == "PhiForCausalLM" {
                Architecture::Phi
            } else if ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"]
                .contains(&name.as_str())
            {
                Architecture::Llama
            } else {
                return Err(self.err(format_args!(
                    "architecture `{name}` is not supported (supported: {SUPPORTED})"
                )));
            };
            return Ok((arch, name));
        }
        let Some(model_type) = self.opt_str("model_type")? else {
            return Err(self.err(format_args!(
                "missing key `architectures` (or `model_type`)"
            )));
        };
        let (arch, name) = match model_type.as_str() {
            "bert" => (Architecture::Bert, "BertModel"),
            "gpt2" => (Architecture::Gpt2, "GPT2LMHeadModel"),
            "llama" => (Architecture::Llama, "LlamaForCausalLM"),
            "mistral" => (Architecture::Llama, "MistralForCausalLM"),
            "qwen2" => (Architecture::Llama, "Qwen2ForCausalLM"),
            "gpt_neox" => (Architecture::GptNeoX, "GPTNeoXForCausalLM"),
            "phi" => (Architecture::Phi, "PhiForCausalLM"),
            "distilbert" => (Architecture::DistilBert, "DistilBertModel"),
            other => {
                return Err(self.err(format_args!(
                    "model_type `{other}` is not supported (supported: {SUPPORTED})"
                )))
            }
        };
        Ok((arch, name.to_string()))
    }

    /// A positive integer at `key` in `obj`; `label` is the key as shown in errors.
    fn usize_in(
        &self,
        obj: &Map<String, Value>,
        key: &str,
        label: &str,
    ) -> Result<Option<usize>, String> {
        let Some(v) = Self::get(obj, key) else {
            return Ok(None);
        };
        if let Some(n) = v.as_u64() {
            if n == 0 {
                return Err(self.err(format_args!("key `{label}` must be positive, got 0")));
            }
            if n > MAX_SIZE {
                return Err(self.err(format_args!(
                    "key `{label}` is too large: {n} (kiln's limit is {MAX_SIZE})"
                )));
            }
            // At most u32::MAX, so it fits a usize.
            return Ok(Some(n as usize));
        }
        if v.as_i64().is_some() {
            return Err(self.err(format_args!("key `{label}` must be positive, got {v}")));
        }
        Err(self.err(format_args!("key `{label}` must be an integer, got {v}")))
    }

    /// An optional positive integer.
    fn opt_usize(&self, key: &str) -> Result<Option<usize>, String> {
        self.usize_in(self.obj, key, key)
    }

    /// A required positive integer.
    fn req_usize(&self, key: &str) -> Result<usize, String> {
        self.opt_usize(key)?
            .ok_or_else(|| self.err(format_args!("missing key `{key}`")))
    }

    /// A positive finite number at `key` in `obj`.
    fn f32_in(
        &self,
        obj: &Map<String, Value>,
        key: &str,
        label: &str,
    ) -> Result<Option<f32>, String> {
        let Some(v) = Self::get(obj, key) else {
            return Ok(None);
        };
        let x = v
            .as_f64()
            .ok_or_else(|| self.err(format_args!("key `{label}` must be a number, got {v}")))?;
        if !(x.is_finite() && x > 0.0) {
            return Err(self.err(format_args!("key `{label}` must be positive, got {v}")));
        }
        Ok(Some(x as f32))
    }

    /// An optional positive epsilon.
    fn opt_eps(&self, key: &str) -> Result<Option<f32>, String> {
        self.f32_in(self.obj, key, key)
    }

    /// An optional string.
    fn opt_str(&self, key: &str) -> Result<Option<String>, String> {
        match Self::get(self.obj, key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.err(format_args!("key `{key}` must be a string, got {v}"))),
        }
    }

    /// The activation named at `key` (or `default` without it); an unsupported name is an
    /// error naming the key and the value and listing the supported names.
    fn activation(&self, key: &str, default: &str) -> Result<Activation, String> {
        let name = self.opt_str(key)?.unwrap_or_else(|| default.into());
        Activation::from_name(&name).ok_or_else(|| {
            self.err(format_args!(
                "key `{key}` is `{name}`, which is not a supported activation (supported: \
                 {ACTIVATIONS})"
            ))
        })
    }

    /// The rotated dims per head, `int(head_dim * fraction)`, the fraction from
    /// `partial_rotary_factor` (top level or in `rope_parameters`; GPT-NeoX also `rotary_pct`),
    /// else `default`. The fraction must be in (0, 1] and the result even and positive.
    fn rotary_dim(&self, head_dim: usize, neox: bool, default: f32) -> Result<usize, String> {
        let mut found = None;
        let keys: &[&str] = if neox {
            &["rotary_pct", "partial_rotary_factor"]
        } else {
            &["partial_rotary_factor"]
        };
        for key in keys {
            if let Some(f) = self.f32_in(self.obj, key, key)? {
                found = Some((f, key.to_string()));
                break;
            }
        }
        if found.is_none() {
            if let Some(Value::Object(p)) = Self::get(self.obj, "rope_parameters") {
                let label = "rope_parameters.partial_rotary_factor";
                found = self
                    .f32_in(p, "partial_rotary_factor", label)?
                    .map(|f| (f, label.to_string()));
            }
        }
        let (fraction, label) = found.unwrap_or((default, "partial_rotary_factor".into()));
        if fraction > 1.0 {
            return Err(self.err(format_args!(
                "key `{label}` must be at most 1, got {fraction}"
            )));
        }
        let dim = (head_dim as f64 * fraction as f64) as usize;
        if dim == 0 || !dim.is_multiple_of(2) {
            return Err(self.err(format_args!(
                "key `{label}` ({fraction}) gives {dim} rotary dims of the head's {head_dim}; \
                 kiln needs an even, positive number"
            )));
        }
        Ok(dim)
    }

    /// The sliding window of each of `layers` layers (see [`HfConfig::sliding_windows`]).
    /// `layer_types` wins when present; otherwise Qwen2 slides only with `use_sliding_window`,
    /// on the layers from `max_window_layers` on, and the rest (Mistral) on every layer.
    fn sliding_windows(&self, layers: usize, qwen2: bool) -> Result<Vec<Option<usize>>, String> {
        let Some(window) = self.opt_usize("sliding_window")? else {
            return Ok(Vec::new());
        };
        let slides: Vec<bool> = match Self::get(self.obj, "layer_types") {
            Some(Value::Array(types)) => {
                if types.len() != layers {
                    return Err(self.err(format_args!(
                        "key `layer_types` lists {} layers but `num_hidden_layers` is {layers}",
                        types.len()
                    )));
                }
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        Some("sliding_attention") => Ok(true),
                        Some("full_attention") => Ok(false),
                        _ => Err(self.err(format_args!(
                            "key `layer_types` holds {t}; expected \"sliding_attention\" or \
                             \"full_attention\""
                        ))),
                    })
                    .collect::<Result<_, _>>()?
            }
            Some(v) => {
                return Err(self.err(format_args!("key `layer_types` must be a list, got {v}")))
            }
            None if qwen2 => {
                let from = self.opt_usize("max_window_layers")?.unwrap_or(0);
                let on = self.opt_bool("use_sliding_window")?.unwrap_or(false);
                (0..layers).map(|l| on && l >= from).collect()
            }
            None => vec![true; layers],
        };
        if !slides.contains(&true) {
            return Ok(Vec::new());
        }
        Ok(slides.into_iter().map(|s| s.then_some(window)).collect())
    }

    /// An optional boolean.
    fn opt_bool(&self, key: &str) -> Result<Option<bool>, String> {
        match Self::get(self.obj, key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(format_args!("key `{key}` must be a boolean, got {v}"))),
        }
    }

    /// `hidden / heads`, or an error if `heads` does not divide `hidden`.
    fn divide(
        &self,
        hidden: usize,
        heads: usize,
        hidden_key: &str,
        heads_key: &str,
    ) -> Result<usize, String> {
        if hidden.checked_rem(heads) != Some(0) {
            return Err(self.err(format_args!(
                "`{hidden_key}` ({hidden}) is not a multiple of `{heads_key}` ({heads})"
            )));
        }
        Ok(hidden / heads)
    }

    /// The RoPE base and scaling, from transformers-4 `rope_theta` / `rope_scaling` (or the
    /// other top-level `theta_keys`, e.g. GPT-NeoX `rotary_emb_base`) or transformers-5
    /// `rope_parameters`.
    fn rope(
        &self,
        max_positions: usize,
        theta_keys: &[&str],
    ) -> Result<(f32, RopeScaling), String> {
        let object = |key: &str| -> Result<Option<&Map<String, Value>>, String> {
            match Self::get(self.obj, key) {
                None => Ok(None),
                Some(Value::Object(m)) => Ok(Some(m)),
                Some(v) => Err(self.err(format_args!("key `{key}` must be an object, got {v}"))),
            }
        };
        let params = object("rope_parameters")?;
        let scaling = object("rope_scaling")?;
        let mut top = None;
        for key in theta_keys {
            top = top.or(self.f32_in(self.obj, key, key)?);
        }
        let theta = match top {
            Some(t) => t,
            None => match params {
                Some(p) => self
                    .f32_in(p, "rope_theta", "rope_parameters.rope_theta")?
                    .unwrap_or(10000.0),
                None => 10000.0,
            },
        };
        let (section, map) = match (scaling, params) {
            (Some(s), _) => ("rope_scaling", s),
            (None, Some(p)) => ("rope_parameters", p),
            (None, None) => return Ok((theta, RopeScaling::None)),
        };
        let kind = match Self::get(map, "rope_type").or_else(|| Self::get(map, "type")) {
            None if section == "rope_parameters" => "default",
            None => {
                return Err(self.err(format_args!("missing key `{section}.rope_type`")));
            }
            Some(Value::String(s)) => s.as_str(),
            Some(v) => {
                return Err(self.err(format_args!(
                    "key `{section}.rope_type` must be a string, got {v}"
                )))
            }
        };
        let factor = || -> Result<f32, String> {
            let label = format!("{section}.factor");
            self.f32_in(map, "factor", &label)?
                .ok_or_else(|| self.err(format_args!("missing key `{label}`")))
        };
        let scaling = match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear { factor: factor()? },
            "dynamic" => {
                let factor = factor()?;
                let label = format!("{section}.original_max_position_embeddings");
                let original =
                    match self.usize_in(map, "original_max_position_embeddings", &label)? {
                        Some(n) => n,
                        None => self
                            .opt_usize("original_max_position_embeddings")?
                            .unwrap_or(max_positions),
                    };
                RopeScaling::Dynamic {
                    factor,
                    original_max_positions: original,
                }
            }
            other => {
                return Err(self.err(format_args!(
                    "rope type `{other}` is not supported (supported: default, linear, dynamic)"
                )))
            }
        };
        Ok((theta, scaling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/models")).join(name)
    }

    fn parse(text: &str) -> Result<HfConfig, String> {
        parse_config(Path::new("m/config.json"), text)
    }

    #[test]
    fn llama_fixture() {
        let c = read_config(&fixture("llama")).unwrap();
        assert_eq!(c.architecture, Architecture::Llama);
        assert_eq!(c.architecture_name, "LlamaForCausalLM");
        assert_eq!((c.hidden_size, c.num_layers), (64, 2));
        assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (4, 2, 16));
        assert_eq!(c.intermediate_size, 172);
        assert_eq!((c.vocab_size, c.max_positions), (1000, 128));
        assert_eq!(c.rope_theta, 10000.0);
        assert_eq!(c.rope_scaling, RopeScaling::None);
        assert_eq!(c.norm_eps, 1e-6);
        assert!(!c.tie_word_embeddings);
        assert!(!c.qkv_bias);
        assert_eq!(c.activation, Activation::Silu);
        assert_eq!(c.dtype, "float32");
    }

    #[test]
    fn gpt2_fixture() {
        let c = read_config(&fixture("gpt2")).unwrap();
        assert_eq!(c.architecture, Architecture::Gpt2);
        assert_eq!((c.hidden_size, c.num_layers, c.num_heads), (64, 2, 4));
        assert_eq!((c.num_kv_heads, c.head_dim), (4, 16));
        assert_eq!(c.intermediate_size, 256);
        assert_eq!(c.max_positions, 128);
        assert_eq!(c.norm_eps, 1e-5);
        assert_eq!(c.activation, Activation::GeluTanh);
        assert!(c.tie_word_embeddings);
        assert!(c.qkv_bias);
    }

    #[test]
    fn bert_fixture() {
        let c = read_config(&fixture("bert")).unwrap();
        assert_eq!(c.architecture, Architecture::Bert);
        assert_eq!(c.architecture_name, "BertModel");
        assert_eq!(
            (c.hidden_size, c.num_layers, c.num_heads, c.head_dim),
            (64, 2, 4, 16)
        );
        assert_eq!(c.intermediate_size, 128);
        assert_eq!(c.norm_eps, 1e-12);
        assert_eq!(c.type_vocab_size, 2);
        assert_eq!(c.activation, Activation::Gelu);
        assert!(c.tie_word_embeddings);
    }

    #[test]
    fn transformers4_spelling() {
        let c = parse(
            r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
                "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 100,
                "vocab_size": 50, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
                "rope_theta": 500000.0, "rope_scaling": {"type": "linear", "factor": 2.0},
                "torch_dtype": "bfloat16"}"#,
        )
        .unwrap();
        assert_eq!(c.rope_theta, 500000.0);
        assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 2.0 });
        assert_eq!(c.dtype, "bfloat16");
        assert_eq!((c.num_kv_heads, c.head_dim), (4, 16));
        assert!(!c.tie_word_embeddings);
    }

    #[test]
    fn transformers5_dynamic_rope_and_qwen2_bias() {
        let c = parse(
            r#"{"model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 1,
                "num_attention_heads": 8, "num_key_value_heads": 2, "intermediate_size": 8,
                "vocab_size": 10, "max_position_embeddings": 4096,
                "rope_parameters": {"rope_type": "dynamic", "factor": 4.0, "rope_theta": 1e6,
                                    "original_max_position_embeddings": 1024}}"#,
        )
        .unwrap();
        assert_eq!(c.architecture, Architecture::Llama);
        assert_eq!(c.architecture_name, "Qwen2ForCausalLM");
        assert!(c.qkv_bias);
        assert_eq!(c.rope_theta, 1e6);
        assert_eq!(
            c.rope_scaling,
            RopeScaling::Dynamic {
                factor: 4.0,
                original_max_positions: 1024
            }
        );
    }

    #[test]
    fn bert_family_and_model_type() {
        let c = parse(
            r#"{"architectures": ["BertForMaskedLM"], "hidden_size": 8, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 16, "vocab_size": 10,
                "max_position_embeddings": 16}"#,
        )
        .unwrap();
        assert_eq!(c.architecture, Architecture::Bert);
        assert_eq!(c.norm_eps, 1e-12);
        let g = parse(
            r#"{"model_type": "gpt2", "n_embd": 8, "n_layer": 1, "n_head": 2, "n_inner": 12,
                "vocab_size": 10, "n_positions": 16}"#,
        )
        .unwrap();
        assert_eq!(g.architecture_name, "GPT2LMHeadModel");
        assert_eq!(g.intermediate_size, 12);
    }

    #[test]
    fn new_fixtures() {
        let c = read_config(&fixture("gptneox")).unwrap();
        assert_eq!(c.architecture, Architecture::GptNeoX);
        assert_eq!((c.hidden_size, c.num_heads, c.head_dim), (64, 4, 16));
        assert_eq!((c.rotary_dim, c.rope_theta), (4, 10000.0));
        assert!(c.parallel_residual && c.qkv_bias && !c.tie_word_embeddings);
        assert_eq!((c.activation, c.norm_eps), (Activation::Gelu, 1e-5));
        let c = read_config(&fixture("phi")).unwrap();
        assert_eq!(c.architecture, Architecture::Phi);
        assert_eq!((c.num_kv_heads, c.rotary_dim), (4, 8));
        assert_eq!(c.activation, Activation::GeluTanh);
        assert!(!c.parallel_residual && !c.tie_word_embeddings);
        let c = read_config(&fixture("distilbert")).unwrap();
        assert_eq!(c.architecture, Architecture::DistilBert);
        assert!(!c.architecture.is_causal());
        assert_eq!((c.hidden_size, c.num_layers, c.num_heads), (64, 2, 4));
        assert_eq!((c.intermediate_size, c.vocab_size), (128, 320));
        assert_eq!((c.type_vocab_size, c.norm_eps), (0, 1e-12));
    }

    #[test]
    fn transformers4_spelling_of_partial_rotary() {
        let base = r#""hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
            "intermediate_size": 8, "vocab_size": 10, "max_position_embeddings": 16"#;
        let c = parse(&format!(
            r#"{{"architectures": ["GPTNeoXForCausalLM"], {base}, "rotary_pct": 0.5,
                "rotary_emb_base": 500, "use_parallel_residual": false}}"#
        ))
        .unwrap();
        assert_eq!((c.rotary_dim, c.rope_theta), (8, 500.0));
        assert!(!c.parallel_residual);
        // Defaults: transformers' 0.25 for GPT-NeoX, 0.5 for Phi.
        let c = parse(&format!(r#"{{"model_type": "gpt_neox", {base}}}"#)).unwrap();
        assert_eq!(
            (c.architecture_name.as_str(), c.rotary_dim),
            ("GPTNeoXForCausalLM", 4)
        );
        let c = parse(&format!(
            r#"{{"architectures": ["PhiForCausalLM"], {base}, "partial_rotary_factor": 0.25,
                "rope_theta": 20.0}}"#
        ))
        .unwrap();
        assert_eq!((c.rotary_dim, c.rope_theta), (4, 20.0));
        let c = parse(&format!(r#"{{"model_type": "phi", {base}}}"#)).unwrap();
        assert_eq!(c.rotary_dim, 8);
        let c = parse(&format!(
            r#"{{"model_type": "phi", {base}, "rope_parameters": {{"rope_type": "default",
                "rope_theta": 7.0, "partial_rotary_factor": 1.0}}}}"#
        ))
        .unwrap();
        assert_eq!((c.rotary_dim, c.rope_theta), (16, 7.0));
        let c = parse(
            r#"{"model_type": "distilbert", "dim": 8, "n_layers": 1, "n_heads": 2,
                "hidden_dim": 16, "vocab_size": 10, "max_position_embeddings": 16}"#,
        )
        .unwrap();
        assert_eq!(
            (c.architecture_name.as_str(), c.head_dim),
            ("DistilBertModel", 4)
        );
        for (factor, msg) in [
            ("1.5", "must be at most 1"),
            ("0.01", "gives 0 rotary dims"),
            ("0.19", "gives 3 rotary dims"),
            ("0", "must be positive"),
            ("\"half\"", "must be a number"),
        ] {
            let e = parse(&format!(
                r#"{{"model_type": "phi", {base}, "partial_rotary_factor": {factor}}}"#
            ))
            .unwrap_err();
            assert!(
                e.starts_with("m/config.json: key `partial_rotary_factor`") && e.contains(msg),
                "{e}"
            );
        }
        let e = parse(&format!(
            r#"{{"model_type": "phi", {base}, "qk_layernorm": true}}"#
        ))
        .unwrap_err();
        assert!(e.contains("`qk_layernorm`"), "{e}");
    }

    #[test]
    fn activations() {
        let base = r#""architectures": ["LlamaForCausalLM"], "hidden_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 8,
            "vocab_size": 10, "max_position_embeddings": 16"#;
        for (name, act) in [
            ("gelu", Activation::Gelu),
            ("gelu_new", Activation::GeluTanh),
            ("gelu_pytorch_tanh", Activation::GeluTanh),
            ("relu", Activation::Relu),
            ("silu", Activation::Silu),
            ("swish", Activation::Silu),
            ("quick_gelu", Activation::QuickGelu),
        ] {
            let c = parse(&format!(r#"{{{base}, "hidden_act": "{name}"}}"#)).unwrap();
            assert_eq!(c.activation, act, "{name}");
        }
        for (key, model) in [
            ("hidden_act", r#""model_type": "bert""#),
            ("activation_function", r#""model_type": "gpt2""#),
            ("activation", r#""model_type": "distilbert""#),
            ("hidden_act", r#""model_type": "gpt_neox""#),
        ] {
            for bad in ["foo", "", "GELU"] {
                let e = parse(&format!(
                    r#"{{{model}, "hidden_size": 16, "n_embd": 16, "dim": 16, "n_head": 2,
                        "n_heads": 2, "num_attention_heads": 2, "num_hidden_layers": 1,
                        "n_layer": 1, "n_layers": 1, "intermediate_size": 8, "hidden_dim": 8,
                        "vocab_size": 10, "max_position_embeddings": 16, "n_positions": 16,
                        "{key}": "{bad}"}}"#
                ))
                .unwrap_err();
                assert_eq!(
                    e,
                    format!(
                        "m/config.json: key `{key}` is `{bad}`, which is not a supported \
                         activation (supported: gelu, gelu_new, gelu_pytorch_tanh, relu, silu, \
                         swish, quick_gelu)"
                    )
                );
            }
        }
        let e = parse(&format!(r#"{{{base}, "hidden_act": 3}}"#)).unwrap_err();
        assert!(e.contains("`hidden_act` must be a string"), "{e}");
    }

    #[test]
    fn unsupported_architecture_lists_supported() {
        let e = parse(r#"{"architectures": ["FooForBar"], "hidden_size": 8}"#).unwrap_err();
        assert_eq!(
            e,
            "m/config.json: architecture `FooForBar` is not supported (supported: BertModel and \
             the BERT family, DistilBertModel and the DistilBERT family, GPT2LMHeadModel, \
             GPTNeoXForCausalLM, LlamaForCausalLM, MistralForCausalLM, PhiForCausalLM, \
             Qwen2ForCausalLM)"
        );
    }

    #[test]
    fn sliding_windows_follow_each_family_and_spelling() {
        let base = |arch: &str, extra: &str| {
            format!(
                r#"{{"architectures": ["{arch}"], "num_hidden_layers": 3, "hidden_size": 16,
                "num_attention_heads": 4, "intermediate_size": 8, "vocab_size": 10,
                "max_position_embeddings": 64{extra}}}"#
            )
        };
        let windows = |arch: &str, extra: &str| parse(&base(arch, extra)).unwrap().sliding_windows;
        assert_eq!(
            windows("MistralForCausalLM", r#", "sliding_window": 8"#),
            [Some(8); 3]
        );
        assert!(windows("MistralForCausalLM", r#", "sliding_window": null"#).is_empty());
        // LLaMA has no window, whatever the file says.
        assert!(windows("LlamaForCausalLM", r#", "sliding_window": 8"#).is_empty());
        // Qwen2 in transformers 4's spelling: only with use_sliding_window, from layer
        // max_window_layers on.
        let qwen = r#", "sliding_window": 8, "max_window_layers": 1"#;
        assert!(windows("Qwen2ForCausalLM", qwen).is_empty());
        let on = format!(r#"{qwen}, "use_sliding_window": true"#);
        assert_eq!(windows("Qwen2ForCausalLM", &on), [None, Some(8), Some(8)]);
        // transformers 5's `layer_types`.
        let types = r#", "sliding_window": 4, "layer_types": ["sliding_attention",
            "full_attention", "sliding_attention"]"#;
        assert_eq!(
            windows("MistralForCausalLM", types),
            [Some(4), None, Some(4)]
        );
        let e = parse(&base(
            "MistralForCausalLM",
            r#", "sliding_window": 4, "layer_types": ["full_attention"]"#,
        ))
        .unwrap_err();
        assert!(e.contains("`layer_types` lists 1 layers"), "{e}");
        let e = parse(&base(
            "MistralForCausalLM",
            r#", "sliding_window": 4, "layer_types": ["local", "x", "y"]"#,
        ))
        .unwrap_err();
        assert!(e.contains("layer_types") && e.contains("local"), "{e}");
        let e = parse(&base("MistralForCausalLM", r#", "sliding_window": -4"#)).unwrap_err();
        assert!(e.contains("`sliding_window` must be positive"), "{e}");
    }

    #[test]
    fn errors_name_file_and_key() {
        let base = r#""architectures": ["LlamaForCausalLM"], "num_hidden_layers": 1,
            "num_attention_heads": 4, "intermediate_size": 8, "vocab_size": 10,
            "max_position_embeddings": 16"#;
        let e = parse(&format!("{{{base}}}")).unwrap_err();
        assert_eq!(e, "m/config.json: missing key `hidden_size`");
        let e = parse(&format!("{{{base}, \"hidden_size\": \"64\"}}")).unwrap_err();
        assert!(e.contains("`hidden_size` must be an integer"), "{e}");
        let e = parse(&format!("{{{base}, \"hidden_size\": -64}}")).unwrap_err();
        assert!(e.contains("`hidden_size` must be positive"), "{e}");
        let e = parse(&format!("{{{base}, \"hidden_size\": 4294967296}}")).unwrap_err();
        assert!(e.contains("`hidden_size` is too large: 4294967296"), "{e}");
        let e = parse(&format!("{{{base}, \"hidden_size\": 0}}")).unwrap_err();
        assert!(e.contains("`hidden_size` must be positive"), "{e}");
        let e = parse(&format!("{{{base}, \"hidden_size\": 66}}")).unwrap_err();
        assert!(e.contains("not a multiple of `num_attention_heads`"), "{e}");
        let e = parse(&format!(
            "{{{base}, \"hidden_size\": 64, \"num_key_value_heads\": 3}}"
        ))
        .unwrap_err();
        assert!(e.contains("num_key_value_heads"), "{e}");
        let e = parse(&format!(
            "{{{base}, \"hidden_size\": 64, \"rope_scaling\": {{\"rope_type\": \"yarn\", \"factor\": 2}}}}"
        ))
        .unwrap_err();
        assert!(
            e.starts_with("m/config.json: rope type `yarn` is not supported"),
            "{e}"
        );
        let e = parse("{not json").unwrap_err();
        assert!(e.starts_with("m/config.json: invalid JSON"), "{e}");
        let e = read_config(Path::new("/nonexistent/kiln")).unwrap_err();
        assert!(e.starts_with("/nonexistent/kiln/config.json: "), "{e}");
        assert!(!e.contains('\n'));
    }
}
