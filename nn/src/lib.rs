//! A small inference engine for the landmark model: the eight ONNX operators
//! that MediaPipe's BlazeFace graph uses (convolution, depthwise and
//! pointwise included; ReLU, add, max-pool, channel padding, transpose,
//! reshape), in f32, on one thread, with no dependency.
//!
//! Why not a general engine: tract runs this model too, but adds 8-15 MB to
//! a binary that must stay under 10 MB on the device. This one is about
//! 30 KB of code; enrolld's `tests/landmarks.rs` checks its outputs against
//! tract's on real faces, and its unit tests load the real model.
//!
//! The graph is checked and planned once when loaded: every tensor gets a
//! slot whose buffer is kept between runs, so a run allocates nothing once
//! the first has sized the buffers.

pub mod onnx;

use onnx::{Data, Graph, Node};
use std::collections::HashMap;

/// Why a model cannot be run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetError(pub String);

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<onnx::FormatError> for NetError {
    fn from(e: onnx::FormatError) -> Self {
        NetError(format!("model file: {}", e.0))
    }
}

fn bad<T>(node: &Node, what: impl std::fmt::Display) -> Result<T, NetError> {
    Err(NetError(format!("{} node: {what}", node.op)))
}

/// A 2-D convolution's geometry and weights (NCHW, weights OIHW).
#[derive(Debug, Clone)]
struct Conv {
    weights: Vec<f32>,
    bias: Vec<f32>,
    out_c: usize,
    in_c: usize,
    group: usize,
    kh: usize,
    kw: usize,
    stride: (usize, usize),
    /// top, left, bottom, right.
    pads: [usize; 4],
}

#[derive(Debug, Clone)]
enum Op {
    Conv(Box<Conv>),
    Relu,
    Add,
    MaxPool { k: usize, stride: usize },
    Concat,
    Transpose(Vec<usize>),
    Reshape(Vec<i64>),
}

#[derive(Debug, Clone)]
struct Step {
    op: Op,
    inputs: Vec<usize>,
    output: usize,
}

