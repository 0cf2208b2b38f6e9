//! Admin notification (issue 17, `moderation.notify`): the admins' group, a group in no
//! link reached by a configured account, gets one line per hit of a filter rule with
//! `notify = true` and per flood or wave start ([`lines`] writes them; never a user or group
//! id).
//!
//! A line is an ordinary outbound message of the notify account, published on the admins'
//! group's out topic, so egress paces, coalesces and records it like any destination's
//! message. The relay pipeline never waits for it: the core hands the line to a bounded
//! queue ([`QUEUE`] lines) and goes on; one task of the process takes the lines, keeps to
//! `notify_per_minute` in any rolling minute ([`budget`]) and publishes them. Events over the
//! limit are counted and told in one summary line a minute after the first of them; a line
//! that finds the queue full, or that the broker does not take, is dropped and counted (and
//! told in the summary too). Best effort by design: a notification is not worth holding up
//! or repeating a member's message for.
//!
//! Counted in `qunbridge_moderation_notifications_total{outcome}`: `sent` (lines published,
//! summaries included), `suppressed` (events over the limit, told only in a summary),
//! `dropped` (lines lost: queue full, broker refused, or notify turned off by a reload while
//! they waited). The limit is per process: in a scaled-out deployment each relay core keeps
//! its own.

pub mod budget;
pub mod lines;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use qunbridge_connectors::model::{Origin, Sender, ENVELOPE_VERSION};
use qunbridge_connectors::{Envelope, Kind, Outbound, Segment};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use self::budget::Budget;
use self::lines::{Done, FloodOutcome, WaveStart};
use super::filter::NotifyHit;
use super::route::Destination;
use crate::broker::{BrokerClient, Topics};
use crate::config::ModerationConfig;
use crate::metrics::MODERATION_NOTIFICATIONS;
use crate::policy::moderation::NotifyConfig;
use crate::store::held::HeldEntry;

/// Lines waiting for the sending task at most; beyond it a line is dropped (and counted).
/// Lines are short, so this bounds the notifier's memory to some tens of kilobytes.
pub const QUEUE: usize = 256;
/// How long the sending task waits for room on the broker (flow control) before it drops a
/// line.
const PUBLISH_WAIT: Duration = Duration::from_secs(5);
/// The sender the lines are published with: the bridge itself, a bot.
const SENDER: &str = "qunbridge";
/// The link name the lines carry (egress logs it; no configured link is involved).
pub const NOTIFY_LINK: &str = "moderation.notify";

/// The process's admin notifier: what the cores and the moderator tell it is written as a
/// line and queued for the sending task ([`Notifier::attach`]).
pub struct Notifier {
    /// The admins' group and `notify_per_minute` in force; `None`: notifications are off
    /// (every call returns at once). A reload swaps it.
    target: RwLock<Option<NotifyConfig>>,
    /// The bounded queue to the sending task: a full queue drops the line rather than make
    /// the relay wait.
    lines: mpsc::Sender<String>,
    /// The queue's receiving end, until the sending task takes it.
    waiting: Mutex<Option<mpsc::Receiver<String>>>,
    /// Lines dropped at a full queue since the sending task last looked: its next summary
    /// tells them with the ones over the limit.
    lost: AtomicU64,
}

impl Notifier {
    /// A notifier for `config`'s `notify` (off when it is not set).
    pub fn new(config: &ModerationConfig) -> Arc<Notifier> {
        let (lines, waiting) = mpsc::channel(QUEUE);
        let notifier = Notifier {
            target: RwLock::new(None),
            lines,
            waiting: Mutex::new(Some(waiting)),
            lost: AtomicU64::new(0),
        };
        notifier.reload(config);
        Arc::new(notifier)
    }

    /// A notifier that tells nothing (no `notify` configured).
    pub fn off() -> Arc<Notifier> {
        Notifier::new(&ModerationConfig::default())
    }

    /// Puts a reloaded `notify` in force: lines from now on go to the new group under the
    /// new limit; with `notify` gone nothing more is queued, and what waits is dropped.
    pub fn reload(&self, config: &ModerationConfig) {
        if config.notify.is_some() {
            // Shown from the start (at 0), so an alert sees the first increase.
            for outcome in ["sent", "suppressed", "dropped"] {
                metrics::counter!(MODERATION_NOTIFICATIONS, "outcome" => outcome).increment(0);
            }
        }
        *self.target.write().unwrap_or_else(PoisonError::into_inner) = config.notify.clone();
    }

