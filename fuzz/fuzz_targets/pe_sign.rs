//! Fuzz target `pe_sign`: an upload as the signed-exe kind signs it, through
//! [`trapline::artefacts::authenticode::CodeSigningCa::sign_pe`] (PE parsing, stripping an
//! existing signature, the Authenticode digest, the certificates and the SignedData, the
//! certificate table and the checksum).
//!
//! Input: the uploaded file (any bytes).
//! Invariants: no panic; a refusal says why; an accepted file re-parses as a PE whose
//! signature [`trapline::artefacts::authenticode::inspect`] reads back with the image's own
//! digest, a matching message digest and a signature that verifies with the embedded leaf,
//! which the CA issued; the output is 8-byte aligned, keeps every byte of the input before its
//! old signature but the checksum and the certificate-table entry, and signing it again
//! replaces the signature and keeps the digest.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use trapline::artefacts::authenticode::{inspect, issued_by, CodeSigningCa, LeafSpec};
use trapline::artefacts::pe;

fn ca() -> &'static CodeSigningCa {
    static CA: OnceLock<CodeSigningCa> = OnceLock::new();
    CA.get_or_init(|| CodeSigningCa::generate("Fuzz Software Ltd", 1_800_000_000))
}

fn spec() -> LeafSpec {
    let host = "abcdefghijklmnopqrstuvwxy.nx.t.test";
    LeafSpec {
        publisher: "Fuzz Software Ltd".into(),
        crl_url: format!("http://crl.{host}/pki/codesign.crl"),
        ca_issuers_url: format!("http://aia.{host}/pki/codesign.crt"),
        ocsp_url: format!("http://ocsp.{host}/"),
        now: 1_800_000_000,
    }
}

/// Whether `a` and `b` agree on their first `n` bytes, but for the checksum and the
/// certificate-table entry.
fn same_but_patched(a: &[u8], b: &[u8], n: usize, layout: &pe::Layout) -> bool {
    a.len() >= n
        && b.len() >= n
        && (0..n).all(|i| {
            a[i] == b[i]
                || (layout.checksum_offset..layout.checksum_offset + 4).contains(&i)
                || (layout.cert_entry_offset..layout.cert_entry_offset + 8).contains(&i)
        })
}

fuzz_target!(|data: &[u8]| {
    let layout = pe::parse(data);
    let signed = match ca().sign_pe(data, &spec()) {
        Ok(s) => s,
        Err(e) => {
            assert!(!e.0.is_empty());
            assert!(layout.is_err(), "signing refused a file that parses: {e}");
            return;
        }
    };
    let layout = layout.expect("a signed file parsed");
    assert_eq!(signed.replaced_signature, layout.cert_table.is_some());
    let out = &signed.bytes;
    assert_eq!(out.len() % 8, 0);
    let kept = layout.cert_table.map_or(data.len(), |(at, _)| at);
    assert!(same_but_patched(data, out, kept, &layout), "the image changed");
    let got = inspect(out).expect("the signed file reads back");
    assert!(got.digest_matches && got.message_digest_matches && got.signature_verifies && got.signer_is_leaf);
    assert_eq!(got.certificates.len(), 1);
    assert!(issued_by(&got.certificates[0], ca().cert_der()));
    let out_layout = pe::parse(out).expect("the signed file parses");
    assert_eq!(pe::checksum(out, out_layout.checksum_offset).to_le_bytes()[..], out[out_layout.checksum_offset..][..4]);
    let again = ca().sign_pe(out, &spec()).expect("a signed file signs again");
    assert!(again.replaced_signature);
    assert_eq!(again.digest, signed.digest);
    let table_at = out_layout.cert_table.expect("the signed file has a certificate table").0;
    assert!(same_but_patched(out, &again.bytes, table_at, &out_layout), "re-signing changed the image");
});
