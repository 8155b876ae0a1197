//! Authenticode signing of PE images, in process: the installation's code-signing CA, a leaf
//! certificate per token whose CRL distribution point, AIA caIssuers and OCSP URLs are under
//! the token's NX hostname, and the PKCS#7 SignedData over an `SpcIndirectDataContent` that
//! carries the image's digest ([`super::pe`]). Verifying the signature makes the verifier
//! look those names up: `osslsigncode verify -CAfile ca.pem` fetches the leaf's CRL, Windows
//! chases AIA for the issuer (which is not embedded, so it has to) and the CRL.
//!
//! Keys are ECDSA P-256 and digests SHA-256, from `ring` (already linked for TLS): `ring`
//! cannot make RSA keys, and the RustCrypto `rsa` crate's signing is not constant-time
//! (RUSTSEC-2023-0071). Windows and OpenSSL verify ECDSA Authenticode signatures.
//!
//! Written by hand (with [`super::der`]) rather than with `rcgen` + `cms`: the two
//! certificates and the SignedData are fixed shapes of a few dozen values each, and the
//! signer info must repeat the leaf's issuer name and serial byte for byte, which is simplest
//! when this module encodes both. `rcgen` would need its `x509-parser` feature (a dozen more
//! crates) to take a stored CA back, and `cms` 0.3 is a release candidate. This adds no crate.
//!
//! No CRL distribution point or AIA is ever put on the CA: OpenSSL retries a root's CDP for
//! ever. The CA is self-signed and lives in the data directory (`codesign-ca.pem`, mode
//! 0600, key and certificate); a leaf's key is made for one signature and then dropped.

use std::path::Path;

use anyhow::Context;
use rand::Rng;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING,
};
use sha2::{Digest, Sha256};

use super::der::{self, Reader};
use super::pe::{self, PeError};

/// Object identifiers, as arcs.
mod oids {
    pub const SIGNED_DATA: &[u64] = &[1, 2, 840, 113549, 1, 7, 2];
    pub const CONTENT_TYPE: &[u64] = &[1, 2, 840, 113549, 1, 9, 3];
    pub const MESSAGE_DIGEST: &[u64] = &[1, 2, 840, 113549, 1, 9, 4];
    pub const SHA256: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];
    pub const EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
    pub const P256: &[u64] = &[1, 2, 840, 10045, 3, 1, 7];
    pub const ECDSA_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];
    pub const SPC_INDIRECT_DATA: &[u64] = &[1, 3, 6, 1, 4, 1, 311, 2, 1, 4];
    pub const SPC_STATEMENT_TYPE: &[u64] = &[1, 3, 6, 1, 4, 1, 311, 2, 1, 11];
    pub const SPC_SP_OPUS_INFO: &[u64] = &[1, 3, 6, 1, 4, 1, 311, 2, 1, 12];
    pub const SPC_PE_IMAGE_DATA: &[u64] = &[1, 3, 6, 1, 4, 1, 311, 2, 1, 15];
    pub const SPC_INDIVIDUAL_SP_KEY_PURPOSE: &[u64] = &[1, 3, 6, 1, 4, 1, 311, 2, 1, 21];
    pub const COUNTRY: &[u64] = &[2, 5, 4, 6];
    pub const ORGANIZATION: &[u64] = &[2, 5, 4, 10];
    pub const COMMON_NAME: &[u64] = &[2, 5, 4, 3];
    pub const SUBJECT_KEY_ID: &[u64] = &[2, 5, 29, 14];
    pub const KEY_USAGE: &[u64] = &[2, 5, 29, 15];
    pub const BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
    pub const CRL_DISTRIBUTION_POINTS: &[u64] = &[2, 5, 29, 31];
    pub const AUTHORITY_KEY_ID: &[u64] = &[2, 5, 29, 35];
    pub const EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
    pub const AUTHORITY_INFO_ACCESS: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];
    pub const CODE_SIGNING: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 3];
    pub const OCSP: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1];
    pub const CA_ISSUERS: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 2];
}

const DAY: i64 = 86_400;

fn sha256_alg() -> Vec<u8> {
    der::seq(&[&der::oid(oids::SHA256), &der::null()])
}

fn ecdsa_sha256_alg() -> Vec<u8> {
    der::seq(&[&der::oid(oids::ECDSA_SHA256)])
}

