//! The train stage: stream the training split for a number of epochs,
//! train the proxy (a CIFAR ResNet or a fastText classifier), measure its
//! held-out accuracy, and save it as a proxy directory (`model.safetensors`
//! and `proxy.json`). It trains by the plan's recipe
//! ([`sieve_proxy::recipe`]), which `proxy.json` records.

use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use sieve_proxy::artifact::{EpochRecord, Proxy, ProxyMeta, WEIGHTS_FILE};
use sieve_proxy::device::Placement;
use sieve_proxy::fasttext::FastText;
use sieve_proxy::image_trainer::{ImageTrainer, Normalize};
use sieve_proxy::recipe::{ImageRecipe, Recipe, TextRecipe};
use sieve_udfs::decode::decode_image;

use crate::dynamics::{self, Dynamics};
use crate::error::{io_err, Result};
use crate::examples::{self, for_each_shuffled, Example};
use crate::input::InputFiles;
use crate::plan::{DatasetPlan, RunPlan, TrainPlan};
use crate::session::Runtime;

/// Validates a label against the classes.
fn class_of(label: Option<i64>, classes: usize) -> Option<usize> {
    label.filter(|&l| l >= 0 && (l as usize) < classes).map(|l| l as usize)
}

/// Trains the proxy for `dataset` and writes it to `dir`.
pub fn run(dataset: &DatasetPlan, plan: &TrainPlan, run: &RunPlan, rt: &Runtime, dir: &Path) -> Result<ProxyMeta> {
    rt.install(|| train_on_threads(dataset, plan, run, rt.placement(), dir))
}

/// [`run`], on the threads it runs on.
fn train_on_threads(
    dataset: &DatasetPlan,
    plan: &TrainPlan,
    run: &RunPlan,
    placement: &Placement,
    dir: &Path,
) -> Result<ProxyMeta> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let started = Instant::now();
    let mut meta = match &plan.recipe {
        Recipe::Resnet(recipe) => train_image(dataset, plan, recipe, run, &placement.device, dir)?,
        Recipe::Fasttext(recipe) => train_text(dataset, plan, recipe, run, dir)?,
    };
    meta.seconds = started.elapsed().as_secs_f64();
    meta.write(dir)?;
    if let Some(heldout) = &dataset.heldout {
        let proxy = Proxy::load(dir, placement)?;
        meta.heldout_accuracy = Some(accuracy(&proxy, dataset, heldout, run.quiet)?);
        meta.write(dir)?;
    }
    Ok(meta)
}

/// Counters of one epoch.
#[derive(Default)]
struct EpochStats {
    loss_sum: f64,
    correct: u64,
    seen: u64,
    skipped: u64,
}

