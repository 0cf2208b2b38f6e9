//! The core's moderation step (issue 17), after dedup and before anything is published: a
//! member message (`kind = message`, not from a bot or a configured bot account, not from an
//! exempt member) is judged once for all destinations; each destination then applies the
//! verdict with its own action (`[filters.<x>] on_flood` for a flood; a wave's action is the
//! same everywhere). The same condition decides whether the destinations' word rules judge
//! it ([`Moderator::judges_words`]).
//!
//! The step holds per-sender flood control and spam-wave detection across groups, in that
//! order: a message over the flood limit is judged a flood, else a message of a wave a wave;
//! either way the wave detector sees it, so a flooding spammer's copies count towards the
//! wave. A member message from a group in no link is never relayed but is still a sighting
//! ([`Moderator::sight_unrouted`]): ad blasts often show up first where nothing is bridged,
//! and nothing of it is kept but the detector's hashed counters. A wave's start is logged
//! (its counts and an excerpt, never a user or group id), counted in
//! `qunbridge_moderation_waves_total` and told to the admins' group (`moderation.notify`)
//! here, once, whichever group it started in.
//!
//! Without `[moderation.wave]` no text is fingerprinted: the per-message cost of the step is
//! one look at the judges in force. The judges live behind one lock that a reload swaps,
//! keeping a limiter or a detector whose settings did not change (a reload never forgives a
//! flood or a wave in progress).
//!
//! With `[store] redis` the counts that decide are the ones every core shares
//! ([`SharedCounters`]): the process's own limiter and detector still count each message, and
//! their verdict stands only when Redis fails. Without it, judging never waits on anything.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use qunbridge_connectors::{Envelope, Kind, Platform, Segment};
use tracing::{debug, warn};

use super::notify::lines::WaveStart;
use super::notify::Notifier;
use crate::config::ModerationConfig;
use crate::metrics::MODERATION_WAVES;
use crate::moderation::excerpt;
use crate::moderation::fingerprint::fingerprint;
use crate::moderation::flood::{FloodLimiter, FloodVerdict};
use crate::moderation::shared::{FloodKey, Question, SharedCounters, Sighting, Verdicts};
use crate::moderation::wave::{WaveDetector, WaveSpec, WaveVerdict};
use crate::policy::moderation::{FloodConfig, ModerationAction};

/// The `rule` of a flood judgement (and label of its hits).
pub const FLOOD: &str = "flood";
/// The `rule` of a spam-wave judgement (and label of its hits).
pub const WAVE: &str = "wave";
/// The `rule` of a newcomer's message held while it waits ([`super::suspect`]), and label
/// of its hits.
pub const SUSPECT: &str = "suspect";
/// Characters of a wave's text its log line shows (as admin notifications will).
const EXCERPT_CHARS: usize = 40;

/// Why a message is not relayed as it is, for every destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    /// The rule that decided ([`FLOOD`] or [`WAVE`]): the `rule` label of the hit metric.
    pub rule: &'static str,
    /// The rule's own action, for destinations that set none.
    pub action: ModerationAction,
    /// True for the first message of a flood (logged once by the pipeline, not per
    /// message). Always false for a wave: its start is logged and counted by the
    /// [`Moderator`], which also sees the sightings of unlinked groups.
    pub started: bool,
}

impl Judgement {
    /// The action at a destination whose `on_flood` is `on_flood`: a flood follows the
    /// destination's own setting, a wave its own action everywhere.
    pub fn action_at(&self, on_flood: Option<ModerationAction>) -> ModerationAction {
        match on_flood {
            Some(action) if self.rule == FLOOD => action,
            _ => self.action,
        }
    }
}

/// True for what moderation judges: a message (`kind = message`) from a sender that is not a
/// bot. Notices, recalls, membership changes and bots' posts pass untouched, by flood control
/// and by word rules alike.
pub fn is_judged(envelope: &Envelope) -> bool {
    envelope.kind == Kind::Message && !envelope.sender.is_bot
}

/// What the core judges with.
struct Judges {
    /// `[moderation]` in force.
    config: ModerationConfig,
    /// Per-sender flood control, when configured.
    flood: Option<(FloodConfig, Arc<FloodLimiter>)>,
    /// Spam-wave detection, when configured: the spec in force (its action is the one
    /// applied, even when a reload kept a detector built with another) and the detector.
    wave: Option<(WaveSpec, Arc<WaveDetector>)>,
}

