//! PNG figures every experiment writes, so a run can be judged by looking, not reading:
//! training curves with mean ± std bands, 2-D latent scatters coloured by class, bar charts with
//! error bars and highlighted bars, image grids with heat-map overlays, histograms.
//!
//! Drawing is done by `plotters` on its in-memory bitmap backend; text is rendered by `ab_glyph`
//! from DejaVu Sans embedded in the crate (`assets/fonts/`, Bitstream Vera licence), so no system
//! font, fontconfig or FreeType is looked up (see `Canvas` for why plotters' own `ab_glyph` text
//! path is not used). The `image` crate encodes the PNG, which is written
//! atomically: a temporary file in the target's directory is written, synced and renamed over the
//! target, so a reader never sees a half-written figure and a failed write leaves what was there.
//!
//! The look is shared: white background, 800x500 px, DejaVu Sans at sizes readable at that
//! resolution, and the Okabe-Ito colour-blind-safe palette (series after the 7th are dashed,
//! classes after the 7th get another marker shape). A legend goes in a corner of the plot that
//! holds no data (checked on a first, legend-free rendering), else in a panel right of the plot,
//! so it never covers data. Non-finite values are skipped and counted in a footnote; a plot with
//! no drawable data still shows its axes and says "no data".
//!
//! Errors: a failed write is `Error::Io` naming the target path; inputs whose lengths do not fit
//! together (labels vs values, image sizes) are `Error::Shape` naming the function and the sizes.
//! Nothing here panics on user input.

use crate::error::{Error, Result};
use ab_glyph::{point, Font, FontRef, Glyph, ScaleFont};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind};
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

/// Size of every chart (image grids size themselves to their content).
pub const WIDTH: u32 = 800;
pub const HEIGHT: u32 = 500;

/// The Okabe-Ito palette (Okabe & Ito 2008) without black, ordered so the first colours contrast
/// best with each other and with white; yellow comes last as it is the faintest on white.
pub const PALETTE: [RGBColor; 7] = [
    RGBColor(0x00, 0x72, 0xB2), // blue
    RGBColor(0xE6, 0x9F, 0x00), // orange
    RGBColor(0x00, 0x9E, 0x73), // bluish green
    RGBColor(0xD5, 0x5E, 0x00), // vermillion
    RGBColor(0xCC, 0x79, 0xA7), // reddish purple
    RGBColor(0x56, 0xB4, 0xE9), // sky blue
    RGBColor(0xF0, 0xE4, 0x42), // yellow
];

const FONT: &str = "sans-serif";
const DEJAVU_SANS: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
const TITLE_PX: u32 = 22;
const DESC_PX: u32 = 17;
const TICK_PX: u32 = 14;
const LEGEND_PX: u32 = 15;
const NOTE_PX: u32 = 13;
const GREY: RGBColor = RGBColor(0x60, 0x60, 0x60);
const LIGHT: RGBColor = RGBColor(0xE4, 0xE4, 0xE4);

/// One curve of a line plot: `points` are (x, y); `band`, if given, is (x, lo, hi) drawn as a
/// translucent region in the curve's colour (e.g. mean ± std over seeds).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub band: Option<Vec<(f64, f64, f64)>>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), points, band: None }
    }
    pub fn with_band(mut self, band: Vec<(f64, f64, f64)>) -> Self {
        self.band = Some(band);
        self
    }
    /// A curve from consecutive values at x = 0, 1, 2, ... (e.g. a loss per epoch).
    pub fn from_values(name: impl Into<String>, ys: &[f64]) -> Self {
        Series::new(name, ys.iter().enumerate().map(|(i, &y)| (i as f64, y)).collect())
    }
}

