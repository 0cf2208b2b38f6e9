//! What the relay sent to the `api` account's groups, kept for consumers: a bounded buffer
//! per group (for SSE replay with `Last-Event-ID`) and live broadcast channels (per group for
//! SSE, one for all groups for the WebSocket). A consumer too slow for the buffer loses the
//! oldest messages, and every loss is counted and logged. With a [`FeedLog`] the buffer of a
//! group is loaded from it on first use, so replay works across daemon restarts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;
use tracing::warn;

use super::feed_log::FeedLog;

/// One message as consumers receive it.
#[derive(Debug)]
pub struct FeedEvent {
    /// Position in its group's feed, the SSE event id's sequence part.
    pub seq: u64,
    /// The destination group.
    pub group: String,
    /// The outbound message as JSON, serialized once for every consumer.
    pub json: String,
}

/// The feed of one group.
struct GroupFeed {
    /// Sequence number the next event gets.
    next_seq: u64,
    /// The newest events, at most `capacity`.
    recent: VecDeque<Arc<FeedEvent>>,
    /// Live fan-out to this group's SSE consumers.
    live: broadcast::Sender<Arc<FeedEvent>>,
}

/// A replay plus live subscription, taken atomically so nothing falls between them.
pub struct Subscription {
    /// Buffered events after the consumer's last seen id, oldest first.
    pub replay: Vec<Arc<FeedEvent>>,
    /// Events the consumer asked for that had already left the buffer.
    pub missed: u64,
    /// Live events from now on.
    pub live: broadcast::Receiver<Arc<FeedEvent>>,
}

/// All groups' feeds of one `api` account.
pub struct Feeds {
    /// Per-group state. A std mutex: it is held only for short, non-async bookkeeping.
    groups: Mutex<HashMap<String, GroupFeed>>,
    /// Live fan-out of every group, for WebSocket consumers.
    all: broadcast::Sender<Arc<FeedEvent>>,
    /// Events kept per group, and the capacity of each live channel.
    capacity: usize,
    /// Distinguishes this feed's event ids from another's (an earlier run without a durable
    /// log, or a reset store), so a consumer is never mistaken for one that is up to date.
    epoch: u64,
    /// The durable log and the account it belongs to, when the relay has one.
    log: Option<(String, Arc<dyn FeedLog>)>,
}

impl Feeds {
    /// Empty in-memory feeds keeping `capacity` events per group (at least 1).
    pub fn new(capacity: usize, epoch: u64) -> Feeds {
        let capacity = capacity.max(1);
        let (all, _) = broadcast::channel(capacity);
        Feeds {
            groups: Mutex::new(HashMap::new()),
            all,
            capacity,
            epoch,
            log: None,
        }
    }

    /// Feeds of `account` backed by a durable log (its epoch is the feeds' epoch).
    pub fn durable(capacity: usize, account: &str, log: Arc<dyn FeedLog>) -> Feeds {
        let mut feeds = Feeds::new(capacity, log.epoch());
        feeds.log = Some((account.to_owned(), log));
        feeds
    }

    /// The durable log, if any, and the account it is kept under.
    pub fn log(&self) -> Option<(&str, &Arc<dyn FeedLog>)> {
        self.log
            .as_ref()
            .map(|(account, log)| (account.as_str(), log))
    }

