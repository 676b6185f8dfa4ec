//! One case end to end: sliding window -> arg max -> optional largest component per class ->
//! back onto the input's grid and label values ([`spineseg_preprocessing::preprocess::revert_to_original`]
//! does the resampling, uncropping, reorientation and class index -> label value mapping).

use crate::error::{InferError, Result};
use crate::postprocess::{keep_largest_component_per_class, Connectivity};
use crate::sliding_window::{predict_sliding_window_argmax, PatchPredictor, SlidingWindowOptions};
use spineseg_preprocessing::plan::{ConfigurationName, Plan};
use spineseg_preprocessing::preprocess::{revert_to_original, PreprocessedCase};
use spineseg_io::{Label, Volume};

/// Options of [`predict_case`].
#[derive(Debug, Clone)]
pub struct PredictOptions {
    pub sliding_window: SlidingWindowOptions,
    /// Keep only the largest connected component of every foreground class (in preprocessed
    /// space, before reverting), with this connectivity; `None` (the default of
    /// [`PredictOptions::for_plan`]): off. nnU-Net decides this per class on the validation
    /// folds; [`Connectivity::Corners`] (26) is its connectivity.
    pub largest_component: Option<Connectivity>,
    /// Text-prompted segmentation (`--structures`): keep only these label values (the plan's
    /// values, ontology ids); every other structure becomes background in the output, so a
    /// voxel of an unrequested structure is never handed to a requested neighbour. `None`: all.
    pub keep_structures: Option<Vec<Label>>,
}

impl PredictOptions {
    /// Sliding-window defaults ([`SlidingWindowOptions::new`]) with the configuration's patch
    /// size; no post-processing.
    pub fn for_plan(plan: &Plan, configuration: ConfigurationName) -> Result<Self> {
        Ok(PredictOptions {
            sliding_window: SlidingWindowOptions::for_plan(plan, configuration)?,
            largest_component: None,
            keep_structures: None,
        })
    }
}

/// Segments preprocessed `images` (class indices on their grid): sliding window, arg max,
/// optional largest component per class.
pub fn segment_preprocessed<P: PatchPredictor + ?Sized>(
    images: &[Volume<f32>],
    predictor: &mut P,
    options: &PredictOptions,
) -> Result<Volume<u8>> {
    let mut seg = predict_sliding_window_argmax(images, predictor, &options.sliding_window)?;
    if let Some(connectivity) = options.largest_component {
        keep_largest_component_per_class(&mut seg, connectivity, None);
    }
    Ok(seg)
}

/// Predicts one preprocessed case (from [`spineseg_preprocessing::preprocess::preprocess_case`]) and
/// returns the segmentation on the input files' grid: their shape and geometry, the plan's
/// label values. The predictor must produce `plan.num_classes()` channels and the patch must
/// have as many axes as the case's configuration (2 for `2d`, 3 for `3d_fullres`).
pub fn predict_case<P: PatchPredictor + ?Sized>(
    case: &PreprocessedCase,
    plan: &Plan,
    predictor: &mut P,
    options: &PredictOptions,
) -> Result<Volume<Label>> {
    let properties = &case.properties;
    let bad = |m: String| Err(InferError::InvalidInput(format!("case {}: {m}", properties.id)));
    if predictor.num_classes() != plan.num_classes() {
        return bad(format!("the predictor has {} classes, the plan {}", predictor.num_classes(), plan.num_classes()));
    }
    if case.images.len() != plan.channel_names.len() {
        return bad(format!("{} image channels, the plan expects {}", case.images.len(), plan.channel_names.len()));
    }
    let dims = properties.configuration.dims();
    if options.sliding_window.patch_size.len() != dims {
        return bad(format!(
            "patch {:?} does not fit the case's configuration {} ({dims} axes)",
            options.sliding_window.patch_size, properties.configuration
        ));
    }
    let seg = segment_preprocessed(&case.images, predictor, options)?;
    let mut seg = revert_to_original(&seg, properties, plan)?;
    if let Some(keep) = &options.keep_structures {
        // On the output grid, so a kept structure's voxels are exactly those of the full
        // prediction (filtering before the resampling back would move its boundary).
        for v in seg.data_mut() {
            if !keep.contains(v) {
                *v = 0;
            }
        }
    }
    Ok(seg)
}
