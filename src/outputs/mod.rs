//! Alert outputs: one module per way an alert leaves Trapline. Each turns an outbox row's
//! payload into its own message; the HTTP ones are delivered by [`webhook`] (with its timeout
//! and its refusal of internal addresses), syslog by [`syslog`]. The outbox retries what fails.
//! Delivery errors, which the outbox keeps and the log shows, name targets by host only
//! ([`redact`]).

pub mod card;
pub mod discord;
pub mod email;
pub mod gchat;
pub mod pagerduty;
pub mod redact;
pub mod slack;
pub mod syslog;
pub mod teams;
pub mod webhook;

use serde_json::Value;

/// Output types `--alert-outputs` takes.
pub const TYPES: &[&str] = &["webhook", "slack", "teams", "discord", "gchat", "pagerduty", "syslog", "email"];

/// What deliveries share: the HTTP client (with its SSRF rules) and the SMTP mailer, if any.
pub struct Context {
    pub http: webhook::Client,
    pub mail: Option<email::Mailer>,
}

/// Where an alert goes: one variant per output type, written (in outbox rows, API answers and
/// the configuration) as a JSON object whose `type` names the variant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum OutputSpec {
    Webhook { url: String },
    Slack { url: String },
    Teams { url: String },
    Discord { url: String },
    Gchat { url: String },
    Pagerduty { routing_key: String, url: String },
    Syslog { url: String },
    Email { to: Vec<String> },
}

impl OutputSpec {
    /// Parses one `--alert-outputs` entry: `TYPE=URL`, `pagerduty=ROUTING_KEY[@URL]`,
    /// `syslog=udp://host:port` / `syslog=tcp://host:port`, or `email=a@x;b@y`.
    pub fn parse(spec: &str, allow_private: bool) -> Result<OutputSpec, String> {
        let (kind, rest) =
            spec.trim().split_once('=').ok_or_else(|| format!("{:?}: expected TYPE=URL", redact::redact(spec)))?;
        let kind = kind.trim().to_ascii_lowercase();
        let http = |rest: &str| webhook::validate_url(rest, allow_private);
        Ok(match kind.as_str() {
            "syslog" => OutputSpec::Syslog { url: syslog::validate_url(rest)? },
            "email" => OutputSpec::Email { to: email::parse_recipients(rest)? },
            "pagerduty" => {
                let (key, url) = match rest.split_once('@') {
                    Some((k, u)) => (k.trim(), u.trim()),
                    None => (rest.trim(), pagerduty::EVENTS_URL),
                };
                if key.is_empty() || key.len() > 64 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err("a PagerDuty routing key is 1-64 letters and digits".into());
                }
                OutputSpec::Pagerduty { routing_key: key.to_string(), url: http(url)? }
            }
            "webhook" => OutputSpec::Webhook { url: http(rest)? },
            "slack" => OutputSpec::Slack { url: http(rest)? },
            "teams" => OutputSpec::Teams { url: http(rest)? },
            "discord" => OutputSpec::Discord { url: http(rest)? },
            "gchat" => OutputSpec::Gchat { url: http(rest)? },
            _ => return Err(format!("unknown output type {kind:?} (known: {})", TYPES.join(", "))),
        })
    }

    /// An output description as stored (outbox rows, outputs added through the API).
    pub fn from_value(v: &Value) -> Result<OutputSpec, String> {
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
        if !TYPES.contains(&kind) {
            return Err(format!("unknown output type {kind:?}"));
        }
        serde_json::from_value(v.clone()).map_err(|e| format!("{kind} output: {e}"))
    }

    /// The stored form: `{"type": ..., ...}` (equal outputs compare equal).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The output type, as `--alert-outputs` names it.
    pub fn type_name(&self) -> &'static str {
        match self {
            OutputSpec::Webhook { .. } => "webhook",
            OutputSpec::Slack { .. } => "slack",
            OutputSpec::Teams { .. } => "teams",
            OutputSpec::Discord { .. } => "discord",
            OutputSpec::Gchat { .. } => "gchat",
            OutputSpec::Pagerduty { .. } => "pagerduty",
            OutputSpec::Syslog { .. } => "syslog",
            OutputSpec::Email { .. } => "email",
        }
    }
}

