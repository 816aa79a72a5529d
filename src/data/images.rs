//! Your own images: a folder with one subfolder per class, each holding PNG or JPEG files
//! (`.png`, `.jpg`, `.jpeg`, any case; other files and hidden entries are ignored). Every image
//! is decoded with the `image` crate, resized so its shorter side is `size` and centre-cropped to
//! `size` x `size`, and kept in grayscale (1 channel) or RGB (3 channels): grayscale when every
//! image is (or when asked), RGB otherwise. Classes are the subfolder names in sorted order.
//!
//! Splits, per class (stratified, one seeded shuffle of each class's sorted file list): a
//! `test_fraction` of the images for test, a `val_fraction` of the rest for validation (model
//! selection), the rest for training, each rounded to the nearest image. Pixels are scaled to
//! [0, 1] and normalised per channel by the training split's mean and standard deviation.
//!
//! Every problem is an `Error::Data` naming the file or folder: a missing folder, fewer than two
//! classes, a class without images, an image that cannot be read or decoded (truncated, not an
//! image), and nothing else is read or written before the whole folder has been decoded.

use crate::data::fashion::ImageSet;
use crate::error::{Error, Result};
use crate::rng::Rng;
use std::path::{Path, PathBuf};

/// How [`load_image_folder`] reads and splits a folder.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageFolderConfig {
    /// Side of the square images the model sees.
    pub size: usize,
    /// Force grayscale (`Some(true)`) or RGB (`Some(false)`); `None`: grayscale when every image is.
    pub grayscale: Option<bool>,
    /// Fraction of each class held out for test.
    pub test_fraction: f64,
    /// Fraction of each class's remaining images held out for validation.
    pub val_fraction: f64,
    /// Seed of the split.
    pub seed: u64,
}

impl Default for ImageFolderConfig {
    fn default() -> Self {
        ImageFolderConfig { size: 32, grayscale: None, test_fraction: 0.2, val_fraction: 0.1, seed: 0 }
    }
}

/// Images larger than this (in pixels) are refused before decoding (a guard against
/// decompression bombs).
const MAX_PIXELS: u64 = 1 << 26;

/// A folder of images, decoded and split.
#[derive(Clone, Debug)]
pub struct ImageFolderData {
    /// `x` row-major `[n, channels, size, size]`, normalised; `y` the class index.
    pub train: ImageSet,
    pub val: ImageSet,
    pub test: ImageSet,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    pub size: usize,
    /// Class names (the subfolders), index = label.
    pub classes: Vec<String>,
    /// Per-channel mean and standard deviation of the training split's pixels in [0, 1] (what
    /// the images are normalised by).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub root: PathBuf,
    /// Each split's files, in the order of its images.
    pub files: [Vec<PathBuf>; 3],
}

impl ImageFolderData {
    /// Values per image (`channels * size * size`).
    pub fn image_len(&self) -> usize {
        self.channels * self.size * self.size
    }
    pub fn description(&self) -> String {
        format!(
            "{}: {} classes, {}x{} {}, {} train / {} validation / {} test images",
            self.root.display(),
            self.classes.len(),
            self.size,
            self.size,
            if self.channels == 1 { "grayscale" } else { "RGB" },
            self.train.len(),
            self.val.len(),
            self.test.len()
        )
    }
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str()))
}

