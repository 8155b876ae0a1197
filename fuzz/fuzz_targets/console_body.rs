//! Fuzz target `console_body`: a Console API request's parameters, read exactly as every
//! endpoint reads them ([`trapline::dialects::console::read_params`]): the query string, then
//! a form-urlencoded, JSON or multipart body by its content type, with the body, part, size
//! and NUL checks.
//!
//! Input: the Content-Type value on the first line (empty: none sent), the query string on the
//! second, then the body. Invariants: a refusal is a 4xx, never a server error or a panic;
//! accepted parameters hold no NUL and no value over the size limit; a multipart body yields
//! at most the part limit of fields, and its files no more bytes than the body had; a form
//! body's parameters are the query's, overridden by the body's, as `form_urlencoded` reads
//! them; a JSON body's are its top-level strings, numbers and booleans.
#![no_main]

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use trapline::dialects::console::{read_params, MAX_PARAM, MAX_PARTS};

fuzz_target!(|data: &[u8]| {
    let (head, body) = trapline_fuzz::lines(data, 2);
    let (ctype, query) = (head[0], head[1]);
    let Ok(query) = std::str::from_utf8(query) else { return };
    let Ok(mut req) = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/canarytoken/create?{query}"))
        .body(Body::from(body.to_vec()))
    else {
        return; // not a URI hyper would have let through
    };
    let ctype_value = HeaderValue::from_bytes(ctype).ok().filter(|_| !ctype.is_empty());
    if let Some(v) = &ctype_value {
        req.headers_mut().insert(header::CONTENT_TYPE, v.clone());
    }
    let uri_query = req.uri().query().unwrap_or("").to_string();

    let (params, uploads) = match trapline_fuzz::block_on(read_params(req)) {
        Ok(x) => x,
        Err(resp) => {
            assert!(resp.status().is_client_error(), "refused with {}", resp.status());
            return;
        }
    };
    for (k, v) in &params {
        assert!(!k.contains('\0') && !v.contains('\0'), "NUL in {k:?}");
        assert!(v.len() <= MAX_PARAM, "{k} of {} bytes", v.len());
    }
    let essence = ctype_value
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default();
    let mut expected: BTreeMap<String, String> = form_urlencoded::parse(uri_query.as_bytes()).into_owned().collect();
    match essence.as_str() {
        "" | "application/x-www-form-urlencoded" => {
            expected.extend(form_urlencoded::parse(body).into_owned());
            assert_eq!(params, expected);
            assert!(uploads.is_empty());
        }
        "application/json" if !body.is_empty() => {
            let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else { panic!("accepted a non-object") };
            for (k, v) in m {
                let text = match v {
                    Value::String(s) => s,
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => panic!("accepted {k} = {other}"),
                };
                expected.insert(k, text);
            }
            assert_eq!(params, expected);
            assert!(uploads.is_empty());
        }
        "multipart/form-data" => {
            let fields = params.keys().filter(|k| !expected.contains_key(*k)).count() + uploads.len();
            assert!(fields <= MAX_PARTS, "{fields} parts");
            let file_bytes: usize = uploads.values().map(|u| u.bytes.len() + u.filename.len()).sum();
            assert!(file_bytes <= body.len(), "{file_bytes} bytes of files from a {}-byte body", body.len());
        }
        _ => assert!(body.is_empty() && uploads.is_empty(), "a body of another type was read"),
    }
});
