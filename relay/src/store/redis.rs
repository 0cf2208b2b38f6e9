//! The shared store for scale-out (ARCHITECTURE.md §9): the same state as
//! [`super::PersistentStore`] in Redis, so that every relay-core process sees every dedup key
//! and every connector process the send log and the message map.
//!
//! Layout, under a prefix (default `qunbridge:`): `k:<key>` dedup/send-log/echo keys (`SET …
//! PX ttl`), `claim:<key>` short claims that tell two cores racing on one message apart
//! (`SET NX PX` in a script), `mi:<origin>` the origin entry (JSON, `SET NX PX`), `mo:<origin>`
//! its copies (a set), `mc:<copy>` copy → origin, and for the `api` feeds `feed:<account␟group>`
//! (a sorted set by sequence number, trimmed to the kept count), `seq:<feed>` and `fk:<key>`
//! (idempotency). Every key has the same time to live as in the embedded store; a batch is one
//! `MULTI`/`EXEC`, so it is applied whole or not at all. Moderation's shared flood and wave
//! counters use the same prefix (`mod:`, `mf:`, `mw:`; `crate::moderation::shared`).

use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::{AsyncCommands, Script};
use futures_util::future::BoxFuture;
use qunbridge_connectors::api::{Appended, FeedLog, FeedLogError};

use super::held::HeldEntry;
use super::stats::{self, Day, DayCounts, DayRow, StatsDelta, StatsSweep};
use super::{
    Copy, DaySenders, OriginEntry, OutboxEntry, OutboxPut, RelayStore, StoreError, WriteBatch,
    DEDUP_TTL, MAP_TTL,
};

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "qunbridge:";

/// Claims are set when absent or already held by the same message (a redelivery of the
/// claimant itself, possibly to another core).
const CLAIM_SCRIPT: &str = r"
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder and holder ~= ARGV[1] then return 0 end
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
end
return 1
";

/// Appends a feed event unless its idempotency key is there; trims the feed.
const APPEND_SCRIPT: &str = r"
local earlier = redis.call('GET', KEYS[1])
if earlier then return {tonumber(earlier), 0} end
local seq = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[3], seq, seq .. ':' .. ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[2]) + 1))
redis.call('SET', KEYS[1], seq, 'PX', ARGV[3])
return {seq, 1}
";

/// Puts an outbox entry unless its key is in the send log (KEYS[1]) or the outbox hash
/// (KEYS[2]) has it; orders it in KEYS[3] by a counter in KEYS[4].
const OUTBOX_PUT_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], seq, ARGV[1])
return 1
";

/// A Redis error as a store error (the URL, which may hold a password, is never part of it).
fn backend(error: ::redis::RedisError) -> StoreError {
    StoreError::Backend(format!("redis: {error}"))
}

/// Milliseconds of a duration, at least 1 (Redis refuses `PX 0`).
fn millis(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

/// The store.
pub struct RedisStore {
    /// Reconnecting, multiplexed connection for the async paths.
    connection: ConnectionManager,
    /// For the one synchronous read ([`FeedLog::recent`]).
    client: ::redis::Client,
    /// Key prefix.
    prefix: String,
    /// The feeds' epoch, kept in Redis.
    epoch: u64,
    /// The claim script.
    claim: Script,
    /// The append script.
    append: Script,
    /// The outbox put script.
    outbox_put: Script,
}

impl RedisStore {
    /// Connects to `url` (`redis://[:password@]host:port[/db]`).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when Redis cannot be reached.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisStore, StoreError> {
        let client = ::redis::Client::open(url).map_err(backend)?;
        let mut connection = client.get_connection_manager().await.map_err(backend)?;
        let epoch_key = format!("{prefix}epoch");
        let now = qunbridge_connectors::context::now_ms();
        let _: bool = connection.set_nx(&epoch_key, now).await.map_err(backend)?;
        let epoch: u64 = connection.get(&epoch_key).await.map_err(backend)?;
        Ok(RedisStore {
            connection,
            client,
            prefix: prefix.to_owned(),
            epoch,
            claim: Script::new(CLAIM_SCRIPT),
            append: Script::new(APPEND_SCRIPT),
            outbox_put: Script::new(OUTBOX_PUT_SCRIPT),
        })
    }

    /// A prefixed key.
    fn key(&self, space: &str, key: &str) -> String {
        format!("{}{space}:{key}", self.prefix)
    }
}

