//! Decoding the input column: images (PNG or JPEG, in any of the Arrow
//! layouts sieve accepts) into fixed-size RGB pixels for the proxy, and text
//! into `&str`. A row that cannot be decoded gets a [`RowError`] saying why;
//! decoding never panics.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StructArray};
use datafusion::arrow::datatypes::DataType;
use image::imageops::FilterType;
use sieve_schemas::RowErrorReason;

use crate::error::{Result, UdfError};

/// Why one row has no scores: a [`RowErrorReason`] and what it found. The
/// `error` column holds [`RowError::error_text`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    /// The input value is null.
    #[error("null input")]
    NullInput,
    /// The image bytes are empty.
    #[error("empty image")]
    EmptyImage,
    /// The bytes are not a decodable PNG or JPEG.
    #[error("undecodable image: {0}")]
    Undecodable(String),
    /// The text is empty or only whitespace.
    #[error("empty text")]
    EmptyText,
    /// A binary text column holds bytes that are not UTF-8.
    #[error("text is not UTF-8")]
    NotUtf8,
    /// The label is null.
    #[error("null label")]
    NullLabel,
    /// The label is not a class of the proxy.
    #[error("label {label} outside 0..{classes}")]
    LabelOutOfRange {
        /// The label found.
        label: i64,
        /// The number of classes the proxy knows.
        classes: usize,
    },
}

impl RowError {
    /// Its reason, without the per-row detail.
    pub fn reason(&self) -> RowErrorReason {
        match self {
            RowError::NullInput => RowErrorReason::NullInput,
            RowError::EmptyImage => RowErrorReason::EmptyImage,
            RowError::Undecodable(_) => RowErrorReason::UndecodableImage,
            RowError::EmptyText => RowErrorReason::EmptyText,
            RowError::NotUtf8 => RowErrorReason::NotUtf8,
            RowError::NullLabel => RowErrorReason::NullLabel,
            RowError::LabelOutOfRange { .. } => RowErrorReason::LabelOutOfRange,
        }
    }

    /// The text of the row's `error` column.
    pub fn error_text(&self) -> String {
        self.reason().error_text(&self.to_string())
    }
}

/// Read access to the encoded bytes of an image column, whatever its layout.
pub struct ImageBytes<'a> {
    array: &'a dyn Array,
    /// For `struct<bytes, path>`: the `bytes` child; the struct's own nulls
    /// are checked on `array`.
    bytes: Option<&'a ArrayRef>,
}

impl<'a> ImageBytes<'a> {
    /// Wraps an image column; errors when its type carries no bytes.
    pub fn new(array: &'a ArrayRef) -> Result<Self> {
        match array.data_type() {
            DataType::Struct(_) => {
                let s: &StructArray = array.as_struct();
                let bytes = s
                    .column_by_name("bytes")
                    .ok_or_else(|| UdfError::InputType { found: array.data_type().to_string() })?;
                Ok(Self { array: array.as_ref(), bytes: Some(bytes) })
            }
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
                Ok(Self { array: array.as_ref(), bytes: None })
            }
            other => Err(UdfError::InputType { found: other.to_string() }),
        }
    }

    /// The bytes of row `i`, or `None` when the row (or its bytes) is null.
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        if self.array.is_null(i) {
            return None;
        }
        binary_value(self.bytes.map_or(self.array, |b| b.as_ref()), i)
    }
}

/// Row `i` of a Binary, LargeBinary or BinaryView array; `None` when null.
fn binary_value(array: &dyn Array, i: usize) -> Option<&[u8]> {
    if array.is_null(i) {
        return None;
    }
    match array.data_type() {
        DataType::Binary => Some(array.as_binary::<i32>().value(i)),
        DataType::LargeBinary => Some(array.as_binary::<i64>().value(i)),
        DataType::BinaryView => Some(array.as_binary_view().value(i)),
        _ => None,
    }
}

/// The raw bytes of row `i` of a text or binary column; `None` when null
/// (or when the column is neither).
pub fn text_bytes(array: &dyn Array, i: usize) -> Option<&[u8]> {
    if array.is_null(i) {
        return None;
    }
    match array.data_type() {
        DataType::Utf8 => Some(array.as_string::<i32>().value(i).as_bytes()),
        DataType::LargeUtf8 => Some(array.as_string::<i64>().value(i).as_bytes()),
        DataType::Utf8View => Some(array.as_string_view().value(i).as_bytes()),
        _ => binary_value(array, i),
    }
}

