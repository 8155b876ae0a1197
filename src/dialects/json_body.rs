//! Reading JSON request bodies for the dialects that take them (SpaceSiren, Falcon): the body
//! as an object, and typed optional fields. Each dialect words the errors in its own shape.

use serde_json::{Map, Value};

use crate::error::{CoreError, CoreResult};

/// Why a body is not a JSON object.
#[derive(Debug)]
pub enum NotAnObject {
    /// It does not parse; the parser's message.
    Invalid(String),
    /// It parses, but to something other than an object.
    WrongType,
}

/// The body as a JSON object; an empty (or blank) body is an empty object.
pub fn object(bytes: &[u8]) -> Result<Map<String, Value>, NotAnObject> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(NotAnObject::WrongType),
        Err(e) => Err(NotAnObject::Invalid(e.to_string())),
    }
}

/// An optional boolean field (absent or null: None).
pub fn opt_bool(m: &Map<String, Value>, name: &'static str) -> CoreResult<Option<bool>> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(CoreError::invalid(name, "must be a boolean")),
    }
}

/// An optional string field (absent or null: None).
pub fn opt_str<'a>(m: &'a Map<String, Value>, name: &'static str) -> CoreResult<Option<&'a str>> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(CoreError::invalid(name, "must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_and_fields() {
        assert!(object(b"  ").unwrap().is_empty());
        assert!(matches!(object(b"[1]"), Err(NotAnObject::WrongType)));
        assert!(matches!(object(b"{nope"), Err(NotAnObject::Invalid(_))));
        let m = object(br#"{"a": true, "s": "x", "n": null, "bad": 1}"#).unwrap();
        assert_eq!(opt_bool(&m, "a").unwrap(), Some(true));
        assert_eq!(opt_bool(&m, "n").unwrap(), None);
        assert!(opt_bool(&m, "bad").is_err());
        assert_eq!(opt_str(&m, "s").unwrap(), Some("x"));
        assert!(opt_str(&m, "bad").is_err());
        assert_eq!(opt_str(&json!({}).as_object().unwrap().clone(), "s").unwrap(), None);
    }
}
