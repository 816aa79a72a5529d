//! End-to-end: an MLP learns two moons; one seed gives bit-identical parameters; a training step is
//! one submit and allocates nothing after its first iteration, and over hundreds of steps of the
//! shared loop (CNN with atom modeling) the buffer pool stops growing after the first epoch.
mod common;
use atomgrad::data::moons;
use atomgrad::nn::{Activation, Mlp};
use atomgrad::optim::{Adam, AdamConfig, Optimizer};
use atomgrad::train::{fit, train_moons, Hooks, MoonsConfig};
use atomgrad::{Tape, Tensor};
use common::{device, own_device};

fn params_bits(m: &Mlp) -> Vec<u32> {
    m.params().iter().flat_map(|p| p.value().to_vec().unwrap()).map(f32::to_bits).collect()
}

#[test]
fn mlp_reaches_95_percent_on_two_moons() {
    let dev = device();
    let cfg = MoonsConfig { epochs: 12, ..Default::default() };
    let run = train_moons(&dev, &cfg).unwrap();
    let h = &run.history;
    let acc = h.last().unwrap().test_accuracy;
    assert!(acc >= 0.95, "test accuracy {acc} < 0.95; history {h:?}");
    assert!(h.last().unwrap().train_loss < h[0].train_loss / 2.0, "loss did not fall: {h:?}");
}

#[test]
fn same_seed_gives_bit_identical_parameters() {
    let dev = device();
    let cfg = MoonsConfig { epochs: 2, train: 512, ..Default::default() };
    let a = train_moons(&dev, &cfg).unwrap();
    let b = train_moons(&dev, &cfg).unwrap();
    assert_eq!(params_bits(&a.model), params_bits(&b.model));
    let c = train_moons(&dev, &MoonsConfig { seed: 1, ..cfg }).unwrap();
    assert_ne!(params_bits(&a.model), params_bits(&c.model));
}

#[test]
fn a_step_is_one_submit_and_the_pool_and_bind_groups_stop_growing() {
    let dev = own_device();
    let data = moons(256, 0.1, 0);
    let model = Mlp::new(&dev, "mlp", &[2, 32, 32, 2], Activation::Relu, 0).unwrap();
    let mut opt = Adam::new(model.params(), AdamConfig::default()).unwrap();
    let idx: Vec<usize> = (0..64).collect();
    let mut after_first = None;
    for step in 0..12 {
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
        if step >= 2 {
            // From the third step on the pool hands out the same buffers in the same places, so
            // every bind group comes from the cache.
            assert_eq!(after.bind_groups_created, before.bind_groups_created, "step {step} created bind groups");
        }
        if step == 0 {
            after_first = Some(after.buffers_created);
        } else {
            assert_eq!(Some(after.buffers_created), after_first, "step {step} allocated new buffers");
        }
    }
}

/// Records the pool's allocation count after every step of [`fit`].
#[derive(Default)]
struct PoolWatch {
    dev: Option<atomgrad::Device>,
    /// (epoch, buffers created so far, bytes allocated so far) after each step.
    seen: Vec<(usize, u64, u64)>,
}

impl Hooks for PoolWatch {
    fn after_step(&mut self, _: usize, epoch: usize, _: usize, _: usize) {
        let s = self.dev.as_ref().unwrap().stats();
        self.seen.push((epoch, s.buffers_created, s.bytes_created));
    }
}

/// The GPU memory test of the training loop: the Fashion-MNIST CNN with atom modeling (the
/// heaviest per-step graph: conv, batch norm, pooling, the pairwise atom kernels, Adam) for 4
/// epochs of 24 steps. Evaluation allocates its own sizes during epoch 1; from then on not one
/// buffer is created and the pool's bytes stay flat.
#[test]
fn the_buffer_pool_stops_growing_over_hundreds_of_steps() {
    use atomgrad::data::fashion::{load_fashion, FashionSource};
    use atomgrad::experiments::classify::{ClassifyConfig, FashionLearner};
    use atomgrad::experiments::Method;
    let dev = own_device();
    let data = load_fashion(FashionSource::Bundled).unwrap();
    let cfg = ClassifyConfig {
        epochs: 4,
        batch: 16,
        train_limit: Some(384),
        test_limit: Some(64),
        channels: (4, 8),
        ..ClassifyConfig::fashion()
    };
    let mut l = FashionLearner::new(&dev, &data, &cfg, Method::Atom, 0).unwrap();
    let mut watch = PoolWatch { dev: Some(dev.clone()), ..Default::default() };
    fit(&dev, &mut l, &cfg.fit_options(0, data.train.len()), None, &mut watch).unwrap();
    let s = &watch.seen;
    assert_eq!(s.len(), 4 * 24);
    let first_after_epoch1 = s.iter().find(|x| x.0 == 1).unwrap();
    let last = s.last().unwrap();
    assert_eq!(
        (last.1, last.2),
        (first_after_epoch1.1, first_after_epoch1.2),
        "the pool grew after epoch 1: {first_after_epoch1:?} -> {last:?}"
    );
    // Within epoch 1 only the first step allocates (evaluation comes after the last step).
    let epoch1: Vec<_> = s.iter().filter(|x| x.0 == 0).collect();
    assert!(epoch1[1..].iter().all(|x| x.1 == epoch1[0].1), "steps after the first allocated: {epoch1:?}");
}

/// The hinge baselines' margin follows the latent's scale: by default it is the median pairwise
/// distance of the first batch's latents at initialisation (so the hinge is active), positive
/// and finite; a margin the recipe sets is kept.
#[test]
fn hinge_margins_come_from_the_latent_scale() {
    use atomgrad::experiments::classify::{ClassifyConfig, FashionLearner};
    use atomgrad::experiments::Method;
    let dev = device();
    let data = atomgrad::data::load_fashion(atomgrad::data::FashionSource::Bundled).unwrap();
    let cfg = ClassifyConfig { batch: 16, channels: (4, 8), ..ClassifyConfig::fashion() };
    assert_eq!(cfg.margin, 0.0);
    let l1 = FashionLearner::new(&dev, &data, &cfg, Method::HingeL1, 0).unwrap().margin;
    let l2 = FashionLearner::new(&dev, &data, &cfg, Method::HingeL2, 0).unwrap().margin;
    assert!(l1.is_finite() && l2.is_finite() && l2 > 0.0 && l1 > l2, "L1 {l1}, L2 {l2}");
    let fixed = ClassifyConfig { margin: 2.5, ..cfg };
    assert_eq!(FashionLearner::new(&dev, &data, &fixed, Method::HingeL2, 0).unwrap().margin, 2.5);
}
