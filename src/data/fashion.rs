//! Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, MIT license): 28x28 grey images of 10 clothing
//! classes in the IDX format, gzip-compressed.
//!
//! Three sources (see [`FashionSource`]): the full 60,000/10,000 set from Debian's
//! `dataset-fashion-mnist` package, a directory given by the user, or the official 10,000-image test
//! files bundled in `assets/fashion-mnist/` (compiled into the binary), split 8,000/2,000 here.
//! Every source then holds out a tenth of each class of its training images as the validation
//! split ([`VAL_SPLIT_SEED`]): 54,000 / 6,000 for the full set, 7,200 / 800 for the bundled one.
//!
//! The reader checks everything it relies on — magic numbers, 28x28 dimensions, image and label
//! counts agreeing, labels below 10, the exact decompressed length and the gzip CRC — and reports a
//! bad file as [`Error::Data`] naming the file and what is wrong.

use super::Dataset;
use crate::error::{Error, Result};
use crate::rng::Rng;
use flate2::read::MultiGzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Class names by label.
pub const CLASS_NAMES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
pub const ROWS: usize = 28;
pub const COLS: usize = 28;
pub const PIXELS: usize = ROWS * COLS;
/// Mean and standard deviation of the 47,040,000 training-set pixels scaled to [0, 1] (computed
/// from `train-images-idx3-ubyte`: 0.286041 and 0.353024). Every source is normalised with these,
/// `x = (p / 255 - MEAN) / STD`, so a model sees the same input scale whichever source it trains on.
pub const MEAN: f32 = 0.2860;
pub const STD: f32 = 0.3530;
/// Where Debian's `dataset-fashion-mnist` package puts the full set.
pub const SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Seed of the bundled set's train/test split (fixed: the split is part of the data set).
pub const BUNDLED_SPLIT_SEED: u64 = 20170828;
/// Test images per class in the bundled split (the official test set has exactly 1,000 per class).
pub const BUNDLED_TEST_PER_CLASS: usize = 200;
/// Seed of the validation split held out from the training images (fixed, like the test split).
pub const VAL_SPLIT_SEED: u64 = 20261207;
/// The share of each class's training images held out for validation: 1 / `VAL_DIVISOR`.
pub const VAL_DIVISOR: usize = 10;

pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte.gz";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte.gz";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte.gz";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte.gz";
const BUNDLED_DIR: &str = "assets/fashion-mnist";
static BUNDLED_IMAGES: &[u8] = include_bytes!("../../assets/fashion-mnist/t10k-images-idx3-ubyte.gz");
static BUNDLED_LABELS: &[u8] = include_bytes!("../../assets/fashion-mnist/t10k-labels-idx1-ubyte.gz");

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;
/// More items than any IDX file here should hold; bounds what a corrupt header can make us allocate.
const MAX_ITEMS: usize = 1_000_000;

/// Where to load Fashion-MNIST from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FashionSource {
    /// The full set from [`SYSTEM_DIR`] when all four files are there, else the bundled test files.
    Auto,
    /// The full set from a directory holding the four official files (`*-ubyte.gz`, or the same
    /// names without `.gz`, uncompressed).
    Dir(PathBuf),
    /// The bundled 10,000 official test images, split 8,000 train / 2,000 test.
    Bundled,
}

/// Which source a [`FashionData`] came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FashionOrigin {
    /// The official 60,000 training and 10,000 test images from this directory.
    Full(PathBuf),
    /// The bundled official test set, split stratified by class with [`BUNDLED_SPLIT_SEED`].
    Bundled,
}

/// Normalised images with labels: `x` is row-major `[n, 1, 28, 28]`.
#[derive(Clone, Debug)]
pub struct ImageSet {
    pub x: Vec<f32>,
    pub y: Vec<u32>,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.y.len()
    }
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
    /// `[n, 1, 28, 28]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.len(), 1, ROWS, COLS]
    }
    /// Images `idx` gathered into one `[idx.len(), 1, 28, 28]` batch, with their labels.
    pub fn batch(&self, idx: &[usize]) -> (Vec<f32>, Vec<u32>) {
        let mut x = Vec::with_capacity(idx.len() * PIXELS);
        for &i in idx {
            x.extend_from_slice(&self.x[i * PIXELS..(i + 1) * PIXELS]);
        }
        (x, idx.iter().map(|&i| self.y[i]).collect())
    }
    /// The same data as a flat [`Dataset`] (`dim` 784) for models that take vectors.
    pub fn to_dataset(&self) -> Dataset {
        Dataset { x: self.x.clone(), y: self.y.clone(), dim: PIXELS, classes: CLASS_NAMES.len() }
    }
}

