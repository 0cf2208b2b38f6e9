//! Flood and wave counters shared by the relay cores of a scaled-out deployment (issue 17,
//! ARCHITECTURE.md §9): with `[store] redis`, every core counts in Redis, so a member's flood
//! limit and a wave's thresholds hold in total, not once per core.
//!
//! # What is counted, and how
//!
//! Two Lua scripts, each run atomically by Redis on its own clock (`TIME`, so the cores'
//! clocks may disagree), keep the semantics of the in-memory [`FloodLimiter`] and
//! [`WaveDetector`]:
//!
//! - **flood** ([`FLOOD_SCRIPT`]): per (account, group, member) a hash with the GCRA's
//!   theoretical arrival time (governor's algorithm, the same interval and burst tolerance as
//!   [`Limit::gcra_quota`]), the times of the messages let through in the rolling window
//!   ([`Limit::rolling_window`], at most its cap) and whether the member is over the limit. A
//!   message over the limit uses nothing up; only the first one over since the member was
//!   last within it is `first`, whichever core judges it, so a flood's start is logged once in
//!   total.
//! - **wave** ([`WAVE_SCRIPT`]): per fingerprint a sorted set of the groups and one of the
//!   members it was seen from (scored by the time last seen, trimmed to the window, capped at
//!   the threshold: more is never needed to tell that it was reached), per member a short list
//!   of their sightings (the repeats, and the platform time that tells another bot account's
//!   report of one message from a repeat), and a marker that exists while the fingerprint is a
//!   wave: set by the sighting that reaches a threshold (so the start is seen by one core, once)
//!   and kept for a window after every later sighting, so the wave lasts while copies keep
//!   coming. The counts a wave's start reports are capped at the thresholds, and `repeats` is
//!   the starting member's.
//!
//! # Keys
//!
//! Under the store's prefix: `mod:key` (the hashing key, below), `mf:<rate>:<member>` (flood),
//! `mw:<window and thresholds>:<fingerprint>:{w,g,s,r:<member>}` (waves). The settings are part
//! of the names, so a reload that changes them counts afresh (as the in-memory counters do) and
//! one that keeps them keeps the counts. Every key expires a window after its last update;
//! sets and lists are capped; nothing readable is stored: ids and fingerprints are 64-bit
//! HMAC-SHA256 digests under a random key kept in Redis (`SET NX`, the same for every
//! process), and groups in no link leave nothing but these counters.
//!
//! # When Redis fails
//!
//! Judging never waits for Redis longer than [`ANSWER_WITHIN`] and never fails a message: the
//! caller passes the verdicts of its own in-memory counters (which see every message the
//! process judges), and those stand when Redis does not answer. After a failure Redis is not
//! asked for [`RETRY_AFTER`], so an outage costs the relay one timeout per period, not one per
//! message. Each message judged so counts in `qunbridge_moderation_shared_fallbacks_total`;
//! a warning is logged at the first failure and at most once per [`WARN_EVERY`] after, and a
//! line when Redis answers again. While it lasts, limits hold per core, as without Redis.
//!
//! [`FloodLimiter`]: super::flood::FloodLimiter
//! [`WaveDetector`]: super::wave::WaveDetector
//! [`Limit::gcra_quota`]: crate::policy::pacing::Limit::gcra_quota
//! [`Limit::rolling_window`]: crate::policy::pacing::Limit::rolling_window

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{AsyncCommands, Script};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::OnceCell;
use tracing::{info, warn};

use super::fingerprint::is_wave_candidate;
use super::flood::FloodVerdict;
use super::wave::{WaveSpec, WaveVerdict};
use crate::metrics::MODERATION_SHARED_FALLBACKS;
use crate::policy::moderation::FloodConfig;

/// The longest a judgement waits for Redis before the process's own counters decide.
pub const ANSWER_WITHIN: Duration = Duration::from_millis(200);
/// How long Redis is not asked after it failed (the process's own counters decide meanwhile).
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
/// At most one warning about failing shared counters per this period.
pub const WARN_EVERY: Duration = Duration::from_secs(60);

