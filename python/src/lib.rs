//! `kiln._kiln`, the native half of the `kiln` Python package (its Python half, in
//! `python/kiln`, adds `InferenceSession`): compile and run models from numpy ([`model`]),
//! the rewrite passes ([`passes`]), and the exceptions ([`errors`]).

mod arrays;
mod errors;
mod model;
mod passes;

use pyo3::prelude::*;

#[pymodule]
fn _kiln(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("KilnError", py.get_type::<errors::KilnError>())?;
    m.add("BadModelError", py.get_type::<errors::BadModelError>())?;
    m.add(
        "UnsupportedOpError",
        py.get_type::<errors::UnsupportedOpError>(),
    )?;
    m.add("BadInputError", py.get_type::<errors::BadInputError>())?;
    m.add_class::<model::Model>()?;
    m.add_class::<model::TensorInfo>()?;
    m.add_class::<passes::Optimized>()?;
    m.add_function(wrap_pyfunction!(model::compile, m)?)?;
    m.add_function(wrap_pyfunction!(model::load, m)?)?;
    m.add_function(wrap_pyfunction!(passes::optimize, m)?)?;
    m.add_function(wrap_pyfunction!(passes::explain, m)?)?;
    m.add_function(wrap_pyfunction!(passes::rules_check, m)?)?;
    Ok(())
}