#[derive(Clone, Debug)]
pub struct FashionData {
    pub train: ImageSet,
    /// Held out from the training images (stratified by class): model selection reads this.
    pub val: ImageSet,
    pub test: ImageSet,
    pub origin: FashionOrigin,
    /// Which images of the source files each split holds, in order: indices into the official
    /// training file (train, val) and test file (test) for the full set, into the bundled test
    /// file for all three otherwise (so another framework can train on the very same split).
    pub indices: [Vec<u32>; 3],
}

impl FashionData {
    pub fn class_names(&self) -> &'static [&'static str; 10] {
        &CLASS_NAMES
    }
    /// One line for logs: which files, and the split sizes.
    pub fn description(&self) -> String {
        let (tr, va, te) = (self.train.len(), self.val.len(), self.test.len());
        let val = format!("validation held out from train: 1/{VAL_DIVISOR} of each class, seed {VAL_SPLIT_SEED}");
        match &self.origin {
            FashionOrigin::Full(dir) => {
                format!(
                    "Fashion-MNIST, full official set from {} ({tr} train / {va} val / {te} test; {val})",
                    dir.display()
                )
            }
            FashionOrigin::Bundled => format!(
                "Fashion-MNIST, bundled official test set ({BUNDLED_DIR}) split {tr} train / {va} val / {te} test \
                 (stratified, {BUNDLED_TEST_PER_CLASS} test images per class, seed {BUNDLED_SPLIT_SEED}; {val})"
            ),
        }
    }
}

/// Loads Fashion-MNIST from `source`. Missing files are [`Error::Io`], bad ones [`Error::Data`].
pub fn load_fashion(source: FashionSource) -> Result<FashionData> {
    match source {
        FashionSource::Auto => {
            let dir = Path::new(SYSTEM_DIR);
            if [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS].iter().all(|f| dir.join(f).is_file()) {
                load_dir(dir)
            } else {
                load_bundled()
            }
        }
        FashionSource::Dir(dir) => load_dir(&dir),
        FashionSource::Bundled => load_bundled(),
    }
}

fn load_dir(dir: &Path) -> Result<FashionData> {
    let train = read_pair(&find(dir, TRAIN_IMAGES)?, &find(dir, TRAIN_LABELS)?)?;
    let test = read_pair(&find(dir, TEST_IMAGES)?, &find(dir, TEST_LABELS)?)?;
    let (tr, va) = validation_split(&train);
    let indices = [as_u32(&tr), as_u32(&va), (0..test.labels.len() as u32).collect()];
    Ok(FashionData {
        train: normalise(&train.subset(&tr)),
        val: normalise(&train.subset(&va)),
        test: normalise(&test),
        origin: FashionOrigin::Full(dir.to_path_buf()),
        indices,
    })
}

/// Splits training images into train and validation indices: 1 / [`VAL_DIVISOR`] of each class
/// (of the smallest class's count, so every class gives the same number), with [`VAL_SPLIT_SEED`].
pub fn validation_split(train: &RawImages) -> (Vec<usize>, Vec<usize>) {
    let mut counts = [0usize; 10];
    for &l in &train.labels {
        counts[l as usize] += 1;
    }
    let per_class = counts.iter().copied().filter(|&c| c > 0).min().unwrap_or(0) / VAL_DIVISOR;
    stratified_split(&train.labels, per_class, VAL_SPLIT_SEED)
}

fn as_u32(v: &[usize]) -> Vec<u32> {
    v.iter().map(|&i| i as u32).collect()
}

