//! Turning image files into model inputs: decode, centre-crop, resize, and scale to `[-1, 1]`.

use image::imageops::FilterType;
use image::{DynamicImage, Rgb, RgbImage, Rgba};

/// The colour transparent pixels are composited over (Twemoji and other PNGs with alpha).
pub const MATTE: [u8; 3] = [255, 255, 255];

/// Decodes an image file's bytes and makes it a `resolution × resolution` RGB image: composited over
/// [`MATTE`], centre-cropped to a square, resized with a Lanczos-3 filter (Catmull-Rom when enlarging).
///
/// # Errors
/// The decoder's message when the bytes are not a readable PNG, JPEG or WebP image, or when it has no pixels.
pub fn decode_square(bytes: &[u8], resolution: u32) -> Result<RgbImage, String> {
    let decoded = image::load_from_memory(bytes).map_err(|e| e.to_string())?;
    if decoded.width() == 0 || decoded.height() == 0 {
        return Err("the image has no pixels".into());
    }
    Ok(square(&decoded, resolution))
}

/// Centre-crops and resizes an already decoded image (see [`decode_square`]).
pub fn square(image: &DynamicImage, resolution: u32) -> RgbImage {
    let rgb = flatten_alpha(image);
    let side = rgb.width().min(rgb.height());
    let (x, y) = ((rgb.width() - side) / 2, (rgb.height() - side) / 2);
    let cropped = image::imageops::crop_imm(&rgb, x, y, side, side).to_image();
    if side == resolution {
        return cropped;
    }
    let filter = if side > resolution {
        FilterType::Lanczos3
    } else {
        FilterType::CatmullRom
    };
    image::imageops::resize(&cropped, resolution, resolution, filter)
}

fn flatten_alpha(image: &DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.to_rgb8();
    }
    let rgba = image.to_rgba8();
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let Rgba([r, g, b, a]) = *rgba.get_pixel(x, y);
        let alpha = a as f32 / 255.0;
        let blend = |c: u8, m: u8| (c as f32 * alpha + m as f32 * (1.0 - alpha)).round() as u8;
        Rgb([blend(r, MATTE[0]), blend(g, MATTE[1]), blend(b, MATTE[2])])
    })
}

/// An RGB image as channel-first f32 values in `[-1, 1]` (`[3, H, W]`, row-major), the model's pixel layout.
pub fn to_chw_signed(image: &RgbImage) -> Vec<f32> {
    let (w, h) = image.dimensions();
    let plane = (w * h) as usize;
    let mut out = vec![0.0; 3 * plane];
    for (i, pixel) in image.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = pixel.0[c] as f32 / 127.5 - 1.0;
        }
    }
    out
}

/// The inverse of [`to_chw_signed`], clamping to the valid range: model outputs back to an image.
pub fn from_chw_signed(values: &[f32], width: u32, height: u32) -> RgbImage {
    let plane = (width * height) as usize;
    assert_eq!(values.len(), 3 * plane, "expected [3, {height}, {width}] values");
    RgbImage::from_fn(width, height, |x, y| {
        let i = (y * width + x) as usize;
        let channel = |c: usize| ((values[c * plane + i] + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8;
        Rgb([channel(0), channel(1), channel(2)])
    })
}

/// Lays out equally sized images in a grid of `columns` columns, row by row, on a white background.
///
/// # Panics
/// If the images differ in size or `columns` is 0.
pub fn tile(images: &[RgbImage], columns: u32) -> RgbImage {
    assert!(columns > 0, "a grid needs at least one column");
    let Some(first) = images.first() else {
        return RgbImage::new(0, 0);
    };
    let (w, h) = first.dimensions();
    let rows = (images.len() as u32).div_ceil(columns);
    let mut grid = RgbImage::from_pixel(columns.min(images.len() as u32) * w, rows * h, Rgb(MATTE));
    for (i, image) in images.iter().enumerate() {
        assert_eq!(
            image.dimensions(),
            (w, h),
            "every image of a grid must have the same size"
        );
        image::imageops::replace(
            &mut grid,
            image,
            ((i as u32 % columns) * w).into(),
            ((i as u32 / columns) * h).into(),
        );
    }
    grid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_fill_rows_left_to_right() {
        let colour = |v: u8| RgbImage::from_pixel(2, 3, Rgb([v, v, v]));
        let grid = tile(&[colour(1), colour(2), colour(3)], 2);
        assert_eq!(grid.dimensions(), (4, 6));
        assert_eq!(grid.get_pixel(0, 0).0, [1; 3]);
        assert_eq!(grid.get_pixel(3, 2).0, [2; 3]);
        assert_eq!(grid.get_pixel(1, 5).0, [3; 3]);
        assert_eq!(grid.get_pixel(3, 5).0, MATTE, "the empty cell stays white");
    }

    fn png_bytes(image: &DynamicImage) -> Vec<u8> {
        let mut bytes = std::io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
        bytes.into_inner()
    }

    #[test]
    fn crops_the_centre_square_and_resizes() {
        // A 40×20 image: red left quarter, green middle half, blue right quarter. The centre crop is the
        // middle 20×20: all green.
        let image = RgbImage::from_fn(40, 20, |x, _| match x {
            0..10 => Rgb([255, 0, 0]),
            10..30 => Rgb([0, 255, 0]),
            _ => Rgb([0, 0, 255]),
        });
        let square = decode_square(&png_bytes(&DynamicImage::ImageRgb8(image)), 8).unwrap();
        assert_eq!(square.dimensions(), (8, 8));
        assert!(
            square.pixels().all(|p| p.0 == [0, 255, 0]),
            "{:?}",
            square.get_pixel(0, 0)
        );
    }

    #[test]
    fn transparent_pixels_become_the_matte() {
        let image = image::RgbaImage::from_fn(4, 4, |x, _| {
            if x < 2 {
                Rgba([0, 0, 0, 0])
            } else {
                Rgba([10, 20, 30, 255])
            }
        });
        let square = decode_square(&png_bytes(&DynamicImage::ImageRgba8(image)), 4).unwrap();
        assert_eq!(square.get_pixel(0, 0).0, MATTE);
        assert_eq!(square.get_pixel(3, 3).0, [10, 20, 30]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_square(b"not an image", 8).is_err());
        let mut truncated = png_bytes(&DynamicImage::ImageRgb8(RgbImage::new(16, 16)));
        truncated.truncate(truncated.len() / 2);
        assert!(decode_square(&truncated, 8).is_err());
    }

    #[test]
    fn signed_pixels_round_trip_and_are_channel_first() {
        let image = RgbImage::from_fn(3, 2, |x, y| Rgb([(x * 80) as u8, (y * 200) as u8, 255]));
        let values = to_chw_signed(&image);
        assert_eq!(values[0], -1.0); // red of (0, 0)
        assert_eq!(values[6 + 3], 200.0 / 127.5 - 1.0); // green plane, pixel (0, 1)
        assert_eq!(values[12], 1.0); // blue of (0, 0)
        assert_eq!(from_chw_signed(&values, 3, 2), image);
    }
}
