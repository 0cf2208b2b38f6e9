//! The receiving half of OneBot v11 as the shared session runs it: which [`Event`] each
//! decoded frame is, and that a v11 message is complete on arrival (the event carries the
//! sender's name and picture URLs), so it queues for ingress as it is. A member notice
//! carries no name: its lookup starts on admission and is awaited, bounded, by ingress
//! ([`crate::onebot_ws::members`] explains why this never stalls the socket).

use serde_json::Value;

use super::action;
use super::event::Frame;
use super::message_event;
use crate::model::{Envelope, Kind};
use crate::onebot_ws::frame::{DecodeContext, FrameError};
use crate::onebot_ws::ingress::{ready_item, IngressItem};
use crate::onebot_ws::members;
use crate::onebot_ws::{Decoded, Event, Outcome, Session, Version};

/// OneBot v11 for the shared session; it keeps no state of its own.
pub struct OneBot11;

impl Version for OneBot11 {
    type Inbound = Box<Envelope>;
    type Queued = IngressItem;
    const WHO_AM_I: &'static str = "get_login_info";
    const COUNT_IN_GROUP_INFO: bool = true;
    const BINARY_PROBLEM: &'static str = "binary frame that is not UTF-8";

    fn decode(
        &self,
        text: &str,
        cx: &DecodeContext<'_>,
    ) -> Result<Decoded<Box<Envelope>>, FrameError> {
        Ok(match message_event::decode_frame(text, cx)? {
            Frame::Envelope(envelope) => Decoded::of(Event::Inbound(envelope)),
            Frame::OwnMessage => Decoded::of(Event::OwnMessage),
            Frame::Lifecycle { self_id } => Decoded {
                event: Event::Connected {
                    implementation: None,
                },
                self_id,
            },
            Frame::Heartbeat {
                interval_ms,
                self_id,
            } => Decoded {
                event: Event::Heartbeat { interval_ms },
                self_id,
            },
            Frame::Response { echo, body } => Decoded::of(Event::Response { echo, body }),
            Frame::Ignored => Decoded::of(Event::Ignored),
        })
    }

    fn outcome(body: &Value) -> Outcome {
        action::outcome(body)
    }

    fn admit(
        &self,
        inbound: Box<Envelope>,
        lookups: impl FnOnce() -> Option<Session>,
    ) -> IngressItem {
        if inbound.kind == Kind::Member {
            return members::name_later::<OneBot11>(*inbound, lookups());
        }
        IngressItem::Ready(inbound)
    }

    async fn ready(account: &str, queued: IngressItem) -> Option<Envelope> {
        ready_item(account, queued).await
    }

    fn queue(envelope: Envelope) -> IngressItem {
        IngressItem::Ready(Box::new(envelope))
    }

    fn id_param(id: &str) -> Value {
        action::id_value(id)
    }
}
