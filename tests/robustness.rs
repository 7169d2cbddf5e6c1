mod common;
use kiln_frontends::onnx::{import_model, load_model, proto::ModelProto};
use prost::Message;
use std::collections::HashMap;
use std::time::Instant;

#[test]
fn probe() {
    let dir = std::env::temp_dir().join("kiln-probe");
    std::fs::create_dir_all(&dir).unwrap();
    for m in ["bert", "llama"] {
        let md = common::model_dir(m);
        let bytes = std::fs::read(md.join("model.onnx")).unwrap();
        let p = dir.join("m.onnx");
        let t = Instant::now();
        for _ in 0..50 {
            std::fs::write(&p, &bytes).unwrap();
            load_model(&p).unwrap();
        }
        println!("{m}: write+load {:?}", t.elapsed() / 50);
        let t = Instant::now();
        for _ in 0..50 {
            let b = prost::bytes::Bytes::from(bytes.clone());
            let mp = ModelProto::decode(b).unwrap();
            import_model(&mp, &dir).unwrap();
        }
        println!("{m}: decode+import {:?}", t.elapsed() / 50);
        let g = load_model(&p).unwrap();
        let mut feeds = HashMap::new();
        for n in ["input_ids", "attention_mask"] {
            feeds.insert(n.to_string(), kiln_ir::npy::read_npy(&md.join(format!("io/b1_s16.{n}.npy"))).unwrap());
        }
        let t = Instant::now();
        for _ in 0..10 {
            kiln_ir::interp::run(&g, &feeds).unwrap();
        }
        println!("{m}: run {:?}", t.elapsed() / 10);
    }
}