/// The output description of a JSON webhook (outbox rows and configuration use this one form,
/// so equal outputs compare equal).
pub fn webhook_output(url: &str) -> Value {
    OutputSpec::Webhook { url: url.to_string() }.to_value()
}

/// The output description of an e-mail to `to`.
pub fn email_output<S: AsRef<str>>(to: &[S]) -> Value {
    OutputSpec::Email { to: to.iter().map(|a| a.as_ref().to_string()).collect() }.to_value()
}

/// [`OutputSpec::parse`], in the stored form.
pub fn parse_output(spec: &str, allow_private: bool) -> Result<Value, String> {
    OutputSpec::parse(spec, allow_private).map(|o| o.to_value())
}

/// Delivers one alert. `Err` is a message for the outbox's `last_error` and the log, with every
/// URL in it redacted to its host.
pub async fn deliver(ctx: &Context, output: &Value, payload: &Value, key: &str) -> Result<(), String> {
    deliver_unredacted(ctx, output, payload, key).await.map_err(|e| redact::redact(&e))
}

async fn deliver_unredacted(ctx: &Context, output: &Value, payload: &Value, key: &str) -> Result<(), String> {
    let card = || card::from_payload(payload);
    let (url, body) = match OutputSpec::from_value(output)? {
        OutputSpec::Email { to } => return email::send(ctx.mail.as_ref(), &card(), &to, key).await,
        OutputSpec::Syslog { url } => return syslog::send(&url, &syslog::message(&card(), payload, key)).await,
        OutputSpec::Webhook { url } => (url, payload.clone()),
        OutputSpec::Slack { url } => (url, slack::body(&card())),
        OutputSpec::Teams { url } => (url, teams::body(&card())),
        OutputSpec::Discord { url } => {
            (url, discord::body(&card(), payload.get("time").and_then(Value::as_str).unwrap_or("")))
        }
        OutputSpec::Gchat { url } => (url, gchat::body(&card(), key)),
        OutputSpec::Pagerduty { routing_key, url } => (url, pagerduty::body(&card(), payload, &routing_key, key)),
    };
    webhook::post(&ctx.http, &url, &body, key).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What the audit sent through a token's User-Agent, path and query, long enough to be cut.
    pub(super) const HOSTILE: &str = "<!channel> <https://evil.example/login|Trapline: session expired, log in again> \
        @everyone @here [click](https://evil.example) <a href=\"https://evil.example/a\">x</a> **bold** \
        <@123456> <t:1:R> ||spoiler|| `code` &amp; \u{202E}lmth.exe\n# heading\n- list";

    /// A card of a hit whose every attacker-controlled field is [`HOSTILE`].
    pub(super) fn hostile_card() -> card::Card {
        let long = format!("{HOSTILE} {}", "&<>".repeat(1000));
        card::from_payload(&json!({
            "test": false, "kind": "http", "kind_name": "HTTP", "memo": HOSTILE, "token_id": "tok",
            "flock_id": "flock:default", "time": "2026-11-22T23:03:43Z", "channel": "http",
            "src_ip": "192.0.2.53", "src_port": 53211, "useragent": long,
            "data": {"path": format!("/tok/{HOSTILE}"), "query": HOSTILE, "useragent": long, "headers": {"X": HOSTILE}},
            "token_url": "http://api.example/api/v1/canarytoken/fetch?canarytoken=tok",
        }))
    }

    #[test]
    fn cards_cut_what_the_attacker_sent() {
        let c = hostile_card();
        let ua = &c.facts.iter().find(|(k, _)| *k == "User-Agent").unwrap().1;
        assert_eq!(ua.chars().count(), card::MAX_FACT + 1);
        assert!(ua.ends_with(card::CUT));
        let details = &c.facts.iter().find(|(k, _)| *k == "Details").unwrap().1;
        assert!(!details.contains("useragent") && !details.contains("headers"), "{details}");
        assert!(c.facts.iter().all(|(_, v)| v.chars().count() <= card::MAX_FACT + 1));
    }

    #[test]
    fn inert_cuts_on_a_whole_escape() {
        let slack = |c: char, _: card::At, out: &mut String| match c {
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        };
        assert_eq!(card::inert("a&b", 100, slack), "a&amp;b");
        assert_eq!(card::inert("&&&&", 12, slack), "&amp;…", "never half an entity");
        assert_eq!(card::inert("ab", 2, slack), "ab", "what fits stays whole");
        assert_eq!(
            card::inert("see https://x.example/@a](b)", 100, card::plain),
            "see https:\u{200B}//x.example/@\u{200B}a]\u{200B}(b)"
        );
        assert_eq!(card::inert("a\u{7}b\u{202E}c\nd", 100, card::plain), "a b c\nd");
        assert!(card::inert(&"é".repeat(600), 1024, card::plain).len() <= 1024);
    }

    #[test]
    fn output_specs_keep_their_stored_form() {
        let pd = OutputSpec::parse("pagerduty=K1", false).unwrap();
        assert_eq!(pd.to_value(), json!({"type": "pagerduty", "routing_key": "K1", "url": pagerduty::EVENTS_URL}));
        assert_eq!(OutputSpec::from_value(&pd.to_value()).unwrap(), pd);
        assert_eq!(email_output(&["a@x.example"]), json!({"type": "email", "to": ["a@x.example"]}));
        assert_eq!(webhook_output("https://h.example/"), json!({"type": "webhook", "url": "https://h.example/"}));
        let chat = parse_output("gchat=https://chat.googleapis.com/v1/x", false).unwrap();
        assert_eq!(chat, json!({"type": "gchat", "url": "https://chat.googleapis.com/v1/x"}));
        assert!(OutputSpec::from_value(&json!({"type": "irc", "url": "x"})).unwrap_err().contains("unknown"));
        assert!(OutputSpec::from_value(&json!({"type": "slack"})).is_err(), "a slack output needs its url");
    }

    #[test]
    fn output_specs() {
        assert_eq!(parse_output("slack=https://hooks.slack.com/services/x", false).unwrap()["type"], "slack");
        let pd = parse_output("pagerduty=R0UTINGKEY", false).unwrap();
        assert_eq!((pd["routing_key"].as_str(), pd["url"].as_str()), (Some("R0UTINGKEY"), Some(pagerduty::EVENTS_URL)));
        let local = parse_output("pagerduty=K1@http://127.0.0.1:9/v2/enqueue", true).unwrap();
        assert_eq!(local["url"], "http://127.0.0.1:9/v2/enqueue");
        for bad in [
            "slack",
            "irc=https://x.example",
            "slack=ftp://x",
            "pagerduty=",
            "pagerduty=bad key!",
            "teams=http://10.0.0.1/",
        ] {
            assert!(parse_output(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_format_carries_the_facts() {
        let p = json!({
            "test": false, "kind": "dns", "kind_name": "DNS", "memo": "backup host", "token_id": "tok",
            "flock_id": "flock:default", "time": "2026-11-22T23:03:43Z", "channel": "dns",
            "src_ip": "192.0.2.53", "src_port": 53211, "data": {"query_name": "q", "headers": {"A": "b"}},
            "token_url": "http://api/x",
        });
        let c = card::from_payload(&p);
        assert_eq!(c.title, "Canarytoken triggered: DNS");
        let slack = slack::body(&c).to_string();
        let teams = teams::body(&c).to_string();
        let discord = discord::body(&c, "2026-11-22T23:03:43Z").to_string();
        let gchat = gchat::body(&c, "k").to_string();
        let pd = pagerduty::body(&c, &p, "R", "k");
        for text in [&slack, &teams, &discord, &gchat, &pd.to_string()] {
            assert!(
                text.contains("backup host") && text.contains("192.0.2.53:53211") && text.contains("query_name"),
                "{text}"
            );
            assert!(!text.contains("\"headers\""), "headers stay out of chat messages: {text}");
        }
        assert_eq!((pd["event_action"].as_str(), pd["dedup_key"].as_str()), (Some("trigger"), Some("k")));
        assert_eq!(pd["payload"]["severity"], "critical");
    }
}