impl RedisStore {
    /// Adds group-health counts: each day row is a hash of counters (`HINCRBY`, so
    /// processes sharing the store add up), indexed by day in a sorted set; sender digests
    /// are a set per row.
    fn add_stats(&self, pipe: &mut ::redis::Pipeline, deltas: &[StatsDelta]) {
        for delta in deltas {
            let row = stats::row_key(delta.day, &delta.account, &delta.group);
            let counts = &delta.counts;
            if !counts.is_empty() {
                let hash = self.key("sr", &row);
                let mut fields: Vec<(String, u64)> = vec![
                    ("messages".into(), counts.messages),
                    ("relayed_in".into(), counts.relayed_in),
                ];
                for (slot, n) in counts.joins.iter().enumerate() {
                    fields.push((format!("j{slot}"), *n));
                }
                for (slot, n) in counts.leaves.iter().enumerate() {
                    fields.push((format!("l{slot}"), *n));
                }
                for (field, n) in fields.into_iter().filter(|(_, n)| *n > 0) {
                    pipe.hincr(&hash, field, n).ignore();
                }
                if let Some(count) = counts.member_count {
                    pipe.hset(&hash, "member_count", count).ignore();
                    pipe.hset(&hash, "member_count_ms", counts.member_count_ms)
                        .ignore();
                }
                pipe.zadd(self.key("sd", "rows"), &row, delta.day).ignore();
            }
            if !delta.senders.is_empty() {
                let set = self.key("ss", &row);
                pipe.sadd(&set, delta.senders.iter().collect::<Vec<_>>())
                    .ignore();
                pipe.zadd(self.key("sd", "senders"), &row, delta.day)
                    .ignore();
            }
        }
    }

    /// Deletes day rows and sender sets past their age, then the oldest rows (sets) while
    /// more than `max_rows` of either are indexed.
    async fn sweep_stats(&self, sweep: StatsSweep) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        for (index, space, before) in [
            ("rows", "sr", sweep.rows_before),
            ("senders", "ss", sweep.senders_before),
        ] {
            let index = self.key("sd", index);
            let mut old: Vec<String> = connection
                .zrangebyscore(&index, "-inf", format!("({before}"))
                .await
                .map_err(backend)?;
            let indexed: u64 = connection.zcard(&index).await.map_err(backend)?;
            let over = (indexed.saturating_sub(old.len() as u64)).saturating_sub(sweep.max_rows);
            if over > 0 {
                // The index is scored by day: the lowest ranks past the aged-out ones are the
                // oldest days left.
                let start = old.len() as isize;
                let extra: Vec<String> = connection
                    .zrange(&index, start, start + over as isize - 1)
                    .await
                    .map_err(backend)?;
                old.extend(extra);
            }
            if old.is_empty() {
                continue;
            }
            let mut pipe = ::redis::pipe();
            pipe.atomic();
            for row in &old {
                pipe.del(self.key(space, row)).ignore();
                pipe.zrem(&index, row).ignore();
            }
            pipe.query_async::<()>(&mut connection)
                .await
                .map_err(backend)?;
        }
        Ok(())
    }
}

