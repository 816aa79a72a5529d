//! A model of your own with atom modeling: an MLP whose hidden layer is read as 8 tokens of 8
//! dims, gated by their learned importance, trained on two moons with cross-entropy plus the
//! atom regulariser. `cargo run --release --example mlp_atom` prints its test accuracy.

use atomgrad::atom::{atom_regularizer, AtomConfig, TokenMask};
use atomgrad::nn::{Builder, ImportanceGate, Linear};
use atomgrad::optim::{Adam, AdamConfig, Optimizer};
use atomgrad::{data, ops::reduce::argmax, rng::Rng, Device, Param, Result, Tape, Tensor, Var};

const TOKENS: usize = 8;
const DIM: usize = 8;

struct Model {
    encoder: Linear,
    gate: ImportanceGate,
    head: Linear,
}

impl Model {
    /// Logits, and what the regulariser reads: the latent z, the tokens h and their importances w.
    fn forward(&self, tape: &Tape, x: &Var, mask: &TokenMask) -> Result<[Var; 4]> {
        let n = x.shape()[0];
        let h = self.encoder.forward(tape, x)?.tanh()?.reshape(&[n, TOKENS, DIM])?;
        let gated = self.gate.forward(tape, &h, mask)?;
        let z = gated.tokens.reshape(&[n, TOKENS * DIM])?;
        Ok([self.head.forward(tape, &z)?, z, h, gated.importance])
    }
    fn params(&self) -> Vec<Param> {
        [self.encoder.params(), self.gate.params(), self.head.params()].concat()
    }
}

/// Trains for `epochs` and returns the test accuracy.
pub fn run(epochs: usize) -> Result<f64> {
    let dev = Device::new()?;
    let (train, test, batch) = (data::moons(1024, 0.1, 0), data::moons(500, 0.1, 1), 64);
    let mut b = Builder::new(&dev, 0);
    let model = Model { encoder: b.linear(2, TOKENS * DIM)?, gate: b.importance_gate(DIM)?, head: b.linear(64, 2)? };
    let mut opt = Adam::new(model.params(), AdamConfig::adam(1e-2))?;
    let (atom, mask, mut rng) = (AtomConfig::default(), TokenMask::full(&dev, batch, TOKENS)?, Rng::new(0));
    let batches = (0..epochs).flat_map(|_| data::epoch_batches(train.len(), batch, &mut rng)).collect::<Vec<_>>();
    for (step, idx) in batches.iter().enumerate() {
        let (bx, by) = train.batch(idx);
        let tape = Tape::new();
        let x = tape.constant(Tensor::from_slice(&dev, &bx, &[batch, 2])?);
        let [logits, z, h, w] = model.forward(&tape, &x, &mask)?;
        let (reg, _) = atom_regularizer(&z, &h, &w, &mask, &atom, step)?;
        logits.cross_entropy(&Tensor::from_u32(&dev, &by, &[batch])?)?.add(&reg)?.backward()?;
        opt.step()?;
        opt.zero_grad();
        dev.flush()?; // the step's one submit
    }
    let tape = Tape::no_grad();
    let x = tape.constant(Tensor::from_slice(&dev, &test.x, &[test.len(), 2])?);
    let [logits, ..] = model.forward(&tape, &x, &TokenMask::full(&dev, test.len(), TOKENS)?)?;
    let pred = argmax(logits.value(), 1, false)?.to_vec_u32()?;
    Ok(pred.iter().zip(&test.y).filter(|(p, y)| p == y).count() as f64 / test.len() as f64)
}

fn main() -> Result<()> {
    println!("mlp_atom: test accuracy {:.1}% on two moons", 100.0 * run(20)?);
    Ok(())
}

#[test]
fn learns_the_moons() {
    let acc = run(10).unwrap();
    assert!(acc > 0.9, "test accuracy {acc}");
}
