//! The IR's text and JSON forms round-trip the real models exactly: printing the parsed graph
//! gives the same text, and the parsed graph computes the same outputs on the interpreter.

mod common;

use kiln_frontends::onnx::load_model;
use kiln_ir::{interp, json, npy, text, Graph, Tensor};
use std::collections::HashMap;

fn run(graph: &Graph, model: &str) -> Vec<(String, Tensor)> {
    let io = common::model_dir(model).join("io");
    let feeds: HashMap<String, Tensor> = ["input_ids", "attention_mask"]
        .iter()
        .map(|n| {
            (
                n.to_string(),
                npy::read_npy(&io.join(format!("b2_s33.{n}.npy"))).unwrap(),
            )
        })
        .collect();
    interp::run(graph, &feeds).unwrap()
}

#[test]
fn real_models_round_trip_through_text_and_json() {
    for model in ["bert", "gpt2", "llama"] {
        let graph = load_model(&common::model_dir(model).join("model.onnx")).unwrap();
        let printed = text::print(&graph);
        let reparsed = text::parse(&printed).unwrap();
        assert_eq!(
            text::print(&reparsed),
            printed,
            "{model}: text form does not round-trip"
        );
        let from_json = json::from_json(&json::to_json(&graph)).unwrap();
        assert_eq!(
            text::print(&from_json),
            printed,
            "{model}: JSON form does not round-trip"
        );
        let expected = run(&graph, model);
        assert_eq!(
            run(&reparsed, model),
            expected,
            "{model}: parsed text computes differently"
        );
        assert_eq!(
            run(&from_json, model),
            expected,
            "{model}: parsed JSON computes differently"
        );
    }
}
