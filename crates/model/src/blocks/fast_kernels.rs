//! Which implementation runs the conv, transposed conv and norm + activation layers.
//!
//! On the flex device in f32 the layers run `spineseg-kernels` (im2col + gemm convolutions and a
//! fused instance norm + leaky ReLU with hand-written backward passes, several times faster to
//! train); anywhere else, or after `set_enabled(false)`, burn's own layers. Both read the same
//! parameters, so weights and checkpoints do not depend on the choice.

use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::Tensor;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the fast kernels on or off for the whole process (for A/B comparisons; on by default).
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether the fast kernels are switched on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether the fast kernels will run a layer on `x`.
pub fn applies<const D: usize>(x: &Tensor<D>) -> bool {
    #[cfg(feature = "flex")]
    {
        enabled() && spineseg_kernels::supports(&x.device(), x.dtype())
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = x;
        false
    }
}

/// The kernels, or stand-ins that are never called when the flex backend is not compiled in
/// ([`applies`] is then always false).
#[cfg(feature = "flex")]
pub(crate) use spineseg_kernels as fast;
#[cfg(not(feature = "flex"))]
pub(crate) mod fast {
    use burn::tensor::Tensor;
    pub struct ConvSpec {
        pub stride: [usize; 3],
        pub padding: [usize; 3],
    }
    pub struct NormActSpec {
        pub epsilon: f64,
        pub slope: f64,
    }
    pub fn conv(_: Tensor<5>, _: Tensor<5>, _: Tensor<1>, _: ConvSpec) -> Tensor<5> {
        unreachable!("fast kernels need the flex feature")
    }
    pub fn conv_transpose_up(_: Tensor<5>, _: Tensor<5>, _: Tensor<1>) -> Tensor<5> {
        unreachable!("fast kernels need the flex feature")
    }
    pub fn instance_norm_leaky_relu(_: Tensor<5>, _: Tensor<1>, _: Tensor<1>, _: NormActSpec) -> Tensor<5> {
        unreachable!("fast kernels need the flex feature")
    }
}
