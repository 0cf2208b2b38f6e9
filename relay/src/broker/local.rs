//! The in-process link to the embedded broker: a client of the daemon that runs the embedded
//! rumqttd talks to its router directly (rumqttd's local links) instead of over loopback TCP.
//!
//! Every message still crosses the broker: it is appended to the router's log, PUBACKed,
//! delivered with QoS 1 and acknowledged, exactly as over TCP, so outside MQTT clients,
//! scale-out and the status topics see the same traffic. What goes away is the work around
//! it: MQTT encoding and decoding on both sides, two socket writes and reads per packet, the
//! broker's connection task and rumqttc's event loop, and the thread hand-offs between them.
//!
//! A local link cannot fail the way a socket can: it lives as long as the process and the
//! router do. It still speaks the same protocol, so [`super::client::BrokerClient`] keeps one
//! contract for both: QoS 1 publishes confirmed by PUBACK, deliveries acknowledged in order
//! (rumqttd drops a connection that acknowledges out of order), flow control around both.
//!
//! rumqttd meant local links for QoS 0: its `Publish` keeps the QoS and packet id private and
//! offers only a QoS 0 constructor. [`qos1_publish`] builds a QoS 1 publish through
//! `Publish::deserialize`, rumqttd's own storage format (header, packet id, topic, payload),
//! and [`packet_id`] reads a delivery's id back through `Publish::serialize` of a copy without
//! its payload. Both are pinned by tests against the rumqttd version in `Cargo.lock`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{
    Disconnect, DisconnectReasonCode, Filter, LastWill, Packet, PubAck, PubAckReason, Publish, QoS,
    RetainForwardRule, Subscribe, Unsubscribe,
};
use rumqttd::Notification;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::delivery::{Delivery, SharedAcks};

/// What a new local link asks of the router.
pub struct LocalConnect {
    /// The MQTT client id (the same one the client would use over TCP).
    pub client_id: String,
    /// Last will: (topic, retained payload).
    pub will: Option<(String, Vec<u8>)>,
    /// Filters subscribed at QoS 1 when the router has no session for this client id.
    pub subscriptions: Vec<String>,
    /// Subscribe even to a session the router kept.
    pub always_subscribe: bool,
}

/// What opening a link gives: its two halves and the router's CONNACK.
type Opened = (LinkTx, LinkRx, Notification);

/// Opens one link: registers the connection with the router and waits for its CONNACK; the
/// error is rumqttd's, told.
type Opener = dyn Fn(&LocalConnect) -> Result<Opened, String> + Send + Sync;

/// Opens links to one embedded broker's router. rumqttd does not name the type of its router's
/// channel, so the channel is kept inside the closure that opens links over it.
#[derive(Clone)]
pub struct LocalBroker {
    /// Opens links over the router's channel.
    open: Arc<Opener>,
}

impl std::fmt::Debug for LocalBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalBroker")
    }
}

impl LocalBroker {
    /// A broker whose links `open` makes.
    pub fn new(
        open: impl Fn(&LocalConnect) -> Result<Opened, String> + Send + Sync + 'static,
    ) -> LocalBroker {
        LocalBroker {
            open: Arc::new(open),
        }
    }
}

/// The will of a local link, as rumqttd takes it (QoS 1, retained, as over TCP).
pub fn last_will(will: Option<&(String, Vec<u8>)>) -> Option<LastWill> {
    will.map(|(topic, payload)| LastWill {
        topic: topic.clone().into(),
        message: payload.clone().into(),
        qos: QoS::AtLeastOnce,
        retain: true,
    })
}

/// Packet ids of this link's publishes waiting for their PUBACK.
#[derive(Default)]
struct Awaiting {
    /// The last packet id handed out.
    last: u16,
    /// Publishers waiting, by packet id.
    waiting: HashMap<u16, oneshot::Sender<()>>,
}

