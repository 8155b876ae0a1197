//! Trapline: a self-hosted honeytoken platform.
//!
//! Data flows one way: **listener → hit sink → hit pipeline → store (hit, incident, outbox) →
//! alert worker → outputs** ([`listeners`] → [`recorder`] → [`hits`] → [`store`] → [`alerts`] →
//! [`outputs`]); management flows **dialect → core → store** ([`dialects`] → [`core`] →
//! [`store`]). Token kinds live in [`kinds`] and listeners in [`listeners`], one module each,
//! behind one registry table each.

pub mod alerts;
pub mod artefacts;
pub mod auth;
pub mod aws;
pub mod bench;
pub mod config;
pub mod core;
pub mod datadir;
pub mod dialects;
pub mod error;
pub mod fql;
pub mod hits;
pub mod http_serve;
pub mod ids;
pub mod kinds;
pub mod listeners;
pub mod model;
pub mod net;
pub mod noise;
pub mod outputs;
pub mod recorder;
pub mod retention;
pub mod sealed;
pub mod server;
pub mod session;
pub mod store;
pub mod workpool;
