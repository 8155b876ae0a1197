//! Helpers several kinds share: reading create parameters, the judge of DNS-encoding kinds,
//! and the fixtures of the kinds' unit tests. The contract itself is in `mod.rs`.

use super::Params;
use crate::error::{CoreError, CoreResult};
use crate::model::{Channel, Judgement, NewHit};

/// A required, non-empty parameter.
pub fn required<'a>(params: &'a Params, name: &'static str) -> CoreResult<&'a str> {
    params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()).ok_or_else(|| CoreError::invalid(name, "is required"))
}

/// Parses a boolean parameter the way form users write them.
pub fn parse_bool(name: &'static str, v: &str) -> CoreResult<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(CoreError::invalid(name, format!("must be true or false, not {v:?}"))),
    }
}

/// The judge of kinds whose DNS use must carry their own decoded data (`field`): a lookup of
/// the bare hostname, or one whose labels decode as another encoding, is kept but ignored.
/// Uses over HTTP are alerts.
pub fn needs_dns_field(hit: &NewHit, field: &str) -> Judgement {
    if hit.channel == Channel::Dns && hit.data.get(field).is_none_or(|v| v.as_str().is_none_or(str::is_empty)) {
        return Judgement::Ignore { reason: format!("lookup without decodable {field}") };
    }
    Judgement::alert()
}

/// Fixtures for the kinds' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use crate::error::CoreResult;
    use crate::kinds::{CreateRequest, Kind, KindContext, Params, Site, Uploads};
    use crate::model::{Channel, NewHit, Token};

    /// The id of the fixture tokens (and of the tokens fixture creates make).
    pub const ID: &str = "abcdefghijklmnopqrstuvwxy";

    /// Query labels as sent, split at dots.
    pub fn labels(s: &str) -> Vec<String> {
        s.split('.').map(str::to_string).collect()
    }

    /// A view context over `site`, with a key of this test process.
    pub fn vcx(site: &Site) -> crate::kinds::ViewContext<'_> {
        static KEY: std::sync::OnceLock<crate::sealed::SecretBox> = std::sync::OnceLock::new();
        crate::kinds::ViewContext { site, secrets: KEY.get_or_init(crate::sealed::SecretBox::ephemeral) }
    }

    pub fn site() -> Site {
        Site { domain: "t.test".into(), nx_domain: "nx.t.test".into(), public_url: "http://h".into() }
    }

    /// A context with a small work pool of its own.
    pub fn context() -> KindContext {
        KindContext {
            site: site(),
            work: Arc::new(crate::workpool::WorkPool::new(1, 4)),
            secrets: Arc::new(crate::sealed::SecretBox::ephemeral()),
            aws: None,
            code_signing: Arc::new(crate::artefacts::authenticode::CodeSigningCa::ephemeral()),
        }
    }

    /// `kind`'s stored settings for these form fields (and no uploads).
    pub async fn create(kind: &dyn Kind, fields: &[(&str, &str)]) -> CoreResult<serde_json::Value> {
        let params: Params = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let req = CreateRequest { params: &params, uploads: &Uploads::new(), token_id: ID };
        Ok(kind.create(&req, &context()).await?.params)
    }

    /// An enabled token of `kind` with id `abcdefghijklmnopqrstuvwxy` and these settings.
    pub fn token(kind: &str, params: serde_json::Value) -> Token {
        Token {
            id: "abcdefghijklmnopqrstuvwxy".into(),
            kind: kind.into(),
            memo: "m".into(),
            flock_id: crate::model::DEFAULT_FLOCK.into(),
            enabled: true,
            created_us: 0,
            updated_id: 1,
            params,
            created_by: "t".into(),
            triggered_count: 0,
            unacked_count: 0,
            alert_webhook_url: None,
            alert_email: None,
            alert_cooldown_secs: None,
            alert_max_per_hour: None,
            ignore_sources: Vec::new(),
        }
    }

    /// A would-be hit of the fixture token over `channel`, with this data.
    pub fn hit(channel: Channel, data: serde_json::Value) -> NewHit {
        NewHit {
            token: crate::model::TokenRef::Id("abcdefghijklmnopqrstuvwxy".into()),
            time_us: 0,
            channel,
            src_ip: "192.0.2.7".into(),
            src_port: 1,
            dst_ip: String::new(),
            dst_port: 0,
            data,
            private: None,
            group: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bools_parse_strictly() {
        assert!(parse_bool("x", "True").unwrap());
        assert!(!parse_bool("x", "0").unwrap());
        assert!(parse_bool("x", "maybe").is_err());
    }

    #[test]
    fn required_params_are_trimmed_and_non_empty() {
        let mut p = Params::new();
        assert!(required(&p, "a").is_err());
        p.insert("a".into(), "  ".into());
        assert!(required(&p, "a").is_err());
        p.insert("a".into(), " x ".into());
        assert_eq!(required(&p, "a").unwrap(), "x");
    }
}
