//! spineseg's half of the side-by-side speed benchmark against PyTorch (`bench/vs_pytorch.sh`
//! runs both halves and prints the table; `bench/pytorch_unet.py` is the other half).
//!
//! ```text
//! cargo run --release -p spineseg-train --example vs_pytorch -- [--only WORKLOAD] [--runs N] [--warmup N]
//! ```
//!
//! The network is the one of `crates/model/examples/unet_speed.rs`: nnU-Net's PlainConvUNet, 4
//! stages of 16-32-64-128 channels, 2 convs per stage in encoder and decoder, 3 classes, deep
//! supervision. Workloads (WORKLOAD, default all of them, in this order):
//!
//! - `infer2d`: forward of batch 4 x 1 x 256 x 256, full-resolution output only;
//! - `infer3d`: forward of batch 2 x 1 x 64 x 64 x 32, full-resolution output only;
//! - `train2d`, `train3d`: forward with deep supervision, nnU-Net's Dice + CE over the outputs,
//!   backward and one nnU-Net SGD step (lr 1e-2, momentum 0.99, Nesterov, weight decay 3e-5);
//! - `infer3d_s2`, `train3d_s2`: the same at the shapes of SSHSNet's stage-2 3D U-Net on the
//!   lumbar 3D plan (1.5 mm isotropic, patch 24 x 64 x 80, batch 2): 5 stages of 16-32-64-128-256
//!   channels, strides 1, 2, 2, (1, 2, 2), (1, 2, 2), 22 input channels (the image and the
//!   stage-1 probabilities of 21 classes), 21 classes (the hybrid's frozen 2D networks and the
//!   tri-attention are not part of it);
//! - `matmul`: a 2048 x 2048 by 2048 x 2048 f32 matmul, the ceiling the device reaches on plain
//!   gemm.
//!
//! Every timed run ends with `device.sync()`. A workload runs `--warmup` times (default 2)
//! untimed, then `--runs` times (default 10); the median is reported.
//!
//! Output: one JSON object per workload on stdout:
//! `{"side", "workload", "median_s", "min_s", "runs", "gflop", "params", "peak_rss_mb",
//! "base_rss_mb"}`. `gflop` is the analytic count of one run (convolutions only, see
//! [`forward_flops`]); `peak_rss_mb` is the process's peak resident set (`VmHWM`), so it covers
//! one workload only when `--only` is given; `base_rss_mb` is the resident set at start-up.

use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Int, Tensor};
use spineseg_model::{PlainConvUNetConfig, SpatialDims};
use spineseg_train::{nnunet_sgd, DeepSupervisionLossConfig, DiceCeLossConfig};

const CLASSES: usize = 3;
const WIDTHS: [usize; 4] = [16, 32, 64, 128];
const SHAPE_2D: [usize; 4] = [4, 1, 256, 256];
const SHAPE_3D: [usize; 5] = [2, 1, 64, 64, 32];
const LEARNING_RATE: f64 = 1e-2;
const WEIGHT_DECAY: f32 = 3e-5;
const STAGE2_CLASSES: usize = 21;
const STAGE2_WIDTHS: [usize; 5] = [16, 32, 64, 128, 256];
const STAGE2_SHAPE: [usize; 5] = [2, 1 + STAGE2_CLASSES, 24, 64, 80];
const WORKLOADS: [&str; 7] = ["infer2d", "infer3d", "train2d", "train3d", "infer3d_s2", "train3d_s2", "matmul"];

/// Command-line options.
struct Options {
    only: Option<String>,
    runs: usize,
    warmup: usize,
    matmul_size: usize,
}

const USAGE: &str = "usage: vs_pytorch [--only infer2d|infer3d|train2d|train3d|infer3d_s2|train3d_s2|matmul] \
                     [--runs N] [--warmup N] [--matmul-size N]";

fn parse_options() -> Result<Options, String> {
    let mut options = Options { only: None, runs: 10, warmup: 2, matmul_size: 2048 };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|_| format!("{flag}: '{value}' is not a whole number"));
        match flag.as_str() {
            "--only" if WORKLOADS.contains(&value.as_str()) => options.only = Some(value.clone()),
            "--only" => return Err(format!("--only: unknown workload '{value}', expected one of {WORKLOADS:?}")),
            "--runs" => options.runs = number()?,
            "--warmup" => options.warmup = number()?,
            "--matmul-size" => options.matmul_size = number()?,
            _ => return Err(format!("unknown argument '{flag}'")),
        }
    }
    if options.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok(options)
}