/// Sightings of one fingerprint by one member kept at least (more when `repeats` is higher):
/// enough to tell another bot account's report of a message from a repeat.
const FEWEST_REPORTS_KEPT: u32 = 4;

/// Per-member flood control. `KEYS[1]`: the member's hash. `ARGV`: the GCRA's emission
/// interval and burst tolerance, the rolling window (all in microseconds), the messages
/// allowed per window, and the key's time to live (ms). Returns 0 (allowed), 1 (over, the
/// first since within) or 2 (over again). Times are Redis's own (`TIME`), formatted without
/// exponents (Lua 5.1 prints 16-digit numbers as `1.7e+15`).
pub const FLOOD_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval, tau = tonumber(ARGV[1]), tonumber(ARGV[2])
local window, cap, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local state = redis.call('HMGET', KEYS[1], 't', 'l', 'o')
local tat = tonumber(state[1]) or now
local allowed = {}
if state[2] then
  for at in string.gmatch(state[2], '%d+') do
    if now - tonumber(at) < window then allowed[#allowed + 1] = at end
  end
end
if #allowed < cap and now >= tat - tau then
  allowed[#allowed + 1] = string.format('%.0f', now)
  redis.call('HSET', KEYS[1], 't', string.format('%.0f', math.max(tat, now) + interval),
    'l', table.concat(allowed, ','), 'o', '0')
  redis.call('PEXPIRE', KEYS[1], ttl)
  return 0
end
local first = state[3] ~= '1'
redis.call('HSET', KEYS[1], 'o', '1')
redis.call('PEXPIRE', KEYS[1], ttl)
if first then return 1 end
return 2
";

/// One sighting of a fingerprint. `KEYS`: the wave marker, the groups' sorted set, the
/// members' sorted set, this member's sightings. `ARGV`: the window (ms), the group's and the
/// member's hashes, the platform time in seconds (`-` for none), the groups, senders and
/// repeats thresholds (0: off), and how many of one member's sightings to keep. Returns
/// `{wave, started, groups, senders, repeats}` (wave and started 1 or 0).
pub const WAVE_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local window = tonumber(ARGV[1])
local horizon = now - window
local group, member, said = ARGV[2], ARGV[3], tonumber(ARGV[4])
local in_wave = redis.call('EXISTS', KEYS[1]) == 1
local repeats, second = 0, false
for _, entry in ipairs(redis.call('LRANGE', KEYS[4], 0, -1)) do
  local at, at_said, at_group = string.match(entry, '^(%d+) (%S+) (%S+)$')
  if at and tonumber(at) > horizon then
    repeats = repeats + 1
    local earlier = tonumber(at_said)
    if said and earlier and at_group == group and math.abs(said - earlier) <= 1 then
      second = true
    end
  end
end
if not second then
  repeats = repeats + 1
  redis.call('LPUSH', KEYS[4], string.format('%.0f', now) .. ' ' .. ARGV[4] .. ' ' .. group)
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[8]) - 1)
  redis.call('PEXPIRE', KEYS[4], window)
end
local function distinct(key, value, threshold)
  if threshold <= 0 then return 0 end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', horizon)
  if not second then
    redis.call('ZADD', key, now, value)
    redis.call('ZREMRANGEBYRANK', key, 0, -(threshold + 1))
    redis.call('PEXPIRE', key, window)
  end
  return redis.call('ZCARD', key)
end
local groups_at, senders_at, repeats_at = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local groups = distinct(KEYS[2], group, groups_at)
local senders = distinct(KEYS[3], member, senders_at)
local started = 0
if not in_wave and not second then
  if (groups_at > 0 and groups >= groups_at) or (senders_at > 0 and senders >= senders_at)
    or (repeats_at > 0 and repeats >= repeats_at) then
    started = 1
  end
end
if in_wave or started == 1 then
  redis.call('SET', KEYS[1], '1', 'PX', window)
  return {1, started, groups, senders, repeats}
end
return {0, 0, groups, senders, repeats}
";

