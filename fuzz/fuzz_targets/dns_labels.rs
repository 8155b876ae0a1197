//! Fuzz target `dns_labels`: the labels left of a token hostname, through every kind's DNS
//! encoding in rank order ([`trapline::kinds::decode_dns_labels`]: generic base32 data,
//! Windows folder, Log4Shell, Sensitive Command, SQL Server base64), and the generic encoding's
//! encoder and decoder ([`trapline::kinds::dns::encode_generic`] / `decode_generic`) as a pair.
//!
//! The input is used twice. As a query name (split at dots, each label read as the listener
//! reads it, lossy UTF-8): decoding must not panic, and decoded fields are known names holding
//! text no longer than the name could carry. As data to smuggle: encoding it and decoding the
//! labels must give it back (as text when it is UTF-8, else as hex) through both the generic
//! decoder and the registry, with every label at most 63 characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use trapline::kinds::dns::{decode_generic, encode_generic};
use trapline::kinds::{decode_dns_labels, DnsData};

/// Every field a DNS encoding may add to a hit.
const FIELDS: &[&str] = &[
    "generic_data",
    "windows_user",
    "windows_computer",
    "windows_domain",
    "log4shell_hostname",
    "sensitive_cmd_computer",
    "sensitive_cmd_user",
    "sensitive_cmd_invocation_id",
    "sql_username",
];

fn labels(text: &str) -> Vec<String> {
    text.split('.').map(str::to_string).collect()
}

fuzz_target!(|data: &[u8]| {
    // As a query name.
    let name = String::from_utf8_lossy(data);
    let decoded = decode_dns_labels(&labels(&name));
    if let DnsData::Decoded(fields) = &decoded {
        assert!(!fields.is_empty(), "decoded to nothing");
        for (k, v) in fields {
            assert!(FIELDS.contains(&k.as_str()), "unknown field {k:?}");
            let Value::String(s) = v else { panic!("{k} is not text: {v:?}") };
            // Base32 and base64 shrink; hex of base32 output is at most 1.25 times the text;
            // lossy UTF-8 of base64 output at most 2.25 times.
            assert!(s.len() <= 3 * name.len() + 8, "{k} of {} bytes from a {}-byte name", s.len(), name.len());
        }
    }

    // As data to smuggle, with the marker's nonce from the first byte.
    let nonce = data.first().copied().unwrap_or(0);
    let encoded = encode_generic(data, nonce);
    assert!(encoded.split('.').all(|l| !l.is_empty() && l.len() <= 63), "{encoded}");
    let expected = match std::str::from_utf8(data) {
        Ok(s) => s.to_string(),
        Err(_) => hex_of(data),
    };
    let labels = labels(&encoded);
    if data.is_empty() {
        // No chunks, only the marker: not generic data at all.
        assert_eq!(decode_generic(&labels), DnsData::NoMatch);
        return;
    }
    for (who, got) in [("decode_generic", decode_generic(&labels)), ("registry", decode_dns_labels(&labels))] {
        match got {
            DnsData::Decoded(m) => assert_eq!(m.get("generic_data"), Some(&Value::String(expected.clone())), "{who}"),
            other => panic!("{who}: {encoded} decoded to {other:?}"),
        }
    }
});

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
