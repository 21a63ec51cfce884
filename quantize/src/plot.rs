//! Charts for the reports of training and quantization, as PNG and SVG (plotters, pure Rust, with
//! an embedded DejaVu Sans so text renders the same on any machine, fonts installed or not).

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A chart of lines, or of bars when `bars` (one value per `categories` entry per series).
#[derive(Debug, Clone, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Bar chart: category names along x; each series' points are `(category index, value)`.
    pub categories: Vec<String>,
    /// Line chart whose x axis counts (epochs, steps): ticks on whole numbers only, not 1.2, 1.4.
    pub whole_x: bool,
    /// The y axis spans at least this much (e.g. 2 accuracy points), so that a difference of one
    /// example does not fill the chart like a collapse would.
    pub min_y_span: f64,
}

/// Why a chart could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PlotError {
    pub path: PathBuf,
    pub message: String,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TTF shipped by the `dejavu` crate.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
    });
}

/// Writes `charts` stacked vertically to `{stem}.png` and `{stem}.svg` (each atomically);
/// returns both paths.
pub fn write_charts(stem: &Path, charts: &[Chart]) -> Result<Vec<PathBuf>, PlotError> {
    fonts();
    let size = (900u32, 380 * charts.len().max(1) as u32);
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    let err = |path: &Path, e: &dyn std::fmt::Display| PlotError {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    // PNG: drawn into a temporary file next to the target, then renamed.
    // The encoder picks the format from the extension: the temporary name ends in .png too.
    let tmp = png.with_extension(format!("{}.tmp.png", std::process::id()));
    {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        draw(&root, charts).map_err(|e| err(&png, &e))?;
        root.present().map_err(|e| err(&png, &e))?;
    }
    std::fs::rename(&tmp, &png).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(&png, &e)
    })?;
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        draw(&root, charts).map_err(|e| err(&svg, &e))?;
        root.present().map_err(|e| err(&svg, &e))?;
    }
    edgebert_runtime::fsutil::write_atomic(&svg, text.as_bytes(), &[])
        .map_err(|e| err(&svg, &e))?;
    Ok(vec![png, svg])
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, charts: &[Chart]) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((charts.len().max(1), 1));
    for (area, chart) in areas.iter().zip(charts) {
        if chart.categories.is_empty() {
            lines(area, chart).map_err(|e| e.to_string())?;
        } else {
            bars(area, chart).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Data range with a margin; a flat range is widened so the axis is drawable, and any range to
/// at least `min_span` around its middle.
fn range(values: impl Iterator<Item = f64>, zero: bool, min_span: f64) -> (f64, f64) {
    let (mut lo, mut hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if zero {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    if hi - lo < 1e-9 {
        hi += 0.5;
        lo -= 0.5;
    }
    if hi - lo < min_span {
        let widen = (min_span - (hi - lo)) / 2.0;
        (lo, hi) = (lo - widen, hi + widen);
    }
    let pad = (hi - lo) * 0.05;
    (if zero && lo == 0.0 { 0.0 } else { lo - pad }, hi + pad)
}

fn lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &Chart,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB::ErrorType: 'static,
{
    let xs = range(
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0)),
        false,
        0.0,
    );
    let ys = range(
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1)),
        false,
        chart.min_y_span,
    );
    let mut c = ChartBuilder::on(area)
        .caption(&chart.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(xs.0..xs.1, ys.0..ys.1)?;
    let whole_ticks = |x: &f64| whole_tick_label(*x);
    let mut mesh = c.configure_mesh();
    if chart.whole_x {
        mesh.x_labels(whole_tick_count(xs.0, xs.1))
            .x_label_formatter(&whole_ticks);
    }
    mesh.light_line_style(RGBColor(238, 238, 238))
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .label_style(("sans-serif", 13))
        .draw()?;
    for (i, s) in chart.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        c.draw_series(LineSeries::new(
            s.points.iter().copied(),
            color.stroke_width(2),
        ))?
        .label(s.name.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        if s.points.len() <= 30 {
            c.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
    }
    if chart.series.len() > 1 || !chart.series.iter().all(|s| s.name.is_empty()) {
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()?;
    }
    Ok(())
}

/// How many ticks to ask plotters for on an x range of whole numbers: one per whole number in it,
/// at most 10 (plotters takes the finest round step that gives no more than that).
fn whole_tick_count(lo: f64, hi: f64) -> usize {
    ((hi.floor() - lo.ceil()).max(0.0) as usize + 1).clamp(2, 10)
}

/// A tick's label on a whole-number axis: the number, or nothing between numbers.
fn whole_tick_label(x: f64) -> String {
    let whole = x.round();
    if (x - whole).abs() < 1e-6 {
        format!("{whole:.0}")
    } else {
        String::new()
    }
}

fn bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &Chart,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB::ErrorType: 'static,
{
    let n = chart.categories.len();
    let k = chart.series.len().max(1);
    let ys = range(
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1)),
        true,
        0.0,
    );
    let categories = chart.categories.clone();
    let mut c = ChartBuilder::on(area)
        .caption(&chart.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, ys.0..ys.1)?;
    c.configure_mesh()
        .disable_x_mesh()
        .light_line_style(RGBColor(238, 238, 238))
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                categories.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .label_style(("sans-serif", 12))
        .draw()?;
    let width = 0.8 / k as f64;
    for (j, s) in chart.series.iter().enumerate() {
        let color = COLORS[j % COLORS.len()];
        c.draw_series(s.points.iter().map(|&(x, y)| {
            let x0 = x - 0.4 + j as f64 * width;
            Rectangle::new([(x0, 0.0), (x0 + width * 0.95, y)], color.filled())
        }))?
        .label(s.name.as_str())
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    if k > 1 {
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_number_axes_label_whole_numbers_only() {
        // Three epochs, padded as `range` pads them: ticks 1, 2, 3 and no 1.2 or 2.5.
        assert_eq!(whole_tick_count(0.9, 3.1), 3);
        assert_eq!(whole_tick_count(0.95, 1.05), 2);
        assert_eq!(whole_tick_count(-0.5, 5.5), 6);
        assert_eq!(whole_tick_count(-16.0, 340.0), 10);
        assert_eq!(whole_tick_label(2.0), "2");
        assert_eq!(whole_tick_label(2.0000000001), "2");
        assert_eq!(whole_tick_label(1.2), "");
        assert_eq!(whole_tick_label(2.5), "");
    }

    #[test]
    fn a_small_difference_does_not_fill_the_axis() {
        // Dev accuracy 98.14% then 97.97% (one example): the axis spans 2 points, centred.
        let (lo, hi) = range([98.14, 97.97].into_iter(), false, 2.0);
        assert!(hi - lo >= 2.0 && lo < 97.97 && hi > 98.14, "{lo}..{hi}");
        assert!(((lo + hi) / 2.0 - 98.055).abs() < 1e-9);
        // A wide range is only padded.
        let (lo, hi) = range([50.0, 90.0].into_iter(), false, 2.0);
        assert_eq!((lo, hi), (48.0, 92.0));
    }

    #[test]
    fn writes_png_and_svg_with_text() {
        let dir = tempfile::tempdir().unwrap();
        let charts = [
            Chart {
                title: "loss".into(),
                x_label: "step".into(),
                y_label: "loss".into(),
                series: vec![Series {
                    name: "train".into(),
                    points: (0..50)
                        .map(|i| (i as f64, 1.0 / (1.0 + i as f64)))
                        .collect(),
                }],
                ..Default::default()
            },
            Chart {
                title: "sizes".into(),
                x_label: "model".into(),
                y_label: "MB".into(),
                categories: vec!["teacher".into(), "student".into()],
                series: vec![Series {
                    name: "f32".into(),
                    points: vec![(0.0, 90.0), (1.0, 45.0)],
                }],
                ..Default::default()
            },
            Chart {
                title: "dev accuracy".into(),
                x_label: "epoch".into(),
                y_label: "%".into(),
                series: vec![Series {
                    name: "dev".into(),
                    points: vec![(1.0, 80.0), (2.0, 82.0), (3.0, 82.5)],
                }],
                whole_x: true,
                ..Default::default()
            },
        ];
        let paths = write_charts(&dir.path().join("c"), &charts).unwrap();
        let png = std::fs::read(&paths[0]).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let svg = std::fs::read_to_string(&paths[1]).unwrap();
        assert!(svg.contains("<svg") && svg.contains("teacher") && svg.contains("loss"));
    }
}
