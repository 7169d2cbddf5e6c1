fn main() {
    let p = std::env::args().nth(1).unwrap();
    let g = kiln_frontends::onnx::load_model(std::path::Path::new(&p)).unwrap();
    print!("{}", kiln_ir::text::print(&g));
}
