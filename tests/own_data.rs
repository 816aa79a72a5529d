//! Your own data: a folder of PNG/JPEG images (`--task images`) and a CSV of texts (`--task
//! text`) train, compare every method, checkpoint and explain like the bundled tasks; bad data is
//! a one-line error naming the file, before any folder is created.

use atomgrad::data::images::{load_image_folder, ImageFolderConfig};
use atomgrad::data::{load_text_csv, ReviewsConfig};
use std::path::{Path, PathBuf};
use std::process::Command;

fn atomgrad(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_atomgrad")).args(args).env("NODEVICE_SELECT", "1").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("atomgrad-own-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `per_class` images of two classes (bars across, bars down) of `side` pixels into `dir`, PNG
/// except every fifth, a JPEG; in colour when `rgb`.
fn write_images(dir: &Path, per_class: usize, side: u32, rgb: bool) {
    for (k, class) in ["across", "down"].iter().enumerate() {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..per_class {
            let off = i as u32 % 4;
            let on = |x: u32, y: u32| if k == 0 { (y + off) % 6 < 3 } else { (x + off) % 6 < 3 };
            let ext = if i % 5 == 4 { "jpg" } else { "png" };
            let path = dir.join(class).join(format!("{i}.{ext}"));
            if rgb {
                let img = image::RgbImage::from_fn(side, side, |x, y| {
                    image::Rgb(if on(x, y) { [200, 40 + 10 * off as u8, 30] } else { [10, 20, 30] })
                });
                img.save(&path).unwrap();
            } else {
                let img = image::GrayImage::from_fn(side, side, |x, y| image::Luma([if on(x, y) { 220 } else { 20 }]));
                img.save(&path).unwrap();
            }
        }
    }
}

#[test]
fn an_image_folder_is_decoded_resized_split_and_normalised() {
    let dir = scratch("load");
    write_images(&dir, 20, 24, true);
    let d = load_image_folder(&dir, &ImageFolderConfig { size: 16, ..ImageFolderConfig::default() }).unwrap();
    assert_eq!(d.classes, ["across", "down"]);
    assert_eq!((d.channels, d.size), (3, 16));
    // Per class: 4 test, 2 validation (a tenth of 16, rounded), 14 train.
    assert_eq!((d.train.len(), d.val.len(), d.test.len()), (28, 4, 8));
    assert_eq!(d.train.x.len(), 28 * 3 * 16 * 16);
    for c in 0..3 {
        let plane = 256;
        let vals: Vec<f64> = (0..28)
            .flat_map(|i| d.train.x[i * 768 + c * plane..i * 768 + (c + 1) * plane].to_vec())
            .map(f64::from)
            .collect();
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
        assert!(mean.abs() < 1e-4 && (var.sqrt() - 1.0).abs() < 1e-3, "channel {c}: mean {mean} std {}", var.sqrt());
    }
    // Splits are disjoint and cover every file.
    let mut all: Vec<&PathBuf> = d.files.iter().flatten().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 40);
    // Grayscale files are read as one channel, or RGB ones forced to one.
    let gray = scratch("load-gray");
    write_images(&gray, 5, 20, false);
    let g = load_image_folder(&gray, &ImageFolderConfig { size: 8, ..ImageFolderConfig::default() }).unwrap();
    assert_eq!(g.channels, 1);
    let forced = ImageFolderConfig { size: 8, grayscale: Some(true), ..ImageFolderConfig::default() };
    assert_eq!(load_image_folder(&dir, &forced).unwrap().channels, 1);
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&gray).ok();
}

