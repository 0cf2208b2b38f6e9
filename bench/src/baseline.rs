//! The raw baseline: what the broker alone allows for the same two hops qunbridge makes
//! (ingress → broker → core → broker → egress), with qunbridge's own MQTT client
//! ([`qunbridge::broker::BrokerClient`]: QoS 1, `clean_session = false`, manual acks in
//! delivery order, TCP_NODELAY, 200 publishes in flight) and no relay logic in between.
//!
//! A publisher sends an envelope-sized JSON payload to topic A; a relaying client subscribed
//! to A republishes each payload unchanged to topic B (on a second connection, see
//! [`Baseline::connect`]) and acknowledges the A delivery only once the broker acknowledged
//! the B publish (pipelined, as the core is); a subscriber on B records each payload and
//! acknowledges it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesOrdered, StreamExt};
use qunbridge::broker::{BrokerClient, ClientOptions, Confirmation, Endpoint};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::collector::{marker, now_ns, Collector};
use crate::drivers::{Pace, Sent, FILLER};

/// How long a publish may wait for its PUBACK.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Publishes the publisher keeps unconfirmed at once (rumqttc's inflight window in qunbridge).
const WINDOW: usize = 200;
/// Messages the baseline publisher lets be on their way (published, not yet received) at
/// once: about 1 MB, far below what the broker holds for a lagging subscriber (rumqttd keeps
/// 10 MB per filter in the embedded broker's settings and silently drops older messages), so
/// the baseline measures the path, not the broker's overflow.
const END_TO_END_WINDOW: usize = 2000;

/// The three baseline clients on one broker.
pub struct Baseline {
    /// The publisher.
    publisher: BrokerClient,
    /// Topic A.
    topic_a: String,
    /// Stops every client.
    stop: CancellationToken,
    /// The relaying and subscribing tasks and the clients' event loops.
    tasks: Vec<JoinHandle<()>>,
    /// Every client, for the DISCONNECT at the end.
    clients: Vec<BrokerClient>,
    /// What the subscriber received, for the end-to-end window.
    collector: Arc<Collector>,
}

/// Connects a client: `(client, deliveries, event loop)`. A macro rather than a function, so
/// the deliveries' channel type is whatever [`BrokerClient::start`] returns.
macro_rules! client {
    ($port:expr, $id:expr, $subscriptions:expr, $stop:expr $(,)?) => {{
        let id: &str = $id;
        BrokerClient::start(
            ClientOptions {
                endpoint: Endpoint {
                    host: "127.0.0.1".into(),
                    port: $port,
                    tls: false,
                    username: None,
                    password: None,
                    local: None,
                },
                client_id: id.into(),
                will: None,
                subscriptions: $subscriptions,
                always_subscribe: false,
            },
            $stop.clone(),
        )
        .map_err(|e| format!("MQTT client {id}: {e}"))
    }};
}

