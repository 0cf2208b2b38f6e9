//! Group health (issue 16): counting what happens in linked groups per day, keeping it in the
//! state store without storing who said what, deriving the figures operators watch (active
//! members, tiers, join and churn rates, decline) and reporting them (`GET /api/v1/stats`,
//! `qunbridge stats`, the `qunbridge_group_*` metrics).

pub mod aliases;
pub mod count;
pub mod day;
pub mod digest;
pub mod figures;
pub mod report;

pub use aliases::Aliases;
pub use count::StatsCounter;
pub use digest::Digester;
