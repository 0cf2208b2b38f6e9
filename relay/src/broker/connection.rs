//! The MQTT connection to an external broker (mosquitto, or any other reached over TCP or
//! TLS): rumqttc's packet codec and session state ([`MqttState`]) driven by a loop of our own
//! that gives the same events as rumqttc's `EventLoop`, with one difference that matters on
//! the hot path: every request queued when the loop wakes (publishes, acknowledgements) is
//! written into one buffer and flushed with one system call. rumqttc's loop flushes after each
//! request, which cost one `writev` per MQTT packet, about four per relayed message, each
//! running the loopback delivery to the broker and waking it (docs/BENCHMARKS.md, issue 14).
//!
//! Reads are gathered the same way: the packets that have arrived are decoded together, and
//! what the session answers to them goes out in the same flush.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use rumqttc::mqttbytes::v4::Codec;
use rumqttc::tokio_rustls::rustls::pki_types::ServerName;
use rumqttc::tokio_rustls::rustls::ClientConfig;
use rumqttc::tokio_rustls::TlsConnector;
use rumqttc::{
    ConnectReturnCode, Event, Incoming, LastWill, Login, MqttState, Packet, PingReq, Request,
    StateError,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_util::codec::Framed;

/// Requests written before one flush at most, so that a long queue still goes out in pieces
/// (and the loop hands its events on) rather than all at once.
const WRITE_BATCH: usize = 256;
/// Packets decoded from what has arrived before the loop hands their events on.
const READ_BATCH: usize = 64;
/// Bytes written into the buffer before it is flushed in the middle of a batch (the codec's
/// default, 8 KiB, would flush every eight envelopes or so).
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Why the connection failed or ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The socket failed (connect, read or write).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The session state refused a packet (a broker that broke the protocol, a missed ping
    /// answer).
    #[error("MQTT session: {0}")]
    State(#[from] StateError),
    /// A packet could not be decoded or encoded.
    #[error("MQTT packet: {0}")]
    Packet(#[from] rumqttc::mqttbytes::Error),
    /// The broker refused the connection.
    #[error("the broker refused the connection: {0:?}")]
    Refused(ConnectReturnCode),
    /// The broker answered CONNECT with something else than CONNACK.
    #[error("the broker answered CONNECT with another packet")]
    NotConnAck,
    /// The TLS handshake failed, or the host is not a valid TLS server name.
    #[error("TLS: {0}")]
    Tls(String),
    /// Connecting, or writing to the broker, took longer than the timeout.
    #[error("the broker did not answer within {0:?}")]
    Timeout(Duration),
    /// The broker closed the connection.
    #[error("the broker closed the connection")]
    Closed,
    /// Every client handle is gone: nothing more can be asked of the connection.
    #[error("every client handle is gone")]
    RequestsDone,
}

/// What the connection needs to know to connect.
pub struct ConnectionOptions {
    /// Client id of the session.
    pub client_id: String,
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// TLS client configuration, for `mqtts` brokers.
    pub tls: Option<Arc<ClientConfig>>,
    /// Keep-alive interval (a ping is sent this often).
    pub keep_alive: Duration,
    /// User name and password.
    pub login: Option<Login>,
    /// The status message the broker publishes when the connection is lost.
    pub last_will: Option<LastWill>,
    /// Largest packet either way.
    pub max_packet_bytes: usize,
    /// Outgoing QoS 1 publishes in flight.
    pub inflight: u16,
    /// How long connecting and flushing may take.
    pub timeout: Duration,
}

/// Either transport, behind one type.
trait Transport: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Transport for T {}

/// A connection to an external broker, polled by one task like rumqttc's `EventLoop`:
/// [`Connection::poll`] connects when not connected and otherwise yields the next event.
pub struct Connection {
    /// Where and how to connect.
    options: ConnectionOptions,
    /// Requests of the client handles (`rumqttc::AsyncClient::from_senders`).
    requests: flume::Receiver<Request>,
    /// Packet ids, publishes awaiting their PUBACK, and the events to hand on.
    pub state: MqttState,
    /// Requests to send before new ones: what a connection that ended had not finished.
    pub pending: VecDeque<Request>,
    /// The socket with its codec, while connected.
    framed: Option<Framed<Box<dyn Transport>, Codec>>,
    /// When the next ping is due.
    keep_alive: Option<Pin<Box<Sleep>>>,
}

impl Connection {
    /// A connection that connects on its first poll.
    pub fn new(options: ConnectionOptions, requests: flume::Receiver<Request>) -> Connection {
        let state = MqttState::new(options.inflight, true);
        Connection {
            options,
            requests,
            state,
            pending: VecDeque::new(),
            framed: None,
            keep_alive: None,
        }
    }

    /// Connects if not connected (yielding the broker's CONNACK), else yields the next event.
    /// After an error the connection is closed: what it had not finished is in
    /// [`Connection::pending`], and the next poll connects again.
    ///
    /// # Errors
    /// Any [`ConnectionError`]; [`ConnectionError::RequestsDone`] once every handle is gone.
    pub async fn poll(&mut self) -> Result<Event, ConnectionError> {
        if self.framed.is_none() {
            let timeout = self.options.timeout;
            let (framed, connack) = tokio::time::timeout(timeout, connect(&self.options))
                .await
                .map_err(|_| ConnectionError::Timeout(timeout))??;
            if !connack.session_present {
                self.pending.clear();
            }
            self.framed = Some(framed);
            self.keep_alive = Some(Box::pin(tokio::time::sleep(self.options.keep_alive)));
            return Ok(Event::Incoming(Packet::ConnAck(connack)));
        }
        match self.next_event().await {
            Ok(event) => Ok(event),
            Err(error) => {
                self.clean();
                Err(error)
            }
        }
    }

    /// Closes the socket and keeps what was not finished: the publishes awaiting their
    /// PUBACK, then the requests still queued (but not their acknowledgements, which would
    /// name packet ids of the closed connection: the broker sends those messages again).
    fn clean(&mut self) {
        self.framed = None;
        self.keep_alive = None;
        self.pending.extend(self.state.clean());
        self.pending.extend(
            self.requests
                .drain()
                .filter(|request| !matches!(request, Request::PubAck(_))),
        );
    }

    /// Whether a new request may be taken: always for pending ones, else while the window
    /// of publishes in flight has room and no packet id collided.
    fn may_send(&self) -> bool {
        !self.pending.is_empty()
            || (self.state.inflight() < self.options.inflight && self.state.collision.is_none())
    }

    /// The next event: one already decoded, else waits for packets, requests or the ping.
    async fn next_event(&mut self) -> Result<Event, ConnectionError> {
        loop {
            if let Some(event) = self.state.events.pop_front() {
                return Ok(event);
            }
            let may_send = self.may_send();
            let Connection {
                framed,
                keep_alive,
                requests,
                pending,
                ..
            } = self;
            let (Some(framed), Some(keep_alive)) = (framed.as_mut(), keep_alive.as_mut()) else {
                return Err(ConnectionError::Closed);
            };
            let woke = tokio::select! {
                packet = framed.next() => Woke::Packet(packet),
                request = next_request(pending, requests), if may_send => Woke::Request(request?),
                () = keep_alive.as_mut() => Woke::Ping,
            };
            match woke {
                Woke::Packet(packet) => self.read_packets(packet).await?,
                Woke::Request(request) => self.write_requests(request).await?,
                Woke::Ping => {
                    let interval = self.options.keep_alive;
                    if let Some(timer) = self.keep_alive.as_mut() {
                        timer.as_mut().reset(tokio::time::Instant::now() + interval);
                    }
                    self.write_requests(Request::PingReq(PingReq)).await?;
                }
            }
        }
    }

    /// Handles the packet that woke the loop and those that arrived with it, then flushes
    /// what the session answered.
    async fn read_packets(
        &mut self,
        first: Option<Result<Packet, rumqttc::mqttbytes::Error>>,
    ) -> Result<(), ConnectionError> {
        let framed = self.framed.as_mut().ok_or(ConnectionError::Closed)?;
        let mut next = first;
        let mut read = 0;
        loop {
            let packet = match next {
                Some(Ok(packet)) => packet,
                Some(Err(error)) => return Err(error.into()),
                None => return Err(ConnectionError::Closed),
            };
            if let Some(answer) = self.state.handle_incoming_packet(packet)? {
                framed.feed(answer).await?;
            }
            read += 1;
            if read >= READ_BATCH {
                break;
            }
            match framed.next().now_or_never() {
                Some(more) => next = more,
                None => break,
            }
        }
        flush(framed, self.options.timeout).await
    }

    /// Writes `first` and every request queued behind it (up to [`WRITE_BATCH`], while the
    /// window has room), then flushes once.
    async fn write_requests(&mut self, first: Request) -> Result<(), ConnectionError> {
        let mut request = Some(first);
        let mut written = 0;
        while let Some(current) = request.take() {
            if let Some(packet) = self.state.handle_outgoing_packet(current)? {
                let framed = self.framed.as_mut().ok_or(ConnectionError::Closed)?;
                framed.feed(packet).await?;
            }
            written += 1;
            if written >= WRITE_BATCH || !self.may_send() {
                break;
            }
            request = match self.pending.pop_front() {
                Some(pending) => Some(pending),
                None => self.requests.try_recv().ok(),
            };
        }
        let framed = self.framed.as_mut().ok_or(ConnectionError::Closed)?;
        flush(framed, self.options.timeout).await
    }
}

/// What woke the loop.
enum Woke {
    /// A packet arrived (or the socket ended: `None`, or failed).
    Packet(Option<Result<Packet, rumqttc::mqttbytes::Error>>),
    /// A request to send.
    Request(Request),
    /// The ping is due.
    Ping,
}

/// The next request: a pending one first, else the next from the handles.
async fn next_request(
    pending: &mut VecDeque<Request>,
    requests: &flume::Receiver<Request>,
) -> Result<Request, ConnectionError> {
    if let Some(request) = pending.pop_front() {
        return Ok(request);
    }
    requests
        .recv_async()
        .await
        .map_err(|_| ConnectionError::RequestsDone)
}

/// Flushes what was written, within `timeout`.
async fn flush(
    framed: &mut Framed<Box<dyn Transport>, Codec>,
    timeout: Duration,
) -> Result<(), ConnectionError> {
    tokio::time::timeout(timeout, framed.flush())
        .await
        .map_err(|_| ConnectionError::Timeout(timeout))?
        .map_err(ConnectionError::from)
}

/// Opens the socket (TCP, then TLS if configured), sends CONNECT and reads the CONNACK.
async fn connect(
    options: &ConnectionOptions,
) -> Result<(Framed<Box<dyn Transport>, Codec>, rumqttc::ConnAck), ConnectionError> {
    let tcp = TcpStream::connect((options.host.as_str(), options.port)).await?;
    tcp.set_nodelay(true)?;
    let socket: Box<dyn Transport> = match &options.tls {
        Some(config) => {
            let name = ServerName::try_from(options.host.clone())
                .map_err(|error| ConnectionError::Tls(error.to_string()))?;
            let tls = TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|error| ConnectionError::Tls(error.to_string()))?;
            Box::new(tls)
        }
        None => Box::new(tcp),
    };
    let codec = Codec {
        max_incoming_size: options.max_packet_bytes,
        max_outgoing_size: options.max_packet_bytes,
    };
    let mut framed = Framed::new(socket, codec);
    framed.set_backpressure_boundary(WRITE_BUFFER_BYTES);
    let mut hello = rumqttc::Connect::new(options.client_id.clone());
    hello.keep_alive = u16::try_from(options.keep_alive.as_secs()).unwrap_or(u16::MAX);
    hello.clean_session = false;
    hello.login = options.login.clone();
    hello.last_will = options.last_will.clone();
    framed.send(Packet::Connect(hello)).await?;
    match framed.next().await {
        Some(Ok(Incoming::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
            Ok((framed, ack))
        }
        Some(Ok(Incoming::ConnAck(ack))) => Err(ConnectionError::Refused(ack.code)),
        Some(Ok(_)) => Err(ConnectionError::NotConnAck),
        Some(Err(error)) => Err(error.into()),
        None => Err(ConnectionError::Closed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{AsyncClient, ConnAck, Outgoing, PubAck, QoS};
    use tokio::net::TcpListener;

    /// A scripted broker's side of one connection, speaking MQTT through rumqttc's codec.
    type BrokerSide = Framed<TcpStream, Codec>;

    fn options(port: u16) -> ConnectionOptions {
        ConnectionOptions {
            client_id: "unit".into(),
            host: "127.0.0.1".into(),
            port,
            tls: None,
            keep_alive: Duration::from_secs(30),
            login: None,
            last_will: None,
            max_packet_bytes: 64 * 1024,
            inflight: 10,
            timeout: Duration::from_secs(5),
        }
    }

    /// A listener, and a connection with its handle pointed at it.
    async fn pair() -> (TcpListener, Connection, AsyncClient) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (tx, rx) = flume::bounded(64);
        (
            listener,
            Connection::new(options(port), rx),
            AsyncClient::from_senders(tx),
        )
    }

    /// Accepts the connection, checks its CONNECT and answers `code`.
    async fn accept(listener: &TcpListener, code: ConnectReturnCode) -> BrokerSide {
        let (socket, _) = listener.accept().await.expect("accept");
        let mut broker = Framed::new(
            socket,
            Codec {
                max_incoming_size: 64 * 1024,
                max_outgoing_size: 64 * 1024,
            },
        );
        match broker.next().await {
            Some(Ok(Packet::Connect(connect))) => {
                assert_eq!(connect.client_id, "unit");
                assert!(!connect.clean_session, "the session is kept");
                assert_eq!(connect.keep_alive, 30);
            }
            other => panic!("expected CONNECT, got {other:?}"),
        }
        broker
            .send(Packet::ConnAck(ConnAck::new(code, false)))
            .await
            .expect("CONNACK");
        broker
    }

    /// The publishes the broker reads next, as (packet id, payload).
    async fn read_publishes(broker: &mut BrokerSide, count: usize) -> Vec<(u16, String)> {
        let mut seen = Vec::new();
        while seen.len() < count {
            match broker.next().await {
                Some(Ok(Packet::Publish(publish))) => seen.push((
                    publish.pkid,
                    String::from_utf8_lossy(&publish.payload).into_owned(),
                )),
                Some(Ok(_)) => {}
                other => panic!("expected PUBLISH, got {other:?}"),
            }
        }
        seen
    }

    #[tokio::test]
    async fn queued_publishes_reach_the_broker_in_order_and_their_acks_come_back_as_events() {
        let (listener, mut connection, client) = pair().await;
        let broker = tokio::spawn(async move {
            let mut broker = accept(&listener, ConnectReturnCode::Success).await;
            let seen = read_publishes(&mut broker, 5).await;
            for (pkid, _) in &seen {
                broker
                    .send(Packet::PubAck(PubAck::new(*pkid)))
                    .await
                    .expect("PUBACK");
            }
            (seen, broker)
        });
        match connection.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => assert!(!ack.session_present),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        for n in 1..=5 {
            client
                .publish("in/a", QoS::AtLeastOnce, false, format!("message {n}"))
                .await
                .expect("queued");
        }
        let mut sent = Vec::new();
        let mut acked = Vec::new();
        while acked.len() < 5 {
            match connection.poll().await.expect("connected") {
                Event::Outgoing(Outgoing::Publish(pkid)) => sent.push(pkid),
                Event::Incoming(Packet::PubAck(ack)) => acked.push(ack.pkid),
                _ => {}
            }
        }
        let (seen, _broker) = broker.await.expect("broker");
        let expected: Vec<(u16, String)> = (1..=5).map(|n| (n, format!("message {n}"))).collect();
        assert_eq!(seen, expected);
        assert_eq!(sent, vec![1, 2, 3, 4, 5]);
        assert_eq!(acked, vec![1, 2, 3, 4, 5]);
        assert_eq!(connection.state.inflight(), 0);
    }

    #[tokio::test]
    async fn publishes_without_an_ack_stay_pending_when_the_broker_closes_the_connection() {
        let (listener, mut connection, client) = pair().await;
        let broker = tokio::spawn(async move {
            let mut broker = accept(&listener, ConnectReturnCode::Success).await;
            read_publishes(&mut broker, 2).await
        });
        connection.poll().await.expect("CONNACK");
        for n in 1..=2 {
            client
                .publish("in/a", QoS::AtLeastOnce, false, format!("message {n}"))
                .await
                .expect("queued");
        }
        let error = loop {
            match connection.poll().await {
                Ok(_) => {}
                Err(error) => break error,
            }
        };
        assert_eq!(broker.await.expect("broker").len(), 2);
        assert!(
            matches!(error, ConnectionError::Closed | ConnectionError::Io(_)),
            "{error}"
        );
        let pending: Vec<String> = connection
            .pending
            .iter()
            .map(|request| match request {
                Request::Publish(publish) => String::from_utf8_lossy(&publish.payload).into_owned(),
                other => panic!("only publishes stay pending, not {other:?}"),
            })
            .collect();
        assert_eq!(pending, vec!["message 1", "message 2"]);
    }

    #[tokio::test]
    async fn a_refused_connection_reports_the_brokers_code() {
        let (listener, mut connection, _client) = pair().await;
        let broker =
            tokio::spawn(async move { accept(&listener, ConnectReturnCode::NotAuthorized).await });
        let error = connection.poll().await.expect_err("refused");
        assert!(
            matches!(
                error,
                ConnectionError::Refused(ConnectReturnCode::NotAuthorized)
            ),
            "{error}"
        );
        drop(broker.await.expect("broker"));
    }
}
