//! The PNG figures: each function writes a PNG of the expected size with real content; NaN, empty
//! and extreme inputs do not panic; write failures are errors naming the path and leave neither a
//! temporary file nor a damaged target behind.
//!
//! Set ATOMGRAD_PLOT_SAMPLES=/some/dir to keep one realistic figure of each kind there to look at.

use atomgrad::plot::{self, Series};
use atomgrad::rng::Rng;
use atomgrad::Error;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A fresh directory for one test (removed on drop), or the samples directory if set.
struct Dir(PathBuf, bool);

impl Dir {
    fn new(name: &str) -> Dir {
        if let Ok(d) = std::env::var("ATOMGRAD_PLOT_SAMPLES") {
            let p = PathBuf::from(d);
            std::fs::create_dir_all(&p).unwrap();
            return Dir(p, false);
        }
        let p = std::env::temp_dir().join(format!("atomgrad-plot-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p, true)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Decodes the PNG, checks its size and that it has at least `min_colours` distinct colours.
fn check_png(path: &Path, size: Option<(u32, u32)>, min_colours: usize) -> image::RgbImage {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: not a decodable image: {e}", path.display()));
    let img = img.to_rgb8();
    if let Some((w, h)) = size {
        assert_eq!(img.dimensions(), (w, h), "{}: size", path.display());
    }
    let colours: HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(
        colours.len() >= min_colours,
        "{}: only {} distinct colours, expected at least {min_colours} (blank?)",
        path.display(),
        colours.len()
    );
    img
}

fn has_colour(img: &image::RgbImage, c: [u8; 3]) -> bool {
    img.pixels().any(|p| p.0 == c)
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

const SIZE: Option<(u32, u32)> = Some((plot::WIDTH, plot::HEIGHT));

fn blue() -> [u8; 3] {
    let c = plot::PALETTE[0];
    [c.0, c.1, c.2]
}

#[test]
fn line_plot_curves_with_bands_and_log_axis() {
    let dir = Dir::new("line");
    let mut rng = Rng::new(1);
    type Curve = (Vec<(f64, f64)>, Vec<(f64, f64, f64)>);
    let curve = |scale: f64, rate: f64, rng: &mut Rng| -> Curve {
        let mut pts = vec![];
        let mut band = vec![];
        for e in 0..60 {
            let m = scale * (-rate * e as f64).exp() + 0.05 + 0.01 * rng.normal();
            let s = 0.03 + 0.1 * (-0.05 * e as f64).exp();
            pts.push((e as f64, m));
            band.push((e as f64, m - s, m + s));
        }
        (pts, band)
    };
    let (a, ab) = curve(2.0, 0.08, &mut rng);
    let (b, bb) = curve(1.5, 0.05, &mut rng);
    let (c, _) = curve(1.0, 0.12, &mut rng);
    let series = vec![
        Series::new("train loss (mean ± std, 5 seeds)", a).with_band(ab),
        Series::new("validation loss", b).with_band(bb),
        Series::new("baseline", c),
    ];
    let p = dir.file("line.png");
    plot::line_plot(&p, "Two moons MLP: loss per epoch", "epoch", "cross-entropy", &series).unwrap();
    let img = check_png(&p, SIZE, 20);
    assert!(has_colour(&img, blue()), "first series is drawn in the palette's first colour");
    let title_ink = img.rows().take(35).flatten().filter(|p| p.0.iter().all(|&c| c < 80)).count();
    assert!(title_ink > 100, "the title is drawn from the embedded font ({title_ink} dark pixels at the top)");
    let p = dir.file("line_log.png");
    plot::line_plot_log_y(&p, "Loss (log scale)", "epoch", "cross-entropy", &series).unwrap();
    check_png(&p, SIZE, 20);

    // Ten series: the ones past the palette are dashed, the legend lists all of them.
    let many: Vec<Series> = (0..10)
        .map(|k| Series::from_values(format!("lr = {:.0e}", 10f64.powi(-k)), &[k as f64, k as f64 + 1.0]))
        .collect();
    let p = dir.file("line_many.png");
    plot::line_plot(&p, "many series", "step", "value", &many).unwrap();
    check_png(&p, SIZE, 10);
    assert!(temp_files(&dir.0).is_empty());
}

#[test]
fn line_plot_survives_nan_empty_and_extreme_inputs() {
    let dir = Dir::new("line_bad");
    let p = dir.file("line_bad.png");
    let nan = f64::NAN;
    let cases: Vec<Vec<Series>> = vec![
        vec![],
        vec![Series::new("", vec![])],
        vec![Series::new("all nan", vec![(nan, nan), (1.0, nan), (f64::INFINITY, 2.0)])],
        vec![Series::new("gap", vec![(0.0, 1.0), (1.0, nan), (2.0, 0.5), (3.0, 0.4)]).with_band(vec![
            (0.0, 0.9, nan),
            (2.0, 0.4, 0.6),
            (3.0, 0.3, 0.5),
        ])],
        vec![Series::new("one point", vec![(5.0, 5.0)])],
        vec![Series::new("huge", vec![(-1e300, 1e300), (1e300, -1e300), (0.0, 1e-300)])],
        vec![Series::new("constant", vec![(0.0, 0.0), (0.0, 0.0)])],
        vec![Series::new("subnormal", vec![(0.0, 1e-310), (1.0, 1e-310)])],
        vec![Series::new("constant huge", vec![(0.0, 1e300), (1.0, 1e300)])],
        vec![Series::new("tiny relative span", vec![(1e15, 1.0), (1e15 + 1.0, 1.0 + 1e-15)])],
        vec![Series::new("tiny x span", vec![(0.0, 1.0), (1e-300, 2.0)])],
    ];
    for series in &cases {
        plot::line_plot(&p, "degenerate", "x", "y", series).unwrap();
        check_png(&p, SIZE, 3);
        plot::line_plot_log_y(&p, "degenerate log", "x", "y", series).unwrap();
        check_png(&p, SIZE, 3);
    }
    // Only non-positive values on a log axis: empty axes, no panic.
    plot::line_plot_log_y(&p, "negative", "x", "y", &[Series::from_values("neg", &[-1.0, 0.0])]).unwrap();
    check_png(&p, SIZE, 3);
}

/// Eight Gaussian modes on a ring, samples coloured by nearest mode, centres as crosses.
#[test]
fn scatter_plot_classes_and_centres() {
    let dir = Dir::new("scatter");
    let mut rng = Rng::new(2);
    let centres: Vec<(f64, f64)> = (0..8)
        .map(|k| {
            let a = k as f64 * std::f64::consts::TAU / 8.0;
            (2.0 * a.cos(), 2.0 * a.sin())
        })
        .collect();
    let pts: Vec<(f64, f64, usize)> = (0..800)
        .map(|i| {
            let k = i % 8;
            (centres[k].0 + 0.15 * rng.normal(), centres[k].1 + 0.15 * rng.normal(), k)
        })
        .collect();
    let names: Vec<String> = (0..8).map(|k| format!("mode {k}")).collect();
    let p = dir.file("scatter.png");
    plot::scatter_plot(&p, "GAN samples over the 8 true modes", &pts, &names, &centres).unwrap();
    let img = check_png(&p, SIZE, 20);
    assert!(has_colour(&img, [0, 0, 0]), "centres are black crosses");

    // Ten classes (an MNIST latent space): classes past the palette change marker shape.
    let pts: Vec<(f64, f64, usize)> =
        (0..2000).map(|i| (rng.normal() + (i % 10) as f64 * 0.8, rng.normal() * 2.0, i % 10)).collect();
    let p = dir.file("scatter10.png");
    plot::scatter_plot(&p, "Latent space, 10 classes", &pts, &[], &[]).unwrap();
    check_png(&p, SIZE, 20);

    let p = dir.file("scatter_degenerate.png");
    let nan = f64::NAN;
    for (pts, marks) in [
        (vec![], vec![]),
        (vec![(nan, 1.0, 0), (1.0, nan, 1)], vec![(nan, nan)]),
        (vec![(1.0, 1.0, usize::MAX)], vec![]),
        (vec![], vec![(0.0, 0.0)]),
        (vec![(1e300, -1e300, 3), (-1e300, 1e300, 3)], vec![]),
    ] {
        plot::scatter_plot(&p, "degenerate", &pts, &[], &marks).unwrap();
        check_png(&p, SIZE, 3);
    }
}

#[test]
fn bar_plot_errors_highlights_and_bad_lengths() {
    let dir = Dir::new("bar");
    let mut rng = Rng::new(3);
    let labels: Vec<String> = (0..32).map(|i| format!("{i}")).collect();
    let hi: Vec<bool> = (0..32).map(|i| i % 8 == 3).collect();
    let vals: Vec<f64> = hi.iter().map(|&h| if h { 0.8 } else { 0.1 } + 0.05 * rng.uniform()).collect();
    let errs: Vec<f64> = (0..32).map(|_| 0.03 + 0.03 * rng.uniform()).collect();
    let p = dir.file("bar_positions.png");
    plot::bar_plot(&p, "Mean importance per token position", &labels, &vals, Some(&errs), &hi).unwrap();
    let img = check_png(&p, SIZE, 10);
    let v = plot::PALETTE[3];
    assert!(has_colour(&img, [v.0, v.1, v.2]), "highlighted bars in vermillion");
    assert!(has_colour(&img, blue()), "other bars in blue");

    let labels: Vec<String> =
        ["baseline MLP", "atom model (ours)", "atom model, no separation loss", "VAE"].map(String::from).to_vec();
    let p = dir.file("bar_table.png");
    plot::bar_plot(
        &p,
        "Test accuracy (mean ± std over 5 seeds)",
        &labels,
        &[0.91, 0.97, 0.93, -0.2],
        Some(&[0.01, 0.005, 0.02, 0.1]),
        &[],
    )
    .unwrap();
    check_png(&p, SIZE, 10);

    let p = dir.file("bar_degenerate.png");
    let nan = f64::NAN;
    plot::bar_plot(&p, "empty", &[], &[], None, &[]).unwrap();
    check_png(&p, SIZE, 3);
    plot::bar_plot(&p, "nan", &["a".into(), "b".into()], &[nan, 1.0], Some(&[1.0, nan]), &[true, false]).unwrap();
    check_png(&p, SIZE, 3);
    plot::bar_plot(&p, "all nan", &["a".into()], &[nan], None, &[]).unwrap();
    check_png(&p, SIZE, 3);

    let err = plot::bar_plot(&p, "bad", &["a".into()], &[1.0, 2.0], None, &[]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Shape { op: "bar_plot", .. }) && msg.contains("1 labels for 2 values"), "{msg}");
    let err = plot::bar_plot(&p, "bad", &["a".into()], &[1.0], Some(&[]), &[]).unwrap_err();
    assert!(err.to_string().contains("0 errors for 1 values"), "{err}");
    let err = plot::bar_plot(&p, "bad", &["a".into()], &[1.0], None, &[true, false]).unwrap_err();
    assert!(err.to_string().contains("2 highlight flags for 1 values"), "{err}");
}

#[test]
fn histogram_of_values() {
    let dir = Dir::new("hist");
    let mut rng = Rng::new(4);
    let mut vals: Vec<f64> = (0..5000).map(|_| rng.normal() * 0.5 + 1.0).collect();
    vals.extend([f64::NAN, f64::INFINITY]);
    let p = dir.file("hist.png");
    plot::histogram(&p, "Weight distribution after training", &vals, 40).unwrap();
    let img = check_png(&p, SIZE, 10);
    assert!(has_colour(&img, blue()));
    let p = dir.file("hist_degenerate.png");
    for (vals, bins) in
        [(vec![], 10), (vec![f64::NAN], 10), (vec![3.0; 10], 0), (vec![0.0], 1), (vec![-1e300, 1e300], 5)]
    {
        plot::histogram(&p, "degenerate", &vals, bins).unwrap();
        check_png(&p, SIZE, 3);
    }
}

/// A "digit": a ring of ink in a 28x28 image, and a 7x7 importance map with one bump.
fn digit(k: usize) -> (Vec<f32>, Vec<f32>) {
    let mut img = vec![0f32; 28 * 28];
    for y in 0..28 {
        for x in 0..28 {
            let (dx, dy) = (x as f32 - 14.0, y as f32 - 14.0);
            let r = (dx * dx + dy * dy * (1.0 + 0.1 * k as f32)).sqrt();
            img[y * 28 + x] = (1.0 - (r - 8.0).abs() / 2.5).clamp(0.0, 1.0);
        }
    }
    let (cy, cx) = ((k % 5 + 1) as f32, ((k * 3) % 5 + 1) as f32);
    let heat = (0..49)
        .map(|i| {
            let (y, x) = ((i / 7) as f32, (i % 7) as f32);
            (-((y - cy).powi(2) + (x - cx).powi(2)) / 2.0).exp()
        })
        .collect();
    (img, heat)
}

#[test]
fn image_grid_with_overlay_and_labels() {
    let dir = Dir::new("grid");
    let (images, heats): (Vec<_>, Vec<_>) = (0..10).map(digit).unzip();
    let labels: Vec<String> = (0..10).map(|k| format!("class {k}")).collect();

    let p = dir.file("grid.png");
    plot::image_grid(&p, &images, 28, 28, 5, None, None).unwrap();
    let img = check_png(&p, None, 10);
    let (w, h) = img.dimensions();
    assert!(w > 5 * 28 && h > 2 * 28 && w > h, "5x2 grid of magnified images, got {w}x{h}");

    let p = dir.file("grid_overlay.png");
    plot::image_grid(&p, &images, 28, 28, 5, Some(&heats), Some(&labels)).unwrap();
    let img2 = check_png(&p, None, 50);
    assert!(img2.height() > h, "labels add a row of text under each image");

    // A full-resolution overlay, a non-square image, NaN pixels and NaN overlays.
    let p = dir.file("grid_odd.png");
    let mut odd = vec![0.5f32; 6 * 10];
    odd[3] = f32::NAN;
    let ov = vec![vec![f32::NAN; 3 * 5]];
    plot::image_grid(&p, &[odd.clone()], 6, 10, 4, Some(&ov), Some(&["x".into()])).unwrap();
    let img = check_png(&p, None, 2);
    assert!(has_colour(&img, [0xD5, 0x5E, 0x00]), "NaN pixels are shown in vermillion");
    plot::image_grid(&p, &[odd.clone()], 6, 10, 1, Some(&[odd.clone()]), None).unwrap();
    plot::image_grid(&p, &[], 28, 28, 4, None, None).unwrap();
    check_png(&p, None, 2);

    let shape = |r: atomgrad::Result<()>, want: &str| {
        let e = r.unwrap_err();
        assert!(matches!(e, Error::Shape { op: "image_grid", .. }) && e.to_string().contains(want), "{e}");
    };
    shape(plot::image_grid(&p, &[vec![0.0; 5]], 2, 2, 1, None, None), "image 0 has 5 values, expected 2x2 = 4");
    shape(plot::image_grid(&p, &images, 28, 28, 0, None, None), "columns");
    shape(plot::image_grid(&p, &images, 28, 28, 5, Some(&heats[..3]), None), "3 overlays for 10 images");
    shape(plot::image_grid(&p, &images[..1], 28, 28, 5, Some(&[vec![0.0; 10]]), None), "overlay 0 has 10 values");
    shape(plot::image_grid(&p, &images, 28, 28, 5, None, Some(&labels[..2])), "2 labels for 10 images");
}

#[test]
fn write_failures_name_the_path_and_leave_nothing_behind() {
    let dir = Dir::new("atomic");
    let root = dir.0.join("atomic-io");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let s = [Series::from_values("a", &[1.0, 2.0])];

    // Missing directory: an Io error naming the target path.
    let missing = root.join("no/such/dir/loss.png");
    let e = plot::line_plot(&missing, "t", "x", "y", &s).unwrap_err();
    match &e {
        Error::Io { path, .. } => assert_eq!(path, &missing.display().to_string()),
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert!(e.to_string().contains(&missing.display().to_string()), "{e}");
    for r in [
        plot::scatter_plot(&missing, "t", &[], &[], &[]),
        plot::bar_plot(&missing, "t", &[], &[], None, &[]),
        plot::histogram(&missing, "t", &[1.0], 3),
        plot::image_grid(&missing, &[vec![0.0; 4]], 2, 2, 1, None, None),
    ] {
        assert!(matches!(r, Err(Error::Io { ref path, .. }) if path == &missing.display().to_string()), "{r:?}");
    }

    // The target is a directory: the rename fails, the directory and its content survive, no temp file.
    let target = root.join("figure.png");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep.txt"), b"keep").unwrap();
    let e = plot::line_plot(&target, "t", "x", "y", &s).unwrap_err();
    assert!(matches!(&e, Error::Io { path, .. } if path == &target.display().to_string()), "{e:?}");
    assert_eq!(std::fs::read(target.join("keep.txt")).unwrap(), b"keep");
    assert!(temp_files(&root).is_empty(), "temporary files left: {:?}", temp_files(&root));

    // A successful write replaces an existing file whole and leaves no temp file.
    let good = root.join("loss.png");
    std::fs::write(&good, b"old").unwrap();
    plot::line_plot(&good, "t", "x", "y", &s).unwrap();
    check_png(&good, SIZE, 3);
    assert!(temp_files(&root).is_empty());
    // A path with no file name is an error, not a panic.
    let e = plot::write_atomic(Path::new("/"), b"x").unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    std::fs::remove_dir_all(&root).unwrap();
}
