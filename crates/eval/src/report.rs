//! Figures of a run, drawn with `plotters` (bitmap backend, text in DejaVu Sans embedded through the `dejavu`
//! crate, so nothing depends on the machine's fonts): line charts with titled, labelled axes and a legend
//! ([`line_chart`]), grouped bar charts with 95% interval whiskers ([`bar_chart`]), and the standard figure of a run
//! ([`loss_curves`]).

use std::path::Path;
use std::sync::Once;

use image::{Rgb, RgbImage};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// Distinct colours for series (matplotlib's "tab10"), in order.
pub const PALETTE: [Rgb<u8>; 10] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([214, 39, 40]),
    Rgb([148, 103, 189]),
    Rgb([140, 86, 75]),
    Rgb([227, 119, 194]),
    Rgb([127, 127, 127]),
    Rgb([188, 189, 34]),
    Rgb([23, 190, 207]),
];

/// The names of [`PALETTE`]'s colours, for tables that say which curve is which.
pub const PALETTE_NAMES: [&str; 10] = [
    "blue", "orange", "green", "red", "purple", "brown", "pink", "grey", "olive", "cyan",
];

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its name in the legend.
    pub name: String,
    /// (x, y) points, in order of x.
    pub points: Vec<(f64, f64)>,
    /// Its colour.
    pub colour: Rgb<u8>,
}

/// One panel of a line chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Its title.
    pub title: String,
    /// The x axis label, with its unit.
    pub x_label: String,
    /// The y axis label, with its unit.
    pub y_label: String,
    /// A logarithmic y axis (for losses that fall over orders of magnitude).
    pub log_y: bool,
    /// Its lines.
    pub series: Vec<Series>,
}

/// One group of bars (a run or variant): a value per category, optionally with its 95% interval.
#[derive(Debug, Clone, PartialEq)]
pub struct BarGroup {
    /// Its name in the legend.
    pub name: String,
    /// One value per category.
    pub values: Vec<f64>,
    /// One (low, high) interval per category, drawn as a whisker.
    pub intervals: Option<Vec<(f64, f64)>>,
    /// Its colour.
    pub colour: Rgb<u8>,
}

/// Size of one panel, pixels.
const PANEL: (u32, u32) = (560, 400);

fn colour(c: Rgb<u8>) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

/// Registers the embedded font once (plotters' `ab_glyph` text renderer knows no system fonts).
fn fonts() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // Registering a valid TrueType font only fails on a malformed font; the embedded one is not.
        let _ = register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

/// Draws `draw` on a white canvas of `width` × `height` and returns it as an image.
fn canvas(
    width: u32,
    height: u32,
    draw: impl FnOnce(DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<(), String>,
) -> Result<RgbImage, String> {
    fonts();
    let mut buffer = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(root.clone())?;
        root.present().map_err(|e| e.to_string())?;
    }
    RgbImage::from_raw(width, height, buffer).ok_or_else(|| "the canvas has the wrong size".into())
}

/// Panels side by side, each with its title, axis labels and a legend of its series. Empty panels say so.
/// Non-finite points are left out; on a log axis, so are points ≤ 0.
///
/// # Errors
/// What plotters reports (a drawing failure).
pub fn line_chart(panels: &[Panel]) -> Result<RgbImage, String> {
    let count = panels.len().max(1) as u32;
    canvas(PANEL.0 * count, PANEL.1, |root| {
        for (area, panel) in root.split_evenly((1, count as usize)).into_iter().zip(panels) {
            draw_panel(&area, panel)?;
        }
        Ok(())
    })
}

fn draw_panel(area: &DrawingArea<BitMapBackend, plotters::coord::Shift>, panel: &Panel) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    let usable = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!panel.log_y || y > 0.0);
    let points: Vec<(f64, f64)> = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied().filter(usable))
        .collect();
    if points.is_empty() {
        area.draw(&Text::new(
            format!("{}: no data", panel.title),
            (20, PANEL.1 as i32 / 2),
            ("sans-serif", 18).into_font(),
        ))
        .map_err(e)?;
        return Ok(());
    }
    let (x_min, x_max) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y_min, y_max) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let x_range = x_min.min(0.0)..(x_max + (x_max - x_min).abs() * 0.02).max(x_min + 1e-9);
    // Steps and minutes read as whole numbers once the axis is long enough.
    let x_label = |x: &f64| {
        if x_max > 20.0 {
            format!("{x:.0}")
        } else {
            format!("{x:.2}")
        }
    };
    let mut chart = ChartBuilder::on(area);
    chart
        .caption(&panel.title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60);
    if panel.log_y {
        let mut chart = chart
            .build_cartesian_2d(x_range, (y_min * 0.9..y_max * 1.1).log_scale())
            .map_err(e)?;
        draw_lines(&mut chart, panel, &x_label, usable)
    } else {
        let pad = ((y_max - y_min).abs() * 0.05).max(1e-9);
        let mut chart = chart
            .build_cartesian_2d(x_range, (y_min.min(0.0))..(y_max + pad))
            .map_err(e)?;
        draw_lines(&mut chart, panel, &x_label, usable)
    }
}

