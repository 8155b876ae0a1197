//! Paging cursors of the Console dialect (`canarytokens/paginate`, `canarytokens/search`,
//! the incident feeds and `incidents/search`).
//!
//! A cursor carries everything its page needs: the listing's own parameters (filters, limit,
//! format — all but credentials and the cursor), where the page starts (the key of the row
//! before it, or after it when going back) and its page number. So a client may send the
//! cursor alone, as Thinkst's scripts do with `.cursor.next`, and get the same listing's next
//! page. It is opaque to clients: base64url (no padding, so it travels in a URL unencoded) of a
//! small JSON object. Forging one gains nothing: its parameters are checked again like any
//! request's, and the caller's own scope still applies.
//!
//! The answer's `cursor` takes the documented object `{next, next_link, prev, prev_link}`,
//! except for canarytools 1.2.3 (which always sends `render_transients` on paginate and loops
//! forever on an object): it gets the `next` string alone, or null.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{CoreError, CoreResult};
use crate::model::PageStart;

/// Longest cursor accepted (the parameters it carries are bounded like any request's).
const MAX_CURSOR: usize = 16 * 1024;

/// A row's place in a listing: a token's (created_us, id) or an incident's pair of numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Key {
    Token(i64, String),
    Incident(i64, i64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// The endpoint the cursor belongs to.
    #[serde(rename = "e")]
    pub endpoint: String,
    /// The listing's parameters.
    #[serde(rename = "p")]
    pub params: BTreeMap<String, String>,
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Key>,
    #[serde(rename = "b", default, skip_serializing_if = "std::ops::Not::not")]
    pub backwards: bool,
    /// The 1-based number of the page it opens.
    #[serde(rename = "n")]
    pub page: i64,
}

fn bad() -> CoreError {
    CoreError::invalid("cursor", "is not a cursor this server handed out for this endpoint")
}

impl Cursor {
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("a cursor serialises");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    pub fn decode(text: &str, endpoint: &str) -> CoreResult<Cursor> {
        if text.len() > MAX_CURSOR {
            return Err(bad());
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| bad())?;
        let c: Cursor = serde_json::from_slice(&raw).map_err(|_| bad())?;
        if c.endpoint != endpoint || c.page < 1 {
            return Err(bad());
        }
        Ok(c)
    }

    /// The token page start it names.
    pub fn token_start(&self) -> CoreResult<PageStart<(i64, String)>> {
        match &self.key {
            None => Ok(PageStart { key: None, backwards: self.backwards }),
            Some(Key::Token(c, id)) if crate::ids::is_token_id(id) => {
                Ok(PageStart { key: Some((*c, id.clone())), backwards: self.backwards })
            }
            Some(_) => Err(bad()),
        }
    }

    /// The incident page start it names.
    pub fn incident_start(&self) -> CoreResult<PageStart<(i64, i64)>> {
        match &self.key {
            None => Ok(PageStart { key: None, backwards: self.backwards }),
            Some(Key::Incident(a, b)) => Ok(PageStart { key: Some((*a, *b)), backwards: self.backwards }),
            Some(_) => Err(bad()),
        }
    }
}

/// What a page tells about its neighbours.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbours {
    pub next: Option<Cursor>,
    pub prev: Option<Cursor>,
}

impl Neighbours {
    /// The pages next to page `page` of `endpoint` (with `params`), which started at `start`
    /// and holds rows from `first` to `last`; `more` says whether rows lie beyond it in the
    /// direction it was read.
    pub fn around(
        endpoint: &str,
        params: &BTreeMap<String, String>,
        page: i64,
        backwards: bool,
        started_at_key: bool,
        more: bool,
        first_last: Option<(Key, Key)>,
    ) -> Neighbours {
        let Some((first, last)) = first_last else { return Neighbours { next: None, prev: None } };
        let make = |key: Key, backwards: bool, page: i64| Cursor {
            endpoint: endpoint.to_string(),
            params: params.clone(),
            key: Some(key),
            backwards,
            page,
        };
        let (has_next, has_prev) = if backwards { (true, more) } else { (more, started_at_key) };
        Neighbours {
            // Page numbers only label pages (the key says where they start), and a client may
            // send any: the largest one's next page keeps its number rather than overflow.
            next: has_next.then(|| make(last, false, page.saturating_add(1))),
            prev: (has_prev && page > 1).then(|| make(first, true, page - 1)),
        }
    }

