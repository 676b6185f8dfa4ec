pub mod convert;
pub mod dataset;
pub mod info;
pub mod overlay;
pub mod phantom;
