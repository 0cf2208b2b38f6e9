//! The relay core: dedup and the echo guard ([`dedup`]), routing ([`route`]), rendering
//! ([`render`]) and link filtering ([`filter`]) between the inbound and outbound topics,
//! driven by [`pipeline`]; membership notices ([`notices`]); moderation ([`moderate`],
//! [`hold`]) and its admin notifications ([`notify`]).

pub mod dedup;
pub mod filter;
pub mod hold;
pub mod moderate;
pub mod newcomers;
pub mod notices;
pub mod notify;
pub mod pipeline;
pub mod render;
pub mod route;
pub mod suspect;

pub use moderate::Moderator;
pub use notify::Notifier;
pub use pipeline::Core;
pub use route::{Routes, SharedRoutes};
