//! Output `email`: a text and HTML message to one or more recipients over SMTP — plain
//! (`smtp://`), STARTTLS (`smtp+starttls://`) or implicit TLS (`smtps://`).
//!
//! TLS trusts the webpki roots, plus the CAs of `--smtp-ca-file` (a private mail relay's CA).
//!
//! The SMTP server and its credentials are configured once (`--smtp-url`, `--smtp-from`);
//! outbox rows carry only the recipients, so no password is ever stored with an alert or shown
//! by the outbox API.

use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::card::Card;

/// Most recipients one output may name.
const MAX_TO: usize = 20;

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

/// Parses `smtp[+starttls]://[user:pass@]host[:port]` or `smtps://...` into a transport;
/// `extra_ca` (PEM) adds CAs to trust for TLS.
pub fn mailer(url: &str, from: &str, extra_ca: Option<&str>) -> Result<Mailer, String> {
    let u = url::Url::parse(url.trim())
        .map_err(|_| "the SMTP URL is not a URL such as smtp+starttls://host:587".to_string())?;
    let host = u.host_str().filter(|h| !h.is_empty()).ok_or("the SMTP URL needs a host")?.to_string();
    let mut b = match u.scheme() {
        "smtp" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host).port(u.port().unwrap_or(25)),
        "smtp+starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host)
            .map_err(|e| format!("SMTP STARTTLS to {host}: {e}"))?
            .port(u.port().unwrap_or(587)),
        "smtps" => AsyncSmtpTransport::<Tokio1Executor>::relay(&host)
            .map_err(|e| format!("SMTP TLS to {host}: {e}"))?
            .port(u.port().unwrap_or(465)),
        other => return Err(format!("SMTP URL scheme {other:?}: use smtp, smtp+starttls or smtps")),
    };
    if let (Some(pem), "smtp+starttls" | "smtps") = (extra_ca, u.scheme()) {
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err("the SMTP CA file holds no PEM certificate".into());
        }
        let ca = Certificate::from_pem(pem.as_bytes()).map_err(|e| format!("SMTP CA file: {e}"))?;
        let params = TlsParameters::builder(host.clone())
            .add_root_certificate(ca)
            .build()
            .map_err(|e| format!("SMTP TLS to {host}: {e}"))?;
        b = b.tls(if u.scheme() == "smtps" { Tls::Wrapper(params) } else { Tls::Required(params) });
    }
    if !u.username().is_empty() {
        let user = percent_decode(u.username());
        let pass = percent_decode(u.password().unwrap_or(""));
        b = b.credentials(Credentials::new(user, pass));
    }
    let from: Mailbox = from.parse().map_err(|e| format!("sender {from:?}: {e}"))?;
    Ok(Mailer { transport: b.timeout(Some(std::time::Duration::from_secs(20))).build(), from })
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// `a@x;b@y` → checked addresses.
pub fn parse_recipients(list: &str) -> Result<Vec<String>, String> {
    let to: Vec<String> = list.split([';', ' ']).map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect();
    if to.is_empty() || to.len() > MAX_TO {
        return Err(format!("an e-mail output names 1 to {MAX_TO} recipients, separated by ';'"));
    }
    for a in &to {
        a.parse::<lettre::Address>().map_err(|e| format!("recipient {a:?}: {e}"))?;
    }
    Ok(to)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The message: subject, text and HTML bodies with the same facts.
pub fn compose(c: &Card, from: &Mailbox, to: &[String], key: &str) -> Result<Message, String> {
    let mut text = format!("{}\n\n{}\n\n", c.title, c.text);
    let mut rows = String::new();
    for (k, v) in &c.facts {
        text.push_str(&format!("{k}: {v}\n"));
        rows.push_str(&format!("<tr><th align=\"left\">{}</th><td>{}</td></tr>", html_escape(k), html_escape(v)));
    }
    if let Some(l) = &c.link {
        text.push_str(&format!("\nToken in Trapline: {l}\n"));
    }
    let link = c
        .link
        .as_ref()
        .map(|l| format!("<p><a href=\"{0}\">Token in Trapline</a></p>", html_escape(l)))
        .unwrap_or_default();
    let html = format!(
        "<html><body><h2>{}</h2><p>{}</p><table>{rows}</table>{link}</body></html>",
        html_escape(&c.title),
        html_escape(&c.text)
    );
    let mut m = Message::builder().from(from.clone()).subject(format!("[Trapline] {}", c.title));
    for a in to {
        m = m.to(a.parse().map_err(|e| format!("recipient {a:?}: {e}"))?);
    }
    m.message_id(Some(format!("<{key}@trapline>")))
        .multipart(
            MultiPart::alternative()
                .singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(text))
                .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(html)),
        )
        .map_err(|e| format!("cannot build the message: {e}"))
}

pub async fn send(mailer: Option<&Mailer>, c: &Card, to: &[String], key: &str) -> Result<(), String> {
    let mailer = mailer.ok_or("no SMTP server configured (--smtp-url)")?;
    let msg = compose(c, &mailer.from, to, key)?;
    mailer.transport.send(msg).await.map(|_| ()).map_err(|e| format!("SMTP: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_and_urls() {
        assert_eq!(parse_recipients("a@example.com; b@example.org").unwrap().len(), 2);
        assert!(parse_recipients("").is_err());
        assert!(parse_recipients("not an address").is_err());
        assert!(mailer("smtp://127.0.0.1:2525", "trapline@example.com", None).is_ok());
        assert!(mailer("smtps://user:p%40ss@mail.example.com", "Trapline <trapline@example.com>", None).is_ok());
        assert!(mailer("http://x", "a@b.c", None).is_err());
        assert!(mailer("smtp://127.0.0.1:25", "nope", None).is_err());
        assert!(mailer("smtps://mail.example.com", "a@b.c", Some("not a certificate")).is_err());
    }
}
