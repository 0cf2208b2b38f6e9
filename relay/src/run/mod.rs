//! The phases of [`run`](fn@crate::run), one file each: [`placement`] (what this process
//! runs), [`state`] (open the store), [`media`] (open the media cache), [`daemon`] (what the phases share), [`core`] (a relay
//! core from connect to teardown), [`cluster`] (presence, account locks and core takeovers of
//! a scaled-out deployment), [`startup`] (presence, core, accounts, in the order that loses
//! nothing, and their teardown), [`reload`] (serve until stopped, applying reloads) and
//! [`drain`] (stop intake, finish in-flight messages). [`options`] and [`error`] are what a
//! run takes and returns.

pub mod cluster;
pub mod core;
pub mod daemon;
pub mod drain;
pub mod error;
pub mod media;
pub mod options;
pub mod placement;
pub mod reload;
pub mod startup;
pub mod state;
