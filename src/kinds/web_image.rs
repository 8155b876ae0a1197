//! Kind `web-image` (Custom Web Image): the token URL serves an image the user uploads
//! (`web_image`, PNG, JPEG or GIF, at most 2 MiB), so it can sit in a page as an ordinary
//! picture. The upload is checked by decoding it — after its header says it is at most
//! 4096×4096, with a memory limit, so a decompression bomb is refused — never by its name or
//! declared type. The check runs on the work pool ([`crate::kinds::KindContext::work`]), not
//! on the threads that serve hits.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use super::{params, CreateRequest, Created, HttpAnswer, HttpBehaviour, Kind, KindContext, KindView, ViewContext};
use crate::error::{CoreError, CoreResult};
use crate::model::{Channel, Token, TokenFile};

pub struct WebImage;

const FIELD: &str = "web_image";
/// Largest upload accepted.
pub const MAX_BYTES: usize = 2 * 1024 * 1024;
/// Largest width or height accepted.
pub const MAX_SIDE: u32 = 4096;
/// Most pixels accepted: decoded as RGBA that is 64 MiB, the most one check may allocate.
const MAX_PIXELS: u64 = 4096 * 4096;

/// The stored settings: what was uploaded (the image itself is the token's file).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct WebImageParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    web_image_type: Option<String>,
    web_image_bytes: usize,
}

#[async_trait::async_trait]
impl Kind for WebImage {
    fn name(&self) -> &'static str {
        "web-image"
    }

    fn human_name(&self) -> &'static str {
        "Custom Web Image"
    }

    fn channel(&self) -> Channel {
        Channel::Http
    }

    async fn create(&self, req: &CreateRequest<'_>, cx: &KindContext) -> CoreResult<Created> {
        let up = req.uploads.get(FIELD).ok_or_else(|| {
            CoreError::invalid(FIELD, "is required: upload a PNG, JPEG or GIF as multipart/form-data")
        })?;
        if up.bytes.len() > MAX_BYTES {
            return Err(CoreError::TooLarge { name: FIELD, limit: MAX_BYTES });
        }
        // Decoding takes CPU and memory: on the work pool, refused with Busy when it is full.
        let bytes = up.bytes.clone();
        let (content_type, bytes) = cx.work.run(move || check_image(&bytes).map(|t| (t, bytes))).await??;
        let mut created =
            Created::with(&WebImageParams { web_image_type: Some(content_type.into()), web_image_bytes: bytes.len() })?;
        created.files.push(TokenFile { name: FIELD.into(), content_type: content_type.into(), data: bytes });
        Ok(created)
    }

    fn view(&self, token: &Token, _cx: &ViewContext<'_>) -> KindView {
        match params::<WebImageParams>(token).web_image_type {
            Some(t) => KindView::default().field("web_image_type", t),
            None => KindView::default(),
        }
    }

    fn http(&self) -> Option<&dyn HttpBehaviour> {
        Some(self)
    }
}

impl HttpBehaviour for WebImage {
    fn answer(&self, _token: &Token) -> HttpAnswer {
        HttpAnswer::File(FIELD)
    }
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

    fn upload(bytes: &[u8]) -> crate::kinds::Uploads {
        let up =
            crate::kinds::Upload { filename: "x.gif".into(), content_type: "image/gif".into(), bytes: bytes.into() };
        [(FIELD.to_string(), up)].into()
    }

    #[tokio::test]
    async fn create_stores_the_image_as_the_token_file() {
        let (params, uploads) = (crate::kinds::Params::new(), upload(crate::listeners::http::GIF));
        let req = CreateRequest { params: &params, uploads: &uploads, token_id: crate::kinds::testing::ID };
        let created = WebImage.create(&req, &crate::kinds::testing::context()).await.unwrap();
        let stored = serde_json::json!({"web_image_type": "image/gif", "web_image_bytes": uploads[FIELD].bytes.len()});
        assert_eq!(created.params, stored);
        assert_eq!(created.files.len(), 1);
        assert_eq!(
            (created.files[0].name.as_str(), created.files[0].data.as_slice()),
            (FIELD, &uploads[FIELD].bytes[..])
        );
        let token = crate::kinds::testing::token("web-image", created.params);
        let site = crate::kinds::testing::site();
        assert_eq!(
            WebImage.view(&token, &crate::kinds::testing::vcx(&site)).fields,
            vec![("web_image_type", serde_json::json!("image/gif"))]
        );
        assert_eq!(WebImage.answer(&token), HttpAnswer::File(FIELD));

        let empty = crate::kinds::Uploads::new();
        let req = CreateRequest { params: &params, uploads: &empty, token_id: crate::kinds::testing::ID };
        assert!(WebImage.create(&req, &crate::kinds::testing::context()).await.is_err(), "the upload is required");
    }

    /// The check runs on the context's work pool: when that is full, create is refused Busy.
    #[tokio::test]
    async fn a_full_work_pool_refuses_with_busy() {
        let mut cx = crate::kinds::testing::context();
        cx.work = std::sync::Arc::new(crate::workpool::WorkPool::new(1, 1));
        // One job holds the worker, a second waits in the one queue slot.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = std::sync::Arc::new(std::sync::Mutex::new(held));
        let (started, running) = tokio::sync::oneshot::channel();
        let (pool, h) = (cx.work.clone(), held.clone());
        let first = tokio::spawn(async move {
            pool.run(move || {
                let _ = started.send(());
                let _ = h.lock().unwrap().recv();
            })
            .await
        });
        running.await.unwrap();
        let pool = cx.work.clone();
        let second = tokio::spawn(async move { pool.run(|| ()).await });
        // This test runs on one thread: yielding lets `second` queue its job.
        tokio::task::yield_now().await;
        let (params, uploads) = (crate::kinds::Params::new(), upload(crate::listeners::http::GIF));
        let req = CreateRequest { params: &params, uploads: &uploads, token_id: crate::kinds::testing::ID };
        assert!(matches!(WebImage.create(&req, &cx).await, Err(CoreError::Busy)));
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
    }
}
