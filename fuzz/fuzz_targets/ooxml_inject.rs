//! Fuzz target `ooxml_inject`: an uploaded `doc` through both Office injectors,
//! [`trapline::kinds::doc_msword::inject`] and [`trapline::kinds::doc_msexcel::inject`] (the
//! package reader's limits and sniffing, content types, relationships, the XML scans and splices).
//!
//! Input: one mode byte, then the data. Mode bit 0 clear: the data is the upload itself (so the
//! zip reader meets arbitrary bytes). Set: the data is split at `\n--\n` into the texts of the
//! parts named in [`PARTS`] (empty chunks are left out), stored in a zip made here, so the
//! fuzzer reaches the XML handling without mutating through deflate and CRCs.
//! Invariants: no panic; an upload that is not a zip, or has no `[Content_Types].xml`, is
//! refused; when an injector accepts, its output reads back as a package (limits lifted: a part
//! the user stored uncompressed is written deflated), its main part has the kind's type, every
//! entry of the upload is still there, every part that changed or is new is well-formed UTF-8
//! XML, and a relationship part that changed links the token URL as an external target.
#![no_main]

use std::io::{Cursor, Write};

use libfuzzer_sys::fuzz_target;
use trapline::artefacts::ooxml::{walk, Error, Limits, Package};
use trapline::kinds::{doc_msexcel, doc_msword};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

const URL: &str = "http://fuzz.test/images/abcdefghijklmnopqrstuvwxy/index.html";

/// The parts of the structured mode, in order (as fuzz/make_corpus.py writes them).
const PARTS: &[&str] = &[
    "[Content_Types].xml",
    "_rels/.rels",
    "word/document.xml",
    "word/_rels/document.xml.rels",
    "word/settings.xml",
    "word/footer1.xml",
    "xl/workbook.xml",
    "xl/_rels/workbook.xml.rels",
    "xl/worksheets/sheet1.xml",
    "xl/worksheets/_rels/sheet1.xml.rels",
    "xl/drawings/drawing1.xml",
];

const LIFTED: Limits =
    Limits { max_bytes: usize::MAX, max_entries: usize::MAX, max_part: u64::MAX, max_total: u64::MAX, max_ratio: u64::MAX };

fn package_of(data: &[u8]) -> Vec<u8> {
    let mut z = ZipWriter::new(Cursor::new(Vec::new()));
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    let mut rest = data;
    for name in PARTS {
        let (chunk, next) = match rest.windows(4).position(|w| w == b"\n--\n") {
            Some(i) => (&rest[..i], &rest[i + 4..]),
            None => (rest, &[][..]),
        };
        rest = next;
        if !chunk.is_empty() {
            z.start_file(*name, stored).expect("zip to memory");
            z.write_all(chunk).expect("zip to memory");
        }
    }
    z.finish().expect("zip to memory").into_inner()
}

fn check(upload: &[u8], out: &[u8], main_type: &str) {
    let mut before = Package::read(upload, Limits::UPLOAD).expect("the upload was read once");
    let mut after = Package::read(out, LIFTED).expect("the output reads back");
    assert_eq!(after.main_part().expect("a main part").1, main_type);
    let names: Vec<String> = after.names().map(str::to_string).collect();
    for n in before.names() {
        assert!(names.iter().any(|m| m == n), "{n} was dropped");
    }
    let mut linked = false;
    for n in &names {
        let new = after.part(n);
        let old = if before.has(n) { Some(before.part(n)) } else { None };
        match (old, new) {
            // Untouched and unreadable (copied raw, as it came).
            (Some(Err(_)), Err(_)) => {}
            (Some(Ok(Some(old))), Ok(Some(new))) if old == new => {}
            (_, Ok(Some(new))) => {
                let text = std::str::from_utf8(&new).unwrap_or_else(|_| panic!("{n} is not UTF-8"));
                walk(n, text, |_| Ok(())).unwrap_or_else(|e| panic!("{n}: {e}\n{text}"));
                if n.ends_with(".rels") && text.contains(&format!("Target=\"{URL}\" TargetMode=\"External\"")) {
                    linked = true;
                }
            }
            (_, other) => panic!("{n}: written but unreadable: {other:?}"),
        }
    }
    assert!(linked, "no changed relationship part links the URL");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else { return };
    let built;
    let upload = if mode & 1 == 0 {
        data
    } else {
        built = package_of(data);
        &built[..]
    };
    let kinds: [(fn(&[u8], &str) -> Result<Vec<u8>, Error>, &str); 2] = [
        (doc_msword::inject, "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"),
        (doc_msexcel::inject, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"),
    ];
    for (inject, main_type) in kinds {
        match inject(upload, URL) {
            Ok(out) => check(upload, &out, main_type),
            Err(e) => {
                if !upload.starts_with(b"PK") && !upload.starts_with(&[0xD0, 0xCF, 0x11, 0xE0]) {
                    assert!(matches!(e, Error::NotZip | Error::TooLarge { .. }), "{e:?}");
                }
            }
        }
    }
});
