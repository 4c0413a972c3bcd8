//! An AdmissionReview read by `json_reader` — the same fields, defaults and requirements as
//! the `serde` derive of `AdmissionReviewIn`, which decides whatever this reader is unsure of
//! (a duplicate or mistyped field, a missing required one, the sequence form of a struct).

use std::borrow::Cow;

use kube::core::admission::Operation;
use smallvec::SmallVec;

use tollgate_engine::document::Builder;

use super::wire::{
    AdmissionRequestIn, AdmissionReviewIn, KindIn, ObjectForm, ObjectIn, ResourceIn, Text,
    UserInfoIn,
};
use crate::http::json_reader::{Read, Reader, Unsure, once};

pub fn review(text: &str, form: ObjectForm) -> Read<AdmissionReviewIn<'_>> {
    let mut reader = Reader::new(text);
    let mut api_version = None;
    let mut kind = None;
    let mut request = None;
    reader.object(|reader, key| match &*key {
        "apiVersion" => once(&mut api_version, text_of(reader)?),
        "kind" => once(&mut kind, text_of(reader)?),
        "request" => once(
            &mut request,
            reader.optional(|reader| request_of(reader, form))?,
        ),
        _ => reader.skip(),
    })?;
    reader.finish()?;
    Ok(AdmissionReviewIn {
        api_version: api_version.ok_or(Unsure)?,
        kind: kind.ok_or(Unsure)?,
        request: request.flatten(),
    })
}

fn text_of<'a>(reader: &mut Reader<'a>) -> Read<Text<'a>> {
    reader.string().map(Text::from)
}

fn request_of<'a>(reader: &mut Reader<'a>, form: ObjectForm) -> Read<Box<AdmissionRequestIn<'a>>> {
    let mut uid = None;
    let mut kind = None;
    let mut resource = None;
    let mut sub_resource = None;
    let mut name = None;
    let mut namespace = None;
    let mut operation = None;
    let mut object = None;
    let mut old_object = None;
    let mut user_info = None;
    let mut dry_run = None;
    let (mut kind_text, mut resource_text) = ("", "");
    reader.object(|reader, key| match &*key {
        "uid" => once(&mut uid, text_of(reader)?),
        "kind" => {
            let read;
            (read, kind_text) = reader.with_text(kind_of)?;
            once(&mut kind, read)
        }
        "resource" => {
            let read;
            (read, resource_text) = reader.with_text(resource_of)?;
            once(&mut resource, read)
        }
        "requestKind" => reader.skip_repeated(kind_text),
        "requestResource" => reader.skip_repeated(resource_text),
        "subResource" => once(&mut sub_resource, reader.optional(text_of)?),
        "name" => once(&mut name, text_of(reader)?),
        "namespace" => once(&mut namespace, reader.optional(text_of)?),
        "operation" => once(&mut operation, operation_of(reader)?),
        "object" => once(&mut object, reader.optional(|r| object_of(r, form))?),
        "oldObject" => once(&mut old_object, reader.optional(|r| object_of(r, form))?),
        "userInfo" => once(&mut user_info, user_info_of(reader)?),
        "dryRun" => once(&mut dry_run, reader.optional(Reader::bool)?),
        _ => reader.skip(),
    })?;
    Ok(Box::new(AdmissionRequestIn {
        uid: uid.ok_or(Unsure)?,
        kind: kind.ok_or(Unsure)?,
        resource: resource.ok_or(Unsure)?,
        sub_resource: sub_resource.flatten(),
        name: name.unwrap_or_default(),
        namespace: namespace.flatten(),
        operation: operation.ok_or(Unsure)?,
        object: object.flatten(),
        old_object: old_object.flatten(),
        user_info: user_info.unwrap_or_default(),
        dry_run: dry_run.flatten(),
    }))
}

fn object_of<'a>(reader: &mut Reader<'a>, form: ObjectForm) -> Read<ObjectIn<'a>> {
    match form {
        ObjectForm::Value => reader.value().map(ObjectIn::Value),
        ObjectForm::Document => {
            let mut builder = Builder::with_capacity(64);
            let root = reader.document(&mut builder)?;
            Ok(ObjectIn::Document(builder.finish(root)))
        }
    }
}

