//! Fuzz target `smtp_session`: one client's whole byte stream through the inbound SMTP
//! listener's session ([`trapline::listeners::smtp::serve_connection`]): command parsing,
//! the envelope, DATA with dot-unstuffing and its limits, the message summary, and the hits.
//!
//! Input: what the client sends (the session reads it to its end, then sees the connection
//! close). The sink knows one live token of the smtp kind, `abcdefghijklmnopqrstuvwxy`.
//! Invariants: no panic; every hit is an SMTP hit whose recipient is an address in the token
//! zone naming that token, at most one per message and envelope (so never more than the
//! envelopes the input could open); a summarised message keeps at most the documented number
//! of links and attachments and says its true size.
#![no_main]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use libfuzzer_sys::fuzz_target;
use trapline::listeners::smtp::{serve_connection, Config, Ends, MAX_ATTACHMENTS, MAX_LINKS};
use trapline::model::{Channel, HitOutcome, KeyScheme, Micros, NewHit, Token, TokenFile};
use trapline::recorder::{HitAmendment, HitSink, RecordError};

const TOKEN: &str = "abcdefghijklmnopqrstuvwxy";

struct Sink(Mutex<Vec<NewHit>>);

fn token() -> Token {
    Token {
        id: TOKEN.into(),
        kind: "smtp".into(),
        memo: String::new(),
        flock_id: "flock:default".into(),
        enabled: true,
        created_us: 0,
        updated_id: 1,
        params: serde_json::json!({}),
        created_by: "fuzz".into(),
        triggered_count: 0,
        unacked_count: 0,
        alert_webhook_url: None,
        alert_email: None,
        alert_cooldown_secs: None,
        alert_max_per_hour: None,
        ignore_sources: Vec::new(),
    }
}

#[async_trait]
impl HitSink for Sink {
    async fn record(&self, hit: NewHit) -> Result<HitOutcome, RecordError> {
        self.0.lock().unwrap().push(hit);
        Ok(HitOutcome::Unknown)
    }
    async fn amend(&self, _a: HitAmendment) -> Result<bool, RecordError> {
        Ok(false)
    }
    async fn token_file(&self, _id: &str, _name: &str) -> Result<Option<TokenFile>, RecordError> {
        Ok(None)
    }
    async fn live_token(&self, id: &str) -> Result<Option<Token>, RecordError> {
        Ok((id == TOKEN).then(token))
    }
    // The poller's state and leases: SMTP sessions use none of them.
    async fn trigger_keys(&self, _scheme: KeyScheme) -> Result<Vec<(String, String)>, RecordError> {
        Ok(Vec::new())
    }
    async fn poller_state_get(&self, _name: &str) -> Result<Option<String>, RecordError> {
        Ok(None)
    }
    async fn poller_state_put(&self, _name: &str, _value: &str) -> Result<(), RecordError> {
        Ok(())
    }
    async fn objects_done(&self, _source: &str, _keys: &[String]) -> Result<HashSet<String>, RecordError> {
        Ok(HashSet::new())
    }
    async fn mark_object_done(&self, _source: &str, _key: &str, _now_us: Micros) -> Result<(), RecordError> {
        Ok(())
    }
    async fn prune_objects_done(&self, _older_than_us: Micros) -> Result<u64, RecordError> {
        Ok(0)
    }
    async fn try_lease(&self, _name: &str, _holder: &str, _now: Micros, _ttl: Micros) -> Result<bool, RecordError> {
        Ok(true)
    }
    async fn release_lease(&self, _name: &str, _holder: &str) -> Result<(), RecordError> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let sink = Arc::new(Sink(Mutex::new(Vec::new())));
    let config = Arc::new(Config { domain: "t.test".into(), max_message: 64 * 1024, tls: None });
    let stream = tokio::io::join(std::io::Cursor::new(data.to_vec()), tokio::io::sink());
    let ends = Ends { peer: "192.0.2.1:1000".parse().unwrap(), local: "192.0.2.2:25".parse().unwrap() };
    rt.block_on(serve_connection(Box::new(stream), ends, config, sink.clone(), Box::pin(std::future::pending())));
    let hits = sink.0.lock().unwrap();
    // Each hit closes an envelope, which needs a MAIL and a RCPT command line (each at least 8 bytes).
    assert!(hits.len() <= data.len() / 16 + 1, "{} hits from {} bytes", hits.len(), data.len());
    for h in hits.iter() {
        assert_eq!(h.channel, Channel::Smtp);
        let rcpt = h.data["rcpt_to"].as_str().expect("a recipient");
        let (local, domain) = rcpt.rsplit_once('@').expect("an address");
        assert_eq!(local.to_ascii_lowercase(), TOKEN, "{rcpt}");
        assert!(domain.trim_end_matches('.').eq_ignore_ascii_case("t.test"), "{rcpt}");
        if let Some(m) = h.data.get("message") {
            assert!(m["links"].as_array().map_or(0, Vec::len) <= MAX_LINKS);
            assert!(m["attachments"].as_array().map_or(0, Vec::len) <= MAX_ATTACHMENTS);
            assert!(m["size"].as_u64().unwrap() <= 64 * 1024);
        }
    }
});
