//! Kind `qr-code` (QR Code): a PNG QR code of the token URL, for posters, badges and
//! stickers. Scanning it and opening the link is the hit. With an optional
//! `browser_redirect_url` the visitor is then sent on there (a 302), so the code still leads
//! somewhere believable; `canarytoken/update/redirect_url` and `remove/redirect_url` change it.
//! The token object carries the PNG as a `qr_code` data URI, as the Console's does.

use base64::Engine;
use image::ImageEncoder;

use super::redirect::{self, RedirectParams};
use super::{
    Artefact, CreateRequest, Created, HttpAnswer, HttpBehaviour, Kind, KindChange, KindContext, KindView, Updated,
    ViewContext,
};
use crate::error::CoreResult;
use crate::model::{Channel, Token};

pub struct QrCode;

#[async_trait::async_trait]
impl Kind for QrCode {
    fn name(&self) -> &'static str {
        "qr-code"
    }

    fn human_name(&self) -> &'static str {
        "QR Code"
    }

    fn channel(&self) -> Channel {
        Channel::Http
    }

    async fn create(&self, req: &CreateRequest<'_>, _cx: &KindContext) -> CoreResult<Created> {
        let url = match req.params.get(redirect::PARAM).map(|u| u.trim()).filter(|u| !u.is_empty()) {
            Some(url) => Some(redirect::validate_url(url)?),
            None => None,
        };
        Created::with(&RedirectParams { browser_redirect_url: url })
    }

    fn view(&self, token: &Token, cx: &ViewContext<'_>) -> KindView {
        let site = cx.site;
        let png = base64::engine::general_purpose::STANDARD.encode(qr_png(&site.url(&token.id)));
        KindView::default()
            .field(redirect::PARAM, RedirectParams::of(token).unwrap_or_default())
            .field("qr_code", format!("data:image/png;base64,{png}"))
    }

    fn artefact(&self, token: &Token, cx: &ViewContext<'_>) -> Option<Artefact> {
        let site = cx.site;
        Some(Artefact {
            filename: format!("qr-code-{}.png", token.id),
            content_type: "image/png",
            bytes: qr_png(&site.url(&token.id)),
        })
    }

    /// The redirect is optional here: it may be set, changed and removed.
    fn update(&self, token: &Token, change: &KindChange<'_>) -> CoreResult<Updated> {
        match change {
            KindChange::SetRedirect(url) => redirect::set_target(token, url),
            KindChange::RemoveRedirect => Ok(redirect::remove_target(token)),
            KindChange::Settings(_) => Err(change.unsupported()),
        }
    }

    fn http(&self) -> Option<&dyn HttpBehaviour> {
        Some(self)
    }
}

impl HttpBehaviour for QrCode {
    fn answer(&self, token: &Token) -> HttpAnswer {
        match RedirectParams::of(token) {
            Some(url) => HttpAnswer::Redirect(url),
            None => HttpAnswer::Gif,
        }
    }
}

/// Pixels per module, and the quiet zone around the code, in modules.
const SCALE: u32 = 8;
const QUIET: u32 = 4;

/// A black-on-white PNG of `text` as a QR code.
pub fn qr_png(text: &str) -> Vec<u8> {
    // A token URL is far below QR capacity; failure here would be a bug, not bad input.
    let code = qrcode::QrCode::new(text.as_bytes()).expect("token URLs fit in a QR code");
    let modules = code.width() as u32;
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET) * SCALE;
    let mut pixels = vec![255u8; (side * side) as usize];
    for (i, c) in colors.iter().enumerate() {
        if *c != qrcode::Color::Dark {
            continue;
        }
        let (mx, my) = (i as u32 % modules + QUIET, i as u32 / modules + QUIET);
        for y in my * SCALE..(my + 1) * SCALE {
            let row = (y * side) as usize;
            pixels[row + (mx * SCALE) as usize..row + ((mx + 1) * SCALE) as usize].fill(0);
        }
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&pixels, side, side, image::ExtendedColorType::L8)
        .expect("PNG encoding to memory");
    png
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testing;
    use serde_json::json;

    #[tokio::test]
    async fn the_redirect_is_optional_and_removable() {
        assert_eq!(testing::create(&QrCode, &[]).await.unwrap(), json!({}));
        assert_eq!(testing::create(&QrCode, &[(redirect::PARAM, " ")]).await.unwrap(), json!({}));
        assert!(testing::create(&QrCode, &[(redirect::PARAM, "ftp://x")]).await.is_err());
        let stored = testing::create(&QrCode, &[(redirect::PARAM, "https://example.com/")]).await.unwrap();
        assert_eq!(stored, json!({ redirect::PARAM: "https://example.com/" }));
        let token = testing::token("qr-code", stored);
        assert_eq!(QrCode.answer(&token), HttpAnswer::Redirect("https://example.com/".into()));
        let removed = QrCode.update(&token, &KindChange::RemoveRedirect).unwrap();
        assert_eq!((removed.params.clone(), removed.description.as_str()), (json!({}), "redirect removed"));
        assert_eq!(QrCode.answer(&testing::token("qr-code", removed.params)), HttpAnswer::Gif);
    }

    #[test]
    fn view_carries_the_target_and_the_png() {
        let (site, token) = (testing::site(), testing::token("qr-code", json!({})));
        let view = QrCode.view(&token, &crate::kinds::testing::vcx(&site));
        let names: Vec<_> = view.fields.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["browser_redirect_url", "qr_code"]);
        assert_eq!(view.fields[0].1, json!(""));
        assert!(view.fields[1].1.as_str().unwrap().starts_with("data:image/png;base64,iVBOR"));
    }

    #[test]
    fn png_is_square_and_decodes_as_an_image() {
        let png = super::qr_png("http://127.0.0.1:8081/about/tags/abcdefghijklmnopqrstuvwxy/index.html");
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!(img.width(), img.height());
        assert!(img.width() >= 21 * 8);
    }
}