/// An X.509 Name: country, organization, common name.
fn name(country: &str, org: &str, common: &str) -> Vec<u8> {
    let rdn = |oid: &[u64], value: Vec<u8>| der::set_of(&[&der::seq(&[&der::oid(oid), &value])]);
    der::seq(&[
        &rdn(oids::COUNTRY, der::tlv(der::PRINTABLE_STRING, country.as_bytes())),
        &rdn(oids::ORGANIZATION, der::utf8(org)),
        &rdn(oids::COMMON_NAME, der::utf8(common)),
    ])
}

fn extension(oid: &[u64], critical: bool, value: &[u8]) -> Vec<u8> {
    if critical {
        der::seq(&[&der::oid(oid), &der::boolean_true(), &der::octets(value)])
    } else {
        der::seq(&[&der::oid(oid), &der::octets(value)])
    }
}

/// Key identifier: the leftmost 160 bits of the SHA-256 of the public key (RFC 7093, 2).
fn key_id(point: &[u8]) -> [u8; 20] {
    let h = Sha256::digest(point);
    let mut id = [0u8; 20];
    id.copy_from_slice(&h[..20]);
    id
}

/// A random positive 128-bit serial number.
fn serial() -> [u8; 16] {
    let mut s: [u8; 16] = rand::thread_rng().gen();
    s[0] = (s[0] & 0x7f) | 0x01;
    s
}

fn spki(point: &[u8]) -> Vec<u8> {
    der::seq(&[&der::seq(&[&der::oid(oids::EC_PUBLIC_KEY), &der::oid(oids::P256)]), &der::bits(point)])
}

fn new_key(rng: &SystemRandom) -> (EcdsaKeyPair, Vec<u8>) {
    // ring fails here only if the operating system's random source does.
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, rng).expect("P-256 key generation");
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), rng).expect("own PKCS#8");
    (key, pkcs8.as_ref().to_vec())
}

fn sign(key: &EcdsaKeyPair, rng: &SystemRandom, message: &[u8]) -> Vec<u8> {
    // Signing with a valid key fails only if the random source does.
    key.sign(rng, message).expect("ECDSA signing").as_ref().to_vec()
}

/// What a certificate says, before it is signed.
struct TbsFields<'a> {
    serial: &'a [u8],
    issuer: &'a [u8],
    not_before: i64,
    not_after: i64,
    subject: &'a [u8],
    point: &'a [u8],
    extensions: Vec<Vec<u8>>,
}

fn certificate(tbs: TbsFields<'_>, issuer_key: &EcdsaKeyPair, rng: &SystemRandom) -> Vec<u8> {
    let exts: Vec<&[u8]> = tbs.extensions.iter().map(Vec::as_slice).collect();
    let tbs = der::seq(&[
        &der::cons(der::context(0, true), &[&der::small_uint(2)]),
        &der::uint(tbs.serial),
        &ecdsa_sha256_alg(),
        tbs.issuer,
        &der::seq(&[&der::time(tbs.not_before), &der::time(tbs.not_after)]),
        tbs.subject,
        &spki(tbs.point),
        &der::cons(der::context(3, true), &[&der::seq(&exts)]),
    ]);
    let sig = sign(issuer_key, rng, &tbs);
    der::seq(&[&tbs, &ecdsa_sha256_alg(), &der::bits(&sig)])
}

/// The parts of a certificate this module reads back.
#[derive(Debug, Clone, Copy)]
pub struct CertParts<'a> {
    /// The whole TBSCertificate, as signed.
    pub tbs: &'a [u8],
    /// The serial number's content octets.
    pub serial: &'a [u8],
    /// Issuer and subject names, whole encodings.
    pub issuer: &'a [u8],
    pub subject: &'a [u8],
    /// The subject's public key (an uncompressed P-256 point for certificates made here).
    pub point: &'a [u8],
    /// The issuer's signature over `tbs`.
    pub signature: &'a [u8],
}

