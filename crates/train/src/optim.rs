//! nnU-Net's optimiser and learning-rate schedule on burn's optimisers.

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{ModuleOptimizer, SgdConfig};

/// nnU-Net's `torch.optim.SGD(lr, weight_decay, momentum=0.99, nesterov=True)`.
///
/// burn's `MomentumConfig` defaults to dampening 0.1 (PyTorch: 0), so it is set to 0 here;
/// nnU-Net's weight decay is 3e-5. The learning rate is passed to each
/// `ModuleOptimizer::step(lr, model, grads)`, see [`poly_lr`].
pub fn nnunet_sgd(weight_decay: f32) -> ModuleOptimizer {
    SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_momentum(0.99).with_dampening(0.0).with_nesterov(true)))
        .with_weight_decay(Some(WeightDecayConfig::new(weight_decay)))
        .init()
}

/// nnU-Net's `PolyLRScheduler`: `initial * (1 - epoch / max_epochs)^0.9`.
pub fn poly_lr(initial: f64, epoch: usize, max_epochs: usize) -> f64 {
    let progress = (epoch as f64 / max_epochs.max(1) as f64).min(1.0);
    initial * (1.0 - progress).powf(0.9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poly_lr_decays_to_zero() {
        assert_eq!(poly_lr(1e-2, 0, 1000), 1e-2);
        assert!((poly_lr(1e-2, 500, 1000) - 1e-2 * 0.5f64.powf(0.9)).abs() < 1e-15);
        assert_eq!(poly_lr(1e-2, 1000, 1000), 0.0);
    }
}
