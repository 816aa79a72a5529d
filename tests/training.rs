//! End-to-end: an MLP learns two moons; one seed gives bit-identical parameters; a training step is
//! one submit and allocates nothing after its first iteration.
mod common;
use atomgrad::data::moons;
use atomgrad::nn::{Activation, Mlp};
use atomgrad::optim::{Adam, AdamConfig, Optimizer};
use atomgrad::train::{train_moons, MoonsConfig};
use atomgrad::{Tape, Tensor};
use common::device;

fn params_bits(m: &Mlp) -> Vec<u32> {
    m.params().iter().flat_map(|p| p.value().to_vec().unwrap()).map(f32::to_bits).collect()
}

#[test]
fn mlp_reaches_95_percent_on_two_moons() {
    let dev = device();
    let cfg = MoonsConfig { epochs: 12, ..Default::default() };
    let run = train_moons(&dev, &cfg, |_| {}, |_| {}).unwrap();
    let h = &run.history;
    let acc = h.last().unwrap().test_accuracy;
    assert!(acc >= 0.95, "test accuracy {acc} < 0.95; history {h:?}");
    assert!(h.last().unwrap().train_loss < h[0].train_loss / 2.0, "loss did not fall: {h:?}");
}

#[test]
fn same_seed_gives_bit_identical_parameters() {
    let dev = device();
    let cfg = MoonsConfig { epochs: 2, train: 512, ..Default::default() };
    let a = train_moons(&dev, &cfg, |_| {}, |_| {}).unwrap();
    let b = train_moons(&dev, &cfg, |_| {}, |_| {}).unwrap();
    assert_eq!(params_bits(&a.model), params_bits(&b.model));
    let c = train_moons(&dev, &MoonsConfig { seed: 1, ..cfg }, |_| {}, |_| {}).unwrap();
    assert_ne!(params_bits(&a.model), params_bits(&c.model));
}

#[test]
fn a_step_is_one_submit_and_the_pool_stops_growing() {
    let dev = device();
    let data = moons(256, 0.1, 0);
    let model = Mlp::new(&dev, "mlp", &[2, 32, 32, 2], Activation::Relu, 0).unwrap();
    let mut opt = Adam::new(model.params(), AdamConfig::default()).unwrap();
    let idx: Vec<usize> = (0..64).collect();
    let mut after_first = None;
    for step in 0..6 {
        let before = dev.stats();
        let (bx, by) = data.batch(&idx);
        let tape = Tape::new();
        let x = tape.constant(Tensor::from_slice(&dev, &bx, &[64, 2]).unwrap());
        let y = Tensor::from_u32(&dev, &by, &[64]).unwrap();
        let loss = model.forward(&tape, &x).unwrap().cross_entropy(&y).unwrap();
        loss.backward().unwrap();
        opt.step().unwrap();
        opt.zero_grad();
        drop((tape, loss, x, y));
        dev.flush().unwrap();
        let after = dev.stats();
        assert_eq!(after.submits - before.submits, 1, "step {step} was not exactly one submit");
        assert_eq!(after.readbacks, before.readbacks, "step {step} read data back");
        if step == 0 {
            after_first = Some(after.buffers_created);
        } else {
            assert_eq!(Some(after.buffers_created), after_first, "step {step} allocated new buffers");
        }
    }
}
