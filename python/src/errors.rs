//! The exceptions kiln raises in Python, and which one an error of the Rust side becomes.
//!
//! Every error is a [`KilnError`] carrying the one-line message the command line prints; its
//! subclass says whose fault it is: the model file ([`BadModelError`]), an op or feature of
//! the model kiln does not implement ([`UnsupportedOpError`]), or the arrays and names a call
//! was given ([`BadInputError`]).

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::PyErr;

create_exception!(
    kiln,
    KilnError,
    PyException,
    "An error of kiln: its message is the one line the command line would print."
);
create_exception!(
    kiln,
    BadModelError,
    KilnError,
    "The model (ONNX file, checkpoint, artefact or rule file) cannot be read or is invalid."
);
create_exception!(
    kiln,
    UnsupportedOpError,
    KilnError,
    "The model uses an op, dtype or feature that kiln does not implement."
);
create_exception!(
    kiln,
    BadInputError,
    KilnError,
    "The arrays or names given to a call do not match the model."
);

/// An error met while reading, optimising or compiling a model: [`UnsupportedOpError`] when
/// the message says kiln does not implement something (the frontends' "is not supported",
/// "unknown op"), else [`BadModelError`].
pub fn model_error(message: String) -> PyErr {
    if message.contains("not supported") || message.contains("unknown op") {
        UnsupportedOpError::new_err(message)
    } else {
        BadModelError::new_err(message)
    }
}

/// An error about the inputs or names a call was given.
pub fn input_error(message: String) -> PyErr {
    BadInputError::new_err(message)
}
