//! Throughput of the ResNet proxy on the CPU: candle's own convolution and
//! batch-norm ops against the custom kernels of `sieve_kernels`, for
//! ResNet-8 and ResNet-20 (width 16, 32x32 images, synthetic data).
//!
//! Training is a full `ImageTrainer::step` on 128 images (augmentation,
//! forward, cross-entropy, backward, SGD); inference is the batch-norm-folded
//! network on 256 images. Each figure is the best of several timed runs after
//! a warm-up, since the machine may be shared. GFLOP/s count 2 flops per
//! multiply-add of the convolutions and head, 3 forward passes' worth per
//! training step; the peak is a 1024^3 f32 `gemm` on the same threads.
//!
//! ## Usage
//!
//! ```text
//! cargo run --release -p sieve-proxy --example bench_conv -- --threads 2
//! ```
//!
//! (`--no-candle` skips the slow baseline; `--json` prints one JSON object a
//! line instead of the table, for `benches/compare.py`.)
//!
//! prints, after about 25 s on 2 cores, a table like this one (2-core Zen 5
//! with AVX-512, quiet machine; `make bench` sets the same figures beside
//! PyTorch's, measured in the same run):
//!
//! ```text
//! gemm peak: 263 GFLOP/s (1024^3 f32, 2 threads)
//!
//! | model | threads | train img/s candle | train img/s fast | x | infer img/s candle | infer img/s fast | x | train GFLOP/s (% peak) | infer GFLOP/s (% peak) |
//! |---|---|---|---|---|---|---|---|---|---|
//! | ResNet-8 | 2 | 99 | 2691 | 27.1 | 683 | 11143 | 16.3 | 201.8 (77%) | 278.6 (106%) |
//! | ResNet-20 | 2 | 38 | 1048 | 27.4 | 234 | 4115 | 17.6 | 256.7 (98%) | 335.9 (128%) |
//! ```
//!
//! The custom convolutions use AVX-512 where the CPU has it, so they can
//! pass the peak of the `gemm` crate, which stops at AVX2.

use candle_core::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sieve_proxy::image_trainer::{images_to_tensor, ImageTrainer};
use sieve_proxy::resnet::{ConvImpl, ResNetConfig};
use sieve_proxy::sgd::SgdConfig;
use std::time::Instant;

/// Images per training step, the usual CIFAR batch.
const TRAIN_BATCH: usize = 128;
/// Images per inference call.
const INFER_BATCH: usize = 256;
/// Timed repetitions per measurement as (candle, fast), best kept: candle's
/// training step takes seconds, so it gets fewer.
const REPEATS: (usize, usize) = (2, 20);

/// Command-line flags.
struct Args {
    /// Size of rayon's global pool, which the custom kernels and candle's
    /// matmul both use.
    threads: usize,
    /// Skip candle's own ops (a minute of the runtime); their columns show NaN.
    no_candle: bool,
    /// Print JSON lines (load, peak, then one object per model, mode and
    /// kernel choice) instead of the markdown table.
    json: bool,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut args = Args { threads: 2, no_candle: false, json: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--threads" => {
                let v = it.next().ok_or("--threads needs a value")?;
                args.threads = v.parse().ok().filter(|&t| t > 0).ok_or(format!("bad --threads {v}"))?;
            }
            "--no-candle" => args.no_candle = true,
            "--json" => args.json = true,
            other => {
                return Err(format!("unknown flag {other}; usage: bench_conv [--threads N] [--no-candle] [--json]"))
            }
        }
    }
    Ok(args)
}

/// Fastest of `repeats` runs of `f`, after one untimed warm-up, in seconds.
fn best_of(repeats: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// GFLOP/s of a 1024^3 f32 matrix product with `gemm` on `threads` threads.
fn gemm_peak(threads: usize) -> f64 {
    const N: usize = 1024;
    let (a, b) = (vec![1f32; N * N], vec![0.5f32; N * N]);
    let mut c = vec![0f32; N * N];
    let secs = best_of(10, || {
        // SAFETY: three distinct N x N row-major buffers, strides in bounds.
        unsafe {
            gemm::gemm(
                N,
                N,
                N,
                c.as_mut_ptr(),
                1,
                N as isize,
                false,
                a.as_ptr(),
                1,
                N as isize,
                b.as_ptr(),
                1,
                N as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(threads),
            )
        };
        Ok(())
    })
    .unwrap_or(f64::INFINITY);
    2.0 * (N * N * N) as f64 / secs / 1e9
}

/// Random u8 images and labels for `n` CIFAR-shaped examples.
fn synthetic(n: usize, cfg: &ResNetConfig, rng: &mut ChaCha8Rng) -> (Vec<u8>, Vec<u32>) {
    let images = (0..n * cfg.image_size * cfg.image_size * 3).map(|_| rng.random()).collect();
    let labels = (0..n).map(|_| rng.random_range(0..cfg.num_classes as u32)).collect();
    (images, labels)
}

/// (training images/s, inference images/s) of one model and kernel choice.
fn throughput(cfg: &ResNetConfig, imp: ConvImpl, repeats: usize) -> Result<(f64, f64)> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut trainer =
        ImageTrainer::new(cfg.clone(), SgdConfig::default(), 0, &candle_core::Device::Cpu)?.with_conv_impl(imp);
    let (images, labels) = synthetic(TRAIN_BATCH, cfg, &mut rng);
    let train = best_of(repeats, || trainer.step(&images, &labels, 0.01).map(|_| ()))?;
    let net = trainer.folded()?.with_conv_impl(imp);
    let (images, _) = synthetic(INFER_BATCH, cfg, &mut rng);
    let normalize = trainer.normalize().clone();
    let infer = best_of(repeats, || {
        let x = images_to_tensor(&images, cfg.image_size, &normalize, None)?;
        net.forward(&x).map(|_| ())
    })?;
    Ok((TRAIN_BATCH as f64 / train, INFER_BATCH as f64 / infer))
}

