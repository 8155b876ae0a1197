//! Kind `qr-code` (QR Code): a PNG QR code of the token URL, for posters, badges and
//! stickers. Scanning it and opening the link is the hit.

use image::ImageEncoder;

use super::{always_alert, gif_answer, no_fields, no_params, Artefact, Kind, Site};
use crate::model::{Channel, Token};

pub static KIND: Kind = Kind {
    name: "qr-code",
    human_name: "QR Code",
    channel: Channel::Http,
    create: no_params,
    describe: no_fields,
    artefact: Some(artefact),
    dns_encoding: None,
    judge: always_alert,
    http_answer: gif_answer,
};

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