/// The moderation step shared by every core of the process.
pub struct Moderator {
    /// The judges in force; a reload swaps them.
    judges: RwLock<Arc<Judges>>,
    /// Tells the admins' group when a wave starts (`moderation.notify`).
    notifier: Arc<Notifier>,
    /// The counts shared with the other cores of a deployment (`[store] redis`), which
    /// decide when set; the judges' own counts stand in while Redis fails.
    shared: Option<Arc<SharedCounters>>,
}

impl Moderator {
    /// A moderator for `config`, counting in this process only.
    pub fn new(config: &ModerationConfig) -> Moderator {
        Moderator::sharing(config, None)
    }

    /// A moderator for `config` whose flood and wave counts are `shared` with other
    /// processes, when set.
    pub fn sharing(config: &ModerationConfig, shared: Option<Arc<SharedCounters>>) -> Moderator {
        Moderator {
            shared,
            judges: RwLock::new(Arc::new(Judges {
                config: config.clone(),
                flood: config
                    .flood
                    .map(|flood| (flood, Arc::new(FloodLimiter::new(flood)))),
                wave: config.wave.map(|spec| (spec, new_detector(spec))),
            })),
            notifier: Notifier::off(),
        }
    }

    /// The moderator, telling wave starts to `notifier`.
    pub fn with_notifier(self, notifier: Arc<Notifier>) -> Moderator {
        Moderator { notifier, ..self }
    }

    /// Puts a reloaded `[moderation]` in force; the flood limiter (and what it counted) is
    /// kept when its settings are the same, and so is the wave detector when what it counts
    /// by (window, thresholds, `min_chars`) is: a changed wave action alone applies to the
    /// next message of a wave in progress.
    pub fn reload(&self, config: &ModerationConfig) {
        let current = self.current();
        let flood = match (config.flood, &current.flood) {
            (Some(new), Some((old, limiter))) if new == *old => Some((new, limiter.clone())),
            (Some(new), _) => Some((new, Arc::new(FloodLimiter::new(new)))),
            (None, _) => None,
        };
        let wave = match (config.wave, &current.wave) {
            (Some(new), Some((old, detector))) if counts_alike(&new, old) => {
                Some((new, detector.clone()))
            }
            (Some(new), _) => Some((new, new_detector(new))),
            (None, _) => None,
        };
        *self
            .judges
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(Judges {
            config: config.clone(),
            flood,
            wave,
        });
    }

