//! Reverse-mode autodiff, micrograd-sized. A [`Tape`] records every op as a node holding the
//! closure that maps the output's gradient to its inputs' gradients (the op's local gradient is
//! stated once, where the op is defined in `ops::*`). [`Var::backward`] walks the nodes in reverse
//! creation order (a topological order) and sums the contributions of tensors used several times
//! with the WGSL accumulation kernel. Parameters own their gradients ([`Param::grad`]).

use crate::error::{Error, Result};
use crate::ops::elementwise;
use crate::tensor::Tensor;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

type BackwardFn = Box<dyn FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>>>;

struct Node {
    parents: Vec<usize>,
    backward: Option<BackwardFn>,
    param: Option<Param>,
    requires_grad: bool,
    /// The Rust path of the op's backward closure (names the op in anomaly reports).
    op: &'static str,
}

struct TapeInner {
    nodes: Vec<Node>,
    grad_enabled: bool,
    /// Anomaly detection ([`Tape::detect_anomaly`]): on, and the first finding.
    anomaly: Option<Option<String>>,
}

/// Records the ops of one forward pass so that [`Var::backward`] can run them in reverse. Cheap
/// to clone (shared).
///
/// Make a new tape for every step ([`Tape::new`]), or [`Tape::no_grad`] for evaluation (ops run,
/// nothing is kept). Inputs enter as [`Tape::constant`] (data), [`Tape::leaf`] (an input whose
/// gradient you want back) or [`Tape::param`] (a [`Param`], whose gradient accumulates in it).
/// Every op on a [`Var`] records its output and its backward rule here; [`Tape::op`] records an
/// op of your own (a user kernel, [`crate::kernel`]). A tape is single-threaded (`Rc`).
#[derive(Clone)]
pub struct Tape {
    inner: Rc<RefCell<TapeInner>>,
}

impl Default for Tape {
    fn default() -> Self {
        Tape::new()
    }
}

/// A tensor on a [`Tape`]: the value an op computed and its place in the graph. The ops are
/// methods (`x.matmul(&w)?.add(&b)?.relu()?`, one per kernel family in [`crate::ops`]), each
/// returning a new `Var` on the same tape; [`Var::backward`] on a scalar loss sends gradients to
/// every [`Param`] and leaf it came from. [`Var::value`] is the tensor itself; [`Var::detach`]
/// cuts the graph.
#[derive(Clone)]
pub struct Var {
    tape: Tape,
    id: usize,
    value: Tensor,
    requires_grad: bool,
}

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Var#{}({:?})", self.id, self.value)
    }
}

struct ParamInner {
    name: String,
    value: Tensor,
    grad: Option<Tensor>,
}

/// A trainable tensor with a name: its value is updated in place by optimizers
/// ([`crate::optim`]), its gradient is summed over every `backward` until [`Param::zero_grad`].
/// The name is the tensor's key in checkpoints. Clones share the same parameter; a layer lists its
/// parameters for the optimizer (`Module::params`) and enters them on each step's tape with
/// [`Tape::param`].
#[derive(Clone)]
pub struct Param {
    inner: Rc<RefCell<ParamInner>>,
}

impl Param {
    pub fn new(name: impl Into<String>, value: Tensor) -> Param {
        Param { inner: Rc::new(RefCell::new(ParamInner { name: name.into(), value, grad: None })) }
    }
    pub fn name(&self) -> String {
        self.inner.borrow().name.clone()
    }
    pub fn value(&self) -> Tensor {
        self.inner.borrow().value.clone()
    }
    pub fn grad(&self) -> Option<Tensor> {
        self.inner.borrow().grad.clone()
    }
    pub fn shape(&self) -> Vec<usize> {
        self.inner.borrow().value.shape().to_vec()
    }
    pub fn zero_grad(&self) {
        self.inner.borrow_mut().grad = None;
    }
    /// Replaces the gradient (used by gradient clipping and tests).
    pub fn set_grad(&self, g: Option<Tensor>) {
        self.inner.borrow_mut().grad = g;
    }
    pub fn same(&self, other: &Param) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
    fn add_grad(&self, g: Tensor) -> Result<()> {
        let mut p = self.inner.borrow_mut();
        p.grad = Some(match p.grad.take() {
            None => g,
            Some(acc) => accumulate(acc, g)?,
        });
        Ok(())
    }
}