    /// Events kept per group.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A group's feed, created (and loaded from the durable log) on first use.
    fn group<'a>(
        &self,
        groups: &'a mut HashMap<String, GroupFeed>,
        group: &str,
    ) -> &'a mut GroupFeed {
        groups.entry(group.to_owned()).or_insert_with(|| {
            let mut feed = GroupFeed {
                next_seq: 1,
                recent: VecDeque::new(),
                live: broadcast::channel(self.capacity).0,
            };
            if let Some((account, log)) = &self.log {
                match log.recent(account, group, self.capacity) {
                    Ok((events, next_seq)) => {
                        feed.next_seq = next_seq;
                        feed.recent = events
                            .into_iter()
                            .map(|(seq, json)| {
                                Arc::new(FeedEvent {
                                    seq,
                                    group: group.to_owned(),
                                    json,
                                })
                            })
                            .collect();
                    }
                    Err(error) => {
                        warn!(message = "Cannot load a group's feed from the store; replay starts empty.", account = %account, %error);
                    }
                }
            }
            feed
        })
    }

    /// The SSE id of an event: `<epoch>-<seq>`.
    pub fn event_id(&self, event: &FeedEvent) -> String {
        format!("{:x}-{}", self.epoch, event.seq)
    }

    /// The sequence number in a `Last-Event-ID` of this process; `None` for ids of another
    /// run or garbage (the consumer then gets the whole buffer).
    pub fn parse_event_id(&self, id: &str) -> Option<u64> {
        let (epoch, seq) = id.trim().split_once('-')?;
        if u64::from_str_radix(epoch, 16).ok()? != self.epoch {
            return None;
        }
        seq.parse().ok()
    }

    /// Appends a message to a group's feed and fans it out; returns its sequence number.
    /// `seq` is the number the durable log gave it (`None`: the next in memory).
    pub fn push(&self, group: &str, json: String, seq: Option<u64>) -> u64 {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        let feed = self.group(&mut groups, group);
        let seq = seq.unwrap_or(feed.next_seq);
        let event = Arc::new(FeedEvent {
            seq,
            group: group.to_owned(),
            json,
        });
        feed.next_seq = feed.next_seq.max(seq + 1);
        // A group first touched by this push was loaded from the log, this event included.
        let loaded = feed.recent.back().is_some_and(|last| last.seq >= seq);
        if !loaded {
            if feed.recent.len() == self.capacity {
                feed.recent.pop_front();
            }
            feed.recent.push_back(event.clone());
        }
        // Sending fails only when nobody listens, which is fine: the buffer keeps it.
        let _ = feed.live.send(event.clone());
        let _ = self.all.send(event.clone());
        event.seq
    }

    /// Subscribes to one group. A consumer resuming with `last_seen` first gets what came
    /// after it from the buffer; a new consumer gets live events only.
    pub fn subscribe_group(&self, group: &str, last_seen: Option<u64>) -> Subscription {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        let feed = self.group(&mut groups, group);
        let replay: Vec<_> = match last_seen {
            Some(after) => feed
                .recent
                .iter()
                .filter(|event| event.seq > after)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        let first_kept = feed.recent.front().map_or(feed.next_seq, |e| e.seq);
        let missed = match last_seen {
            Some(seen) if seen + 1 < first_kept => first_kept - seen - 1,
            _ => 0,
        };
        Subscription {
            replay,
            missed,
            live: feed.live.subscribe(),
        }
    }

    /// Subscribes to every group, live only.
    pub fn subscribe_all(&self) -> broadcast::Receiver<Arc<FeedEvent>> {
        self.all.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_after_last_event_id_and_count_what_left_the_buffer() {
        let feeds = Feeds::new(3, 7);
        for n in 1..=5 {
            feeds.push("a", format!("m{n}"), None);
        }
        let sub = feeds.subscribe_group("a", Some(1));
        let texts: Vec<_> = sub.replay.iter().map(|e| e.json.as_str()).collect();
        assert_eq!(texts, vec!["m3", "m4", "m5"]);
        assert_eq!(
            sub.missed, 1,
            "m2 was pushed out before the consumer came back"
        );

        let sub = feeds.subscribe_group("a", Some(4));
        assert_eq!(sub.replay.len(), 1);
        assert_eq!(sub.missed, 0);
        assert_eq!(
            feeds.parse_event_id(&feeds.event_id(&sub.replay[0])),
            Some(5)
        );
        assert_eq!(feeds.parse_event_id("8-5"), None, "another run's id");
    }
}