impl Awaiting {
    /// The next packet id not waiting for a PUBACK (ids wrap, and 0 is not a packet id), or
    /// `None` when all 65 535 are.
    fn next_id(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.last = self.last.checked_add(1).unwrap_or(1);
            if !self.waiting.contains_key(&self.last) {
                return Some(self.last);
            }
        }
        None
    }
}

/// The handle side of a local link: what [`super::client::BrokerClient`] calls.
pub(super) struct LocalLink {
    /// Packets for the router, in the order they were submitted.
    outgoing: Mutex<VecDeque<Packet>>,
    /// Wakes the link task when `outgoing` gained packets.
    wake: Notify,
    /// Publishes waiting for their PUBACK.
    awaiting: Mutex<Awaiting>,
    /// True once DISCONNECT is queued: the link task ends after sending it.
    closing: std::sync::atomic::AtomicBool,
}

impl LocalLink {
    /// Queues a QoS 1 publish; the receiver resolves on the router's PUBACK. `None` when every
    /// packet id is waiting for a PUBACK already.
    pub fn publish(
        &self,
        topic: &str,
        payload: &[u8],
        retain: bool,
    ) -> Option<oneshot::Receiver<()>> {
        let (tx, rx) = oneshot::channel();
        let pkid = {
            let mut awaiting = self.awaiting.lock().unwrap_or_else(PoisonError::into_inner);
            let pkid = awaiting.next_id()?;
            awaiting.waiting.insert(pkid, tx);
            pkid
        };
        self.send(Packet::Publish(
            qos1_publish(topic, payload, retain, pkid),
            None,
        ));
        Some(rx)
    }

    /// Queues the PUBACKs of deliveries, in the order given.
    pub fn ack(&self, pkids: impl IntoIterator<Item = u16>) {
        let mut outgoing = self.outgoing.lock().unwrap_or_else(PoisonError::into_inner);
        for pkid in pkids {
            outgoing.push_back(Packet::PubAck(
                PubAck {
                    pkid,
                    reason: PubAckReason::Success,
                },
                None,
            ));
        }
        drop(outgoing);
        self.wake.notify_one();
    }

    /// Queues an UNSUBSCRIBE.
    pub fn unsubscribe(&self, filter: &str) {
        self.send(Packet::Unsubscribe(
            Unsubscribe {
                pkid: 1,
                filters: vec![filter.to_owned()],
            },
            None,
        ));
    }

    /// Queues a DISCONNECT (no last will); the link ends once it is sent.
    pub fn disconnect(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        self.send(Packet::Disconnect(
            Disconnect {
                reason_code: DisconnectReasonCode::NormalDisconnection,
            },
            None,
        ));
    }

    /// Queues one packet and wakes the link task.
    fn send(&self, packet: Packet) {
        self.outgoing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(packet);
        self.wake.notify_one();
    }
}

/// What the link task reports to the client's handles.
pub(super) struct LocalSignals {
    /// Connected or not.
    pub connected: watch::Sender<bool>,
    /// Subscriptions in place.
    pub subscribed: watch::Sender<bool>,
}

/// Why a local link could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("the embedded broker refused an in-process link for `{client_id}`: {reason}")]
pub struct LocalLinkError {
    /// The client id asked for.
    client_id: String,
    /// What rumqttd said.
    reason: String,
}

