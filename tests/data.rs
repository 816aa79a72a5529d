//! Real data sets: the bundled Fashion-MNIST test files and Rotten Tomatoes corpus load with the
//! counts the sources publish; corrupt, truncated or mislabelled files give `Error::Data` naming the
//! file; random damage never panics; the review split keeps films apart and is deterministic.

use atomgrad::data::fashion::{self, FashionOrigin, CLASS_NAMES, PIXELS};
use atomgrad::data::reviews::{self, tokenize, Vocab, PAD, UNK};
use atomgrad::data::{load_fashion, load_reviews, load_reviews_with, FashionSource, ReviewsConfig};
use atomgrad::rng::Rng;
use atomgrad::{Error, Result};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

fn asset(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets").join(rel)
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("atomgrad-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out).unwrap();
    out
}

fn bz2(bytes: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn idx_images(n: u32, rows: u32, cols: u32, magic: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for w in [magic, n, rows, cols] {
        v.extend_from_slice(&w.to_be_bytes());
    }
    v.extend((0..n as usize * rows as usize * cols as usize).map(|i| (i * 7 % 256) as u8));
    v
}

fn idx_labels(labels: &[u8], magic: u32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&magic.to_be_bytes());
    v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

/// Asserts `r` is `Error::Data` on a path ending in `file`, with `needle` in the message.
#[track_caller]
fn data_err<T: std::fmt::Debug>(r: Result<T>, file: &str, needle: &str) -> String {
    match r {
        Err(Error::Data { path, msg }) => {
            assert!(path.ends_with(file), "error names {path}, expected {file} ({msg})");
            assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
            msg
        }
        other => panic!("expected Error::Data on {file} ({needle}), got {other:?}"),
    }
}

// ---------------------------------------------------------------- Fashion-MNIST

/// First labels of the official t10k file (9 'Ankle boot', 2 'Pullover', 1 'Trouser', ...), and
/// pixel sums of its first and last images, read from Debian's dataset-fashion-mnist files.
const T10K_FIRST_LABELS: [u8; 10] = [9, 2, 1, 1, 6, 1, 4, 6, 5, 7];
const T10K_FIRST_IMAGE_SUM: u64 = 33456;
const T10K_LAST_IMAGE_SUM: u64 = 24390;

#[test]
fn bundled_fashion_files_are_the_official_test_set() {
    let images = fashion::read_images(&asset("fashion-mnist/t10k-images-idx3-ubyte.gz")).unwrap();
    let labels = fashion::read_labels(&asset("fashion-mnist/t10k-labels-idx1-ubyte.gz")).unwrap();
    assert_eq!(images.len(), 10_000 * PIXELS);
    assert_eq!(labels.len(), 10_000);
    assert_eq!(labels[..10], T10K_FIRST_LABELS);
    assert_eq!(CLASS_NAMES[labels[0] as usize], "Ankle boot");
    let sum = |i: usize| images[i * PIXELS..(i + 1) * PIXELS].iter().map(|&p| p as u64).sum::<u64>();
    assert_eq!(sum(0), T10K_FIRST_IMAGE_SUM);
    assert_eq!(sum(9_999), T10K_LAST_IMAGE_SUM);
    for c in 0..10u8 {
        assert_eq!(labels.iter().filter(|&&l| l == c).count(), 1000, "class {c}");
    }
    // Where Debian's package is installed, the bundled copies hold the same bytes.
    let sys = Path::new(fashion::SYSTEM_DIR);
    if sys.join(fashion::TEST_IMAGES).is_file() {
        assert_eq!(fashion::read_images(&sys.join(fashion::TEST_IMAGES)).unwrap(), images);
        assert_eq!(fashion::read_labels(&sys.join(fashion::TEST_LABELS)).unwrap(), labels);
    }
}

#[test]
fn bundled_fashion_split_is_stratified_disjoint_normalised_and_fixed() {
    let d = load_fashion(FashionSource::Bundled).unwrap();
    assert_eq!(d.origin, FashionOrigin::Bundled);
    assert_eq!((d.train.len(), d.val.len(), d.test.len()), (7200, 800, 2000));
    assert_eq!(d.test.shape(), [2000, 1, 28, 28]);
    assert_eq!(d.train.x.len(), 7200 * PIXELS);
    for c in 0..10u32 {
        assert_eq!(d.test.y.iter().filter(|&&l| l == c).count(), 200);
        assert_eq!(d.val.y.iter().filter(|&&l| l == c).count(), 80);
        assert_eq!(d.train.y.iter().filter(|&&l| l == c).count(), 720);
    }
    assert!(d.description().contains("7200 train / 800 val / 2000 test"), "{}", d.description());
    println!("{}", d.description());

    // The split's indices partition 0..10000, and each split image is the raw image normalised.
    let labels = fashion::read_labels(&asset("fashion-mnist/t10k-labels-idx1-ubyte.gz")).unwrap();
    let images = fashion::read_images(&asset("fashion-mnist/t10k-images-idx3-ubyte.gz")).unwrap();
    let (tr, te) = fashion::stratified_split(&labels, 200, fashion::BUNDLED_SPLIT_SEED);
    let mut all: Vec<usize> = tr.iter().chain(&te).copied().collect();
    all.sort();
    assert_eq!(all, (0..10_000).collect::<Vec<_>>());
    for (k, &i) in te.iter().enumerate().step_by(97) {
        assert_eq!(d.test.y[k], labels[i] as u32);
        for p in (0..PIXELS).step_by(13) {
            let want = (images[i * PIXELS + p] as f32 / 255.0 - fashion::MEAN) / fashion::STD;
            assert_eq!(d.test.x[k * PIXELS + p], want);
        }
    }
    let (bx, by) = d.test.batch(&[3, 0]);
    assert_eq!(bx[..PIXELS], d.test.x[3 * PIXELS..4 * PIXELS]);
    assert_eq!(by, vec![d.test.y[3], d.test.y[0]]);

    // Train and validation partition the 8,000 non-test images: the same images, each once
    // (compared as sorted pixel rows), none of them a test image.
    let rows = |x: &[f32]| -> Vec<Vec<u32>> {
        let mut r: Vec<Vec<u32>> = x.chunks(PIXELS).map(|c| c.iter().map(|v| v.to_bits()).collect()).collect();
        r.sort();
        r
    };
    let mut joined = d.train.x.clone();
    joined.extend_from_slice(&d.val.x);
    let non_test: Vec<f32> = tr
        .iter()
        .flat_map(|&i| {
            images[i * PIXELS..(i + 1) * PIXELS].iter().map(|&p| (p as f32 / 255.0 - fashion::MEAN) / fashion::STD)
        })
        .collect();
    assert_eq!(rows(&joined), rows(&non_test));

    // Fixed seeds: a second load is identical; another seed would give another split.
    let again = load_fashion(FashionSource::Bundled).unwrap();
    assert_eq!(again.test.y, d.test.y);
    assert_eq!(again.train.x, d.train.x);
    assert_eq!(again.val.x, d.val.x);
    assert_ne!(fashion::stratified_split(&labels, 200, 1).1, te);
}

#[test]
fn fashion_from_a_directory_reads_gz_or_plain_files() {
    let dir = scratch("fashion-dir");
    let im = std::fs::read(asset("fashion-mnist/t10k-images-idx3-ubyte.gz")).unwrap();
    let lb = std::fs::read(asset("fashion-mnist/t10k-labels-idx1-ubyte.gz")).unwrap();
    // A small "training set" of 3 images; the labels uncompressed to use the plain-file fallback.
    std::fs::write(dir.join(fashion::TRAIN_IMAGES), gz(&idx_images(3, 28, 28, 0x803))).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx_labels(&[0, 9, 4], 0x801)).unwrap();
    std::fs::write(dir.join(fashion::TEST_IMAGES), &im).unwrap();
    std::fs::write(dir.join(fashion::TEST_LABELS), &lb).unwrap();
    let d = load_fashion(FashionSource::Dir(dir.clone())).unwrap();
    assert_eq!(d.origin, FashionOrigin::Full(dir.clone()));
    // Three training images are too few to hold out a tenth of a class: validation is empty.
    assert_eq!((d.train.len(), d.val.len(), d.test.len()), (3, 0, 10_000));
    assert_eq!(d.train.y, vec![0, 9, 4]);
    assert_eq!(d.test.y[..3], [9, 2, 1]);
    assert!(d.description().contains(&dir.display().to_string()));

    // A missing file is an I/O error naming it.
    std::fs::remove_file(dir.join(fashion::TEST_LABELS)).unwrap();
    match load_fashion(FashionSource::Dir(dir.clone())) {
        Err(Error::Io { path, .. }) => assert!(path.ends_with(fashion::TEST_LABELS), "{path}"),
        other => panic!("expected Error::Io, got {:?}", other.map(|d| d.description())),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn auto_source_uses_the_system_set_when_installed() {
    let d = load_fashion(FashionSource::Auto).unwrap();
    let sys = Path::new(fashion::SYSTEM_DIR);
    let installed = [fashion::TRAIN_IMAGES, fashion::TRAIN_LABELS, fashion::TEST_IMAGES, fashion::TEST_LABELS]
        .iter()
        .all(|f| sys.join(f).is_file());
    if installed {
        assert_eq!(d.origin, FashionOrigin::Full(sys.to_path_buf()));
        assert_eq!((d.train.len(), d.val.len(), d.test.len()), (54_000, 6_000, 10_000));
        assert!((0..10u32).all(|c| d.val.y.iter().filter(|&&l| l == c).count() == 600));
        assert_eq!(d.test.y[..10], T10K_FIRST_LABELS.map(|l| l as u32));
    } else {
        assert_eq!(d.origin, FashionOrigin::Bundled);
        assert_eq!((d.train.len(), d.val.len(), d.test.len()), (7200, 800, 2000));
    }
}

#[test]
fn corrupt_fashion_files_are_named_errors() {
    let dir = scratch("fashion-corrupt");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let real_im = std::fs::read(asset("fashion-mnist/t10k-images-idx3-ubyte.gz")).unwrap();
    let real_lb = std::fs::read(asset("fashion-mnist/t10k-labels-idx1-ubyte.gz")).unwrap();

    // The real images file cut in half: the gzip stream ends early.
    let p = write("half-images.gz", &real_im[..real_im.len() / 2]);
    data_err(fashion::read_images(&p), "half-images.gz", "corrupt gzip stream");
    // A complete gzip stream of a truncated IDX file: fewer bytes than the header promises.
    let raw = gunzip(&real_lb);
    let p = write("short-labels.gz", &gz(&raw[..raw.len() - 10]));
    data_err(fashion::read_labels(&p), "short-labels.gz", "truncated");
    let p = write("header-only.gz", &gz(&raw[..6]));
    data_err(fashion::read_labels(&p), "header-only.gz", "ends inside the header");
    // Extra bytes after the last image.
    let mut long = idx_images(2, 28, 28, 0x803);
    long.push(0);
    data_err(fashion::read_images(&write("long.gz", &gz(&long))), "long.gz", "trailing data");
    // Wrong magic: a labels file given as images, an images magic in a labels file.
    data_err(fashion::read_images(&write("labels-as-images.gz", &real_lb)), "labels-as-images.gz", "magic number");
    let p = write("magic.gz", &gz(&idx_labels(&[1, 2], 0x803)));
    data_err(fashion::read_labels(&p), "magic.gz", "magic number 0x00000803");
    // Wrong dimensions, and a header that claims absurdly many images.
    data_err(fashion::read_images(&write("dims.gz", &gz(&idx_images(2, 28, 27, 0x803)))), "dims.gz", "28x27");
    let mut huge = idx_images(0, 28, 28, 0x803);
    huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    data_err(fashion::read_images(&write("huge.gz", &gz(&huge))), "huge.gz", "items");
    // A label of 10.
    let p = write("label10.gz", &gz(&idx_labels(&[0, 1, 2, 3, 4, 10, 6], 0x801)));
    let msg = data_err(fashion::read_labels(&p), "label10.gz", "label 5 is 10");
    assert!(msg.contains("0..=9"), "{msg}");
    // A byte flipped inside the real labels' deflate data: caught (CRC or deflate error).
    let mut flip = real_lb.clone();
    flip[2000] ^= 0x10;
    data_err(fashion::read_labels(&write("flip.gz", &flip)), "flip.gz", "corrupt gzip stream");
    // Junk after the gzip member.
    let mut junk = real_lb.clone();
    junk.extend_from_slice(b"junk");
    data_err(fashion::read_labels(&write("junk.gz", &junk)), "junk.gz", "corrupt gzip stream");

    // Image and label counts disagree: the error names the labels file and both counts.
    let im = write("im.gz", &gz(&idx_images(5, 28, 28, 0x803)));
    let lb = write("lb.gz", &gz(&idx_labels(&[1, 2, 3, 4], 0x801)));
    let msg = data_err(fashion::read_pair(&im, &lb), "lb.gz", "4 labels");
    assert!(msg.contains("5 images") && msg.contains("im.gz"), "{msg}");
    // ... and the same through load_fashion on a directory.
    let d2 = dir.join("mismatch");
    std::fs::create_dir_all(&d2).unwrap();
    std::fs::copy(&im, d2.join(fashion::TRAIN_IMAGES)).unwrap();
    std::fs::copy(&lb, d2.join(fashion::TRAIN_LABELS)).unwrap();
    std::fs::write(d2.join(fashion::TEST_IMAGES), &real_im).unwrap();
    std::fs::write(d2.join(fashion::TEST_LABELS), &real_lb).unwrap();
    data_err(load_fashion(FashionSource::Dir(d2)), fashion::TRAIN_LABELS, "4 labels");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Applies 1..=3 random byte flips and/or a random truncation.
fn mutate(rng: &mut Rng, src: &[u8]) -> Vec<u8> {
    let mut v = src.to_vec();
    match rng.below(3) {
        0 => v.truncate(rng.below(src.len())),
        1 => {
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
        }
        _ => {
            let i = rng.below(v.len());
            v[i] = rng.below(256) as u8;
            v.truncate(1 + rng.below(src.len()));
        }
    }
    v
}

#[test]
fn damaged_idx_files_never_panic() {
    let mut rng = Rng::new(7);
    let path = Path::new("fuzz.gz");
    let labels_gz = std::fs::read(asset("fashion-mnist/t10k-labels-idx1-ubyte.gz")).unwrap();
    let labels = fashion::parse_labels(path, &labels_gz).unwrap();
    let images_raw = idx_images(6, 28, 28, 0x803);
    let images_gz = gz(&images_raw);
    let images = fashion::parse_images(path, &images_gz).unwrap();
    let (mut ok, mut err) = (0, 0);
    for it in 0..600 {
        // Gzip inputs: anything accepted must be exactly the original (gzip's CRC32 guards the data).
        let r = if it % 2 == 0 {
            fashion::parse_labels(path, &mutate(&mut rng, &labels_gz)).map(|l| assert_eq!(l, labels))
        } else {
            fashion::parse_images(path, &mutate(&mut rng, &images_gz)).map(|x| assert_eq!(x, images))
        };
        // Uncompressed inputs: anything accepted must still be well-formed.
        let r2 = fashion::parse_images(path, &mutate(&mut rng, &images_raw)).map(|x| assert_eq!(x.len() % PIXELS, 0));
        let r3 = fashion::parse_labels(path, &mutate(&mut rng, &idx_labels(&[1, 5, 9, 0], 0x801)))
            .map(|l| assert!(l.iter().all(|&c| c < 10)));
        for r in [r, r2, r3] {
            match r {
                Ok(()) => ok += 1,
                Err(Error::Data { path, .. }) => {
                    assert_eq!(path, "fuzz.gz");
                    err += 1
                }
                Err(e) => panic!("unexpected error kind {e:?}"),
            }
        }
    }
    assert!(err > 1000, "only {err} of {} damaged inputs rejected", ok + err);
    // A few rounds on the real 4.4 MB images file.
    let real = std::fs::read(asset("fashion-mnist/t10k-images-idx3-ubyte.gz")).unwrap();
    for _ in 0..4 {
        assert!(matches!(fashion::parse_images(path, &mutate(&mut rng, &real)), Err(Error::Data { .. })));
    }
}

// ---------------------------------------------------------------- Rotten Tomatoes reviews

#[test]
fn bundled_reviews_count_and_by_movie_split() {
    let corpus = reviews::read_corpus(&asset("rotten-tomatoes/rotten_tomatoes_corpus_full.csv.bz2")).unwrap();
    assert_eq!(corpus.len(), 12_808, "fresh + rotten rows");
    assert_eq!(corpus.iter().filter(|r| r.label == 1).count(), 7_403);
    let movies: HashSet<&str> = corpus.iter().map(|r| r.movie.as_str()).collect();
    assert_eq!(movies.len(), 508);
    // Films filed under two names share review texts; they must land in one group.
    let groups = reviews::movie_groups(&corpus);
    assert!(groups.iter().any(|g| g == &["el_crimen_del_padre_amaro", "the_crime_of_padre_amaro"]), "{groups:?}");

    let d = load_reviews(None, 0, 64).unwrap();
    let (tr, va, te) = (&d.train, &d.val, &d.test);
    assert_eq!(tr.len() + va.len() + te.len(), 12_808);
    let tm: HashSet<&String> = tr.movies.iter().collect();
    let vm: HashSet<&String> = va.movies.iter().collect();
    let sm: HashSet<&String> = te.movies.iter().collect();
    assert!(tm.is_disjoint(&sm) && tm.is_disjoint(&vm) && vm.is_disjoint(&sm), "a movie is in two splits");
    assert_eq!(tm.len() + vm.len() + sm.len(), 508);
    // No review text is in two splits either.
    let tt: HashSet<&String> = tr.text.iter().collect();
    let vt: HashSet<&String> = va.text.iter().collect();
    assert!(te.text.iter().chain(&va.text).all(|t| !tt.contains(t)), "a training review text is held out too");
    assert!(te.text.iter().all(|t| !vt.contains(t)), "a validation review text is in the test split");
    let frac = te.len() as f64 / 12_808.0;
    assert!((0.19..0.21).contains(&frac), "test fraction {frac}");
    let vfrac = va.len() as f64 / (tr.len() + va.len()) as f64;
    assert!((0.09..0.11).contains(&vfrac), "validation fraction {vfrac}");
    assert_eq!(load_reviews(None, 0, 64).unwrap().val.text, va.text, "the split is fixed");
    println!("{}", d.description());

    // Encoding: shapes, masks agree with lengths and padding, nothing truncated at 64.
    assert_eq!(tr.shape(), [tr.len(), 64]);
    assert_eq!(tr.ids.len(), tr.len() * 64);
    assert_eq!(tr.truncated, 0);
    for s in [tr, te] {
        for i in 0..s.len() {
            let (ids, mask) = (&s.ids[i * 64..(i + 1) * 64], &s.mask[i * 64..(i + 1) * 64]);
            let n = s.lengths[i] as usize;
            assert!(n >= 1 && n == tokenize(&s.text[i]).len().min(64));
            assert!(mask[..n].iter().all(|&m| m == 1.0) && mask[n..].iter().all(|&m| m == 0.0));
            assert!(ids[..n].iter().all(|&t| t != PAD) && ids[n..].iter().all(|&t| t == PAD));
            assert!(s.labels[i] <= 1);
        }
    }
    // The vocabulary is the training split's words seen at least twice; test has unknown words.
    let rebuilt = Vocab::build(tr.text.iter().map(|s| s.as_str()), 2, None);
    assert_eq!(rebuilt.words(), d.vocab.words());
    assert!(te.ids.contains(&UNK));
    assert!(d.vocab.len() > 5_000, "vocab {}", d.vocab.len());
    let b = tr.batch(&[5, 1]);
    assert_eq!(b.ids[..64], tr.ids[5 * 64..6 * 64]);
    assert_eq!((b.labels, b.lengths), (vec![tr.labels[5], tr.labels[1]], vec![tr.lengths[5], tr.lengths[1]]));

    // Truncation and a top-K vocabulary.
    let cfg = ReviewsConfig { max_len: 8, min_count: 1, max_vocab: Some(1000), ..ReviewsConfig::default() };
    let small = load_reviews_with(None, &cfg).unwrap();
    assert_eq!(small.vocab.len(), 1002);
    assert_eq!(small.train.text, tr.text, "the split does not depend on the vocabulary settings");
    assert!(small.train.truncated > 0 && small.train.lengths.iter().all(|&n| n <= 8));
}

#[test]
fn review_split_is_deterministic_per_seed() {
    let corpus = reviews::read_corpus(&asset("rotten-tomatoes/rotten_tomatoes_corpus_full.csv.bz2")).unwrap();
    let a = reviews::split_by_movie(&corpus, 0.2, 3);
    assert_eq!(a, reviews::split_by_movie(&corpus, 0.2, 3));
    let b = reviews::split_by_movie(&corpus, 0.2, 4);
    assert_ne!(a.1, b.1);
    for (train, test) in [&a, &b] {
        let tm: HashSet<&str> = train.iter().map(|&i| corpus[i].movie.as_str()).collect();
        assert!(test.iter().all(|&i| !tm.contains(corpus[i].movie.as_str())));
        assert_eq!(train.len() + test.len(), corpus.len());
    }
    assert!(matches!(load_reviews(None, 0, 0), Err(Error::Config(_))));
}

#[test]
fn tokenizer_padding_and_unknown_words() {
    assert_eq!(
        tokenize("It's a rock'n'roll ''movie'' -- 'great' dancers' after-effects, Touché! DON’T 2 ½ x''y"),
        [
            "it's",
            "a",
            "rock'n'roll",
            "movie",
            "great",
            "dancers",
            "after",
            "effects",
            "touché",
            "don't",
            "2",
            "½",
            "x",
            "y"
        ]
    );
    assert!(tokenize(" ... -- '' ").is_empty());

    let v = Vocab::build(["b c c", "a b c", "d"], 2, None);
    assert_eq!(v.words(), ["<pad>", "<unk>", "c", "b"]); // c: 3, b: 2; a and d once
    assert_eq!((v.id("c"), v.id("b"), v.id("a"), v.id("<pad>"), v.id("<unk>")), (2, 3, UNK, UNK, UNK));
    assert_eq!(v.encode("C, zzz b!"), [2, UNK, 3]);
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    assert_eq!(v.encode_padded("c zzz b", 5, &mut ids, &mut mask), 3);
    assert_eq!(
        (ids.as_slice(), mask.as_slice()),
        ([2, UNK, 3, PAD, PAD].as_slice(), [1.0, 1.0, 1.0, 0.0, 0.0].as_slice())
    );
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    assert_eq!(v.encode_padded("c c b b c", 2, &mut ids, &mut mask), 2);
    assert_eq!((ids, mask), (vec![2, 2], vec![1.0, 1.0]));
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    assert_eq!(v.encode_padded("!!!", 3, &mut ids, &mut mask), 1, "an empty text is one <unk>");
    assert_eq!((ids, mask), (vec![UNK, PAD, PAD], vec![1.0, 0.0, 0.0]));
    assert_eq!(v.decode(&[2, UNK, 3, PAD]), "c <unk> b");
    let top1 = Vocab::build(["b c c", "a b c"], 1, Some(1));
    assert_eq!(top1.words(), ["<pad>", "<unk>", "c"]);
}

const MINI_CSV: &str = "category,text,movie_name,has_plot_and_reviews\n\
plot,\"A plot, with a comma\",film_a,True\n\
fresh,Great fun.,film_a,True\n\
rotten,\"Dull, \"\"very\"\" dull.\",film_b,False\n\
fresh,A joy,film_c,False\n\
rotten,Eh.,film_d,False\n";

#[test]
fn corrupt_or_malformed_corpus_files_are_named_errors() {
    let dir = scratch("reviews-corrupt");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    // A good small file, plain and compressed, parses to the same reviews.
    let plain = reviews::read_corpus(&write("mini.csv", MINI_CSV.as_bytes())).unwrap();
    assert_eq!(plain.len(), 4);
    assert_eq!(plain[1].text, "Dull, \"very\" dull.");
    assert_eq!(plain.iter().map(|r| r.label).collect::<Vec<_>>(), [1, 0, 1, 0]);
    assert_eq!(reviews::read_corpus(&write("mini.csv.bz2", &bz2(MINI_CSV.as_bytes()))).unwrap(), plain);
    let d = load_reviews(Some(&dir.join("mini.csv")), 1, 4).unwrap();
    assert_eq!(d.train.len() + d.val.len() + d.test.len(), 4);
    assert!(!d.val.is_empty() && !d.test.is_empty());

    let real = std::fs::read(asset("rotten-tomatoes/rotten_tomatoes_corpus_full.csv.bz2")).unwrap();
    let mut flip = real.clone();
    flip[real.len() / 2] ^= 0x04;
    data_err(reviews::read_corpus(&write("flip.csv.bz2", &flip)), "flip.csv.bz2", "corrupt bzip2");
    data_err(reviews::read_corpus(&write("cut.csv.bz2", &real[..real.len() - 100])), "cut.csv.bz2", "corrupt bzip2");
    data_err(reviews::read_corpus(&write("not.csv.bz2", MINI_CSV.as_bytes())), "not.csv.bz2", "not a bzip2 file");
    data_err(load_reviews(Some(&dir.join("flip.csv.bz2")), 0, 16), "flip.csv.bz2", "corrupt bzip2");

    let no_movie = MINI_CSV.replace("movie_name", "film");
    let p = write("nomovie.csv.bz2", &bz2(no_movie.as_bytes()));
    let msg = data_err(reviews::read_corpus(&p), "nomovie.csv.bz2", "missing column 'movie_name'");
    assert!(msg.contains("category, text, film"), "{msg}");
    let bad_cat = MINI_CSV.replace("rotten,Eh.", "meh,Eh.");
    data_err(reviews::read_corpus(&write("cat.csv", bad_cat.as_bytes())), "cat.csv", "line 6: category 'meh'");
    let ragged = format!("{MINI_CSV}fresh,only two\n");
    data_err(reviews::read_corpus(&write("ragged.csv", ragged.as_bytes())), "ragged.csv", "CSV");
    let mut utf = MINI_CSV.as_bytes().to_vec();
    utf.extend_from_slice(b"fresh,caf\xe9,film_e,False\n");
    data_err(reviews::read_corpus(&write("latin1.csv", &utf)), "latin1.csv", "UTF-8");
    let one_movie = "category,text,movie_name\nfresh,Good.,m\nrotten,Bad.,m\n";
    data_err(load_reviews(Some(&write("one.csv", one_movie.as_bytes())), 0, 4), "one.csv", "cannot be split");
    let only_plots = "category,text,movie_name\nplot,Things happen.,m\n";
    data_err(reviews::read_corpus(&write("plots.csv", only_plots.as_bytes())), "plots.csv", "no fresh or rotten");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn damaged_bz2_and_csv_never_panic() {
    let mut rng = Rng::new(11);
    let bz_path = Path::new("fuzz.csv.bz2");
    let csv_path = Path::new("fuzz.csv");
    // The corpus's first 60 lines, compressed: small enough for many rounds.
    let head: String = {
        let full = reviews::read_corpus(&asset("rotten-tomatoes/rotten_tomatoes_corpus_full.csv.bz2")).unwrap();
        let mut s = String::from("category,text,movie_name\n");
        for r in full.iter().take(60) {
            let cat = if r.label == 1 { "fresh" } else { "rotten" };
            s += &format!("{cat},\"{}\",{}\n", r.text.replace('"', "\"\""), r.movie);
        }
        s
    };
    let small_bz = bz2(head.as_bytes());
    let want = reviews::parse_corpus(bz_path, &small_bz).unwrap();
    assert_eq!(want.len(), 60);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..300 {
        // bzip2's block and stream CRCs: whatever is accepted is the original.
        let r = reviews::parse_corpus(bz_path, &mutate(&mut rng, &small_bz)).map(|v| assert_eq!(v, want));
        let r2 = reviews::parse_corpus(csv_path, &mutate(&mut rng, head.as_bytes())).map(|_| ());
        for r in [r, r2] {
            match r {
                Ok(()) => ok += 1,
                Err(Error::Data { path, .. }) => {
                    assert!(path.starts_with("fuzz.csv"));
                    err += 1
                }
                Err(e) => panic!("unexpected error kind {e:?}"),
            }
        }
    }
    assert!(err > 250, "only {err} of {} damaged inputs rejected", ok + err);
    // A few rounds on the full file.
    let real = std::fs::read(asset("rotten-tomatoes/rotten_tomatoes_corpus_full.csv.bz2")).unwrap();
    for _ in 0..4 {
        assert!(matches!(reviews::parse_corpus(bz_path, &mutate(&mut rng, &real)), Err(Error::Data { .. })));
    }
}
