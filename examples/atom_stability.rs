//! Issue 21's experiment harness: trains the synthetic task for every (variant, seed) and prints
//! per-seed test accuracy, importance AUC and NN spacing, plus the variant's table.
//!
//! ```sh
//! cargo run --release --example atom_stability -- --seeds 0-9 ce atom atom:warmup=96 atom:rmax=none
//! ```
//!
//! A variant is `method[:key=value,...]` with method `ce`, `gate` or `atom` and keys of the atom
//! regulariser's settings: `lambda`, `warmup` (steps), `rmax` (a number or `none`), `normalize`
//! (true/false), `mu_w`, `tau_lo`, `tau_hi`, `detach_w`, `detach_h` (true/false) and of the task:
//! `epochs`, `batch`, `train` (training samples). `--terms DIR` writes every run's
//! `terms.jsonl` and `terms.png` under `DIR/<variant>/seed<k>/`; `--jsonl FILE` appends one line
//! per run.

use atomgrad::atom::AtomConfig;
use atomgrad::experiments::protocol::Classifier;
use atomgrad::experiments::stats::mean_std;
use atomgrad::experiments::synthetic::{SyntheticConfig, SyntheticData, SyntheticLearner};
use atomgrad::experiments::Method;
use atomgrad::train::{fit, Hooks};
use atomgrad::Device;
use std::io::Write;
use std::path::PathBuf;

struct Variant {
    name: String,
    method: Method,
    atom: AtomConfig,
    epochs: usize,
    batch: Option<usize>,
    train: Option<usize>,
}

fn parse_variant(s: &str, lambda: f32) -> Variant {
    let (m, rest) = s.split_once(':').unwrap_or((s, ""));
    let method = Method::parse(m).expect("method");
    // The task's own settings (its soft floor r_max) unless the variant says otherwise.
    let mut atom = AtomConfig { lambda, r_max: SyntheticConfig::default().r_max, ..AtomConfig::default() };
    let mut epochs = SyntheticConfig::default().epochs;
    let (mut batch, mut train) = (None, None);
    for kv in rest.split(',').filter(|k| !k.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("{kv}: want key=value"));
        let f = || v.parse::<f32>().unwrap_or_else(|_| panic!("{kv}: not a number"));
        match k {
            "lambda" => atom.lambda = f(),
            "warmup" => atom.warmup_steps = v.parse().expect("warmup steps"),
            "rmax" => atom.r_max = if v == "none" { None } else { Some(f()) },
            "normalize" => atom.normalize = v.parse().expect("true/false"),
            "mu_w" => atom.mu_w = f(),
            "tau_lo" => atom.tau_lo = f(),
            "tau_hi" => atom.tau_hi = f(),
            "epochs" => epochs = v.parse().expect("epochs"),
            "batch" => batch = Some(v.parse().expect("batch")),
            "train" => train = Some(v.parse().expect("train")),
            "detach_w" => atom.detach_w = v.parse().expect("true/false"),
            "detach_h" => atom.detach_h = v.parse().expect("true/false"),
            _ => panic!("unknown key {k}"),
        }
    }
    Variant { name: s.to_string(), method, atom, epochs, batch, train }
}

fn seeds(s: &str) -> Vec<u64> {
    s.split(',')
        .flat_map(|p| match p.split_once('-') {
            Some((a, b)) => (a.parse::<u64>().unwrap()..=b.parse().unwrap()).collect::<Vec<_>>(),
            None => vec![p.parse().unwrap()],
        })
        .collect()
}