fn hidden(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

/// Sorted visible entries of `dir` that pass `keep`.
fn entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut v = Vec::new();
    for e in rd {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        if !hidden(&p) && keep(&p) {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

/// The class subfolders of `root` and each one's image files, checked: at least two classes,
/// none empty.
pub fn list_image_folder(root: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    if !root.is_dir() {
        return Err(Error::data(root, "not a folder: --data wants a folder with one subfolder of images per class"));
    }
    let dirs = entries(root, |p| p.is_dir())?;
    if dirs.len() < 2 {
        return Err(Error::data(
            root,
            format!(
                "{} class subfolder(s); a classifier needs at least 2 (one subfolder of images per class)",
                dirs.len()
            ),
        ));
    }
    let mut classes = Vec::with_capacity(dirs.len());
    for d in dirs {
        let name = d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let files = entries(&d, |p| p.is_file() && is_image(p))?;
        if files.is_empty() {
            return Err(Error::data(&d, format!("class {name:?} holds no PNG or JPEG images (.png, .jpg, .jpeg)")));
        }
        classes.push((name, files));
    }
    Ok(classes)
}

/// Decodes one image file (PNG or JPEG, by its contents), refusing huge ones before decoding.
pub fn decode_image(path: &Path) -> Result<image::DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let format = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        image::ImageFormat::Png
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        image::ImageFormat::Jpeg
    } else {
        return Err(Error::data(path, "not a PNG or JPEG image (its first bytes are neither signature)"));
    };
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(&bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(1 << 16);
    limits.max_image_height = Some(1 << 16);
    limits.max_alloc = Some(4 * MAX_PIXELS);
    reader.limits(limits);
    reader.decode().map_err(|e| Error::data(path, format!("cannot decode the image: {}", one_line(&e.to_string()))))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `img` resized so its shorter side is `size`, centre-cropped to `size` x `size`, as planar
/// `channels` x `size` x `size` values in [0, 1].
pub fn to_pixels(img: &image::DynamicImage, size: usize, channels: usize) -> Vec<f32> {
    let s = size as u32;
    let img = img.resize_to_fill(s, s, image::imageops::FilterType::Triangle);
    let n = size * size;
    let mut out = vec![0f32; channels * n];
    if channels == 1 {
        for (i, p) in img.to_luma32f().pixels().enumerate() {
            out[i] = p.0[0];
        }
    } else {
        for (i, p) in img.to_rgb32f().pixels().enumerate() {
            for c in 0..3 {
                out[c * n + i] = p.0[c];
            }
        }
    }
    out
}

/// How many of `n` images of a class go to test and to validation.
pub(crate) fn split_sizes(n: usize, test_fraction: f64, val_fraction: f64) -> (usize, usize) {
    let test = ((n as f64 * test_fraction).round() as usize).min(n.saturating_sub(1));
    let val = (((n - test) as f64 * val_fraction).round() as usize).min((n - test).saturating_sub(1));
    (test, val)
}

/// Reads, decodes, splits and normalises a folder of images (see the module docs).
pub fn load_image_folder(root: &Path, cfg: &ImageFolderConfig) -> Result<ImageFolderData> {
    if !(4..=1024).contains(&cfg.size) {
        return Err(Error::Config(format!("--image-size must be in 4..=1024, got {}", cfg.size)));
    }
    let fractions_ok = (0.0..1.0).contains(&cfg.test_fraction) && (0.0..1.0).contains(&cfg.val_fraction);
    if !fractions_ok {
        return Err(Error::Config(format!(
            "image folder: test and validation fractions must be in [0, 1), got {} and {}",
            cfg.test_fraction, cfg.val_fraction
        )));
    }
    let classes = list_image_folder(root)?;
    let mut decoded = Vec::new();
    let mut all_gray = true;
    for (label, (_, files)) in classes.iter().enumerate() {
        for f in files {
            let img = decode_image(f)?;
            all_gray &= !img.color().has_color();
            decoded.push((label as u32, f.clone(), img));
        }
    }
    let channels = if cfg.grayscale.unwrap_or(all_gray) { 1 } else { 3 };
    // Split each class: a seeded shuffle of its files (sorted), test first, then validation.
    let mut rng = Rng::new(cfg.seed);
    let mut which = vec![0usize; decoded.len()]; // 0 train, 1 val, 2 test
    let mut start = 0;
    for (_, files) in &classes {
        let mut idx: Vec<usize> = (start..start + files.len()).collect();
        rng.shuffle(&mut idx);
        let (nt, nv) = split_sizes(files.len(), cfg.test_fraction, cfg.val_fraction);
        for (k, &i) in idx.iter().enumerate() {
            which[i] = if k < nt {
                2
            } else if k < nt + nv {
                1
            } else {
                0
            };
        }
        start += files.len();
    }
    let per = channels * cfg.size * cfg.size;
    let mut sets: [(Vec<f32>, Vec<u32>, Vec<PathBuf>); 3] = Default::default();
    for ((label, file, img), &w) in decoded.iter().zip(&which) {
        let s = &mut sets[w];
        s.0.extend(to_pixels(img, cfg.size, channels));
        s.1.push(*label);
        s.2.push(file.clone());
    }
    // Per-channel statistics of the training pixels, in f64.
    let plane = cfg.size * cfg.size;
    let (mut mean, mut std) = (vec![0f32; channels], vec![1f32; channels]);
    let n_train = sets[0].1.len();
    for c in 0..channels {
        let vals = (0..n_train).flat_map(|i| &sets[0].0[i * per + c * plane..i * per + (c + 1) * plane]);
        let (mut s, mut s2, mut k) = (0f64, 0f64, 0f64);
        for &v in vals {
            s += v as f64;
            s2 += v as f64 * v as f64;
            k += 1.0;
        }
        let m = s / k.max(1.0);
        let var = (s2 / k.max(1.0) - m * m).max(0.0);
        mean[c] = m as f32;
        std[c] = if var.sqrt() > 1e-6 { var.sqrt() as f32 } else { 1.0 };
    }
    for s in &mut sets {
        for (i, v) in s.0.iter_mut().enumerate() {
            let c = (i % per) / plane;
            *v = (*v - mean[c]) / std[c];
        }
    }
    let [train, val, test] = sets;
    Ok(ImageFolderData {
        train: ImageSet { x: train.0, y: train.1 },
        val: ImageSet { x: val.0, y: val.1 },
        test: ImageSet { x: test.0, y: test.1 },
        channels,
        size: cfg.size,
        classes: classes.into_iter().map(|(n, _)| n).collect(),
        mean,
        std,
        root: root.to_path_buf(),
        files: [train.2, val.2, test.2],
    })
}

/// Images `idx` of `set` (each `per` values) gathered into one batch, with their labels.
pub fn batch_of(set: &ImageSet, idx: &[usize], per: usize) -> (Vec<f32>, Vec<u32>) {
    let mut x = Vec::with_capacity(idx.len() * per);
    for &i in idx {
        x.extend_from_slice(&set.x[i * per..(i + 1) * per]);
    }
    (x, idx.iter().map(|&i| set.y[i]).collect())
}

#[cfg(test)]
mod tests {
    use super::split_sizes;
    #[test]
    fn every_class_keeps_a_training_image() {
        assert_eq!(split_sizes(1, 0.2, 0.1), (0, 0));
        assert_eq!(split_sizes(2, 0.5, 0.5), (1, 0));
        assert_eq!(split_sizes(10, 0.2, 0.1), (2, 1));
        assert_eq!(split_sizes(100, 0.2, 0.1), (20, 8));
    }
}
