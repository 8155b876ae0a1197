//! Kind `cloned-css` (CSS cloned site): a stylesheet rule whose background image is the token
//! URL, carrying the expected site. Loaded by the real site (Referer on `expected_referrer` or
//! a subdomain), it records nothing; loaded by a copy elsewhere, the hit records the referrer.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::cloned_web::validate_domain;
use super::{params, required, CreateRequest, Created, Kind, KindContext, KindView, ViewContext};
use crate::error::CoreResult;
use crate::model::{Channel, Judgement, NewHit, Token};

pub struct ClonedCss;

const PARAM: &str = "expected_referrer";

/// The stored settings: the domain whose pages may load the stylesheet unnoticed.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct ClonedCssParams {
    expected_referrer: String,
}

#[async_trait::async_trait]
impl Kind for ClonedCss {
    fn name(&self) -> &'static str {
        "cloned-css"
    }

    fn human_name(&self) -> &'static str {
        "CSS cloned site"
    }

    fn channel(&self) -> Channel {
        Channel::Http
    }

    async fn create(&self, req: &CreateRequest<'_>, _cx: &KindContext) -> CoreResult<Created> {
        let raw = required(req.params, PARAM)?;
        // Accept a URL as well as a bare domain: keep its host.
        let host =
            url::Url::parse(raw).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_else(|| raw.to_string());
        Created::with(&ClonedCssParams { expected_referrer: validate_domain(PARAM, &host)? })
    }

    fn view(&self, token: &Token, cx: &ViewContext<'_>) -> KindView {
        let site = cx.site;
        let p: ClonedCssParams = params(token);
        let url = format!("{}?r={}", site.url(&token.id), p.expected_referrer);
        let css = format!("body {{\n  background: url(\"{url}\") no-repeat -9999px -9999px;\n}}\n");
        KindView::default().field(PARAM, p.expected_referrer).render(self.name(), css)
    }

    fn judge(&self, token: &Token, hit: &NewHit) -> Judgement {
        if hit.channel != Channel::Http {
            return Judgement::alert();
        }
        let referer = hit.data.get("headers").and_then(|h| h.get("Referer")).and_then(Value::as_str).unwrap_or("");
        let host = url::Url::parse(referer).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase));
        let exp = params::<ClonedCssParams>(token).expected_referrer;
        if let Some(h) = &host {
            if !exp.is_empty() && (h == &exp || h.ends_with(&format!(".{exp}"))) {
                return Judgement::Drop; // the real site loading its own stylesheet
            }
        }
        let mut extra = Map::new();
        extra.insert("referrer".into(), referer.into());
        Judgement::Alert { extra, dedupe_key: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testing;
    use serde_json::json;

    fn hit(referer: Option<&str>) -> NewHit {
        let mut headers = Map::new();
        if let Some(r) = referer {
            headers.insert("Referer".into(), r.into());
        }
        testing::hit(Channel::Http, json!({ "headers": headers }))
    }

    fn judge(token: &Token, hit: &NewHit) -> Judgement {
        ClonedCss.judge(token, hit)
    }

    #[test]
    fn only_other_sites_alert() {
        let token = testing::token("cloned-css", json!({ PARAM: "example.com" }));
        assert_eq!(judge(&token, &hit(Some("https://example.com/page"))), Judgement::Drop);
        assert_eq!(judge(&token, &hit(Some("https://www.example.com/x"))), Judgement::Drop);
        assert!(matches!(judge(&token, &hit(Some("https://evil.example/clone"))), Judgement::Alert { .. }));
        assert!(matches!(judge(&token, &hit(Some("https://notexample.com/"))), Judgement::Alert { .. }));
        assert!(matches!(judge(&token, &hit(None)), Judgement::Alert { .. }));
    }

    #[tokio::test]
    async fn create_keeps_the_host_and_view_renders_the_rule() {
        let stored = testing::create(&ClonedCss, &[(PARAM, "https://Example.com/page")]).await.unwrap();
        assert_eq!(stored, json!({ PARAM: "example.com" }));
        let (site, token) = (testing::site(), testing::token("cloned-css", stored));
        let view = ClonedCss.view(&token, &crate::kinds::testing::vcx(&site));
        assert_eq!(view.fields, vec![(PARAM, json!("example.com"))]);
        let (name, css) = &view.renders[0];
        assert_eq!(*name, "cloned-css");
        assert!(css.contains(&format!("url(\"{}?r=example.com\")", site.url(&token.id))), "{css}");
    }
}