/// Why the shared counters gave no verdict.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SharedError {
    /// The URL is not one Redis accepts (config validation catches this first).
    #[error("shared moderation counters: the Redis URL is not valid: {0}")]
    Url(String),
    /// Redis answered with an error, or the connection failed.
    #[error("shared moderation counters: redis: {0}")]
    Redis(String),
    /// Redis did not answer within [`ANSWER_WITHIN`].
    #[error("shared moderation counters: Redis did not answer within {ANSWER_WITHIN:?}")]
    TimedOut,
    /// The hashing key Redis keeps is not a 32-byte key.
    #[error("shared moderation counters: `{0}` does not hold a 32-byte key")]
    BadKey(String),
}

/// A Redis error as a [`SharedError`] (the URL, which may hold a password, is never part of
/// it).
fn redis_error(error: ::redis::RedisError) -> SharedError {
    SharedError::Redis(error.to_string())
}

/// Whose messages a flood count is of.
#[derive(Debug, Clone, Copy)]
pub struct FloodKey<'a> {
    /// The bot account that received the message.
    pub account: &'a str,
    /// The group it was said in.
    pub group: &'a str,
    /// The member who said it.
    pub sender: &'a str,
}

/// One sighting of a text, as [`WaveDetector::sight`](super::wave::WaveDetector::sight)
/// takes it.
#[derive(Debug, Clone, Copy)]
pub struct Sighting<'a> {
    /// The text's fingerprint.
    pub fingerprint: &'a str,
    /// Whose group id `group` is: the platform, or the account for groups of one account.
    pub scope: &'a str,
    /// The group it was said in.
    pub group: &'a str,
    /// The member who said it.
    pub sender: &'a str,
    /// The platform's time of the message (ms), when a second bot account may report it.
    pub said_ms: Option<u64>,
}

/// What the shared counters are asked about one message: each part only when configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Question<'a> {
    /// Flood control: the limit and whose messages.
    pub flood: Option<(&'a FloodConfig, FloodKey<'a>)>,
    /// Wave detection: the spec and the sighting.
    pub wave: Option<(&'a WaveSpec, Sighting<'a>)>,
}

/// The verdicts on one message; `None` where that judge is not configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verdicts {
    /// Flood control's.
    pub flood: Option<FloodVerdict>,
    /// Wave detection's.
    pub wave: Option<WaveVerdict>,
}

/// How Redis has been answering, for the back-off and the rate-limited warning.
#[derive(Debug, Default)]
struct Outage {
    /// Redis is not asked before this, after a failure.
    retry_at: Option<Instant>,
    /// When the last warning was logged.
    warned_at: Option<Instant>,
    /// Messages judged with the process's own counters since the last warning.
    unshared: u64,
    /// True from a failure until Redis answers again, for the line that says so.
    failing: bool,
}

/// Flood and wave counters in Redis, shared by every process on the same store. Thread-safe;
/// connects lazily, at the first judgement, and reconnects by itself.
pub struct SharedCounters {
    /// Reconnecting, multiplexed connection of its own, so that a large store batch never
    /// queues ahead of a judgement.
    connection: ConnectionManager,
    /// The store's key prefix.
    prefix: String,
    /// The hashing key, keyed once (read from Redis at the first judgement, made there if
    /// absent): every process must hash an id alike.
    mac: OnceCell<Hmac<Sha256>>,
    /// [`FLOOD_SCRIPT`].
    flood: Script,
    /// [`WAVE_SCRIPT`].
    wave: Script,
    /// Back-off and warnings while Redis fails.
    outage: Mutex<Outage>,
}

