//! The answer to a ConversionReview, written while its objects are converted: each object is
//! read from the review's text as a document (strings borrowed from the text), converted and
//! written to the answer before the next one is read. A review of 2000 objects thus never holds
//! 2000 trees at once (tens of megabytes as `Value`s, read back cold when the answer was
//! written): it holds its text, its answer and one object, still in cache when it is written.
//! Objects the engine converts straight from the document (`conversion::convert_document`: one
//! hop, to or from the hub) never become a `Value`; the others (two hops, errors) go through
//! `evaluate::convert`.

use kube::core::conversion::ConversionResponse;
use kube::core::{Status, TypeMeta};
use serde_json::Value;
use tollgate_engine::Store;
use tollgate_engine::conversion;
use tollgate_engine::document::{Builder, Node};

use super::read::{NODES_PER_OBJECT, Objects, RequestIn};
use super::wire;
use crate::http::json_reader::{Reader, Unsure};
use crate::http::json_writer;

/// The whole answer document when every object converts; otherwise the response for the
/// caller to encode whole (a failure, which carries no objects).
pub fn answer_body(
    store: &Store,
    types: &TypeMeta,
    request: RequestIn<'_>,
) -> Result<Vec<u8>, Box<ConversionResponse>> {
    // About the review's size: converted objects differ from the originals by their moved
    // fields and the preserved-fields annotation, rarely by more than an eighth.
    let expected_size = match &request.objects {
        Objects::Text(text) => text.len() + text.len() / 8,
        Objects::Read { text_len, .. } => text_len + text_len / 8,
        Objects::Values(_) => 0,
    };
    let mut body = Vec::with_capacity(expected_size + 256);
    if super::write_head(&mut body, types, &request.uid, &Status::success()).is_err() {
        // A Status always encodes; if it ever did not, the answer is built as a whole.
        return Err(Box::new(wire::convert_request(store, request)));
    }
    let mut failed = ConversionResponse::invalid(Status::success());
    failed.uid = request.uid;
    let desired = request.desired_api_version.as_str();
    body.extend_from_slice(b",\"convertedObjects\":[");
    let mut written = Written {
        body: &mut body,
        count: 0,
    };
    let outcome = match request.objects {
        Objects::Values(values) => values
            .into_iter()
            .try_for_each(|object| written.convert(store, object, desired)),
        Objects::Read { document, .. } => match document.root().array() {
            Some(objects) => objects
                .iter()
                .try_for_each(|object| written.convert_node(store, object, desired)),
            // Checked when the review was read: never expected.
            None => Err(Box::new(wire::unreadable_objects())),
        },
        Objects::Text(text) => {
            let mut stopped = None;
            let read = Reader::new(&text).array(|reader| {
                let mut builder = Builder::with_capacity(NODES_PER_OBJECT);
                let root = reader.document(&mut builder)?;
                let object = builder.finish(root);
                written
                    .convert_node(store, object.root(), desired)
                    .map_err(|failure| {
                        stopped = Some(failure);
                        Unsure
                    })
            });
            match (stopped, read) {
                (Some(failure), _) => Err(failure),
                (None, Ok(())) => Ok(()),
                // Checked when the review was read: never expected.
                (None, Err(Unsure)) => Err(Box::new(wire::unreadable_objects())),
            }
        }
    };
    match outcome {
        Ok(()) => {
            body.extend_from_slice(b"]}}");
            Ok(body)
        }
        Err(failure) => Err(Box::new(failed.failure(*failure))),
    }
}

/// The answer's `convertedObjects` so far.
struct Written<'b> {
    body: &'b mut Vec<u8>,
    count: usize,
}

