//! Moderation building blocks: text matching that the moderation rules (issue 17) are made
//! of. Pure functions and compiled data, not yet wired into the pipeline or the config.
//!
//! - [`normalize`]: the text normalization that fingerprints and word lists share, with the
//!   way back from normalized text to the original characters.
//! - [`fingerprint`]: one key for every variant of a spammed message, for spam-wave detection.
//! - [`lists`]: word lists (literal words, regexes, files, allow entries) compiled for matching
//!   and masking.

pub mod fingerprint;
pub mod lists;
pub mod normalize;
