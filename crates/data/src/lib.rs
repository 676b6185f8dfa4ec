//! spineseg-data: the anatomy ontology, dataset adapters and synthetic phantoms.

pub mod augment;
pub mod check;
pub mod crop;
pub mod datasets;
pub mod error;
pub mod ontology;
pub mod overlay;
pub mod overlay_comparison;
pub mod partial_labels;
pub mod phantom;
pub mod pipeline;
pub mod fingerprint;
pub mod plan;
pub mod plot;
pub mod preprocess;
pub mod resample;
pub mod sampling;

pub use ontology::{Level, Ontology, Region, Structure, StructureId, StructureKind, StructureNameError};
