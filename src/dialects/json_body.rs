//! Reading JSON request bodies for the dialects that take them (SpaceSiren, Falcon): the body
//! as an object, and typed optional fields. Each dialect words the errors in its own shape:
//! [`opt_bool`] and [`opt_str`] fail with a ready [`CoreError`], while the `field_*` readers
//! name the field and the type it needed ([`WrongType`]) so a dialect can word that itself.

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

/// The JSON type a field must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Bool,
    /// A whole number (a JSON number with no fraction, within 64 bits).
    Int,
}

/// A field that is present, not null, and of another type than the one it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongType {
    pub name: &'static str,
    pub wanted: FieldType,
}

/// An optional string field (absent or null: None); another type is a [`WrongType`].
pub fn field_str<'a>(m: &'a Map<String, Value>, name: &'static str) -> Result<Option<&'a str>, WrongType> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(WrongType { name, wanted: FieldType::String }),
    }
}

/// An optional boolean field (absent or null: None); another type is a [`WrongType`].
pub fn field_bool(m: &Map<String, Value>, name: &'static str) -> Result<Option<bool>, WrongType> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(WrongType { name, wanted: FieldType::Bool }),
    }
}

/// An optional whole-number field (absent or null: None); a fraction, a string or any other
/// type is a [`WrongType`].
pub fn field_int(m: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, WrongType> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or(WrongType { name, wanted: FieldType::Int }),
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

    #[test]
    fn typed_fields_name_the_field_and_type() {
        let m = object(br#"{"s": "x", "b": false, "i": 7, "f": 1.5, "n": null, "big": 1e30}"#).unwrap();
        assert_eq!(field_str(&m, "s"), Ok(Some("x")));
        assert_eq!(field_str(&m, "n"), Ok(None));
        assert_eq!(field_str(&m, "absent"), Ok(None));
        assert_eq!(field_str(&m, "i"), Err(WrongType { name: "i", wanted: FieldType::String }));
        assert_eq!(field_bool(&m, "b"), Ok(Some(false)));
        assert_eq!(field_bool(&m, "s"), Err(WrongType { name: "s", wanted: FieldType::Bool }));
        assert_eq!(field_int(&m, "i"), Ok(Some(7)));
        assert_eq!(field_int(&m, "n"), Ok(None));
        for bad in ["f", "s", "b", "big"] {
            assert_eq!(field_int(&m, bad), Err(WrongType { name: bad, wanted: FieldType::Int }));
        }
    }
}
