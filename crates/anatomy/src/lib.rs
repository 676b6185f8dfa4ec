//! spineseg-anatomy: the lumbar spine ontology (stable structure ids, kinds, levels, neighbours,
//! names and colours). A leaf crate: no image, CSV or thread-pool dependencies, so the text
//! crate's prompts and every data stage can share it.

pub mod ontology;
pub mod prompts;

pub use ontology::{Level, Ontology, Region, Structure, StructureId, StructureKind};
