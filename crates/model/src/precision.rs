//! The float precision of a weights file (shared by every network kind's save and load).

use burn::module::{ModuleMapper, Param};
use burn::tensor::{DType, Tensor};

/// How a weights file stores the float parameters. Half precision halves a shipped model's
/// file; loading casts back to f32 either way (see [`crate::Network::try_load_file`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightPrecision {
    Single,
    Half,
}

/// Casts every float parameter to one dtype.
pub(crate) struct CastFloats(pub(crate) DType);

impl ModuleMapper for CastFloats {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|tensor| tensor.cast(dtype))
    }
}
