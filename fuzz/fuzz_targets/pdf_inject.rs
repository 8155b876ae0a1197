//! Fuzz target `pdf_inject`: arbitrary bytes as the `pdf` upload of a pdf-acrobat-reader
//! token, through the injector ([`trapline::artefacts::pdf::inject`]: header, `startxref`,
//! cross-reference tables, streams and hybrids, object streams, filters and predictors, the
//! page tree, the merge of the first page's `/AA`).
//!
//! Refusing is always allowed; panicking, hanging or running away with memory never is. For
//! every input the injector accepts, the output is checked with the module's own reader
//! ([`trapline::artefacts::pdf::inspect`]):
//! - it starts with the input, byte for byte (an incremental update only appends);
//! - it reads back, with the same first page (object number and generation), whose keys are
//!   the original's with `/AA` last, and whose page-open actions are the injected URI first,
//!   then exactly the ones the original had (when the chain is short enough to follow whole);
//! - injecting into it again works the same way (the update is itself a well-formed PDF).
#![no_main]

use libfuzzer_sys::fuzz_target;
use trapline::artefacts::pdf::{inject, inspect, PdfError};

const URI: &str = "http://abcdefghijklmnopqrstuvwxy.nx.fuzz.test/";
const AGAIN: &str = "http://zyxwvutsrqponmlkjihgfedc.nx.fuzz.test/";

fuzz_target!(|data: &[u8]| {
    let Ok(out) = inject(data, URI, [7; 16]) else { return };
    assert!(out.starts_with(data), "the input's bytes are not kept");
    let before = inspect(data).expect("an input the injector accepted reads");
    let after = inspect(&out).unwrap_or_else(|e| panic!("the injector's output does not read back: {e}"));
    assert_eq!(after.object, before.object, "another first page");
    let mut keys: Vec<Vec<u8>> = before.keys.iter().filter(|k| k.as_slice() != b"AA").cloned().collect();
    keys.push(b"AA".to_vec());
    assert_eq!(after.keys, keys, "the page's keys changed");
    assert_eq!(after.open_uris.first().map(Vec::as_slice), Some(URI.as_bytes()), "no injected action");
    if !before.actions_cut_short && !after.actions_cut_short {
        assert_eq!(after.open_uris[1..], before.open_uris[..], "the page's own open actions changed");
    }

    match inject(&out, AGAIN, [8; 16]) {
        Ok(twice) => {
            let again = inspect(&twice).expect("a second update reads back");
            assert_eq!(again.object, before.object);
            assert_eq!(again.open_uris[0], AGAIN.as_bytes());
            if !after.actions_cut_short && !again.actions_cut_short {
                assert_eq!(again.open_uris[1..], after.open_uris[..]);
            }
        }
        // Only numbers running out (a file already at the highest object number) may stop it.
        Err(PdfError::Damaged(why)) if why.contains("object numbers") => {}
        Err(e) => panic!("the injector refuses its own output: {e}"),
    }
});
