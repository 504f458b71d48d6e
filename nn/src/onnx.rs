//! Just enough of the ONNX file format (a protocol-buffers `ModelProto`) to
//! read a small convolutional graph: its nodes, their attributes, the
//! weights, and the names of its inputs and outputs.
//!
//! Field numbers are those of `onnx/onnx.proto` (ONNX 1.x, stable since IR
//! version 3). Anything this reader does not need is skipped by its wire
//! type, so a model with extra metadata still loads.

use std::collections::HashMap;

/// Why a model file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError(pub String);

fn err<T>(what: impl Into<String>) -> Result<T, FormatError> {
    Err(FormatError(what.into()))
}

/// One protocol-buffers field as found on the wire.
enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Reads the fields of one message, in order.
struct Fields<'a> {
    buf: &'a [u8],
}

fn varint(buf: &mut &[u8]) -> Result<u64, FormatError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some((&b, rest)) = buf.split_first() else {
            return err("truncated varint");
        };
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    err("varint longer than 10 bytes")
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        Some(self.field())
    }
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Fields { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if n > self.buf.len() {
            return err("field runs past the end of its message");
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn field(&mut self) -> Result<(u64, Value<'a>), FormatError> {
        let key = varint(&mut self.buf)?;
        let value = match key & 7 {
            0 => Value::Varint(varint(&mut self.buf)?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let n = usize::try_from(varint(&mut self.buf)?)
                    .map_err(|_| FormatError("length does not fit".into()))?;
                Value::Bytes(self.take(n)?)
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            t => return err(format!("unsupported wire type {t}")),
        };
        Ok((key >> 3, value))
    }
}

fn text(b: &[u8]) -> Result<String, FormatError> {
    String::from_utf8(b.to_vec()).map_err(|_| FormatError("a name is not UTF-8".into()))
}

/// Repeated int64s: packed (one length-delimited field) or one varint each.
fn push_ints(out: &mut Vec<i64>, v: &Value<'_>) -> Result<(), FormatError> {
    match v {
        Value::Varint(x) => out.push(*x as i64),
        Value::Bytes(mut b) => {
            while !b.is_empty() {
                out.push(varint(&mut b)? as i64);
            }
        }
        _ => return err("an integer list has the wrong wire type"),
    }
    Ok(())
}

/// Repeated floats: packed or one fixed32 each.
fn push_floats(out: &mut Vec<f32>, v: &Value<'_>) -> Result<(), FormatError> {
    match v {
        Value::Fixed32(x) => out.push(f32::from_bits(*x)),
        Value::Bytes(b) => {
            if b.len() % 4 != 0 {
                return err("a float list is not a whole number of floats");
            }
            out.extend(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        }
        _ => return err("a float list has the wrong wire type"),
    }
    Ok(())
}

/// A constant tensor: weights (float) or shapes (int64).
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Float(Vec<f32>),
    Int(Vec<i64>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub dims: Vec<usize>,
    pub data: Data,
}

const FLOAT: i64 = 1;
const INT64: i64 = 7;

fn tensor(buf: &[u8]) -> Result<Tensor, FormatError> {
    let (mut name, mut dims, mut kind) = (String::new(), Vec::new(), 0i64);
    let (mut floats, mut ints, mut raw): (Vec<f32>, Vec<i64>, Option<&[u8]>) =
        (Vec::new(), Vec::new(), None);
    for f in Fields::new(buf) {
        match f? {
            (1, v) => push_ints(&mut dims, &v)?,
            (2, Value::Varint(k)) => kind = k as i64,
            (4, v) => push_floats(&mut floats, &v)?,
            (7, v) => push_ints(&mut ints, &v)?,
            (8, Value::Bytes(b)) => name = text(b)?,
            (9, Value::Bytes(b)) => raw = Some(b),
            _ => {}
        }
    }
    let dims = dims
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| FormatError(format!("{name}: negative dimension"))))
        .collect::<Result<Vec<_>, _>>()?;
    let count: usize = dims.iter().product();
    let data = match (kind, raw) {
        (FLOAT, Some(b)) => {
            floats.clear();
            push_floats(&mut floats, &Value::Bytes(b))?;
            Data::Float(floats)
        }
        (FLOAT, None) => Data::Float(floats),
        (INT64, Some(b)) => {
            if b.len() % 8 != 0 {
                return err(format!("{name}: raw int64 data of {} bytes", b.len()));
            }
            Data::Int(
                b.chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            )
        }
        (INT64, None) => Data::Int(ints),
        (k, _) => return err(format!("{name}: tensor type {k} is not float or int64")),
    };
    let len = match &data {
        Data::Float(v) => v.len(),
        Data::Int(v) => v.len(),
    };
    if len != count {
        return err(format!("{name}: {len} values for dimensions {dims:?}"));
    }
    Ok(Tensor { name, dims, data })
}

/// An attribute's value; only the kinds convolutional graphs use.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Floats(Vec<f32>),
    Tensor(Tensor),
    Other,
}