/// Reads a certificate's outline (not its extensions).
pub fn cert_parts(cert: &[u8]) -> Result<CertParts<'_>, der::DerError> {
    let mut c = Reader::new(der::single(cert, der::SEQUENCE)?);
    let tbs = c.expect_raw(der::SEQUENCE)?;
    c.expect(der::SEQUENCE)?;
    let signature = bit_string_bytes(c.expect(der::BIT_STRING)?)?;
    c.finish()?;
    let mut t = Reader::new(der::single(tbs, der::SEQUENCE)?);
    t.optional(der::context(0, true))?;
    let serial = t.expect(der::INTEGER)?;
    t.expect(der::SEQUENCE)?;
    let issuer = t.expect_raw(der::SEQUENCE)?;
    t.expect(der::SEQUENCE)?;
    let subject = t.expect_raw(der::SEQUENCE)?;
    let mut k = Reader::new(t.expect(der::SEQUENCE)?);
    k.expect(der::SEQUENCE)?;
    let point = bit_string_bytes(k.expect(der::BIT_STRING)?)?;
    k.finish()?;
    Ok(CertParts { tbs, serial, issuer, subject, point, signature })
}

fn bit_string_bytes(content: &[u8]) -> Result<&[u8], der::DerError> {
    match content.split_first() {
        Some((0, rest)) => Ok(rest),
        _ => Err(der::DerError("BIT STRING with unused bits")),
    }
}

/// The first organization (O) in a Name.
fn organization(name: &[u8]) -> Option<String> {
    let mut rdns = Reader::new(der::single(name, der::SEQUENCE).ok()?);
    while !rdns.is_empty() {
        let mut set = Reader::new(rdns.expect(der::SET).ok()?);
        while !set.is_empty() {
            let mut atv = Reader::new(set.expect(der::SEQUENCE).ok()?);
            let oid = atv.expect_raw(der::OID).ok()?;
            let (_, value, _) = atv.next_raw().ok()?;
            if oid == der::oid(oids::ORGANIZATION) {
                return String::from_utf8(value.to_vec()).ok();
            }
        }
    }
    None
}

/// Bland publisher-like names for a new installation's CA (never a real vendor's).
const ORG_FIRST: &[&str] = &[
    "Arden",
    "Belmont",
    "Corvel",
    "Halden",
    "Kestrel",
    "Lindqvist",
    "Marlow",
    "Norrland",
    "Orrin",
    "Talbot",
    "Wexford",
];
const ORG_SECOND: &[&str] = &["Software", "Systems", "Technologies", "Data Services", "Digital", "Engineering"];
const ORG_FORM: &[&str] = &["Ltd", "Inc.", "LLC", "GmbH", "B.V."];

fn invented_organization() -> String {
    let mut rng = rand::thread_rng();
    let pick = |rng: &mut rand::rngs::ThreadRng, list: &[&'static str]| list[rng.gen_range(0..list.len())];
    format!("{} {} {}", pick(&mut rng, ORG_FIRST), pick(&mut rng, ORG_SECOND), pick(&mut rng, ORG_FORM))
}

/// The installation's code-signing CA: a self-signed P-256 certificate and its key.
pub struct CodeSigningCa {
    key: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    cert: Vec<u8>,
    subject: Vec<u8>,
    key_id: [u8; 20],
    organization: String,
    not_after: i64,
}

impl std::fmt::Debug for CodeSigningCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CodeSigningCa({})", self.organization)
    }
}

impl CodeSigningCa {
    /// A new CA for `organization`, valid from a year or two before `now` for 15 years.
    pub fn generate(organization: &str, now: i64) -> CodeSigningCa {
        let rng = SystemRandom::new();
        let (key, pkcs8) = new_key(&rng);
        let subject = name("US", organization, &format!("{organization} Code Signing CA"));
        let point = key.public_key().as_ref().to_vec();
        let kid = key_id(&point);
        let not_before = (now - rand::thread_rng().gen_range(400..800) * DAY) / DAY * DAY;
        let not_after = not_before + 15 * 365 * DAY;
        let extensions = vec![
            // CA, no intermediates below it.
            extension(oids::BASIC_CONSTRAINTS, true, &der::seq(&[&der::boolean_true(), &der::small_uint(0)])),
            // digitalSignature, keyCertSign, cRLSign.
            extension(oids::KEY_USAGE, true, &der::tlv(der::BIT_STRING, &[0x01, 0x86])),
            extension(oids::SUBJECT_KEY_ID, false, &der::octets(&kid)),
        ];
        let serial = serial();
        let tbs = TbsFields {
            serial: &serial,
            issuer: &subject,
            not_before,
            not_after,
            subject: &subject,
            point: &point,
            extensions,
        };
        let cert = certificate(tbs, &key, &rng);
        CodeSigningCa { key, pkcs8, cert, subject, key_id: kid, organization: organization.into(), not_after }
    }