/// Training curves on a linear y axis, one colour per series, legend right of the plot.
pub fn line_plot(path: impl AsRef<Path>, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<()> {
    line_plot_impl(path.as_ref(), title, x_label, y_label, series, false)
}

/// Like [`line_plot`] with a logarithmic y axis; y values <= 0 are skipped like NaN.
pub fn line_plot_log_y(
    path: impl AsRef<Path>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<()> {
    line_plot_impl(path.as_ref(), title, x_label, y_label, series, true)
}

/// A 2-D scatter, points coloured by class (`class_names[k]` names class k in the legend, or
/// "class k"), with `markers` drawn on top as black crosses (e.g. the true mode centres).
/// The axes have equal scale so distances in the picture are distances in the data.
pub fn scatter_plot(
    path: impl AsRef<Path>,
    title: &str,
    points: &[(f64, f64, usize)],
    class_names: &[String],
    markers: &[(f64, f64)],
) -> Result<()> {
    let path = path.as_ref();
    render(path, (WIDTH, HEIGHT), |root| scatter_draw(root, title, points, class_names, markers))
}

/// Bars labelled `labels`, with optional symmetric error bars (± `errors[i]`) and bars whose
/// `highlight[i]` is true drawn in a contrasting colour. `highlight` may be empty (none).
pub fn bar_plot(
    path: impl AsRef<Path>,
    title: &str,
    labels: &[String],
    values: &[f64],
    errors: Option<&[f64]>,
    highlight: &[bool],
) -> Result<()> {
    let path = path.as_ref();
    if labels.len() != values.len() {
        return Err(shape_err("bar_plot", path, format!("{} labels for {} values", labels.len(), values.len())));
    }
    if let Some(e) = errors {
        if e.len() != values.len() {
            return Err(shape_err("bar_plot", path, format!("{} errors for {} values", e.len(), values.len())));
        }
    }
    if !highlight.is_empty() && highlight.len() != values.len() {
        return Err(shape_err(
            "bar_plot",
            path,
            format!("{} highlight flags for {} values (give none or one per value)", highlight.len(), values.len()),
        ));
    }
    render(path, (WIDTH, HEIGHT), |root| bar_draw(root, title, labels, values, errors, highlight))
}

/// A histogram of the finite `values` in `bins` equal bins (0: chosen from the count).
/// The x axis description reports n, mean and std.
pub fn histogram(path: impl AsRef<Path>, title: &str, values: &[f64], bins: usize) -> Result<()> {
    let path = path.as_ref();
    render(path, (WIDTH, HEIGHT), |root| hist_draw(root, title, values, bins))
}

/// A grid of `h`x`w` grayscale images (row-major, values in [0, 1], 1 = white), `cols` per row,
/// each magnified with crisp pixels. `overlay[i]`, if given, is a heat map for image i at any
/// resolution with the image's aspect (e.g. 7x7 for 28x28), scaled to its own [min, max],
/// upsampled bilinearly and alpha-blended in viridis (more opaque where higher). `labels[i]` is
/// written under image i. NaN pixels show in vermillion so they cannot pass unnoticed.
pub fn image_grid(
    path: impl AsRef<Path>,
    images: &[Vec<f32>],
    h: usize,
    w: usize,
    cols: usize,
    overlay: Option<&[Vec<f32>]>,
    labels: Option<&[String]>,
) -> Result<()> {
    let path = path.as_ref();
    let op = "image_grid";
    if h == 0 || w == 0 || cols == 0 {
        return Err(shape_err(op, path, format!("image size {h}x{w} with {cols} columns: all must be > 0")));
    }
    if let Some((i, img)) = images.iter().enumerate().find(|(_, im)| im.len() != h * w) {
        return Err(shape_err(op, path, format!("image {i} has {} values, expected {h}x{w} = {}", img.len(), h * w)));
    }
    let mut heat_dims = Vec::new();
    if let Some(ov) = overlay {
        if ov.len() != images.len() {
            return Err(shape_err(op, path, format!("{} overlays for {} images", ov.len(), images.len())));
        }
        for (i, o) in ov.iter().enumerate() {
            match overlay_dims(o.len(), h, w) {
                Some(d) => heat_dims.push(d),
                None => {
                    return Err(shape_err(
                        op,
                        path,
                        format!("overlay {i} has {} values: not a grid with the aspect of {h}x{w}", o.len()),
                    ))
                }
            }
        }
    }
    if let Some(l) = labels {
        if l.len() != images.len() {
            return Err(shape_err(op, path, format!("{} labels for {} images", l.len(), images.len())));
        }
    }
    let g = GridLayout::new(images.len(), h, w, cols, labels.is_some());
    let (gw, gh) = g.size();
    render(path, (gw, gh), |root| grid_draw(root, &g, images, overlay.map(|o| (o, &heat_dims[..])), labels))
}

pub use crate::fsio::write_atomic;

// ---------------------------------------------------------------------------------------------
// Rendering harness

type Area<'a> = DrawingArea<Canvas<'a>, Shift>;
/// Drawing errors are carried as text and become `Error::Io` naming the target path.
type Drawn = std::result::Result<(), String>;
/// The pixel rectangle (x range, y range) of a chart's plotting area.
type PixRect = (Range<i32>, Range<i32>);

fn de<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn shape_err(op: &'static str, path: &Path, msg: String) -> Error {
    Error::shape(op, format!("{} (writing {})", msg, path.display()))
}

fn embedded_font() -> Option<&'static FontRef<'static>> {
    static FONT: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT.get_or_init(|| FontRef::try_from_slice(DEJAVU_SANS).ok()).as_ref()
}

/// A drawing area over an RGB buffer of `w` x `h` pixels.
fn canvas(buf: &mut [u8], w: u32, h: u32) -> std::result::Result<Area<'_>, String> {
    let font = embedded_font().ok_or("the embedded DejaVu Sans font failed to load")?;
    Ok(Canvas { bmp: BitMapBackend::with_buffer(buf, (w, h)), font }.into_drawing_area())
}

/// Draws into a white RGB buffer of `size`, encodes it as PNG and writes it atomically.
/// A panic inside the plotting library is caught and reported: a figure must never take a
/// training run down with it.
fn render(path: &Path, size: (u32, u32), draw: impl FnOnce(&Area) -> Drawn) -> Result<()> {
    let (w, h) = size;
    let mut buf = vec![255u8; w as usize * h as usize * 3];
    let drawn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Drawn {
        let root = canvas(&mut buf, w, h)?;
        draw(&root)?;
        root.present().map_err(de)
    }))
    .unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(format!("the plotting library panicked: {what}"))
    });
    drawn.map_err(|m| Error::Io { path: path.display().to_string(), msg: format!("drawing failed: {m}") })?;
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &buf,
        w,
        h,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| Error::Io { path: path.display().to_string(), msg: format!("PNG encoding failed: {e}") })?;
    write_atomic(path, &png)
}

fn font(px: u32) -> TextStyle<'static> {
    (FONT, px).into_font().color(&BLACK)
}

fn text_width(area: &Area, text: &str, px: u32) -> u32 {
    area.estimate_text_size(text, &font(px)).map(|(w, _)| w).unwrap_or(px * text.len() as u32 / 2)
}

/// `text` shortened with an ellipsis to at most `max_w` pixels.
fn fit_text(area: &Area, text: &str, px: u32, max_w: u32) -> String {
    if text_width(area, text, px) <= max_w {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    for n in (0..chars.len()).rev() {
        let t: String = chars[..n].iter().collect::<String>() + "…";
        if text_width(area, &t, px) <= max_w {
            return t;
        }
    }
    String::new()
}

/// Title on top (if any) and the area below it.
fn titled<'a>(root: &Area<'a>, title: &str) -> std::result::Result<Area<'a>, String> {
    if title.is_empty() {
        return Ok(root.margin(6, 0, 0, 0));
    }
    let t = fit_text(root, title, TITLE_PX, root.dim_in_pixel().0.saturating_sub(20));
    root.titled(&t, font(TITLE_PX)).map_err(de)
}

fn footnote(root: &Area, text: &str) -> Drawn {
    if text.is_empty() {
        return Ok(());
    }
    let (_, h) = root.dim_in_pixel();
    let style = font(NOTE_PX).color(&GREY).pos(Pos::new(HPos::Left, VPos::Bottom));
    root.draw_text(text, &style, (6, h as i32 - 4)).map_err(de)
}

fn no_data_note<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, what: &str) -> Drawn {
    let (w, h) = area.dim_in_pixel();
    let style = font(20).color(&GREY).pos(Pos::new(HPos::Center, VPos::Center));
    area.draw_text(what, &style, (w as i32 / 2, h as i32 / 2)).map_err(|e| e.to_string())
}

fn skipped_note(n: usize, what: &str) -> String {
    skipped_because(n, what, "non-finite")
}

fn skipped_because(n: usize, what: &str, why: &str) -> String {
    match n {
        0 => String::new(),
        1 => format!("1 {what} not drawn ({why})"),
        _ => format!("{n} {what}s not drawn ({why})"),
    }
}

// ---------------------------------------------------------------------------------------------
// Text: plotters' bitmap backend with glyphs laid out and rasterised by ab_glyph.

/// plotters' `BitMapBackend` with text drawn by `ab_glyph` from the embedded font. (plotters 0.3.7's
/// own `ab_glyph` text path drops each glyph's left side bearing and truncates the pen position
/// per glyph, which visibly misspaces letters at chart sizes: "ep och".) Glyphs are placed at
/// their sub-pixel pen positions with kerning, and their coverage is alpha-blended. Everything
/// else is the bitmap backend's own drawing.
struct Canvas<'a> {
    bmp: BitMapBackend<'a>,
    font: &'static FontRef<'static>,
}

