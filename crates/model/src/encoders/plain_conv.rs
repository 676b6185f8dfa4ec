//! nnU-Net's `PlainConvEncoder`.

use burn::module::Module;
use burn::tensor::Tensor;

use crate::blocks::StackedConvBlocks;

/// nnU-Net's `PlainConvEncoder`: one [`StackedConvBlocks`] per stage.
#[derive(Module, Debug)]
pub struct PlainConvEncoder {
    /// Stages, full resolution first.
    pub stages: Vec<StackedConvBlocks>,
}

impl PlainConvEncoder {
    /// Returns the output of every stage (the skips), full resolution first.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, in_channels, depth, height, width]` (`depth = 1` for 2D)
    /// - output `s`: `[batch, features_per_stage[s], depth / cs_d, height / cs_h, width / cs_w]`
    ///   with `cs` the cumulative stride of stages `0..=s`
    pub fn forward(&self, x: Tensor<5>) -> Vec<Tensor<5>> {
        let mut skips: Vec<Tensor<5>> = Vec::with_capacity(self.stages.len());
        let mut x = x;
        for stage in &self.stages {
            x = stage.forward(x);
            skips.push(x.clone());
        }
        skips
    }
}
