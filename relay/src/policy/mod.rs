//! The relay's policy as plain data: links, pacing limits, length limits and filter rules,
//! plus what the builtin filter matchers find in a text ([`detect`], pure functions).
//! Config builds these values and checks them, the core and egress follow them; keeping them
//! here, in a module that imports nothing else of the relay but the moderation's compiled
//! word lists (which stand only on [`detect`]), lets the dependency run one way (config,
//! core and egress all import `policy`, never each other for it).

pub mod detect;
pub mod egress;
pub mod filter;
pub mod links;
pub mod moderation;
pub mod pacing;

pub use egress::{EgressPolicy, DEFAULT_MAX_DELAY};
pub use filter::{default_rules, Action, FilterRules, Matcher, Rule, NAME_REPLACEMENT};
pub use links::{GroupRef, Link};
pub use pacing::{Limit, Rate, RateError};
pub use qunbridge_connectors::split::{LengthLimit, Unit};