/// A struct of three required strings (GroupVersionKind, GroupVersionResource): `group`,
/// `version` and the one `third` names. Names are matched against literals, which compile to
/// a few integer comparisons rather than a call to `memcmp` each.
#[inline]
fn three_texts<'a>(reader: &mut Reader<'a>, third: impl Fn(&str) -> bool) -> Read<[Text<'a>; 3]> {
    let mut found: [Option<Text<'a>>; 3] = [None, None, None];
    reader.object(|reader, key| {
        let index = match &*key {
            "group" => 0,
            "version" => 1,
            name if third(name) => 2,
            _ => return reader.skip(),
        };
        once(&mut found[index], text_of(reader)?)
    })?;
    let [a, b, c] = found;
    Ok([a.ok_or(Unsure)?, b.ok_or(Unsure)?, c.ok_or(Unsure)?])
}

fn kind_of<'a>(reader: &mut Reader<'a>) -> Read<KindIn<'a>> {
    let [group, version, kind] = three_texts(reader, |name| name == "kind")?;
    Ok(KindIn {
        group,
        version,
        kind,
    })
}

fn resource_of<'a>(reader: &mut Reader<'a>) -> Read<ResourceIn<'a>> {
    let [group, version, resource] = three_texts(reader, |name| name == "resource")?;
    Ok(ResourceIn {
        group,
        version,
        resource,
    })
}

fn operation_of(reader: &mut Reader<'_>) -> Read<Operation> {
    match &*reader.string()? {
        "CREATE" => Ok(Operation::Create),
        "UPDATE" => Ok(Operation::Update),
        "DELETE" => Ok(Operation::Delete),
        "CONNECT" => Ok(Operation::Connect),
        _ => Err(Unsure),
    }
}

fn user_info_of<'a>(reader: &mut Reader<'a>) -> Read<UserInfoIn<'a>> {
    let mut username = None;
    let mut groups = None;
    reader.object(|reader, key| match &*key {
        "username" => once(&mut username, text_of(reader)?),
        "groups" => {
            let mut read = SmallVec::new();
            reader.array(|reader| {
                read.push(reader.string()?);
                Ok(())
            })?;
            once(&mut groups, read)
        }
        _ => reader.skip(),
    })?;
    Ok(UserInfoIn {
        username: username.unwrap_or_default(),
        groups: groups.unwrap_or_default(),
    })
}

/// Where this reader and the `serde` derive read `text` differently, if they do (fuzz targets
/// and tests): being unsure is always allowed, reading it otherwise never.
pub fn disagreement(text: &str) -> Option<String> {
    [ObjectForm::Value, ObjectForm::Document]
        .into_iter()
        .find_map(|form| disagreement_in(text, form))
}

fn disagreement_in(text: &str, form: ObjectForm) -> Option<String> {
    let ours = format!("{:?}", review(text, form).ok()?);
    match serde_json::from_str::<AdmissionReviewIn>(text) {
        Ok(theirs) if format!("{theirs:?}") == ours => None,
        Ok(theirs) => Some(format!("read {ours} ({form:?}); serde reads {theirs:?}")),
        Err(e) => Some(format!("read {ours} ({form:?}); serde refuses it: {e}")),
    }
}