impl EpochStats {
    fn record(&self, epoch: usize, lr: f64, started: Instant) -> EpochRecord {
        let seen = self.seen.max(1) as f64;
        EpochRecord {
            epoch,
            loss: self.loss_sum / seen,
            accuracy: self.correct as f64 / seen,
            lr,
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}

fn new_meta(
    plan: &TrainPlan,
    dataset: &DatasetPlan,
    normalize: Option<Normalize>,
    config: serde_json::Value,
) -> ProxyMeta {
    let files = dataset.train.files.iter().map(|f| f.path.clone()).collect();
    ProxyMeta::new(&plan.preset, plan.recipe.architecture(), dataset.classes.clone(), normalize, files, config)
}

/// `proxy.json`'s `train_config`: the recipe's fields, the seed, and `extra`.
fn train_config(plan: &TrainPlan, extra: serde_json::Value) -> serde_json::Value {
    let mut config = serde_json::to_value(&plan.recipe).expect("a recipe serializes");
    let fields = config.as_object_mut().expect("a recipe is an object");
    fields.insert("seed".into(), plan.seed.into());
    fields.extend(extra.as_object().into_iter().flatten().map(|(k, v)| (k.clone(), v.clone())));
    config
}

fn train_image(
    dataset: &DatasetPlan,
    plan: &TrainPlan,
    recipe: &ImageRecipe,
    run: &RunPlan,
    device: &Device,
    dir: &Path,
) -> Result<ProxyMeta> {
    let classes = dataset.classes.len();
    let cfg = &recipe.network;
    let (epochs, batch) = (recipe.epochs, recipe.batch_size);
    let config = train_config(plan, serde_json::json!({"device": sieve_proxy::device::describe(device)}));
    let mut trainer = ImageTrainer::new(cfg.clone(), recipe.sgd.clone(), plan.seed, device)?
        .with_normalize(recipe.normalize.clone())
        .with_augment(recipe.augment);
    let mut meta = new_meta(plan, dataset, Some(recipe.normalize.clone()), config);
    let rows = dataset.train.total_rows();
    let total_steps = epochs as u64 * dataset.train_rows().div_ceil(batch as u64);
    let side = cfg.image_size;
    let pixels_per_image = side * side * 3;
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed ^ 0x5eed);
    let bar = crate::progress::bar("train", total_steps, "steps", run.quiet);
    let mut step = 0u64;
    let mut pixels = vec![0u8; batch * pixels_per_image];
    let mut labels: Vec<u32> = Vec::with_capacity(batch);
    let mut positions: Vec<u64> = Vec::with_capacity(batch);
    let mut dynamics = Dynamics::new(rows as usize, epochs, classes);
    for epoch in 1..=epochs {
        let started = Instant::now();
        let mut stats = EpochStats::default();
        let mut train_batch =
            |pixels: &[u8], labels: &mut Vec<u32>, positions: &mut Vec<u64>, stats: &mut EpochStats| -> Result<()> {
                // BatchNorm needs two examples to have a variance.
                if labels.len() >= 2 {
                    let out = trainer.step(pixels, labels, recipe.lr_at(step, total_steps))?;
                    for ((logits, &y), &pos) in
                        out.logits.chunks_exact(classes).zip(labels.iter()).zip(positions.iter())
                    {
                        dynamics.record(pos, epoch, logits, y as usize);
                    }
                    stats.loss_sum += out.loss as f64 * labels.len() as f64;
                    stats.correct += out.correct as u64;
                    stats.seen += labels.len() as u64;
                    step += 1;
                    bar.inc(1);
                }
                labels.clear();
                positions.clear();
                Ok(())
            };
        for_each_shuffled(dataset, recipe.shuffle_buffer, &mut rng, |ex: Example| {
            let k = labels.len();
            let slot = &mut pixels[k * pixels_per_image..(k + 1) * pixels_per_image];
            let decoded = ex.payload.as_deref().map(|b| decode_image(b, side, slot));
            match (decoded, class_of(ex.label, classes)) {
                (Some(Ok(())), Some(y)) => {
                    labels.push(y as u32);
                    positions.push(ex.pos);
                }
                _ => stats.skipped += 1,
            }
            if labels.len() == batch {
                train_batch(&pixels, &mut labels, &mut positions, &mut stats)?;
            }
            Ok(())
        })?;
        let n = labels.len();
        train_batch(&pixels[..n * pixels_per_image], &mut labels, &mut positions, &mut stats)?;
        meta.train_rows = stats.seen;
        meta.train_rows_skipped = stats.skipped;
        meta.history.push(stats.record(epoch, recipe.lr_at(step, total_steps), started));
        meta.epochs = epoch;
    }
    bar.finish_and_clear();
    trainer.save(&dir.join(WEIGHTS_FILE))?;
    dynamics.write(&dir.join(dynamics::FILE))?;
    Ok(meta)
}

fn train_text(
    dataset: &DatasetPlan,
    plan: &TrainPlan,
    recipe: &TextRecipe,
    run: &RunPlan,
    dir: &Path,
) -> Result<ProxyMeta> {
    let classes = dataset.classes.len();
    let schedule = &recipe.schedule;
    // Held in memory when it fits (hashed once, in parallel, shuffled whole
    // each epoch), else streamed through the shuffle buffer every epoch.
    let cached = examples::cached(dataset, recipe.cache_bytes)?;
    let order = if cached.is_some() { "whole split shuffled per epoch" } else { "streamed, shuffle buffer" };
    let config = train_config(plan, serde_json::json!({"order": order}));
    let mut meta = new_meta(plan, dataset, None, config);
    let mut model = FastText::new(recipe.network.clone(), plan.seed).map_err(sieve_proxy::ProxyError::from)?;
    let cached: Option<Vec<TextRow>> =
        cached.map(|rows| rows.par_iter().map(|ex| TextRow::new(&model, ex, classes)).collect());
    let rows = dataset.train.total_rows();
    let total_steps = schedule.epochs as u64 * dataset.train_rows();
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed ^ 0x5eed);
    let mut order: Vec<usize> = (0..cached.as_ref().map_or(0, Vec::len)).collect();
    let mut scratch = Default::default();
    let bar = crate::progress::bar("train", total_steps, "rows", run.quiet);
    let mut step = 0u64;
    let mut dynamics = Dynamics::new(rows as usize, schedule.epochs, classes);
    for epoch in 1..=schedule.epochs {
        let started = Instant::now();
        let mut stats = EpochStats::default();
        let mut visit = |model: &mut FastText, row: &TextRow| -> Result<()> {
            match &row.example {
                Some((features, y)) => {
                    let out = model
                        .train_features(features, *y, schedule.lr_at(step, total_steps), &mut scratch)
                        .map_err(sieve_proxy::ProxyError::from)?;
                    let pred = sieve_selection::scores::argmax(out.logits);
                    dynamics.record(row.pos, epoch, out.logits, *y);
                    stats.loss_sum += out.loss as f64;
                    stats.correct += u64::from(pred == *y);
                    stats.seen += 1;
                }
                None => stats.skipped += 1,
            }
            step += 1;
            if step.is_multiple_of(4096) {
                bar.set_position(step);
            }
            Ok(())
        };
        match &cached {
            Some(rows) => {
                order.shuffle(&mut rng);
                order.iter().try_for_each(|&i| visit(&mut model, &rows[i]))?;
            }
            None => for_each_shuffled(dataset, recipe.shuffle_buffer, &mut rng, |ex| {
                let row = TextRow::new(&model, &ex, classes);
                visit(&mut model, &row)
            })?,
        }
        meta.train_rows = stats.seen;
        meta.train_rows_skipped = stats.skipped;
        meta.history.push(stats.record(epoch, schedule.lr_at(step, total_steps) as f64, started));
        meta.epochs = epoch;
    }
    bar.finish_and_clear();
    model.save(&dir.join(WEIGHTS_FILE)).map_err(sieve_proxy::ProxyError::from)?;
    dynamics.write(&dir.join(dynamics::FILE))?;
    Ok(meta)
}