#[test]
fn the_images_task_trains_compares_every_method_and_explains() {
    let dir = scratch("images");
    let data = dir.join("data");
    write_images(&data, 20, 20, false);
    let (d, run) = (data.to_str().unwrap(), dir.join("run"));
    let common = ["--data", d, "--image-size", "16", "--epochs", "2", "--batch", "8"];
    let mut args = vec!["train", "--task", "images", "--out", run.to_str().unwrap()];
    args.extend(common);
    let (ok, text) = atomgrad(&args);
    assert!(ok, "{text}");
    for f in ["config.json", "metrics.jsonl", "result.json", "checkpoints/best.json", "importance.png"] {
        assert!(run.join(f).is_file(), "{f} missing:\n{text}");
    }
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("result.json")).unwrap()).unwrap();
    assert!(r["test"].as_f64().unwrap() > 0.6, "{r}");
    let best = run.join("checkpoints/best.json");
    let (ok, text) =
        atomgrad(&["explain", "--checkpoint", best.to_str().unwrap(), "--out", dir.join("explain").to_str().unwrap()]);
    assert!(ok && dir.join("explain/importance.png").is_file(), "{text}");
    // Every method under the protocol.
    let cmp = dir.join("compare");
    let mut args = vec!["compare", "--task", "images", "--seeds", "1", "--out", cmp.to_str().unwrap(), "--quiet"];
    args.extend(common);
    let (ok, text) = atomgrad(&args);
    assert!(ok, "{text}");
    for m in ["ce", "gate", "hinge-l1", "hinge-l2", "simclr", "atom"] {
        assert!(text.contains(&format!("| {}", method_title(m))), "{m} missing from\n{text}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The row title of a method in `results.md`.
fn method_title(slug: &str) -> &'static str {
    match slug {
        "ce" => "cross-entropy",
        "gate" => "gate only",
        "hinge-l1" => "+hinge-L1",
        "hinge-l2" => "+hinge-L2",
        "simclr" => "+SimCLR",
        _ => "+atom",
    }
}

/// A CSV of `n` short texts: `good`/`bad` words make the label.
fn write_csv(path: &Path, n: usize, extra_header: &str) {
    let words = ["great", "fine", "lovely", "superb", "awful", "dull", "poor", "bad"];
    let mut s = format!("id,text,label{extra_header}\n");
    for i in 0..n {
        let pos = i % 2 == 0;
        let w: Vec<&str> = (0..4).map(|k| words[(i * 7 + k * 3) % 4 + if pos { 0 } else { 4 }]).collect();
        s.push_str(&format!("{i},\"the film, it was {}\",{}\n", w.join(" "), if pos { "pos" } else { "neg" }));
    }
    std::fs::write(path, s).unwrap();
}

#[test]
fn a_text_csv_is_split_by_label_with_the_vocabulary_from_training() {
    let dir = scratch("csv");
    let csv = dir.join("texts.csv");
    write_csv(&csv, 60, "");
    let d = load_text_csv(&csv, &ReviewsConfig::default()).unwrap();
    assert_eq!(d.classes, ["neg", "pos"]);
    assert_eq!((d.train.len(), d.val.len(), d.test.len()), (44, 4, 12));
    assert!(d.vocab.words().iter().any(|w| w == "superb"));
    assert!(d.description().contains("60 texts of 2 classes"), "{}", d.description());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_text_task_trains_compares_every_method_and_explains() {
    let dir = scratch("text");
    let csv = dir.join("texts.csv");
    write_csv(&csv, 80, "");
    let (c, run) = (csv.to_str().unwrap(), dir.join("run"));
    let common = ["--data", c, "--epochs", "3", "--batch", "8"];
    let mut args = vec!["train", "--task", "text", "--out", run.to_str().unwrap()];
    args.extend(common);
    let (ok, text) = atomgrad(&args);
    assert!(ok, "{text}");
    for f in ["result.json", "checkpoints/best.json", "importance.html"] {
        assert!(run.join(f).is_file(), "{f} missing:\n{text}");
    }
    let best = run.join("checkpoints/best.json");
    let (ok, text) =
        atomgrad(&["explain", "--checkpoint", best.to_str().unwrap(), "--out", dir.join("explain").to_str().unwrap()]);
    assert!(ok && dir.join("explain/importance.html").is_file(), "{text}");
    let html = std::fs::read_to_string(dir.join("explain/importance.html")).unwrap();
    assert!(html.contains("[pos]") || html.contains("[neg]"), "labels by class name");
    let cmp = dir.join("compare");
    let mut args = vec!["compare", "--task", "text", "--seeds", "1", "--out", cmp.to_str().unwrap(), "--quiet"];
    args.extend(["--data", c, "--epochs", "1", "--batch", "8"]);
    let (ok, text) = atomgrad(&args);
    assert!(ok, "{text}");
    assert!(text.contains("+atom") && text.contains("+SimCLR"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Runs `train` with `args` into a fresh folder and checks it fails with one line containing
/// every one of `want`, creating nothing.
fn refused(args: &[&str], want: &[&str]) {
    let out = std::env::temp_dir().join(format!("atomgrad-own-data-refused-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut a = vec!["train", "--out", out.to_str().unwrap()];
    a.extend(args);
    let (ok, text) = atomgrad(&a);
    assert!(!ok, "accepted {args:?}: {text}");
    assert_eq!(text.trim().lines().count(), 1, "not one line: {text}");
    for w in want {
        assert!(text.contains(w), "{args:?}: {text:?} does not say {w:?}");
    }
    assert!(!out.exists(), "{args:?} created {}", out.display());
}

#[test]
fn bad_own_data_is_a_one_line_error_before_anything_is_written() {
    let dir = scratch("bad");
    // No --data.
    refused(&["--task", "images"], &["--task images needs --data"]);
    refused(&["--task", "text"], &["--task text needs --data"]);
    // An empty class.
    let empty = dir.join("empty");
    write_images(&empty, 5, 16, false);
    std::fs::create_dir_all(empty.join("nothing")).unwrap();
    std::fs::write(empty.join("nothing/readme.txt"), "no images here").unwrap();
    refused(&["--task", "images", "--data", empty.to_str().unwrap()], &["nothing", "holds no PNG or JPEG images"]);
    // A truncated PNG and a file that is not an image.
    let trunc = dir.join("trunc");
    write_images(&trunc, 5, 16, false);
    let victim = trunc.join("down/3.png");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    refused(&["--task", "images", "--data", trunc.to_str().unwrap()], &["down/3.png", "cannot decode"]);
    std::fs::write(&victim, "not an image at all").unwrap();
    refused(&["--task", "images", "--data", trunc.to_str().unwrap()], &["down/3.png", "not a PNG or JPEG"]);
    // One class only; a missing folder; a bad size.
    let one = dir.join("one");
    write_images(&one, 5, 16, false);
    std::fs::remove_dir_all(one.join("down")).unwrap();
    refused(&["--task", "images", "--data", one.to_str().unwrap()], &["at least 2"]);
    refused(&["--task", "images", "--data", "/nonexistent/images"], &["/nonexistent/images", "not a folder"]);
    refused(&["--task", "images", "--data", empty.to_str().unwrap(), "--image-size", "30"], &["--image-size"]);
    // A CSV without the columns; a label seen only in test; an option the task does not take.
    let nocol = dir.join("nocol.csv");
    std::fs::write(&nocol, "sentence,class\nhello there,a\n").unwrap();
    refused(
        &["--task", "text", "--data", nocol.to_str().unwrap()],
        &["nocol.csv", "'text'", "'label'", "sentence, class"],
    );
    let split = dir.join("split.csv");
    std::fs::write(
        &split,
        "text,label,split\ngood,pos,train\nbad,neg,train\nfine,pos,val\nmeh,neg,val\nodd,weird,test\nok,pos,test\n",
    )
    .unwrap();
    refused(
        &["--task", "text", "--data", split.to_str().unwrap()],
        &["split.csv", "line 6", "\"weird\"", "test split"],
    );
    refused(
        &["--task", "text", "--data", split.to_str().unwrap(), "--image-size", "16"],
        &["--image-size does not apply"],
    );
    std::fs::remove_dir_all(&dir).ok();
}
