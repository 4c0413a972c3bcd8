//! CRD conversion: rules from the policy files, the hub-and-spoke translation, and the
//! ConversionReview wire format.

pub mod fields;
pub mod preserved;
pub mod review;
pub mod rules;
pub mod translate;

pub use review::{ConversionParseError, convert_request, parse, review_body};
pub use rules::KindConversion;
pub use translate::ConvertError;
