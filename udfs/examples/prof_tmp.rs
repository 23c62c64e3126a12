//! Temporary profiling harness (to be deleted).
use candle_core::{DType, Device, Result, Tensor, Var};
use sieve_udfs::kernels::{add_relu::add_relu, batch_norm::batch_norm_train, conv2d::conv2d};
use sieve_udfs::models::image_trainer::{images_to_tensor, ImageTrainer, Normalize};
use sieve_udfs::models::sgd::SgdConfig;
use sieve_udfs::models::resnet::ResNetConfig;

#[repr(C)]
struct Timespec { sec: i64, nsec: i64 }
extern "C" { fn clock_gettime(clk: i32, tp: *mut Timespec) -> i32; }
fn cpu_ns() -> u64 {
    let mut t = Timespec { sec: 0, nsec: 0 };
    unsafe { clock_gettime(2, &mut t) };
    (t.sec * 1_000_000_000 + t.nsec) as u64
}

fn best<T>(n: usize, mut f: impl FnMut() -> Result<T>) -> Result<f64> {
    f()?;
    let mut b = f64::INFINITY;
    for _ in 0..n {
        let t = cpu_ns();
        f()?;
        b = b.min((cpu_ns() - t) as f64 / 1e9);
    }
    Ok(b * 1e3)
}

fn main() -> Result<()> {
    let th: usize = std::env::var("TH").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    std::env::set_var("RAYON_NUM_THREADS", th.to_string());
    rayon::ThreadPoolBuilder::new().num_threads(th).build_global().unwrap();
    let dev = Device::Cpu;
    let n = 128;
    let sizes: &[(usize, usize)] = if std::env::var("STEPS_ONLY").is_ok() { &[] } else { &[(32, 16), (16, 32), (8, 64)] };
    for &(h, c) in sizes {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (n, h, h, c), &dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (3, 3, c, c), &dev)?)?;
        let g = Var::from_tensor(&Tensor::ones(c, DType::F32, &dev)?)?;
        let b = Var::from_tensor(&Tensor::zeros(c, DType::F32, &dev)?)?;
        let y = conv2d(&x, &w, 1, 1)?;
        let r = Tensor::randn(0f32, 1., (n, h, h, c), &dev)?;
        let bw = |t: Tensor| -> Result<f64> { let l = (t * &r)?.sum_all()?; best(5, || l.backward()) };
        let base = bw(x.as_tensor().clone())?;
        let conv_f = best(5, || conv2d(&x, &w, 1, 1))?;
        let conv_b = bw(conv2d(&x, &w, 1, 1)?)? - base;
        let conv_bw = bw(conv2d(x.as_tensor(), &w, 1, 1)?)?;
        let bn_f = best(5, || batch_norm_train(&y, &g, &b, 1e-5, true))?;
        let bn_b = bw(batch_norm_train(&x, &g, &b, 1e-5, true)?.0)? - base;
        let ar_f = best(5, || add_relu(&x, &y))?;
        let ar_b = bw(add_relu(&x, &x)?)? - base;
        let zeros_add = best(5, || x.zeros_like()?.add(&y))?;
        let zeros = best(5, || x.zeros_like())?;
        let mean = best(5, || x.mean((1, 2)))?;
        println!("{h}x{h}x{c}: base bwd {base:.2} | conv fwd {conv_f:.2} bwd {conv_b:.2} (dw only {conv_bw:.2}) | bn fwd {bn_f:.2} bwd {bn_b:.2} | add_relu {ar_f:.2} bwd {ar_b:.2} | zeros {zeros:.2} zeros+add {zeros_add:.2} | mean12 {mean:.2} ms");
    }
    if std::env::var("ONLY_OPS").is_ok() { return Ok(()); }
    let depths: Vec<usize> = std::env::var("DEPTHS").map(|v| v.split(',').map(|d| d.parse().unwrap()).collect()).unwrap_or(vec![8, 20]);
    for cfg in depths.iter().map(|&d| ResNetConfig { depth: d, ..ResNetConfig::resnet20(10) }) {
        let mut tr = ImageTrainer::new(cfg.clone(), SgdConfig::default(), 0)?;
        let imgs: Vec<u8> = (0..n * 32 * 32 * 3).map(|i| (i * 7 % 251) as u8).collect();
        let labels: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
        let t_step = best(6, || tr.step(&imgs, &labels, 0.01))?;
        let net = tr.folded()?;
        let imgs: Vec<u8> = (0..256 * 32 * 32 * 3).map(|i| (i * 7 % 251) as u8).collect();
        let x = images_to_tensor(&imgs, 32, &Normalize::CIFAR10, None)?;
        let t_inf = best(6, || net.forward(&x))?;
        println!("depth {}: train step b128 {t_step:.1} ms cpu ({:.0} img/cpu-s) | infer b256 {t_inf:.1} ms cpu ({:.0} img/cpu-s)", cfg.depth, 128e3 / t_step, 256e3 / t_inf);
    }
    Ok(())
}
