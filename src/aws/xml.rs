//! A small XML reader for AWS replies: the whole (size-capped) reply read with `quick-xml` into
//! a tree of elements (local names, text, children) that the calls walk by name.
//!
//! AWS's Query (IAM, STS) and REST-XML (S3) replies are a few kilobytes to a few megabytes of
//! plain elements, so a tree is simpler than a streaming match per call. Attributes and
//! namespaces are dropped (the replies carry meaning in element names only); only XML's
//! predefined entities and character references are resolved, so a `DOCTYPE` cannot define
//! entities (no XXE); nesting deeper than [`MAX_DEPTH`] is refused.

use chrono::{DateTime, Utc};
use quick_xml::events::Event;
use quick_xml::Reader;

use super::AwsError;

/// Deepest nesting accepted: AWS replies are 5 or 6 levels deep.
const MAX_DEPTH: usize = 32;

/// One element: its local name, its own text (the text directly inside it), its children.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The children named `name`, in order.
    pub fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The element down a path of child names.
    pub fn path(&self, names: &[&str]) -> Option<&Element> {
        names.iter().try_fold(self, |e, name| e.child(name))
    }

    /// The trimmed text of the child `name`, when there is one.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }

    /// The trimmed text of the child `name`, or a [`AwsError::Malformed`] naming it.
    pub fn required(&self, name: &str) -> Result<&str, AwsError> {
        self.text_of(name).ok_or_else(|| AwsError::Malformed(format!("<{}> has no <{name}>", self.name)))
    }

    /// The child `name` as a date (ISO 8601 / RFC 3339, as AWS writes them); `None` when it is
    /// absent or empty, [`AwsError::Malformed`] when it is not a date.
    pub fn date_of(&self, name: &str) -> Result<Option<DateTime<Utc>>, AwsError> {
        match self.text_of(name) {
            None | Some("") => Ok(None),
            Some(text) => DateTime::parse_from_rfc3339(text)
                .map(|d| Some(d.with_timezone(&Utc)))
                .map_err(|e| AwsError::Malformed(format!("<{name}> {text:?} is not a date: {e}"))),
        }
    }

    /// The child `name`, or a [`AwsError::Malformed`] naming it.
    pub fn required_child(&self, name: &str) -> Result<&Element, AwsError> {
        self.child(name).ok_or_else(|| AwsError::Malformed(format!("<{}> has no <{name}>", self.name)))
    }
}

/// Parses a whole reply into its root element.
pub(crate) fn parse(body: &[u8]) -> Result<Element, AwsError> {
    let bad = |e: &dyn std::fmt::Display| AwsError::Malformed(format!("bad XML: {e}"));
    let mut reader = Reader::from_reader(body);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut buf = Vec::new();
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| bad(&e))?;
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(AwsError::Malformed("bad XML: more than one root element".into()));
            }
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(AwsError::Malformed("bad XML: nested too deep".into()));
                }
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                stack.push(Element { name, ..Element::default() });
            }
            Event::Empty(start) => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                let element = Element { name, ..Element::default() };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            Event::End(_) => {
                let element = stack.pop().ok_or_else(|| bad(&"an end tag without a start"))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            Event::Text(text) => {
                let text = text.xml10_content().map_err(|e| bad(&e))?;
                match stack.last_mut() {
                    Some(e) => e.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(bad(&"text outside the root element")),
                }
            }
            Event::CData(data) => {
                let data = data.xml10_content().map_err(|e| bad(&e))?;
                stack.last_mut().ok_or_else(|| bad(&"CDATA outside the root element"))?.text.push_str(&data);
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref().map_err(|e| bad(&e))? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = reference.decode().map_err(|e| bad(&e))?;
                        quick_xml::escape::resolve_xml_entity(&name)
                            .ok_or_else(|| bad(&format!("unknown entity &{name};")))?
                            .to_owned()
                    }
                };
                stack.last_mut().ok_or_else(|| bad(&"a reference outside the root element"))?.text.push_str(&resolved);
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(bad(&"the document ends inside an element"));
    }
    root.ok_or_else(|| bad(&"no root element"))
}

/// `text` escaped for an XML element's content or attribute.
pub(crate) fn escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_with_namespaces_entities_and_cdata() {
        let root = parse(
            br#"<?xml version="1.0" encoding="UTF-8"?>
<a:Root xmlns:a="urn:x" xmlns="urn:y"><One>x &amp; y &#65;&#x42;</One><Two/><Two><![CDATA[<raw>]]></Two>
<!-- c --></a:Root>"#,
        )
        .unwrap();
        assert_eq!(root.name, "Root");
        assert_eq!(root.text_of("One"), Some("x & y AB"));
        assert_eq!(root.children("Two").count(), 2);
        assert_eq!(root.children("Two").nth(1).unwrap().text, "<raw>");
        assert_eq!(root.path(&["Two"]).unwrap().text, "");
        assert!(root.required("Three").is_err());
        let dates =
            parse(b"<a><d>2024-05-01T10:00:00Z</d><e>2024-05-01T10:00:00.123+00:00</e><f/><g>May 1</g></a>").unwrap();
        assert_eq!(dates.date_of("d").unwrap().unwrap().to_rfc3339(), "2024-05-01T10:00:00+00:00");
        assert!(dates.date_of("e").unwrap().is_some());
        assert_eq!(dates.date_of("f").unwrap(), None);
        assert_eq!(dates.date_of("missing").unwrap(), None);
        assert!(dates.date_of("g").is_err());
    }

    #[test]
    fn refuses_bad_documents() {
        for bad in
            [&b""[..], b"<a><b></a>", b"<a>", b"<a/><b/>", b"junk<a/>", b"<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>"]
        {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let deep = format!("{}{}", "<a>".repeat(40), "</a>".repeat(40));
        assert!(parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn escapes() {
        assert_eq!(escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
    }
}
