//! The benchmarks' shared BENCHMARKS.md sections: replaced in place by their own benchmark, kept
//! by the load suite when it rewrites the file.

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../benches/shared/sections.rs"]
mod sections;

#[test]
fn a_section_is_replaced_in_place_and_found_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("BENCHMARKS.md");
    std::fs::write(&file, "# tollgate benchmarks\n\n## Targets\n").unwrap();
    sections::replace(&file, "audit", "## Audit\n\nfirst").unwrap();
    sections::replace(&file, "other", "## Other").unwrap();
    sections::replace(&file, "audit", "## Audit\n\nsecond").unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        text,
        "# tollgate benchmarks\n\n## Targets\n\n\
         <!-- section: audit -->\n## Audit\n\nsecond\n<!-- /section -->\n\n\
         <!-- section: other -->\n## Other\n<!-- /section -->\n"
    );
    assert_eq!(
        sections::sections(&text),
        "<!-- section: audit -->\n## Audit\n\nsecond\n<!-- /section -->\n\n\
         <!-- section: other -->\n## Other\n<!-- /section -->\n\n"
    );
}