/// Draws a panel's axes (labelled), its series (lines with their points) and its legend on a chart with a linear
/// or log y axis.
fn draw_lines<'a, Y: Ranged<ValueType = f64> + ValueFormatter<f64>>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    panel: &Panel,
    x_label: &dyn Fn(&f64) -> String,
    usable: impl Fn(&(f64, f64)) -> bool,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    chart
        .configure_mesh()
        .x_desc(&panel.x_label)
        .y_desc(&panel.y_label)
        .x_label_formatter(x_label)
        .light_line_style(RGBColor(238, 238, 238))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    for series in &panel.series {
        let style = colour(series.colour);
        let points: Vec<(f64, f64)> = series.points.iter().copied().filter(&usable).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), style.stroke_width(2)))
            .map_err(e)?
            .label(series.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style.stroke_width(2)));
        chart
            .draw_series(points.into_iter().map(|p| Circle::new(p, 2, style.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(e)
}

/// Grouped bars: one slot per category (named under the x axis), one bar per group in it, with whiskers where
/// intervals are given; y from 0 to `y_max`.
///
/// # Errors
/// A group with a value count other than the category count; what plotters reports.
pub fn bar_chart(
    title: &str,
    y_label: &str,
    y_max: f64,
    categories: &[String],
    groups: &[BarGroup],
) -> Result<RgbImage, String> {
    if let Some(bad) = groups.iter().find(|g| g.values.len() != categories.len()) {
        return Err(format!(
            "{} has {} values for {} categories",
            bad.name,
            bad.values.len(),
            categories.len()
        ));
    }
    let width = (160 * categories.len().max(1) as u32).max(PANEL.0);
    canvas(width, PANEL.1 + 40, |root| {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let n = categories.len() as f64;
        // Category i is centred on x = i, so that the axis' integer key points fall on the slots.
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..n - 0.5, 0.0..y_max)
            .map_err(e)?;
        let label = |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < categories.len() {
                categories[i as usize].clone()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(categories.len() + 1)
            .x_label_formatter(&label)
            .y_desc(y_label)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(e)?;
        let width = 0.8 / groups.len().max(1) as f64;
        for (g, group) in groups.iter().enumerate() {
            let style = colour(group.colour);
            let left = |i: usize| i as f64 - 0.4 + g as f64 * width;
            chart
                .draw_series(
                    group
                        .values
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| Rectangle::new([(left(i), 0.0), (left(i) + width * 0.9, v)], style.filled())),
                )
                .map_err(e)?
                .label(group.name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], style.filled()));
            if let Some(intervals) = &group.intervals {
                chart
                    .draw_series(intervals.iter().enumerate().map(|(i, &(low, high))| {
                        let x = left(i) + width * 0.45;
                        PathElement::new(vec![(x, low), (x, high)], BLACK.stroke_width(1))
                    }))
                    .map_err(e)?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(e)
    })
}

/// Reads `field` (a `/`-separated path inside the entry, e.g. `image_ce` or `result/overall`) of the entries of
/// `kind` (`train`, `valid`, `benchmark`) from a `metrics.jsonl`, against their `step`.
pub fn read_metric(path: &Path, kind: &str, field: &str) -> Vec<(f64, f64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|v| {
            let entry = v.get(kind)?;
            Some((
                entry.get("step")?.as_f64()?,
                entry.pointer(&format!("/{field}"))?.as_f64()?,
            ))
        })
        .collect()
}

