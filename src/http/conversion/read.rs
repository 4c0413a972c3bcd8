//! A ConversionReview read by `json_reader` — the fields, defaults and requirements of kube's
//! `ConversionReview`, whose `serde` derive decides whatever this reader is unsure of (a
//! duplicate or mistyped field, a missing required one, a `response` in a request).

use kube::core::TypeMeta;
use kube::core::conversion::{ConversionRequest, ConversionReview};
use serde_json::Value;

use crate::http::json_reader::{Read, Reader, Unsure, once};

/// The review's type and its request (`None` when `request` is absent or null).
pub fn review(text: &str) -> Read<(TypeMeta, Option<ConversionRequest>)> {
    let mut reader = Reader::new(text);
    let mut api_version = None;
    let mut kind = None;
    let mut request = None;
    reader.object(|reader, key| match &*key {
        "apiVersion" => once(&mut api_version, reader.string()?.into_owned()),
        "kind" => once(&mut kind, reader.string()?.into_owned()),
        "request" => once(&mut request, reader.optional(request_of)?),
        // Answers are not requests; serde's view of one is the reference.
        "response" => Err(Unsure),
        _ => reader.skip(),
    })?;
    reader.finish()?;
    let types = TypeMeta {
        api_version: api_version.ok_or(Unsure)?,
        kind: kind.ok_or(Unsure)?,
    };
    Ok((types, request.flatten()))
}

/// Where this reader and kube's `ConversionReview` read `text` differently, if they do (fuzz
/// targets and tests): being unsure is always allowed, reading it otherwise never.
pub fn disagreement(text: &str) -> Option<String> {
    let (types, request) = review(text).ok()?;
    match serde_json::from_str::<ConversionReview>(text) {
        Ok(theirs) if theirs.types == types && theirs.request == request => None,
        Ok(theirs) => Some(format!(
            "read {types:?} {request:?}; serde reads {theirs:?}"
        )),
        Err(e) => Some(format!("read {types:?} {request:?}; serde refuses it: {e}")),
    }
}

fn request_of(reader: &mut Reader<'_>) -> Read<ConversionRequest> {
    let mut uid = None;
    let mut desired_api_version = None;
    let mut objects = None;
    reader.object(|reader, key| match &*key {
        "uid" => once(&mut uid, reader.string()?.into_owned()),
        "desiredAPIVersion" => once(&mut desired_api_version, reader.string()?.into_owned()),
        "objects" => {
            let mut read: Vec<Value> = Vec::new();
            reader.array(|reader| {
                read.push(reader.value()?);
                Ok(())
            })?;
            once(&mut objects, read)
        }
        _ => reader.skip(),
    })?;
    Ok(ConversionRequest {
        types: None,
        uid: uid.ok_or(Unsure)?,
        desired_api_version: desired_api_version.ok_or(Unsure)?,
        objects: objects.ok_or(Unsure)?,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::http::json_strategies::{field, object_of};

    use super::*;

    fn agrees(text: &str) -> Result<(), TestCaseError> {
        prop_assert_eq!(disagreement(text), None);
        Ok(())
    }

    proptest! {
        #[test]
        fn reviews_read_as_kubes_conversion_review_reads_them(
            uid in field("uid", &[r#""u-1""#, r#""""#]),
            desired in field("desiredAPIVersion", &[r#""g/v2""#, r#""g\/v1""#]),
            objects in field("objects", &[
                r#"[]"#,
                r#"[{"apiVersion":"g/v1","kind":"K","spec":{"n":-5,"f":0.25,"s":"\u00e9"}},{"apiVersion":"g/v2"}]"#,
                r#"[1,"a",null]"#,
            ]),
            extra in prop::sample::select(vec!["", r#""x":{"y":[1]}"#]),
            api_version in field("apiVersion", &[r#""apiextensions.k8s.io/v1""#]),
            kind in field("kind", &[r#""ConversionReview""#]),
            response in prop::sample::select(vec!["", r#""response":null"#, r#""response":{"uid":"u","convertedObjects":[],"result":{"status":"Success"}}"#]),
            null_request in any::<bool>(),
        ) {
            let request = if null_request {
                "null".to_string()
            } else {
                object_of(vec![uid, desired, objects, extra.to_string()])
            };
            agrees(&object_of(vec![api_version, kind, format!("\"request\":{request}"), response.to_string()]))?;
        }
    }

    #[test]
    fn a_review_the_apiserver_sends_is_read_here() {
        let text = include_str!("../../../tests/fixtures/convert-mixed.json");
        let theirs = serde_json::from_str::<ConversionReview>(text).ok();
        let ours = review(text).ok();
        assert!(ours.is_some(), "the fixture must take the fast path");
        assert_eq!(ours, theirs.map(|r| (r.types, r.request)));
    }
}