    /// The judges in force.
    fn current(&self) -> Arc<Judges> {
        self.judges
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// True when word rules judge this message: a member message ([`is_judged`]) from a
    /// sender `moderation.exempt` does not name.
    pub fn judges_words(&self, envelope: &Envelope) -> bool {
        is_judged(envelope)
            && !self
                .current()
                .config
                .is_exempt(&envelope.origin.account, &envelope.sender.id)
    }

    /// Judges a fresh inbound message of a linked group; `None`: relay it as it is. Awaits
    /// only with shared counters, at most [`ANSWER_WITHIN`](crate::moderation::shared::ANSWER_WITHIN).
    pub async fn judge(&self, envelope: &Envelope) -> Option<Judgement> {
        if !is_judged(envelope) {
            return None;
        }
        let judges = self.current();
        // Without flood control or waves there is nothing to judge (the common case: no
        // more work on the hot path than this check).
        if judges.flood.is_none() && judges.wave.is_none() {
            return None;
        }
        let origin = &envelope.origin;
        if judges
            .config
            .is_exempt(&origin.account, &envelope.sender.id)
        {
            return None;
        }
        let now = Instant::now();
        let key = FloodKey {
            account: &origin.account,
            group: &origin.group,
            sender: &envelope.sender.id,
        };
        // The wave sees the message even when the flood decided: its copies still count.
        let shown = judges.wave.as_ref().and_then(|_| Shown::of(envelope));
        let mut verdicts = Verdicts {
            flood: judges
                .flood
                .as_ref()
                .map(|(_, limiter)| limiter.check(key.account, key.group, key.sender, now)),
            wave: judges
                .wave
                .as_ref()
                .zip(shown.as_ref())
                .map(|((_, detector), shown)| shown.sight(detector, envelope, now)),
        };
        if let Some(shared) = &self.shared {
            let question = Question {
                flood: judges.flood.as_ref().map(|(config, _)| (config, key)),
                wave: judges
                    .wave
                    .as_ref()
                    .zip(shown.as_ref())
                    .map(|((spec, _), shown)| (spec, shown.sighting(envelope))),
            };
            verdicts = shared.judge(&question, verdicts).await;
        }
        let flood = judges
            .flood
            .as_ref()
            .zip(verdicts.flood)
            .and_then(|((config, _), verdict)| flood_judgement(config, verdict));
        let wave = judges
            .wave
            .as_ref()
            .zip(verdicts.wave)
            .zip(shown.as_ref())
            .and_then(|(((spec, _), verdict), shown)| {
                wave_judgement(spec, verdict, shown, &self.notifier)
            });
        flood.or(wave)
    }

    /// `[moderation.wave] suspect_delay` in force (`None`: newcomers' messages never wait).
    pub fn suspect_delay(&self) -> Option<std::time::Duration> {
        self.current().config.suspect_delay
    }

    /// True when `envelope`'s text is part of a spam wave now (see
    /// [`WaveDetector::in_wave`]; with shared counters, as every core counts it, this
    /// process's own detector standing in while Redis fails); false without waves. A message
    /// that waited as a suspect asks this before it is relayed.
    pub async fn in_wave(&self, envelope: &Envelope) -> bool {
        let judges = self.current();
        let Some((spec, detector)) = judges.wave.as_ref() else {
            return false;
        };
        let text = text_of(envelope);
        if text.is_empty() {
            return false;
        }
        let fingerprint = fingerprint(&text);
        let here = detector.in_wave(&fingerprint, Instant::now());
        match &self.shared {
            Some(shared) => match shared.in_wave(spec, &fingerprint).await {
                Ok(shared) => shared || here,
                Err(error) => {
                    debug!(message = "Shared wave counters not asked; this process's count decides.", %error);
                    here
                }
            },
            None => here,
        }
    }

    /// Counts a member message of a group in no link as a spam-wave sighting, when waves
    /// are configured (else it costs one look at the judges). Nothing is relayed or stored
    /// but the detector's counters; a wave it starts is logged and counted like any other.
    pub async fn sight_unrouted(&self, envelope: &Envelope) {
        if !is_judged(envelope) {
            return;
        }
        let judges = self.current();
        let Some((spec, detector)) = judges.wave.as_ref() else {
            return;
        };
        if judges
            .config
            .is_exempt(&envelope.origin.account, &envelope.sender.id)
        {
            return;
        }
        let Some(shown) = Shown::of(envelope) else {
            return;
        };
        let mut verdict = shown.sight(detector, envelope, Instant::now());
        if let Some(shared) = &self.shared {
            let question = Question {
                wave: Some((spec, shown.sighting(envelope))),
                ..Question::default()
            };
            let here = Verdicts {
                wave: Some(verdict),
                ..Verdicts::default()
            };
            verdict = shared.judge(&question, here).await.wave.unwrap_or(verdict);
        }
        let _not_relayed_anyway = wave_judgement(spec, verdict, &shown, &self.notifier);
    }
}

/// A wave detector for `spec`, with `qunbridge_moderation_waves_total` shown (at 0) from
/// now on, so the first wave is an increase an alert sees.
fn new_detector(spec: WaveSpec) -> Arc<WaveDetector> {
    metrics::counter!(MODERATION_WAVES).increment(0);
    Arc::new(WaveDetector::new(spec))
}

/// True when two wave specs count alike (everything but the action is the same), so a
/// detector built for one serves the other with its counts.
fn counts_alike(a: &WaveSpec, b: &WaveSpec) -> bool {
    WaveSpec {
        action: b.action,
        ..*a
    } == *b
}

/// The text a wave is recognised by: the message's text segments (mentions, pictures and
/// faces vary between copies or say nothing), a line each.
fn text_of(envelope: &Envelope) -> String {
    let mut text = String::new();
    for segment in &envelope.segments {
        if let Segment::Text { text: piece } = segment {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(piece);
        }
    }
    text
}

/// Flood control's `verdict` on a message as a judgement: `Some` over the limit.
fn flood_judgement(config: &FloodConfig, verdict: FloodVerdict) -> Option<Judgement> {
    match verdict {
        FloodVerdict::Allowed => None,
        FloodVerdict::Over { first } => Some(Judgement {
            rule: FLOOD,
            action: config.action,
            started: first,
        }),
    }
}

/// What the wave detectors are shown of a message with text.
struct Shown {
    /// The message's text ([`text_of`]), for the excerpt of a wave's log line.
    text: String,
    /// Its fingerprint.
    fingerprint: String,
}

impl Shown {
    /// The text of `envelope` and its fingerprint; `None` without text (never a wave).
    fn of(envelope: &Envelope) -> Option<Shown> {
        let text = text_of(envelope);
        (!text.is_empty()).then(|| Shown {
            fingerprint: fingerprint(&text),
            text,
        })
    }

