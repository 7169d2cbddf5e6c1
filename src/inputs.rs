//! Model inputs for the commands: `NAME=FILE.npy` arguments, and random inputs that fit a
//! model's declared inputs (for `kiln check` and `kiln bench`).

use kiln_ir::interp::Bindings;
use kiln_ir::{npy, DType, Tensor, Value};
use std::collections::HashMap;

/// Reads `NAME=FILE.npy` arguments into feeds.
pub fn read_feeds(specs: &[String]) -> Result<HashMap<String, Tensor>, String> {
    let mut feeds = HashMap::new();
    for spec in specs {
        let (name, file) = spec
            .split_once('=')
            .ok_or_else(|| format!("--input `{spec}`: expected NAME=FILE.npy"))?;
        let tensor = npy::read_npy(file.as_ref())?;
        if feeds.insert(name.to_string(), tensor).is_some() {
            return Err(format!("--input `{name}` is given twice"));
        }
    }
    Ok(feeds)
}

/// The sizes random inputs take: a symbol whose name mentions `batch` is `batch`, one that
/// mentions `past` (a KV cache's length) is `past`, `capacity` (a KV cache's) is `past + seq`,
/// any other is `seq`; a dim that is an expression of symbols (`past+seq`) is evaluated.
#[derive(Clone, Copy, Debug)]
pub struct RandomSizes {
    /// The batch size.
    pub batch: usize,
    /// The sequence length.
    pub seq: usize,
    /// The KV cache length of a decode entry point.
    pub past: usize,
}

/// Random inputs for every one of the model's declared `inputs` not already in `feeds`, of
/// `sizes`.
/// Floats are uniform in [-1, 1); integers are in {0, 1} (valid token ids, masks and segment
/// ids for every model kiln reads), except masks which are all 1.
pub fn random_feeds(
    inputs: &[&Value],
    feeds: &mut HashMap<String, Tensor>,
    sizes: RandomSizes,
    seed: u64,
) -> Result<(), String> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for value in inputs {
        if feeds.contains_key(&value.name) {
            continue;
        }
        let shape: Vec<usize> = value
            .ty
            .shape
            .iter()
            .map(|d| {
                let bindings: Bindings = d
                    .symbols()
                    .into_iter()
                    .map(|name| {
                        let size = if name.contains("batch") {
                            sizes.batch
                        } else if name.contains("past") {
                            sizes.past
                        } else if name == "capacity" {
                            sizes.past + sizes.seq
                        } else {
                            sizes.seq
                        };
                        (name.to_string(), size as i64)
                    })
                    .collect();
                d.eval(&bindings)
                    .and_then(|v| usize::try_from(v).ok())
                    .ok_or_else(|| {
                        format!(
                            "input `{}`: give it with --input (its dim `{d}` has no size here)",
                            value.name
                        )
                    })
            })
            .collect::<Result<_, String>>()?;
        let bytes = kiln_ir::host::bytes_of(&shape, value.ty.dtype.size());
        kiln_ir::host::check_fits(bytes, &format!("random input `{}` {shape:?}", value.name))?;
        let n: usize = shape.iter().product();
        let is_mask = value.name.contains("mask");
        let t = match value.ty.dtype {
            DType::F32 => {
                let data = (0..n)
                    .map(|_| (next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
                    .collect();
                Tensor::from_vec(&shape, data)?
            }
            DType::I64 | DType::I32 => {
                let data: Vec<i64> = (0..n)
                    .map(|_| if is_mask { 1 } else { (next() >> 63) as i64 })
                    .collect();
                Tensor::from_vec(&shape, data)?.cast(value.ty.dtype)
            }
            other => {
                return Err(format!(
                    "input `{}`: random {other} inputs are not supported; give it with --input",
                    value.name
                ))
            }
        };
        feeds.insert(value.name.clone(), t);
    }
    Ok(())
}