#[derive(Debug, Clone, Default)]
struct Buf {
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// A loaded, planned graph with its working buffers.
#[derive(Debug, Clone)]
pub struct Net {
    steps: Vec<Step>,
    slots: Vec<Buf>,
    input: usize,
    input_shape: Vec<usize>,
    outputs: Vec<usize>,
}

fn usize_list(node: &Node, name: &str, default: &[usize]) -> Result<Vec<usize>, NetError> {
    match node.ints(name) {
        None => Ok(default.to_vec()),
        Some(v) => v
            .iter()
            .map(|&x| usize::try_from(x).or_else(|_| bad(node, format!("{name} {x}"))))
            .collect(),
    }
}

impl Net {
    /// Loads a graph for an input of `input_shape` (NHWC or NCHW, as the
    /// graph's own first node expects).
    pub fn from_onnx(model: &[u8], input_shape: &[usize]) -> Result<Net, NetError> {
        let graph: Graph = onnx::parse(model)?;
        let [input_name] = graph.inputs.as_slice() else {
            return Err(NetError(format!("{} inputs, not one", graph.inputs.len())));
        };
        let mut floats: HashMap<&str, (&[usize], &[f32])> = HashMap::new();
        let mut ints: HashMap<&str, &[i64]> = HashMap::new();
        for t in &graph.initializers {
            match &t.data {
                Data::Float(v) => floats.insert(&t.name, (&t.dims, v)),
                Data::Int(v) => ints.insert(&t.name, v).map(|_| (&[][..], &[][..])),
            };
        }
        let mut slot_of: HashMap<&str, usize> = HashMap::new();
        let mut slots = vec![Buf::default()];
        slot_of.insert(input_name, 0);
        let mut steps = Vec::new();
        for node in &graph.nodes {
            let [output] = node.outputs.as_slice() else {
                return bad(node, "more than one output");
            };
            let slot = slots.len();
            slots.push(Buf::default());
            if node.op == "ConstantOfShape" {
                // Only as the zeros of a channel padding: evaluated now.
                let shape = node
                    .inputs
                    .first()
                    .and_then(|i| ints.get(i.as_str()))
                    .map_or_else(|| bad(node, "shape is not a constant"), |s| Ok(*s))?;
                let value = match node.attrs.get("value") {
                    None => 0.0,
                    Some(onnx::Attr::Tensor(t)) => match &t.data {
                        Data::Float(v) => v.first().copied().unwrap_or(0.0),
                        Data::Int(v) => v.first().copied().unwrap_or(0) as f32,
                    },
                    Some(_) => return bad(node, "value is not a tensor"),
                };
                let shape = shape
                    .iter()
                    .map(|&d| usize::try_from(d).or_else(|_| bad(node, "negative dimension")))
                    .collect::<Result<Vec<_>, _>>()?;
                let n: usize = shape.iter().product();
                slots[slot] = Buf {
                    shape,
                    data: vec![value; n],
                };
                slot_of.insert(output, slot);
                continue;
            }
            let fed = |name: &str| {
                slot_of.get(name).copied().ok_or_else(|| {
                    NetError(format!("{} node: input {name} is not computed", node.op))
                })
            };
            let first = node
                .inputs
                .first()
                .map_or_else(|| bad(node, "no input"), |i| fed(i))?;
            let (op, inputs) = match node.op.as_str() {
                "Conv" => {
                    let w = node.inputs.get(1).and_then(|n| floats.get(n.as_str()));
                    let Some(&(dims, weights)) = w else {
                        return bad(node, "weights are not a constant");
                    };
                    let &[out_c, in_per_group, kh, kw] = dims else {
                        return bad(node, format!("weights of shape {dims:?}"));
                    };
                    let bias = match node.inputs.get(2) {
                        None => vec![0.0; out_c],
                        Some(n) => match floats.get(n.as_str()) {
                            Some((_, b)) if b.len() == out_c => b.to_vec(),
                            _ => return bad(node, "bias is not a constant of one per output"),
                        },
                    };
                    let group = node.int("group").unwrap_or(1);
                    let group = usize::try_from(group)
                        .ok()
                        .filter(|&g| g >= 1 && out_c % g == 0)
                        .map_or_else(|| bad(node, format!("group {group}")), Ok)?;
                    let strides = usize_list(node, "strides", &[1, 1])?;
                    let pads = usize_list(node, "pads", &[0, 0, 0, 0])?;
                    let dil = usize_list(node, "dilations", &[1, 1])?;
                    let (&[sy, sx], &[pt, pl, pb, pr], &[1, 1]) =
                        (strides.as_slice(), pads.as_slice(), dil.as_slice())
                    else {
                        return bad(node, "only 2-D, undilated convolutions are supported");
                    };
                    if sy == 0 || sx == 0 || node.attrs.contains_key("auto_pad") {
                        return bad(node, "zero stride or auto_pad");
                    }
                    let conv = Conv {
                        weights: weights.to_vec(),
                        bias,
                        out_c,
                        in_c: in_per_group * group,
                        group,
                        kh,
                        kw,
                        stride: (sy, sx),
                        pads: [pt, pl, pb, pr],
                    };
                    (Op::Conv(Box::new(conv)), vec![first])
                }
                "Relu" => (Op::Relu, vec![first]),
                "Add" | "Concat" => {
                    let second = node
                        .inputs
                        .get(1)
                        .map_or_else(|| bad(node, "one input, not two"), |i| fed(i))?;
                    if node.inputs.len() != 2 {
                        return bad(node, "more than two inputs");
                    }
                    if node.op == "Concat" && node.int("axis") != Some(1) {
                        return bad(node, "only channel concatenation is supported");
                    }
                    let op = if node.op == "Add" {
                        Op::Add
                    } else {
                        Op::Concat
                    };
                    (op, vec![first, second])
                }
                "MaxPool" => {
                    let k = usize_list(node, "kernel_shape", &[])?;
                    let s = usize_list(node, "strides", &[1, 1])?;
                    let p = usize_list(node, "pads", &[0, 0, 0, 0])?;
                    match (k.as_slice(), s.as_slice(), p.as_slice()) {
                        (&[k, k2], &[s, s2], &[0, 0, 0, 0]) if k == k2 && s == s2 && s > 0 => {
                            (Op::MaxPool { k, stride: s }, vec![first])
                        }
                        _ => return bad(node, "only square, unpadded pooling is supported"),
                    }
                }
                "Transpose" => {
                    let perm = usize_list(node, "perm", &[])?;
                    let mut sorted = perm.clone();
                    sorted.sort_unstable();
                    if sorted != (0..perm.len()).collect::<Vec<_>>() {
                        return bad(node, format!("perm {perm:?}"));
                    }
                    (Op::Transpose(perm), vec![first])
                }
                "Reshape" => {
                    let shape = node
                        .inputs
                        .get(1)
                        .and_then(|n| ints.get(n.as_str()))
                        .map_or_else(|| bad(node, "shape is not a constant"), |s| Ok(s.to_vec()))?;
                    (Op::Reshape(shape), vec![first])
                }
                other => return Err(NetError(format!("operator {other} is not supported"))),
            };
            steps.push(Step {
                op,
                inputs,
                output: slot,
            });
            slot_of.insert(output, slot);
        }
        let outputs = graph
            .outputs
            .iter()
            .map(|o| {
                slot_of
                    .get(o.as_str())
                    .copied()
                    .ok_or_else(|| NetError(format!("output {o} is never computed")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut outputs = outputs;
        let slots = share_buffers(&mut steps, slots, &mut outputs);
        let mut net = Net {
            steps,
            slots,
            input: 0,
            input_shape: input_shape.to_vec(),
            outputs,
        };
        // One run on zeros checks every shape now, not on the first face.
        let zeros = vec![0.0; input_shape.iter().product()];
        net.run(&zeros)?;
        Ok(net)
    }

    /// Gives the working buffers back to the allocator (the weights stay);
    /// the next run makes them again. For a daemon between bursts.
    pub fn release(&mut self) {
        let working: Vec<usize> = self
            .steps
            .iter()
            .map(|s| s.output)
            .chain([self.input])
            .collect();
        for i in working {
            self.slots[i].data = Vec::new();
        }
    }

    /// Bytes held by the working buffers (the weights not counted).
    pub fn buffer_bytes(&self) -> usize {
        self.slots.iter().map(|s| s.data.capacity() * 4).sum()
    }

    /// Runs the graph; the outputs, in the graph's order, stay valid until
    /// the next run.
    pub fn run(&mut self, input: &[f32]) -> Result<Vec<&[f32]>, NetError> {
        if input.len() != self.input_shape.iter().product::<usize>() {
            return Err(NetError(format!(
                "input of {} values for shape {:?}",
                input.len(),
                self.input_shape
            )));
        }
        {
            let b = &mut self.slots[self.input];
            b.shape.clone_from(&self.input_shape);
            b.data.clear();
            b.data.extend_from_slice(input);
        }
        for step in &self.steps {
            // The output slot is taken out so the inputs can be borrowed.
            let mut out = std::mem::take(&mut self.slots[step.output]);
            let a = &self.slots[step.inputs[0]];
            let b = step.inputs.get(1).map(|&i| &self.slots[i]);
            let result = execute(&step.op, a, b, &mut out);
            self.slots[step.output] = out;
            result?;
        }
        Ok(self
            .outputs
            .iter()
            .map(|&o| self.slots[o].data.as_slice())
            .collect())
    }
}

/// Lets tensors whose lives do not overlap share one buffer: a step's
/// output takes a buffer freed by a tensor already read for the last time.
/// Slot 0 (the input), the constants and the outputs keep their own.
fn share_buffers(steps: &mut [Step], slots: Vec<Buf>, outputs: &mut [usize]) -> Vec<Buf> {
    let computed: std::collections::HashSet<usize> = steps.iter().map(|s| s.output).collect();
    let mut last_use = vec![None; slots.len()];
    for (i, s) in steps.iter().enumerate() {
        for &input in &s.inputs {
            last_use[input] = Some(i);
        }
    }
    let mut physical: Vec<Option<usize>> = vec![None; slots.len()];
    let mut kept: Vec<Buf> = Vec::new();
    for (slot, buf) in slots.into_iter().enumerate() {
        if !computed.contains(&slot) || outputs.contains(&slot) {
            physical[slot] = Some(kept.len());
            kept.push(buf);
        }
    }
    let mut free: Vec<usize> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let out = step.output;
        if physical[out].is_none() {
            physical[out] = Some(free.pop().unwrap_or_else(|| {
                kept.push(Buf::default());
                kept.len() - 1
            }));
        }
        for &input in &step.inputs {
            let freeable = computed.contains(&input) && !outputs.contains(&input);
            if freeable && last_use[input] == Some(i) {
                if let Some(p) = physical[input] {
                    if !free.contains(&p) {
                        free.push(p);
                    }
                }
            }
        }
    }
    for s in steps.iter_mut() {
        s.output = physical[s.output].unwrap_or(0);
        for input in s.inputs.iter_mut() {
            *input = physical[*input].unwrap_or(0);
        }
    }
    for o in outputs.iter_mut() {
        *o = physical[*o].unwrap_or(0);
    }
    kept
}

fn execute(op: &Op, a: &Buf, b: Option<&Buf>, out: &mut Buf) -> Result<(), NetError> {
    let shape_err = |what: &str| Err(NetError(format!("{what}: input of shape {:?}", a.shape)));
    match op {
        Op::Conv(c) => {
            let &[1, ch, h, w] = a.shape.as_slice() else {
                return shape_err("conv");
            };
            if ch != c.in_c {
                return shape_err("conv channels");
            }
            let (sy, sx) = c.stride;
            let (hp, wp) = (h + c.pads[0] + c.pads[2], w + c.pads[1] + c.pads[3]);
            if hp < c.kh || wp < c.kw {
                return shape_err("conv kernel larger than its input");
            }
            let (oh, ow) = ((hp - c.kh) / sy + 1, (wp - c.kw) / sx + 1);
            set_shape(out, &[1, c.out_c, oh, ow]);
            conv(c, &a.data, h, w, &mut out.data, oh, ow);
        }
        Op::Relu => {
            set_shape(out, &a.shape);
            for (o, &x) in out.data.iter_mut().zip(&a.data) {
                *o = x.max(0.0);
            }
        }
        Op::Add => {
            let Some(b) = b.filter(|b| b.shape == a.shape) else {
                return shape_err("add of different shapes");
            };
            set_shape(out, &a.shape);
            for ((o, &x), &y) in out.data.iter_mut().zip(&a.data).zip(&b.data) {
                *o = x + y;
            }
        }
        Op::Concat => {
            let Some(b) = b else {
                return shape_err("concat");
            };
            match (a.shape.as_slice(), b.shape.as_slice()) {
                (&[1, c1, h, w], &[1, c2, h2, w2]) if h == h2 && w == w2 => {
                    out.shape.clear();
                    out.shape.extend_from_slice(&[1, c1 + c2, h, w]);
                    out.data.clear();
                    out.data.extend_from_slice(&a.data);
                    out.data.extend_from_slice(&b.data);
                }
                _ => return shape_err("concat of different sizes"),
            }
        }
        Op::MaxPool { k, stride } => {
            let &[1, ch, h, w] = a.shape.as_slice() else {
                return shape_err("max-pool");
            };
            if h < *k || w < *k {
                return shape_err("max-pool window larger than its input");
            }
            let (oh, ow) = ((h - k) / stride + 1, (w - k) / stride + 1);
            set_shape(out, &[1, ch, oh, ow]);
            for c in 0..ch {
                let plane = &a.data[c * h * w..(c + 1) * h * w];
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut m = f32::NEG_INFINITY;
                        for ky in 0..*k {
                            let row = &plane[(oy * stride + ky) * w + ox * stride..][..*k];
                            m = row.iter().fold(m, |m, &x| m.max(x));
                        }
                        out.data[(c * oh + oy) * ow + ox] = m;
                    }
                }
            }
        }
        Op::Transpose(perm) => {
            if perm.len() != a.shape.len() || perm.len() != 4 {
                return shape_err("transpose (4-D only)");
            }
            let s = &a.shape;
            let new: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
            set_shape(out, &new);
            let strides = [s[1] * s[2] * s[3], s[2] * s[3], s[3], 1];
            let st: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
            let mut i = 0;
            for a0 in 0..new[0] {
                for a1 in 0..new[1] {
                    for a2 in 0..new[2] {
                        let base = a0 * st[0] + a1 * st[1] + a2 * st[2];
                        for a3 in 0..new[3] {
                            out.data[i] = a.data[base + a3 * st[3]];
                            i += 1;
                        }
                    }
                }
            }
        }
        Op::Reshape(shape) => {
            let total = a.data.len();
            let mut dims: Vec<usize> = Vec::with_capacity(shape.len());
            let mut infer = None;
            for (i, &d) in shape.iter().enumerate() {
                match d {
                    -1 if infer.is_none() => {
                        infer = Some(i);
                        dims.push(1);
                    }
                    0 => dims.push(a.shape.get(i).copied().unwrap_or(0)),
                    d if d > 0 => dims.push(d as usize),
                    _ => return shape_err("reshape"),
                }
            }
            let known: usize = dims.iter().product();
            if let Some(i) = infer {
                if known == 0 || total % known != 0 {
                    return shape_err("reshape");
                }
                dims[i] = total / known;
            }
            if dims.iter().product::<usize>() != total {
                return shape_err("reshape to another size");
            }
            out.shape = dims;
            out.data.clear();
            out.data.extend_from_slice(&a.data);
        }
    }
    Ok(())
}

fn set_shape(out: &mut Buf, shape: &[usize]) {
    out.shape.clear();
    out.shape.extend_from_slice(shape);
    out.data.clear();
    out.data.resize(shape.iter().product(), 0.0);
}

/// out[co] = bias[co] + sum over the group's input channels and the kernel.
/// Each product is added a whole output row at a time (a run of contiguous
/// values the compiler vectorises), edges clipped once per row rather than
/// checked per pixel.
fn conv(c: &Conv, input: &[f32], h: usize, w: usize, out: &mut [f32], oh: usize, ow: usize) {
    let in_g = c.in_c / c.group;
    let out_g = c.out_c / c.group;
    let (sy, sx) = c.stride;
    let [pt, pl, _, _] = c.pads;
    let pointwise = c.kh == 1 && c.kw == 1 && sy == 1 && sx == 1 && pt == 0 && pl == 0;
    if sx > 1 {
        return strided_conv(c, input, h, w, out, oh, ow);
    }
    for co in 0..c.out_c {
        let plane = &mut out[co * oh * ow..(co + 1) * oh * ow];
        plane.fill(c.bias[co]);
        let g = co / out_g;
        for cig in 0..in_g {
            let ci = g * in_g + cig;
            let src = &input[ci * h * w..(ci + 1) * h * w];
            let kernel = &c.weights[(co * in_g + cig) * c.kh * c.kw..][..c.kh * c.kw];
            if pointwise {
                let k = kernel[0];
                for (o, &x) in plane.iter_mut().zip(src) {
                    *o += k * x;
                }
                continue;
            }
            for ky in 0..c.kh {
                for kx in 0..c.kw {
                    let k = kernel[ky * c.kw + kx];
                    // Output columns whose input column ox*sx + kx - pl is inside.
                    let x_lo = pl.saturating_sub(kx).div_ceil(sx);
                    let x_hi = if w + pl > kx {
                        ((w + pl - kx - 1) / sx + 1).min(ow)
                    } else {
                        0
                    };
                    if x_lo >= x_hi {
                        continue;
                    }
                    for oy in 0..oh {
                        let iy = oy * sy + ky;
                        if iy < pt || iy - pt >= h {
                            continue;
                        }
                        let row = &src[(iy - pt) * w..][..w];
                        let orow = &mut plane[oy * ow..][..ow];
                        let ix0 = x_lo * sx + kx - pl;
                        if sx == 1 {
                            for (o, &x) in orow[x_lo..x_hi].iter_mut().zip(&row[ix0..]) {
                                *o += k * x;
                            }
                        } else {
                            for (j, o) in orow[x_lo..x_hi].iter_mut().enumerate() {
                                *o += k * row[ix0 + j * sx];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A strided convolution: each input plane is padded once and split into
/// `sy * sx` phase planes (every `sy`-th row and `sx`-th column), so that a
/// kernel tap reads one contiguous run of a phase plane for the whole
/// output plane. The output is computed `pw` columns wide (the phase
/// planes' width) and its extra columns dropped: one long run a tap, which
/// the compiler vectorises, instead of a gather or a short run per row.
fn strided_conv(
    c: &Conv,
    input: &[f32],
    h: usize,
    w: usize,
    out: &mut [f32],
    oh: usize,
    ow: usize,
) {
    let in_g = c.in_c / c.group;
    let out_g = c.out_c / c.group;
    let (sy, sx) = c.stride;
    let [pt, pl, pb, pr] = c.pads;
    let (hp, wp) = (h + pt + pb, w + pl + pr);
    let (ph, pw) = (hp.div_ceil(sy), wp.div_ceil(sx));
    let phase_len = ph * pw;
    let per_channel = sy * sx * phase_len;
    // phases[ci][row phase][column phase][row][column].
    let mut phases = vec![0.0f32; c.in_c * per_channel];
    for ci in 0..c.in_c {
        let src = &input[ci * h * w..(ci + 1) * h * w];
        let dst = &mut phases[ci * per_channel..(ci + 1) * per_channel];
        for y in 0..h {
            let py = y + pt;
            let row = (py % sy) * sx;
            for x in 0..w {
                let px = x + pl;
                dst[(row + px % sx) * phase_len + (py / sy) * pw + px / sx] = src[y * w + x];
            }
        }
    }
    let mut wide = vec![0.0f32; oh * pw];
    for co in 0..c.out_c {
        wide.fill(c.bias[co]);
        let g = co / out_g;
        for cig in 0..in_g {
            let ci = g * in_g + cig;
            let split = &phases[ci * per_channel..(ci + 1) * per_channel];
            let kernel = &c.weights[(co * in_g + cig) * c.kh * c.kw..][..c.kh * c.kw];
            for ky in 0..c.kh {
                for kx in 0..c.kw {
                    let k = kernel[ky * c.kw + kx];
                    let phase = &split[((ky % sy) * sx + kx % sx) * phase_len..][..phase_len];
                    let run = &phase[(ky / sy) * pw + kx / sx..];
                    for (o, &x) in wide.iter_mut().zip(run) {
                        *o += k * x;
                    }
                }
            }
        }
        let plane = &mut out[co * oh * ow..(co + 1) * oh * ow];
        for (orow, wrow) in plane.chunks_exact_mut(ow).zip(wide.chunks_exact(pw)) {
            orow.copy_from_slice(&wrow[..ow]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct definition of a convolution, pixel by pixel.
    fn naive(c: &Conv, input: &[f32], h: usize, w: usize) -> (Vec<f32>, usize, usize) {
        let (sy, sx) = c.stride;
        let oh = (h + c.pads[0] + c.pads[2] - c.kh) / sy + 1;
        let ow = (w + c.pads[1] + c.pads[3] - c.kw) / sx + 1;
        let in_g = c.in_c / c.group;
        let out_g = c.out_c / c.group;
        let mut out = vec![0.0; c.out_c * oh * ow];
        for co in 0..c.out_c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = c.bias[co];
                    for cig in 0..in_g {
                        let ci = (co / out_g) * in_g + cig;
                        for ky in 0..c.kh {
                            for kx in 0..c.kw {
                                let iy = (oy * sy + ky) as i64 - c.pads[0] as i64;
                                let ix = (ox * sx + kx) as i64 - c.pads[1] as i64;
                                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                                    continue;
                                }
                                let x = input[(ci * h + iy as usize) * w + ix as usize];
                                s += x * c.weights[((co * in_g + cig) * c.kh + ky) * c.kw + kx];
                            }
                        }
                    }
                    out[(co * oh + oy) * ow + ox] = s;
                }
            }
        }
        (out, oh, ow)
    }

    #[test]
    fn convolutions_match_their_definition_for_every_geometry_the_model_uses() {
        let mut seed = 7u32;
        let mut rnd = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        // (in, out, group, kernel, stride, pads): the first layer, depthwise
        // with and without stride, pointwise.
        let cases = [
            (3, 4, 1, 5, 2, [1, 1, 2, 2]),
            (4, 4, 4, 3, 1, [1, 1, 1, 1]),
            (4, 4, 4, 3, 2, [0, 0, 1, 1]),
            (4, 6, 1, 1, 1, [0, 0, 0, 0]),
            (2, 2, 1, 3, 1, [1, 1, 1, 1]),
        ];
        for (in_c, out_c, group, k, s, pads) in cases {
            for (h, w) in [(9, 9), (8, 11), (16, 16)] {
                let c = Conv {
                    weights: (0..out_c * in_c / group * k * k).map(|_| rnd()).collect(),
                    bias: (0..out_c).map(|_| rnd()).collect(),
                    out_c,
                    in_c,
                    group,
                    kh: k,
                    kw: k,
                    stride: (s, s),
                    pads,
                };
                let input: Vec<f32> = (0..in_c * h * w).map(|_| rnd()).collect();
                let (want, oh, ow) = naive(&c, &input, h, w);
                let mut got = vec![0.0; want.len()];
                conv(&c, &input, h, w, &mut got, oh, ow);
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() < 1e-5,
                        "{in_c}->{out_c} k{k} s{s} {h}x{w} at {i}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
