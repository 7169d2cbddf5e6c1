//! Node attributes: the small typed values (axes, perms, eps, equations, ...) that parameterise an op.

use crate::data::TensorData;
use crate::Dim;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One attribute value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Attr {
    /// An integer (also used for booleans and dtype codes).
    Int(i64),
    /// A float.
    Float(f32),
    /// A string.
    Str(String),
    /// A list of integers (axes, perms, ...).
    Ints(Vec<i64>),
    /// A list of floats.
    Floats(Vec<f32>),
    /// A list of symbolic dims (the value of a `SymbolicDims` node).
    Dims(Vec<Dim>),
    /// A small constant tensor (the fill value of `ConstantOfShape`).
    Tensor(TensorData),
}

impl Attr {
    /// A short name of the attribute's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Attr::Int(_) => "int",
            Attr::Float(_) => "float",
            Attr::Str(_) => "string",
            Attr::Ints(_) => "ints",
            Attr::Floats(_) => "floats",
            Attr::Dims(_) => "dims",
            Attr::Tensor(_) => "tensor",
        }
    }
}

/// The attributes of a node, by name (sorted, so printing is deterministic).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Attrs(pub BTreeMap<String, Attr>);

impl Attrs {
    /// Attributes from `(name, value)` pairs.
    pub fn from_pairs(pairs: &[(&str, Attr)]) -> Attrs {
        Attrs(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    /// Looks up an attribute.
    pub fn get(&self, name: &str) -> Option<&Attr> {
        self.0.get(name)
    }

    /// Sets an attribute, replacing any previous value.
    pub fn set(&mut self, name: &str, value: Attr) {
        self.0.insert(name.to_string(), value);
    }

    /// Sets an attribute unless it is already present.
    pub fn set_default(&mut self, name: &str, value: Attr) {
        self.0.entry(name.to_string()).or_insert(value);
    }

    /// An int attribute.
    pub fn int(&self, name: &str) -> Result<i64, String> {
        match self.0.get(name) {
            Some(Attr::Int(v)) => Ok(*v),
            other => Err(wrong(name, "int", other)),
        }
    }

    /// A float attribute (an int is accepted and converted).
    pub fn float(&self, name: &str) -> Result<f32, String> {
        match self.0.get(name) {
            Some(Attr::Float(v)) => Ok(*v),
            Some(Attr::Int(v)) => Ok(*v as f32),
            other => Err(wrong(name, "float", other)),
        }
    }

    /// A string attribute.
    pub fn str(&self, name: &str) -> Result<&str, String> {
        match self.0.get(name) {
            Some(Attr::Str(v)) => Ok(v),
            other => Err(wrong(name, "string", other)),
        }
    }

    /// An ints attribute.
    pub fn ints(&self, name: &str) -> Result<&[i64], String> {
        match self.0.get(name) {
            Some(Attr::Ints(v)) => Ok(v),
            other => Err(wrong(name, "ints", other)),
        }
    }

    /// An ints attribute, or `None` when absent.
    pub fn opt_ints(&self, name: &str) -> Result<Option<&[i64]>, String> {
        match self.0.get(name) {
            None => Ok(None),
            Some(_) => self.ints(name).map(Some),
        }
    }

    /// A dims attribute.
    pub fn dims(&self, name: &str) -> Result<&[Dim], String> {
        match self.0.get(name) {
            Some(Attr::Dims(v)) => Ok(v),
            other => Err(wrong(name, "dims", other)),
        }
    }

    /// A tensor attribute.
    pub fn tensor(&self, name: &str) -> Result<&TensorData, String> {
        match self.0.get(name) {
            Some(Attr::Tensor(v)) => Ok(v),
            other => Err(wrong(name, "tensor", other)),
        }
    }
}

fn wrong(name: &str, want: &str, got: Option<&Attr>) -> String {
    match got {
        None => format!("missing attribute `{name}`"),
        Some(a) => format!("attribute `{name}` is {} but should be {want}", a.kind()),
    }
}
