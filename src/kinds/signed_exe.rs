//! Kind `signed-exe` (Custom Exe/Binary): the user uploads a Windows executable (`exe`, a PE
//! image, at most 10 MiB) and gets it back Authenticode-signed by a leaf certificate made for
//! the token, issued by the installation's code-signing CA. The leaf's CRL distribution
//! point, AIA caIssuers and OCSP URLs are under the token's NX hostname
//! (`crl.<id>.<nx zone>`, `aia.…`, `ocsp.…`), so whoever verifies the signature looks a name
//! up; the DNS listener records the hit and answers NXDOMAIN. The CA is not embedded, so a
//! verifier has to chase AIA or be given the CA: `osslsigncode verify -CAfile` needs it, and
//! the token hands it out as `code_signing_ca` (PEM).
//!
//! An upload that is signed already has its signature replaced (not nested: a nested
//! signature would leave the original publisher's chain, without our URLs, as the primary
//! one). Anything that is not a PE image, or whose headers point outside the file, is refused
//! with the reason. Signing runs on the work pool; the signed file is the token's stored
//! file, which `canarytoken/download` hands out.

use serde::{Deserialize, Serialize};

use super::{params, CreateRequest, Created, Kind, KindContext, KindView, StoredArtefact, ViewContext};
use crate::artefacts::authenticode::LeafSpec;
use crate::error::{CoreError, CoreResult};
use crate::model::{Channel, Token, TokenFile};

pub struct SignedExe;

/// The upload's field, and the stored file's name.
const FIELD: &str = "exe";
/// Largest upload accepted.
pub const MAX_BYTES: usize = 10 * 1024 * 1024;
/// Optional create parameter: the publisher the leaf certificate names.
const SIGNER: &str = "signer_name";
const MAX_SIGNER_CHARS: usize = 64;
/// IANA's type for PE images.
const CONTENT_TYPE: &str = "application/vnd.microsoft.portable-executable";
/// File name endings of PE images; another name gets `.exe` appended.
const PE_ENDINGS: &[&str] = &[".exe", ".dll", ".sys", ".scr", ".cpl", ".ocx", ".efi", ".mui", ".drv"];

/// The stored settings (the signed file itself is the token's file).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct SignedExeParams {
    exe_filename: String,
    exe_bytes: usize,
    signer_name: String,
    /// The upload was signed already and its signature was replaced.
    replaced_signature: bool,
    /// The CA that issued this token's leaf (PEM), as it was when the token was made.
    code_signing_ca: String,
}