impl std::fmt::Debug for SharedCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCounters")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl SharedCounters {
    /// Counters in the Redis at `url` under `prefix` (the store's). Nothing is connected yet;
    /// must be called within a Tokio runtime.
    ///
    /// # Errors
    /// [`SharedError::Url`] when `url` is not a Redis URL.
    pub fn open(url: &str, prefix: &str) -> Result<SharedCounters, SharedError> {
        let client = ::redis::Client::open(url).map_err(|e| SharedError::Url(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(ANSWER_WITHIN))
            .set_connection_timeout(Some(ANSWER_WITHIN));
        let connection = client
            .get_connection_manager_lazy(config)
            .map_err(redis_error)?;
        // Shown at 0 from the start, so the first fallback is an increase an alert sees.
        metrics::counter!(MODERATION_SHARED_FALLBACKS).increment(0);
        Ok(SharedCounters {
            connection,
            prefix: prefix.to_owned(),
            mac: OnceCell::new(),
            flood: Script::new(FLOOD_SCRIPT),
            wave: Script::new(WAVE_SCRIPT),
            outage: Mutex::new(Outage::default()),
        })
    }

    /// Judges one message with the shared counters, each part that `question` asks; where
    /// Redis fails (or is backing off after a failure) the verdict of the process's own
    /// counters in `here` stands. Never waits longer than [`ANSWER_WITHIN`].
    pub async fn judge(&self, question: &Question<'_>, here: Verdicts) -> Verdicts {
        if question.flood.is_none() && question.wave.is_none() {
            return here;
        }
        if !self.may_ask(Instant::now()) {
            self.judged_here(None);
            return here;
        }
        let flood = async {
            match question.flood {
                Some((config, key)) => Some(self.flood(config, key).await),
                None => None,
            }
        };
        let wave = async {
            match question.wave {
                Some((spec, sighting)) => Some(self.sight(spec, sighting).await),
                None => None,
            }
        };
        let (flood, wave) = tokio::join!(flood, wave);
        let mut verdicts = here;
        let mut failure = None;
        match flood {
            Some(Ok(verdict)) => verdicts.flood = Some(verdict),
            Some(Err(error)) => failure = Some(error),
            None => {}
        }
        match wave {
            Some(Ok(verdict)) => verdicts.wave = Some(verdict),
            Some(Err(error)) => failure = Some(error),
            None => {}
        }
        match failure {
            Some(error) => {
                // One message, one verdict from one set of counters.
                self.judged_here(Some(error));
                here
            }
            None => {
                self.answered();
                verdicts
            }
        }
    }

    /// The shared flood count's verdict on one message of `key` under `config`, counted when
    /// it is allowed.
    ///
    /// # Errors
    /// [`SharedError`] when Redis fails or does not answer within [`ANSWER_WITHIN`].
    pub async fn flood(
        &self,
        config: &FloodConfig,
        key: FloodKey<'_>,
    ) -> Result<FloodVerdict, SharedError> {
        let limit = config.limit();
        let quota = limit.gcra_quota();
        let rolling = limit.rolling_window();
        let interval = micros(quota.replenish_interval());
        let tau = interval.saturating_mul(u64::from(quota.burst_size().get() - 1));
        let asked = async {
            let mac = self.mac().await?;
            let name = format!(
                "{}mf:{}-{}-{}:{}",
                self.prefix,
                config.per_sender.count,
                config.per_sender.per.as_millis(),
                config.burst,
                digest(mac, b'k', &[key.account, key.group, key.sender])
            );
            let mut invocation = self.flood.prepare_invoke();
            invocation
                .key(name)
                .arg(interval)
                .arg(tau)
                .arg(micros(rolling.window))
                .arg(rolling.cap)
                .arg(millis(rolling.window));
            let mut connection = self.connection.clone();
            invocation
                .invoke_async::<i64>(&mut connection)
                .await
                .map_err(redis_error)
        };
        Ok(match within(asked).await? {
            0 => FloodVerdict::Allowed,
            1 => FloodVerdict::Over { first: true },
            _ => FloodVerdict::Over { first: false },
        })
    }

    /// The shared wave count's verdict on one sighting under `spec`, counted (unless it is
    /// another bot account's report of a message counted already). A fingerprint too short to
    /// be a wave is [`WaveVerdict::Clean`] without asking Redis.
    ///
    /// # Errors
    /// [`SharedError`] when Redis fails or does not answer within [`ANSWER_WITHIN`].
    pub async fn sight(
        &self,
        spec: &WaveSpec,
        sighting: Sighting<'_>,
    ) -> Result<WaveVerdict, SharedError> {
        if !is_wave_candidate(sighting.fingerprint, spec.min_chars) {
            return Ok(WaveVerdict::Clean);
        }
        let asked = async {
            let mac = self.mac().await?;
            let base = self.wave_base(mac, spec, sighting.fingerprint);
            let sender = digest(mac, b's', &[sighting.sender]);
            let mut invocation = self.wave.prepare_invoke();
            invocation
                .key(format!("{base}:w"))
                .key(format!("{base}:g"))
                .key(format!("{base}:s"))
                .key(format!("{base}:r:{sender}"))
                .arg(millis(spec.window))
                .arg(digest(mac, b'g', &[sighting.scope, sighting.group]))
                .arg(sender)
                .arg(
                    sighting
                        .said_ms
                        .map_or_else(|| "-".to_owned(), |ms| (ms / 1000).to_string()),
                )
                .arg(spec.groups)
                .arg(spec.senders)
                .arg(spec.repeats)
                .arg(spec.repeats.max(FEWEST_REPORTS_KEPT));
            let mut connection = self.connection.clone();
            invocation
                .invoke_async::<(i64, i64, u32, u32, u32)>(&mut connection)
                .await
                .map_err(redis_error)
        };
        let (wave, started, groups, senders, repeats) = within(asked).await?;
        Ok(if wave == 1 {
            WaveVerdict::Wave {
                started: started == 1,
                groups,
                senders,
                repeats,
            }
        } else {
            WaveVerdict::Clean
        })
    }

    /// True when `fingerprint` is part of a wave now, as every core counts it (its marker
    /// exists: set when the wave started, renewed by every copy for a window). Counts
    /// nothing.
    ///
    /// # Errors
    /// [`SharedError`] when Redis fails or does not answer within [`ANSWER_WITHIN`].
    pub async fn in_wave(&self, spec: &WaveSpec, fingerprint: &str) -> Result<bool, SharedError> {
        if !is_wave_candidate(fingerprint, spec.min_chars) {
            return Ok(false);
        }
        let asked = async {
            let mac = self.mac().await?;
            let marker = format!("{}:w", self.wave_base(mac, spec, fingerprint));
            let mut connection = self.connection.clone();
            connection
                .exists::<_, bool>(marker)
                .await
                .map_err(redis_error)
        };
        within(asked).await
    }

    /// The prefix of a fingerprint's wave keys under `spec` (the settings are part of it, so
    /// a reload that changes them starts counting afresh).
    fn wave_base(&self, mac: &Hmac<Sha256>, spec: &WaveSpec, fingerprint: &str) -> String {
        format!(
            "{}mw:{}-{}-{}-{}:{}",
            self.prefix,
            spec.window.as_millis(),
            spec.groups,
            spec.senders,
            spec.repeats,
            digest(mac, b'f', &[fingerprint])
        )
    }

    /// The hashing key, read from Redis (made there first if absent) at the first use.
    async fn mac(&self) -> Result<&Hmac<Sha256>, SharedError> {
        self.mac
            .get_or_try_init(|| async {
                let name = format!("{}mod:key", self.prefix);
                let mut connection = self.connection.clone();
                let candidate: [u8; 32] = rand::random();
                let _: bool = connection
                    .set_nx(&name, candidate.as_slice())
                    .await
                    .map_err(redis_error)?;
                let kept: Vec<u8> = connection.get(&name).await.map_err(redis_error)?;
                if kept.len() != 32 {
                    return Err(SharedError::BadKey(name));
                }
                <Hmac<Sha256> as Mac>::new_from_slice(&kept).map_err(|_| SharedError::BadKey(name))
            })
            .await
    }

    /// False while backing off after a failure.
    fn may_ask(&self, now: Instant) -> bool {
        self.outage().retry_at.is_none_or(|at| now >= at)
    }

    /// Counts a message judged with the process's own counters; after a failure (`Some`),
    /// backs off and warns, at most once per [`WARN_EVERY`].
    fn judged_here(&self, failure: Option<SharedError>) {
        metrics::counter!(MODERATION_SHARED_FALLBACKS).increment(1);
        let now = Instant::now();
        let mut outage = self.outage();
        outage.unshared += 1;
        let Some(error) = failure else {
            return;
        };
        outage.retry_at = Some(now + RETRY_AFTER);
        outage.failing = true;
        let due = outage
            .warned_at
            .is_none_or(|at| now.duration_since(at) >= WARN_EVERY);
        if due {
            warn!(
                message = "Shared moderation counters in Redis failed; judging floods and waves with this process's own counters (limits hold per core) until Redis answers.",
                %error,
                judged_here = outage.unshared,
                retry_in = ?RETRY_AFTER,
            );
            outage.warned_at = Some(now);
            outage.unshared = 0;
        }
    }

    /// Notes that Redis answered; says so once after a failure.
    fn answered(&self) {
        let mut outage = self.outage();
        if outage.failing {
            info!(
                message = "Shared moderation counters in Redis answer again; floods and waves are counted across cores.",
                judged_here = outage.unshared
            );
            *outage = Outage {
                warned_at: outage.warned_at,
                ..Outage::default()
            };
        }
    }

    /// The outage state, recovering from a poisoned lock (every update is a few assignments).
    fn outage(&self) -> std::sync::MutexGuard<'_, Outage> {
        self.outage.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Waits for `asked` at most [`ANSWER_WITHIN`].
async fn within<T>(
    asked: impl std::future::Future<Output = Result<T, SharedError>>,
) -> Result<T, SharedError> {
    tokio::time::timeout(ANSWER_WITHIN, asked)
        .await
        .unwrap_or(Err(SharedError::TimedOut))
}

/// A 64-bit digest (16 hex digits) of `parts` under the deployment's key, `domain` keeping
/// the digests of different kinds of ids apart. Each part is length-prefixed, so no two
/// lists of parts digest alike by concatenation.
fn digest(mac: &Hmac<Sha256>, domain: u8, parts: &[&str]) -> String {
    let mut mac = mac.clone();
    mac.update(&[domain]);
    for part in parts {
        mac.update(&(part.len() as u64).to_le_bytes());
        mac.update(part.as_bytes());
    }
    let bytes = mac.finalize().into_bytes();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[..8]);
    format!("{:016x}", u64::from_be_bytes(first))
}

