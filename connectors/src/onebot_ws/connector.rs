//! The run loop both OneBot connectors share: register the configured bot, start the ordered
//! ingress task and the transport (forward connection or reverse listener), then answer the
//! relay's egress queue on whichever session takes actions, until the queue closes; then
//! close the sockets and let ingress drain. What differs per version comes in as a
//! [`Version`] (receiving) and an [`ActionSender`] (sending).
//!
//! Egress requests are sent concurrently, each in a task of its own with its own action and
//! `echo` (at most [`MAX_SENDS`] at once; at the bound no further request is taken until one
//! settles): the relay keeps order per destination group by sending a group's next request
//! only after the previous one's outcome, so a group whose implementation takes seconds to
//! answer `send_group_msg` delays no other group. Shutdown drains: the loop ends when the
//! relay closes the queue and every send in flight has settled.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::error;

use super::ingress::publish_in_order;
use super::link::AccountLink;
use super::media_source::SessionSource;
use super::members::{run_rounds, Schedule};
use super::session::Sessions;
use super::transport::{forward_sessions, reverse_sessions, Transport};
use super::version::{ActionSender, Outgoing, Version};
use crate::context::{
    ConnectorContext, EgressCommand, EgressRequest, PrepareRequest, RelatedMessages,
};
use crate::error::ConnectorError;
use crate::media::MediaContext;
use crate::model::{Kind, Platform};
use crate::reverse_ws::SharedListeners;
use crate::{Connector, Secret};

/// Inbound messages buffered between the socket readers and ingress. When it is full the
/// readers stop reading event frames (see [`super::connection`]).
pub const EVENT_QUEUE: usize = 512;
/// Egress requests of one account being sent at once. The relay sends one request per
/// destination group at a time, so this bounds how many groups are served concurrently;
/// beyond it, requests wait in the relay's queue until a send settles.
pub const MAX_SENDS: usize = 64;

/// What both versions' settings say about reaching the implementation.
pub struct Reach<'a> {
    /// Forward or reverse WebSocket.
    pub transport: &'a Transport,
    /// Access token, sent (forward) or required (reverse).
    pub access_token: Option<&'a Secret>,
    /// The bot's user id when configured; otherwise learned at run time.
    pub self_id: Option<&'a str>,
}

impl<'a> Reach<'a> {
    /// How to reach an implementation, from an account's settings.
    pub fn new(
        transport: &'a Transport,
        access_token: Option<&'a Secret>,
        self_id: Option<&'a str>,
    ) -> Reach<'a> {
        Reach {
            transport,
            access_token,
            self_id,
        }
    }
}

/// What a version's settings give the shared connector: how to reach the implementation,
/// and the version's receiving and sending halves for one account.
pub trait VersionSettings: Send + Sync + 'static {
    /// The receiving half.
    type Version: Version;
    /// The sending half.
    type Sender: ActionSender;

    /// How to reach the implementation.
    fn reach(&self) -> Reach<'_>;

    /// How often the account's group member lists are polled (`member_poll`); `None`: never.
    fn member_poll(&self) -> Option<Duration> {
        None
    }

    /// The two halves for one account on `platform`, using `media` for pictures.
    fn halves(
        &self,
        account: &str,
        platform: Platform,
        media: &MediaContext,
    ) -> (Self::Version, Self::Sender);
}

/// A OneBot connector of either version, told apart by its settings type.
pub struct OneBotConnector<S> {
    /// The account's settings.
    settings: S,
    /// The daemon's reverse listeners: accounts on one address share it (told apart by
    /// `X-Self-ID`); unused by a forward transport.
    listeners: SharedListeners,
}

impl<S: VersionSettings> OneBotConnector<S> {
    /// A connector for one account; `listeners` is the daemon's set of shared reverse
    /// listeners.
    pub fn new(settings: S, listeners: SharedListeners) -> OneBotConnector<S> {
        OneBotConnector {
            settings,
            listeners,
        }
    }
}

