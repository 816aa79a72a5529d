//! Training the CNN with atom modeling on a folder of your own images: one subfolder per class
//! of PNG or JPEG files (here written by the example itself into a temporary folder: bars across,
//! bars down and squares, in random colours). `cargo run --release --example own_images` prints
//! the validation and test accuracy of each epoch. The command line does the same with
//! `atomgrad train --task images --data DIR` (and `compare`, `explain`).

use atomgrad::atom::{atom_regularizer, AtomConfig, TokenMask};
use atomgrad::data::images::{batch_of, load_image_folder, ImageFolderConfig, ImageFolderData};
use atomgrad::data::ImageSet;
use atomgrad::nn::cnn::Cnn;
use atomgrad::optim::{Adam, AdamConfig, Optimizer};
use atomgrad::train::{fit, EpochReport, Eval, FitOptions, Hooks, Learner};
use atomgrad::{ops::reduce::argmax, rng::Rng, Device, Result, Tape, Tensor, Var};
use std::path::{Path, PathBuf};

/// Writes `per_class` 24 x 24 PNGs of each of three classes into `dir/<class>/`.
fn write_images(dir: &Path, per_class: usize) -> Result<()> {
    let mut rng = Rng::new(1);
    for (k, class) in ["across", "down", "square"].iter().enumerate() {
        std::fs::create_dir_all(dir.join(class)).map_err(|e| atomgrad::Error::io(dir, e))?;
        for i in 0..per_class {
            let colour = [0, 1, 2].map(|_| 80 + rng.below(176) as u8);
            let (off, noise) = (rng.below(4) as u32, &mut rng);
            let img = image::RgbImage::from_fn(24, 24, |x, y| {
                let on = match k {
                    0 => (y + off) % 6 < 3,
                    1 => (x + off) % 6 < 3,
                    _ => (6 + off..18 + off).contains(&x) && (6 + off..18 + off).contains(&y),
                };
                image::Rgb(colour.map(|c| if on { c } else { noise.below(60) as u8 }))
            });
            let path = dir.join(class).join(format!("{i}.png"));
            img.save(&path).map_err(|e| atomgrad::Error::data(&path, e.to_string()))?;
        }
    }
    Ok(())
}

struct ImageLearner<'a> {
    dev: Device,
    data: &'a ImageFolderData,
    model: Cnn,
    opt: Adam,
    mask: TokenMask,
}

impl ImageLearner<'_> {
    fn accuracy(&self, set: &ImageSet) -> Result<f64> {
        let (n, s, tape) = (set.len(), self.data.size, Tape::no_grad());
        let x = tape.constant(Tensor::from_slice(&self.dev, &set.x, &[n, self.data.channels, s, s])?);
        let mask = TokenMask::full(&self.dev, n, self.model.tokens())?;
        let out = self.model.forward(&tape, &x, false, true, &mask)?;
        let pred = argmax(out.logits.value(), 1, false)?.to_vec_u32()?;
        Ok(pred.iter().zip(&set.y).filter(|(p, y)| p == y).count() as f64 / n as f64)
    }
}

impl Learner for ImageLearner<'_> {
    fn tensors(&self) -> Vec<(String, Tensor)> {
        self.model.tensors()
    }
    fn optimizer(&mut self) -> &mut dyn Optimizer {
        &mut self.opt
    }
    fn train_len(&self) -> usize {
        self.data.train.len()
    }
    fn loss(&mut self, tape: &Tape, idx: &[usize], step: usize, _rng: &mut Rng) -> Result<Var> {
        let (d, b) = (self.data, idx.len());
        let (bx, by) = batch_of(&d.train, idx, d.image_len());
        let x = tape.constant(Tensor::from_slice(&self.dev, &bx, &[b, d.channels, d.size, d.size])?);
        let out = self.model.forward(tape, &x, true, true, &self.mask)?;
        let w = out.w.as_ref().expect("gated");
        let (reg, _) = atom_regularizer(&out.z, &out.h, w, &self.mask, &AtomConfig::default(), step)?;
        out.logits.cross_entropy(&Tensor::from_u32(&self.dev, &by, &[b])?)?.add(&reg)
    }
    fn evaluate(&mut self) -> Result<Eval> {
        Ok(Eval { val: self.accuracy(&self.data.val)?, test: self.accuracy(&self.data.test)? })
    }
}

/// Prints each epoch's accuracies.
struct Print;
impl Hooks for Print {
    fn after_epoch(&mut self, r: &EpochReport) -> Result<()> {
        println!(
            "epoch {}: loss {:.3}, validation {:.1}%, test {:.1}%",
            r.epoch + 1,
            r.train_loss,
            100.0 * r.val_accuracy,
            100.0 * r.test_accuracy
        );
        Ok(())
    }
}

/// Writes the images, trains for `epochs` and returns the last epoch's report.
pub fn run(dir: &Path, epochs: usize) -> Result<EpochReport> {
    write_images(dir, 40)?;
    let data = load_image_folder(dir, &ImageFolderConfig { size: 16, ..ImageFolderConfig::default() })?;
    println!("{}", data.description());
    let dev = Device::new()?;
    let model = Cnn::for_images(&dev, data.channels, data.size, 8, 16, data.classes.len(), 0)?;
    let (batch, opt) = (16, Adam::new(model.params(true), AdamConfig::adam(3e-3))?);
    let mask = TokenMask::full(&dev, batch, model.tokens())?;
    let mut learner = ImageLearner { dev: dev.clone(), data: &data, model, opt, mask };
    let opts = FitOptions { epochs, batch, seed: 0, detect_anomaly: false, schedule: None };
    let fitted = fit(&dev, &mut learner, &opts, None, &mut Print)?;
    Ok(fitted.history.last().cloned().expect("at least one epoch"))
}

/// A fresh folder under the system's temporary directory.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("atomgrad-own-images-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn main() -> Result<()> {
    let dir = temp_dir("main");
    let r = run(&dir, 8);
    let _ = std::fs::remove_dir_all(&dir);
    println!("own_images: test accuracy {:.1}% after {} epochs", 100.0 * r?.test_accuracy, 8);
    Ok(())
}

#[test]
fn learns_the_folder() {
    let dir = temp_dir("test");
    let r = run(&dir, 6);
    let _ = std::fs::remove_dir_all(&dir);
    let r = r.unwrap();
    assert!(r.val_accuracy > 0.8 && r.test_accuracy > 0.8, "{r:?}");
}
