pub mod convert;
pub mod dataset;
pub mod evaluate;
pub mod info;
pub mod overlay;
pub mod phantom;
pub mod plan;
