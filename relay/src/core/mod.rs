//! The relay core: dedup, routing and rendering between the inbound and outbound topics.

pub mod pipeline;
pub mod render;
pub mod route;

pub use pipeline::Core;
pub use route::Routes;
