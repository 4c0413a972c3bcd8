//! A ConversionReview read by `json_reader` — the fields, defaults and requirements of kube's
//! `ConversionReview`, whose `serde` derive decides whatever this reader is unsure of (a
//! duplicate or mistyped field, a missing required one, a `response` in a request).
//!
//! A small review's objects are read here, as one document (strings borrowed from the text). In
//! a large review they are checked but kept as text: each is read when it is converted and
//! written to the answer straight after, so a review of thousands of objects never holds them
//! all as trees (see `stream`).

use std::borrow::Cow;

use kube::core::TypeMeta;
use kube::core::conversion::{ConversionRequest, ConversionReview};
use serde_json::Value;

use tollgate_engine::document::{Builder, Document};

use crate::http::json_reader::{Read, Reader, Unsure, once};

/// A ConversionRequest as the server converts it.
#[derive(Debug, Clone)]
pub struct RequestIn<'a> {
    pub uid: String,
    pub desired_api_version: String,
    pub objects: Objects<'a>,
}

/// The request's objects: read (a small review), the JSON array as sent (already checked: the
/// reader reads every object in it as `json_reader::document` reads it), or as `serde_json`
/// read them where the reader left the review to it.
#[derive(Debug, Clone)]
pub enum Objects<'a> {
    /// A document whose root is the array of objects; `text_len` is the array's text length.
    Read {
        document: Document<'a>,
        text_len: usize,
    },
    Text(Cow<'a, str>),
    Values(Vec<Value>),
}

impl RequestIn<'_> {
    pub fn into_owned(self) -> RequestIn<'static> {
        RequestIn {
            uid: self.uid,
            desired_api_version: self.desired_api_version,
            objects: match self.objects {
                Objects::Read { document, text_len } => Objects::Read {
                    document: document.into_owned(),
                    text_len,
                },
                Objects::Text(text) => Objects::Text(Cow::Owned(text.into_owned())),
                Objects::Values(values) => Objects::Values(values),
            },
        }
    }
}

impl From<ConversionRequest> for RequestIn<'static> {
    fn from(request: ConversionRequest) -> Self {
        Self {
            uid: request.uid,
            desired_api_version: request.desired_api_version,
            objects: Objects::Values(request.objects),
        }
    }
}

impl Objects<'_> {
    /// Every object as a `Value`; `None` if the text is not what the reader checked it to be.
    pub fn into_values(self) -> Option<Vec<Value>> {
        match self {
            Objects::Values(values) => Some(values),
            Objects::Read { document, .. } => Some(
                document
                    .root()
                    .array()?
                    .iter()
                    .map(|o| o.to_value())
                    .collect(),
            ),
            Objects::Text(text) => {
                let mut reader = Reader::new(&text);
                let values = values_of(&mut reader).ok()?;
                reader.finish().ok()?;
                Some(values)
            }
        }
    }
}

/// Document nodes to reserve for a small review's objects before reading them: the example's
/// objects take about forty each; more grow the builder as they are read.
pub const NODES_PER_OBJECT: usize = 64;

/// Reviews larger than this keep their objects as text until each is converted: a review of
/// 2000 objects (870 KiB) read whole holds tens of megabytes of trees, read back cold. Measured
/// on the example with `Value` trees: at 100 objects (44 KiB) both ways took the same time,
/// within noise; at 2000, converting each object straight after reading it took about 40 %
/// less time than reading all of them first. Below it, reading them here spares the pass that
/// checks the text.
const OBJECTS_AS_TEXT_ABOVE: usize = 64 * 1024;

