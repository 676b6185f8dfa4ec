//! A U-Net with a ConvNeXt V2 encoder ([`crate::encoders::convnext_v2`]) and nnU-Net's decoder,
//! 2D or 3D: the segmentation network that starts from a masked-autoencoder-pretrained encoder
//! (`spineseg pretrain`, then `spineseg train --encoder`).
//!
//! The stages (widths, strides, kernel axes) and the decoder are the plan's U-Net's
//! ([`PlainConvUNetConfig`], kept whole in the config under `unet`), so the two networks differ
//! only in the encoder's blocks; `unet.n_conv_per_stage` is unused (the encoder's depth is
//! `encoder.blocks_per_stage`) and the U-Net's text options must be off (this network has no
//! text fusion).

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::blocks::spatial::{forward_checked, stride_product};
use crate::blocks::SpatialDims;
use crate::decoders::UNetDecoder;
use crate::encoders::{ConvNeXtV2Encoder, ConvNeXtV2EncoderConfig};
use crate::networks::plain_conv_unet::{PlainConvUNetConfig, UNetConfigError, UNetOutput};

/// Configuration of a [`ConvNeXtUNet`].
#[derive(Config, Debug)]
pub struct ConvNeXtUNetConfig {
    /// The plan's U-Net: stages, strides, kernels, classes and the decoder.
    pub unet: PlainConvUNetConfig,
    /// The encoder's blocks.
    pub encoder: ConvNeXtV2EncoderConfig,
}

impl ConvNeXtUNetConfig {
    /// The plan's U-Net with a ConvNeXt V2 encoder of the default depth for its stages.
    pub fn from_unet(unet: &PlainConvUNetConfig) -> Self {
        let encoder = ConvNeXtV2EncoderConfig::for_stages(unet.n_stages());
        ConvNeXtUNetConfig::new(unet.clone(), encoder)
    }

    /// Checks the U-Net's stages and the encoder's settings.
    pub fn validate(&self) -> Result<(), UNetConfigError> {
        self.unet.validate()?;
        if self.unet.text_guidance.is_some() || self.unet.target_alignment.is_some() {
            return Err(UNetConfigError::Invalid("the ConvNeXt V2 U-Net has no text fusion or target alignment".into()));
        }
        self.encoder.validate(self.unet.n_stages()).map_err(UNetConfigError::Invalid)
    }

    /// The encoder alone, as [`ConvNeXtUNetConfig::init`] builds it (what pretraining trains).
    ///
    /// # Panics
    ///
    /// Panics if [`validate`](Self::validate) fails.
    pub fn init_encoder(&self, device: &Device) -> ConvNeXtV2Encoder {
        if let Err(err) = self.validate() {
            panic!("invalid ConvNeXtUNetConfig: {err}");
        }
        let unet = &self.unet;
        let kernels: Vec<Vec<usize>> = (0..unet.n_stages()).map(|stage| unet.kernel_size(stage)).collect();
        self.encoder.init(unet.spatial_dims, unet.in_channels, &unet.features_per_stage, &unet.strides, &kernels, device)
    }

    /// Builds the network (encoder first, then the decoder).
    ///
    /// # Panics
    ///
    /// Panics if [`validate`](Self::validate) fails.
    pub fn init(&self, device: &Device) -> ConvNeXtUNet {
        let encoder = self.init_encoder(device);
        let decoder = UNetDecoder::init(&self.unet.decoder_spec(), device);
        ConvNeXtUNet {
            encoder,
            decoder,
            spatial_dims: self.unet.spatial_dims,
            strides: self.unet.strides.clone(),
            deep_supervision: self.unet.deep_supervision,
        }
    }
}

/// A ConvNeXt V2 encoder with nnU-Net's decoder. Build it with [`ConvNeXtUNetConfig::init`].
#[derive(Module, Debug)]
pub struct ConvNeXtUNet {
    pub encoder: ConvNeXtV2Encoder,
    pub decoder: UNetDecoder,
    #[module(skip)]
    pub spatial_dims: SpatialDims,
    #[module(skip)]
    pub strides: Vec<Vec<usize>>,
    #[module(skip)]
    pub deep_supervision: bool,
}

impl ConvNeXtUNet {
    /// The same network, returning all decoder levels (`true`) or only full resolution.
    pub fn with_deep_supervision(mut self, deep_supervision: bool) -> Self {
        self.deep_supervision = deep_supervision;
        self
    }

    /// The same network with `encoder` in place of its own (a pretrained one).
    pub fn with_encoder(mut self, encoder: ConvNeXtV2Encoder) -> Self {
        self.encoder = encoder;
        self
    }

    /// Number of outputs [`forward`](Self::forward) returns.
    pub fn num_outputs(&self) -> usize {
        if self.deep_supervision {
            self.decoder.stages.len()
        } else {
            1
        }
    }

    /// Product of all strides per spatial axis: input sizes must be multiples of it.
    pub fn size_divisor(&self) -> Vec<usize> {
        stride_product(self.spatial_dims, &self.strides)
    }

    /// Number of input channels, from the stem's weight.
    pub fn in_channels(&self) -> usize {
        self.encoder.in_channels()
    }

    /// Number of output classes, from the full-resolution head's weight.
    pub fn num_classes(&self) -> usize {
        self.decoder.head(0).out_channels()
    }

    /// Segmentation logits, as [`PlainConvUNet::forward`](super::PlainConvUNet::forward).
    ///
    /// # Panics
    ///
    /// Panics if `D` does not match the spatial rank or a side is not a multiple of the size
    /// divisor.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Vec<Tensor<D>> {
        forward_checked(self.spatial_dims, &self.size_divisor(), x, |x| self.forward_canonical(x))
    }

    /// [`forward`](Self::forward) on the canonical 5D layout, without size checks.
    pub fn forward_canonical(&self, x: Tensor<5>) -> Vec<Tensor<5>> {
        self.forward_detailed(x).logits
    }

    /// Logits and decoder features of every level (what the training losses use).
    pub fn forward_detailed(&self, x: Tensor<5>) -> UNetOutput {
        let skips = self.encoder.forward(x);
        let (logits, level_features) =
            self.decoder.forward_levels(skips, self.deep_supervision, |_, f| f, |level, f| self.decoder.head(level).forward(f));
        UNetOutput { logits, features: level_features[0].clone(), level_features }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn tiny() -> ConvNeXtUNetConfig {
        ConvNeXtUNetConfig::from_unet(&PlainConvUNetConfig::new(
            SpatialDims::D2,
            1,
            3,
            vec![4, 8, 16],
            vec![vec![1, 1], vec![2, 2], vec![2, 2]],
        ))
    }

    #[test]
    fn outputs_have_the_plain_unets_shapes() {
        let device = Device::flex();
        let config = tiny();
        let network = config.init(&device);
        let plain = config.unet.init(&device);
        let x = Tensor::<4>::random([2, 1, 8, 12], Distribution::Normal(0.0, 1.0), &device);
        let shapes = |outputs: Vec<Tensor<4>>| outputs.iter().map(|o| o.dims()).collect::<Vec<_>>();
        assert_eq!(shapes(network.forward(x.clone())), shapes(plain.forward(x)));
        assert_eq!(network.num_outputs(), 2);
        assert_eq!((network.in_channels(), network.num_classes()), (1, 3));
        assert_eq!(network.size_divisor(), vec![4, 4]);
    }

    #[test]
    fn text_options_and_wrong_depths_are_refused() {
        let mut config = tiny();
        config.encoder.blocks_per_stage = vec![1, 1];
        assert!(config.validate().is_err());
        let config = tiny();
        assert!(config.validate().is_ok());
    }
}
