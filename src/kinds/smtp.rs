//! Kind `smtp`: an e-mail address, `<token id>@<token domain>`, planted where only an intruder
//! would write to it (an address book, a CRM export, a mailing list). The zone's MX names the
//! zone itself, so mail to the address reaches the inbound SMTP listener
//! ([`crate::listeners::smtp`]), which records the sender's HELO name, envelope sender and
//! recipient, and what the message shows of itself: subject, the links in its text, and its
//! attachments' names and types (never their bytes).

use super::{Kind, KindView, Site, SmtpBehaviour, ViewContext};
use crate::model::{Channel, Token};

pub struct Smtp;

impl Smtp {
    /// The token's address.
    pub fn address(token: &Token, site: &Site) -> String {
        format!("{}@{}", token.id, site.domain)
    }
}

impl Kind for Smtp {
    fn name(&self) -> &'static str {
        "smtp"
    }

    fn human_name(&self) -> &'static str {
        "Email Address"
    }

    fn channel(&self) -> Channel {
        Channel::Smtp
    }

    fn view(&self, token: &Token, cx: &ViewContext<'_>) -> KindView {
        let site = cx.site;
        KindView::default().field("email", Smtp::address(token, site)).render(self.name(), Smtp::address(token, site))
    }

    fn smtp(&self) -> Option<&dyn SmtpBehaviour> {
        Some(self)
    }
}

/// Its tokens are mailboxes, and the message is read into the hit.
impl SmtpBehaviour for Smtp {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_the_token_id_at_the_zone() {
        let (site, token) =
            (crate::kinds::testing::site(), crate::kinds::testing::token("smtp", serde_json::json!({})));
        let view = Smtp.view(&token, &crate::kinds::testing::vcx(&site));
        let address = format!("{}@t.test", token.id);
        assert_eq!(view.renders, vec![("smtp", address.clone())]);
        assert_eq!(view.fields, vec![("email", serde_json::Value::String(address))]);
        assert!(Smtp.smtp().is_some_and(|b| b.reads_message()));
        assert!(crate::kinds::find("http").unwrap().smtp().is_none(), "other kinds have no mailbox");
    }
}