/// Opens a link for `options` and starts its task; returns the handle side and the task,
/// which runs until the link is closed with DISCONNECT, `stop` is cancelled, or the router
/// ends.
///
/// # Errors
/// [`LocalLinkError`] when the router refuses the connection (its connection limit) or is
/// gone.
pub(super) fn start(
    broker: &LocalBroker,
    options: LocalConnect,
    acks: Arc<SharedAcks>,
    signals: LocalSignals,
    deliveries: mpsc::UnboundedSender<Delivery>,
    stop: CancellationToken,
) -> Result<(Arc<LocalLink>, JoinHandle<()>), LocalLinkError> {
    // Opening waits for the router's CONNACK, which its own thread sends at once.
    let (link_tx, link_rx, connack) = (broker.open)(&options).map_err(|error| LocalLinkError {
        client_id: options.client_id.clone(),
        reason: error,
    })?;
    let session_present = match Option::<Packet>::from(connack) {
        Some(Packet::ConnAck(ack, _)) => ack.session_present,
        _ => false,
    };
    let link = Arc::new(LocalLink {
        outgoing: Mutex::new(VecDeque::new()),
        wake: Notify::new(),
        awaiting: Mutex::new(Awaiting::default()),
        closing: std::sync::atomic::AtomicBool::new(false),
    });
    let subscribe = !session_present || options.always_subscribe;
    if subscribe && !options.subscriptions.is_empty() {
        let filters = options
            .subscriptions
            .iter()
            .map(|path| Filter {
                path: path.clone(),
                qos: QoS::AtLeastOnce,
                nolocal: false,
                preserve_retain: false,
                retain_forward_rule: RetainForwardRule::OnEverySubscribe,
            })
            .collect();
        link.send(Packet::Subscribe(Subscribe { pkid: 1, filters }, None));
    } else {
        let _ = signals.subscribed.send(true);
    }
    info!(
        message = "Connected to the embedded MQTT broker in process.",
        client = %options.client_id,
        session_present
    );
    let _ = signals.connected.send(true);
    let task = tokio::spawn(run_link(
        LinkEnds {
            link_tx,
            link_rx,
            link: link.clone(),
        },
        acks,
        signals,
        deliveries,
        options.client_id.clone(),
        stop,
    ));
    Ok((link, task))
}

/// The router side of a link and the handle side it serves.
struct LinkEnds {
    /// Packets to the router.
    link_tx: LinkTx,
    /// Notifications from the router.
    link_rx: LinkRx,
    /// What the handles queued.
    link: Arc<LocalLink>,
}

/// Carries queued packets to the router and the router's notifications to the client: PUBACKs
/// to the waiting publishers, deliveries (numbered for in-order acks) to the consumer.
async fn run_link(
    ends: LinkEnds,
    acks: Arc<SharedAcks>,
    signals: LocalSignals,
    deliveries: mpsc::UnboundedSender<Delivery>,
    client_id: String,
    stop: CancellationToken,
) {
    let LinkEnds {
        mut link_tx,
        mut link_rx,
        link,
    } = ends;
    // Swapped with the handles' queue at each wake, so both keep their capacity and queuing a
    // packet does not allocate.
    let mut batch = VecDeque::new();
    loop {
        // Unbiased: deliveries and what the handles queued (acks, publishes) take turns.
        tokio::select! {
            _ = stop.cancelled() => break,
            notification = link_rx.next() => {
                let notification = match notification {
                    Ok(Some(notification)) => notification,
                    Ok(None) => continue,
                    Err(error) => {
                        debug!(message = "Embedded broker link closed.", client = %client_id, %error);
                        break;
                    }
                };
                match Option::<Packet>::from(notification) {
                    // The router paused deliveries because its buffer for us was full; we
                    // took everything it held, so it may go on.
                    None => {
                        if link_rx.wake().await.is_err() {
                            break;
                        }
                    }
                    Some(Packet::Publish(publish, _)) => {
                        deliver(publish, &acks, &deliveries, &client_id);
                    }
                    Some(Packet::PubAck(ack, _)) => {
                        let waiter = link
                            .awaiting
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .waiting
                            .remove(&ack.pkid);
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(());
                        }
                    }
                    Some(Packet::SubAck(..)) => {
                        let _ = signals.subscribed.send(true);
                    }
                    Some(Packet::Disconnect(disconnect, _)) => {
                        warn!(message = "The embedded broker closed the in-process link.", client = %client_id, reason = ?disconnect.reason_code);
                        break;
                    }
                    Some(_) => {}
                }
            }
            _ = link.wake.notified() => {
                std::mem::swap(
                    &mut *link.outgoing.lock().unwrap_or_else(PoisonError::into_inner),
                    &mut batch,
                );
                let Some(last) = batch.pop_back() else {
                    continue;
                };
                link_tx.buffer().extend(batch.drain(..));
                // One event for the router per batch. The router's queue holds 1 000 events
                // and it drains it on its own thread, so this waits only while the router is
                // that far behind.
                if let Err(error) = link_tx.send(last).await {
                    error!(message = "The embedded broker's router is gone.", client = %client_id, %error);
                    break;
                }
                if link.closing.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
            }
        }
    }
    let _ = signals.connected.send(false);
    debug!(message = "In-process broker link ended.", client = %client_id);
}

