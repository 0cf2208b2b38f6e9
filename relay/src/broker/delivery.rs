//! What the broker delivers to a client, numbered so that its acknowledgements go out in
//! delivery order (rumqttd drops a connection that acknowledges out of order): shared by the
//! TCP client ([`super::client`]) and the in-process link ([`super::local`]).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rumqttc::{Publish, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A message delivered by the broker; acknowledge it with [`super::BrokerClient::ack`] once its
/// effect is done.
#[derive(Debug)]
pub struct Delivery {
    /// The MQTT publish as received.
    pub publish: Publish,
    /// Connection generation it arrived on.
    pub(super) generation: u64,
    /// Position among this client's deliveries, for in-order acks.
    pub(super) seq: u64,
}

/// The next delivery of a client, or `None` once `stop` is cancelled or the client is gone:
/// the one way every consumer (core, account egress) waits for its next message.
pub async fn next_delivery(
    deliveries: &mut mpsc::UnboundedReceiver<Delivery>,
    stop: &CancellationToken,
) -> Option<Delivery> {
    tokio::select! {
        _ = stop.cancelled() => None,
        delivery = deliveries.recv() => delivery,
    }
}

/// Deliveries of the current connection awaiting their turn to be acknowledged.
#[derive(Default)]
pub(super) struct AckOrder {
    /// Generation the entries belong to.
    pub(super) generation: u64,
    /// (delivery seq, packet id, done) in delivery order.
    pub(super) entries: VecDeque<(u64, u16, bool)>,
    /// Sequence number of the next delivery.
    next_seq: u64,
}

/// Incoming QoS 1 deliveries of a client in the order their PUBACKs must go out, shared by its
/// handles and the task that receives them.
#[derive(Default)]
pub(super) struct SharedAcks {
    /// The deliveries of the current connection.
    order: Mutex<AckOrder>,
}

impl SharedAcks {
    /// The deliveries' bookkeeping, recovering from a poisoned lock (it stays consistent per
    /// call).
    pub(super) fn lock(&self) -> MutexGuard<'_, AckOrder> {
        self.order.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Numbers a publish the broker delivered, for its in-order acknowledgement.
    pub(super) fn register(&self, publish: Publish) -> Delivery {
        let mut order = self.lock();
        let seq = order.next_seq;
        order.next_seq += 1;
        if publish.qos != QoS::AtMostOnce {
            order.entries.push_back((seq, publish.pkid, false));
        }
        Delivery {
            publish,
            generation: order.generation,
            seq,
        }
    }

    /// A new connection: earlier deliveries will be redelivered on it.
    pub(super) fn new_connection(&self) {
        let mut order = self.lock();
        order.generation += 1;
        order.entries.clear();
    }
}
