//! Drawing PNGs with plotters, shared by `eval.png` and the plots of
//! `report.html`: the font loader, the colour palette and one function that
//! draws into an RGB buffer and encodes it as PNG. What each plot shows
//! lives with its report ([`crate::eval::report`], [`crate::report::plots`]).

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{PipelineError, Result};

/// Fonts tried for the plots' text, in order (`SIEVE_FONT` first).
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Loads a TrueType font for plotters once per process, as `sans-serif`.
/// Errors (with what was tried) when no font is found: plotters cannot draw
/// text without one.
pub(crate) fn font() -> Result<()> {
    static LOADED: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| {
            let candidates: Vec<String> =
                std::env::var("SIEVE_FONT").into_iter().chain(FONTS.iter().map(|s| s.to_string())).collect();
            let bytes = candidates.iter().find_map(|p| std::fs::read(p).ok()).ok_or_else(|| {
                format!(
                    "no TrueType font (tried {}; set SIEVE_FONT or install fonts-dejavu-core)",
                    candidates.join(", ")
                )
            })?;
            plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
                .map_err(|_| "the font file is not a TrueType font".to_string())
        })
        .clone()
        .map_err(PipelineError::Usage)
}

/// The plots' colours (matplotlib's `tab10`), used in order.
pub(crate) const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// What a drawing closure returns: plotters' errors, boxed.
pub(crate) type Drawn = std::result::Result<(), Box<dyn std::error::Error>>;

/// The drawing area [`png`] hands its closure: a white `w` x `h` bitmap.
pub(crate) type Canvas<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Draws a `w` x `h` picture with `draw` on a white background and returns
/// it encoded as PNG. `name` says what is drawn, in errors.
pub(crate) fn png(name: &str, (w, h): (u32, u32), draw: impl FnOnce(&Canvas<'_>) -> Drawn) -> Result<Vec<u8>> {
    font()?;
    let draw_err = |e: &dyn std::fmt::Display| PipelineError::Environment(format!("drawing {name}: {e}"));
    let mut pixels = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        draw(&root).map_err(|e| draw_err(&e))?;
        root.present().map_err(|e| draw_err(&e))?;
    }
    let mut bytes = Vec::new();
    image::write_buffer_with_format(
        &mut std::io::Cursor::new(&mut bytes),
        &pixels,
        w,
        h,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .map_err(|e| draw_err(&e))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_draws_a_decodable_picture_of_the_asked_size() {
        if font().is_err() {
            eprintln!("skipped: no font for plotters");
            return;
        }
        let bytes = png("a square", (40, 30), |root| {
            root.draw(&Rectangle::new([(5, 5), (15, 15)], PALETTE[0].filled()))?;
            Ok(())
        })
        .unwrap();
        let image = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), (40, 30));
        assert_eq!(image.get_pixel(10, 10).0, [31, 119, 180]);
        assert_eq!(image.get_pixel(30, 20).0, [255, 255, 255]);
    }
}