    /// A CA that lives as long as this process, for tools and tests that keep nothing.
    pub fn ephemeral() -> CodeSigningCa {
        CodeSigningCa::generate(&invented_organization(), crate::model::now_us() / 1_000_000)
    }

    /// The key and certificate as stored: PKCS#8 and X.509, both PEM.
    pub fn to_pem(&self) -> String {
        der::pem("PRIVATE KEY", &self.pkcs8) + &der::pem("CERTIFICATE", &self.cert)
    }

    /// The CA certificate, PEM: what verifiers are given (`osslsigncode verify -CAfile`).
    pub fn cert_pem(&self) -> String {
        der::pem("CERTIFICATE", &self.cert)
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert
    }

    pub fn organization(&self) -> &str {
        &self.organization
    }

    /// Reads what [`CodeSigningCa::to_pem`] wrote, checking that key and certificate belong
    /// together.
    pub fn from_pem(text: &str) -> Result<CodeSigningCa, String> {
        let pkcs8 = der::unpem(text, "PRIVATE KEY").ok_or("no PRIVATE KEY block")?;
        let cert = der::unpem(text, "CERTIFICATE").ok_or("no CERTIFICATE block")?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8, &SystemRandom::new())
            .map_err(|_| "the key is not a P-256 PKCS#8 key")?;
        let parts = cert_parts(&cert).map_err(|e| format!("the certificate does not read: {e}"))?;
        if parts.point != key.public_key().as_ref() {
            return Err("the certificate is not the key's".into());
        }
        let organization = organization(parts.subject).ok_or("the certificate names no organization")?;
        let not_after = ca_not_after(&cert).unwrap_or(i64::MAX);
        Ok(CodeSigningCa {
            subject: parts.subject.to_vec(),
            key_id: key_id(parts.point),
            key,
            pkcs8,
            cert,
            organization,
            not_after,
        })
    }

    /// The CA in `path` (see the module doc), made there on first use.
    pub fn load_or_create(path: &Path) -> anyhow::Result<CodeSigningCa> {
        let fresh = if path.exists() { String::new() } else { CodeSigningCa::ephemeral().to_pem() };
        let text = crate::datadir::read_or_create(path, || fresh.trim().to_string())?;
        CodeSigningCa::from_pem(&text)
            .map_err(|e| anyhow::anyhow!(e))
            .with_context(|| format!("{} does not hold a usable code-signing CA", path.display()))
    }
}

/// A certificate's notAfter, as Unix seconds (UTCTime or GeneralizedTime).
fn ca_not_after(cert: &[u8]) -> Option<i64> {
    let mut c = Reader::new(der::single(cert, der::SEQUENCE).ok()?);
    let mut t = Reader::new(der::single(c.expect_raw(der::SEQUENCE).ok()?, der::SEQUENCE).ok()?);
    t.optional(der::context(0, true)).ok()?;
    for tag in [der::INTEGER, der::SEQUENCE, der::SEQUENCE] {
        t.expect(tag).ok()?;
    }
    let mut v = Reader::new(t.expect(der::SEQUENCE).ok()?);
    v.next_raw().ok()?;
    let (tag, text, _) = v.next_raw().ok()?;
    let text = std::str::from_utf8(text).ok()?;
    let full = match tag {
        der::UTC_TIME => format!("{}{text}", if text.get(..2)? < "50" { "20" } else { "19" }),
        der::GENERALIZED_TIME => text.to_string(),
        _ => return None,
    };
    chrono::NaiveDateTime::parse_from_str(&full, "%Y%m%d%H%M%SZ").ok().map(|t| t.and_utc().timestamp())
}

/// What the leaf certificate of one signature says.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// The publisher: the subject's organization and common name.
    pub publisher: String,
    pub crl_url: String,
    pub ca_issuers_url: String,
    pub ocsp_url: String,
    /// Unix seconds: the leaf is valid from some weeks before this, for three years.
    pub now: i64,
}

/// A signed image and what was done to it.
#[derive(Debug, Clone)]
pub struct Signed {
    pub bytes: Vec<u8>,
    /// The upload was signed already; that signature was removed and replaced.
    pub replaced_signature: bool,
    /// The Authenticode SHA-256 digest of the image.
    pub digest: [u8; 32],
    /// The leaf certificate (DER).
    pub leaf: Vec<u8>,
}