impl RelayStore for RedisStore {
    fn holds_any<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(false);
            }
            let names: Vec<String> = keys.iter().map(|k| self.key("k", k)).collect();
            let mut connection = self.connection.clone();
            let found: u64 = connection.exists(names).await.map_err(backend)?;
            Ok(found > 0)
        })
    }

    fn feed_holds<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let found: u64 = connection
                .exists(self.key("fk", key))
                .await
                .map_err(backend)?;
            Ok(found > 0)
        })
    }

    fn write(&self, batch: WriteBatch) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(());
            }
            let mut pipe = ::redis::pipe();
            pipe.atomic();
            for (key, ttl) in &batch.keys {
                pipe.cmd("SET")
                    .arg(self.key("k", key))
                    .arg(1)
                    .arg("PX")
                    .arg(millis(*ttl))
                    .ignore();
            }
            let map_ttl = millis(MAP_TTL);
            for record in &batch.copies {
                let mut origin = record.origin.clone();
                origin.copies.clear();
                let origin_json = serde_json::to_string(&origin)
                    .map_err(|e| StoreError::Backend(e.to_string()))?;
                pipe.cmd("SET")
                    .arg(self.key("mi", &record.origin_key))
                    .arg(origin_json)
                    .arg("NX")
                    .arg("PX")
                    .arg(map_ttl)
                    .ignore();
                let copies_key = self.key("mo", &record.origin_key);
                for copy in &record.copies {
                    let copy_json = serde_json::to_string(copy)
                        .map_err(|e| StoreError::Backend(e.to_string()))?;
                    pipe.sadd(&copies_key, copy_json).ignore();
                    let copy_key = super::keys::origin(&copy.account, &copy.group, &copy.id);
                    pipe.cmd("SET")
                        .arg(self.key("mc", &copy_key))
                        .arg(&record.origin_key)
                        .arg("PX")
                        .arg(map_ttl)
                        .ignore();
                }
                pipe.cmd("PEXPIRE").arg(&copies_key).arg(map_ttl).ignore();
            }
            for (account, key) in &batch.outbox_done {
                pipe.hdel(self.key("ob", account), key).ignore();
                pipe.zrem(self.key("oo", account), key).ignore();
            }
            for entry in &batch.held {
                pipe.hset(self.key("hd", "held"), &entry.id, entry.encode())
                    .ignore();
            }
            if !batch.held_done.is_empty() {
                pipe.hdel(self.key("hd", "held"), &batch.held_done).ignore();
            }
            self.add_stats(&mut pipe, &batch.stats);
            if let Some(sweep) = batch.stats_sweep {
                self.sweep_stats(sweep).await?;
            }
            let mut connection = self.connection.clone();
            pipe.query_async::<()>(&mut connection)
                .await
                .map_err(backend)
        })
    }

    fn shared_stats_key(
        &self,
        candidate: [u8; 32],
    ) -> BoxFuture<'_, Result<Option<[u8; 32]>, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let name = format!("{}stats_key", self.prefix);
            let _: bool = connection
                .set_nx(&name, candidate.as_slice())
                .await
                .map_err(backend)?;
            let kept: Vec<u8> = connection.get(&name).await.map_err(backend)?;
            let key: [u8; 32] = kept.as_slice().try_into().map_err(|_| {
                StoreError::Backend(format!("`{name}` does not hold a 32-byte key"))
            })?;
            Ok(Some(key))
        })
    }

    fn stats_rows(&self, from: Day, to: Day) -> BoxFuture<'_, Result<Vec<DayRow>, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let names: Vec<String> = connection
                .zrangebyscore(self.key("sd", "rows"), from, to)
                .await
                .map_err(backend)?;
            let mut rows = Vec::with_capacity(names.len());
            for name in names {
                let Some((day, account, group)) = stats::parse_row_key(&name) else {
                    continue;
                };
                let fields: std::collections::HashMap<String, u64> = connection
                    .hgetall(self.key("sr", &name))
                    .await
                    .map_err(backend)?;
                let field = |name: &str| fields.get(name).copied().unwrap_or(0);
                let mut counts = DayCounts {
                    messages: field("messages"),
                    relayed_in: field("relayed_in"),
                    member_count: fields.get("member_count").copied(),
                    member_count_ms: field("member_count_ms"),
                    ..DayCounts::default()
                };
                for slot in 0..counts.joins.len() {
                    counts.joins[slot] = field(&format!("j{slot}"));
                    counts.leaves[slot] = field(&format!("l{slot}"));
                }
                rows.push(DayRow {
                    account: account.to_owned(),
                    group: group.to_owned(),
                    day,
                    counts,
                });
            }
            rows.sort_by_key(|row| row.day);
            Ok(rows)
        })
    }

    fn stats_senders<'a>(
        &'a self,
        account: &'a str,
        group: &'a str,
        from: Day,
        to: Day,
    ) -> BoxFuture<'a, Result<DaySenders, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let mut days = Vec::new();
            for day in from..=to {
                let digests: Vec<String> = connection
                    .smembers(self.key("ss", &stats::row_key(day, account, group)))
                    .await
                    .map_err(backend)?;
                if !digests.is_empty() {
                    days.push((day, digests));
                }
            }
            Ok(days)
        })
    }

    fn origin<'a>(
        &'a self,
        origin_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<OriginEntry>, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let (origin, copies): (Option<String>, Vec<String>) = ::redis::pipe()
                .get(self.key("mi", origin_key))
                .smembers(self.key("mo", origin_key))
                .query_async(&mut connection)
                .await
                .map_err(backend)?;
            let Some(mut entry) =
                origin.and_then(|json| serde_json::from_str::<OriginEntry>(&json).ok())
            else {
                return Ok(None);
            };
            let mut copies: Vec<Copy> = copies
                .iter()
                .filter_map(|json| serde_json::from_str(json).ok())
                .collect();
            copies
                .sort_by(|a, b| (&a.account, &a.group, &a.id).cmp(&(&b.account, &b.group, &b.id)));
            entry.copies = copies;
            Ok(Some(entry))
        })
    }

    fn origin_of_copy<'a>(
        &'a self,
        copy_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            connection
                .get(self.key("mc", copy_key))
                .await
                .map_err(backend)
        })
    }

    fn outbox_put(&self, account: &str, entry: OutboxEntry) -> OutboxPut {
        let mut connection = self.connection.clone();
        let script = self.outbox_put.clone();
        let keys = [
            self.key("k", &entry.key),
            self.key("ob", account),
            self.key("oo", account),
            self.key("os", account),
        ];
        Box::pin(async move {
            let mut invocation = script.prepare_invoke();
            for key in keys {
                invocation.key(key);
            }
            invocation.arg(&entry.key).arg(entry.encode());
            let added: u64 = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(backend)?;
            Ok(added == 1)
        })
    }

    fn held(&self) -> BoxFuture<'_, Result<Vec<HeldEntry>, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let values: Vec<Vec<u8>> = connection
                .hvals(self.key("hd", "held"))
                .await
                .map_err(backend)?;
            let mut entries: Vec<HeldEntry> = values
                .iter()
                .filter_map(|bytes| HeldEntry::decode(bytes))
                .collect();
            super::held::oldest_first(&mut entries);
            Ok(entries)
        })
    }

    fn outbox<'a>(
        &'a self,
        account: &'a str,
    ) -> BoxFuture<'a, Result<Vec<OutboxEntry>, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let order: Vec<String> = connection
                .zrange(self.key("oo", account), 0, -1)
                .await
                .map_err(backend)?;
            if order.is_empty() {
                return Ok(Vec::new());
            }
            let values: Vec<Option<Vec<u8>>> = ::redis::cmd("HMGET")
                .arg(self.key("ob", account))
                .arg(&order)
                .query_async(&mut connection)
                .await
                .map_err(backend)?;
            Ok(values
                .into_iter()
                .flatten()
                .filter_map(|bytes| OutboxEntry::decode(&bytes))
                .collect())
        })
    }

    fn claim<'a>(
        &'a self,
        keys: &'a [String],
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(true);
            }
            let mut invocation = self.claim.prepare_invoke();
            for key in keys {
                invocation.key(self.key("claim", key));
            }
            invocation.arg(holder).arg(millis(ttl));
            let mut connection = self.connection.clone();
            let granted: i64 = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(backend)?;
            Ok(granted == 1)
        })
    }
}

