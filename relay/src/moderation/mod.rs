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
//!   it their messages are dropped (the core's `moderate` step uses it today).
//! - **wave** ([`wave`]): the same text (by [`fingerprint`]) seen in several groups (those in
//!   no link too), from several senders or repeated by one sender within a window is a spam
//!   wave, dropped while it lasts, in every group (the core's `moderate` step, with
//!   `[moderation.wave]`).
//! - **route**, then per destination **render** and the **filter chain**, where word
//!   [`lists`] add their rules (`match = "words"`: mask, drop or hold, and a sender name a list
//!   hits shown as 群友): each copy is published, dropped, or held for review.
//! - **suspect** ([`suspect`], with `[moderation.wave] suspect_delay`): a newcomer's message
//!   with a link, an invite, a contact or a picture waits (held) and is relayed after the
//!   delay unless its text became part of a wave meanwhile.
//!
//! Only envelopes of `kind = message` from senders that are not bots are judged; notices,
//! membership events and the bridge's own posts pass untouched.
//!
//! The building blocks: [`normalize`] (the text normalization fingerprints and word lists
//! share, with the way back to the original characters), [`fingerprint`], [`lists`] (word
//! lists compiled for matching and masking), [`flood`] and [`wave`] (counting over time,
//! driven by the caller's clock so they are testable without waiting) and [`excerpt`]. With
//! `[store] redis`, [`shared`] keeps the flood and wave counts in Redis, so the relay cores of
//! a scaled-out deployment count together.

pub mod evict;
pub mod excerpt;
pub mod fingerprint;
pub mod flood;
pub mod lists;
pub mod normalize;
pub mod shared;
pub mod suspect;
pub mod wave;

pub use excerpt::excerpt;
