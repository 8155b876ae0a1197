//! API dialects: thin adapters that parse one API's requests, call [`crate::core::Core`], and
//! shape its answers and errors the way that API's clients expect.

pub mod conjur;
pub mod console;
pub mod falcon;
pub mod json_body;
pub mod spacesiren;
