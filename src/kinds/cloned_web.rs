//! Kind `cloned-web` (Cloned Website): a script for the site `cloned_web` to include. Run
//! anywhere but that domain (or its subdomains) — on a phishing copy of the site — it loads
//! the token URL with the copy's location (`l`) and referrer (`r`), which the hit records.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{params, required, CreateRequest, Created, Kind, KindContext, KindView, ViewContext};
use crate::error::{CoreError, CoreResult};
use crate::model::{Channel, Judgement, NewHit, Token};

pub struct ClonedWeb;

/// The stored settings: the site's own domain.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct ClonedWebParams {
    cloned_web: String,
}

#[async_trait::async_trait]
impl Kind for ClonedWeb {
    fn name(&self) -> &'static str {
        "cloned-web"
    }

    fn human_name(&self) -> &'static str {
        "Cloned Website"
    }

    fn channel(&self) -> Channel {
        Channel::Http
    }

    async fn create(&self, req: &CreateRequest<'_>, _cx: &KindContext) -> CoreResult<Created> {
        let domain = validate_domain("cloned_web", required(req.params, "cloned_web")?)?;
        Created::with(&ClonedWebParams { cloned_web: domain })
    }

    fn view(&self, token: &Token, cx: &ViewContext<'_>) -> KindView {
        let site = cx.site;
        let p: ClonedWebParams = params(token);
        let script = script(&p.cloned_web, &site.url(&token.id));
        KindView::default().field("cloned_web", p.cloned_web).render(self.name(), script)
    }

    /// The location and referrer the script sent, as query parameters `l` and `r`.
    fn judge(&self, _token: &Token, hit: &NewHit) -> Judgement {
        let mut extra = Map::new();
        if let Some(q) = hit.data.get("query").and_then(Value::as_str) {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                match &*k {
                    "l" => extra.insert("location".into(), v.into_owned().into()),
                    "r" => extra.insert("referrer".into(), v.into_owned().into()),
                    _ => None,
                };
            }
        }
        Judgement::Alert { extra, dedupe_key: None }
    }
}

/// The reason the Console maps to its own message for a domain without enough labels.
pub const TOO_FEW_LABELS: &str = "is invalid, not enough domain labels";

/// A domain of at least two labels, each a valid DNS label; returned lowercase.
pub fn validate_domain(name: &'static str, raw: &str) -> CoreResult<String> {
    let d = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = d.split('.').collect();
    let label_ok =
        |l: &&str| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if d.len() > 253 || !labels.iter().all(label_ok) {
        return Err(CoreError::invalid(name, "is not a valid domain name"));
    }
    if labels.len() < 2 {
        return Err(CoreError::invalid(name, TOO_FEW_LABELS));
    }
    Ok(d)
}

/// The snippet for the page, wrapped in `<script>` as the Console renders it. The literals are
/// JSON strings with `<`, `>` and `&` escaped, so no text can close the script element.
pub fn script(expected: &str, token_url: &str) -> String {
    let lit = |s: &str| {
        serde_json::to_string(s)
            .unwrap_or_default()
            .replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026")
    };
    format!(
        "<script>\n(function () {{\n\
         \x20 var expected = {expected};\n\
         \x20 var host = String(document.domain || location.hostname || \"\").toLowerCase();\n\
         \x20 if (host === expected || host.slice(-(expected.length + 1)) === \".\" + expected) {{ return; }}\n\
         \x20 var url = {url} + \"?l=\" + encodeURIComponent(location.href) + \"&r=\" + encodeURIComponent(document.referrer || \"\");\n\
         \x20 new Image().src = url;\n\
         }})();\n</script>",
        expected = lit(expected),
        url = lit(token_url),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_need_two_labels() {
        assert_eq!(validate_domain("cloned_web", "Example.COM.").unwrap(), "example.com");
        assert!(
            matches!(validate_domain("cloned_web", "localhost"), Err(CoreError::InvalidParam { reason, .. }) if reason == TOO_FEW_LABELS)
        );
        assert!(validate_domain("cloned_web", "bad domain.com").is_err());
        assert!(validate_domain("cloned_web", "a..b").is_err());
    }

    #[tokio::test]
    async fn create_keeps_the_domain_and_view_renders_the_script() {
        use crate::kinds::testing;
        assert!(testing::create(&ClonedWeb, &[]).await.is_err());
        let stored = testing::create(&ClonedWeb, &[("cloned_web", "Example.com")]).await.unwrap();
        assert_eq!(stored, serde_json::json!({"cloned_web": "example.com"}));
        let (site, token) = (testing::site(), testing::token("cloned-web", stored));
        let view = ClonedWeb.view(&token, &crate::kinds::testing::vcx(&site));
        assert_eq!(view.fields, vec![("cloned_web", serde_json::json!("example.com"))]);
        assert_eq!(view.renders, vec![("cloned-web", script("example.com", &site.url(&token.id)))]);
    }

    #[test]
    fn judge_records_location_and_referrer() {
        let token = crate::kinds::testing::token("cloned-web", serde_json::json!({"cloned_web": "example.com"}));
        let hit = crate::kinds::testing::hit(
            Channel::Http,
            serde_json::json!({"query": "l=https%3A%2F%2Fevil.example%2F&r=https%3A%2F%2Fmail.example%2F"}),
        );
        let Judgement::Alert { extra, .. } = ClonedWeb.judge(&token, &hit) else { panic!() };
        assert_eq!(extra["location"], "https://evil.example/");
        assert_eq!(extra["referrer"], "https://mail.example/");
    }

    #[test]
    fn script_embeds_safe_literals() {
        let s = script("example.com", "http://h/x/tok/p.html");
        assert!(s.contains("var expected = \"example.com\";"));
        assert!(s.contains("\"http://h/x/tok/p.html\" + \"?l=\""));
    }
}
