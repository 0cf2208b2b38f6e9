//! Moderation (issue 17): what the relay does about floods, spam waves and unwanted content
//! before a message reaches other groups.
//!
//! # The pipeline
//!
//! ```text
//! inbound → dedup → exempt? → flood (per sender) → wave (across all groups) → route
//!         → per destination: render → filter chain → publish, drop, or hold
//! ```
//!
//! - **exempt?**: senders listed as `account:user` skip flood and wave control.
//! - **flood** ([`flood`]): each sender in each group may post at a configured rate; above
//!   it their messages are dropped or held for an admin.
//! - **wave** ([`wave`]): the same text (by fingerprint) seen in several groups, from several
//!   senders or repeated by one sender within a window is a spam wave, dropped or held while
//!   it lasts, in every group.
//! - **route**, then per destination **render** and the **filter chain**: each copy is
//!   published, dropped, or held.
//!
//! Only envelopes of `kind = message` from senders that are not bots are judged; notices,
//! membership events and the bridge's own posts pass untouched.
//!
//! This module holds the counting-over-time building blocks as pure library code, driven by
//! the caller's clock (`now` is passed in), so they are testable without waiting.

pub mod excerpt;
pub mod flood;
pub mod wave;

pub use excerpt::excerpt;