/// The review's type and its request (`None` when `request` is absent or null).
pub fn review(text: &str) -> Read<(TypeMeta, Option<RequestIn<'_>>)> {
    let as_text = text.len() > OBJECTS_AS_TEXT_ABOVE;
    let mut reader = Reader::new(text);
    let mut api_version = None;
    let mut kind = None;
    let mut request = None;
    reader.object(|reader, key| match &*key {
        "apiVersion" => once(&mut api_version, reader.string()?.into_owned()),
        "kind" => once(&mut kind, reader.string()?.into_owned()),
        "request" => once(
            &mut request,
            reader.optional(|reader| request_of(reader, as_text))?,
        ),
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
    let request = match request {
        Some(request) => {
            let Some(objects) = request.objects.into_values() else {
                return Some(format!(
                    "objects checked as readable but not read as values in {text}"
                ));
            };
            Some(ConversionRequest {
                types: None,
                uid: request.uid,
                desired_api_version: request.desired_api_version,
                objects,
            })
        }
        None => None,
    };
    match serde_json::from_str::<ConversionReview>(text) {
        Ok(theirs) if theirs.types == types && theirs.request == request => None,
        Ok(theirs) => Some(format!(
            "read {types:?} {request:?}; serde reads {theirs:?}"
        )),
        Err(e) => Some(format!("read {types:?} {request:?}; serde refuses it: {e}")),
    }
}

fn request_of<'a>(reader: &mut Reader<'a>, as_text: bool) -> Read<RequestIn<'a>> {
    let mut uid = None;
    let mut desired_api_version = None;
    let mut objects = None;
    reader.object(|reader, key| match &*key {
        "uid" => once(&mut uid, reader.string()?.into_owned()),
        "desiredAPIVersion" => once(&mut desired_api_version, reader.string()?.into_owned()),
        "objects" if as_text => {
            let ((), text) = reader.with_text(|reader| reader.array(Reader::skip))?;
            once(&mut objects, Objects::Text(Cow::Borrowed(text)))
        }
        "objects" => {
            let mut builder = Builder::with_capacity(NODES_PER_OBJECT);
            let (root, text) = reader.with_text(|reader| reader.document(&mut builder))?;
            let document = builder.finish(root);
            // kube's request holds a list: anything else is serde's to refuse.
            if document.root().array().is_none() {
                return Err(Unsure);
            }
            let text_len = text.len();
            once(&mut objects, Objects::Read { document, text_len })
        }
        _ => reader.skip(),
    })?;
    Ok(RequestIn {
        uid: uid.ok_or(Unsure)?,
        desired_api_version: desired_api_version.ok_or(Unsure)?,
        objects: objects.ok_or(Unsure)?,
    })
}

/// A JSON array's items as values.
fn values_of(reader: &mut Reader<'_>) -> Read<Vec<Value>> {
    let mut values = Vec::new();
    reader.array(|reader| {
        values.push(reader.value()?);
        Ok(())
    })?;
    Ok(values)
}

#[cfg(test)]
pub(crate) mod tests {
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
            large in any::<bool>(),
        ) {
            // A large review keeps its objects as text: the padding makes one.
            let padding = if large { padding() } else { String::new() };
            let request = if null_request {
                "null".to_string()
            } else {
                object_of(vec![uid, desired, objects, extra.to_string(), padding])
            };
            agrees(&object_of(vec![api_version, kind, format!("\"request\":{request}"), response.to_string()]))?;
        }
    }

    #[test]
    fn a_small_review_has_its_objects_read_and_a_large_one_keeps_them_as_text() {
        let small = include_str!("../../../tests/fixtures/convert-mixed.json");
        let large = small.replacen("\"uid\"", &format!("{},\"uid\"", padding()), 1);
        for (text, as_text) in [(small.to_string(), false), (large, true)] {
            let objects = review(&text)
                .ok()
                .and_then(|(_, request)| request)
                .map(|r| r.objects);
            match objects {
                Some(Objects::Text(Cow::Borrowed(_))) => assert!(as_text),
                Some(Objects::Read { .. }) => assert!(!as_text),
                other => panic!("the fixture must take the fast path: {other:?}"),
            }
            assert_eq!(disagreement(&text), None);
        }
    }

    /// A request field nobody reads, large enough to make a review large.
    pub(crate) fn padding() -> String {
        format!(r#""padding":"{}""#, "x".repeat(OBJECTS_AS_TEXT_ABOVE))
    }

    #[test]
    fn objects_as_text_read_as_the_values_serde_reads() {
        let text = format!(
            r#"{{"apiVersion":"apiextensions.k8s.io/v1","kind":"ConversionReview","request":{{{},"uid":"u","desiredAPIVersion":"g/v1","objects":[{{"b":1,"a":[true,null,"\u00e9"]}}, 2.5 ,{{}}]}}}}"#,
            padding()
        );
        let read = review(&text).ok().and_then(|(_, request)| request);
        assert!(matches!(
            read.as_ref().map(|r| &r.objects),
            Some(Objects::Text(_))
        ));
        let values = read.and_then(|r| r.objects.into_values());
        let theirs = serde_json::from_str::<ConversionReview>(&text)
            .ok()
            .and_then(|r| r.request)
            .map(|r| r.objects);
        assert!(values.is_some());
        assert_eq!(values, theirs);
    }
}