impl CodeSigningCa {
    fn issue_leaf(&self, spec: &LeafSpec, point: &[u8], serial: &[u8], rng: &SystemRandom) -> Vec<u8> {
        let not_before = (spec.now - rand::thread_rng().gen_range(20..200) * DAY) / 3600 * 3600;
        let not_after = (not_before + 3 * 365 * DAY).min(self.not_after);
        let subject = name("US", &spec.publisher, &spec.publisher);
        let uri = |u: &str| der::tlv(der::context(6, false), u.as_bytes());
        let cdp = der::seq(&[&der::seq(&[&der::cons(
            der::context(0, true),
            &[&der::cons(der::context(0, true), &[&uri(&spec.crl_url)])],
        )])]);
        let aia = der::seq(&[
            &der::seq(&[&der::oid(oids::CA_ISSUERS), &uri(&spec.ca_issuers_url)]),
            &der::seq(&[&der::oid(oids::OCSP), &uri(&spec.ocsp_url)]),
        ]);
        let extensions = vec![
            extension(oids::BASIC_CONSTRAINTS, false, &der::seq(&[])),
            // digitalSignature only.
            extension(oids::KEY_USAGE, true, &der::tlv(der::BIT_STRING, &[0x07, 0x80])),
            extension(oids::EXT_KEY_USAGE, false, &der::seq(&[&der::oid(oids::CODE_SIGNING)])),
            extension(oids::SUBJECT_KEY_ID, false, &der::octets(&key_id(point))),
            extension(oids::AUTHORITY_KEY_ID, false, &der::seq(&[&der::tlv(der::context(0, false), &self.key_id)])),
            extension(oids::CRL_DISTRIBUTION_POINTS, false, &cdp),
            extension(oids::AUTHORITY_INFO_ACCESS, false, &aia),
        ];
        let tbs =
            TbsFields { serial, issuer: &self.subject, not_before, not_after, subject: &subject, point, extensions };
        certificate(tbs, &self.key, rng)
    }

    /// Signs a PE image (already checked to be at most the caller's size limit): any existing
    /// signature is replaced, the image is padded to 8 bytes and gets a certificate table
    /// holding a SignedData by a new leaf certificate. Everything else stays byte for byte.
    pub fn sign_pe(&self, bytes: &[u8], spec: &LeafSpec) -> Result<Signed, PeError> {
        let layout = pe::parse(bytes)?;
        let image = pe::unsigned_image(bytes, &layout);
        let digest = pe::digest(&image, &layout, image.len());
        let rng = SystemRandom::new();
        let (leaf_key, _) = new_key(&rng);
        let serial = serial();
        let leaf = self.issue_leaf(spec, leaf_key.public_key().as_ref(), &serial, &rng);
        let pkcs7 = signed_data(&digest, &leaf, &self.subject, &serial, &leaf_key, &rng);
        let bytes = pe::append_signature(image, &layout, &pkcs7);
        Ok(Signed { bytes, replaced_signature: layout.cert_table.is_some(), digest, leaf })
    }
}

/// `SpcIndirectDataContent` for a PE image with this digest.
fn spc_indirect_data(digest: &[u8; 32]) -> Vec<u8> {
    // SpcPeImageData: no flags, and the "<<<Obsolete>>>" file link every signer writes
    // (SpcLink.file [2] → SpcString.unicode [0] IMPLICIT BMPString).
    let obsolete = der::tlv(der::context(0, false), &der::bmp_body("<<<Obsolete>>>"));
    let link = der::cons(der::context(0, true), &[&der::cons(der::context(2, true), &[&obsolete])]);
    let pe_image_data = der::seq(&[&der::tlv(der::BIT_STRING, &[0]), &link]);
    der::seq(&[
        &der::seq(&[&der::oid(oids::SPC_PE_IMAGE_DATA), &pe_image_data]),
        &der::seq(&[&sha256_alg(), &der::octets(digest)]),
    ])
}

fn attribute(oid: &[u64], value: &[u8]) -> Vec<u8> {
    der::seq(&[&der::oid(oid), &der::set_of(&[value])])
}

