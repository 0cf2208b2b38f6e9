//! What every socket of one OneBot account shares: who the bot is (learned from config, the
//! `X-Self-ID` header, events or a who-am-I action, whichever comes first), its live
//! sessions, the ordered queue to ingress, state reporting and the intake token.

use std::sync::{Mutex, PoisonError};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::session::Sessions;
use super::version::{BotStatus, Version};
use crate::context::{BotRegistry, ConnectionState, StateReporter};
use crate::model::Platform;

/// What every session of an account shares.
pub struct AccountLink<V: Version> {
    /// Account id, for logs and metric labels.
    pub account: String,
    /// Platform of the account (either version serves QQ and WeChat).
    pub platform: Platform,
    /// The bot's user id once known: its own messages are never relayed.
    pub self_id: Mutex<Option<String>>,
    /// Every configured bot, so messages of the other bots (relayed copies) are dropped.
    pub bots: BotRegistry,
    /// Live sessions; egress waits here for one that takes actions.
    pub sessions: Sessions,
    /// Inbound messages in arrival order, for the ingress task.
    pub events: mpsc::Sender<V::Queued>,
    /// Where the account's connection state goes.
    pub state: StateReporter,
    /// Cancelled when the daemon stops taking input: new events are dropped, not published.
    pub intake: CancellationToken,
    /// The version's decoder and whatever state it keeps per account (v12's name cache).
    pub version: V,
    /// Largest WebSocket message taken from the implementation: 1 MiB, or a picture's size
    /// (as base64, with room for the envelope) when the account fetches pictures through it.
    pub max_message_bytes: usize,
}

impl<V: Version> AccountLink<V> {
    /// The bot's id, if known.
    pub fn self_id(&self) -> Option<String> {
        self.self_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records the bot's id (and registers it so other accounts drop its messages).
    pub fn learn_self_id(&self, id: &str) {
        let mut current = self.self_id.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_deref() != Some(id) {
            info!(message = "Learned the bot's user id.", account = %self.account, self_id = id);
            *current = Some(id.to_owned());
            self.bots.register(self.platform, id);
        }
    }

    /// Follows a `status_update`: learns the bot when it is the only one, and reports it
    /// offline (logged out) or back online.
    pub fn bot_status(&self, bots: &[BotStatus]) {
        let known = self.self_id();
        let mine = match &known {
            Some(id) => bots.iter().find(|bot| &bot.user_id == id),
            None if bots.len() == 1 => bots.first(),
            None => {
                if bots.len() > 1 {
                    warn!(message = "Several bots on one OneBot v12 connection; set `self_id` to pick one.", account = %self.account, bots = bots.len());
                }
                None
            }
        };
        let Some(bot) = mine else {
            return;
        };
        self.learn_self_id(&bot.user_id);
        if bot.online {
            self.state.set(ConnectionState::Up, None);
        } else {
            warn!(message = "The implementation reports the bot offline (logged out).", account = %self.account);
            self.state
                .set(ConnectionState::Down, Some("the bot is offline".into()));
        }
    }
}