/// Row `i` of a text column (Utf8, LargeUtf8, Utf8View, or Binary checked
/// for UTF-8). Errors on null, non-UTF-8 and empty text.
pub fn text_value(array: &dyn Array, i: usize) -> Result<&str, RowError> {
    let bytes = text_bytes(array, i).ok_or(RowError::NullInput)?;
    let text = std::str::from_utf8(bytes).map_err(|_| RowError::NotUtf8)?;
    if text.trim().is_empty() {
        return Err(RowError::EmptyText);
    }
    Ok(text)
}

/// Decodes PNG or JPEG `bytes` into `size` x `size` RGB pixels (HWC, u8)
/// written to `out` (length `size * size * 3`). Grayscale, alpha and 16-bit
/// images are converted to 8-bit RGB; other sizes are resized (bilinear),
/// squashing non-square images rather than cropping away their content.
pub fn decode_image(bytes: &[u8], size: usize, out: &mut [u8]) -> Result<(), RowError> {
    if bytes.is_empty() {
        return Err(RowError::EmptyImage);
    }
    let image = image::load_from_memory(bytes).map_err(|e| RowError::Undecodable(e.to_string()))?;
    let rgb = image.to_rgb8();
    let side = size as u32;
    let rgb = if rgb.dimensions() == (side, side) {
        rgb
    } else {
        image::imageops::resize(&rgb, side, side, FilterType::Triangle)
    };
    out.copy_from_slice(rgb.as_raw());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        BinaryArray, BinaryViewArray, LargeBinaryArray, LargeStringArray, StringArray, StringViewArray,
    };
    use datafusion::arrow::datatypes::Field;
    use std::io::Cursor;
    use std::sync::Arc;

    fn png(width: u32, height: u32, color: image::ColorType) -> Vec<u8> {
        let img = image::DynamicImage::new(width, height, color);
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    #[test]
    fn any_png_becomes_rgb_of_the_proxy_size() {
        let mut out = vec![0u8; 32 * 32 * 3];
        for (w, h, c) in [
            (32, 32, image::ColorType::Rgb8),
            (17, 40, image::ColorType::L8),
            (64, 64, image::ColorType::Rgba8),
            (8, 8, image::ColorType::Rgb16),
        ] {
            decode_image(&png(w, h, c), 32, &mut out).unwrap();
        }
    }

    #[test]
    fn bad_bytes_are_row_errors_not_panics() {
        let mut out = vec![0u8; 32 * 32 * 3];
        assert_eq!(decode_image(&[], 32, &mut out), Err(RowError::EmptyImage));
        let truncated = &png(32, 32, image::ColorType::Rgb8)[..40];
        assert!(matches!(decode_image(truncated, 32, &mut out), Err(RowError::Undecodable(_))));
        assert!(matches!(decode_image(b"not an image", 32, &mut out), Err(RowError::Undecodable(_))));
    }

    #[test]
    fn text_errors_name_their_reason() {
        let s = StringArray::from(vec![Some("fine"), Some("  "), None]);
        assert_eq!(text_value(&s, 0), Ok("fine"));
        assert_eq!(text_value(&s, 1), Err(RowError::EmptyText));
        assert_eq!(text_value(&s, 2), Err(RowError::NullInput));
        let b = BinaryArray::from(vec![&b"ok"[..], &[0xff, 0xfe][..]]);
        assert_eq!(text_value(&b, 0), Ok("ok"));
        assert_eq!(text_value(&b, 1), Err(RowError::NotUtf8));
    }

    #[test]
    fn image_bytes_reads_every_binary_layout() {
        let values = vec![Some(&b"ab"[..]), None];
        let layouts: Vec<ArrayRef> = vec![
            Arc::new(BinaryArray::from(values.clone())),
            Arc::new(LargeBinaryArray::from(values.clone())),
            Arc::new(BinaryViewArray::from(values.clone())),
            Arc::new(StructArray::from(vec![(
                Arc::new(Field::new("bytes", DataType::Binary, true)),
                Arc::new(BinaryArray::from(values)) as ArrayRef,
            )])),
        ];
        for a in &layouts {
            let bytes = ImageBytes::new(a).unwrap();
            assert_eq!(bytes.get(0), Some(&b"ab"[..]), "{}", a.data_type());
            assert_eq!(bytes.get(1), None, "{}", a.data_type());
        }
        let text: ArrayRef = Arc::new(StringArray::from(vec!["x"]));
        assert!(ImageBytes::new(&text).is_err());
    }

    #[test]
    fn text_reads_every_string_layout() {
        let layouts: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["a b"])),
            Arc::new(LargeStringArray::from(vec!["a b"])),
            Arc::new(StringViewArray::from(vec!["a b"])),
        ];
        for a in &layouts {
            assert_eq!(text_value(a.as_ref(), 0), Ok("a b"), "{}", a.data_type());
        }
    }
}
