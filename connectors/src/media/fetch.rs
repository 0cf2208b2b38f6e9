//! The bounded media fetcher (being written: see the issue note). Placeholder module so that
//! the layout of [`crate::media`] is fixed.