/// Hands one delivery to the consumer, numbered for its in-order acknowledgement.
fn deliver(
    publish: Publish,
    acks: &SharedAcks,
    deliveries: &mpsc::UnboundedSender<Delivery>,
    client_id: &str,
) {
    let (qos, pkid) = packet_id(&publish);
    let topic = match String::from_utf8(publish.topic.to_vec()) {
        Ok(topic) => topic,
        Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
    };
    let mut converted = rumqttc::Publish::from_bytes(
        topic,
        match qos {
            0 => rumqttc::QoS::AtMostOnce,
            2 => rumqttc::QoS::ExactlyOnce,
            _ => rumqttc::QoS::AtLeastOnce,
        },
        publish.payload,
    );
    converted.pkid = pkid;
    converted.retain = publish.retain;
    let delivery = acks.register(converted);
    if deliveries.send(delivery).is_err() {
        debug!(message = "Delivery consumer gone.", client = client_id);
    }
}

/// A QoS 1 publish with packet id `pkid`, built through rumqttd's storage format.
fn qos1_publish(topic: &str, payload: &[u8], retain: bool, pkid: u16) -> Publish {
    let topic_len = u16::try_from(topic.len()).unwrap_or(u16::MAX);
    let topic = &topic.as_bytes()[..usize::from(topic_len)];
    let mut bytes = Vec::with_capacity(5 + topic.len() + payload.len());
    bytes.push(0b0011_0000 | u8::from(retain) | (1 << 1));
    bytes.extend_from_slice(&pkid.to_be_bytes());
    bytes.extend_from_slice(&topic_len.to_be_bytes());
    bytes.extend_from_slice(topic);
    bytes.extend_from_slice(payload);
    Publish::deserialize(bytes.into())
}

/// The QoS (0, 1 or 2) and packet id of a publish rumqttd delivered, read from its storage
/// format (of a copy without its payload, which is all the header needs).
fn packet_id(publish: &Publish) -> (u8, u16) {
    let mut header = publish.clone();
    header.payload = Vec::new().into();
    let bytes = header.serialize();
    match bytes.get(..3) {
        Some(&[flags, high, low]) => ((flags >> 1) & 0b11, u16::from_be_bytes([high, low])),
        _ => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qos1_publish_keeps_its_id_topic_payload_and_retain_flag() {
        let publish = qos1_publish("qb/out/qq-main", b"{\"id\":1}", true, 4711);
        assert_eq!(packet_id(&publish), (1, 4711));
        assert_eq!(&publish.topic[..], b"qb/out/qq-main");
        assert_eq!(&publish.payload[..], b"{\"id\":1}");
        assert!(publish.retain);
        let plain = qos1_publish("t", b"", false, 1);
        assert_eq!(packet_id(&plain), (1, 1));
        assert!(!plain.retain);
    }

    #[test]
    fn packet_ids_skip_zero_and_those_still_waiting() {
        let mut awaiting = Awaiting {
            last: u16::MAX - 1,
            ..Awaiting::default()
        };
        let (tx, _rx) = oneshot::channel();
        awaiting.waiting.insert(1, tx);
        assert_eq!(awaiting.next_id(), Some(u16::MAX));
        // 0 is not a packet id and 1 still waits for its PUBACK.
        assert_eq!(awaiting.next_id(), Some(2));
    }
}