    /// The admins' group in force, if notifications are on.
    fn target(&self) -> Option<NotifyConfig> {
        self.target
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// True when notifications are on.
    pub fn is_on(&self) -> bool {
        self.target
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Starts the sending task on `publisher` (a relay core's publishing connection), until
    /// `stop`. The first call starts it; later ones (more cores) change nothing.
    pub fn attach(
        self: &Arc<Self>,
        publisher: BrokerClient,
        topics: Topics,
        stop: CancellationToken,
    ) {
        let taken = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(lines) = taken {
            tokio::spawn(self.clone().send_until(lines, publisher, topics, stop));
        }
    }

    /// What rules with `notify = true` did to `envelope`'s copy for `destination`: a line
    /// each.
    pub fn rule_hits(&self, envelope: &Envelope, destination: &Destination, hits: &[NotifyHit]) {
        for hit in hits {
            self.tell(|| {
                lines::rule_hit(
                    &destination.link,
                    envelope,
                    destination.platform,
                    &hit.rule,
                    Done::Action(hit.action),
                )
            });
        }
    }

    /// A word rule of `destination` whose action is `hold` kept `envelope` from it: a line
    /// when that rule has `notify = true`, naming the held entry (`None`: `hold_cap` was
    /// reached and it was dropped instead).
    pub fn held_by_list(
        &self,
        envelope: &Envelope,
        destination: &Destination,
        list: &str,
        id: Option<&str>,
    ) {
        if !self.is_on() {
            return;
        }
        let notifies = destination.filter.rules.iter().any(|rule| {
            rule.notify
                && rule.action == crate::policy::Action::Hold
                && rule.matcher.word_list().is_some_and(|l| l.name() == list)
        });
        if !notifies {
            return;
        }
        self.tell(|| {
            lines::rule_hit(
                &destination.link,
                envelope,
                destination.platform,
                list,
                id.map_or(Done::Action("drop"), Done::Held),
            )
        });
    }

    /// `envelope`'s sender is shown as 群友 at `destination` because a word rule hit the
    /// name: a line when that rule has `notify = true`.
    pub fn renamed(&self, envelope: &Envelope, destination: &Destination) {
        if !self.is_on() {
            return;
        }
        let Some(rule) = destination
            .filter
            .name_hit(&envelope.sender.name)
            .filter(|rule| rule.notify)
        else {
            return;
        };
        let list = rule.matcher.word_list().map_or("", |list| list.name());
        self.tell(|| {
            lines::rule_hit(
                &destination.link,
                envelope,
                destination.platform,
                list,
                Done::Renamed,
            )
        });
    }

    /// `envelope`'s sender started flooding (`rule`): one line for all its destinations,
    /// each held (with the entry's id, from `held`) or dropped.
    pub fn flood_started(
        &self,
        envelope: &Envelope,
        rule: &str,
        destinations: &[Destination],
        held: &[HeldEntry],
    ) {
        self.tell(|| {
            let outcomes: Vec<FloodOutcome<'_>> = destinations
                .iter()
                .map(|destination| FloodOutcome {
                    link: &destination.link,
                    platform: destination.platform,
                    done: held
                        .iter()
                        .find(|entry| {
                            entry.account == destination.target.account
                                && entry.group == destination.target.group
                        })
                        .map_or(Done::Action("drop"), |entry| Done::Held(&entry.id)),
                })
                .collect();
            lines::flood_start(envelope, rule, &outcomes)
        });
    }

    /// A spam wave (`rule`) started: one line with its counts and text.
    pub fn wave_started(&self, rule: &str, wave: &WaveStart<'_>) {
        self.tell(|| lines::wave_start(rule, wave));
    }

    /// Queues the line `write` makes, when notifications are on; never waits. A full queue
    /// drops it (counted, and told in the next summary).
    fn tell(&self, write: impl FnOnce() -> String) {
        if !self.is_on() {
            return;
        }
        if self.lines.try_send(write()).is_err() {
            self.lost.fetch_add(1, Ordering::AcqRel);
            count("dropped", 1);
            debug!(message = "Admin notification dropped: its queue is full.");
        }
    }

    /// The sending task: takes the queued lines, keeps to `notify_per_minute`, publishes the
    /// lines and the summaries, until `stop` or until the notifier is gone.
    async fn send_until(
        self: Arc<Self>,
        mut queued: mpsc::Receiver<String>,
        publisher: BrokerClient,
        topics: Topics,
        stop: CancellationToken,
    ) {
        let mut budget = Budget::default();
        loop {
            let summary_at = budget.summary_at();
            let line = tokio::select! {
                _ = stop.cancelled() => return,
                line = queued.recv() => match line {
                    Some(line) => line,
                    None => return,
                },
                _ = sleep_until(summary_at), if summary_at.is_some() => {
                    let Some(untold) = budget.summary_due(tokio::time::Instant::now()) else {
                        continue;
                    };
                    if let Some(target) = self.target() {
                        self.publish(&publisher, &topics, &target, lines::summary(untold)).await;
                    }
                    continue;
                }
            };
            let now = tokio::time::Instant::now();
            budget.untold(self.lost.swap(0, Ordering::AcqRel), now);
            let Some(target) = self.target() else {
                count("dropped", 1);
                continue;
            };
            if budget.admit(target.per_minute, now) {
                self.publish(&publisher, &topics, &target, line).await;
            } else {
                count("suppressed", 1);
            }
        }
    }

    /// Publishes one line to the admins' group (waiting at most [`PUBLISH_WAIT`] for room on
    /// the broker); counted `sent` or `dropped`.
    async fn publish(
        &self,
        publisher: &BrokerClient,
        topics: &Topics,
        target: &NotifyConfig,
        text: String,
    ) {
        let outbound = line_for(target, text);
        let payload = match serde_json::to_vec(&outbound) {
            Ok(payload) => payload,
            Err(error) => {
                warn!(message = "Cannot encode an admin notification.", %error);
                count("dropped", 1);
                return;
            }
        };
        let topic = topics.outbound(&target.account, &target.group);
        // Not waiting for the broker's acknowledgement: best effort, and the next line
        // should not wait for this one.
        match publisher
            .publish_within(topic, payload, false, Some(PUBLISH_WAIT))
            .await
        {
            Ok(_) => count("sent", 1),
            Err(error) => {
                warn!(message = "Admin notification not published.", %error);
                count("dropped", 1);
            }
        }
    }
}

/// Sleeps until `at` (`None`: never; the caller does not poll it then).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Counts notifications by outcome.
fn count(outcome: &'static str, lines: u64) {
    metrics::counter!(MODERATION_NOTIFICATIONS, "outcome" => outcome).increment(lines);
}

/// The outbound message that carries one line to the admins' group: said by the bridge, from
/// the admins' group itself (so no member's message maps to it and a recall of one never
/// takes it back), with an id of its own for egress's send log.
fn line_for(target: &NotifyConfig, text: String) -> Outbound {
    let id = format!("notify-{:016x}", rand::random::<u64>());
    let ts_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Outbound {
        v: ENVELOPE_VERSION,
        id: id.clone(),
        link: NOTIFY_LINK.to_owned(),
        group: target.group.clone(),
        kind: Kind::Message,
        origin: Origin {
            platform: target.platform,
            account: target.account.clone(),
            group: target.group.clone(),
            message_id: id,
            group_name: None,
        },
        sender: Sender {
            id: SENDER.to_owned(),
            name: SENDER.to_owned(),
            is_bot: true,
        },
        ts_ms,
        prefix: String::new(),
        segments: vec![Segment::text(text.clone())],
        text,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use qunbridge_connectors::media::MediaMode;
    use qunbridge_connectors::model::{Origin, Sender, ENVELOPE_VERSION};
    use qunbridge_connectors::{Envelope, Kind, Platform, Segment};

    use super::*;
    use crate::moderation::lists::{CompiledList, ListSpec};
    use crate::moderation::wave::WaveSpec;
    use crate::policy::{Action, FilterRules, GroupRef, Matcher, Rule};

    /// Notifications to `qq:99999`, `per_minute` a minute.
    fn notifying(per_minute: u32) -> ModerationConfig {
        ModerationConfig {
            notify: Some(NotifyConfig {
                account: "qq".into(),
                group: "99999".into(),
                platform: Platform::Qq,
                per_minute,
            }),
            ..ModerationConfig::default()
        }
    }

    /// Every line queued so far (the sending task never started).
    fn queued(notifier: &Notifier) -> Vec<String> {
        let mut waiting = notifier.waiting.lock().expect("not poisoned");
        let receiver = waiting.as_mut().expect("not attached");
        let mut lines = Vec::new();
        while let Ok(line) = receiver.try_recv() {
            lines.push(line);
        }
        lines
    }

    /// 小明's message `text` in QQ group 1.
    fn said(text: &str) -> Envelope {
        Envelope {
            v: ENVELOPE_VERSION,
            id: "qq:1:7".into(),
            origin: Origin {
                platform: Platform::Qq,
                account: "qq".into(),
                group: "1".into(),
                message_id: "7".into(),
                group_name: None,
            },
            sender: Sender {
                id: "1000000001".into(),
                name: "加V:abc12345".into(),
                is_bot: false,
            },
            ts_ms: 0,
            kind: Kind::Message,
            segments: vec![Segment::text(text)],
            member: None,
        }
    }

    /// The WeChat destination of link "fans", with one `words` rule on a list `contact`
    /// (`加V`) that notifies or not.
    fn wechat(notify: bool) -> Destination {
        let list = CompiledList::compile(&ListSpec {
            name: "contact".into(),
            words: vec!["加V".into()],
            ..ListSpec::default()
        })
        .expect("compiles");
        Destination {
            target: GroupRef {
                account: "wx".into(),
                group: "a@chatroom".into(),
            },
            platform: Platform::Wechat,
            link: "fans".into(),
            format: "{name}: ".into(),
            filter: Arc::new(FilterRules {
                rules: vec![Rule {
                    matcher: Matcher::Words(Arc::new(list)),
                    action: Action::Drop,
                    source: "test".into(),
                    notify,
                }],
                on_flood: None,
            }),
            media: MediaMode::Passthrough,
            notices: None,
        }
    }

    #[test]
    fn nothing_is_queued_while_notify_is_off() {
        let notifier = Notifier::off();
        let hit = NotifyHit {
            rule: "ads".into(),
            action: "drop",
        };
        notifier.rule_hits(&said("x"), &wechat(true), &[hit]);
        notifier.renamed(&said("x"), &wechat(true));
        notifier.flood_started(&said("x"), "flood", &[wechat(true)], &[]);
        assert!(queued(&notifier).is_empty());
    }

    #[test]
    fn hits_renames_and_flood_starts_are_queued_as_lines_and_a_reload_turns_them_off() {
        let notifier = Notifier::new(&notifying(10));
        let hit = NotifyHit {
            rule: "ads".into(),
            action: "mask",
        };
        notifier.rule_hits(&said("今天兼职刷单"), &wechat(false), &[hit]);
        // The name is hidden by a rule that does not notify: no line.
        notifier.renamed(&said("大家好"), &wechat(false));
        notifier.renamed(&said("大家好"), &wechat(true));
        let held = HeldEntry {
            id: "h7k2ab".into(),
            account: "wx".into(),
            group: "a@chatroom".into(),
            link: "fans".into(),
            rule: "flood".into(),
            held_ms: 0,
            envelope: said("f6"),
        };
        notifier.flood_started(&said("f6"), "flood", &[wechat(false)], &[held]);
        assert_eq!(
            queued(&notifier),
            [
                "[拦截] fans · QQ→微信 · 规则 ads · 已遮盖 · 加V:abc12345: 今天兼职刷单",
                "[拦截] fans · QQ→微信 · 规则 contact · 已隐去昵称 · 加V:abc12345: 大家好",
                "[拦截] fans · QQ→微信 · 规则 flood · 已暂存 h7k2ab · 加V:abc12345: f6",
            ]
        );

        notifier.reload(&ModerationConfig::default());
        notifier.flood_started(&said("f6"), "flood", &[wechat(false)], &[]);
        assert!(
            queued(&notifier).is_empty(),
            "notify is off after the reload"
        );
    }

    #[test]
    fn a_full_queue_drops_lines_and_remembers_them_for_the_summary() {
        let notifier = Notifier::new(&notifying(10));
        for _ in 0..QUEUE + 5 {
            notifier.flood_started(&said("f6"), "flood", &[wechat(false)], &[]);
        }
        assert_eq!(notifier.lost.load(Ordering::Acquire), 5);
        assert_eq!(queued(&notifier).len(), QUEUE);
    }

    #[test]
    fn a_wave_start_is_told_once_through_the_moderator() {
        let notifier = Notifier::new(&notifying(10));
        let config = ModerationConfig {
            wave: Some(WaveSpec::default()),
            ..notifying(10)
        };
        let moderator = super::super::Moderator::new(&config).with_notifier(notifier.clone());
        let ad = "兼职刷单，日结300！加微信 abc123";
        for (group, user) in [("1", "u1"), ("2", "u2"), ("3", "u3"), ("4", "u4")] {
            let mut copy = said(ad);
            copy.origin.group = group.into();
            copy.sender.id = user.into();
            copy.ts_ms = 1_000 * u64::from(group.as_bytes()[0]);
            futures_util::FutureExt::now_or_never(moderator.sight_unrouted(&copy))
                .expect("sighting without shared counters never waits");
        }
        assert_eq!(
            queued(&notifier),
            ["[拦截] 规则 wave · 10m 内 3 个群、3 人、同一人最多 1 次 · 同文副本一律丢弃 · 兼职刷单，日结300！加微信 abc123"]
        );
    }

    #[test]
    fn a_line_is_an_outbound_message_of_the_bridge_in_the_admins_group() {
        let target = notifying(10).notify.expect("set");
        let outbound = line_for(&target, "[拦截] x".into());
        assert_eq!(
            (outbound.group.as_str(), outbound.text.as_str()),
            ("99999", "[拦截] x")
        );
        assert_eq!(outbound.segments, vec![Segment::text("[拦截] x")]);
        assert_eq!(
            (
                outbound.origin.account.as_str(),
                outbound.origin.group.as_str()
            ),
            ("qq", "99999"),
            "no member's message maps to it"
        );
        assert!(outbound.sender.is_bot);
        assert_ne!(line_for(&target, String::new()).id, outbound.id);
    }
}