impl<S: VersionSettings> Connector for OneBotConnector<S> {
    async fn run(self, ctx: ConnectorContext) -> Result<(), ConnectorError> {
        let (version, sender) = self.settings.halves(&ctx.account, ctx.platform, &ctx.media);
        let schedule = Schedule::new(self.settings.member_poll());
        run(
            self.settings.reach(),
            &self.listeners,
            (version, sender),
            schedule,
            ctx,
        )
        .await
    }
}

/// Runs a OneBot account until the relay closes its egress queue: `halves` receive and send,
/// `schedule` says when the member counts and the member-list poll run.
///
/// # Errors
/// [`ConnectorError::Bind`] when a reverse listen address cannot be bound.
pub async fn run<V: Version, A: ActionSender>(
    reach: Reach<'_>,
    listeners: &SharedListeners,
    halves: (V, A),
    schedule: Schedule,
    ctx: ConnectorContext,
) -> Result<(), ConnectorError> {
    let (version, sender) = halves;
    let ConnectorContext {
        account,
        platform,
        ingress,
        mut egress,
        state,
        intake,
        bots,
        media,
    } = ctx;
    if let Some(id) = reach.self_id {
        bots.register(platform, id);
    }
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let link = Arc::new(AccountLink {
        account: account.clone(),
        platform,
        self_id: Mutex::new(reach.self_id.map(str::to_owned)),
        bots,
        sessions: Sessions::default(),
        events: events_tx,
        state,
        intake: intake.clone(),
        version,
        max_message_bytes: if V::PICTURES_IN_ANSWERS {
            media.max_message_bytes()
        } else {
            crate::reverse_ws::MAX_MESSAGE_BYTES
        },
    });
    // Sockets stay open after intake stops, until egress has drained.
    let sockets_stop = CancellationToken::new();
    let ingress_task = tokio::spawn(publish_in_order::<V>(
        account.clone(),
        ingress,
        events_rx,
        intake,
    ));
    let token = reach.access_token.map(|token| token.expose().to_owned());
    let transport = match reach.transport {
        Transport::Forward { url } => tokio::spawn(forward_sessions(
            url.clone(),
            token,
            link.clone(),
            sockets_stop.clone(),
        )),
        Transport::Reverse { listen } => {
            let accepting = reverse_sessions(
                *listen,
                listeners,
                token,
                link.clone(),
                sockets_stop.clone(),
            )?;
            tokio::spawn(accepting)
        }
    };

    // Member counts and the member-list poll, until intake stops or egress has drained.
    let rounds_stop = link.intake.child_token();
    let rounds = tokio::spawn(run_rounds(link.clone(), schedule, rounds_stop.clone()));

    let sender = Arc::new(sender);
    // The implementation answers for the pictures this account saw.
    if let Some(service) = &media.service {
        service.register(
            &account,
            Arc::new(SessionSource::new(&link, sender.clone())),
        );
    }
    answer_egress(&mut egress, &link, sender, &sockets_stop).await;
    if let Some(service) = &media.service {
        service.unregister(&account);
    }
    rounds_stop.cancel();
    let _ = rounds.await;
    sockets_stop.cancel();
    let _ = transport.await;
    // The link holds the events sender; dropping it lets the ingress task finish.
    drop(link);
    let _ = ingress_task.await;
    Ok(())
}

