//! Kind `http` (Web Bug): a URL that records every request made to it.
//!
//! The HTTP listener answers a 1×1 GIF, or, with `browser_scanner_enabled` (default on) and a
//! client that accepts HTML, the browser-scanner page whose report joins the same hit.

use serde::{Deserialize, Serialize};

use super::{
    params, parse_bool, CreateRequest, Created, HttpAnswer, HttpBehaviour, Kind, KindContext, KindView, ViewContext,
};
use crate::error::CoreResult;
use crate::model::{Channel, Token};

pub struct Http;

/// The stored settings.
#[derive(Debug, Serialize, Deserialize)]
#[serde(default)]
struct HttpParams {
    browser_scanner_enabled: bool,
}

impl Default for HttpParams {
    fn default() -> Self {
        HttpParams { browser_scanner_enabled: true }
    }
}

#[async_trait::async_trait]
impl Kind for Http {
    fn name(&self) -> &'static str {
        "http"
    }

    fn human_name(&self) -> &'static str {
        "Web Bug"
    }

    fn channel(&self) -> Channel {
        Channel::Http
    }

    async fn create(&self, req: &CreateRequest<'_>, _cx: &KindContext) -> CoreResult<Created> {
        let scanner = match req.params.get("browser_scanner_enabled") {
            Some(v) => parse_bool("browser_scanner_enabled", v)?,
            None => true,
        };
        Created::with(&HttpParams { browser_scanner_enabled: scanner })
    }

    fn view(&self, token: &Token, _cx: &ViewContext<'_>) -> KindView {
        KindView::default().field("browser_scanner_enabled", params::<HttpParams>(token).browser_scanner_enabled)
    }

    fn http(&self) -> Option<&dyn HttpBehaviour> {
        Some(self)
    }
}

impl HttpBehaviour for Http {
    /// With the scanner on, browsers get the scanner page (its report joins this hit); others,
    /// and everyone when it is off, the GIF.
    fn answer(&self, token: &Token) -> HttpAnswer {
        if params::<HttpParams>(token).browser_scanner_enabled {
            HttpAnswer::Scanner { then: None }
        } else {
            HttpAnswer::Gif
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testing::{self, create};
    use serde_json::json;

    #[tokio::test]
    async fn scanner_defaults_on_and_rejects_garbage() {
        assert_eq!(create(&Http, &[]).await.unwrap(), json!({"browser_scanner_enabled": true}));
        assert_eq!(
            create(&Http, &[("browser_scanner_enabled", "false")]).await.unwrap(),
            json!({"browser_scanner_enabled": false})
        );
        assert!(create(&Http, &[("browser_scanner_enabled", "maybe")]).await.is_err());
    }

    #[test]
    fn view_and_answer_follow_the_setting() {
        let site = testing::site();
        let on = testing::token("http", json!({}));
        assert_eq!(
            Http.view(&on, &crate::kinds::testing::vcx(&site)).fields,
            vec![("browser_scanner_enabled", json!(true))]
        );
        assert_eq!(Http.answer(&on), HttpAnswer::Scanner { then: None });
        let off = testing::token("http", json!({"browser_scanner_enabled": false}));
        assert_eq!(
            Http.view(&off, &crate::kinds::testing::vcx(&site)).fields,
            vec![("browser_scanner_enabled", json!(false))]
        );
        assert_eq!(Http.answer(&off), HttpAnswer::Gif);
    }
}