fn main() -> Result<()> {
    let args = parse_args().map_err(candle_core::Error::Msg)?;
    // candle's CPU matmul sizes its gemm parallelism from RAYON_NUM_THREADS;
    // set it before any thread starts so both sides use `threads`.
    std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    rayon::ThreadPoolBuilder::new().num_threads(args.threads).build_global().map_err(candle_core::Error::wrap)?;
    // Timings are only as good as the machine is quiet: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("unknown");
    let peak = gemm_peak(args.threads);
    if args.json {
        return print_json(&args, load, peak);
    }
    println!("1-minute load average before the run: {load}");
    println!("gemm peak: {peak:.0} GFLOP/s (1024^3 f32, {} threads)\n", args.threads);
    println!("| model | threads | train img/s candle | train img/s fast | x | infer img/s candle | infer img/s fast | x | train GFLOP/s (% peak) | infer GFLOP/s (% peak) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, cfg) in [("ResNet-8", ResNetConfig::resnet8(10)), ("ResNet-20", ResNetConfig::resnet20(10))] {
        let (train_c, infer_c) =
            if args.no_candle { (f64::NAN, f64::NAN) } else { throughput(&cfg, ConvImpl::Candle, REPEATS.0)? };
        let (train_f, infer_f) = throughput(&cfg, ConvImpl::Fast, REPEATS.1)?;
        let gflop = 2.0 * cfg.macs_per_image()? as f64 / 1e9;
        let (train_gf, infer_gf) = (3.0 * gflop * train_f, gflop * infer_f);
        println!(
            "| {name} | {} | {train_c:.0} | {train_f:.0} | {:.1} | {infer_c:.0} | {infer_f:.0} | {:.1} | {train_gf:.1} ({:.0}%) | {infer_gf:.1} ({:.0}%) |",
            args.threads,
            train_f / train_c,
            infer_f / infer_c,
            100.0 * train_gf / peak,
            100.0 * infer_gf / peak,
        );
    }
    Ok(())
}

/// The `--json` output: `{"load1": ..}`, `{"gemm_peak_gflop_per_s": ..}`,
/// then `{"model", "mode", "impl", "threads", "batch", "images_per_s",
/// "gflop_per_s"}` for each model, mode (train, infer) and kernel choice
/// (candle unless `--no-candle`, fast).
fn print_json(args: &Args, load: &str, peak: f64) -> Result<()> {
    let load = load.parse::<f64>().map_or("null".into(), |l| l.to_string());
    println!("{{\"load1\": {load}}}");
    println!("{{\"gemm_peak_gflop_per_s\": {peak:.1}, \"threads\": {}}}", args.threads);
    for (name, cfg) in [("ResNet-8", ResNetConfig::resnet8(10)), ("ResNet-20", ResNetConfig::resnet20(10))] {
        let gflop = 2.0 * cfg.macs_per_image()? as f64 / 1e9;
        let imps: &[(&str, ConvImpl, usize)] = if args.no_candle {
            &[("fast", ConvImpl::Fast, REPEATS.1)]
        } else {
            &[("candle", ConvImpl::Candle, REPEATS.0), ("fast", ConvImpl::Fast, REPEATS.1)]
        };
        for &(imp_name, imp, repeats) in imps {
            let (train, infer) = throughput(&cfg, imp, repeats)?;
            for (mode, batch, ips, flops) in
                [("train", TRAIN_BATCH, train, 3.0 * gflop * train), ("infer", INFER_BATCH, infer, gflop * infer)]
            {
                println!(
                    "{{\"model\": \"{name}\", \"mode\": \"{mode}\", \"impl\": \"{imp_name}\", \"threads\": {}, \"batch\": {batch}, \"images_per_s\": {ips:.1}, \"gflop_per_s\": {flops:.1}}}",
                    args.threads
                );
            }
        }
    }
    Ok(())
}