/// `dir/name`, or `dir/name` without `.gz` when only the uncompressed file is there.
fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    let gz = dir.join(name);
    let raw = dir.join(name.trim_end_matches(".gz"));
    if gz.is_file() {
        Ok(gz)
    } else if raw.is_file() {
        Ok(raw)
    } else {
        Err(Error::Io { path: gz.display().to_string(), msg: format!("not found (nor {})", raw.display()) })
    }
}

fn load_bundled() -> Result<FashionData> {
    let ipath = Path::new(BUNDLED_DIR).join(TEST_IMAGES);
    let lpath = Path::new(BUNDLED_DIR).join(TEST_LABELS);
    let images = parse_images(&ipath, BUNDLED_IMAGES)?;
    let labels = parse_labels(&lpath, BUNDLED_LABELS)?;
    let all = pair(&ipath, images, &lpath, labels)?;
    let (train_idx, test_idx) = stratified_split(&all.labels, BUNDLED_TEST_PER_CLASS, BUNDLED_SPLIT_SEED);
    if test_idx.len() != BUNDLED_TEST_PER_CLASS * CLASS_NAMES.len() {
        return Err(Error::data(
            &lpath,
            format!("expected 1000 images of each class, got {}", class_counts(&all.labels)),
        ));
    }
    let rest = all.subset(&train_idx);
    let (tr, va) = validation_split(&rest);
    let indices = [
        tr.iter().map(|&i| train_idx[i] as u32).collect(),
        va.iter().map(|&i| train_idx[i] as u32).collect(),
        as_u32(&test_idx),
    ];
    Ok(FashionData {
        train: normalise(&rest.subset(&tr)),
        val: normalise(&rest.subset(&va)),
        test: normalise(&all.subset(&test_idx)),
        origin: FashionOrigin::Bundled,
        indices,
    })
}

fn class_counts(labels: &[u8]) -> String {
    let mut c = [0usize; 10];
    for &l in labels {
        c[l as usize] += 1;
    }
    format!("{c:?}")
}

/// Per class: shuffle that class's indices with one seeded RNG (classes in label order) and put the
/// first `per_class` in the test split. Both splits keep file order.
pub fn stratified_split(labels: &[u8], per_class: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = Rng::new(seed);
    let mut test = vec![false; labels.len()];
    for c in 0..CLASS_NAMES.len() as u8 {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        rng.shuffle(&mut idx);
        for &i in idx.iter().take(per_class) {
            test[i] = true;
        }
    }
    ((0..labels.len()).filter(|&i| !test[i]).collect(), (0..labels.len()).filter(|&i| test[i]).collect())
}