impl<'a> From<Cow<'a, str>> for Text<'a> {
    fn from(text: Cow<'a, str>) -> Self {
        Text::new(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::http::json_strategies::{field, object_of};

    fn agrees(text: &str) -> Result<(), TestCaseError> {
        prop_assert_eq!(disagreement(text), None);
        Ok(())
    }

    fn any_request() -> impl Strategy<Value = String> {
        let gvk = &[
            r#"{"group":"g","version":"v1","kind":"K"}"#,
            r#"{"kind":"K","version":"v1","group":"","extra":{"x":[1]}}"#,
            r#"{"group":"g","version":"v1"}"#,
            r#"["g","v1","K"]"#,
        ];
        let gvr = &[
            r#"{"group":"g","version":"v1","resource":"ks"}"#,
            r#"{"group":"g","version":"v1","resource":"ks","kind":"K"}"#,
        ];
        let object = &[
            r#"{"apiVersion":"g/v1","kind":"K","metadata":{"name":"a\"b"},"spec":{"n":-1,"f":1.5e3,"l":[true,null,{}]}}"#,
            r#"{}"#,
            r#""text""#,
            r#"[1,2]"#,
        ];
        (
            field("uid", &[r#""u-1""#, r#""""#, r#""\u0075id""#]),
            field("kind", gvk),
            field("resource", gvr),
            field("subResource", &[r#""status""#, r#""""#]),
            field("name", &[r#""n""#, r#""n\n""#]),
            field("namespace", &[r#""ns""#]),
            field(
                "operation",
                &[
                    r#""CREATE""#,
                    r#""UPDATE""#,
                    r#""DELETE""#,
                    r#""CONNECT""#,
                    r#""create""#,
                    r#""UPD\u0041TE""#,
                ],
            ),
            field("object", object),
            field("oldObject", object),
            field(
                "userInfo",
                &[
                    r#"{"username":"alice","groups":["system:authenticated","g\u00e9"]}"#,
                    r#"{"uid":"1","extra":{"a":["b"]}}"#,
                    r#"{"groups":[1]}"#,
                    r#"{"groups":null}"#,
                ],
            ),
            field("dryRun", &["true", "false"]),
            // Skipped fields, well-formed or not: escapes, control characters, nesting,
            // whitespace, repeated keys, missing separators.
            prop::sample::select(vec![
                "",
                r#""options":{"kind":"CreateOptions"}"#,
                r#""requestKind":{"group":"g"}"#,
                // Equal to a `kind` and a `resource` drawn above (read without a second scan).
                r#""requestKind":{"group":"g","version":"v1","kind":"K"}"#,
                r#""requestResource":{"group":"g","version":"v1","resource":"ks"}"#,
                r#""requestKind":{"group":"g","version":"v1","kind":"K"}}"#,
                r#""requestKind":{"group":"g","version":"v1","kind":"K","#,
                r#""options":{"k\u0069nd":"Cr\"eate","a":[{"b":[]},"\ud83d\ude00",-0.5e1]}"#,
                r#""options" : { "kind" : "C" , "kind" : { } }"#,
                "\"options\":{\"kind\":\"tab\there\"}",
                r#""options":{"kind":"\q"}"#,
                r#""options":{"kind":"\ud800"}"#,
                r#""options":{"kind":"C" "x":1}"#,
                r#""options":{"kind":}"#,
                r#""options":["a",{"b":"c\n"},]"#,
            ]),
        )
            .prop_map(|fields| {
                let (a, b, c, d, e, f, g, h, i, j, k, l) = fields;
                object_of(vec![a, b, c, d, e, f, g, h, i, j, k, l.to_string()])
            })
    }

    proptest! {
        #[test]
        fn reviews_read_as_the_serde_derive_reads_them(
            request in any_request(),
            api_version in field("apiVersion", &[r#""admission.k8s.io/v1""#, r#""v\u0031""#]),
            kind in field("kind", &[r#""AdmissionReview""#]),
            request_field in prop::sample::select(vec!["request", "req\\u0075est", "other"]),
            null_request in any::<bool>(),
            shuffle in any::<bool>(),
        ) {
            let request = if null_request { "null".to_string() } else { request };
            let request = format!("\"{request_field}\":{request}");
            let mut fields = vec![api_version, kind, request];
            if shuffle {
                fields.reverse();
            }
            agrees(&object_of(fields))?;
        }
    }

    #[test]
    fn skipped_fields_are_checked_as_read_ones_are() {
        let with_options = |options: &str| {
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","kind":{{"group":"g","version":"v1","kind":"K"}},"resource":{{"group":"g","version":"v1","resource":"ks"}},"operation":"CREATE","options":{options}}}}}"#
            )
        };
        for fine in [
            r#"{"k\u0069nd":"Cr\"eate","a":[{"b":[]},"\ud83d\ude00",-0.5e1]}"#,
            r#"{ "kind" : "C" , "kind" : { } }"#,
        ] {
            let text = with_options(fine);
            assert!(review(&text, ObjectForm::Document).is_ok(), "{text}");
            assert_eq!(disagreement(&text), None);
        }
        for unsure in [
            "{\"kind\":\"tab\there\"}",
            r#"{"kind":"\q"}"#,
            r#"{"kind":"\ud800"}"#,
            r#"{"kind":"C" "x":1}"#,
        ] {
            let text = with_options(unsure);
            assert_eq!(
                review(&text, ObjectForm::Document).err(),
                Some(Unsure),
                "{text}"
            );
            // serde_json then decides (it refuses all but the lone surrogate, which it skips).
            assert_eq!(disagreement(&text), None);
        }
    }

    #[test]
    fn a_review_the_apiserver_sends_is_read_here() {
        let text = include_str!("../../../tests/fixtures/validate-allow.json");
        let theirs = serde_json::from_str::<AdmissionReviewIn>(text).map(|r| format!("{r:?}"));
        for form in [ObjectForm::Value, ObjectForm::Document] {
            let ours = review(text, form);
            assert!(ours.is_ok(), "the fixture must take the fast path");
            assert_eq!(
                ours.map(|r| format!("{r:?}")).ok(),
                theirs.as_ref().ok().cloned()
            );
        }
    }
}