#[async_trait::async_trait]
impl Kind for SignedExe {
    fn name(&self) -> &'static str {
        "signed-exe"
    }

    fn human_name(&self) -> &'static str {
        "Custom Exe/Binary"
    }

    fn channel(&self) -> Channel {
        Channel::Dns
    }

    async fn create(&self, req: &CreateRequest<'_>, cx: &KindContext) -> CoreResult<Created> {
        let up = req.uploads.get(FIELD).ok_or_else(|| {
            CoreError::invalid(FIELD, "is required: upload a Windows executable (.exe or .dll) as multipart/form-data")
        })?;
        if up.bytes.len() > MAX_BYTES {
            return Err(CoreError::TooLarge { name: FIELD, limit: MAX_BYTES });
        }
        let ca = cx.code_signing.clone();
        let signer = match req.params.get(SIGNER).map(|s| s.trim()).filter(|s| !s.is_empty()) {
            Some(s) => signer_name(s)?,
            None => ca.organization().to_string(),
        };
        let host = cx.site.nx_hostname(req.token_id);
        let spec = LeafSpec {
            publisher: signer.clone(),
            crl_url: format!("http://crl.{host}/pki/codesign.crl"),
            ca_issuers_url: format!("http://aia.{host}/pki/codesign.crt"),
            ocsp_url: format!("http://ocsp.{host}/"),
            now: crate::model::now_us() / 1_000_000,
        };
        let bytes = up.bytes.clone();
        let signing_ca = ca.clone();
        let signed = cx
            .work
            .run(move || signing_ca.sign_pe(&bytes, &spec))
            .await?
            .map_err(|e| CoreError::invalid(FIELD, e.to_string()))?;
        let mut created = Created::with(&SignedExeParams {
            exe_filename: download_name(&up.filename),
            exe_bytes: signed.bytes.len(),
            signer_name: signer,
            replaced_signature: signed.replaced_signature,
            code_signing_ca: ca.cert_pem(),
        })?;
        created.files.push(TokenFile { name: FIELD.into(), content_type: CONTENT_TYPE.into(), data: signed.bytes });
        Ok(created)
    }

    fn view(&self, token: &Token, _cx: &ViewContext<'_>) -> KindView {
        let p = params::<SignedExeParams>(token);
        KindView::default()
            .field("exe_filename", p.exe_filename)
            .field("signer_name", p.signer_name)
            .field("replaced_signature", p.replaced_signature)
            .field("code_signing_ca", p.code_signing_ca)
    }

    fn stored_artefact(&self, token: &Token) -> Option<StoredArtefact> {
        let name = params::<SignedExeParams>(token).exe_filename;
        let filename = if name.is_empty() { download_name("") } else { name };
        Some(StoredArtefact { file: FIELD, filename, content_type: CONTENT_TYPE })
    }
}

/// A publisher name for the leaf certificate: printable, at most 64 characters.
fn signer_name(s: &str) -> CoreResult<String> {
    if s.chars().count() > MAX_SIGNER_CHARS {
        return Err(CoreError::invalid(SIGNER, format!("is longer than {MAX_SIGNER_CHARS} characters")));
    }
    if s.chars().any(char::is_control) {
        return Err(CoreError::invalid(SIGNER, "must not hold control characters"));
    }
    Ok(s.to_string())
}