/// The DER of a PKCS#7 ContentInfo holding the SignedData (RFC 2315 9.1, Authenticode).
fn signed_data(
    digest: &[u8; 32],
    leaf: &[u8],
    issuer: &[u8],
    serial: &[u8],
    leaf_key: &EcdsaKeyPair,
    rng: &SystemRandom,
) -> Vec<u8> {
    let spc = spc_indirect_data(digest);
    // PKCS#7 digests the content octets of the content, without its tag and length.
    let spc_content = der::single(&spc, der::SEQUENCE).unwrap_or_default();
    let message_digest = Sha256::digest(spc_content);
    let attrs = der::set_of(&[
        &attribute(oids::CONTENT_TYPE, &der::oid(oids::SPC_INDIRECT_DATA)),
        &attribute(oids::SPC_SP_OPUS_INFO, &der::seq(&[])),
        &attribute(oids::SPC_STATEMENT_TYPE, &der::seq(&[&der::oid(oids::SPC_INDIVIDUAL_SP_KEY_PURPOSE)])),
        &attribute(oids::MESSAGE_DIGEST, &der::octets(&message_digest)),
    ]);
    // The signature covers the attributes as a SET; the signer info carries them as [0].
    let signature = sign(leaf_key, rng, &attrs);
    let attrs_content = der::single(&attrs, der::SET).unwrap_or_default();
    let signer_info = der::seq(&[
        &der::small_uint(1),
        &der::seq(&[issuer, &der::uint(serial)]),
        &sha256_alg(),
        &der::tlv(der::context(0, true), attrs_content),
        &ecdsa_sha256_alg(),
        &der::octets(&signature),
    ]);
    let sd = der::seq(&[
        &der::small_uint(1),
        &der::set_of(&[&sha256_alg()]),
        &der::seq(&[&der::oid(oids::SPC_INDIRECT_DATA), &der::cons(der::context(0, true), &[&spc])]),
        // Only the leaf: a verifier must fetch the issuer (AIA) or be given it.
        &der::cons(der::context(0, true), &[leaf]),
        &der::set_of(&[&signer_info]),
    ]);
    der::seq(&[&der::oid(oids::SIGNED_DATA), &der::cons(der::context(0, true), &[&sd])])
}

/// What a signed image's signature says, read back and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    /// The digest in the SpcIndirectDataContent is the image's own.
    pub digest_matches: bool,
    /// The messageDigest attribute is the digest of the SpcIndirectDataContent.
    pub message_digest_matches: bool,
    /// The signer's signature over the attributes verifies with the embedded leaf's key.
    pub signature_verifies: bool,
    /// The signer info names the leaf (issuer and serial).
    pub signer_is_leaf: bool,
    /// The embedded certificates (DER).
    pub certificates: Vec<Vec<u8>>,
}

