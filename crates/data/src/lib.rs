//! spineseg-data: the anatomy ontology, dataset adapters and synthetic phantoms.

pub mod check;
pub mod datasets;
pub mod error;
pub mod ontology;

pub use ontology::{Level, Ontology, Region, Structure, StructureId, StructureKind};
