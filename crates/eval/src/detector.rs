//! A detector for images of synthetic scenes that knows nothing of any model: it separates objects from the
//! background by colour, splits them into connected components, and names each one's colour and shape from its
//! pixels.
//!
//! 1. **Colour clustering.** Every pixel is explained as the background blended with one palette colour:
//!    `pixel ≈ background + α·(ink − background)`, α ∈ [0, 1] fitted per colour by projection. The colour with the
//!    smallest residual wins; the pixel is that colour's if α ≥ ½ and the residual is small, background if α < ½,
//!    and unexplained otherwise. Blending is how the renderer anti-aliases edges, so an edge pixel of a red disc
//!    (which is nearer to pink than to red in plain RGB distance) is still called red.
//! 2. **Connected components** of same-colour pixels (4-connected); components smaller than
//!    [`DetectorConfig::min_area`] of the image are noise.
//! 3. **Shape from geometry.** Within a component's neighbourhood the fitted α of its colour is a coverage map.
//!    Its sum is the object's area and its α-weighted centroid the object's centroid. For each shape, the area and
//!    centroid determine one candidate (size and bounding-square centre: a triangle's centroid lies a sixth of its
//!    height below the centre); the candidate is rasterised with the renderer's own coverage rule and compared with
//!    the coverage map by soft IoU. The best candidate names the shape, if its IoU reaches
//!    [`DetectorConfig::min_fit`].
//!
//! The detector is calibrated by tests on ground-truth renders at 64, 256 and 1024 px, on noise, and on renders
//! paired with the wrong caption (see `crate::compositional`).

use image::RgbImage;
use serde::Serialize;
use token_shuffle_data::scenes::{BACKGROUND, Colour, SceneObject, Shape, signed_distance};

/// Thresholds of the [`detect`] function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Smallest object, as a fraction of the image area. Default 0.002: the smallest object the scene grammar
    /// draws (a triangle of side 0.14) covers 0.0098, and at 64 px 0.002 is 8 pixels.
    pub min_area: f64,
    /// Largest distance (in 0–255 RGB units) between a pixel and its best blend for the pixel to count as ink.
    /// Default 60: palette blends are exact on renders; a decoded image strays some way from them.
    pub max_residual: f64,
    /// Smallest soft IoU between a component and its best shape candidate for it to be named. Default 0.6
    /// (renders reach > 0.9; a circle and a square of the same area overlap at IoU 0.83, so the best candidate is
    /// clear well before this threshold matters).
    pub min_fit: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            min_area: 0.002,
            max_residual: 60.0,
            min_fit: 0.6,
        }
    }
}

/// One detected object, in the scene's normalised coordinates (`[0, 1]²`, x right, y down).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Detection {
    /// Its shape.
    pub shape: Shape,
    /// Its colour.
    pub colour: Colour,
    /// Centre of its bounding square (as [`SceneObject::center`]).
    pub center: [f64; 2],
    /// Side of its bounding square (as [`SceneObject::size`]).
    pub size: f64,
    /// Soft IoU of its pixels with the named shape (1 = exact).
    pub fit: f64,
}

impl From<&SceneObject> for Detection {
    /// The ground truth as a perfect detection: what the judge sees for an oracle detector.
    fn from(object: &SceneObject) -> Self {
        Self {
            shape: object.shape,
            colour: object.colour,
            center: object.center,
            size: object.size,
            fit: 1.0,
        }
    }
}

/// How a pixel is explained.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ink {
    Background,
    /// Blended with palette colour `index` (into [`Colour::ALL`]) at coverage `alpha`.
    Colour {
        index: usize,
        alpha: f64,
    },
    /// Neither background nor a blend of one palette colour.
    Unexplained,
}