/// Reads a signed image's Authenticode signature and checks it against the image.
pub fn inspect(bytes: &[u8]) -> Result<Inspected, String> {
    let layout = pe::parse(bytes).map_err(|e| e.0)?;
    let (blob, table_at) = pe::signature_blob(bytes, &layout).map_err(|e| e.0)?;
    let d = |e: der::DerError| e.0.to_string();
    let mut r = Reader::new(blob);
    let content_info = r.expect(der::SEQUENCE).map_err(d)?;
    // What follows the DER in the table is its padding.
    let mut ci = Reader::new(content_info);
    if ci.expect_raw(der::OID).map_err(d)? != der::oid(oids::SIGNED_DATA) {
        return Err("not SignedData".into());
    }
    let sd = der::single(ci.expect(der::context(0, true)).map_err(d)?, der::SEQUENCE).map_err(d)?;
    ci.finish().map_err(d)?;
    let mut s = Reader::new(sd);
    s.expect(der::INTEGER).map_err(d)?;
    s.expect(der::SET).map_err(d)?;
    let mut encap = Reader::new(s.expect(der::SEQUENCE).map_err(d)?);
    if encap.expect_raw(der::OID).map_err(d)? != der::oid(oids::SPC_INDIRECT_DATA) {
        return Err("content is not SpcIndirectDataContent".into());
    }
    let spc = der::single(encap.expect(der::context(0, true)).map_err(d)?, der::SEQUENCE).map_err(d)?;
    let mut spc_r = Reader::new(spc);
    spc_r.expect(der::SEQUENCE).map_err(d)?;
    let mut digest_info = Reader::new(spc_r.expect(der::SEQUENCE).map_err(d)?);
    digest_info.expect(der::SEQUENCE).map_err(d)?;
    let spc_digest = digest_info.expect(der::OCTET_STRING).map_err(d)?;
    let mut certificates = Vec::new();
    if let Some(certs) = s.optional(der::context(0, true)).map_err(d)? {
        let mut c = Reader::new(certs);
        while !c.is_empty() {
            certificates.push(c.expect_raw(der::SEQUENCE).map_err(d)?.to_vec());
        }
    }
    s.optional(der::context(1, true)).map_err(d)?;
    let mut signers = Reader::new(s.expect(der::SET).map_err(d)?);
    s.finish().map_err(d)?;
    let mut si = Reader::new(signers.expect(der::SEQUENCE).map_err(d)?);
    si.expect(der::INTEGER).map_err(d)?;
    let mut ias = Reader::new(si.expect(der::SEQUENCE).map_err(d)?);
    let (issuer, serial) = (ias.expect_raw(der::SEQUENCE).map_err(d)?, ias.expect(der::INTEGER).map_err(d)?);
    si.expect(der::SEQUENCE).map_err(d)?;
    let attrs = si.expect(der::context(0, true)).map_err(d)?;
    si.expect(der::SEQUENCE).map_err(d)?;
    let signature = si.expect(der::OCTET_STRING).map_err(d)?;
    let mut message_digest = None;
    let mut a = Reader::new(attrs);
    while !a.is_empty() {
        let mut attr = Reader::new(a.expect(der::SEQUENCE).map_err(d)?);
        let oid = attr.expect_raw(der::OID).map_err(d)?;
        let values = attr.expect(der::SET).map_err(d)?;
        if oid == der::oid(oids::MESSAGE_DIGEST) {
            message_digest = Some(der::single(values, der::OCTET_STRING).map_err(d)?);
        }
    }
    let leaf = certificates.first().ok_or("no certificate embedded")?;
    let parts = cert_parts(leaf).map_err(d)?;
    let signed_attrs = der::tlv(der::SET, attrs);
    let signature_verifies =
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, parts.point).verify(&signed_attrs, signature).is_ok();
    Ok(Inspected {
        digest_matches: spc_digest == pe::digest(bytes, &layout, table_at),
        message_digest_matches: message_digest == Some(&Sha256::digest(spc)[..]),
        signature_verifies,
        signer_is_leaf: issuer == parts.issuer && serial == parts.serial,
        certificates,
    })
}

