//! Listeners: each notices the use of tokens on one protocol, turns it into a
//! [`crate::model::NewHit`], hands it to the [`crate::recorder::Recorder`], and answers only
//! once the hit is committed. [`slots`] shares each listener's connection slots fairly
//! between sources.

pub mod dns;
pub mod dns_wire;
pub mod http;
pub mod slots;