/// The coverage α ∈ [0, 1] of `ink` over the background that best explains `pixel`, and the residual distance.
fn blend(pixel: [u8; 3], ink: [u8; 3]) -> (f64, f64) {
    let towards: [f64; 3] = std::array::from_fn(|c| ink[c] as f64 - BACKGROUND[c] as f64);
    let offset: [f64; 3] = std::array::from_fn(|c| pixel[c] as f64 - BACKGROUND[c] as f64);
    let along =
        offset.iter().zip(&towards).map(|(a, b)| a * b).sum::<f64>() / towards.iter().map(|v| v * v).sum::<f64>();
    let alpha = along.clamp(0.0, 1.0);
    let residual = offset
        .iter()
        .zip(&towards)
        .map(|(o, t)| (o - alpha * t).powi(2))
        .sum::<f64>()
        .sqrt();
    (alpha, residual)
}

fn classify(pixel: [u8; 3], max_residual: f64) -> Ink {
    let (index, (alpha, residual)) = Colour::ALL
        .iter()
        .map(|c| blend(pixel, c.rgb()))
        .enumerate()
        .min_by(|a, b| a.1.1.total_cmp(&b.1.1))
        .expect("the palette is not empty");
    if alpha < 0.5 && residual <= max_residual {
        Ink::Background
    } else if residual <= max_residual {
        Ink::Colour { index, alpha }
    } else {
        Ink::Unexplained
    }
}

/// The objects in `image`, largest first.
pub fn detect(image: &RgbImage, config: &DetectorConfig) -> Vec<Detection> {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let inks: Vec<Ink> = image.pixels().map(|p| classify(p.0, config.max_residual)).collect();
    let colour_of = |i: usize| match inks[i] {
        Ink::Colour { index, .. } => Some(index),
        _ => None,
    };

    // Connected components of same-colour pixels, by flood fill.
    const NONE: u32 = u32::MAX;
    let mut component = vec![NONE; width * height];
    let mut members: Vec<Vec<usize>> = Vec::new();
    for start in 0..inks.len() {
        let Some(colour) = colour_of(start) else { continue };
        if component[start] != NONE {
            continue;
        }
        let id = members.len() as u32;
        let mut pixels = vec![start];
        component[start] = id;
        let mut next = 0;
        while next < pixels.len() {
            let i = pixels[next];
            next += 1;
            let (x, y) = (i % width, i / width);
            let neighbours = [
                (x > 0).then(|| i - 1),
                (x + 1 < width).then(|| i + 1),
                (y > 0).then(|| i - width),
                (y + 1 < height).then(|| i + width),
            ];
            for j in neighbours.into_iter().flatten() {
                if component[j] == NONE && colour_of(j) == Some(colour) {
                    component[j] = id;
                    pixels.push(j);
                }
            }
        }
        members.push(pixels);
    }

    let min_pixels = config.min_area * (width * height) as f64;
    let mut detections: Vec<Detection> = members
        .iter()
        .enumerate()
        .filter(|(_, pixels)| pixels.len() as f64 >= min_pixels)
        .filter_map(|(id, pixels)| {
            let colour = Colour::ALL[colour_of(pixels[0]).expect("components are of ink pixels")];
            fit_shape(image, &inks, &component, id as u32, pixels, colour, config.max_residual)
                .filter(|d| d.fit >= config.min_fit)
        })
        .collect();
    detections.sort_by(|a, b| b.size.total_cmp(&a.size));
    detections
}

/// A rectangle of pixels `[x0, x1) × [y0, y1)`.
#[derive(Debug, Clone, Copy)]
struct Region {
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

impl Region {
    fn around(pixels: &[usize], width: usize) -> Self {
        let empty = Region {
            x0: usize::MAX,
            y0: usize::MAX,
            x1: 0,
            y1: 0,
        };
        pixels.iter().fold(empty, |r, &i| {
            let (x, y) = (i % width, i / width);
            Region {
                x0: r.x0.min(x),
                y0: r.y0.min(y),
                x1: r.x1.max(x + 1),
                y1: r.y1.max(y + 1),
            }
        })
    }