    /// The sighting of this text in `envelope`'s group. A group id is the platform's, so two
    /// bot accounts in one group see one group, and a second account's report of the same
    /// message is told by the platform's time; an `api` group belongs to its account alone,
    /// and its time is the moment it was posted.
    fn sighting<'a>(&'a self, envelope: &'a Envelope) -> Sighting<'a> {
        let origin = &envelope.origin;
        let (scope, said_ms) = match origin.platform {
            Platform::Api => (origin.account.as_str(), None),
            platform => (platform.as_str(), Some(envelope.ts_ms).filter(|ms| *ms > 0)),
        };
        Sighting {
            fingerprint: &self.fingerprint,
            scope,
            group: &origin.group,
            sender: &envelope.sender.id,
            said_ms,
        }
    }

    /// Shows the sighting to this process's `detector`.
    fn sight(&self, detector: &WaveDetector, envelope: &Envelope, now: Instant) -> WaveVerdict {
        let sighting = self.sighting(envelope);
        detector.sight(
            sighting.fingerprint,
            sighting.scope,
            sighting.group,
            sighting.sender,
            sighting.said_ms,
            now,
        )
    }
}

/// A wave detector's `verdict` on a message `shown` as a judgement: `Some` for a message of a
/// wave. The start of a wave is logged and counted here, once.
fn wave_judgement(
    spec: &WaveSpec,
    verdict: WaveVerdict,
    shown: &Shown,
    notifier: &Notifier,
) -> Option<Judgement> {
    let WaveVerdict::Wave {
        started,
        groups,
        senders,
        repeats,
    } = verdict
    else {
        return None;
    };
    if started {
        metrics::counter!(MODERATION_WAVES).increment(1);
        let flat = shown.text.split_whitespace().collect::<Vec<_>>().join(" ");
        warn!(
            message = "Spam wave: the same text in several groups, from several members or repeated; it and its copies are not relayed until a whole window passes without one.",
            rule = WAVE,
            action = spec.action.as_str(),
            groups,
            senders,
            repeats,
            window = %humantime::format_duration(spec.window),
            excerpt = ?excerpt(&flat, EXCERPT_CHARS),
        );
        notifier.wave_started(
            WAVE,
            &WaveStart {
                groups,
                senders,
                repeats,
                window: spec.window,
                action: spec.action,
                text: &flat,
            },
        );
    }
    Some(Judgement {
        rule: WAVE,
        action: spec.action,
        started: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Rate;
    use futures_util::FutureExt;
    use qunbridge_connectors::model::{Origin, Platform, Sender, ENVELOPE_VERSION};

    /// `moderator.judge(envelope)`, which without shared counters answers at once: it is
    /// never pending, so the path without Redis never waits.
    pub(super) fn judge_now(moderator: &Moderator, envelope: &Envelope) -> Option<Judgement> {
        moderator
            .judge(envelope)
            .now_or_never()
            .expect("judging without shared counters never waits")
    }

    /// `moderator.sight_unrouted(envelope)`, likewise never pending without shared counters.
    pub(super) fn sight_now(moderator: &Moderator, envelope: &Envelope) {
        moderator
            .sight_unrouted(envelope)
            .now_or_never()
            .expect("sighting without shared counters never waits");
    }

    fn said(user: &str, is_bot: bool) -> Envelope {
        Envelope {
            v: ENVELOPE_VERSION,
            id: format!("qq:1:{user}"),
            origin: Origin {
                platform: Platform::Qq,
                account: "qq".into(),
                group: "1".into(),
                message_id: "m".into(),
                group_name: None,
            },
            sender: Sender {
                id: user.into(),
                name: user.into(),
                is_bot,
            },
            ts_ms: 0,
            kind: Kind::Message,
            segments: Vec::new(),
            member: None,
        }
    }

    fn config(per_sender: &str) -> ModerationConfig {
        ModerationConfig {
            exempt: [("qq".to_owned(), "admin".to_owned())].into(),
            flood: Some(FloodConfig {
                per_sender: Rate::parse(per_sender).expect("a rate"),
                burst: 1,
                action: ModerationAction::Drop,
            }),
            ..ModerationConfig::default()
        }
    }

    #[test]
    fn exempt_members_and_bots_are_never_judged_and_others_are_over_after_the_burst() {
        let moderator = Moderator::new(&config("1/min"));
        for _ in 0..3 {
            assert_eq!(judge_now(&moderator, &said("admin", false)), None);
            assert_eq!(judge_now(&moderator, &said("other-bot", true)), None);
        }
        assert_eq!(judge_now(&moderator, &said("u", false)), None);
        let over = judge_now(&moderator, &said("u", false)).expect("over the limit");
        assert_eq!(
            (over.rule, over.action, over.started),
            ("flood", ModerationAction::Drop, true)
        );
        let again = judge_now(&moderator, &said("u", false)).expect("still over");
        assert!(!again.started, "a flood starts once");
    }

    #[test]
    fn word_rules_judge_members_but_not_bots_exempt_members_or_notices() {
        let moderator = Moderator::new(&config("1/min"));
        assert!(moderator.judges_words(&said("u", false)));
        assert!(!moderator.judges_words(&said("other-bot", true)));
        assert!(!moderator.judges_words(&said("admin", false)));
        let mut notice = said("u", false);
        notice.kind = Kind::Member;
        assert!(!moderator.judges_words(&notice));
        moderator.reload(&ModerationConfig::default());
        assert!(
            moderator.judges_words(&said("admin", false)),
            "no longer exempt"
        );
    }

    #[test]
    fn a_reload_keeps_the_count_unless_the_limit_changed() {
        let moderator = Moderator::new(&config("1/min"));
        assert_eq!(judge_now(&moderator, &said("u", false)), None);
        moderator.reload(&config("1/min"));
        assert!(
            judge_now(&moderator, &said("u", false)).is_some(),
            "same limit: same count"
        );
        moderator.reload(&config("2/min"));
        assert_eq!(
            judge_now(&moderator, &said("u", false)),
            None,
            "a new limit counts afresh"
        );
        moderator.reload(&ModerationConfig::default());
        for _ in 0..5 {
            assert_eq!(
                judge_now(&moderator, &said("u", false)),
                None,
                "flood control off"
            );
        }
    }
}

#[cfg(test)]
mod wave_tests {
    use std::io::Write;
    use std::time::Duration;

    use qunbridge_connectors::model::{Origin, Sender, ENVELOPE_VERSION};

    use super::tests::{judge_now, sight_now};
    use super::*;

    /// The ad every test spreads, and variants of it that share its fingerprint.
    const AD: &str = "兼职刷单，日结300！加微信 abc123 详情 https://a.example.com/x?y=1";
    const AD_WIDE: &str =
        "兼职刷单，日结３００！加微信 ＡＢＣ１２３ 详情 https://a.example.com/x?y=1";
    const AD_SPACED: &str =
        "兼职 刷单 ， 日结300 ！ 加微信 abc123 详情 🔥 https://b.example.com/z?q=2";

    /// `user`'s message `text` in QQ group `group` of account `account`, said at `ts_ms`.
    fn posted(account: &str, group: &str, user: &str, text: &str, ts_ms: u64) -> Envelope {
        Envelope {
            v: ENVELOPE_VERSION,
            id: format!("{account}:{group}:{user}:{ts_ms}"),
            origin: Origin {
                platform: Platform::Qq,
                account: account.into(),
                group: group.into(),
                message_id: format!("{ts_ms}"),
                group_name: None,
            },
            sender: Sender {
                id: user.into(),
                name: format!("name-{user}"),
                is_bot: false,
            },
            ts_ms,
            kind: Kind::Message,
            segments: vec![Segment::text(text)],
            member: None,
        }
    }

    /// Waves on with the defaults (3 groups, senders or repeats in 10 minutes), `qq:admin`
    /// exempt.
    fn waves() -> ModerationConfig {
        ModerationConfig {
            exempt: [("qq".to_owned(), "admin".to_owned())].into(),
            wave: Some(WaveSpec::default()),
            ..ModerationConfig::default()
        }
    }

    thread_local! {
        /// Where this thread's log lines go while [`logged`] captures them.
        static CAPTURED: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
    }

    /// Writes log lines to the capture of the thread that logs (nowhere when it captures
    /// nothing).
    struct ThisThread;

    impl Write for ThisThread {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            CAPTURED.with(|captured| {
                if let Some(lines) = captured.borrow_mut().as_mut() {
                    lines.extend_from_slice(bytes);
                }
            });
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs `f` with this thread's log lines captured, and returns them. The subscriber is
    /// the process's global one, installed once: a subscriber scoped to one test thread is
    /// not reliably asked while tests on other threads meet the same log line without one
    /// (tracing caches a callsite's interest process-wide).
    fn logged(f: impl FnOnce()) -> String {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            let _ = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(tracing::Level::WARN)
                .with_writer(|| ThisThread)
                .try_init();
        });
        CAPTURED.with(|captured| *captured.borrow_mut() = Some(Vec::new()));
        f();
        let lines = CAPTURED
            .with(|captured| captured.borrow_mut().take())
            .unwrap_or_default();
        String::from_utf8_lossy(&lines).into_owned()
    }

    #[test]
    fn the_third_group_makes_a_wave_logged_once_without_ids_and_later_copies_are_judged_too() {
        let moderator = Moderator::new(&waves());
        let mut judged = Vec::new();
        let log = logged(|| {
            // First seen where nothing is bridged: a sighting, never relayed.
            sight_now(
                &moderator,
                &posted("qq", "900000001", "700000001", AD, 1_000),
            );
            judged.push(judge_now(
                &moderator,
                &posted("qq", "900000002", "700000002", AD_WIDE, 2_000),
            ));
            judged.push(judge_now(
                &moderator,
                &posted("qq", "900000003", "700000003", AD_SPACED, 3_000),
            ));
            judged.push(judge_now(
                &moderator,
                &posted("qq", "900000002", "700000004", AD, 60_000),
            ));
        });
        let wave = Some(Judgement {
            rule: WAVE,
            action: ModerationAction::Drop,
            started: false,
        });
        assert_eq!(
            judged,
            vec![None, wave, wave],
            "the third copy and later ones"
        );
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("Spam wave")).collect();
        assert_eq!(lines.len(), 1, "logged once:\n{log}");
        let line = lines[0];
        for expected in [
            "WARN",
            "rule=\"wave\"",
            "action=\"drop\"",
            "groups=3",
            "senders=3",
            "repeats=1",
            "window=10m",
            "excerpt=\"兼职 刷单 ， 日结300 ！ 加微信 abc123 详情 🔥 https://…\"",
        ] {
            assert!(line.contains(expected), "{expected} not in {line}");
        }
        for id in ["90000000", "70000000", "name-"] {
            assert!(!line.contains(id), "{id} in {line}");
        }
    }

    #[test]
    fn bots_exempt_members_short_texts_and_pictures_are_never_sighted() {
        let moderator = Moderator::new(&waves());
        for group in ["1", "2", "3", "4"] {
            let mut bot = posted("qq", group, "bot", AD, 1_000);
            bot.sender.is_bot = true;
            sight_now(&moderator, &bot);
            assert_eq!(judge_now(&moderator, &bot), None);
            let admin = posted("qq", group, "admin", AD, 1_000);
            sight_now(&moderator, &admin);
            assert_eq!(judge_now(&moderator, &admin), None);
            let member = format!("m{group}");
            assert_eq!(
                judge_now(
                    &moderator,
                    &posted("qq", group, &member, "好的收到👍", 1_000)
                ),
                None,
                "under min_chars"
            );
            let mut picture = posted("qq", group, &member, "", 1_000);
            picture.segments = vec![Segment::image(Some("https://x/1.jpg".into()), None)];
            assert_eq!(judge_now(&moderator, &picture), None);
        }
    }

    #[test]
    fn unlinked_sightings_are_not_counted_twice_when_several_bots_report_them() {
        let moderator = Moderator::new(&waves());
        // Three bot accounts in one unlinked group report one message: one sighting.
        for account in ["qq", "qq-2", "qq-3"] {
            sight_now(&moderator, &posted(account, "9", "spammer", AD, 5_000));
        }
        assert_eq!(
            judge_now(&moderator, &posted("qq", "1", "member", AD, 6_000)),
            None,
            "two groups, two senders, no repeat yet"
        );
    }

    #[test]
    fn without_waves_nothing_is_sighted() {
        let moderator = Moderator::new(&ModerationConfig::default());
        for group in ["1", "2", "3", "4", "5"] {
            sight_now(&moderator, &posted("qq", group, group, AD, 1_000));
            assert_eq!(
                judge_now(&moderator, &posted("qq", group, group, AD, 1_000)),
                None
            );
        }
    }

    #[test]
    fn a_flood_decides_first_and_its_copies_still_count_towards_a_wave() {
        let config = ModerationConfig {
            flood: Some(FloodConfig {
                per_sender: crate::policy::Rate::parse("1/min").expect("a rate"),
                burst: 1,
                action: ModerationAction::Drop,
            }),
            ..waves()
        };
        let moderator = Moderator::new(&config);
        let mut judged = Vec::new();
        let log = logged(|| {
            for ts_ms in [1_000, 30_000, 60_000] {
                judged.push(
                    judge_now(&moderator, &posted("qq", "1", "u", AD, ts_ms)).map(|j| j.rule),
                );
            }
            // The flooded copies were sightings: the third was a wave's start, so another
            // member's copy elsewhere is a wave.
            judged.push(judge_now(&moderator, &posted("qq", "2", "v", AD, 61_000)).map(|j| j.rule));
        });
        assert_eq!(judged, vec![None, Some(FLOOD), Some(FLOOD), Some(WAVE)]);
        assert_eq!(
            log.matches("Spam wave").count(),
            1,
            "the wave's start is logged though the flood decided:\n{log}"
        );
        assert!(log.contains("repeats=3"), "{log}");
    }

    #[test]
    fn on_flood_applies_to_floods_only() {
        let flood = Judgement {
            rule: FLOOD,
            action: ModerationAction::Drop,
            started: false,
        };
        let wave = Judgement {
            rule: WAVE,
            ..flood
        };
        assert_eq!(
            flood.action_at(Some(ModerationAction::Hold)),
            ModerationAction::Hold
        );
        assert_eq!(flood.action_at(None), ModerationAction::Drop);
        assert_eq!(
            wave.action_at(Some(ModerationAction::Hold)),
            ModerationAction::Drop
        );
    }

    #[test]
    fn a_reload_keeps_the_counts_unless_what_they_count_by_changed() {
        let moderator = Moderator::new(&waves());
        sight_now(&moderator, &posted("qq", "1", "u1", AD, 1_000));
        sight_now(&moderator, &posted("qq", "2", "u2", AD, 2_000));
        // The same settings: the two sightings stay and the third makes a wave.
        moderator.reload(&waves());
        assert!(judge_now(&moderator, &posted("qq", "3", "u3", AD, 3_000)).is_some());

        // A changed window counts afresh.
        let shorter = ModerationConfig {
            wave: Some(WaveSpec {
                window: Duration::from_secs(60),
                ..WaveSpec::default()
            }),
            ..waves()
        };
        moderator.reload(&shorter);
        assert_eq!(
            judge_now(&moderator, &posted("qq", "4", "u4", AD, 4_000)),
            None
        );
        sight_now(&moderator, &posted("qq", "5", "u5", AD, 5_000));

        // A changed action alone keeps the counts and applies at once.
        let (mut spec, _) = (shorter.wave.unwrap_or_default(), ());
        spec.action = ModerationAction::Hold;
        moderator.reload(&ModerationConfig {
            wave: Some(spec),
            ..waves()
        });
        assert_eq!(
            judge_now(&moderator, &posted("qq", "6", "u6", AD, 6_000)).map(|j| j.action),
            Some(ModerationAction::Hold)
        );

        // Waves off: nothing is judged a wave, however many groups.
        moderator.reload(&ModerationConfig::default());
        for group in ["7", "8", "9"] {
            assert_eq!(
                judge_now(&moderator, &posted("qq", group, group, AD, 7_000)),
                None
            );
        }
    }
}