/// `acc + g`, in place when `acc` is not shared with anything else.
fn accumulate(acc: Tensor, g: Tensor) -> Result<Tensor> {
    if acc.shape() != g.shape() {
        return Err(Error::shape(
            "accumulate",
            format!("gradient of shape {:?} added to one of shape {:?}", g.shape(), acc.shape()),
        ));
    }
    if acc.is_unique() {
        elementwise::accumulate(&acc, &g)?;
        Ok(acc)
    } else {
        elementwise::binary(&acc, &g, elementwise::Binary::Add)
    }
}

/// What a loss takes its targets (labels, probabilities) as: a [`Var`] on the loss's tape, or a
/// [`Tensor`] of data, which becomes a constant of the tape. Every loss (`Var::cross_entropy`,
/// `Var::bce_with_logits`) takes `&impl Target`, so both `&Tensor` and `&Var` work.
pub trait Target {
    /// The targets' values.
    fn target_value(&self) -> &Tensor;
    /// The targets on `tape` (a constant for a tensor).
    fn target_var(&self, tape: &Tape) -> Var;
}

impl Target for Var {
    fn target_value(&self) -> &Tensor {
        &self.value
    }
    fn target_var(&self, _tape: &Tape) -> Var {
        self.clone()
    }
}

impl Target for Tensor {
    fn target_value(&self) -> &Tensor {
        self
    }
    fn target_var(&self, tape: &Tape) -> Var {
        tape.constant(self.clone())
    }
}

/// Gradients of the non-parameter leaves that asked for them ([`Tape::leaf`]).
pub struct Gradients {
    grads: HashMap<usize, Tensor>,
}

impl Gradients {
    pub fn get(&self, v: &Var) -> Option<&Tensor> {
        self.grads.get(&v.id)
    }
}

impl Tape {
    /// A tape that records gradients.
    pub fn new() -> Tape {
        Tape { inner: Rc::new(RefCell::new(TapeInner { nodes: Vec::new(), grad_enabled: true, anomaly: None })) }
    }
    /// A tape for evaluation: ops run, nothing is kept for a backward pass.
    pub fn no_grad() -> Tape {
        let t = Tape::new();
        t.inner.borrow_mut().grad_enabled = false;
        t
    }
    pub fn grad_enabled(&self) -> bool {
        self.inner.borrow().grad_enabled
    }
    pub fn len(&self) -> usize {
        self.inner.borrow().nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&self, value: Tensor, node: Node) -> Var {
        let requires_grad = node.requires_grad;
        let mut t = self.inner.borrow_mut();
        t.nodes.push(node);
        Var { tape: self.clone(), id: t.nodes.len() - 1, value, requires_grad }
    }

    /// An input that needs no gradient (data, labels, masks).
    pub fn constant(&self, value: Tensor) -> Var {
        self.check(&value, || "an input constant (data)".into());
        self.push(value, Node { parents: vec![], backward: None, param: None, requires_grad: false, op: "constant" })
    }
    /// An input whose gradient [`Var::backward`] returns in [`Gradients`].
    pub fn leaf(&self, value: Tensor) -> Var {
        let rg = self.grad_enabled();
        self.push(value, Node { parents: vec![], backward: None, param: None, requires_grad: rg, op: "leaf" })
    }
    /// A parameter: its gradient is added to [`Param::grad`] by `backward`.
    pub fn param(&self, p: &Param) -> Var {
        self.check(&p.value(), || format!("parameter {:?}", p.name()));
        let rg = self.grad_enabled();
        self.push(
            p.value(),
            Node { parents: vec![], backward: None, param: Some(p.clone()), requires_grad: rg, op: "param" },
        )
    }

    /// Records an op: `value` was computed from `inputs`; `backward` maps the gradient of
    /// `value` to one optional gradient per input (same order). Used by every op in `ops::*`.
    pub fn op(
        &self,
        value: Tensor,
        inputs: &[&Var],
        backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + 'static,
    ) -> Var {
        let needs = self.grad_enabled() && inputs.iter().any(|v| v.requires_grad);
        let op = std::any::type_name_of_val(&backward);
        self.check(&value, || format!("the output of {}", op_name(op)));
        let node = Node {
            parents: inputs.iter().map(|v| v.id).collect(),
            backward: if needs { Some(Box::new(backward)) } else { None },
            param: None,
            requires_grad: needs,
            op,
        };
        self.push(value, node)
    }

    /// Turns on anomaly detection: every op's output and every gradient a backward rule
    /// produces is read back and checked for NaN/Inf; the first one found is reported by
    /// [`Tape::anomaly`], naming the op. Each check is a GPU round trip: for debugging only.
    pub fn detect_anomaly(&self) {
        self.inner.borrow_mut().anomaly = Some(None);
    }

