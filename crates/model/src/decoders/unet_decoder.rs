//! nnU-Net's `UNetDecoder`.

use burn::module::Module;
use burn::tensor::Tensor;

use crate::blocks::{ConvNd, ConvTransposeNd, SpatialDims, StackedConvBlocks, StackedConvBlocksConfig};
use burn::tensor::Device;

/// What a [`UNetDecoder`] is built from: the encoder's stages (widths, strides, kernels) and the
/// head.
#[derive(Debug, Clone)]
pub struct UNetDecoderSpec {
    pub spatial_dims: SpatialDims,
    /// The encoder's width per stage, full resolution first.
    pub features_per_stage: Vec<usize>,
    /// The encoder's stride per stage and axis.
    pub strides: Vec<Vec<usize>>,
    /// Kernel per stage and axis (decoder stage `s` uses that of encoder stage `s`).
    pub kernel_sizes: Vec<Vec<usize>>,
    /// Convolutions per decoder stage.
    pub n_conv_per_stage: usize,
    pub num_classes: usize,
    pub negative_slope: f64,
    pub norm_epsilon: f64,
}

/// nnU-Net's `UNetDecoder`: transposed conv, skip concatenation, conv blocks, 1x1 heads.
#[derive(Module, Debug)]
pub struct UNetDecoder {
    /// Up-sampling layers, lowest resolution first.
    pub transpconvs: Vec<ConvTransposeNd>,
    /// Conv blocks after each concatenation, lowest resolution first.
    pub stages: Vec<StackedConvBlocks>,
    /// 1x1 segmentation heads, lowest resolution first (all are created, as in nnU-Net, so the
    /// parameters match its checkpoints even without deep supervision).
    pub seg_layers: Vec<ConvNd>,
}

impl UNetDecoder {
    /// nnU-Net's decoder for `spec`: decoder stage `s` goes from encoder stage `n-1-s` up to
    /// stage `n-2-s` (transposed conv with kernel = stride, concatenation with the skip, conv
    /// blocks, a 1x1 head). Weights as nnU-Net's (Kaiming-normal, zero bias).
    pub fn init(spec: &UNetDecoderSpec, device: &Device) -> UNetDecoder {
        let n = spec.features_per_stage.len();
        let ones = vec![1; spec.spatial_dims.count()];
        let mut transpconvs = Vec::with_capacity(n - 1);
        let mut stages = Vec::with_capacity(n - 1);
        let mut seg_layers = Vec::with_capacity(n - 1);
        for s in 0..n - 1 {
            let below = spec.features_per_stage[n - 1 - s];
            let skip = spec.features_per_stage[n - 2 - s];
            let stride = &spec.strides[n - 1 - s];
            transpconvs.push(ConvTransposeNd::new(spec.spatial_dims, below, skip, stride, spec.negative_slope, device));
            stages.push(
                StackedConvBlocksConfig::new(
                    spec.spatial_dims,
                    spec.n_conv_per_stage,
                    2 * skip,
                    skip,
                    spec.kernel_sizes[n - 2 - s].clone(),
                    ones.clone(),
                )
                .with_negative_slope(spec.negative_slope)
                .with_norm_epsilon(spec.norm_epsilon)
                .init(device),
            );
            seg_layers.push(ConvNd::new(spec.spatial_dims, skip, spec.num_classes, &ones, &ones, spec.negative_slope, device));
        }
        UNetDecoder { transpconvs, stages, seg_layers }
    }

    /// Returns the logits of every decoder level when `all_levels`, else only the last one;
    /// full resolution first.
    ///
    /// # Shapes
    ///
    /// - skips: the encoder outputs, full resolution first
    /// - output `i`: `[batch, num_classes, depth / cs_d, height / cs_h, width / cs_w]` with `cs`
    ///   the cumulative stride of stages `0..=i`
    pub fn forward(&self, skips: Vec<Tensor<5>>, all_levels: bool) -> Vec<Tensor<5>> {
        self.forward_with_heads(skips, all_levels, |level, features| self.head(level).forward(features)).0
    }

    /// The 1x1 head of decoder level `level` (full resolution first).
    pub fn head(&self, level: usize) -> &ConvNd {
        &self.seg_layers[self.seg_layers.len() - 1 - level]
    }

    /// [`forward`](Self::forward) with the logits of each level computed by
    /// `head(level, features)` (level 0 = full resolution), also returning the full-resolution
    /// decoder features (the pixel embeddings).
    pub fn forward_with_heads(
        &self,
        skips: Vec<Tensor<5>>,
        all_levels: bool,
        head: impl FnMut(usize, Tensor<5>) -> Tensor<5>,
    ) -> (Vec<Tensor<5>>, Tensor<5>) {
        let (outputs, mut features) = self.forward_levels(skips, all_levels, |_, x| x, head);
        (outputs, features.swap_remove(0))
    }

    /// [`forward_with_heads`](Self::forward_with_heads) with each level's features passed
    /// through `enhance(level, features)` before its head and the next level (TMCA's target
    /// enhancement); returns the logits and every level's (enhanced) features, full resolution
    /// first.
    pub fn forward_levels(
        &self,
        skips: Vec<Tensor<5>>,
        all_levels: bool,
        mut enhance: impl FnMut(usize, Tensor<5>) -> Tensor<5>,
        mut head: impl FnMut(usize, Tensor<5>) -> Tensor<5>,
    ) -> (Vec<Tensor<5>>, Vec<Tensor<5>>) {
        let n_levels = self.stages.len();
        let mut skips = skips;
        let mut x = skips.pop().expect("the encoder should return one skip per stage");
        let mut outputs = Vec::with_capacity(n_levels);
        let mut features = Vec::with_capacity(n_levels);
        for (i, (up, stage)) in self.transpconvs.iter().zip(&self.stages).enumerate() {
            let skip = skips.pop().expect("the encoder should return one skip per stage");
            x = up.forward(x);
            x = stage.forward(Tensor::cat(vec![x, skip], 1));
            let level = n_levels - 1 - i;
            x = enhance(level, x);
            if all_levels || level == 0 {
                outputs.push(head(level, x.clone()));
            }
            features.push(x.clone());
        }
        outputs.reverse();
        features.reverse();
        (outputs, features)
    }
}