/// Microseconds of a duration, at least 1.
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Milliseconds of a duration, at least 1 (Redis refuses `PX 0`), rounded up.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_length_prefixed_and_kept_apart_by_domain() {
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&[7u8; 32]).expect("any key length");
        let ab_c = digest(&mac, b'g', &["ab", "c"]);
        assert_eq!(ab_c.len(), 16);
        assert_ne!(ab_c, digest(&mac, b'g', &["a", "bc"]));
        assert_ne!(ab_c, digest(&mac, b's', &["ab", "c"]));
        assert_eq!(ab_c, digest(&mac, b'g', &["ab", "c"]), "stable");
        let other = <Hmac<Sha256> as Mac>::new_from_slice(&[8u8; 32]).expect("any key length");
        assert_ne!(ab_c, digest(&other, b'g', &["ab", "c"]), "keyed");
    }

    #[test]
    fn durations_become_whole_positive_units() {
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_micros(1_500)), 2);
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(micros(Duration::from_millis(2)), 2_000);
        assert_eq!(micros(Duration::ZERO), 1);
    }

    #[tokio::test]
    async fn backing_off_after_a_failure_judges_here_without_asking() {
        // Nothing listens on port 1: the first judgement fails fast, the next is not asked.
        let shared = SharedCounters::open("redis://127.0.0.1:1/", "qb:").expect("a valid URL");
        let spec = FloodConfig {
            per_sender: crate::policy::Rate::parse("1/min").expect("a rate"),
            burst: 1,
            action: crate::policy::moderation::ModerationAction::Drop,
        };
        let question = Question {
            flood: Some((
                &spec,
                FloodKey {
                    account: "qq",
                    group: "1",
                    sender: "u",
                },
            )),
            wave: None,
        };
        let here = Verdicts {
            flood: Some(FloodVerdict::Over { first: true }),
            wave: None,
        };
        let started = Instant::now();
        assert_eq!(shared.judge(&question, here).await, here);
        assert!(started.elapsed() < ANSWER_WITHIN + Duration::from_millis(500));
        assert!(!shared.may_ask(Instant::now()), "backing off");
        let again = Instant::now();
        assert_eq!(shared.judge(&question, here).await, here);
        assert!(
            again.elapsed() < Duration::from_millis(20),
            "not asked again"
        );
    }
}