impl Canvas<'_> {
    /// `text` laid out at `px` pixels per line with the baseline at y = ascent: the positioned
    /// glyphs, the advance width and the line height.
    fn layout(&self, text: &str, px: f32) -> (Vec<Glyph>, f32, f32) {
        let sf = self.font.as_scaled(px);
        let (mut caret, mut prev) = (0.0, None);
        let mut glyphs = Vec::with_capacity(text.len());
        for c in text.chars().filter(|c| !c.is_control()) {
            let id = sf.glyph_id(c);
            if let Some(p) = prev {
                caret += sf.kern(p, id);
            }
            glyphs.push(id.with_scale_and_position(px, point(caret, sf.ascent())));
            caret += sf.h_advance(id);
            prev = Some(id);
        }
        (glyphs, caret, sf.ascent() - sf.descent())
    }
}

type BackendResult<T> = std::result::Result<T, DrawingErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>>;

impl DrawingBackend for Canvas<'_> {
    type ErrorType = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.bmp.get_size()
    }
    fn ensure_prepared(&mut self) -> BackendResult<()> {
        self.bmp.ensure_prepared()
    }
    fn present(&mut self) -> BackendResult<()> {
        self.bmp.present()
    }
    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> BackendResult<()> {
        self.bmp.draw_pixel(point, color)
    }
    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> BackendResult<()> {
        self.bmp.draw_line(from, to, style)
    }
    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> BackendResult<()> {
        self.bmp.draw_rect(upper_left, bottom_right, style, fill)
    }
    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> BackendResult<()> {
        self.bmp.draw_path(path, style)
    }
    fn draw_circle<S: plotters_backend::BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> BackendResult<()> {
        self.bmp.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> BackendResult<()> {
        self.bmp.fill_polygon(vert, style)
    }
    fn blit_bitmap(&mut self, pos: BackendCoord, size: (u32, u32), src: &[u8]) -> BackendResult<()> {
        self.bmp.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<S: BackendTextStyle>(&self, text: &str, style: &S) -> BackendResult<(u32, u32)> {
        let (_, w, h) = self.layout(text, style.size() as f32);
        Ok((w.ceil() as u32, h.ceil() as u32))
    }

    fn draw_text<S: BackendTextStyle>(&mut self, text: &str, style: &S, pos: BackendCoord) -> BackendResult<()> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let (glyphs, w, h) = self.layout(text, style.size() as f32);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0.0,
            HPos::Right => -w,
            HPos::Center => -w / 2.0,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0.0,
            VPos::Center => -h / 2.0,
            VPos::Bottom => -h,
        };
        let (dx, dy) = (dx.round() as i32, dy.round() as i32);
        let trans = style.transform();
        let font = self.font;
        let bmp = &mut self.bmp;
        let mut result = Ok(());
        for g in glyphs {
            let Some(outline) = font.outline_glyph(g) else { continue };
            let b = outline.px_bounds();
            outline.draw(|x, y, coverage| {
                if coverage <= 0.0 || result.is_err() {
                    return;
                }
                let (tx, ty) = trans.transform(b.min.x as i32 + x as i32 + dx, b.min.y as i32 + y as i32 + dy);
                let alpha = color.alpha * coverage.min(1.0) as f64;
                result = bmp.draw_pixel((pos.0 + tx, pos.1 + ty), BackendColor { alpha, rgb: color.rgb });
            });
        }
        result
    }
}

// ---------------------------------------------------------------------------------------------
// Legends: inside the plot in a corner that holds no data, else in a panel right of the plot.
// Either way a legend never covers data.

#[derive(Clone, Copy)]
enum Swatch {
    Line { color: RGBColor, dashed: bool, band: bool },
    Marker { color: RGBColor, shape: Shape },
    Cross,
    Bar(RGBColor),
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Circle,
    Triangle,
    Square,
}

type Entries = [(String, Swatch)];

/// Where a figure's legend goes: nowhere (no entries, or the layout probe), in a panel right of
/// the plot, or in a box whose top-left corner is at the given pixel.
enum LegendAt {
    Nowhere,
    Panel,
    Inside((i32, i32)),
}

const LEGEND_ROW: i32 = 24;
const LEGEND_SWATCH: i32 = 30;
const LEGEND_PAD: i32 = 8;

/// The widest name's width, capped at a third of the figure (longer names are shortened).
fn legend_text_width(area: &Area, entries: &Entries) -> (u32, u32) {
    let cap = (area.dim_in_pixel().0 / 3).saturating_sub(LEGEND_SWATCH as u32 + 24).max(40);
    let w = entries.iter().map(|(n, _)| text_width(area, n, LEGEND_PX).min(cap)).max().unwrap_or(0);
    (w, cap)
}

/// Draws the figure with `body(root, at)`, which returns its plotting area's pixel rectangle.
/// The figure is first drawn without a legend into a scratch buffer; if one of the plotting
/// area's corners (top-right first) is blank where the legend box would go, the legend is drawn
/// there, else in a panel right of a narrower plot.
fn place_legend(
    root: &Area,
    entries: &Entries,
    body: impl Fn(&Area, &LegendAt) -> std::result::Result<PixRect, String>,
) -> Drawn {
    if entries.is_empty() {
        return body(root, &LegendAt::Nowhere).map(|_| ());
    }
    let (w, h) = root.dim_in_pixel();
    let mut scratch = vec![255u8; w as usize * h as usize * 3];
    let rect = {
        let probe = canvas(&mut scratch, w, h)?;
        let rect = body(&probe, &LegendAt::Nowhere)?;
        probe.present().map_err(de)?;
        rect
    };
    let (text_w, _) = legend_text_width(root, entries);
    let bw = LEGEND_SWATCH + 8 + text_w as i32 + 2 * LEGEND_PAD;
    let bh = entries.len() as i32 * LEGEND_ROW + LEGEND_PAD;
    let (xr, yr) = rect;
    let inset = 10;
    let corners = [
        (xr.end - inset - bw, yr.start + inset),
        (xr.start + inset, yr.start + inset),
        (xr.end - inset - bw, yr.end - inset - bh),
        (xr.start + inset, yr.end - inset - bh),
    ];
    let blank = |&(x0, y0): &(i32, i32)| {
        if x0 < xr.start + 2 || y0 < yr.start + 2 || x0 + bw > xr.end - 2 || y0 + bh > yr.end - 2 {
            return false;
        }
        let m = 4; // keep clear of data by a few pixels too
        let (xs, ys) = (
            (x0 - m).max(xr.start + 1)..(x0 + bw + m).min(xr.end - 1),
            (y0 - m).max(yr.start + 1)..(y0 + bh + m).min(yr.end - 1),
        );
        ys.clone().all(|y| {
            xs.clone().all(|x| {
                let i = (y as usize * w as usize + x as usize) * 3;
                let p = [scratch[i], scratch[i + 1], scratch[i + 2]];
                p == [255, 255, 255] || p == [LIGHT.0, LIGHT.1, LIGHT.2]
            })
        })
    };
    match corners.iter().find(|c| blank(c)) {
        Some(&at) => body(root, &LegendAt::Inside(at)),
        None => body(root, &LegendAt::Panel),
    }
    .map(|_| ())
}

