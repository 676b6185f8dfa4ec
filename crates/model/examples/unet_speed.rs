//! Speed of nnU-Net's PlainConvUNet on the flex CPU backend: inference and training steps.
//!
//! ```text
//! cargo run --release -p spineseg-model --example unet_speed
//! cargo run --release -p spineseg-model --example unet_speed --features rayon,simd
//! cargo run --release -p spineseg-model --example unet_speed --features rayon,simd,x86-v4
//! cargo run --release -p spineseg-model --example unet_speed -- --burn-layers   # burn's own layers
//! cargo run --release -p spineseg-model --example unet_speed -- train2d         # one measurement
//! ```
//!
//! 2D: 4 stages of 16-32-64-128 channels, batch 4 of 1 x 256 x 256, 3 classes.
//! 3D: same widths, batch 2 of 1 x 64 x 64 x 32. A training step is forward, deep-supervision
//! Dice + CE, backward and an SGD step (nnU-Net's momentum 0.99, Nesterov). Each time is the
//! median of 5 runs after one warm-up run.

use std::time::Instant;

use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Int, Tensor};
use spineseg_model::{PlainConvUNetConfig, SpatialDims};
use spineseg_train::{nnunet_sgd, DeepSupervisionLossConfig, DiceCeLossConfig};

const RUNS: usize = 5;
const CLASSES: usize = 3;
const WIDTHS: [usize; 4] = [16, 32, 64, 128];

fn median_seconds(mut run: impl FnMut()) -> f64 {
    run();
    let mut times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[RUNS / 2]
}

fn config(spatial_dims: SpatialDims) -> PlainConvUNetConfig {
    let axes = spatial_dims.count();
    let mut strides = vec![vec![1; axes]];
    strides.extend(std::iter::repeat_n(vec![2; axes], WIDTHS.len() - 1));
    PlainConvUNetConfig::new(spatial_dims, 1, CLASSES, WIDTHS.to_vec(), strides)
}

fn inference<const D: usize>(spatial_dims: SpatialDims, shape: [usize; D]) -> f64 {
    let device = Device::flex();
    let model = config(spatial_dims).init(&device).with_deep_supervision(false);
    let x = Tensor::<D>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    median_seconds(|| {
        let outputs = model.forward(x.clone());
        device.sync().expect("the flex device should not fail");
        assert_eq!(outputs[0].dims()[1], CLASSES);
    })
}

fn training_step<const D: usize>(spatial_dims: SpatialDims, shape: [usize; D]) -> f64 {
    let device = Device::flex().autodiff();
    let mut model = Some(config(spatial_dims).init(&device));
    let loss = DeepSupervisionLossConfig::new(DiceCeLossConfig::new(), model.as_ref().unwrap().num_outputs()).init();
    let mut optimizer = nnunet_sgd(3e-5);
    let x = Tensor::<D>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let mut target_shape = shape;
    target_shape[1] = 1;
    let target: Tensor<D, Int> =
        Tensor::<D>::random(target_shape, Distribution::Uniform(0.0, CLASSES as f64), &device).int();
    median_seconds(|| {
        let current = model.take().expect("the model is put back after each step");
        let value = loss.forward(current.forward(x.clone()), target.clone(), None);
        let grads = GradientsParams::from_grads(value.backward(), &current);
        model = Some(optimizer.step(1e-2, current, grads));
        device.sync().expect("the flex device should not fail");
    })
}

fn main() {
    let features: Vec<&str> = [(cfg!(feature = "rayon"), "rayon"), (cfg!(feature = "simd"), "simd")]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
    println!(
        "flex features: [{}], {} threads available",
        features.join(", "),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--burn-layers") {
        spineseg_model::fast_kernels::set_enabled(false);
    }
    println!("layers: {}", if spineseg_model::fast_kernels::enabled() { "spineseg-kernels" } else { "burn" });
    let wanted: Vec<&str> = args.iter().filter(|a| !a.starts_with("--")).map(String::as_str).collect();
    let run = |name: &str| wanted.is_empty() || wanted.contains(&name);
    let shape_2d = [4, 1, 256, 256];
    let shape_3d = [2, 1, 64, 64, 32];
    if run("infer2d") {
        println!("2D {shape_2d:?} inference: {:.3} s", inference(SpatialDims::D2, shape_2d));
    }
    if run("train2d") {
        println!("2D {shape_2d:?} training step: {:.3} s", training_step(SpatialDims::D2, shape_2d));
    }
    if run("infer3d") {
        println!("3D {shape_3d:?} inference: {:.3} s", inference(SpatialDims::D3, shape_3d));
    }
    if run("train3d") {
        println!("3D {shape_3d:?} training step: {:.3} s", training_step(SpatialDims::D3, shape_3d));
    }
}
