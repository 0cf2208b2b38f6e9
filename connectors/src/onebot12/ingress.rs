//! The receiving half of OneBot v12 as the shared session runs it: which [`Event`] each
//! decoded frame is, and how a group message is readied for ingress. A v12 message event
//! carries no sender name and references pictures by `file_id`, so it is handed to the
//! [`Resolver`] the moment it arrives and published, in arrival order, once its lookups
//! answered or their wait ran out; a recall is ready at once. A member notice goes through
//! the resolver as a message without content: its member's name is looked up the same way
//! (and stays "" when unknown).

use std::sync::Arc;

use serde_json::Value;

use super::action;
use super::event::{self, Frame, Incoming};
use super::resolve::Resolver;
use crate::model::Envelope;
use crate::onebot_ws::frame::{DecodeContext, FrameError};
use crate::onebot_ws::ingress::{ready_item, IngressItem};
use crate::onebot_ws::{Decoded, Event, Outcome, Session, Version};

/// OneBot v12 for the shared session, with the account's resolver (its name cache outlives
/// connections).
pub struct OneBot12 {
    /// Completes messages (names, picture URLs).
    resolver: Arc<Resolver>,
}

impl OneBot12 {
    /// The receiving half of one account.
    pub fn new(account: String) -> OneBot12 {
        OneBot12 {
            resolver: Arc::new(Resolver::new(account)),
        }
    }
}

/// A group message or recall as decoded, before ingress admits it.
pub enum Inbound {
    /// A message still to be completed.
    Message(Box<Incoming>),
    /// A deleted message, ready to publish as a recall.
    Recall(Box<Envelope>),
    /// A member joined or left; the name is still to be looked up.
    Member(Box<Envelope>),
}

impl Version for OneBot12 {
    type Inbound = Inbound;
    type Queued = IngressItem;
    const WHO_AM_I: &'static str = "get_self_info";
    const BINARY_PROBLEM: &'static str =
        "binary frame that is not UTF-8 JSON (MessagePack is not supported)";
    const PICTURES_IN_ANSWERS: bool = true;

    fn decode(&self, text: &str, cx: &DecodeContext<'_>) -> Result<Decoded<Inbound>, FrameError> {
        let decoded = event::decode(text, cx)?;
        let event = match decoded.frame {
            Frame::Message(incoming) => Event::Inbound(Inbound::Message(incoming)),
            Frame::Recall(envelope) => Event::Inbound(Inbound::Recall(envelope)),
            Frame::Member(envelope) => Event::Inbound(Inbound::Member(envelope)),
            Frame::OwnMessage => Event::OwnMessage,
            Frame::Connect {
                implementation,
                version,
            } => Event::Connected {
                implementation: Some((implementation, version)),
            },
            Frame::StatusUpdate { good, bots } => Event::Status { good, bots },
            Frame::Heartbeat { interval_ms } => Event::Heartbeat { interval_ms },
            Frame::Response { echo, body } => Event::Response { echo, body },
            Frame::Ignored => Event::Ignored,
        };
        Ok(Decoded {
            event,
            self_id: decoded.self_id,
        })
    }

    fn outcome(body: &Value) -> Outcome {
        action::outcome(body)
    }

    fn admit(&self, inbound: Inbound, lookups: impl FnOnce() -> Option<Session>) -> IngressItem {
        match inbound {
            Inbound::Message(incoming) => self.resolver.complete(*incoming, lookups()),
            Inbound::Recall(envelope) => IngressItem::Ready(envelope),
            // The member's name as messages have it (the cache first), else "".
            Inbound::Member(envelope) => self.resolver.complete(
                Incoming {
                    envelope: *envelope,
                    name_known: false,
                    fills: Vec::new(),
                },
                lookups(),
            ),
        }
    }

    async fn ready(account: &str, queued: IngressItem) -> Option<Envelope> {
        ready_item(account, queued).await
    }

    fn queue(envelope: Envelope) -> IngressItem {
        IngressItem::Ready(Box::new(envelope))
    }
}