/// The plot area left of a legend panel drawn right of it (or all of `area` if no panel).
fn legend_panel<'a>(area: &Area<'a>, entries: &Entries, at: &LegendAt) -> std::result::Result<Area<'a>, String> {
    if !matches!(at, LegendAt::Panel) || entries.is_empty() {
        return Ok(area.clone());
    }
    let (w, h) = area.dim_in_pixel();
    let (text_w, cap) = legend_text_width(area, entries);
    let panel = text_w + LEGEND_SWATCH as u32 + 26;
    let (plot, legend) = area.split_horizontally(w.saturating_sub(panel));
    let rows = ((h as i32 - 20) / LEGEND_ROW).max(1) as usize;
    draw_entries(&legend, entries, (4, 22), rows, cap)?;
    Ok(plot)
}

/// The legend box at `at` (absolute pixels) if the legend goes inside the plot.
fn legend_box(root: &Area, entries: &Entries, at: &LegendAt) -> Drawn {
    let LegendAt::Inside((x, y)) = *at else { return Ok(()) };
    let (text_w, cap) = legend_text_width(root, entries);
    let bw = LEGEND_SWATCH + 8 + text_w as i32 + 2 * LEGEND_PAD;
    let bh = entries.len() as i32 * LEGEND_ROW + LEGEND_PAD;
    root.draw(&Rectangle::new([(x, y), (x + bw, y + bh)], WHITE.filled())).map_err(de)?;
    root.draw(&Rectangle::new([(x, y), (x + bw, y + bh)], RGBColor(0xB0, 0xB0, 0xB0).stroke_width(1))).map_err(de)?;
    draw_entries(root, entries, (x + LEGEND_PAD, y + LEGEND_PAD / 2 + LEGEND_ROW / 2), entries.len(), cap)
}

/// Legend rows from `(x, y)` (the first row's vertical centre), at most `rows` of them.
fn draw_entries(area: &Area, entries: &Entries, (x, y): (i32, i32), rows: usize, cap: u32) -> Drawn {
    let shown = if entries.len() > rows { rows.saturating_sub(1) } else { entries.len() };
    for (i, (name, sw)) in entries.iter().take(shown).enumerate() {
        let yi = y + i as i32 * LEGEND_ROW;
        draw_swatch(area, *sw, x, yi)?;
        let style = font(LEGEND_PX).pos(Pos::new(HPos::Left, VPos::Center));
        area.draw_text(&fit_text(area, name, LEGEND_PX, cap), &style, (x + LEGEND_SWATCH + 8, yi)).map_err(de)?;
    }
    if shown < entries.len() {
        let style = font(LEGEND_PX).color(&GREY).pos(Pos::new(HPos::Left, VPos::Center));
        let yi = y + shown as i32 * LEGEND_ROW;
        area.draw_text(&format!("+{} more", entries.len() - shown), &style, (x, yi)).map_err(de)?;
    }
    Ok(())
}

fn draw_swatch(area: &Area, sw: Swatch, x: i32, y: i32) -> Drawn {
    let cx = x + LEGEND_SWATCH / 2;
    match sw {
        Swatch::Line { color, dashed, band } => {
            if band {
                area.draw(&Rectangle::new([(x, y - 8), (x + LEGEND_SWATCH, y + 8)], color.mix(0.2).filled()))
                    .map_err(de)?;
            }
            let style = color.stroke_width(3);
            if dashed {
                for k in 0..3 {
                    let a = x + k * 11;
                    area.draw(&PathElement::new(vec![(a, y), (a + 7, y)], style)).map_err(de)?;
                }
                Ok(())
            } else {
                area.draw(&PathElement::new(vec![(x, y), (x + LEGEND_SWATCH, y)], style)).map_err(de)
            }
        }
        Swatch::Marker { color, shape } => draw_marker(area, (cx, y), shape, 5, color.filled()),
        Swatch::Cross => draw_cross(area, (cx, y)),
        Swatch::Bar(color) => {
            area.draw(&Rectangle::new([(x + 4, y - 8), (x + LEGEND_SWATCH - 4, y + 8)], color.filled())).map_err(de)
        }
    }
}

fn draw_marker<DB: DrawingBackend, CT: CoordTranslate>(
    area: &DrawingArea<DB, CT>,
    at: CT::From,
    shape: Shape,
    r: i32,
    style: ShapeStyle,
) -> Drawn
where
    CT::From: Clone,
{
    let res = match shape {
        Shape::Circle => area.draw(&Circle::new(at, r, style)),
        Shape::Triangle => area.draw(&TriangleMarker::new(at, r + 1, style)),
        Shape::Square => area.draw(&(EmptyElement::at(at) + Rectangle::new([(-r, -r), (r, r)], style))),
    };
    res.map_err(|e| e.to_string())
}