/// Wall-clock times of the timed runs of one workload.
struct Timing {
    median_s: f64,
    min_s: f64,
    runs: usize,
}

/// Runs `run` `warmup` times untimed, then `runs` times timed.
fn measure(options: &Options, mut run: impl FnMut()) -> Timing {
    for _ in 0..options.warmup {
        run();
    }
    let mut times: Vec<f64> = (0..options.runs)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let n = times.len();
    // The median as Python's statistics.median takes it (mean of the middle two for even n).
    let median_s = if n % 2 == 1 { times[n / 2] } else { (times[n / 2 - 1] + times[n / 2]) / 2.0 };
    Timing { median_s, min_s: times[0], runs: n }
}

fn config(spatial_dims: SpatialDims) -> PlainConvUNetConfig {
    let axes = spatial_dims.count();
    let mut strides = vec![vec![1; axes]];
    strides.extend(std::iter::repeat_n(vec![2; axes], WIDTHS.len() - 1));
    PlainConvUNetConfig::new(spatial_dims, 1, CLASSES, WIDTHS.to_vec(), strides)
}

/// The stage-2 3D U-Net of SSHSNet on the lumbar 3D plan (see the module documentation).
fn stage2_config() -> PlainConvUNetConfig {
    let strides = vec![vec![1, 1, 1], vec![2, 2, 2], vec![2, 2, 2], vec![1, 2, 2], vec![1, 2, 2]];
    PlainConvUNetConfig::new(SpatialDims::D3, STAGE2_SHAPE[1], STAGE2_CLASSES, STAGE2_WIDTHS.to_vec(), strides)
}

/// Analytic multiply-add FLOPs (2 per multiply-add) of one forward pass of the network on a
/// batch of `shape = [batch, channels, spatial...]`, counting convolutions, transposed
/// convolutions and segmentation heads (instance norm, leaky ReLU, concatenation and the loss
/// are a few FLOPs per voxel and left out).
///
/// - conv: `2 * c_in * c_out * prod(kernel) * output_voxels * batch`;
/// - transposed conv: `2 * c_in * c_out * prod(kernel) * input_voxels * batch` (every input
///   voxel is spread over a kernel; with kernel = stride that is `2 * c_in * c_out *
///   output_voxels * batch`);
/// - heads: a 1x1 conv per decoder level when `deep_supervision`, else the last one only.
///
/// `bench/pytorch_unet.py` has the same function; the table checks that both agree.
pub fn forward_flops(config: &PlainConvUNetConfig, shape: &[usize], deep_supervision: bool) -> f64 {
    let batch = shape[0] as f64;
    let n = config.n_stages();
    let voxels = |size: &[usize]| size.iter().product::<usize>() as f64;
    let mut flops = 0.0;

    let mut sizes: Vec<Vec<usize>> = Vec::with_capacity(n);
    let mut size: Vec<usize> = shape[2..].to_vec();
    let mut in_channels = config.in_channels;
    for (stage, &features) in config.features_per_stage.iter().enumerate() {
        size = size.iter().zip(&config.strides[stage]).map(|(s, stride)| s / stride).collect();
        let kernel = voxels(&config.kernel_size(stage));
        for conv in 0..config.n_conv_per_stage {
            let c_in = if conv == 0 { in_channels } else { features };
            flops += 2.0 * (c_in * features) as f64 * kernel * voxels(&size);
        }
        in_channels = features;
        sizes.push(size.clone());
    }

    for level in 0..n - 1 {
        let (below, skip) = (config.features_per_stage[n - 1 - level], config.features_per_stage[n - 2 - level]);
        let up_kernel = voxels(&config.strides[n - 1 - level]);
        flops += 2.0 * (below * skip) as f64 * up_kernel * voxels(&sizes[n - 1 - level]);
        let size = &sizes[n - 2 - level];
        let kernel = voxels(&config.kernel_size(n - 2 - level));
        for conv in 0..config.n_conv_per_stage_decoder {
            let c_in = if conv == 0 { 2 * skip } else { skip };
            flops += 2.0 * (c_in * skip) as f64 * kernel * voxels(size);
        }
        if deep_supervision || level == n - 2 {
            flops += 2.0 * (skip * config.num_classes) as f64 * voxels(size);
        }
    }
    flops * batch
}

/// A measured workload, ready to print.
struct Report {
    workload: &'static str,
    timing: Timing,
    gflop: f64,
    params: Option<usize>,
}

