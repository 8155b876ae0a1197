//! Kinds `fast-redirect` and `slow-redirect`: a URL that records the visit and sends the
//! visitor on to `browser_redirect_url` — at once with a 302 (fast), or after the
//! browser-scanner page has reported the browser's details (slow).
//!
//! The two share everything but their HTTP answer, so they share this module. Only http(s)
//! targets with a host are accepted, so a token can never become a `javascript:` or
//! scheme-relative redirect.

use serde::{Deserialize, Serialize};

use super::{
    params, required, CreateRequest, Created, HttpAnswer, HttpBehaviour, Kind, KindChange, KindContext, KindView,
    Updated, ViewContext,
};
use crate::error::{CoreError, CoreResult};
use crate::model::{Channel, Token};

/// The parameter (and stored setting) naming the target.
pub const PARAM: &str = "browser_redirect_url";

/// A redirect kind; the two differ in name and in their HTTP answer.
pub struct Redirect {
    name: &'static str,
    human_name: &'static str,
    /// After the scanner page (slow) rather than at once (fast).
    slow: bool,
}

pub static FAST: Redirect = Redirect { name: "fast-redirect", human_name: "Fast Redirect", slow: false };
pub static SLOW: Redirect = Redirect { name: "slow-redirect", human_name: "Slow Redirect", slow: true };

/// The stored settings of every kind that redirects (the QR code's too, where it is optional).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RedirectParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub browser_redirect_url: Option<String>,
}

impl RedirectParams {
    /// The target, if one is set.
    pub fn of(token: &Token) -> Option<String> {
        params::<RedirectParams>(token).browser_redirect_url.filter(|u| !u.is_empty())
    }
}

/// `token`'s settings pointing at `url` (checked), every other setting kept.
pub fn set_target(token: &Token, url: &str) -> CoreResult<Updated> {
    let url = validate_url(url)?;
    let mut params = token.params.clone();
    params[PARAM] = url.clone().into();
    Ok(Updated { params, description: format!("redirect to {url}") })
}

/// `token`'s settings without a target, every other setting kept.
pub fn remove_target(token: &Token) -> Updated {
    let mut params = token.params.clone();
    if let Some(m) = params.as_object_mut() {
        m.remove(PARAM);
    }
    Updated { params, description: "redirect removed".into() }
}

#[async_trait::async_trait]
impl Kind for Redirect {
    fn name(&self) -> &'static str {
        self.name
    }

    fn human_name(&self) -> &'static str {
        self.human_name
    }

    fn channel(&self) -> Channel {
        Channel::Http
    }

    async fn create(&self, req: &CreateRequest<'_>, _cx: &KindContext) -> CoreResult<Created> {
        let url = validate_url(required(req.params, PARAM)?)?;
        Created::with(&RedirectParams { browser_redirect_url: Some(url) })
    }

    fn view(&self, token: &Token, _cx: &ViewContext<'_>) -> KindView {
        KindView::default().field(PARAM, RedirectParams::of(token).unwrap_or_default())
    }

    /// The target can be changed, not removed: a redirect token without one has no purpose.
    fn update(&self, token: &Token, change: &KindChange<'_>) -> CoreResult<Updated> {
        match change {
            KindChange::SetRedirect(url) => set_target(token, url),
            KindChange::RemoveRedirect | KindChange::Settings(_) => Err(change.unsupported()),
        }
    }

    fn http(&self) -> Option<&dyn HttpBehaviour> {
        Some(self)
    }
}

impl HttpBehaviour for Redirect {
    fn answer(&self, token: &Token) -> HttpAnswer {
        let target = RedirectParams::of(token).unwrap_or_default();
        if self.slow {
            HttpAnswer::Scanner { then: Some(target) }
        } else {
            HttpAnswer::Redirect(target)
        }
    }
}

/// A redirect target: an absolute http(s) URL with a host, at most 2048 characters.
pub fn validate_url(raw: &str) -> CoreResult<String> {
    let raw = raw.trim();
    let bad = |why: &str| CoreError::invalid("browser_redirect_url", why.to_string());
    if raw.len() > 2048 {
        return Err(bad("is longer than 2048 characters"));
    }
    let url = url::Url::parse(raw).map_err(|_| bad("is not an absolute URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be an http or https URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("must name a host"));
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_http_urls() {
        assert_eq!(validate_url("https://example.com/x?y=1").unwrap(), "https://example.com/x?y=1");
        assert_eq!(validate_url(" http://Example.COM ").unwrap(), "http://example.com/");
        for bad in ["ftp://x", "javascript:alert(1)", "//evil.example", "not a url", "http://", "data:text/html,x"] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
        assert!(validate_url(&format!("https://e.com/{}", "a".repeat(3000))).is_err());
    }

    #[tokio::test]
    async fn fast_redirects_at_once_and_slow_after_the_scanner() {
        use crate::kinds::testing;
        assert!(testing::create(&FAST, &[]).await.is_err(), "the target is required");
        let stored = testing::create(&SLOW, &[(PARAM, "https://example.com/x")]).await.unwrap();
        assert_eq!(stored, serde_json::json!({ PARAM: "https://example.com/x" }));
        let token = testing::token("slow-redirect", stored);
        assert_eq!(FAST.answer(&token), HttpAnswer::Redirect("https://example.com/x".into()));
        assert_eq!(SLOW.answer(&token), HttpAnswer::Scanner { then: Some("https://example.com/x".into()) });
        assert_eq!(
            SLOW.view(&token, &testing::vcx(&testing::site())).fields,
            vec![(PARAM, serde_json::json!("https://example.com/x"))]
        );
    }

    #[test]
    fn the_target_changes_but_never_goes() {
        let token =
            crate::kinds::testing::token("fast-redirect", serde_json::json!({ PARAM: "https://a.example/", "x": 1 }));
        let up = FAST.update(&token, &KindChange::SetRedirect("https://b.example/y")).unwrap();
        assert_eq!(up.params, serde_json::json!({ PARAM: "https://b.example/y", "x": 1 }), "other settings kept");
        assert_eq!(up.description, "redirect to https://b.example/y");
        assert!(FAST.update(&token, &KindChange::SetRedirect("javascript:alert(1)")).is_err());
        assert!(SLOW.update(&token, &KindChange::RemoveRedirect).is_err());
    }
}