/// The figure of a run: the tokenizer's pixel loss and the LM's image cross-entropy (training and validation,
/// log y), and the benchmark score over LM training where it was measured.
///
/// # Errors
/// What plotters reports.
pub fn loss_curves(run: &Path) -> Result<RgbImage, String> {
    let tokenizer = run.join("tokenizer/metrics.jsonl");
    let lm = run.join("lm/metrics.jsonl");
    let series = |name: &str, points, colour| Series {
        name: name.into(),
        points,
        colour,
    };
    let mut panels = vec![
        Panel {
            title: "VQ tokenizer".into(),
            x_label: "step".into(),
            y_label: "pixel MSE (images in [-1, 1])".into(),
            log_y: true,
            series: vec![
                series("train", read_metric(&tokenizer, "train", "reconstruction"), PALETTE[0]),
                series("valid", read_metric(&tokenizer, "valid", "mse"), PALETTE[1]),
            ],
        },
        Panel {
            title: "LM".into(),
            x_label: "step".into(),
            y_label: "image cross-entropy (nats / code)".into(),
            log_y: true,
            series: vec![
                series("train", read_metric(&lm, "train", "image_ce"), PALETTE[0]),
                series("valid", read_metric(&lm, "valid", "image_ce"), PALETTE[1]),
            ],
        },
    ];
    let benchmark = read_metric(&lm, "benchmark", "result/overall");
    if !benchmark.is_empty() {
        panels.push(Panel {
            title: "Benchmark during training".into(),
            x_label: "LM step".into(),
            y_label: "overall score (validation-seed prompts)".into(),
            log_y: false,
            series: vec![series("overall", benchmark, PALETTE[2])],
        });
    }
    line_chart(&panels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn non_white(image: &RgbImage, x: std::ops::Range<u32>) -> usize {
        image
            .enumerate_pixels()
            .filter(|(px, _, p)| x.contains(px) && **p != Rgb([255, 255, 255]))
            .count()
    }

    #[test]
    fn a_run_figure_has_a_panel_per_part_and_draws_its_curves_in_their_colours() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("lm")).unwrap();
        std::fs::write(
            dir.path().join("lm/metrics.jsonl"),
            "{\"train\":{\"step\":1,\"image_ce\":2.0}}\n{\"train\":{\"step\":2,\"image_ce\":1.0}}\n\
             {\"valid\":{\"step\":2,\"image_ce\":1.5}}\n{\"benchmark\":{\"step\":2,\"result\":{\"overall\":0.25}}}\n",
        )
        .unwrap();
        let metrics = dir.path().join("lm/metrics.jsonl");
        assert_eq!(read_metric(&metrics, "train", "image_ce"), [(1.0, 2.0), (2.0, 1.0)]);
        assert_eq!(read_metric(&metrics, "benchmark", "result/overall"), [(2.0, 0.25)]);

        let image = loss_curves(dir.path()).unwrap();
        assert_eq!(image.dimensions(), (3 * 560, 400), "tokenizer, LM and benchmark panels");
        let count = |panel: u32, colour: Rgb<u8>| {
            image
                .enumerate_pixels()
                .filter(|(x, _, p)| *x / 560 == panel && **p == colour)
                .count()
        };
        // The LM panel draws the training curve (blue) and the validation point (orange), the benchmark panel its
        // point (green); the tokenizer panel, without metrics, draws neither, only its "no data" text.
        assert!(count(1, PALETTE[0]) > 50 && count(1, PALETTE[1]) > 5, "LM curves");
        assert!(count(2, PALETTE[2]) > 5, "benchmark point");
        assert_eq!(count(0, PALETTE[0]) + count(0, PALETTE[1]), 0);
        assert!(
            non_white(&image, 0..560) > 100,
            "the tokenizer panel says it has no data"
        );
    }

    #[test]
    fn bars_are_as_tall_as_their_values_and_a_mismatched_group_is_refused() {
        let categories: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let group = |name: &str, values: Vec<f64>, colour| BarGroup {
            name: name.into(),
            values,
            intervals: None,
            colour,
        };
        let image = bar_chart(
            "t",
            "score",
            1.0,
            &categories,
            &[
                group("low", vec![0.2, 0.2], PALETTE[0]),
                group("high", vec![0.8, 0.8], PALETTE[3]),
            ],
        )
        .unwrap();
        let pixels = |c: Rgb<u8>| image.pixels().filter(|p| **p == c).count();
        let (low, high) = (pixels(PALETTE[0]), pixels(PALETTE[3]));
        // The legend's swatches are the same size for both; the bars differ four-fold in height.
        assert!(high as f64 > 3.0 * low as f64 * 0.8, "{low} vs {high}");
        let err = bar_chart("t", "score", 1.0, &categories, &[group("short", vec![0.5], PALETTE[0])]).unwrap_err();
        assert!(err.contains("short has 1 values for 2 categories"), "{err}");
    }
}
