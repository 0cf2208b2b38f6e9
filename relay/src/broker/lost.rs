//! Losses inside the embedded broker, made loud. rumqttd keeps a bounded commit log per topic
//! filter; a reader that falls further behind than the log holds is moved past the overwritten
//! messages with nothing but a `warn!` ("Read cursor start jumped from (segment, offset) to
//! (segment, offset) on <filter>"). Those messages were acknowledged to their publisher and are
//! gone. [`BrokerLosses`] is a tracing layer that watches for that warning, counts the skipped
//! messages in `qunbridge_broker_messages_lost_total` and logs an error naming the filter, so a
//! loss is never silent. It has its own filter, so it works whatever `QUNBRIDGE_LOG` says.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::combinator::And;
use tracing_subscriber::filter::{FilterExt, FilterFn, Filtered, Targets};
use tracing_subscriber::layer::{Context, Layer};

use crate::metrics::BROKER_MESSAGES_LOST;

/// Where rumqttd reports a reader's cursor jump.
const ROUTER_TARGET: &str = "rumqttd::router::routing";

/// The tracing layer that counts and reports what the embedded broker skipped.
#[derive(Debug, Default, Clone, Copy)]
pub struct BrokerLosses;

impl BrokerLosses {
    /// The layer with its own filter: rumqttd's router warnings, whatever the log filter of
    /// the other layers lets through.
    pub fn layer<S>() -> Filtered<BrokerLosses, And<Targets, FilterFn, S>, S>
    where
        S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        BrokerLosses.with_filter(
            Targets::new()
                .with_target(ROUTER_TARGET, Level::WARN)
                .and(not_broker_spans()),
        )
    }
}

/// A filter that turns off rumqttd's spans and lets everything else through: its router opens
/// one per publish, and spans some layer is interested in are built for every message.
pub fn not_broker_spans() -> FilterFn {
    FilterFn::new(|metadata| !(metadata.is_span() && metadata.target().starts_with("rumqttd")))
}

impl<S: Subscriber> Layer<S> for BrokerLosses {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != ROUTER_TARGET || *event.metadata().level() != Level::WARN {
            return;
        }
        let mut text = TextFields::default();
        event.record(&mut text);
        if let Some(jump) = CursorJump::parse(&text.0) {
            metrics::counter!(BROKER_MESSAGES_LOST).increment(jump.lost);
            tracing::error!(
                message = "The embedded broker dropped messages a reader had not consumed: its log for this topic filter was full.",
                filter = %jump.filter,
                lost = jump.lost
            );
        }
    }
}

/// Every field of an event written out as text, so the jump can be read from whichever field
/// rumqttd put it in.
#[derive(Default)]
struct TextFields(String);

impl Visit for TextFields {
    fn record_str(&mut self, _field: &Field, value: &str) {
        self.0.push_str(value);
        self.0.push('\n');
    }

    fn record_debug(&mut self, _field: &Field, value: &dyn fmt::Debug) {
        self.0.push_str(&format!("{value:?}"));
        self.0.push('\n');
    }
}

/// One "Read cursor start jumped from (s, a) to (t, b) on <filter>" warning.
#[derive(Debug, PartialEq, Eq)]
struct CursorJump {
    /// How many messages the reader skipped: the difference of the absolute offsets.
    lost: u64,
    /// The topic filter whose log was overrun.
    filter: String,
}

impl CursorJump {
    /// Reads a jump out of rumqttd's text; `None` for anything else.
    fn parse(text: &str) -> Option<CursorJump> {
        let rest = &text[text.find("cursor start jumped from ")? + 25..];
        let (from, rest) = offset_pair(rest)?;
        let rest = rest.trim_start().strip_prefix("to ")?;
        let (to, rest) = offset_pair(rest)?;
        let filter = rest
            .trim_start()
            .strip_prefix("on ")
            .map(|f| {
                f.lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .trim_matches('"')
            })
            .unwrap_or_default()
            .to_owned();
        Some(CursorJump {
            lost: to.1.saturating_sub(from.1),
            filter,
        })
    }
}

/// Parses `(segment, offset)` at the start of `text`, and what follows it.
fn offset_pair(text: &str) -> Option<((u64, u64), &str)> {
    let inner = text.trim_start().strip_prefix('(')?;
    let close = inner.find(')')?;
    let (segment, offset) = inner[..close].split_once(',')?;
    let pair = (segment.trim().parse().ok()?, offset.trim().parse().ok()?);
    Some((pair, &inner[close + 1..]))
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn a_jump_is_read_with_its_count_and_filter() {
        assert_eq!(
            CursorJump::parse(
                "Read cursor start jumped from (3, 30650) to (5, 51200) on qunbridge/v1/out/hub/+"
            ),
            Some(CursorJump {
                lost: 20550,
                filter: "qunbridge/v1/out/hub/+".into()
            })
        );
        assert_eq!(
            CursorJump::parse("Read cursor start jumped from (1, x)"),
            None
        );
        assert_eq!(CursorJump::parse("something else"), None);
    }

    #[test]
    fn a_router_warning_of_a_jump_is_counted_and_other_events_are_not() {
        let Some(handle) = crate::admin::prometheus() else {
            panic!("the metrics recorder");
        };
        let lost = || {
            let text = handle.render();
            text.lines()
                .find_map(|line| line.strip_prefix("qunbridge_broker_messages_lost_total "))
                .and_then(|value| value.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let before = lost();
        let subscriber = tracing_subscriber::registry().with(BrokerLosses::layer());
        tracing::subscriber::with_default(subscriber, || {
            // As rumqttd writes it: the text in the `error` field, the cursors beside it.
            let error = "Read cursor start jumped from (0, 100) to (2, 175) on qunbridge/v1/in/+/+";
            tracing::warn!(target: "rumqttd::router::routing", request_cursor = ?(0, 100), start_cursor = ?(2, 175), error);
            // Not a jump, another target, another level: nothing counted.
            tracing::warn!(target: "rumqttd::router::routing", error = "Failed to read from commitlog");
            tracing::warn!(target: "qunbridge::egress", error);
            tracing::info!(target: "rumqttd::router::routing", error);
        });
        assert_eq!(lost() - before, 75.0);
    }
}