fn inference<const D: usize>(
    options: &Options,
    workload: &'static str,
    config: PlainConvUNetConfig,
    shape: [usize; D],
) -> Report {
    let device = Device::flex();
    let model = config.init(&device).with_deep_supervision(false);
    let params = model.num_params();
    let x = Tensor::<D>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let timing = measure(options, || {
        let outputs = model.forward(x.clone());
        device.sync().expect("the flex device should not fail");
        assert_eq!(outputs.len(), 1, "inference should return the full-resolution logits only");
    });
    Report { workload, timing, gflop: forward_flops(&config, &shape, false) / 1e9, params: Some(params) }
}

fn training_step<const D: usize>(
    options: &Options,
    workload: &'static str,
    config: PlainConvUNetConfig,
    shape: [usize; D],
) -> Report {
    let device = Device::flex().autodiff();
    let mut model = Some(config.init(&device));
    let network = model.as_ref().expect("the model was just built");
    let params = network.num_params();
    let loss = DeepSupervisionLossConfig::new(DiceCeLossConfig::new(), network.num_outputs()).init();
    let mut optimizer = nnunet_sgd(WEIGHT_DECAY);
    let x = Tensor::<D>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let mut target_shape = shape;
    target_shape[1] = 1;
    let target: Tensor<D, Int> =
        Tensor::<D>::random(target_shape, Distribution::Uniform(0.0, config.num_classes as f64), &device).int();
    let timing = measure(options, || {
        let current = model.take().expect("the model is put back after each step");
        let value = loss.forward(current.forward(x.clone()), target.clone(), None);
        let grads = GradientsParams::from_grads(value.backward(), &current);
        model = Some(optimizer.step(LEARNING_RATE, current, grads));
        device.sync().expect("the flex device should not fail");
    });
    // Forward + backward (gradients of inputs and of weights) is about 3 forwards.
    let gflop = 3.0 * forward_flops(&config, &shape, true) / 1e9;
    Report { workload, timing, gflop, params: Some(params) }
}

fn matmul(options: &Options) -> Report {
    let device = Device::flex();
    let n = options.matmul_size;
    let a = Tensor::<2>::random([n, n], Distribution::Normal(0.0, 1.0), &device);
    let b = Tensor::<2>::random([n, n], Distribution::Normal(0.0, 1.0), &device);
    let timing = measure(options, || {
        let c = a.clone().matmul(b.clone());
        device.sync().expect("the flex device should not fail");
        assert_eq!(c.dims(), [n, n]);
    });
    Report { workload: "matmul", timing, gflop: 2.0 * (n as f64).powi(3) / 1e9, params: None }
}

/// A field of `/proc/self/status` in MiB (`VmHWM` = peak resident set, `VmRSS` = current);
/// `None` where there is no procfs.
fn proc_status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn json_number(value: Option<f64>) -> String {
    value.map_or_else(|| "null".to_string(), |v| format!("{v:.6}"))
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("vs_pytorch: {message}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let base_rss_mb = proc_status_mib("VmRSS:");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "spineseg (burn flex, rayon={}, simd={}), {threads} threads available",
        cfg!(feature = "rayon"),
        cfg!(feature = "simd")
    );
    let selected: Vec<&str> = match &options.only {
        Some(only) => vec![only.as_str()],
        None => WORKLOADS.to_vec(),
    };
    for workload in selected {
        let report = match workload {
            "infer2d" => inference(&options, "infer2d", config(SpatialDims::D2), SHAPE_2D),
            "infer3d" => inference(&options, "infer3d", config(SpatialDims::D3), SHAPE_3D),
            "train2d" => training_step(&options, "train2d", config(SpatialDims::D2), SHAPE_2D),
            "train3d" => training_step(&options, "train3d", config(SpatialDims::D3), SHAPE_3D),
            "infer3d_s2" => inference(&options, "infer3d_s2", stage2_config(), STAGE2_SHAPE),
            "train3d_s2" => training_step(&options, "train3d_s2", stage2_config(), STAGE2_SHAPE),
            "matmul" => matmul(&options),
            other => unreachable!("workload {other} was checked while parsing"),
        };
        println!(
            "{{\"side\": \"spineseg\", \"workload\": \"{}\", \"median_s\": {:.6}, \"min_s\": {:.6}, \"runs\": {}, \
             \"gflop\": {:.6}, \"params\": {}, \"peak_rss_mb\": {}, \"base_rss_mb\": {}}}",
            report.workload,
            report.timing.median_s,
            report.timing.min_s,
            report.timing.runs,
            report.gflop,
            report.params.map_or_else(|| "null".to_string(), |p| p.to_string()),
            json_number(proc_status_mib("VmHWM:")),
            json_number(base_rss_mb),
        );
    }
}
