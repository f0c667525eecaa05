//! A finished run, summarised: loss curves as a PNG (no text in the picture; `report.md` says what is where).

use std::path::Path;

use image::{Rgb, RgbImage};

/// One curve: (step, value) points and a colour.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// (x, y) points, in order of x.
    pub points: Vec<(f64, f64)>,
    /// Its colour.
    pub colour: Rgb<u8>,
}

/// Distinct colours for curves (matplotlib's "tab10"), in order.
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

/// The names of [`PALETTE`]'s colours, for reports that say which curve is which.
pub const PALETTE_NAMES: [&str; 10] = [
    "blue", "orange", "green", "red", "purple", "brown", "pink", "grey", "olive", "cyan",
];

/// Reads `field` of the entries of `kind` (`train` or `valid`) from a `metrics.jsonl`.
pub fn read_metric(path: &Path, kind: &str, field: &str) -> Vec<(f64, f64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|v| {
            let entry = v.get(kind)?;
            Some((entry.get("step")?.as_f64()?, entry.get(field)?.as_f64()?))
        })
        .collect()
}

/// Training (blue) and validation (orange) curves in one panel each: the tokenizer's pixel loss and the LM's
/// image cross-entropy, each against its steps, y from 0 to the curve's maximum.
pub fn loss_curves(run: &Path) -> RgbImage {
    const BLUE: Rgb<u8> = PALETTE[0];
    const ORANGE: Rgb<u8> = PALETTE[1];
    plot(&[
        vec![
            Curve {
                points: read_metric(&run.join("tokenizer/metrics.jsonl"), "train", "reconstruction"),
                colour: BLUE,
            },
            Curve {
                points: read_metric(&run.join("tokenizer/metrics.jsonl"), "valid", "mse"),
                colour: ORANGE,
            },
        ],
        vec![
            Curve {
                points: read_metric(&run.join("lm/metrics.jsonl"), "train", "image_ce"),
                colour: BLUE,
            },
            Curve {
                points: read_metric(&run.join("lm/metrics.jsonl"), "valid", "image_ce"),
                colour: ORANGE,
            },
        ],
    ])
}

/// Panels side by side, each 480×320 px with its curves against x from 0 to the panel's largest x and y from 0 to
/// its largest finite y. No text: the caller's report says what each panel and colour is.
pub fn plot(panels: &[Vec<Curve>]) -> RgbImage {
    let (w, h, margin) = (480u32, 320u32, 24u32);
    let mut image = RgbImage::from_pixel(w * panels.len() as u32, h, Rgb([255, 255, 255]));
    for (p, curves) in panels.iter().enumerate() {
        let x0 = p as u32 * w;
        let max_x = curves
            .iter()
            .flat_map(|c| c.points.iter().map(|q| q.0))
            .fold(1.0, f64::max);
        let max_y = curves
            .iter()
            .flat_map(|c| c.points.iter().map(|q| q.1))
            .filter(|v| v.is_finite())
            .fold(1e-9, f64::max);
        let to_pixel = |(x, y): (f64, f64)| {
            let px = x0 as f64 + margin as f64 + x / max_x * (w - 2 * margin) as f64;
            let py = (h - margin) as f64 - y / max_y * (h - 2 * margin) as f64;
            (px as i64, py as i64)
        };
        // Axes.
        let axis = Rgb([0, 0, 0]);
        line(
            &mut image,
            (x0 as i64 + margin as i64, margin as i64),
            (x0 as i64 + margin as i64, (h - margin) as i64),
            axis,
        );
        line(
            &mut image,
            (x0 as i64 + margin as i64, (h - margin) as i64),
            ((x0 + w - margin) as i64, (h - margin) as i64),
            axis,
        );
        for curve in curves {
            for pair in curve.points.windows(2) {
                line(&mut image, to_pixel(pair[0]), to_pixel(pair[1]), curve.colour);
            }
            for &point in &curve.points {
                let (x, y) = to_pixel(point);
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (-1, 0), (0, -1)] {
                    put(&mut image, x + dx, y + dy, curve.colour);
                }
            }
        }
    }
    image
}

fn put(image: &mut RgbImage, x: i64, y: i64, colour: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < image.width() && (y as u32) < image.height() {
        image.put_pixel(x as u32, y as u32, colour);
    }
}

/// Bresenham's line.
fn line(image: &mut RgbImage, (mut x, mut y): (i64, i64), (x1, y1): (i64, i64), colour: Rgb<u8>) {
    let (dx, dy) = ((x1 - x).abs(), -(y1 - y).abs());
    let (sx, sy) = (if x < x1 { 1 } else { -1 }, if y < y1 { 1 } else { -1 });
    let mut error = dx + dy;
    loop {
        put(image, x, y, colour);
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * error;
        if e2 >= dy {
            error += dy;
            x += sx;
        }
        if e2 <= dx {
            error += dx;
            y += sy;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_are_drawn_where_the_metrics_say() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("lm")).unwrap();
        std::fs::write(
            dir.path().join("lm/metrics.jsonl"),
            "{\"train\":{\"step\":1,\"image_ce\":2.0}}\n{\"train\":{\"step\":2,\"image_ce\":1.0}}\n{\"valid\":{\"step\":2,\"image_ce\":1.5}}\n",
        )
        .unwrap();
        assert_eq!(
            read_metric(&dir.path().join("lm/metrics.jsonl"), "train", "image_ce"),
            [(1.0, 2.0), (2.0, 1.0)]
        );
        let image = loss_curves(dir.path());
        assert_eq!(image.dimensions(), (960, 320));
        // The LM panel's first training point (step 1 of 2, the maximum 2.0) is blue, at the top of the plot, half-way across.
        assert_eq!(*image.get_pixel(480 + 24 + 216, 24), Rgb([31, 119, 180]));
        // The tokenizer panel has no metrics: only its axes.
        assert!(image.pixels().take(480).all(|p| *p == Rgb([255, 255, 255])));
    }
}