    /// The answer's `cursor` object; links are `base` + `/api/v1/<endpoint>?cursor=…` and the
    /// caller's `auth_token` when it came as a parameter, so they work fetched as they are.
    pub fn json(&self, base: &str, auth_token: Option<&str>) -> Value {
        let link = |c: &Option<Cursor>| {
            c.as_ref().map(|c| {
                let mut q = form_urlencoded::Serializer::new(String::new());
                q.append_pair("cursor", &c.encode());
                if let Some(a) = auth_token {
                    q.append_pair("auth_token", a);
                }
                format!("{base}/api/v1/{}?{}", c.endpoint, q.finish())
            })
        };
        json!({
            "next": self.next.as_ref().map(Cursor::encode),
            "next_link": link(&self.next),
            "prev": self.prev.as_ref().map(Cursor::encode),
            "prev_link": link(&self.prev),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(key: Option<Key>) -> Cursor {
        let mut params = BTreeMap::new();
        params.insert("flock_id".to_string(), "flock:x".to_string());
        params.insert("limit".to_string(), "3".to_string());
        Cursor { endpoint: "canarytokens/paginate".into(), params, key, backwards: false, page: 2 }
    }

    #[test]
    fn round_trips_and_is_url_safe() {
        let c = cursor(Some(Key::Token(123, "abcdefghijklmnopqrstuvwxy".into())));
        let text = c.encode();
        assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{text}");
        assert_eq!(Cursor::decode(&text, "canarytokens/paginate").unwrap(), c);
        assert_eq!(c.token_start().unwrap().key, Some((123, "abcdefghijklmnopqrstuvwxy".into())));
        let i = Cursor { key: Some(Key::Incident(7, 9)), endpoint: "incidents/all".into(), ..cursor(None) };
        assert_eq!(Cursor::decode(&i.encode(), "incidents/all").unwrap().incident_start().unwrap().key, Some((7, 9)));
    }

    #[test]
    fn refuses_garbage_and_other_endpoints() {
        let text = cursor(None).encode();
        assert!(Cursor::decode(&text, "incidents/all").is_err(), "another endpoint's cursor");
        for junk in ["", "!!!", "e30", "bnVsbA", &"A".repeat(MAX_CURSOR + 1)] {
            assert!(Cursor::decode(junk, "canarytokens/paginate").is_err(), "{junk:.20}");
        }
        let wrong_key = cursor(Some(Key::Token(1, "not a token".into())));
        assert!(wrong_key.token_start().is_err());
        assert!(cursor(Some(Key::Incident(1, 2))).token_start().is_err());
        let zero = Cursor { page: 0, ..cursor(None) };
        assert!(Cursor::decode(&zero.encode(), "canarytokens/paginate").is_err());
    }

    #[test]
    fn the_largest_page_number_a_client_can_send_has_a_next_page() {
        // Found while writing the fuzz target console_cursor: `page + 1` overflowed (a panic
        // in debug builds) for a forged cursor with "n": i64::MAX.
        let forged = Cursor { page: i64::MAX, ..cursor(None) };
        let c = Cursor::decode(&forged.encode(), "canarytokens/paginate").unwrap();
        let keys = Some((Key::Incident(1, 1), Key::Incident(2, 2)));
        let near = Neighbours::around(&c.endpoint, &c.params, c.page, false, true, true, keys);
        assert_eq!(near.next.map(|n| n.page), Some(i64::MAX));
        assert_eq!(near.prev.map(|p| p.page), Some(i64::MAX - 1));
    }

    #[test]
    fn neighbours_follow_the_direction_read() {
        let keys = Some((Key::Incident(1, 1), Key::Incident(2, 2)));
        let p = BTreeMap::new();
        let first = Neighbours::around("incidents/all", &p, 1, false, false, true, keys.clone());
        assert_eq!((first.next.as_ref().map(|c| c.page), first.prev.is_none()), (Some(2), true));
        let last = Neighbours::around("incidents/all", &p, 3, false, true, false, keys.clone());
        assert_eq!((last.next.is_none(), last.prev.as_ref().map(|c| (c.page, c.backwards))), (true, Some((2, true))));
        let back = Neighbours::around("incidents/all", &p, 2, true, true, true, keys.clone());
        assert_eq!((back.next.map(|c| c.page), back.prev.map(|c| c.page)), (Some(3), Some(1)));
        let empty = Neighbours::around("incidents/all", &p, 1, false, false, false, None);
        assert_eq!(empty, Neighbours { next: None, prev: None });
        let j = first.json("http://h:1", Some("tok en"));
        assert!(j["next_link"].as_str().unwrap().starts_with("http://h:1/api/v1/incidents/all?cursor="));
        assert!(j["next_link"].as_str().unwrap().ends_with("&auth_token=tok+en"));
        assert!(j["prev"].is_null() && j["prev_link"].is_null());
    }
}