/// Answers the relay's egress queue until it closes: every request is sent in a task of its
/// own (at most [`MAX_SENDS`] at once), so a destination whose implementation is slow to
/// answer never holds back another one. Order within a destination group is the relay's:
/// it sends a group's next message only after this one's outcome. Returns once the queue
/// closed and every send in flight has settled.
async fn answer_egress<V: Version, A: ActionSender>(
    egress: &mut mpsc::Receiver<EgressCommand>,
    link: &Arc<AccountLink<V>>,
    sender: Arc<A>,
    sockets_stop: &CancellationToken,
) {
    let mut sends = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            Some(joined) = sends.join_next(), if !sends.is_empty() => settled(&link.account, joined),
            command = egress.recv(), if sends.len() < MAX_SENDS => match command {
                Some(EgressCommand::Send(request)) => {
                    sends.spawn(send_one(
                        link.clone(),
                        sender.clone(),
                        request,
                        sockets_stop.clone(),
                    ));
                }
                Some(EgressCommand::Prepare(request)) => {
                    sends.spawn(prepare_one(
                        link.clone(),
                        sender.clone(),
                        request,
                        sockets_stop.clone(),
                    ));
                }
                None => break,
            },
        }
    }
    while let Some(joined) = sends.join_next().await {
        settled(&link.account, joined);
    }
}

/// Sends one request on whichever session takes actions (waiting for one) and reports its
/// outcome to the relay.
async fn send_one<V: Version, A: ActionSender>(
    link: Arc<AccountLink<V>>,
    sender: Arc<A>,
    request: EgressRequest,
    sockets_stop: CancellationToken,
) {
    let EgressRequest {
        outbound,
        related,
        mut reply,
    } = request;
    let session = tokio::select! {
        session = link.sessions.wait_for_actions(&sockets_stop) => session,
        // The relay stopped waiting (shutdown): the message stays with the broker.
        _ = reply.closed() => None,
    };
    let Some(session) = session else {
        // Dropping `reply` leaves the message with the broker for redelivery.
        return;
    };
    let out = Outgoing {
        session: &session,
        outbound: &outbound,
        related: &related,
    };
    let outcome = match outbound.kind {
        // The core renders membership notices as messages; a `member` outbound from another
        // writer is sent as the text it carries.
        Kind::Message | Kind::Member => sender.message(out).await,
        Kind::Recall => sender.recall(out).await,
    };
    let _ = reply.send(outcome);
}

/// Uploads, on whichever session takes actions, what the message of `request` will need
/// when it is sent, and tells the relay it is done (dropping `done` when no session came
/// before the relay stopped waiting). Sends nothing.
async fn prepare_one<V: Version, A: ActionSender>(
    link: Arc<AccountLink<V>>,
    sender: Arc<A>,
    request: PrepareRequest,
    sockets_stop: CancellationToken,
) {
    let PrepareRequest { outbound, mut done } = request;
    let session = tokio::select! {
        session = link.sessions.wait_for_actions(&sockets_stop) => session,
        _ = done.closed() => None,
    };
    let Some(session) = session else {
        return;
    };
    let related = RelatedMessages::default();
    let out = Outgoing {
        session: &session,
        outbound: &outbound,
        related: &related,
    };
    sender.prepare(out).await;
    let _ = done.send(());
}

/// Logs a send task that did not finish normally; its request was dropped unanswered, so
/// the relay leaves the message with the broker for redelivery.
fn settled(account: &str, joined: Result<(), JoinError>) {
    if let Err(error) = joined {
        error!(message = "An egress send task failed; the message stays with the broker.", account = %account, %error);
    }
}

#[cfg(test)]
mod tests {
    //! The connector over a real local WebSocket, with a scripted OneBot v11 implementation
    //! on the other end and a [`ScriptedSink`] as the relay: what ingress publishes when the
    //! relay cannot take anything for a while.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use futures_util::{SinkExt, StreamExt};
    use serde_json::{json, Value};
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;
    use tokio_tungstenite::tungstenite::Message;

    use super::*;
    use crate::context::{BotRegistry, Ingress, RelatedMessages, SendReceipt, StateReporter};
    use crate::model::Outbound;
    use crate::onebot11::egress::Egress;
    use crate::onebot11::ingress::OneBot11;
    use crate::onebot_ws::connection::HELD_EVENTS;
    use crate::onebot_ws::testing::{ScriptedSink, GROUP, PATIENCE};

    /// The bot's QQ number.
    const BOT: &str = "2854196310";

