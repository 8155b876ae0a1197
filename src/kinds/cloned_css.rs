//! Kind `cloned-css` (CSS cloned site): a stylesheet rule whose background image is the token
//! URL, carrying the expected site. Loaded by the real site (Referer on `expected_referrer` or
//! a subdomain), it records nothing; loaded by a copy elsewhere, the hit records the referrer.

use serde_json::{json, Map, Value};

use super::cloned_web::validate_domain;
use super::{gif_answer, renders, required, Created, Kind, Params, Site, Uploads};
use crate::error::CoreResult;
use crate::model::{Channel, Judgement, NewHit, Token};

pub static KIND: Kind = Kind {
    name: "cloned-css",
    human_name: "CSS cloned site",
    channel: Channel::Http,
    create,
    describe,
    artefact: None,
    dns_encoding: None,
    judge,
    http_answer: gif_answer,
};

const PARAM: &str = "expected_referrer";

fn create(params: &Params, _uploads: &Uploads) -> CoreResult<Created> {
    let raw = required(params, PARAM)?;
    // Accept a URL as well as a bare domain: keep its host.
    let host =
        url::Url::parse(raw).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_else(|| raw.to_string());
    Ok(Created::params(json!({ PARAM: validate_domain(PARAM, &host)? })))
}

fn expected(token: &Token) -> &str {
    token.params.get(PARAM).and_then(Value::as_str).unwrap_or("")
}

fn describe(token: &Token, site: &Site, out: &mut Map<String, Value>) {
    out.insert(PARAM.into(), expected(token).into());
    let url = format!("{}?r={}", site.url(&token.id), expected(token));
    renders(out, KIND.name, format!("body {{\n  background: url(\"{url}\") no-repeat -9999px -9999px;\n}}\n"));
}

fn judge(token: &Token, hit: &NewHit) -> Judgement {
    if hit.channel != Channel::Http {
        return Judgement::alert();
    }
    let referer = hit.data.get("headers").and_then(|h| h.get("Referer")).and_then(Value::as_str).unwrap_or("");
    let host = url::Url::parse(referer).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase));
    let exp = expected(token);
    if let Some(h) = &host {
        if !exp.is_empty() && (h == exp || h.ends_with(&format!(".{exp}"))) {
            return Judgement::Drop; // the real site loading its own stylesheet
        }
    }
    let mut extra = Map::new();
    extra.insert("referrer".into(), referer.into());
    Judgement::Alert { extra, dedupe_key: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(referer: Option<&str>) -> NewHit {
        let mut headers = Map::new();
        if let Some(r) = referer {
            headers.insert("Referer".into(), r.into());
        }
        NewHit {
            token_id: "t".into(),
            time_us: 0,
            channel: Channel::Http,
            src_ip: "1.2.3.4".into(),
            src_port: 1,
            dst_ip: String::new(),
            dst_port: 0,
            data: json!({ "headers": headers }),
        }
    }

    #[test]
    fn only_other_sites_alert() {
        let token = crate::kinds::testing::token("cloned-css", json!({ PARAM: "example.com" }));
        assert_eq!(judge(&token, &hit(Some("https://example.com/page"))), Judgement::Drop);
        assert_eq!(judge(&token, &hit(Some("https://www.example.com/x"))), Judgement::Drop);
        assert!(matches!(judge(&token, &hit(Some("https://evil.example/clone"))), Judgement::Alert { .. }));
        assert!(matches!(judge(&token, &hit(Some("https://notexample.com/"))), Judgement::Alert { .. }));
        assert!(matches!(judge(&token, &hit(None)), Judgement::Alert { .. }));
    }
}
