//! Fuzz target: arbitrary bytes become a batch of image or text rows with
//! labels, which are decoded and scored by a small proxy exactly as the
//! `proxy_scores` UDF does. Any panic is a bug; bad rows must come back as
//! row errors.
//!
//! Input layout: byte 0 picks images (even) or text (odd), byte 1 the labels;
//! the rest is split into rows at each `0xFF 0x00` pair.
#![no_main]

use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{ArrayRef, BinaryArray, Int64Array};
use libfuzzer_sys::fuzz_target;
use sieve_proxy::device::Placement;
use sieve_proxy::fasttext::{FastText, FastTextConfig};
use sieve_proxy::image_trainer::{ImageTrainer, Normalize};
use sieve_proxy::resnet::ResNetConfig;
use sieve_proxy::sgd::SgdConfig;
use sieve_proxy::artifact::{Architecture, Proxy, ProxyMeta, WEIGHTS_FILE};

const CLASSES: usize = 3;

fn meta(preset: &str, architecture: Architecture, normalize: Option<Normalize>) -> ProxyMeta {
    let classes = (0..CLASSES).map(|c| c.to_string()).collect();
    ProxyMeta::new(preset, architecture, classes, normalize, Vec::new(), serde_json::Value::Null)
}

/// An untrained ResNet-8 and fastText proxy, saved and loaded as sieve does.
fn proxies() -> &'static (Proxy, Proxy) {
    static PROXIES: OnceLock<(Proxy, Proxy)> = OnceLock::new();
    PROXIES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let image_dir = dir.join("image");
        std::fs::create_dir_all(&image_dir).unwrap();
        let mut cfg = ResNetConfig::resnet20(CLASSES);
        cfg.depth = 8;
        cfg.width = 4;
        let trainer = ImageTrainer::new(cfg.clone(), SgdConfig::default(), 0, &Placement::default().device).unwrap();
        trainer.save(&image_dir.join(WEIGHTS_FILE)).unwrap();
        meta("resnet8", Architecture::Resnet(cfg), Some(trainer.normalize().clone())).write(&image_dir).unwrap();
        let text_dir = dir.join("text");
        std::fs::create_dir_all(&text_dir).unwrap();
        let cfg = FastTextConfig { buckets: 1 << 10, dim: 8, ..FastTextConfig::new(CLASSES) };
        FastText::new(cfg.clone(), 0).unwrap().save(&text_dir.join(WEIGHTS_FILE)).unwrap();
        meta("fasttext", Architecture::Fasttext(cfg), None).write(&text_dir).unwrap();
        (Proxy::load(&image_dir, &Default::default()).unwrap(), Proxy::load(&text_dir, &Default::default()).unwrap())
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Some((&label_seed, payload)) = rest.split_first() else { return };
    let mut rows: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    for i in 0..payload.len().saturating_sub(1) {
        if payload[i] == 0xFF && payload[i + 1] == 0x00 && rows.len() < 15 {
            rows.push(&payload[start..i]);
            start = i + 2;
        }
    }
    rows.push(&payload[start.min(payload.len())..]);
    let labels: Int64Array = (0..rows.len())
        .map(|i| match label_seed.rotate_left(i as u32) % 5 {
            4 => None,
            k => Some(k as i64 - 1), // -1 (out of range) .. 2
        })
        .collect();
    let input: ArrayRef = Arc::new(BinaryArray::from(rows));
    let (image, text) = proxies();
    let proxy = if mode % 2 == 0 { image } else { text };
    let predictions = sieve_udfs::infer::predict(proxy, &input, Some(&labels)).expect("batch-level errors only for bad proxies");
    assert_eq!(predictions.len(), input.len());
    let mut probs = vec![0.0f32; CLASSES];
    for p in predictions.into_iter().flatten() {
        let scores = sieve_selection::scores::row_scores(&p.logits, p.label, &mut probs);
        assert!(scores.entropy.is_finite());
    }
});
