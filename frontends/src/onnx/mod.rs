pub mod proto;
pub mod tensor;