/// Whether `cert` carries a signature by the key of `issuer` (both DER).
pub fn issued_by(cert: &[u8], issuer: &[u8]) -> bool {
    match (cert_parts(cert), cert_parts(issuer)) {
        (Ok(c), Ok(i)) => {
            c.issuer == i.subject
                && UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, i.point).verify(c.tbs, c.signature).is_ok()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artefacts::pe::tests::tiny_pe;

    fn spec() -> LeafSpec {
        LeafSpec {
            publisher: "Halden Software Ltd".into(),
            crl_url: "http://crl.tok.nx.t.test/pki/ca.crl".into(),
            ca_issuers_url: "http://aia.tok.nx.t.test/pki/ca.crt".into(),
            ocsp_url: "http://ocsp.tok.nx.t.test/".into(),
            now: 1_800_000_000,
        }
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn the_ca_is_self_signed_round_trips_and_has_no_cdp() {
        let ca = CodeSigningCa::generate("Kestrel Systems Inc.", 1_800_000_000);
        assert!(issued_by(ca.cert_der(), ca.cert_der()), "self-signed");
        let again = CodeSigningCa::from_pem(&ca.to_pem()).unwrap();
        assert_eq!(again.cert_der(), ca.cert_der());
        assert_eq!(again.organization(), "Kestrel Systems Inc.");
        assert_eq!(again.key_id, ca.key_id);
        assert_eq!(again.not_after, ca.not_after);
        assert!(ca.not_after > 1_800_000_000 + 10 * 365 * DAY);
        assert!(!contains(ca.cert_der(), &der::oid(oids::CRL_DISTRIBUTION_POINTS)), "never a CDP on the root");
        assert!(!contains(ca.cert_der(), &der::oid(oids::AUTHORITY_INFO_ACCESS)));
        assert!(!contains(ca.cert_der(), b"Microsoft"));
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
        // Key and certificate must belong together.
        let other = CodeSigningCa::generate("Other", 1_800_000_000);
        let mixed = der::pem("PRIVATE KEY", &ca.pkcs8) + &other.cert_pem();
        assert!(CodeSigningCa::from_pem(&mixed).unwrap_err().contains("not the key's"));
        assert!(CodeSigningCa::from_pem("junk").is_err());
    }

    #[test]
    fn the_ca_is_made_once_in_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("codesign-ca.pem");
        let first = CodeSigningCa::load_or_create(&path).unwrap();
        let second = CodeSigningCa::load_or_create(&path).unwrap();
        assert_eq!(first.cert_der(), second.cert_der());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(&path, "not a CA\n").unwrap();
        let e = CodeSigningCa::load_or_create(&path).unwrap_err();
        assert!(format!("{e:#}").contains("does not hold a usable code-signing CA"), "{e:#}");
    }

    #[test]
    fn signs_both_header_kinds_and_the_signature_reads_back() {
        let ca = CodeSigningCa::generate("Kestrel Systems Inc.", 1_800_000_000);
        for plus in [false, true] {
            let pe = tiny_pe(plus, 3, 5);
            let signed = ca.sign_pe(&pe, &spec()).unwrap();
            assert!(!signed.replaced_signature);
            let out = &signed.bytes;
            assert_eq!(out.len() % 8, 0);
            let layout = pe::parse(out).unwrap();
            // Sections and the overlay are untouched.
            assert_eq!(out[512..pe.len()], pe[512..]);
            let got = inspect(out).unwrap();
            assert_eq!(
                (got.digest_matches, got.message_digest_matches, got.signature_verifies, got.signer_is_leaf),
                (true, true, true, true)
            );
            assert_eq!(got.certificates, vec![signed.leaf.clone()], "only the leaf is embedded");
            assert!(issued_by(&signed.leaf, ca.cert_der()));
            for url in [&spec().crl_url, &spec().ca_issuers_url, &spec().ocsp_url] {
                assert!(contains(&signed.leaf, url.as_bytes()), "{url}");
            }
            assert!(contains(&signed.leaf, b"Halden Software Ltd"));
            assert_eq!(pe::checksum(out, layout.checksum_offset).to_le_bytes(), out[layout.checksum_offset..][..4]);
            // A flipped byte in a section breaks the digest.
            let mut tampered = out.clone();
            tampered[600] ^= 1;
            assert!(!inspect(&tampered).unwrap().digest_matches);
        }
    }

    #[test]
    fn an_existing_signature_is_replaced() {
        let ca = CodeSigningCa::generate("Kestrel Systems Inc.", 1_800_000_000);
        let pe = tiny_pe(true, 2, 0);
        let once = ca.sign_pe(&pe, &spec()).unwrap();
        let other = CodeSigningCa::generate("Marlow Digital LLC", 1_800_000_000);
        let twice = other.sign_pe(&once.bytes, &spec()).unwrap();
        assert!(twice.replaced_signature);
        assert_eq!(twice.digest, once.digest, "the same image underneath");
        let got = inspect(&twice.bytes).unwrap();
        assert!(got.digest_matches && got.signature_verifies);
        assert_eq!(got.certificates.len(), 1);
        assert!(issued_by(&got.certificates[0], other.cert_der()));
        assert!(!issued_by(&got.certificates[0], ca.cert_der()));
    }

    #[test]
    fn refusals_carry_the_pe_reason() {
        let ca = CodeSigningCa::generate("Kestrel Systems Inc.", 1_800_000_000);
        assert!(ca.sign_pe(b"MZ but nothing more", &spec()).unwrap_err().0.contains("no MZ header"));
        let pe = tiny_pe(true, 2, 0);
        assert!(ca.sign_pe(&pe[..700], &spec()).unwrap_err().0.contains("runs past"));
        assert!(inspect(&pe).unwrap_err().contains("not signed"));
    }

    #[test]
    fn the_spc_content_has_the_shape_signers_write() {
        let spc = spc_indirect_data(&[0xab; 32]);
        let text = hex::encode(&spc);
        // SpcPeImageData with the obsolete link, as signtool writes it.
        assert!(text.contains("0301 00a0 20a2 1e80 1c00 3c00 3c00 3c00 4f".replace(' ', "").as_str()), "{text}");
        assert!(text.ends_with(&format!("0420{}", "ab".repeat(32))));
    }

    #[test]
    fn utc_and_generalized_not_after_read_back() {
        for year_secs in [1_800_000_000i64, 2_600_000_000] {
            let ca = CodeSigningCa::generate("X", year_secs);
            assert_eq!(ca_not_after(ca.cert_der()), Some(ca.not_after));
        }
    }
}