fn main() -> atomgrad::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut take = |flag: &str| -> Option<String> {
        let i = args.iter().position(|a| a == flag)?;
        let v = args.remove(i + 1);
        args.remove(i);
        Some(v)
    };
    let seed_list = seeds(&take("--seeds").unwrap_or("0-9".into()));
    let terms_dir = take("--terms").map(PathBuf::from);
    let jsonl = take("--jsonl").map(PathBuf::from);
    let lambda: f32 = take("--lambda").map_or(0.1, |v| v.parse().unwrap());
    let variants: Vec<Variant> = args.iter().map(|a| parse_variant(a, lambda)).collect();
    let dev = Device::new()?;
    let mut summary = Vec::new();
    for v in &variants {
        let (mut acc, mut aucs, mut nns, mut e1) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for &seed in &seed_list {
            let d = SyntheticConfig::default();
            let cfg = SyntheticConfig {
                lambda: v.atom.lambda,
                r_max: v.atom.r_max,
                epochs: v.epochs,
                batch: v.batch.unwrap_or(d.batch),
                train: v.train.unwrap_or(d.train),
                ..d
            };
            let data = SyntheticData::generate(&cfg);
            let mut l = SyntheticLearner::new(&dev, &cfg, &data, v.method, seed)?.with_atom(v.atom);
            let dir = terms_dir
                .as_ref()
                .map_or_else(std::env::temp_dir, |d| d.join(v.name.replace([':', ',', '='], "_")))
                .join(format!("seed{seed}"));
            std::fs::create_dir_all(&dir).unwrap();
            if terms_dir.is_some() {
                l.log_terms(&dir, 10);
            }
            let t0 = std::time::Instant::now();
            let opts = l.fit_options();
            let fitted = fit(&dev, &mut l, &opts, None, &mut () as &mut dyn Hooks)?;
            // The last epoch's model (this harness predates the validation protocol).
            let r = l.report(&dir, &v.name)?;
            let test = fitted.history.last().map_or(f64::NAN, |e| e.test_accuracy);
            let (auc, nn) = (r.metrics.get("auc").copied(), r.metrics["nn_spacing"]);
            let curve: Vec<f64> = fitted.history.iter().map(|e| (e.test_accuracy * 1000.0).round() / 10.0).collect();
            let loss = fitted.history.last().map_or(f64::NAN, |e| e.train_loss);
            println!(
                "{:<28} seed {:>2}: acc {:5.2}  auc {}  nn {:.4}  loss {:.3}  ({:.1} s)  curve {:?}",
                v.name,
                seed,
                100.0 * test,
                auc.map_or("  -  ".into(), |a| format!("{a:.3}")),
                nn,
                loss,
                t0.elapsed().as_secs_f64(),
                curve
            );
            if let Some(p) = &jsonl {
                let mut f = std::fs::OpenOptions::new().create(true).append(true).open(p).unwrap();
                let line = serde_json::json!({"variant": v.name, "seed": seed, "test_accuracy": test,
                    "auc": auc, "nn_spacing": nn, "train_loss": loss, "curve": curve,
                    "mean_importance": r.importance});
                writeln!(f, "{line}").unwrap();
            }
            acc.push(100.0 * test);
            e1.push(curve[0]);
            if let Some(a) = auc {
                aucs.push(a);
            }
            nns.push(nn);
        }
        summary.push((v.name.clone(), acc, aucs, nns, e1));
    }
    println!("\n| variant | test accuracy (%) | min | importance AUC | NN spacing | after epoch 1 | per seed |\n| --- | --- | --- | --- | --- | --- | --- |");
    for (name, acc, aucs, nns, e1) in &summary {
        let e1 = mean_std(e1).0;
        let (m, s) = mean_std(acc);
        let auc = if aucs.is_empty() {
            "-".into()
        } else {
            let (a, b) = mean_std(aucs);
            format!("{a:.3} ± {b:.3}")
        };
        let (n, ns) = mean_std(nns);
        let per: Vec<String> = acc.iter().map(|a| format!("{a:.1}")).collect();
        let min = acc.iter().cloned().fold(f64::INFINITY, f64::min);
        println!("| {name} | {m:.2} ± {s:.2} | {min:.1} | {auc} | {n:.4} ± {ns:.4} | {e1:.1} | {} |", per.join(" "));
    }
    Ok(())
}