impl Written<'_> {
    fn convert(&mut self, store: &Store, object: Value, desired: &str) -> Result<(), Box<Status>> {
        let converted = wire::convert_one(store, object, self.count, desired)?;
        self.next();
        json_writer::write_value(self.body, &converted);
        Ok(())
    }

    /// Straight from the document where the engine converts it so (one hop); through a `Value`
    /// where it leaves the object to the general conversion (two hops, errors).
    fn convert_node(
        &mut self,
        store: &Store,
        object: Node<'_>,
        desired: &str,
    ) -> Result<(), Box<Status>> {
        match conversion::convert_document(store, object, desired) {
            Some(converted) => {
                self.next();
                json_writer::write_converted(self.body, &converted);
                Ok(())
            }
            None => self.convert(store, object.to_value(), desired),
        }
    }

    /// Counts the object about to be written, after a separator if it is not the first.
    fn next(&mut self) {
        if self.count > 0 {
            self.body.push(b',');
        }
        self.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::http::conversion::Conversion;
    use crate::http::conversion::read::tests::padding;
    use crate::http::review::Review;

    /// The answer the server writes, and the one `serde_json` writes for kube's review after
    /// every object was read and converted first.
    fn both_answers(body: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let store = crate::fuzzing::example_store();
        let streamed = Conversion
            .parse(body)
            .map(|parsed| Conversion.answer(store, parsed).body)
            .unwrap_or_default();
        let whole = wire::review_body(store, body)
            .ok()
            .and_then(|review| serde_json::to_vec(&review).ok())
            .unwrap_or_default();
        (streamed, whole)
    }

    fn same_answer(body: &[u8]) -> Result<(), TestCaseError> {
        let (streamed, whole) = both_answers(body);
        prop_assert!(!whole.is_empty(), "{}", String::from_utf8_lossy(body));
        prop_assert_eq!(
            String::from_utf8_lossy(&streamed),
            String::from_utf8_lossy(&whole)
        );
        Ok(())
    }

    /// The review with a field whose `-0` the reader leaves to serde_json, and the whole review
    /// with it.
    fn with_minus_zero(body: &str) -> String {
        body.replacen("\"u-1\"", "\"u-1\",\"x\":-0", 1)
    }

    #[test]
    fn a_review_left_to_serde_json_is_converted_from_its_values() {
        let review = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "ConversionReview",
            "request": {"uid": "u-1", "desiredAPIVersion": "payments.example.com/v1alpha1", "objects": [
                {"apiVersion": "payments.example.com/v1", "kind": "PaymentGateway", "metadata": {"name": "a"}}
            ]}
        });
        let body = with_minus_zero(&review.to_string());
        let parsed = Conversion.parse(body.as_bytes()).ok();
        assert!(matches!(
            parsed.map(|(_, request)| request.objects),
            Some(Objects::Values(values)) if values.len() == 1
        ));
        let (streamed, whole) = both_answers(body.as_bytes());
        assert!(String::from_utf8_lossy(&streamed).contains("\"name\":\"a\""));
        assert_eq!(streamed, whole);
    }

    #[test]
    fn fixtures_are_answered_as_if_every_object_had_been_read_first() {
        for fixture in [
            include_str!("../../../tests/fixtures/convert-down.json"),
            include_str!("../../../tests/fixtures/convert-up.json"),
            include_str!("../../../tests/fixtures/convert-mixed.json"),
            include_str!("../../../tests/fixtures/convert-unknown-version.json"),
        ] {
            let (streamed, whole) = both_answers(fixture.as_bytes());
            assert!(!whole.is_empty());
            assert_eq!(
                String::from_utf8_lossy(&streamed),
                String::from_utf8_lossy(&whole)
            );
        }
    }

    fn object() -> impl Strategy<Value = Value> {
        let api_version = prop::sample::select(vec![
            "payments.example.com/v1",
            "payments.example.com/v1alpha1",
            "payments.example.com/v9",
            "other.example.com/v1",
        ]);
        let spec = prop::sample::select(vec![
            json!({"provider": "stripe", "endpoint": "https://e", "credentialsSecretRef": {"name": "s"}, "retry": {"maxAttempts": 3}}),
            json!({"provider": "adyen", "url": "https://u", "secretName": "s", "maxRetries": -2, "x": [1.5, null]}),
            json!({"currencies": ["USD"], "timeoutSeconds": 30}),
            json!("not an object"),
        ]);
        let name = prop::option::of("[a-z\"é]{0,6}");
        (api_version, spec, name, any::<bool>()).prop_map(|(api_version, spec, name, annotated)| {
            let mut object =
                json!({"apiVersion": api_version, "kind": "PaymentGateway", "spec": spec});
            if let Some(name) = name {
                object["metadata"] = json!({"name": name});
            }
            if annotated {
                object["metadata"]["annotations"] = json!({"a": "b"});
            }
            object
        })
    }

    proptest! {
        #[test]
        fn answers_are_written_as_if_every_object_had_been_read_first(
            objects in prop::collection::vec(object(), 0..6),
            desired in prop::sample::select(vec!["payments.example.com/v1", "payments.example.com/v1alpha1"]),
            pretty in any::<bool>(),
            by_serde in any::<bool>(),
            large in any::<bool>(),
        ) {
            let review = json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "ConversionReview",
                "request": {"uid": "u-1", "desiredAPIVersion": desired, "objects": objects}
            });
            let body = if pretty {
                serde_json::to_string_pretty(&review)
            } else {
                serde_json::to_string(&review)
            };
            let mut body = body.unwrap_or_default();
            if by_serde {
                body = with_minus_zero(&body);
            }
            if large {
                // Large enough that the objects stay text until each is converted.
                body = body.replacen("\"u-1\"", &format!("\"u-1\",{}", padding()), 1);
            }
            same_answer(body.as_bytes())?;
        }
    }
}