/// Raw images (bytes, `n * 784`) with their labels.
#[derive(Clone, Debug)]
pub struct RawImages {
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

impl RawImages {
    fn subset(&self, idx: &[usize]) -> RawImages {
        let mut pixels = Vec::with_capacity(idx.len() * PIXELS);
        for &i in idx {
            pixels.extend_from_slice(&self.pixels[i * PIXELS..(i + 1) * PIXELS]);
        }
        RawImages { pixels, labels: idx.iter().map(|&i| self.labels[i]).collect() }
    }
}

fn normalise(raw: &RawImages) -> ImageSet {
    let x = raw.pixels.iter().map(|&p| (p as f32 / 255.0 - MEAN) / STD).collect();
    ImageSet { x, y: raw.labels.iter().map(|&l| l as u32).collect() }
}

/// Reads an images file and its labels file and checks that they agree.
pub fn read_pair(images: &Path, labels: &Path) -> Result<RawImages> {
    let im = parse_images(images, &read_file(images)?)?;
    let lb = parse_labels(labels, &read_file(labels)?)?;
    pair(images, im, labels, lb)
}

fn pair(ipath: &Path, images: Vec<u8>, lpath: &Path, labels: Vec<u8>) -> Result<RawImages> {
    let n = images.len() / PIXELS;
    if n != labels.len() {
        return Err(Error::data(
            lpath,
            format!("{} labels, but the images file {} has {n} images", labels.len(), ipath.display()),
        ));
    }
    Ok(RawImages { pixels: images, labels })
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Pixels (`n * 784` bytes) of an IDX3 images file, gzip-compressed or not.
pub fn read_images(path: &Path) -> Result<Vec<u8>> {
    parse_images(path, &read_file(path)?)
}

/// Labels (each < 10) of an IDX1 labels file, gzip-compressed or not.
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    parse_labels(path, &read_file(path)?)
}

/// Parses the bytes of an IDX3 images file; `path` only names it in errors.
pub fn parse_images(path: &Path, bytes: &[u8]) -> Result<Vec<u8>> {
    let mut r = Idx::open(path, bytes);
    let magic = r.u32("magic number")?;
    if magic != IMAGES_MAGIC {
        return Err(r.err(format!("magic number {magic:#010x}, expected {IMAGES_MAGIC:#010x} (IDX3 unsigned bytes)")));
    }
    let n = r.count()?;
    let (rows, cols) = (r.u32("row count")?, r.u32("column count")?);
    if (rows, cols) != (ROWS as u32, COLS as u32) {
        return Err(r.err(format!("images are {rows}x{cols}, expected {ROWS}x{COLS}")));
    }
    r.body(n * PIXELS, &format!("{n} images of {ROWS}x{COLS}"))
}

/// Parses the bytes of an IDX1 labels file; `path` only names it in errors.
pub fn parse_labels(path: &Path, bytes: &[u8]) -> Result<Vec<u8>> {
    let mut r = Idx::open(path, bytes);
    let magic = r.u32("magic number")?;
    if magic != LABELS_MAGIC {
        return Err(r.err(format!("magic number {magic:#010x}, expected {LABELS_MAGIC:#010x} (IDX1 unsigned bytes)")));
    }
    let n = r.count()?;
    let labels = r.body(n, &format!("{n} labels"))?;
    if let Some(i) = labels.iter().position(|&l| l as usize >= CLASS_NAMES.len()) {
        return Err(r.err(format!("label {i} is {}, expected 0..=9", labels[i])));
    }
    Ok(labels)
}

/// A reader over an IDX file's (decompressed) bytes that turns every failure into `Error::Data`.
struct Idx<'a> {
    path: &'a Path,
    src: Box<dyn Read + 'a>,
    gz: bool,
    at: usize,
}

impl<'a> Idx<'a> {
    fn open(path: &'a Path, bytes: &'a [u8]) -> Idx<'a> {
        let gz = bytes.starts_with(&[0x1f, 0x8b]);
        let src: Box<dyn Read + 'a> = if gz { Box::new(MultiGzDecoder::new(bytes)) } else { Box::new(bytes) };
        Idx { path, src, gz, at: 0 }
    }
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::data(self.path, msg)
    }
    fn io_err(&self, e: std::io::Error) -> Error {
        if self.gz {
            self.err(format!("corrupt gzip stream after {} decompressed bytes: {e}", self.at))
        } else {
            self.err(format!("read failed after {} bytes: {e}", self.at))
        }
    }
    /// Reads up to `buf.len()` bytes; fewer only at the end of the stream.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.src.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(k) => {
                    got += k;
                    self.at += k;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_err(e)),
            }
        }
        Ok(got)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        let mut b = [0u8; 4];
        let at = self.at;
        if self.fill(&mut b)? < 4 {
            return Err(self.err(format!("file ends inside the header (reading the {what} at byte {at})")));
        }
        Ok(u32::from_be_bytes(b))
    }
    fn count(&mut self) -> Result<usize> {
        let n = self.u32("item count")? as usize;
        if n > MAX_ITEMS {
            return Err(self.err(format!("header claims {n} items, more than the {MAX_ITEMS} allowed")));
        }
        Ok(n)
    }
    /// Exactly `len` bytes, then the end of the stream (which also makes gzip check its CRC).
    fn body(&mut self, len: usize, what: &str) -> Result<Vec<u8>> {
        let start = self.at;
        let mut out = vec![0u8; len];
        let got = self.fill(&mut out)?;
        if got < len {
            return Err(self.err(format!("truncated: header says {what} ({len} bytes after the header), found {got}")));
        }
        let mut extra = [0u8; 1];
        if self.fill(&mut extra)? > 0 {
            return Err(self.err(format!("{what} end at byte {}, but the file goes on (trailing data)", start + len)));
        }
        Ok(out)
    }
}
