//! Trapline: a self-hosted honeytoken platform.
//!
//! Data flows one way: **listener → hit → store** ([`listeners`] → [`recorder`] → [`store`]);
//! management flows **dialect → core → store** ([`dialects`] → [`core`] → [`store`]).
//! Token kinds live in [`kinds`], one module each, behind one registry table.

pub mod auth;
pub mod error;
pub mod ids;
pub mod model;
pub mod store;
pub mod kinds;
pub mod recorder;
pub mod core;
pub mod dialects;
pub mod listeners;
pub mod config;
pub mod server;
pub mod bench;
