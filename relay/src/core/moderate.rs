//! The core's moderation step (issue 17), after dedup and before anything is published: a
//! member message (`kind = message`, not from a bot or a configured bot account, not from an
//! exempt member) is judged once for all destinations; each destination then applies the
//! verdict with its own action (`[filters.<x>] on_flood`, else the rule's). The same
//! condition decides whether the destinations' word rules judge it ([`Moderator::judges_words`]).
//!
//! Today the step holds per-sender flood control. The judges live behind one lock that a
//! reload swaps, keeping a limiter whose settings did not change (a reload never forgives a
//! flood in progress).

use std::sync::{Arc, RwLock};
use std::time::Instant;

use qunbridge_connectors::{Envelope, Kind};

use crate::config::ModerationConfig;
use crate::moderation::flood::{FloodLimiter, FloodVerdict};
use crate::policy::moderation::{FloodConfig, ModerationAction};

/// Why a message is not relayed as it is, for every destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    /// The rule that decided (`flood`): the `rule` label of the hit metric.
    pub rule: &'static str,
    /// The rule's own action, for destinations that set none.
    pub action: ModerationAction,
    /// True for the first message of a flood (logged once, not per message).
    pub started: bool,
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
}

/// The moderation step shared by every core of the process.
pub struct Moderator {
    /// The judges in force; a reload swaps them.
    judges: RwLock<Arc<Judges>>,
}

impl Moderator {
    /// A moderator for `config`.
    pub fn new(config: &ModerationConfig) -> Moderator {
        Moderator {
            judges: RwLock::new(Arc::new(Judges {
                config: config.clone(),
                flood: config
                    .flood
                    .map(|flood| (flood, Arc::new(FloodLimiter::new(flood)))),
            })),
        }
    }

    /// Puts a reloaded `[moderation]` in force; the flood limiter (and what it counted) is
    /// kept when its settings are the same.
    pub fn reload(&self, config: &ModerationConfig) {
        let current = self.current();
        let flood = match (config.flood, &current.flood) {
            (Some(new), Some((old, limiter))) if new == *old => Some((new, limiter.clone())),
            (Some(new), _) => Some((new, Arc::new(FloodLimiter::new(new)))),
            (None, _) => None,
        };
        *self
            .judges
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(Judges {
            config: config.clone(),
            flood,
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

    /// Judges a fresh inbound message; `None`: relay it as it is.
    pub fn judge(&self, envelope: &Envelope) -> Option<Judgement> {
        if !is_judged(envelope) {
            return None;
        }
        let judges = self.current();
        // Without a flood limit there is nothing to judge (the common case: no more work on
        // the hot path than this check).
        let (flood, limiter) = judges.flood.as_ref()?;
        let origin = &envelope.origin;
        if judges
            .config
            .is_exempt(&origin.account, &envelope.sender.id)
        {
            return None;
        }
        match limiter.check(
            &origin.account,
            &origin.group,
            &envelope.sender.id,
            Instant::now(),
        ) {
            FloodVerdict::Allowed => None,
            FloodVerdict::Over { first } => Some(Judgement {
                rule: "flood",
                action: flood.action,
                started: first,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Rate;
    use qunbridge_connectors::model::{Origin, Platform, Sender, ENVELOPE_VERSION};

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
            assert_eq!(moderator.judge(&said("admin", false)), None);
            assert_eq!(moderator.judge(&said("other-bot", true)), None);
        }
        assert_eq!(moderator.judge(&said("u", false)), None);
        let over = moderator.judge(&said("u", false)).expect("over the limit");
        assert_eq!(
            (over.rule, over.action, over.started),
            ("flood", ModerationAction::Drop, true)
        );
        let again = moderator.judge(&said("u", false)).expect("still over");
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
        assert_eq!(moderator.judge(&said("u", false)), None);
        moderator.reload(&config("1/min"));
        assert!(
            moderator.judge(&said("u", false)).is_some(),
            "same limit: same count"
        );
        moderator.reload(&config("2/min"));
        assert_eq!(
            moderator.judge(&said("u", false)),
            None,
            "a new limit counts afresh"
        );
        moderator.reload(&ModerationConfig::default());
        for _ in 0..5 {
            assert_eq!(
                moderator.judge(&said("u", false)),
                None,
                "flood control off"
            );
        }
    }
}
