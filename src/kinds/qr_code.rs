//! Kind `qr-code` (QR Code): a PNG QR code of the token URL, for posters, badges and
//! stickers. Scanning it and opening the link is the hit. With an optional
//! `browser_redirect_url` the visitor is then sent on there (a 302), so the code still leads
//! somewhere believable; `canarytoken/update/redirect_url` and `remove/redirect_url` change it.
//! The token object carries the PNG as a `qr_code` data URI, as the Console's does.

use base64::Engine;
use image::ImageEncoder;
use serde_json::{json, Map, Value};

use super::{always_alert, redirect, Artefact, Created, HttpAnswer, Kind, Params, Site, Uploads};
use crate::error::CoreResult;
use crate::model::{Channel, Token};

pub static KIND: Kind = Kind {
    name: "qr-code",
    human_name: "QR Code",
    channel: Channel::Http,
    create,
    describe,
    artefact: Some(artefact),
    dns_encoding: None,
    judge: always_alert,
    http_answer,
};

fn create(params: &Params, _uploads: &Uploads) -> CoreResult<Created> {
    match params.get(redirect::PARAM).map(|u| u.trim()).filter(|u| !u.is_empty()) {
        Some(url) => Ok(Created::params(json!({ redirect::PARAM: redirect::validate_url(url)? }))),
        None => Ok(Created::params(json!({}))),
    }
}

fn target(token: &Token) -> Option<&str> {
    token.params.get(redirect::PARAM).and_then(Value::as_str).filter(|u| !u.is_empty())
}

fn describe(token: &Token, site: &Site, out: &mut Map<String, Value>) {
    out.insert(redirect::PARAM.into(), target(token).unwrap_or("").into());
    let png = base64::engine::general_purpose::STANDARD.encode(qr_png(&site.url(&token.id)));
    out.insert("qr_code".into(), format!("data:image/png;base64,{png}").into());
}

fn http_answer(token: &Token) -> HttpAnswer {
    match target(token) {
        Some(url) => HttpAnswer::Redirect(url.to_string()),
        None => HttpAnswer::Gif,
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

fn artefact(token: &Token, site: &Site) -> Artefact {
    Artefact {
        filename: format!("qr-code-{}.png", token.id),
        content_type: "image/png",
        bytes: qr_png(&site.url(&token.id)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn png_is_square_and_decodes_as_an_image() {
        let png = super::qr_png("http://127.0.0.1:8081/about/tags/abcdefghijklmnopqrstuvwxy/index.html");
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!(img.width(), img.height());
        assert!(img.width() >= 21 * 8);
    }
}
