//! Data sets and minibatch iteration: two moons generated from a seed (here), Fashion-MNIST images
//! ([`fashion`]) and Rotten Tomatoes review snippets for sentiment ([`reviews`]), both read from real
//! files that ship in `assets/` and are checked as they are read; and your own data: a folder of
//! images with one subfolder per class ([`images`]) and a CSV of texts and labels
//! ([`reviews::load_text_csv`]).

pub mod fashion;
pub mod images;
pub mod reviews;

pub use fashion::{load_fashion, FashionData, FashionSource, ImageSet};
pub use images::{load_image_folder, ImageFolderConfig, ImageFolderData};
pub use reviews::{load_reviews, load_reviews_with, load_text_csv, ReviewSplit, ReviewsConfig, ReviewsData, Vocab};

use crate::rng::Rng;

/// A labelled data set held on the host: `x` is row-major `[n, dim]`.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub x: Vec<f32>,
    pub y: Vec<u32>,
    pub dim: usize,
    pub classes: usize,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.y.len()
    }
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
    /// Rows `idx` gathered into one batch.
    pub fn batch(&self, idx: &[usize]) -> (Vec<f32>, Vec<u32>) {
        let mut x = Vec::with_capacity(idx.len() * self.dim);
        let mut y = Vec::with_capacity(idx.len());
        for &i in idx {
            x.extend_from_slice(&self.x[i * self.dim..(i + 1) * self.dim]);
            y.push(self.y[i]);
        }
        (x, y)
    }
}

/// Two interleaving half circles (as scikit-learn's `make_moons`): class 0 is the upper arc
/// (cos t, sin t), class 1 the lower arc (1 - cos t, 0.5 - sin t), t uniform in [0, pi], plus
/// Gaussian noise of standard deviation `noise` on both coordinates.
pub fn moons(n: usize, noise: f64, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let mut x = Vec::with_capacity(2 * n);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let t = rng.range(0.0, std::f64::consts::PI);
        let c = (i % 2) as u32;
        let (px, py) = if c == 0 { (t.cos(), t.sin()) } else { (1.0 - t.cos(), 0.5 - t.sin()) };
        x.push((px + noise * rng.normal()) as f32);
        x.push((py + noise * rng.normal()) as f32);
        y.push(c);
    }
    Dataset { x, y, dim: 2, classes: 2 }
}

/// Shuffled minibatch index lists for one epoch; the last partial batch is dropped so every
/// step has the same shapes (and so reuses the same pooled buffers).
pub fn epoch_batches(n: usize, batch: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut idx);
    idx.chunks_exact(batch).map(|c| c.to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn moons_are_balanced_deterministic_and_bounded() {
        let a = moons(1000, 0.1, 3);
        let b = moons(1000, 0.1, 3);
        assert_eq!(a.x, b.x);
        assert_eq!(a.y.iter().filter(|&&c| c == 1).count(), 500);
        assert!(a.x.iter().all(|v| v.abs() < 3.0));
        assert_ne!(moons(1000, 0.1, 4).x, a.x);
    }
    #[test]
    fn batches_cover_each_index_once() {
        let mut rng = Rng::new(1);
        let b = epoch_batches(10, 3, &mut rng);
        assert_eq!(b.len(), 3);
        let mut all: Vec<usize> = b.concat();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 9);
    }
}