    /// The first NaN/Inf anomaly detection found on this tape, as an error naming the op and
    /// `step`; `Ok` when detection is off or found nothing.
    pub fn anomaly(&self, step: usize) -> Result<()> {
        match &self.inner.borrow().anomaly {
            Some(Some(what)) => Err(Error::NonFinite { step: step as u64, what: what.clone() }),
            _ => Ok(()),
        }
    }

    /// With detection on and nothing found yet, records `what()` if `t` holds NaN/Inf. A failed
    /// readback is recorded too (it would hide the anomaly).
    fn check(&self, t: &Tensor, what: impl FnOnce() -> String) {
        if !matches!(self.inner.borrow().anomaly, Some(None)) || t.dtype() != crate::tensor::DType::F32 {
            return;
        }
        let finding = match t.to_vec() {
            Ok(v) => {
                let bad = v.iter().filter(|x| !x.is_finite()).count();
                (bad > 0).then(|| format!("{} holds {bad} NaN/Inf value(s) (shape {:?})", what(), t.shape()))
            }
            Err(e) => Some(format!("{}: readback failed during anomaly detection: {e}", what())),
        };
        if finding.is_some() {
            self.inner.borrow_mut().anomaly = Some(finding);
        }
    }
}

/// `atomgrad::ops::elementwise::<impl atomgrad::autodiff::Var>::relu::{{closure}}` ->
/// `relu (ops::elementwise)`: the op's function and module, from its closure's type name.
fn op_name(path: &str) -> String {
    let mut p = path;
    while let Some(q) = p.strip_suffix("::{{closure}}") {
        p = q;
    }
    let func = p.rsplit("::").next().unwrap_or(p);
    let module = p.split("::<").next().unwrap_or(p);
    let module = module.strip_prefix("atomgrad::").unwrap_or(module);
    if module == p {
        func.to_string()
    } else {
        format!("{func} ({module})")
    }
}

impl Var {
    pub fn value(&self) -> &Tensor {
        &self.value
    }
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }
    pub fn tape(&self) -> &Tape {
        &self.tape
    }
    pub fn requires_grad(&self) -> bool {
        self.requires_grad
    }
    /// Same tape, no gradient flows back through the result.
    pub fn detach(&self) -> Var {
        self.tape.constant(self.value.clone())
    }

    /// Back-propagates from this scalar: parameter gradients are added to their [`Param`]s,
    /// leaf gradients are returned. Records GPU work only; nothing is read back.
    pub fn backward(&self) -> Result<Gradients> {
        if self.value.numel() != 1 {
            return Err(Error::shape("backward", format!("needs a scalar loss, got shape {:?}", self.value.shape())));
        }
        let seed = Tensor::full(self.value.device(), self.value.shape(), 1.0)?;
        self.backward_with(seed)
    }

    /// Back-propagates a given output gradient (same shape as this value).
    pub fn backward_with(&self, grad: Tensor) -> Result<Gradients> {
        if grad.shape() != self.value.shape() {
            return Err(Error::shape(
                "backward",
                format!("gradient shape {:?} differs from value shape {:?}", grad.shape(), self.value.shape()),
            ));
        }
        let mut grads: Vec<Option<Tensor>> = vec![None; self.id + 1];
        grads[self.id] = Some(grad);
        let mut out = HashMap::new();
        for id in (0..=self.id).rev() {
            let Some(g) = grads[id].take() else { continue };
            let (parents, backward, param, requires_grad, op) = {
                let mut t = self.tape.inner.borrow_mut();
                let n = &mut t.nodes[id];
                (n.parents.clone(), n.backward.take(), n.param.clone(), n.requires_grad, n.op)
            };
            if let Some(p) = param {
                p.add_grad(g)?;
                continue;
            }
            let Some(f) = backward else {
                if requires_grad && parents.is_empty() {
                    out.insert(id, g);
                }
                continue;
            };
            let pg = f(&g)?;
            drop(g);
            for (k, (pid, pgrad)) in parents.into_iter().zip(pg).enumerate() {
                let Some(pgrad) = pgrad else { continue };
                self.tape
                    .check(&pgrad, || format!("the gradient that the backward of {} gives its input {k}", op_name(op)));
                if !self.tape.inner.borrow().nodes[pid].requires_grad {
                    continue;
                }
                grads[pid] = Some(match grads[pid].take() {
                    None => pgrad,
                    Some(acc) => accumulate(acc, pgrad)?,
                });
            }
        }
        Ok(Gradients { grads: out })
    }
}
