//! The content-addressed media cache under `state_dir/media/` (being written: see the issue
//! note). Placeholder module so that the layout of [`crate::media`] is fixed.
