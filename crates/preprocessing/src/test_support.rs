//! Synthetic preprocessed cases built in code, for tests of this crate and the crates above it
//! (sampling, training). Enabled by the `test-support` feature.

use crate::crop::BoundingBox;
use crate::plan::ConfigurationName;
use crate::preprocess::{CaseProperties, PreprocessedCase};
use spineseg_io::reorient::Reorientation;
use spineseg_io::{Geometry, Volume};

/// The properties of a case that was already canonical, not cropped and not resampled: every
/// shape is `shape`, every geometry `geometry`, the reorientation the identity.
pub fn identity_properties(id: &str, shape: [usize; 3], geometry: Geometry) -> CaseProperties {
    CaseProperties {
        id: id.into(),
        configuration: ConfigurationName::ThreeDFullres,
        original_shape: shape,
        original_geometry: geometry,
        to_canonical: Reorientation { source_axis: [0, 1, 2], flipped: [false; 3], source_shape: shape },
        canonical_shape: shape,
        canonical_geometry: geometry,
        crop: BoundingBox::full(shape),
        shape_after_crop: shape,
        shape_after_resampling: shape,
        geometry_after_resampling: geometry,
        annotated_structures: None,
    }
}

/// A preprocessed case of `images` (at least one, all on one grid) and an optional seg, with
/// [`identity_properties`] of the first image's shape and geometry.
pub fn preprocessed_case(id: &str, images: Vec<Volume<f32>>, seg: Option<Volume<u8>>) -> PreprocessedCase {
    let first = images.first().expect("a preprocessed case should have at least one image channel");
    let properties = identity_properties(id, first.shape(), first.geometry);
    PreprocessedCase { images, seg, properties }
}

/// A case of `shape` on the default geometry whose channel `c` is `image(i, j, k) + 1000 c` and
/// whose seg is `seg(i, j, k)` (`None`: an unlabelled case).
pub fn synthetic_case(
    id: &str,
    shape: [usize; 3],
    channels: usize,
    image: impl Fn(usize, usize, usize) -> f32,
    seg: Option<&dyn Fn(usize, usize, usize) -> u8>,
) -> PreprocessedCase {
    let g = Geometry::default();
    let mut images: Vec<Volume<f32>> = (0..channels).map(|_| Volume::filled(shape, 0.0, g)).collect();
    let mut labels = seg.map(|_| Volume::filled(shape, 0u8, g));
    for k in 0..shape[2] {
        for j in 0..shape[1] {
            for i in 0..shape[0] {
                for (c, im) in images.iter_mut().enumerate() {
                    im.set([i, j, k], image(i, j, k) + 1000.0 * c as f32);
                }
                if let (Some(l), Some(s)) = (labels.as_mut(), seg) {
                    l.set([i, j, k], s(i, j, k));
                }
            }
        }
    }
    preprocessed_case(id, images, labels)
}

/// Shrinks a plan's 2D configuration for tests that train: a 32x32 patch, batch 2 and a 3-stage
/// U-Net 4-8-16 (3x3 kernels, strides 1-2-2, two convolutions per stage).
///
/// # Panics
/// Panics if the plan has no 2D configuration.
pub fn shrink_2d_network(plan: &mut crate::plan::Plan) {
    let c = plan.configurations.get_mut(&ConfigurationName::TwoD).expect("the plan should have a 2d configuration");
    c.patch_size = vec![32, 32];
    c.batch_size = 2;
    let n = &mut c.network;
    n.n_stages = 3;
    n.features_per_stage = vec![4, 8, 16];
    n.kernel_sizes = vec![vec![3, 3]; 3];
    n.strides = vec![vec![1, 1], vec![2, 2], vec![2, 2]];
    n.n_conv_per_stage_encoder = vec![2; 3];
    n.n_conv_per_stage_decoder = vec![2; 2];
}