impl Baseline {
    /// Connects the publisher, the relaying client and the subscriber to the broker on
    /// `port`; the subscriber records into `collector`.
    ///
    /// # Errors
    /// When a client cannot start or does not connect within 10 s.
    pub async fn connect(port: u16, collector: Arc<Collector>) -> Result<Baseline, String> {
        let run = format!("{}-{}", std::process::id(), now_ns());
        let topic_a = format!("bench/{run}/a");
        let topic_b = format!("bench/{run}/b");
        let stop = CancellationToken::new();
        let (subscriber, mut received, sub_loop) = client!(
            port,
            &format!("bench-sub-{run}"),
            vec![topic_b.clone()],
            &stop,
        )?;
        let (relay, mut relayed, relay_loop) = client!(
            port,
            &format!("bench-relay-{run}"),
            vec![topic_a.clone()],
            &stop,
        )?;
        // The relay publishes on a connection of its own: rumqttd 0.20 stops sending a
        // connection anything, PUBACKs included, while 100 of its QoS 1 deliveries are
        // unacknowledged, so a client that acknowledges a delivery only after its own publish
        // was acknowledged deadlocks on one connection once 100 are outstanding.
        let (relay_out, _none, relay_out_loop) =
            client!(port, &format!("bench-relay-out-{run}"), Vec::new(), &stop)?;
        let (publisher, _none_either, pub_loop) =
            client!(port, &format!("bench-pub-{run}"), Vec::new(), &stop)?;
        for c in [&subscriber, &relay, &relay_out, &publisher] {
            tokio::time::timeout(Duration::from_secs(10), c.wait_ready())
                .await
                .map_err(|_| format!("baseline client not connected to 127.0.0.1:{port}"))?;
        }
        let mut tasks = vec![sub_loop, relay_loop, relay_out_loop, pub_loop];
        let sub = subscriber.clone();
        let recorder = collector.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(delivery) = received.recv().await {
                recorder.record(&delivery.publish.payload);
                sub.ack(&delivery).await;
            }
        }));
        let (relay_client, relay_publisher) = (relay.clone(), relay_out.clone());
        let relay_stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut pending = FuturesOrdered::new();
            loop {
                tokio::select! {
                    _ = relay_stop.cancelled() => return,
                    delivery = relayed.recv() => {
                        let Some(delivery) = delivery else { return };
                        let payload = delivery.publish.payload.to_vec();
                        let Ok(confirmation) = relay_publisher.publish(topic_b.clone(), payload, false).await else {
                            return;
                        };
                        pending.push_back(async move {
                            let _ = confirmation.wait(ACK_WAIT).await;
                            delivery
                        });
                    }
                    Some(delivery) = pending.next(), if !pending.is_empty() => {
                        relay_client.ack(&delivery).await;
                    }
                }
            }
        }));
        Ok(Baseline {
            publisher: publisher.clone(),
            topic_a,
            stop,
            tasks,
            clients: vec![subscriber, relay, relay_out, publisher],
            collector,
        })
    }

    /// Publishes `count` messages of `phase`, paced by `pace` (back to back: up to
    /// [`WINDOW`] unconfirmed at once).
    pub async fn publish(&self, phase: u32, count: usize, pace: Pace) -> Sent {
        publish_all(
            &self.publisher,
            &self.topic_a,
            phase,
            count,
            pace,
            Some(&self.collector),
        )
        .await
    }

    /// Disconnects every client.
    pub async fn close(self) {
        for c in &self.clients {
            c.disconnect().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.stop.cancel();
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Publishes `count` envelopes of `phase` to `topic`, paced by `pace` (back to back: up to
/// [`WINDOW`] unconfirmed at once, and with `received`, at most [`END_TO_END_WINDOW`] not yet
/// received).
async fn publish_all(
    publisher: &BrokerClient,
    topic: &str,
    phase: u32,
    count: usize,
    pace: Pace,
    received: Option<&Collector>,
) -> Sent {
    let start = Instant::now();
    let start_ns = now_ns();
    // Confirmations are awaited in order by a task of their own, so a paced publisher is
    // never held up by them and a saturating one by at most the window.
    let (confirmations, mut waiting) = tokio::sync::mpsc::channel::<Confirmation>(WINDOW);
    let tally = tokio::spawn(async move {
        let mut sent = Sent::default();
        while let Some(confirmation) = waiting.recv().await {
            match confirmation.wait(ACK_WAIT).await {
                Ok(()) => sent.accepted += 1,
                Err(error) => {
                    sent.failed += 1;
                    sent.first_error.get_or_insert(error.to_string());
                }
            }
        }
        sent
    });
    let mut refused = 0;
    let mut first_error = None;
    for index in 0..count {
        if let Pace::Rate(rate) = pace {
            tokio::time::sleep_until(start + Duration::from_secs_f64(index as f64 / rate)).await;
        }
        if let Some(received) = received {
            // Wait for the window, unless nothing arrives any more (then stop sending).
            let (mut seen, mut since) = (received.received(), Instant::now());
            while index.saturating_sub(received.received()) >= END_TO_END_WINDOW {
                if received.received() != seen {
                    (seen, since) = (received.received(), Instant::now());
                } else if since.elapsed() > ACK_WAIT {
                    break;
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            if index.saturating_sub(received.received()) >= END_TO_END_WINDOW {
                first_error.get_or_insert_with(|| "nothing arrived for 30 s".to_owned());
                break;
            }
        }
        let payload = envelope(phase, index, &marker(phase, index as u64, now_ns()));
        match publisher.publish(topic.to_owned(), payload, false).await {
            Ok(confirmation) => {
                if confirmations.send(confirmation).await.is_err() {
                    break;
                }
            }
            Err(error) => {
                refused += 1;
                first_error.get_or_insert(error.to_string());
            }
        }
    }
    drop(confirmations);
    let mut sent = tally.await.unwrap_or_default();
    sent.start_ns = start_ns;
    sent.failed += refused;
    if sent.first_error.is_none() {
        sent.first_error = first_error;
    }
    sent
}

/// Publishes `count` inbound envelopes of `phase` for `api` group `in:a` straight to the
/// daemon's inbound topic on the broker at `port`, back to back with qunbridge's client: a
/// backlog such as a separate ingress process, or a broker that kept messages while the
/// daemon was down, hands the core at once.
///
/// # Errors
/// When the client cannot connect.
pub async fn publish_backlog(port: u16, phase: u32, count: usize) -> Result<Sent, String> {
    let stop = CancellationToken::new();
    let id = format!("bench-backlog-{}-{phase}", std::process::id());
    let (publisher, _none, event_loop) = client!(port, &id, Vec::new(), &stop)?;
    tokio::time::timeout(Duration::from_secs(10), publisher.wait_ready())
        .await
        .map_err(|_| format!("backlog publisher not connected to 127.0.0.1:{port}"))?;
    let sent = publish_all(
        &publisher,
        "qunbridge/v1/in/in/a",
        phase,
        count,
        Pace::Saturate,
        None,
    )
    .await;
    publisher.disconnect().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    event_loop.abort();
    Ok(sent)
}

/// An inbound envelope as the `api` connector publishes it for `in:a`, carrying `text`.
fn envelope(phase: u32, index: usize, text: &str) -> Vec<u8> {
    json!({
        "v": 1,
        "id": format!("in:a:bench-{phase}-{index}"),
        "origin": {"platform": "api", "account": "in", "group": "a", "message_id": format!("bench-{phase}-{index}")},
        "sender": {"id": "u1", "name": "Ann", "is_bot": false},
        "ts_ms": 1_718_880_000_000u64,
        "kind": "message",
        "segments": [{"type": "text", "text": format!("{text}{FILLER}")}]
    })
    .to_string()
    .into_bytes()
}