/// One training row of the text proxy: its position and, when it can train
/// (UTF-8, not blank, a label in range), its feature ids and class.
struct TextRow {
    pos: u64,
    example: Option<(Vec<u32>, usize)>,
}

impl TextRow {
    fn new(model: &FastText, ex: &Example, classes: usize) -> Self {
        let text = ex.payload.as_deref().and_then(|b| std::str::from_utf8(b).ok()).filter(|t| !t.trim().is_empty());
        let example = text.zip(class_of(ex.label, classes)).map(|(text, y)| {
            let mut features = Vec::new();
            model.features(text, &mut features);
            (features, y)
        });
        Self { pos: ex.pos, example }
    }
}

/// The proxy's accuracy over `files` (rows it cannot score do not count).
pub fn accuracy(proxy: &Proxy, dataset: &DatasetPlan, files: &InputFiles, quiet: bool) -> Result<f64> {
    let (mut correct, mut total) = (0u64, 0u64);
    let columns = [dataset.input_column.clone(), dataset.label_column.clone()];
    let bar = crate::progress::bar("heldout", files.total_rows(), "rows", quiet);
    files.for_each_batch(&files.chunks(), Some(&columns), |batch| {
        let labels = datafusion::arrow::compute::cast(batch.column(1), &datafusion::arrow::datatypes::DataType::Int64)?;
        let labels = labels.as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().expect("cast to Int64");
        for p in sieve_udfs::infer::predict(proxy, batch.column(0), Some(labels))?.into_iter().flatten() {
            total += 1;
            correct += u64::from(Some(sieve_selection::scores::argmax(&p.logits)) == p.label);
        }
        bar.inc(batch.num_rows() as u64);
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(if total == 0 { 0.0 } else { correct as f64 / total as f64 })
}
