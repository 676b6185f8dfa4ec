//! Encoders: a stack of stages returning one skip per stage, full resolution first.

pub mod plain_conv;

pub use plain_conv::PlainConvEncoder;
