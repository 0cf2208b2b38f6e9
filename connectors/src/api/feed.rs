//! What the relay sent to the `api` account's groups, kept for consumers: a bounded buffer
//! per group (for SSE replay with `Last-Event-ID`) and live broadcast channels (per group for
//! SSE, one for all groups for the WebSocket). A consumer too slow for the buffer loses the
//! oldest messages, and every loss is counted and logged.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;

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
    /// Distinguishes this process's event ids from an earlier run's, so a consumer that
    /// reconnects after a restart is not mistaken for one that is up to date.
    epoch: u64,
}

impl Feeds {
    /// Empty feeds keeping `capacity` events per group (at least 1).
    pub fn new(capacity: usize, epoch: u64) -> Feeds {
        let capacity = capacity.max(1);
        let (all, _) = broadcast::channel(capacity);
        Feeds {
            groups: Mutex::new(HashMap::new()),
            all,
            capacity,
            epoch,
        }
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
    pub fn push(&self, group: &str, json: String) -> u64 {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        let feed = groups.entry(group.to_owned()).or_insert_with(|| GroupFeed {
            next_seq: 1,
            recent: VecDeque::with_capacity(self.capacity.min(64)),
            live: broadcast::channel(self.capacity).0,
        });
        let event = Arc::new(FeedEvent {
            seq: feed.next_seq,
            group: group.to_owned(),
            json,
        });
        feed.next_seq += 1;
        if feed.recent.len() == self.capacity {
            feed.recent.pop_front();
        }
        feed.recent.push_back(event.clone());
        // Sending fails only when nobody listens, which is fine: the buffer keeps it.
        let _ = feed.live.send(event.clone());
        let _ = self.all.send(event.clone());
        event.seq
    }

    /// Subscribes to one group. A consumer resuming with `last_seen` first gets what came
    /// after it from the buffer; a new consumer gets live events only.
    pub fn subscribe_group(&self, group: &str, last_seen: Option<u64>) -> Subscription {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        let feed = groups.entry(group.to_owned()).or_insert_with(|| GroupFeed {
            next_seq: 1,
            recent: VecDeque::new(),
            live: broadcast::channel(self.capacity).0,
        });
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
            feeds.push("a", format!("m{n}"));
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
