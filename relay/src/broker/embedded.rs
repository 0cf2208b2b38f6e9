//! The embedded broker: rumqttd on our own tokio runtime (its 0.20 `Router` + `Server` path),
//! with small commit-log segments so an idle daemon does not hold ~100 MB. The relay's own
//! clients link to its router in process ([`super::local`]); outside MQTT clients (and the
//! processes of a scaled-out deployment) connect over TCP.
//!
//! rumqttd has no shutdown API: stopping drops the runtime its listener and connections run
//! on, and the router thread ends with the process. Its in-memory state does not survive a
//! restart; operators who need queued messages to survive one use an external broker with
//! persistence.

use std::collections::HashMap;
use std::net::SocketAddr;

use rumqttd::local::LinkBuilder;
use rumqttd::protocol::v4::V4;
use rumqttd::{
    ConnectionSettings, LinkType, Router, RouterConfig, SegmentConfig, Server, ServerSettings,
};
use tracing::{error, info};

use super::client::MAX_PACKET_BYTES;
use super::local::{last_will, LocalBroker};
use super::topics::Topics;

/// Bytes per commit-log segment of each subscription filter. rumqttd keeps a filter's full
/// segments after every reader has passed them, so this is memory the daemon holds for good
/// once traffic has flowed: 1 MiB segments kept about 10 MB more than these after 100,000
/// messages (docs/BENCHMARKS.md, issue 14 session 15). Flow control keeps each hop within a
/// share of one filter's log, so smaller segments only make the pools smaller; a publish
/// larger than a segment still goes in whole (the segment is then closed).
const SEGMENT_BYTES: usize = 256 * 1024;
/// Segments kept per filter of the outbound hop (core → egress), which only qunbridge
/// publishes to, within its flow control.
const SEGMENT_COUNT: usize = 2;
/// Segments kept by the inbound filter (ingress → core): outside publishers (an MQTT client
/// of the operator's) publish there too, outside qunbridge's flow control, so it keeps some
/// room for their bursts. Only some: 12 segments (3 MiB) still lost 486 of a 10,000-envelope
/// burst and cost 4 MB of RSS for good, so bursts that large belong on an `api` account or an
/// external broker (README, "Flow control").
const INBOUND_SEGMENT_COUNT: usize = 4;
/// Bytes the embedded broker keeps for each outbound subscription filter: a reader further
/// behind loses the oldest messages, so flow control ([`super::flow`]) keeps the hop well
/// within it.
pub const LOG_BYTES: u64 = (SEGMENT_BYTES * SEGMENT_COUNT) as u64;
/// Bytes the embedded broker keeps for the inbound filter.
pub const INBOUND_LOG_BYTES: u64 = (SEGMENT_BYTES * INBOUND_SEGMENT_COUNT) as u64;
/// rumqttd's `max_inflight_count`: how many packets it reads from one connection in one batch.
/// It does NOT widen the delivery window: rumqttd 0.20 hard-codes 100 unacknowledged QoS 1
/// deliveries per connection, so a destination that holds more than 100 messages of its
/// account unacknowledged (waiting for its rate limit) stalls the account's other groups.
const BROKER_INFLIGHT: usize = 10_000;

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The listen address is taken or not ours, or the broker's runtime or thread could not
    /// be created.
    #[error("embedded broker cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// A running embedded broker; dropping it stops the listener and its connections.
pub struct EmbeddedBroker {
    /// Tells the broker's thread to stop.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Opens in-process links to the router, for this process's own clients.
    local: LocalBroker,
}

impl EmbeddedBroker {
    /// What this process's clients link to the broker with.
    pub fn local(&self) -> LocalBroker {
        self.local.clone()
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts rumqttd listening on `listen`.
///
/// # Errors
/// [`EmbeddedError::Bind`] when the address cannot be bound (checked before rumqttd binds it,
/// because rumqttd only logs that from inside its task).
pub fn start(listen: SocketAddr, topics: &Topics) -> Result<EmbeddedBroker, EmbeddedError> {
    // rumqttd binds inside its task and cannot report failure to us; check first.
    std::net::TcpListener::bind(listen).map_err(|source| EmbeddedError::Bind {
        addr: listen,
        source,
    })?;
    let router = RouterConfig {
        max_connections: 10_000,
        max_outgoing_packet_count: 200,
        max_segment_size: SEGMENT_BYTES,
        max_segment_count: SEGMENT_COUNT,
        // The core's shared subscription, under either name rumqttd may key its log by.
        custom_segment: Some(
            [
                topics.inbound_filter(),
                format!("$share/+/{}", topics.inbound_filter()),
            ]
            .into_iter()
            .map(|filter| {
                let segments = SegmentConfig {
                    max_segment_size: SEGMENT_BYTES,
                    max_segment_count: INBOUND_SEGMENT_COUNT,
                };
                (filter, segments)
            })
            .collect(),
        ),
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    };
    let settings = ServerSettings {
        name: "qunbridge-embedded".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: MAX_PACKET_BYTES,
            max_inflight_count: BROKER_INFLIGHT,
            auth: None::<HashMap<String, String>>,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let router_tx = Router::new(0, router).spawn();
    let links = router_tx.clone();
    // Like a TCP connection of ours: a persistent session, filters made on first publish.
    let local = LocalBroker::new(move |connect| {
        LinkBuilder::new(&connect.client_id, links.clone())
            .clean_session(false)
            .dynamic_filters(true)
            .last_will(last_will(connect.will.as_ref()))
            .build()
            .map_err(|error| error.to_string())
    });
    let mut server = Server::new(settings, router_tx, V4);
    // rumqttd's connection tasks make blocking calls into its router; they get a thread and a
    // runtime of their own (as rumqttd's own `Broker::start` does), so they can never stall the
    // relay's runtime.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| EmbeddedError::Bind {
            addr: listen,
            source,
        })?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("qunbridge-broker".into())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::select! {
                    _ = stopped => {}
                    outcome = server.start(LinkType::Remote) => {
                        if let Err(error) = outcome {
                            error!(message = "Embedded broker stopped.", %listen, error = %error);
                        }
                    }
                }
            });
        })
        .map_err(|source| EmbeddedError::Bind {
            addr: listen,
            source,
        })?;
    info!(message = "Embedded MQTT broker listening.", %listen);
    Ok(EmbeddedBroker {
        stop: Some(stop),
        local,
    })
}