/// The download's file name: the upload's own (without any directory), in characters safe in a
/// header, ending like a PE image; `setup.exe` when nothing usable is left.
fn download_name(uploaded: &str) -> String {
    let base = uploaded.rsplit(['/', '\\']).next().unwrap_or("");
    let mut name: String = base
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .take(100)
        .collect();
    let name_trimmed = name.trim_matches(['.', '_']);
    if name_trimmed.is_empty() {
        return "setup.exe".into();
    }
    name = name_trimmed.to_string();
    let lower = name.to_ascii_lowercase();
    if !PE_ENDINGS.iter().any(|e| lower.ends_with(e)) {
        name.push_str(".exe");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artefacts::{authenticode, pe::tests::tiny_pe};

    #[test]
    fn download_names_are_safe_and_end_like_executables() {
        assert_eq!(download_name("PayrollTool.exe"), "PayrollTool.exe");
        assert_eq!(download_name("C:\\Users\\me\\helper.DLL"), "helper.DLL");
        assert_eq!(download_name("../../etc/passwd"), "passwd.exe");
        assert_eq!(download_name("vpn client.exe"), "vpn_client.exe");
        assert_eq!(download_name(""), "setup.exe");
        assert_eq!(download_name("..."), "setup.exe");
        assert_eq!(download_name("café.exe"), "caf_.exe");
        assert!(download_name(&"a".repeat(500)).len() <= 104);
    }

    #[test]
    fn signer_names_are_checked() {
        assert_eq!(signer_name("Acme Tools Ltd").unwrap(), "Acme Tools Ltd");
        assert!(signer_name(&"x".repeat(65)).is_err());
        assert!(signer_name("a\nb").is_err());
    }

    fn request<'a>(params: &'a crate::kinds::Params, uploads: &'a crate::kinds::Uploads) -> CreateRequest<'a> {
        CreateRequest { params, uploads, token_id: "abcdefghijklmnopqrstuvwxy" }
    }

    fn upload(bytes: Vec<u8>) -> crate::kinds::Uploads {
        let up = crate::kinds::Upload {
            filename: "tool.exe".into(),
            content_type: "application/octet-stream".into(),
            bytes,
        };
        [(FIELD.to_string(), up)].into()
    }

    #[tokio::test]
    async fn create_stores_the_signed_file_with_urls_under_the_nx_hostname() {
        let cx = crate::kinds::testing::context();
        let pe = tiny_pe(true, 2, 0);
        let (params, uploads) = (crate::kinds::Params::new(), upload(pe.clone()));
        let created = SignedExe.create(&request(&params, &uploads), &cx).await.unwrap();
        assert_eq!(created.files.len(), 1);
        let file = &created.files[0];
        assert_eq!((file.name.as_str(), file.content_type.as_str()), (FIELD, CONTENT_TYPE));
        let got = authenticode::inspect(&file.data).unwrap();
        assert!(got.digest_matches && got.message_digest_matches && got.signature_verifies);
        let leaf = &got.certificates[0];
        assert!(authenticode::issued_by(leaf, cx.code_signing.cert_der()));
        let host = format!("abcdefghijklmnopqrstuvwxy.{}", cx.site.nx_domain);
        for url in [format!("http://crl.{host}/"), format!("http://aia.{host}/"), format!("http://ocsp.{host}/")] {
            assert!(leaf.windows(url.len()).any(|w| w == url.as_bytes()), "{url}");
        }
        let token = crate::kinds::testing::token("signed-exe", created.params);
        let site = crate::kinds::testing::site();
        let view = SignedExe.view(&token, &crate::kinds::testing::vcx(&site));
        let field = |n: &str| view.fields.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(field("code_signing_ca"), serde_json::json!(cx.code_signing.cert_pem()));
        assert_eq!(field("signer_name"), serde_json::json!(cx.code_signing.organization()));
        assert_eq!(field("replaced_signature"), serde_json::json!(false));
        let stored = SignedExe.stored_artefact(&token).unwrap();
        assert_eq!((stored.file, stored.filename.as_str()), (FIELD, "tool.exe"));
        // The labels left of the token decode as no other kind's encoding.
        for label in ["crl", "aia", "ocsp"] {
            assert_eq!(crate::kinds::decode_dns_labels(&[label.to_string()]), crate::kinds::DnsData::NoMatch);
        }
    }

    #[tokio::test]
    async fn bad_uploads_are_refused_with_the_reason() {
        let cx = crate::kinds::testing::context();
        let params = crate::kinds::Params::new();
        let refuse = |bytes: Vec<u8>| {
            let uploads = upload(bytes);
            let cx = cx.clone();
            let params = params.clone();
            async move { SignedExe.create(&request(&params, &uploads), &cx).await.unwrap_err() }
        };
        assert!(matches!(refuse(b"#!/bin/sh\necho hi\n".to_vec()).await,
            CoreError::InvalidParam { name: "exe", reason } if reason.contains("no MZ header")));
        assert!(matches!(refuse(tiny_pe(false, 2, 0)[..300].to_vec()).await,
            CoreError::InvalidParam { name: "exe", reason } if reason.contains("truncated")));
        assert!(matches!(refuse(vec![0; MAX_BYTES + 1]).await, CoreError::TooLarge { name: "exe", .. }));
        let none = crate::kinds::Uploads::new();
        assert!(matches!(
            SignedExe.create(&request(&params, &none), &cx).await,
            Err(CoreError::InvalidParam { name: "exe", .. })
        ));
        let mut long = crate::kinds::Params::new();
        long.insert(SIGNER.into(), "y".repeat(65));
        let uploads = upload(tiny_pe(true, 1, 0));
        assert!(matches!(
            SignedExe.create(&request(&long, &uploads), &cx).await,
            Err(CoreError::InvalidParam { name: "signer_name", .. })
        ));
    }
}
