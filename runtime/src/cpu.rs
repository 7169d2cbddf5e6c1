//! The CPU features a plan's code may need, by the names `std::arch::is_x86_feature_detected!`
//! uses (`avx2`, `avx512f`), and whether this CPU has them. A backend records the features
//! its code needs in the plan's [`crate::plan::Target`]; loading refuses code that needs a
//! feature this CPU lacks instead of letting it die of an illegal instruction.

/// Every feature a plan may name, and whether this CPU has it.
fn table() -> Vec<(&'static str, bool)> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        vec![
            ("sse3", has!("sse3")),
            ("ssse3", has!("ssse3")),
            ("sse4.1", has!("sse4.1")),
            ("sse4.2", has!("sse4.2")),
            ("popcnt", has!("popcnt")),
            ("avx", has!("avx")),
            ("avx2", has!("avx2")),
            ("fma", has!("fma")),
            ("bmi1", has!("bmi1")),
            ("bmi2", has!("bmi2")),
            ("lzcnt", has!("lzcnt")),
            ("f16c", has!("f16c")),
            ("avx512f", has!("avx512f")),
            ("avx512bw", has!("avx512bw")),
            ("avx512cd", has!("avx512cd")),
            ("avx512dq", has!("avx512dq")),
            ("avx512vl", has!("avx512vl")),
            ("avx512vbmi", has!("avx512vbmi")),
            ("avx512vnni", has!("avx512vnni")),
            ("avx512bf16", has!("avx512bf16")),
        ]
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        vec![]
    }
}

/// Whether this CPU has `feature`; `None` for a name this kiln does not know.
pub fn has(feature: &str) -> Option<bool> {
    table()
        .into_iter()
        .find(|(name, _)| *name == feature)
        .map(|(_, has)| has)
}

/// The features of this CPU, by name, in the table's order.
pub fn host_features() -> Vec<String> {
    table()
        .into_iter()
        .filter(|(_, has)| *has)
        .map(|(name, _)| name.to_string())
        .collect()
}

/// The first of `needed` this CPU lacks or this kiln does not know, as an error message.
pub fn check(needed: &[String]) -> Result<(), String> {
    for f in needed {
        match has(f) {
            Some(true) => {}
            Some(false) => {
                return Err(format!(
                    "the kernels need CPU feature `{f}`, which this CPU lacks"
                ))
            }
            None => {
                return Err(format!(
                    "the kernels need CPU feature `{f}`, unknown to this kiln"
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_features_pass_the_check_and_unknown_ones_fail() {
        assert!(check(&host_features()).is_ok());
        let err = check(&["warp-drive".to_string()]).unwrap_err();
        assert!(err.contains("`warp-drive`"), "{err}");
    }
}
