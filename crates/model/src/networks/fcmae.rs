//! ConvNeXt V2's fully convolutional masked autoencoder (FCMAE): a ConvNeXt V2 encoder sees an
//! image whose masked patches are zero, a light decoder predicts every patch's pixels from the
//! encoder's last stage, and the loss (in `spineseg-train`) counts only the masked patches.
//!
//! A patch is one cell of the last stage's grid (the product of the strides, e.g. 32 x 32
//! pixels), so the decoder predicts `patch pixels x input channels` values per grid cell. As in
//! the paper's dense implementation, masked positions are zeroed after every stage (the
//! `after_stage` hook of [`ConvNeXtV2Encoder::forward_masked`]) so that no information leaks
//! from them into later stages; the decoder then fills them with a learned mask token before its
//! block. Decoder: 1x1 projection to `decoder_width`, mask token, one ConvNeXt V2 block, 1x1
//! prediction.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use crate::blocks::{ConvNd, SpatialDims};
use crate::encoders::convnext_v2::{ConvNeXtV2Block, ConvNeXtV2EncoderConfig};
use crate::encoders::ConvNeXtV2Encoder;

/// The light decoder of an FCMAE.
#[derive(Config, Debug)]
pub struct FcmaeDecoderConfig {
    pub spatial_dims: SpatialDims,
    /// Channels of the encoder's last stage.
    pub encoder_width: usize,
    /// Width of the decoder.
    pub decoder_width: usize,
    /// Values predicted per grid cell: pixels per patch x input channels.
    pub outputs_per_patch: usize,
    /// Depthwise kernel of the decoder block, per axis (1 along an axis the plan's last stage
    /// does not convolve).
    pub depthwise_kernel: Vec<usize>,
}

impl FcmaeDecoderConfig {
    /// Builds the decoder (mask token zero, as ConvNeXt V2 starts it).
    pub fn init(&self, device: &Device) -> FcmaeDecoder {
        let ones = vec![1; self.spatial_dims.count()];
        let block_settings = ConvNeXtV2EncoderConfig::new(vec![1]);
        FcmaeDecoder {
            project: ConvNd::new(self.spatial_dims, self.encoder_width, self.decoder_width, &ones, &ones, 0.0, device),
            mask_token: Param::from_tensor(Tensor::zeros([self.decoder_width], device)),
            block: block_settings.block(self.spatial_dims, self.decoder_width, &self.depthwise_kernel, device),
            predict: ConvNd::new(self.spatial_dims, self.decoder_width, self.outputs_per_patch, &ones, &ones, 0.0, device),
        }
    }
}

/// FCMAE's decoder: projection, mask token, one ConvNeXt V2 block, prediction.
#[derive(Module, Debug)]
pub struct FcmaeDecoder {
    pub project: ConvNd,
    /// Put in place of the masked cells' features, `[decoder_width]`.
    pub mask_token: Param<Tensor<1>>,
    pub block: ConvNeXtV2Block,
    pub predict: ConvNd,
}

impl FcmaeDecoder {
    /// Predicted patch values per grid cell.
    ///
    /// # Shapes
    ///
    /// - `features`: the encoder's last stage `[batch, encoder_width, gd, gh, gw]`
    /// - `mask`: `[batch, 1, gd, gh, gw]`, 1 where masked
    /// - output: `[batch, outputs_per_patch, gd, gh, gw]`
    pub fn forward(&self, features: Tensor<5>, mask: Tensor<5>) -> Tensor<5> {
        let x = self.project.forward(features);
        let width = x.dims()[1];
        let token = self.mask_token.val().reshape([1, width, 1, 1, 1]);
        let x = x * (mask.clone().neg() + 1.0) + token * mask;
        self.predict.forward(self.block.forward(x))
    }
}

/// An FCMAE: the ConvNeXt V2 encoder being pretrained and its light decoder.
#[derive(Module, Debug)]
pub struct MaskedAutoencoder {
    pub encoder: ConvNeXtV2Encoder,
    pub decoder: FcmaeDecoder,
}

impl MaskedAutoencoder {
    /// Predicted patch values per grid cell for `images` with the masked patches hidden.
    ///
    /// # Shapes
    ///
    /// - `images`: `[batch, channels, d, h, w]`
    /// - `visible`: one mask per encoder stage, `[batch, 1, ...]` at that stage's resolution, 1
    ///   where visible (the first also hides the input's masked pixels, at full resolution)
    /// - `masked_cells`: `[batch, 1, gd, gh, gw]`, 1 where masked (the last stage's grid)
    /// - output: `[batch, outputs_per_patch, gd, gh, gw]`
    pub fn forward(&self, images: Tensor<5>, input_visible: Tensor<5>, visible: &[Tensor<5>], masked_cells: Tensor<5>) -> Tensor<5> {
        let masked_input = images * input_visible;
        let mut skips = self.encoder.forward_masked(masked_input, |stage, features| features * visible[stage].clone());
        let last = skips.pop().expect("an encoder has stages");
        self.decoder.forward(last, masked_cells)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn decoder_predicts_every_patch_value_per_cell() {
        let device = Device::flex();
        let encoder = ConvNeXtV2EncoderConfig::new(vec![1, 1]).init(
            SpatialDims::D2,
            1,
            &[4, 8],
            &[vec![1, 1], vec![2, 2]],
            &[vec![3, 3], vec![3, 3]],
            &device,
        );
        let decoder = FcmaeDecoderConfig::new(SpatialDims::D2, 8, 6, 4, vec![7, 7]).init(&device);
        let model = MaskedAutoencoder { encoder, decoder };
        let images = Tensor::<5>::random([2, 1, 1, 8, 6], Distribution::Normal(0.0, 1.0), &device);
        let ones = |shape: [usize; 5]| Tensor::<5>::ones(shape, &device);
        let visible = vec![ones([2, 1, 1, 8, 6]), ones([2, 1, 1, 4, 3])];
        let out = model.forward(images, ones([2, 1, 1, 8, 6]), &visible, Tensor::zeros([2, 1, 1, 4, 3], &device));
        assert_eq!(out.dims(), [2, 4, 1, 4, 3]);
    }
}
