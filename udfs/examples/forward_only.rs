//! The proxy's forward passes alone over a dataset's images: the baseline of
//! the pipeline-overhead ratio in `benches/pipeline.py` (`sieve score`'s
//! score stage divided by this).
//!
//! Decodes every image of a Parquet file first (not timed), then times the
//! forward passes over all of them in the micro-batches `sieve score` uses,
//! the whole sweep as one measurement (not the best of repeated calls on one
//! batch, which would flatter the model with warm caches). Prints one JSON
//! line: `{"rows", "seconds", "images_per_s", "threads"}`.
//!
//! Usage: `forward_only PROXY_DIR FILE.parquet [COLUMN] [THREADS]` (column
//! `img`, threads: all cores).

use std::fs::File;
use std::time::Instant;

use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rayon::prelude::*;
use sieve_proxy::artifact::Proxy;
use sieve_proxy::device::Placement;
use sieve_udfs::decode::{decode_image, ImageBytes};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [proxy_dir, file, rest @ ..] = args.as_slice() else {
        return Err("usage: forward_only PROXY_DIR FILE.parquet [COLUMN] [THREADS]".into());
    };
    let column = rest.first().map_or("img", String::as_str);
    if let Some(threads) = rest.get(1) {
        rayon::ThreadPoolBuilder::new().num_threads(threads.parse()?).build_global()?;
    }
    let proxy = Proxy::load(proxy_dir.as_ref(), &Placement::default())?;
    let size = proxy.image_size().ok_or("forward_only needs an image proxy")?;
    let pixels_per_image = size * size * 3;

    let mut pixels = Vec::new();
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(file)?)?.build()?;
    for batch in reader {
        let batch = batch?;
        let array = batch.column_by_name(column).ok_or_else(|| format!("{file} has no column {column}"))?;
        let bytes = ImageBytes::new(array)?;
        let start = pixels.len();
        pixels.resize(start + batch.num_rows() * pixels_per_image, 0);
        pixels[start..].par_chunks_mut(pixels_per_image).enumerate().try_for_each(|(i, px)| {
            decode_image(bytes.get(i).ok_or("a null image")?, size, px).map_err(|e| e.to_string())
        })?;
    }
    let rows = pixels.len() / pixels_per_image;

    let micro = proxy.image_micro_batch();
    let started = Instant::now();
    for chunk in pixels.chunks(micro * pixels_per_image) {
        proxy.launch_images(chunk, chunk.len() / pixels_per_image)?.read()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "rows": rows,
            "seconds": seconds,
            "images_per_s": rows as f64 / seconds,
            "threads": rayon::current_num_threads(),
        })
    );
    Ok(())
}