    /// This region grown by `margin` pixels on every side, within a `width × height` image.
    fn grow(self, margin: usize, width: usize, height: usize) -> Self {
        Region {
            x0: self.x0.saturating_sub(margin),
            y0: self.y0.saturating_sub(margin),
            x1: (self.x1 + margin).min(width),
            y1: (self.y1 + margin).min(height),
        }
    }

    /// The smallest region holding this one and the normalised box `[x0, y0, x1, y1]`, within the image.
    fn cover(self, bbox: [f64; 4], width: usize, height: usize) -> Self {
        let px = |v: f64, side: usize| (v * side as f64).floor().clamp(0.0, side as f64) as usize;
        Region {
            x0: self.x0.min(px(bbox[0], width)),
            y0: self.y0.min(px(bbox[1], height)),
            x1: self.x1.max((px(bbox[2], width) + 1).min(width)),
            y1: self.y1.max((px(bbox[3], height) + 1).min(height)),
        }
    }
}

/// Area factor of each shape: area = factor · side².
fn area_factor(shape: Shape) -> f64 {
    match shape {
        Shape::Circle => std::f64::consts::FRAC_PI_4,
        Shape::Square => 1.0,
        Shape::Triangle => 0.5,
    }
}

/// Names the shape of component `id` by fitting each shape to its coverage map.
fn fit_shape(
    image: &RgbImage,
    inks: &[Ink],
    component: &[u32],
    id: u32,
    pixels: &[usize],
    colour: Colour,
    max_residual: f64,
) -> Option<Detection> {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let ink = colour.rgb();
    // Coverage of this colour at a pixel: the component's own pixels, and the anti-aliased fringe around it
    // (background or unexplained pixels that are a blend of this colour), but never another object's pixels.
    let coverage = |i: usize| -> f64 {
        if component[i] == id {
            return match inks[i] {
                Ink::Colour { alpha, .. } => alpha,
                _ => 0.0,
            };
        }
        if component[i] != u32::MAX {
            return 0.0;
        }
        let (alpha, residual) = blend(image.as_raw()[3 * i..3 * i + 3].try_into().expect("3 channels"), ink);
        if residual <= max_residual { alpha.min(0.5) } else { 0.0 }
    };
    let sums = |region: Region| {
        let (mut area, mut sx, mut sy) = (0.0, 0.0, 0.0);
        for y in region.y0..region.y1 {
            for x in region.x0..region.x1 {
                let a = coverage(y * width + x);
                area += a;
                sx += a * (x as f64 + 0.5);
                sy += a * (y as f64 + 0.5);
            }
        }
        (area, sx, sy)
    };
    let own = Region::around(pixels, width);
    let near = own.grow(2, width, height);
    let (area, sx, sy) = sums(near);
    if area <= 0.0 {
        return None;
    }
    let (w, h) = (width as f64, height as f64);
    let centroid = [sx / area / w, sy / area / h];
    let normalised_area = area / (w * h);

    let candidates = Shape::ALL.map(|shape| {
        let size = (normalised_area / area_factor(shape)).sqrt();
        let center = match shape {
            Shape::Triangle => [centroid[0], centroid[1] - size / 6.0],
            _ => centroid,
        };
        SceneObject {
            shape,
            colour,
            center,
            size,
        }
    });
    let region = candidates
        .iter()
        .fold(near, |r, c| r.cover(c.bbox(), width, height))
        .grow(2, width, height);
    let coverages: Vec<f64> = (region.y0..region.y1)
        .flat_map(|y| (region.x0..region.x1).map(move |x| (x, y)))
        .map(|(x, y)| coverage(y * width + x))
        .collect();
    let fit = |candidate: &SceneObject| {
        let (mut overlap, mut union) = (0.0, 0.0);
        let mut values = coverages.iter();
        for y in region.y0..region.y1 {
            for x in region.x0..region.x1 {
                let p = [(x as f64 + 0.5) / w, (y as f64 + 0.5) / h];
                let model = (0.5 - signed_distance(candidate, p) * w).clamp(0.0, 1.0);
                let seen = *values.next().expect("one value per pixel");
                overlap += model.min(seen);
                union += model.max(seen);
            }
        }
        if union > 0.0 { overlap / union } else { 0.0 }
    };
    candidates
        .iter()
        .map(|c| (c, fit(c)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, fit)| Detection {
            shape: c.shape,
            colour,
            center: c.center,
            size: c.size,
            fit,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use token_shuffle_data::scenes::render_objects;

    fn object(shape: Shape, colour: Colour, center: [f64; 2], size: f64) -> SceneObject {
        SceneObject {
            shape,
            colour,
            center,
            size,
        }
    }

    #[test]
    fn an_edge_pixel_is_named_by_its_blend_not_its_nearest_colour() {
        // Half red over the background: nearer to pink in RGB distance, but an exact blend of red.
        let red = Colour::Red.rgb();
        let half: [u8; 3] = std::array::from_fn(|c| ((red[c] as u16 + BACKGROUND[c] as u16) / 2) as u8);
        let nearest = Colour::ALL
            .iter()
            .min_by_key(|c| {
                c.rgb()
                    .iter()
                    .zip(&half)
                    .map(|(a, b)| (*a as i32 - *b as i32).pow(2))
                    .sum::<i32>()
            })
            .unwrap();
        assert_eq!(
            *nearest,
            Colour::Pink,
            "the premise: plain nearest-colour gets it wrong"
        );
        match classify(half, 60.0) {
            Ink::Colour { index, alpha } => {
                assert_eq!(Colour::ALL[index], Colour::Red);
                assert!((alpha - 0.5).abs() < 0.01, "{alpha}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(classify(BACKGROUND, 60.0), Ink::Background);
        assert_eq!(classify([0, 0, 0], 60.0), Ink::Unexplained);
    }

    #[test]
    fn finds_each_shape_colour_and_place() {
        let objects = [
            object(Shape::Circle, Colour::Red, [0.25, 0.25], 0.3),
            object(Shape::Square, Colour::Cyan, [0.75, 0.3], 0.25),
            object(Shape::Triangle, Colour::Purple, [0.4, 0.75], 0.3),
        ];
        for resolution in [64, 256] {
            let found = detect(&render_objects(&objects, resolution), &DetectorConfig::default());
            assert_eq!(found.len(), 3, "{resolution} px: {found:?}");
            for truth in &objects {
                let d = found
                    .iter()
                    .find(|d| d.shape == truth.shape)
                    .unwrap_or_else(|| panic!("{truth:?} missed: {found:?}"));
                assert_eq!(d.colour, truth.colour);
                let tolerance = 1.0 / resolution as f64;
                assert!(
                    (d.center[0] - truth.center[0]).abs() < tolerance
                        && (d.center[1] - truth.center[1]).abs() < tolerance,
                    "{d:?} vs {truth:?}"
                );
                assert!((d.size - truth.size).abs() < 2.0 * tolerance, "{d:?} vs {truth:?}");
                assert!(d.fit > 0.9, "{d:?}");
            }
        }
    }

    #[test]
    fn specks_and_blank_images_hold_no_objects() {
        let config = DetectorConfig::default();
        assert!(detect(&RgbImage::from_pixel(64, 64, image::Rgb(BACKGROUND)), &config).is_empty());
        // A 2×2 red speck is 0.1% of a 64 px image: below min_area.
        let mut speck = RgbImage::from_pixel(64, 64, image::Rgb(BACKGROUND));
        for (x, y) in [(10, 10), (11, 10), (10, 11), (11, 11)] {
            speck.put_pixel(x, y, image::Rgb(Colour::Red.rgb()));
        }
        assert!(detect(&speck, &config).is_empty());
        // Black is no palette colour: nothing, however large.
        assert!(detect(&RgbImage::from_pixel(64, 64, image::Rgb([0, 0, 0])), &config).is_empty());
    }
}
