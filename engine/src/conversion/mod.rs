//! CRD conversion: rules compiled from a policy's `spec.conversion`, and the hub-and-spoke
//! translation that keeps round trips lossless through the preserved-fields annotation.

mod declared;
mod fields;
mod preserved;
mod rules;
mod spec;
mod translate;

pub use preserved::PRESERVED_ANNOTATION;
pub use rules::KindConversion;
pub(crate) use rules::compile;
pub use spec::{ConversionSpec, FieldMove, SpokeSpec};
pub use translate::{ConvertError, split_api_version};
