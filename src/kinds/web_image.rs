//! Kind `web-image` (Custom Web Image): the token URL serves an image the user uploads
//! (`web_image`, PNG, JPEG or GIF, at most 2 MiB), so it can sit in a page as an ordinary
//! picture. The upload is checked by decoding it — after its header says it is at most
//! 4096×4096, with a memory limit, so a decompression bomb is refused — never by its name or
//! declared type. The core runs this on its work pool ([`crate::workpool`]), not on the
//! threads that serve hits.

use std::io::Cursor;

use serde_json::{json, Map, Value};

use super::{always_alert, Created, HttpAnswer, Kind, Params, Site, Uploads};
use crate::error::{CoreError, CoreResult};
use crate::model::{Channel, Token, TokenFile};

pub static KIND: Kind = Kind {
    name: "web-image",
    human_name: "Custom Web Image",
    channel: Channel::Http,
    create,
    describe,
    artefact: None,
    dns_encoding: None,
    judge: always_alert,
    http_answer,
};

const FIELD: &str = "web_image";
/// Largest upload accepted.
pub const MAX_BYTES: usize = 2 * 1024 * 1024;
/// Largest width or height accepted.
pub const MAX_SIDE: u32 = 4096;
/// Most pixels accepted: decoded as RGBA that is 64 MiB, the most one check may allocate.
const MAX_PIXELS: u64 = 4096 * 4096;

fn create(_params: &Params, uploads: &Uploads) -> CoreResult<Created> {
    let up = uploads
        .get(FIELD)
        .ok_or_else(|| CoreError::invalid(FIELD, "is required: upload a PNG, JPEG or GIF as multipart/form-data"))?;
    if up.bytes.len() > MAX_BYTES {
        return Err(CoreError::TooLarge { name: FIELD, limit: MAX_BYTES });
    }
    let content_type = check_image(&up.bytes)?;
    Ok(Created {
        params: json!({ "web_image_type": content_type, "web_image_bytes": up.bytes.len() }),
        files: vec![TokenFile { name: FIELD.into(), content_type: content_type.into(), data: up.bytes.clone() }],
    })
}

/// The content type of a PNG, JPEG or GIF that decodes completely within limits.
pub fn check_image(bytes: &[u8]) -> CoreResult<&'static str> {
    let not_image = || CoreError::invalid(FIELD, "is not a PNG, JPEG or GIF image");
    let format = image::guess_format(bytes).map_err(|_| not_image())?;
    let content_type = match format {
        image::ImageFormat::Png => "image/png",
        image::ImageFormat::Jpeg => "image/jpeg",
        image::ImageFormat::Gif => "image/gif",
        _ => return Err(not_image()),
    };
    // The header first (reading it allocates nothing to speak of): an image too large is
    // refused, saying so, before anything is decoded.
    let (w, h) = image::ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| CoreError::invalid(FIELD, format!("does not decode as an image: {e}")))?;
    if w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(CoreError::invalid(
            FIELD,
            format!("is {w}×{h} pixels; at most {MAX_SIDE}×{MAX_SIDE} are accepted"),
        ));
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_PIXELS * 4 + 8 * 1024 * 1024);
    reader.limits(limits);
    reader.decode().map_err(|e| CoreError::invalid(FIELD, format!("does not decode as an image: {e}")))?;
    Ok(content_type)
}

fn describe(token: &Token, _site: &Site, out: &mut Map<String, Value>) {
    if let Some(t) = token.params.get("web_image_type") {
        out.insert("web_image_type".into(), t.clone());
    }
}

fn http_answer(_token: &Token) -> HttpAnswer {
    HttpAnswer::File(FIELD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_real_images_and_refuses_others() {
        let mut png = Vec::new();
        image::DynamicImage::new_rgb8(3, 2).write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        assert_eq!(check_image(&png).unwrap(), "image/png");
        assert!(check_image(&png[..png.len() / 2]).is_err(), "truncated");
        assert!(check_image(b"just text, named x.png").is_err());
        let gif = crate::listeners::http::GIF;
        assert_eq!(check_image(gif).unwrap(), "image/gif");
    }
}
