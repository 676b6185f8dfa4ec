//! One case end to end: sliding window -> arg max -> optional level assignment
//! ([`crate::levels`]) -> optional largest component per class -> back onto the input's grid and
//! label values ([`spineseg_preprocessing::preprocess::revert_to_original`]
//! does the resampling, uncropping, reorientation and class index -> label value mapping).

use crate::error::{InferError, Result};
use crate::levels::{assign_levels, LevelAssignment, LevelOptions};
use crate::postprocess::{keep_largest_component_per_class, Connectivity};
use crate::sliding_window::{predict_sliding_window, predict_sliding_window_argmax, PatchPredictor, SlidingWindowOptions};
use spineseg_anatomy::StructureId;
use spineseg_preprocessing::neighbour_slices::with_neighbour_slices;
use spineseg_preprocessing::plan::{ConfigurationName, Plan};
use spineseg_preprocessing::preprocess::{revert_to_original, PreprocessedCase};
use spineseg_io::{Label, Volume};
use std::borrow::Cow;

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
    /// Name the vertebral bodies and discs by counting ([`crate::levels`]), after the arg max and
    /// before the largest-component step; `None` (the default of [`PredictOptions::for_plan`]):
    /// the network's own labels. `spineseg predict` turns it on for models with level classes.
    pub level_assignment: Option<LevelOptions>,
    /// 2D models: predict every slice in one window covering the whole slice, padded up to a
    /// multiple of `Some(divisor)` (the network's size divisor per in-plane axis), instead of
    /// the plan's overlapping patches (nnU-Net's way, the default `None`). Fewer network
    /// FLOPs on large fields of view (a 254 x 254 slice: one 256 x 256 window instead of nine
    /// 160 x 160 ones), but the network then sees a larger field than in training.
    pub whole_slice: Option<Vec<usize>>,
    /// With level assignment: also return the network's own labels from the same prediction
    /// ([`CasePrediction::network_labels`], what the case gives without level assignment), so
    /// both need one network pass (`predict --network-labels`).
    pub keep_network_labels: bool,
    /// 2D models with 2.5D input: stack this many neighbouring slices on each side as channels
    /// before the sliding window ([`with_neighbour_slices`]), as the model was trained
    /// (`model.json`'s `slice_context`); 0: the images as they are.
    pub slice_context: usize,
}

/// A case's segmentation and, when level assignment ran, its report.
#[derive(Debug, Clone)]
pub struct CasePrediction {
    pub labels: Volume<Label>,
    pub levels: Option<LevelAssignment>,
    /// The labels before level assignment, when [`PredictOptions::keep_network_labels`] asked
    /// for them and level assignment ran.
    pub network_labels: Option<Volume<Label>>,
}

/// Segmentation on the preprocessed grid ([`segment_preprocessed_with_levels`]).
#[derive(Debug, Clone)]
pub struct PreprocessedSegmentation {
    /// Class indices (after level assignment when it ran).
    pub classes: Volume<u8>,
    pub levels: Option<LevelAssignment>,
    /// Class indices before level assignment (see [`PredictOptions::keep_network_labels`]).
    pub network_classes: Option<Volume<u8>>,
}

impl PredictOptions {
    /// Sliding-window defaults ([`SlidingWindowOptions::new`]) with the configuration's patch
    /// size; no post-processing.
    pub fn for_plan(plan: &Plan, configuration: ConfigurationName) -> Result<Self> {
        Ok(PredictOptions {
            sliding_window: SlidingWindowOptions::for_plan(plan, configuration)?,
            largest_component: None,
            keep_structures: None,
            level_assignment: None,
            whole_slice: None,
            keep_network_labels: false,
            slice_context: 0,
        })
    }
}

/// The sliding-window options for `images`: the plan's, or with [`PredictOptions::whole_slice`]
/// one window per slice (no Gaussian weighting: a lone window's weights cancel anyway).
fn window_options<'a>(images: &[Volume<f32>], options: &'a PredictOptions) -> Result<Cow<'a, SlidingWindowOptions>> {
    let Some(divisor) = &options.whole_slice else { return Ok(Cow::Borrowed(&options.sliding_window)) };
    if options.sliding_window.patch_size.len() != 2 || divisor.len() != 2 || divisor.contains(&0) {
        return Err(InferError::InvalidOptions(format!(
            "whole-slice windows are for 2D models (patch {:?}, size divisor {divisor:?})",
            options.sliding_window.patch_size
        )));
    }
    let Some(first) = images.first() else { return Err(InferError::InvalidInput("no image channels".into())) };
    let [_, nj, nk] = first.shape();
    let mut whole = options.sliding_window.clone();
    whole.patch_size = vec![nj.next_multiple_of(divisor[0]), nk.next_multiple_of(divisor[1])];
    whole.use_gaussian = false;
    Ok(Cow::Owned(whole))
}

