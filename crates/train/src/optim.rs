//! nnU-Net's optimiser and learning-rate schedule on burn's optimisers.

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::Tensor;

use crate::method::StepStats;

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
    poly_lr_with_exponent(initial, epoch, max_epochs, 0.9)
}

/// `initial * (1 - epoch / max_epochs)^exponent` (epoch 0-based; 0 from `max_epochs` on).
pub fn poly_lr_with_exponent(initial: f64, epoch: usize, max_epochs: usize, exponent: f64) -> f64 {
    let progress = (epoch as f64 / max_epochs.max(1) as f64).min(1.0);
    initial * (1.0 - progress).powf(exponent)
}

/// PyTorch's `clip_grad_norm_(parameters, max_norm)` (nnU-Net clips at 12): the L2 norm of all
/// gradients of `module` taken together; when it exceeds `max_norm`, every gradient is scaled by
/// `max_norm / (norm + 1e-6)`. Returns the norm before clipping.
///
/// burn's own `GradientClippingConfig::Norm` clips each tensor by its own norm, which is not the
/// same. The cost is one reduction per parameter tensor and one read of the total.
pub fn clip_grad_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let norm = grad_norm(module, grads);
    if norm.is_finite() && norm > max_norm {
        let factor = max_norm / (norm + 1e-6);
        module.visit(&mut ScaleGrads { grads, factor });
    }
    norm
}

/// The L2 norm of all gradients of `module` taken together (0 without gradients).
pub fn grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    let mut visitor = SquaredNorm { grads, sum: None };
    module.visit(&mut visitor);
    visitor.sum.map_or(0.0, |s| (s.into_scalar::<f32>() as f64).sqrt())
}

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    sum: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            let squares = grad.powi_scalar(2).sum();
            self.sum = Some(match self.sum.take() {
                None => squares,
                Some(total) => total + squares,
            });
        }
    }
}

struct ScaleGrads<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for ScaleGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, grad.mul_scalar(self.factor));
        }
    }
}

/// One optimiser step of `model` on `loss`: backward, global-norm clipping at `grad_clip_norm`
/// (if any), update. A loss that is not finite, or an infinite gradient norm under clipping, is
/// never applied: the model comes back unchanged and the stats say why (the engine then stops or
/// skips the step). The stats' gradient norm is NaN without clipping.
pub fn optimiser_step<M: Module>(
    model: M,
    loss: Tensor<1>,
    optimizer: &mut ModuleOptimizer,
    lr: f64,
    grad_clip_norm: Option<f64>,
) -> (M, StepStats) {
    let loss_value = loss.clone().into_scalar::<f32>() as f64;
    if !loss_value.is_finite() {
        return (model, StepStats { loss: loss_value, grad_norm: f64::NAN });
    }
    let mut grads = GradientsParams::from_grads(loss.backward(), &model);
    let grad_norm = match grad_clip_norm {
        Some(max) => clip_grad_norm(&model, &mut grads, max),
        None => f64::NAN,
    };
    if grad_clip_norm.is_some() && !grad_norm.is_finite() {
        return (model, StepStats { loss: loss_value, grad_norm: f64::INFINITY });
    }
    (optimizer.step(lr, model, grads), StepStats { loss: loss_value, grad_norm })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poly_lr_decays_to_zero() {
        assert_eq!(poly_lr(1e-2, 0, 1000), 1e-2);
        assert!((poly_lr(1e-2, 500, 1000) - 1e-2 * 0.5f64.powf(0.9)).abs() < 1e-15);
        assert_eq!(poly_lr(1e-2, 1000, 1000), 0.0);
        assert_eq!(poly_lr_with_exponent(1.0, 1, 2, 1.0), 0.5);
    }

    #[test]
    fn global_norm_clipping_scales_all_gradients_together() {
        use burn::nn::{Linear, LinearConfig};
        use burn::tensor::Device;
        let device = Device::flex().autodiff();
        let layer: Linear = LinearConfig::new(3, 2).init(&device);
        let x = Tensor::<2>::ones([4, 3], &device).mul_scalar(10.0);
        let loss = layer.forward(x).sum();
        let mut grads = GradientsParams::from_grads(loss.backward(), &layer);
        let before = grad_norm(&layer, &grads);
        // d(sum)/dW = 40 for each of 6 weights, d/db = 4 for 2 biases.
        let expected = (6.0f64 * 1600.0 + 2.0 * 16.0).sqrt();
        assert!((before - expected).abs() < 1e-3 * expected, "{before} vs {expected}");
        let returned = clip_grad_norm(&layer, &mut grads, 12.0);
        assert!((returned - before).abs() < 1e-9);
        let after = grad_norm(&layer, &grads);
        assert!((after - 12.0).abs() < 1e-3, "norm after clipping {after}");
        // Below the limit nothing changes.
        assert!((clip_grad_norm(&layer, &mut grads, 100.0) - after).abs() < 1e-9);
    }
}