/// A black × with a white halo, visible over any colour.
fn draw_cross<DB: DrawingBackend, CT: CoordTranslate>(area: &DrawingArea<DB, CT>, at: CT::From) -> Drawn
where
    CT::From: Clone,
{
    area.draw(&Cross::new(at.clone(), 7, WHITE.stroke_width(6))).map_err(|e| e.to_string())?;
    area.draw(&Cross::new(at, 6, BLACK.stroke_width(2))).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Axis ranges and tick labels

/// (min, max) of the finite values, if any.
fn finite_span(vals: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    vals.into_iter().filter(|v| v.is_finite()).fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// A range holding [lo, hi] with 5% padding; a single value gets a window around it.
/// Huge magnitudes are clamped so the range width stays finite.
fn padded(span: Option<(f64, f64)>) -> Range<f64> {
    let Some((lo, hi)) = span else { return 0.0..1.0 };
    let (lo, hi) = (lo.max(-1e300), hi.min(1e300));
    let d = hi - lo;
    if d <= 1e-12 * lo.abs().max(hi.abs()) || d == 0.0 {
        let r = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return (lo - r)..(hi + r);
    }
    (lo - 0.05 * d)..(hi + 0.05 * d)
}

fn padded_log(span: Option<(f64, f64)>) -> Range<f64> {
    let Some((lo, hi)) = span else { return 0.1..10.0 };
    let (lo, hi) = (lo.max(1e-300), hi.min(1e300));
    if hi / lo < 1.0001 {
        return (lo / 2.0)..(hi * 2.0);
    }
    // Pad by 5% of the span in log space. plotters' log axis needs hi / lo to be a finite f64,
    // so at most 280 decades are shown (the top ones); anything lower is clipped.
    let (b, a) = (hi.log10(), lo.log10());
    let a = a.max(b - 280.0);
    let pad = 0.05 * (b - a);
    let r = 10f64.powf(a - pad).max(1e-300)..10f64.powf(b + pad).min(1e300);
    if r.start > 0.0 && r.end.is_finite() && (r.end / r.start).is_finite() && r.end > r.start {
        r
    } else {
        0.1..10.0
    }
}

/// Ticks for a log axis over `r`: 1..9 x 10^k within about a decade, 1, 2, 5 x 10^k over a
/// few, decades (every n-th past eight); evenly spaced "nice" values if that gives fewer than two.
fn log_ticks(r: &Range<f64>) -> Vec<f64> {
    let (a, b) = (r.start.log10(), r.end.log10());
    let decades = b - a;
    let mantissas: &[f64] = if decades <= 1.2 {
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    } else if decades <= 4.0 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    let every = if decades > 8.0 { (decades / 8.0).ceil() as i32 } else { 1 };
    let mut out = vec![];
    for k in (a.floor() as i32..=b.ceil() as i32).filter(|k| k.rem_euclid(every) == 0) {
        out.extend(mantissas.iter().map(|m| m * 10f64.powi(k)).filter(|v| r.contains(v)));
    }
    if out.len() < 2 {
        out = linear_ticks(r, 5);
    }
    out
}

/// About `target` evenly spaced ticks at multiples of 1, 2 or 5 x 10^k within `r`.
fn linear_ticks(r: &Range<f64>, target: usize) -> Vec<f64> {
    let raw = (r.end - r.start) / target as f64;
    if !(raw.is_finite() && raw > 0.0) {
        return vec![r.start];
    }
    let mag = 10f64.powf(raw.log10().floor());
    let step = mag * [1.0, 2.0, 5.0, 10.0].into_iter().find(|&m| m * mag >= raw / 1.5).unwrap_or(10.0);
    let first = (r.start / step).ceil();
    (0..50).map(|i| (first + i as f64) * step).take_while(|v| *v <= r.end).collect()
}

/// Tick label for a linear axis over `range`: as many decimals as the tick spacing needs,
/// scientific notation for very large or very small magnitudes.
fn tick_label(v: f64, range: &Range<f64>) -> String {
    let step = (range.end - range.start).abs() / 10.0;
    let mag = range.start.abs().max(range.end.abs());
    if v == 0.0 || v.abs() < step * 1e-6 {
        return "0".into();
    }
    if !(1e-3..1e5).contains(&mag) {
        let digits = ((mag / step).log10().ceil() as i32).clamp(1, 6) as usize;
        return sci(v, digits);
    }
    let decimals = (-(step.log10().floor()) as i32).clamp(0, 8) as usize;
    trim_zeros(format!("{v:.decimals$}"))
}

/// `v` with `sig` significant digits, plain for moderate magnitudes, else scientific.
fn fmt_sig(v: f64, sig: usize) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return sci(v, sig);
    }
    let decimals = (sig as i32 - 1 - a.log10().floor() as i32).max(0) as usize;
    trim_zeros(format!("{v:.decimals$}"))
}

fn sci(v: f64, digits: usize) -> String {
    let s = format!("{:.*e}", digits.saturating_sub(1), v);
    match s.split_once('e') {
        Some((m, e)) => format!("{}e{}", trim_zeros(m.to_string()), e),
        None => s,
    }
}

fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        let t = s.trim_end_matches('0').trim_end_matches('.');
        if t == "-0" {
            "0".into()
        } else {
            t.to_string()
        }
    } else {
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Line plot

fn series_color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn line_plot_impl(path: &Path, title: &str, xl: &str, yl: &str, series: &[Series], log_y: bool) -> Result<()> {
    let ok = move |x: f64, y: f64| x.is_finite() && y.is_finite() && (!log_y || y > 0.0);
    let mut skipped = 0;
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for s in series {
        for &(x, y) in &s.points {
            if ok(x, y) {
                xs.push(x);
                ys.push(y);
            } else {
                skipped += 1;
            }
        }
        for &(x, lo, hi) in s.band.iter().flatten() {
            if ok(x, lo) && ok(x, hi) {
                xs.extend([x, x]);
                ys.extend([lo, hi]);
            }
        }
    }
    let empty = xs.is_empty().then_some(if log_y { "no positive finite data" } else { "no finite data" });
    let xr = padded(finite_span(xs));
    let yspan = finite_span(ys);
    let entries: Vec<(String, Swatch)> = series
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.name.is_empty())
        .map(|(i, s)| (s.name.clone(), Swatch::Line { color: series_color(i), dashed: i >= 7, band: s.band.is_some() }))
        .collect();
    render(path, (WIDTH, HEIGHT), |root| {
        place_legend(root, &entries, |root, at| {
            let area = titled(root, title)?;
            let plot = legend_panel(&area, &entries, at)?;
            let rect = if log_y {
                let yr = padded_log(yspan);
                let ticks = log_ticks(&yr);
                let narrow = (yr.end / yr.start).log10() <= 1.2;
                let yr2 = yr.clone();
                let fmt = move |v: &f64| if narrow { tick_label(*v, &yr2) } else { fmt_sig(*v, 3) };
                line_chart(&plot, xl, yl, series, xr.clone(), yr.log_scale().with_key_points(ticks), &ok, empty, fmt)?
            } else {
                let yr = padded(yspan);
                let yr2 = yr.clone();
                line_chart(&plot, xl, yl, series, xr.clone(), yr, &ok, empty, move |v| tick_label(*v, &yr2))?
            };
            legend_box(root, &entries, at)?;
            let why = if log_y { "non-finite, or <= 0 on the log axis" } else { "non-finite" };
            footnote(root, &skipped_because(skipped, "point", why))?;
            Ok(rect)
        })
    })
}

