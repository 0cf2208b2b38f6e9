//! The relay core: dedup, routing, rendering and link filtering between the inbound and
//! outbound topics, and the length-limit splitter egress uses.

pub mod filter;
pub mod pipeline;
pub mod render;
pub mod route;
pub mod split;

pub use pipeline::Core;
pub use route::{Routes, SharedRoutes};
