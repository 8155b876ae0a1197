//! Fuzz target `ovba_compress`: the [MS-OVBA] compression of VBA projects
//! ([`trapline::artefacts::vba::compress`] / `decompress`): a macro document kind compresses
//! module source and the `dir` stream with it, and the decompressor must hold against hostile
//! streams (an uploaded document's project).
//!
//! The input is used twice. As data to compress: decompressing the result gives it back
//! exactly, except in the one case the format cannot express (a final chunk of 3641 to 4095
//! bytes that does not shrink is stored raw, padded with zeros to 4096 as the specification
//! says), where the data must come back followed by only those zeros. As a compressed
//! container: decompressing never panics, never exceeds its limit, and what it gives
//! round-trips through compression in turn.
//!
//! Seeds (fuzz/corpus/ovba_compress/): the compressed `dir` and module streams of a
//! vbaProject.bin Trapline built, the module source they hold, and 4000 random bytes (the
//! padded raw tail).
#![no_main]

use libfuzzer_sys::fuzz_target;
use trapline::artefacts::vba::{compress, decompress};

/// What decompressing may produce at most (a real module is a few hundred KiB at most).
const LIMIT: usize = 1 << 20;
const CHUNK: usize = 4096;

fn check_round_trip(data: &[u8]) {
    let packed = compress(data);
    let back = decompress(&packed, usize::MAX).expect("our own container decompresses");
    if back != data {
        let tail = data.len() % CHUNK;
        assert!(tail > 3640, "{} bytes came back as {}", data.len(), back.len());
        assert_eq!(back.len(), data.len() - tail + CHUNK, "padded length");
        assert_eq!(&back[..data.len()], data, "padded data differs");
        assert!(back[data.len()..].iter().all(|&b| b == 0), "padding is not zeros");
        // The padded final chunk is the raw one: header 0x3FFF, 4096 bytes.
        let last = packed.len() - CHUNK - 2;
        assert_eq!(&packed[last..last + 2], &[0xFF, 0x3F]);
    }
    // A container is its signature and at most 2 + 4096 bytes per chunk.
    assert!(packed.len() <= 1 + data.len().div_ceil(CHUNK) * (CHUNK + 2));
}

fuzz_target!(|data: &[u8]| {
    check_round_trip(data);
    if let Ok(out) = decompress(data, LIMIT) {
        assert!(out.len() <= LIMIT);
        check_round_trip(&out);
    }
});