    /// The implementation's end of the socket.
    struct Peer {
        /// Frames to write, in order.
        out: mpsc::UnboundedSender<Message>,
        /// Frames whose write returned (TCP took them).
        written: Arc<AtomicUsize>,
    }

    impl Peer {
        /// Queues a frame for writing.
        fn write(&self, frame: Message) {
            self.out.send(frame).expect("the peer's writer runs");
        }

        /// Frames written so far.
        fn written(&self) -> usize {
            self.written.load(Ordering::SeqCst)
        }

        /// Waits until the writer has not moved for a while; how many frames it wrote.
        async fn settled(&self) -> usize {
            let mut last = self.written();
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let now = self.written();
                if now == last {
                    return now;
                }
                last = now;
            }
        }
    }

    /// The running connector.
    struct Running {
        /// The relay's egress queue; dropping it stops the connector.
        egress: mpsc::Sender<EgressCommand>,
        /// The bot registry the connector learns ids into.
        bots: BotRegistry,
        /// The connector task.
        task: JoinHandle<Result<(), ConnectorError>>,
    }

    impl Running {
        /// Closes the egress queue and waits for the connector to end.
        async fn stop(self) {
            drop(self.egress);
            let ended = tokio::time::timeout(PATIENCE, self.task)
                .await
                .expect("the connector ends once egress closed");
            assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
        }
    }

    /// Starts a v11 connector publishing into `sink`, connected forward to a scripted peer
    /// that answers every action with success (message id 9001).
    async fn start(sink: &Arc<ScriptedSink>) -> (Peer, Running) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("ws://{}/", listener.local_addr().expect("addr"));
        let (egress, egress_rx) = mpsc::channel(8);
        let bots = BotRegistry::default();
        let ctx = ConnectorContext {
            account: "qq".into(),
            platform: Platform::Qq,
            ingress: Ingress::new(sink.clone()),
            egress: egress_rx,
            state: StateReporter::new().0,
            intake: CancellationToken::new(),
            bots: bots.clone(),
            media: MediaContext::default(),
        };
        let task = tokio::spawn(async move {
            let transport = Transport::Forward { url };
            let reach = Reach::new(&transport, None, Some(BOT));
            let sender = Egress::new("qq".into(), Platform::Qq, MediaContext::default());
            // No member counts: the peer must see no action but the sends.
            let schedule = Schedule::off();
            run(
                reach,
                &SharedListeners::default(),
                (OneBot11, sender),
                schedule,
                ctx,
            )
            .await
        });
        let (stream, _) = listener.accept().await.expect("qunbridge connects");
        let ws = tokio_tungstenite::accept_async(stream)
            .await
            .expect("handshake");
        let (mut write, mut read) = ws.split();
        let (out, mut frames) = mpsc::unbounded_channel::<Message>();
        let written = Arc::new(AtomicUsize::new(0));
        let counter = written.clone();
        tokio::spawn(async move {
            while let Some(frame) = frames.recv().await {
                if write.send(frame).await.is_err() {
                    return;
                }
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        let answers = out.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = read.next().await {
                let Message::Text(text) = frame else { continue };
                let Ok(action) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                let answer = json!({"status": "ok", "retcode": 0,
                    "data": {"message_id": 9001}, "echo": action["echo"]});
                if answers
                    .send(Message::Text(answer.to_string().into()))
                    .is_err()
                {
                    return;
                }
            }
        });
        let peer = Peer { out, written };
        let running = Running { egress, bots, task };
        (peer, running)
    }

    /// Group message `n` saying `text`, as NapCat sends it.
    fn message(n: u64, text: &str) -> Message {
        let event = json!({"time": 1718880000, "self_id": 2854196310u64, "post_type": "message",
            "message_type": "group", "sub_type": "normal", "message_id": n,
            "group_id": 735021844, "user_id": 42, "anonymous": null,
            "message": [{"type": "text", "data": {"text": text}}], "raw_message": "",
            "font": 0, "sender": {"user_id": 42, "nickname": "Bob", "card": "", "role": "member"}});
        Message::Text(event.to_string().into())
    }

    #[tokio::test]
    async fn a_full_event_queue_stops_the_reads_until_ingress_catches_up_and_loses_nothing() {
        let sink = ScriptedSink::new();
        // The relay takes nothing for now.
        sink.set_open(false);
        let (peer, running) = start(&sink).await;

        // More small messages than the queue holds, then a frame whose effect shows it was
        // read (it names bot 777), then ~43 MB of large messages: more than the socket
        // buffers of both ends hold, so the implementation's writes must block.
        let small = (EVENT_QUEUE + 100) as u64;
        for n in 0..small {
            peer.write(message(n, &format!("m{n}")));
        }
        peer.write(Message::Text(
            json!({"time": 1718880000, "self_id": 777, "post_type": "meta_event",
                   "meta_event_type": "lifecycle", "sub_type": "connect"})
            .to_string()
            .into(),
        ));
        let big_text = "x".repeat(900 * 1024);
        let total = small + 48;
        for n in small..total {
            peer.write(message(n, &big_text));
        }
        let frames = total as usize + 1;

        let written = peer.settled().await;
        assert!(
            written < frames,
            "the implementation's writes block: {written} of {frames} frames written"
        );
        assert!(
            !running.bots.is_bot(Platform::Qq, "777"),
            "frames behind the full queue stay unread"
        );
        assert!(sink.submitted().is_empty(), "the relay took nothing yet");

        // The relay takes messages again: every one is published once, in order.
        sink.set_open(true);
        sink.wait_until("every message confirmed", |s| {
            s.confirmed().len() >= total as usize
        })
        .await;
        assert_eq!(sink.submitted(), (0..total).collect::<Vec<_>>());
        let mut confirmed = sink.confirmed();
        confirmed.sort_unstable();
        assert_eq!(confirmed, (0..total).collect::<Vec<_>>());
        assert!(running.bots.is_bot(Platform::Qq, "777"), "read in the end");
        assert_eq!(peer.settled().await, frames, "every write went through");
        running.stop().await;
    }

    #[tokio::test]
    async fn replies_to_actions_are_read_while_events_wait() {
        let sink = ScriptedSink::new();
        sink.set_open(false);
        let (peer, running) = start(&sink).await;

        // The queue fills and a few messages wait unread in the socket...
        let total = (EVENT_QUEUE + HELD_EVENTS / 2) as u64;
        for n in 0..total {
            peer.write(message(n, &format!("m{n}")));
        }
        assert_eq!(peer.settled().await, total as usize);
        tokio::time::sleep(Duration::from_millis(200)).await;

        // ...when qunbridge sends a message: its answer comes behind them, and is read.
        let mut outbound = Outbound::sample(Kind::Message, Platform::Api, GROUP);
        outbound.text = "hello".into();
        outbound.segments = vec![crate::model::Segment::text("hello")];
        let (reply, outcome) = oneshot::channel();
        running
            .egress
            .send(EgressCommand::Send(EgressRequest {
                outbound: outbound.into(),
                related: RelatedMessages::default(),
                reply,
            }))
            .await
            .expect("the connector takes requests");
        let outcome = tokio::time::timeout(PATIENCE, outcome)
            .await
            .expect("the answer is read while ingress is stuck")
            .expect("an outcome");
        assert_eq!(
            outcome,
            Ok(SendReceipt {
                message_ids: vec!["9001".into()],
                idempotent: false,
                repeated: false,
            })
        );
        assert!(sink.submitted().is_empty(), "the relay still took nothing");

        sink.set_open(true);
        sink.wait_until("every message confirmed", |s| {
            s.confirmed().len() >= total as usize
        })
        .await;
        assert_eq!(sink.submitted(), (0..total).collect::<Vec<_>>());
        running.stop().await;
    }
}