fn attribute(buf: &[u8]) -> Result<(String, Attr), FormatError> {
    let (mut name, mut kind) = (String::new(), 0u64);
    let (mut i, mut f, mut ints, mut floats, mut t) = (0i64, 0f32, Vec::new(), Vec::new(), None);
    for field in Fields::new(buf) {
        match field? {
            (1, Value::Bytes(b)) => name = text(b)?,
            (2, Value::Fixed32(x)) => f = f32::from_bits(x),
            (3, Value::Varint(x)) => i = x as i64,
            (5, Value::Bytes(b)) => t = Some(tensor(b)?),
            (7, v) => push_floats(&mut floats, &v)?,
            (8, v) => push_ints(&mut ints, &v)?,
            (20, Value::Varint(k)) => kind = k,
            _ => {}
        }
    }
    // AttributeProto.AttributeType: FLOAT 1, INT 2, TENSOR 4, FLOATS 6, INTS 7.
    let value = match kind {
        1 => Attr::Float(f),
        2 => Attr::Int(i),
        4 => t.map(Attr::Tensor).unwrap_or(Attr::Other),
        6 => Attr::Floats(floats),
        7 => Attr::Ints(ints),
        _ => Attr::Other,
    };
    Ok((name, value))
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Node {
    pub op: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: HashMap<String, Attr>,
}

impl Node {
    pub fn ints(&self, name: &str) -> Option<&[i64]> {
        match self.attrs.get(name) {
            Some(Attr::Ints(v)) => Some(v),
            _ => None,
        }
    }
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.attrs.get(name) {
            Some(Attr::Int(v)) => Some(*v),
            _ => None,
        }
    }
}

fn node(buf: &[u8]) -> Result<Node, FormatError> {
    let mut n = Node::default();
    for f in Fields::new(buf) {
        match f? {
            (1, Value::Bytes(b)) => n.inputs.push(text(b)?),
            (2, Value::Bytes(b)) => n.outputs.push(text(b)?),
            (4, Value::Bytes(b)) => n.op = text(b)?,
            (5, Value::Bytes(b)) => {
                let (k, v) = attribute(b)?;
                n.attrs.insert(k, v);
            }
            (7, Value::Bytes(b)) if !b.is_empty() && b != b"ai.onnx" => {
                return err(format!("operator domain {:?} is not ONNX's", text(b)?))
            }
            _ => {}
        }
    }
    Ok(n)
}

fn value_info_name(buf: &[u8]) -> Result<String, FormatError> {
    for f in Fields::new(buf) {
        if let (1, Value::Bytes(b)) = f? {
            return text(b);
        }
    }
    err("an input or output without a name")
}

/// A model's graph, its nodes in the file's (topological) order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub initializers: Vec<Tensor>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// Parses an `.onnx` file's bytes.
pub fn parse(model: &[u8]) -> Result<Graph, FormatError> {
    let mut graph = None;
    for f in Fields::new(model) {
        if let (7, Value::Bytes(b)) = f? {
            graph = Some(b);
        }
    }
    let Some(g) = graph else {
        return err("no graph: not an ONNX model");
    };
    let mut out = Graph::default();
    for f in Fields::new(g) {
        match f? {
            (1, Value::Bytes(b)) => out.nodes.push(node(b)?),
            (5, Value::Bytes(b)) => out.initializers.push(tensor(b)?),
            (11, Value::Bytes(b)) => out.inputs.push(value_info_name(b)?),
            (12, Value::Bytes(b)) => out.outputs.push(value_info_name(b)?),
            _ => {}
        }
    }
    // Inputs may list the initializers too (IR < 4): only the fed ones count.
    let weights: std::collections::HashSet<&str> =
        out.initializers.iter().map(|t| t.name.as_str()).collect();
    out.inputs.retain(|i| !weights.contains(i.as_str()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_and_foreign_bytes_are_errors_not_panics() {
        assert!(parse(b"").is_err());
        assert!(
            parse(&[0x3a, 0x05, 0x0a]).is_err(),
            "graph longer than the file"
        );
        assert!(parse(&[0xff; 12]).is_err(), "endless varint");
        assert!(parse(b"\x0bnot a model").is_err());
    }
}