/// Maximal runs of consecutive drawable items: a non-finite value breaks a curve rather than
/// being bridged by a straight line.
fn runs<T: Copy>(items: &[T], ok: impl Fn(&T) -> bool) -> Vec<Vec<T>> {
    let mut out = vec![];
    let mut cur = vec![];
    for it in items {
        if ok(it) {
            cur.push(*it);
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn line_chart<Y>(
    plot: &Area,
    xl: &str,
    yl: &str,
    series: &[Series],
    xr: Range<f64>,
    yr: Y,
    ok: &dyn Fn(f64, f64) -> bool,
    empty: Option<&str>,
    y_fmt: impl Fn(&f64) -> String,
) -> std::result::Result<PixRect, String>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let xr2 = xr.clone();
    let mut chart = ChartBuilder::on(plot)
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(72)
        .build_cartesian_2d(xr, yr)
        .map_err(de)?;
    chart
        .configure_mesh()
        .x_desc(xl)
        .y_desc(yl)
        .label_style(font(TICK_PX))
        .axis_desc_style(font(DESC_PX))
        .bold_line_style(LIGHT)
        .light_line_style(WHITE)
        .x_label_formatter(&|v| tick_label(*v, &xr2))
        .y_label_formatter(&y_fmt)
        .draw()
        .map_err(de)?;
    for (i, s) in series.iter().enumerate() {
        let color = series_color(i);
        if let Some(band) = &s.band {
            for run in runs(band, |&(x, lo, hi)| ok(x, lo) && ok(x, hi)) {
                let mut poly: Vec<(f64, f64)> = run.iter().map(|&(x, _, hi)| (x, hi)).collect();
                poly.extend(run.iter().rev().map(|&(x, lo, _)| (x, lo)));
                chart.draw_series(std::iter::once(Polygon::new(poly, color.mix(0.2).filled()))).map_err(de)?;
            }
        }
    }
    for (i, s) in series.iter().enumerate() {
        let color = series_color(i);
        let style = color.stroke_width(2);
        for run in runs(&s.points, |&(x, y)| ok(x, y)) {
            if run.len() == 1 {
                chart.draw_series(std::iter::once(Circle::new(run[0], 3, color.filled()))).map_err(de)?;
            } else if i >= 7 {
                chart.draw_series(DashedLineSeries::new(run, 8, 5, style)).map_err(de)?;
            } else {
                chart.draw_series(LineSeries::new(run, style)).map_err(de)?;
            }
        }
    }
    let area = chart.plotting_area();
    if let Some(what) = empty {
        no_data_note(&area.strip_coord_spec(), what)?;
    }
    Ok(area.get_pixel_range())
}

// ---------------------------------------------------------------------------------------------
// Scatter plot

fn class_style(k: usize) -> (RGBColor, Shape) {
    let shape = match (k / PALETTE.len()) % 3 {
        0 => Shape::Circle,
        1 => Shape::Triangle,
        _ => Shape::Square,
    };
    (PALETTE[k % PALETTE.len()], shape)
}

fn scatter_draw(
    root: &Area,
    title: &str,
    points: &[(f64, f64, usize)],
    class_names: &[String],
    markers: &[(f64, f64)],
) -> Drawn {
    let finite: Vec<_> = points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
    let marks: Vec<_> = markers.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
    let skipped = points.len() - finite.len() + markers.len() - marks.len();
    let mut classes: std::collections::BTreeSet<usize> = (0..class_names.len()).collect();
    classes.extend(finite.iter().map(|p| p.2));
    let mut entries: Vec<(String, Swatch)> = classes
        .iter()
        .map(|&k| {
            let name = class_names.get(k).cloned().unwrap_or_else(|| format!("class {k}"));
            let (color, shape) = class_style(k);
            (name, Swatch::Marker { color, shape })
        })
        .collect();
    if !marks.is_empty() {
        entries.push(("centres".into(), Swatch::Cross));
    }
    let xspan = finite_span(finite.iter().map(|p| p.0).chain(marks.iter().map(|p| p.0)));
    let yspan = finite_span(finite.iter().map(|p| p.1).chain(marks.iter().map(|p| p.1)));
    place_legend(root, &entries, |root, at| {
        let area = titled(root, title)?;
        let plot = legend_panel(&area, &entries, at)?;
        // Equal scale on both axes: widen the shorter span to the plotting area's aspect.
        let (xr, yr) = (padded(xspan), padded(yspan));
        let (pw, ph) = plot.dim_in_pixel();
        let (aw, ah) = ((pw as f64 - 24.0 - 72.0).max(1.0), (ph as f64 - 24.0 - 50.0).max(1.0));
        let scale = ((xr.end - xr.start) / aw).max((yr.end - yr.start) / ah);
        let widen = |r: Range<f64>, px: f64| {
            let c = 0.5 * (r.start + r.end);
            let half = 0.5 * scale * px;
            if half.is_finite() && half > 0.0 && c - half < c + half {
                (c - half)..(c + half)
            } else {
                r
            }
        };
        let (xr, yr) = (widen(xr, aw), widen(yr, ah));
        let (xr2, yr2) = (xr.clone(), yr.clone());
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(72)
            .build_cartesian_2d(xr, yr)
            .map_err(de)?;
        chart
            .configure_mesh()
            .label_style(font(TICK_PX))
            .bold_line_style(LIGHT)
            .light_line_style(WHITE)
            .x_label_formatter(&|v| tick_label(*v, &xr2))
            .y_label_formatter(&|v| tick_label(*v, &yr2))
            .draw()
            .map_err(de)?;
        let r = if finite.len() <= 2000 { 3 } else { 2 };
        let area = chart.plotting_area();
        // In the given order, so no class is systematically painted over the others.
        for &(x, y, k) in &finite {
            let (color, shape) = class_style(k);
            draw_marker(area, (x, y), shape, r, color.mix(0.7).filled())?;
        }
        for &m in &marks {
            draw_cross(area, m)?;
        }
        if finite.is_empty() && marks.is_empty() {
            no_data_note(&area.strip_coord_spec(), "no finite points")?;
        }
        legend_box(root, &entries, at)?;
        footnote(root, &skipped_note(skipped, "point"))?;
        Ok(area.get_pixel_range())
    })
}

// ---------------------------------------------------------------------------------------------
// Bar plot

const BAR: RGBColor = PALETTE[0];
const BAR_HIGHLIGHT: RGBColor = PALETTE[3];

fn bar_draw(
    root: &Area,
    title: &str,
    labels: &[String],
    values: &[f64],
    errors: Option<&[f64]>,
    highlight: &[bool],
) -> Drawn {
    let n = values.len();
    let err = |i: usize| errors.map(|e| e[i]).filter(|e| e.is_finite()).map(f64::abs);
    let mut ys = vec![0.0];
    let mut skipped = 0;
    for (i, &v) in values.iter().enumerate() {
        if v.is_finite() {
            ys.push(v);
            if let Some(e) = err(i) {
                ys.extend([v - e, v + e]);
            }
        } else {
            skipped += 1;
        }
    }
    let entries = if highlight.iter().any(|&b| b) && highlight.iter().any(|&b| !b) {
        vec![("highlighted".to_string(), Swatch::Bar(BAR_HIGHLIGHT)), ("other".to_string(), Swatch::Bar(BAR))]
    } else {
        vec![]
    };
    let (ylo, yhi) = finite_span(ys.iter().copied()).unwrap_or((0.0, 1.0));
    let mut yr = padded(Some((ylo, yhi)));
    // Bars grow from zero: no padding below a non-negative baseline (or above a non-positive one).
    if ylo >= 0.0 {
        yr.start = 0.0;
    }
    if yhi <= 0.0 {
        yr.end = 0.0;
    }
    let annotate = n > 0 && n <= 16;
    if annotate {
        yr.end += 0.06 * (yr.end - yr.start); // room for the value written above each bar
    }
    place_legend(root, &entries, |root, at| {
        let area = titled(root, title)?;
        let plot = legend_panel(&area, &entries, at)?;
        // Category labels are laid out here, not by plotters: each under its bar if they all fit
        // side by side; else, with few bars, wrapped onto up to three lines; else every k-th.
        let (pw, _) = plot.dim_in_pixel();
        let slot = ((pw as f64 - 24.0 - 72.0) / n.max(1) as f64).max(1.0);
        let room = (slot - 6.0).max(1.0) as u32;
        let widest = labels.iter().map(|l| text_width(&plot, l, TICK_PX)).max().unwrap_or(0);
        let (lines, every): (Vec<Vec<String>>, usize) = if widest <= room {
            (labels.iter().map(|l| vec![l.clone()]).collect(), 1)
        } else if n <= 12 {
            (labels.iter().map(|l| wrap_text(&plot, l, TICK_PX, room, 3)).collect(), 1)
        } else {
            let k = [2, 5, 10, 20, 50, 100, 200, 500, 1000]
                .into_iter()
                .find(|&k| widest as f64 <= k as f64 * slot - 6.0)
                .unwrap_or(n.max(1));
            (labels.iter().map(|l| vec![fit_text(&plot, l, TICK_PX, (k as f64 * slot - 6.0) as u32)]).collect(), k)
        };
        let line_h = TICK_PX as i32 + 3;
        let nlines = lines.iter().map(|l| l.len()).max().unwrap_or(1).max(1) as i32;
        let label_px = (14 + nlines * line_h) as u32;
        let yr2 = yr.clone();
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(label_px)
            .y_label_area_size(72)
            .build_cartesian_2d(-0.5..(n.max(1) as f64 - 0.5), yr.clone())
            .map_err(de)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_label_style(font(TICK_PX))
            .bold_line_style(LIGHT)
            .light_line_style(WHITE)
            .y_label_formatter(&|v| tick_label(*v, &yr2))
            .draw()
            .map_err(de)?;
        let gap = ((slot * 0.12) as u32).clamp(1, 30);
        for (i, &v) in values.iter().enumerate().filter(|(_, v)| v.is_finite()) {
            let color = if highlight.get(i).copied().unwrap_or(false) { BAR_HIGHLIGHT } else { BAR };
            let mut bar = Rectangle::new([(i as f64 - 0.5, v), (i as f64 + 0.5, 0.0)], color.filled());
            bar.set_margin(0, 0, gap, gap);
            chart.draw_series(std::iter::once(bar)).map_err(de)?;
        }
        let area = chart.plotting_area();
        for (i, &v) in values.iter().enumerate().filter(|(_, v)| v.is_finite()) {
            let c = i as f64;
            let mut top = v.max(0.0);
            if let Some(e) = err(i) {
                let style = BLACK.stroke_width(2);
                area.draw(&PathElement::new(vec![(c, v - e), (c, v + e)], style)).map_err(de)?;
                let cap = ((slot * 0.15) as i32).clamp(3, 12);
                for y in [v - e, v + e] {
                    area.draw(&(EmptyElement::at((c, y)) + PathElement::new(vec![(-cap, 0), (cap, 0)], style)))
                        .map_err(de)?;
                }
                top = top.max(v + e);
            }
            if annotate {
                let style = font(NOTE_PX).color(&GREY).pos(Pos::new(HPos::Center, VPos::Bottom));
                area.draw(&(EmptyElement::at((c, top)) + Text::new(fmt_sig(v, 3), (0, -4), style))).map_err(de)?;
            }
        }
        let (xr, yr) = area.get_pixel_range();
        let style = font(TICK_PX).pos(Pos::new(HPos::Center, VPos::Top));
        for (i, label) in lines.iter().enumerate().filter(|(i, _)| i % every == 0) {
            let (x, _) = area.map_coordinate(&(i as f64, 0.0));
            root.draw(&PathElement::new(vec![(x, yr.end), (x, yr.end + 5)], BLACK)).map_err(de)?;
            for (k, line) in label.iter().enumerate() {
                root.draw_text(line, &style, (x, yr.end + 8 + k as i32 * line_h)).map_err(de)?;
            }
        }
        if n == 0 || skipped == n {
            no_data_note(&area.strip_coord_spec(), if n == 0 { "no data" } else { "no finite values" })?;
        }
        legend_box(root, &entries, at)?;
        footnote(root, &skipped_note(skipped, "value"))?;
        Ok((xr, yr))
    })
}

/// `text` word-wrapped into at most `max_lines` lines of at most `max_w` pixels (the last one
/// shortened with an ellipsis if the text does not fit).
fn wrap_text(area: &Area, text: &str, px: u32, max_w: u32, max_lines: usize) -> Vec<String> {
    let mut lines: Vec<String> = vec![];
    let mut cur = String::new();
    for word in text.split_whitespace() {
        let cand = if cur.is_empty() { word.to_string() } else { format!("{cur} {word}") };
        if cur.is_empty() || text_width(area, &cand, px) <= max_w {
            cur = cand;
        } else {
            lines.push(std::mem::replace(&mut cur, word.to_string()));
        }
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    if lines.len() > max_lines {
        let rest = lines[max_lines - 1..].join(" ");
        lines.truncate(max_lines - 1);
        lines.push(rest);
    }
    lines.into_iter().map(|l| fit_text(area, &l, px, max_w)).collect()
}

// ---------------------------------------------------------------------------------------------
// Histogram

fn hist_draw(root: &Area, title: &str, values: &[f64], bins: usize) -> Drawn {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let n = finite.len();
    let bins = if bins == 0 { ((n as f64).sqrt().ceil() as usize).clamp(1, 100) } else { bins.min(10_000) };
    let span = finite_span(finite.iter().copied());
    let (lo, hi) = match span {
        Some((lo, hi)) if hi > lo => (lo.max(-1e300), hi.min(1e300)),
        Some((v, _)) => {
            let r = if v == 0.0 { 0.5 } else { v.abs() * 0.05 };
            (v - r, v + r)
        }
        None => (0.0, 1.0),
    };
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    for &v in &finite {
        let b = (((v - lo) / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    let max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let desc = if n == 0 {
        "value".to_string()
    } else {
        // Scaled by the largest magnitude so that huge values do not overflow the sums.
        let m = finite.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
        let mean = finite.iter().map(|v| v / m).sum::<f64>() / n as f64;
        let var = finite.iter().map(|v| (v / m - mean).powi(2)).sum::<f64>() / n as f64;
        let (mean, std) = (mean * m, var.sqrt() * m);
        format!("value   (n = {n}, mean = {}, std = {})", fmt_sig(mean, 3), fmt_sig(std, 3))
    };
    let area = titled(root, title)?;
    let pad = 0.02 * (hi - lo);
    let xr = (lo - pad)..(hi + pad);
    let xr2 = xr.clone();
    let mut chart = ChartBuilder::on(&area)
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(72)
        .build_cartesian_2d(xr, 0u32..((max * 1.05).ceil() as u32).max(1))
        .map_err(de)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc(desc)
        .y_desc("count")
        .label_style(font(TICK_PX))
        .axis_desc_style(font(DESC_PX))
        .bold_line_style(LIGHT)
        .light_line_style(WHITE)
        .x_label_formatter(&|v| tick_label(*v, &xr2))
        .draw()
        .map_err(de)?;
    chart
        .draw_series(counts.iter().enumerate().filter(|(_, &c)| c > 0).map(|(b, &c)| {
            let x0 = lo + b as f64 * width;
            let mut r = Rectangle::new([(x0, 0), (x0 + width, c.min(u32::MAX as usize) as u32)], BAR.filled());
            r.set_margin(0, 0, 0, 1);
            r
        }))
        .map_err(de)?;
    if n == 0 {
        no_data_note(&chart.plotting_area().strip_coord_spec(), "no finite values")?;
    }
    footnote(root, &skipped_note(values.len() - n, "value"))
}

// ---------------------------------------------------------------------------------------------
// Image grid

const NAN_PIXEL: [u8; 3] = [0xD5, 0x5E, 0x00];

struct GridLayout {
    n: usize,
    h: usize,
    w: usize,
    cols: usize,
    rows: usize,
    scale: usize,
    margin: usize,
    gap: usize,
    label_h: usize,
}

impl GridLayout {
    fn new(n: usize, h: usize, w: usize, cols: usize, labels: bool) -> Self {
        let cols = cols.min(n).max(1);
        let rows = n.div_ceil(cols).max(1);
        // Magnify small images to about 112 px, but keep the whole grid within ~1600 px.
        let mut scale = (112 / h.max(w)).clamp(1, 8);
        while scale > 1 && (cols * (w * scale + 6) > 1600 || rows * (h * scale + 6) > 1600) {
            scale -= 1;
        }
        GridLayout { n, h, w, cols, rows, scale, margin: 8, gap: 6, label_h: if labels { 20 } else { 0 } }
    }
    fn cell(&self) -> (usize, usize) {
        (self.w * self.scale + self.gap, self.h * self.scale + self.label_h + self.gap)
    }
    fn size(&self) -> (u32, u32) {
        if self.n == 0 {
            return (320, 120);
        }
        let (cw, ch) = self.cell();
        let w = 2 * self.margin + self.cols * cw - self.gap;
        let h = 2 * self.margin + self.rows * ch - self.gap;
        // Wide enough for a label under a narrow image.
        (w.max(if self.label_h > 0 { 60 } else { 1 }) as u32, h as u32)
    }
    fn origin(&self, i: usize) -> (usize, usize) {
        let (cw, ch) = self.cell();
        (self.margin + (i % self.cols) * cw, self.margin + (i / self.cols) * ch)
    }
}

/// (rows, cols) of an overlay with `len` values and the aspect of an h x w image, if any.
fn overlay_dims(len: usize, h: usize, w: usize) -> Option<(usize, usize)> {
    if len == 0 {
        return None;
    }
    (1..=len).filter(|&r| len.is_multiple_of(r)).map(|r| (r, len / r)).find(|&(r, c)| r * w == c * h)
}

/// The overlays and each one's (rows, cols).
type Overlays<'a> = (&'a [Vec<f32>], &'a [(usize, usize)]);

fn grid_draw(
    root: &Area,
    g: &GridLayout,
    images: &[Vec<f32>],
    overlay: Option<Overlays>,
    labels: Option<&[String]>,
) -> Drawn {
    use plotters::style::colors::colormaps::{ColorMap, ViridisRGB};
    if images.is_empty() {
        return no_data_note(root, "no images");
    }
    let (s, h, w) = (g.scale, g.h, g.w);
    let (dw, dh) = (w * s, h * s);
    for (i, img) in images.iter().enumerate() {
        let (ox, oy) = g.origin(i);
        let heat = overlay.map(|(ov, dims)| upsample_heat(&ov[i], dims[i], dw, dh));
        let pixel = |py: usize, px: usize| -> RGBColor {
            let v = img[(py / s) * w + px / s];
            if v.is_nan() {
                return RGBColor(NAN_PIXEL[0], NAN_PIXEL[1], NAN_PIXEL[2]);
            }
            let gray = v.clamp(0.0, 1.0) * 255.0;
            let Some(heat) = &heat else {
                let g8 = gray.round() as u8;
                return RGBColor(g8, g8, g8);
            };
            let t = heat[py * dw + px];
            let c: RGBColor = ViridisRGB.get_color(t);
            let a = 0.15 + 0.6 * t;
            let mix = |ch: u8| ((1.0 - a) * gray + a * ch as f32).round().clamp(0.0, 255.0) as u8;
            RGBColor(mix(c.0), mix(c.1), mix(c.2))
        };
        for py in 0..dh {
            for px in 0..dw {
                root.draw_pixel(((ox + px) as i32, (oy + py) as i32), &pixel(py, px)).map_err(de)?;
            }
        }
        if let Some(l) = labels {
            let text = fit_text(root, &l[i], TICK_PX, (dw + g.gap) as u32);
            let style = font(TICK_PX).pos(Pos::new(HPos::Center, VPos::Top));
            root.draw_text(&text, &style, ((ox + dw / 2) as i32, (oy + dh + 3) as i32)).map_err(de)?;
        }
    }
    Ok(())
}

/// The overlay scaled to [0, 1] by its own finite min and max (NaN -> 0), bilinearly resized
/// to `dw` x `dh` by the `image` crate.
fn upsample_heat(o: &[f32], (r, c): (usize, usize), dw: usize, dh: usize) -> Vec<f32> {
    let (lo, hi) = finite_span(o.iter().map(|&v| v as f64)).unwrap_or((0.0, 0.0));
    let norm: Vec<f32> =
        o.iter().map(|&v| if v.is_finite() && hi > lo { ((v as f64 - lo) / (hi - lo)) as f32 } else { 0.0 }).collect();
    let Some(small) = image::ImageBuffer::<image::Luma<f32>, Vec<f32>>::from_raw(c as u32, r as u32, norm) else {
        return vec![0.0; dw * dh]; // r * c == o.len() by construction: not reached
    };
    let big = image::imageops::resize(&small, dw as u32, dh as u32, image::imageops::FilterType::Triangle);
    big.into_raw().into_iter().map(|v| v.clamp(0.0, 1.0)).collect()
}