impl FeedLog for RedisStore {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn recent(
        &self,
        account: &str,
        group: &str,
        limit: usize,
    ) -> Result<(Vec<(u64, String)>, u64), FeedLogError> {
        let feed = format!("{account}\u{1f}{group}");
        let read = || -> Result<(Vec<(u64, String)>, u64), ::redis::RedisError> {
            let mut connection = self.client.get_connection()?;
            let last: Option<u64> =
                ::redis::Commands::get(&mut connection, self.key("seq", &feed))?;
            if limit == 0 {
                return Ok((Vec::new(), last.unwrap_or(0) + 1));
            }
            let members: Vec<String> = ::redis::Commands::zrange(
                &mut connection,
                self.key("feed", &feed),
                -(limit as isize),
                -1,
            )?;
            let events = members
                .into_iter()
                .filter_map(|member| {
                    let (seq, json) = member.split_once(':')?;
                    Some((seq.parse().ok()?, json.to_owned()))
                })
                .collect();
            Ok((events, last.unwrap_or(0) + 1))
        };
        read().map_err(|error| FeedLogError(format!("redis: {error}")))
    }

    fn append(
        &self,
        account: String,
        group: String,
        key: String,
        json: String,
        keep: usize,
    ) -> BoxFuture<'static, Result<Appended, FeedLogError>> {
        let feed = format!("{account}\u{1f}{group}");
        let mut connection = self.connection.clone();
        let script = self.append.clone();
        let keys = [
            self.key("fk", &key),
            self.key("seq", &feed),
            self.key("feed", &feed),
        ];
        Box::pin(async move {
            let mut invocation = script.prepare_invoke();
            for key in keys {
                invocation.key(key);
            }
            let (seq, fresh): (u64, i64) = invocation
                .arg(json)
                .arg(keep.max(1))
                .arg(millis(DEDUP_TTL))
                .invoke_async(&mut connection)
                .await
                .map_err(|error| FeedLogError(format!("redis: {error}")))?;
            Ok(Appended {
                seq,
                fresh: fresh == 1,
            })
        })
    }
}