/// The images as the network takes them: with [`PredictOptions::slice_context`], each slice's
/// neighbours as channels.
fn network_input<'a>(images: &'a [Volume<f32>], options: &PredictOptions) -> Cow<'a, [Volume<f32>]> {
    match options.slice_context {
        0 => Cow::Borrowed(images),
        context => Cow::Owned(with_neighbour_slices(images, context)),
    }
}

/// Segments preprocessed `images` (class indices on their grid): sliding window, arg max,
/// optional largest component per class. Level assignment needs the classes' ontology ids
/// ([`segment_preprocessed_with_levels`]); here it is not done.
pub fn segment_preprocessed<P: PatchPredictor + ?Sized>(
    images: &[Volume<f32>],
    predictor: &mut P,
    options: &PredictOptions,
) -> Result<Volume<u8>> {
    let images = &*network_input(images, options);
    let mut seg = predict_sliding_window_argmax(images, predictor, &*window_options(images, options)?)?;
    if let Some(connectivity) = options.largest_component {
        keep_largest_component_per_class(&mut seg, connectivity, None);
    }
    Ok(seg)
}

/// [`segment_preprocessed`] with level assignment when [`PredictOptions::level_assignment`] is
/// set: the class scores are kept, their arg max (the same labels as without) relabelled by
/// [`assign_levels`] with the softmax as evidence, then the largest component per class (also
/// on the labels before assignment, when [`PredictOptions::keep_network_labels`] keeps them).
/// `classes`: the ontology id of each class index.
pub fn segment_preprocessed_with_levels<P: PatchPredictor + ?Sized>(
    images: &[Volume<f32>],
    predictor: &mut P,
    options: &PredictOptions,
    classes: &[StructureId],
) -> Result<PreprocessedSegmentation> {
    let Some(level_options) = &options.level_assignment else {
        let classes = segment_preprocessed(images, predictor, options)?;
        return Ok(PreprocessedSegmentation { classes, levels: None, network_classes: None });
    };
    let images = &*network_input(images, options);
    let mut scores = predict_sliding_window(images, predictor, &*window_options(images, options)?)?;
    let mut seg = scores.argmax();
    let mut network_classes = options.keep_network_labels.then(|| seg.clone());
    scores.softmax_in_place();
    let report = assign_levels(&mut seg, &scores, classes, level_options)?;
    drop(scores);
    if let Some(connectivity) = options.largest_component {
        keep_largest_component_per_class(&mut seg, connectivity, None);
        if let Some(network) = &mut network_classes {
            keep_largest_component_per_class(network, connectivity, None);
        }
    }
    Ok(PreprocessedSegmentation { classes: seg, levels: Some(report), network_classes })
}

/// Predicts one preprocessed case (from [`spineseg_preprocessing::preprocess::preprocess_case`]) and
/// returns the segmentation on the input files' grid: their shape and geometry, the plan's
/// label values. The predictor must produce `plan.num_classes()` channels and the patch must
/// have as many axes as the case's configuration (2 for `2d`, 3 for `3d_fullres`).
/// [`predict_case_with_levels`] also returns the level assignment's report.
pub fn predict_case<P: PatchPredictor + ?Sized>(
    case: &PreprocessedCase,
    plan: &Plan,
    predictor: &mut P,
    options: &PredictOptions,
) -> Result<Volume<Label>> {
    Ok(predict_case_with_levels(case, plan, predictor, options)?.labels)
}

/// [`predict_case`] with the report of level assignment (when
/// [`PredictOptions::level_assignment`] is set).
pub fn predict_case_with_levels<P: PatchPredictor + ?Sized>(
    case: &PreprocessedCase,
    plan: &Plan,
    predictor: &mut P,
    options: &PredictOptions,
) -> Result<CasePrediction> {
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
    let classes: Vec<StructureId> = plan.labels.iter().map(|l| StructureId(l.value)).collect();
    let segmentation = segment_preprocessed_with_levels(&case.images, predictor, options, &classes)?;
    let to_output = |classes: &Volume<u8>| -> Result<Volume<Label>> {
        let mut seg = revert_to_original(classes, properties, plan)?;
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
    };
    let labels = to_output(&segmentation.classes)?;
    let network_labels = segmentation.network_classes.as_ref().map(to_output).transpose()?;
    Ok(CasePrediction { labels, levels: segmentation.levels, network_labels })
}
