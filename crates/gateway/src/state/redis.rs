//! Counters in Redis, shared by every replica: one Lua script checks and
//! charges all of a request's counters in one round trip (Redis runs a
//! script atomically), another settles them.
//!
//! A counter is a hash `tollgate:{<gateway>}:<counter>` of slot → amount,
//! expiring when its newest slot leaves the window. The `{<gateway>}` hash
//! tag puts all of a gateway's keys in one cluster slot, which multi-key
//! scripts need. Each worker thread keeps its own multiplexed connection
//! (the data plane runs a runtime per thread).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, Script};
use tollgate_config::snapshot::RedisConfig;

use super::throttle::Take;
use super::{Charge, Check, Span, Verdict, retry_after_ms};

/// KEYS: the counters, then the rate-limit buckets. ARGV: `now`, the number
/// of counters, then per counter `slot`, `oldest live slot`, `amount`,
/// `limit`, `enforce` (1/0), `ttl ms`, then per bucket `per second`,
/// `capacity`, `amount`, `ttl ms`. Returns `{1, used...}` when charged,
/// `{0, index, used, slot, value, ...}` (the failing counter's live slots)
/// when a counter refuses, `{2, index, wait ms}` when a bucket does. Nothing
/// is written unless everything fits.
///
/// Buckets refill by Redis's own clock (`TIME`), so replicas with skewed
/// clocks still drain one bucket at one rate. A bucket is a hash of level
/// `l` and time `t` (ms).
const RESERVE: &str = r#"
local n = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local levels = {}
local wait, waiting = 0, 0
for b = 1, #KEYS - n do
  local a = 2 + n * 6 + (b - 1) * 4
  local rate = tonumber(ARGV[a + 1])
  local capacity = tonumber(ARGV[a + 2])
  local state = redis.call('HMGET', KEYS[n + b], 'l', 't')
  local level = capacity
  if state[1] then
    level = math.min(capacity, tonumber(state[1]) + math.max(0, now - tonumber(state[2])) / 1000 * rate)
  end
  levels[b] = level
  local need = math.min(tonumber(ARGV[a + 3]), capacity)
  if level < need then
    local ms = math.max(1, math.ceil((need - level) / rate * 1000))
    if ms > wait then wait, waiting = ms, b - 1 end
  end
end
if wait > 0 then return {2, waiting, wait} end
local used = {}
for i = 1, n do
  local a = 2 + (i - 1) * 6
  local oldest = tonumber(ARGV[a + 2])
  local amount = tonumber(ARGV[a + 3])
  local limit = tonumber(ARGV[a + 4])
  local all = redis.call('HGETALL', KEYS[i])
  local sum = 0
  local live = {}
  local stale = {}
  for j = 1, #all, 2 do
    local slot = tonumber(all[j])
    local value = tonumber(all[j + 1])
    if slot >= oldest then
      sum = sum + value
      live[#live + 1] = slot
      live[#live + 1] = value
    else
      stale[#stale + 1] = all[j]
    end
  end
  if #stale > 0 then redis.call('HDEL', KEYS[i], unpack(stale)) end
  if ARGV[a + 5] == '1' and sum + amount > limit then
    local out = {0, i - 1, sum}
    for k = 1, #live do out[#out + 1] = live[k] end
    return out
  end
  used[i] = sum
end
local out = {1}
for i = 1, n do
  local a = 2 + (i - 1) * 6
  redis.call('HINCRBY', KEYS[i], ARGV[a + 1], ARGV[a + 3])
  redis.call('PEXPIRE', KEYS[i], ARGV[a + 6])
  out[#out + 1] = used[i] + tonumber(ARGV[a + 3])
end
for b = 1, #KEYS - n do
  local a = 2 + n * 6 + (b - 1) * 4
  redis.call('HSET', KEYS[n + b], 'l', tostring(levels[b] - tonumber(ARGV[a + 3])), 't', now)
  redis.call('PEXPIRE', KEYS[n + b], ARGV[a + 4])
end
return out
"#;

/// KEYS: the counters charged, then token buckets. ARGV: the number of
/// counters, then per counter `slot`, `delta` (actual minus charged), then
/// per bucket `per second`, `capacity`, `give back` (estimate minus
/// actual, may be negative). A slot or bucket already expired is left
/// alone; no counter goes below 0, no bucket above its capacity.
const SETTLE: &str = r#"
local n = tonumber(ARGV[1])
for i = 1, n do
  local slot = ARGV[i * 2]
  if redis.call('HEXISTS', KEYS[i], slot) == 1 then
    local after = redis.call('HINCRBY', KEYS[i], slot, ARGV[i * 2 + 1])
    if after < 0 then redis.call('HSET', KEYS[i], slot, 0) end
  end
end
if #KEYS > n then
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  for b = 1, #KEYS - n do
    local a = 1 + n * 2 + (b - 1) * 3
    local state = redis.call('HMGET', KEYS[n + b], 'l', 't')
    if state[1] then
      local rate = tonumber(ARGV[a + 1])
      local capacity = tonumber(ARGV[a + 2])
      local level = tonumber(state[1]) + math.max(0, now - tonumber(state[2])) / 1000 * rate
      level = math.min(capacity, level + tonumber(ARGV[a + 3]))
      redis.call('HSET', KEYS[n + b], 'l', tostring(level), 't', now)
    end
  end
end
return 1
"#;

static RESERVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RESERVE));
static SETTLE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SETTLE));

/// Keys outlive their window by this much, so a late settle still finds them.
const TTL_GRACE_MS: i64 = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum RedisStateError {
    #[error("invalid Redis configuration: {0}")]
    Config(redis::RedisError),
    #[error("Redis did not answer within {0} ms")]
    Timeout(u64),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis answered the budget script with {0:?}")]
    Answer(Vec<i64>),
}

pub struct RedisCounters {
    client: Client,
    /// Identifies the connection per thread: URL, user and a hash of the password.
    identity: String,
    /// `tollgate:{namespace/gateway}:`
    prefix: String,
    timeout: Duration,
    /// Counters this process charged, to read back for usage reports.
    touched: Mutex<HashMap<Arc<str>, Span>>,
}

thread_local! {
    static CONNECTIONS: RefCell<HashMap<String, ConnectionManager>> = RefCell::new(HashMap::new());
}

impl RedisCounters {
    pub fn new(config: &RedisConfig, gateway: &str) -> Result<Self, RedisStateError> {
        let mut info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(RedisStateError::Config)?;
        let mut settings = info.redis_settings().clone();
        if let Some(username) = &config.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &config.password {
            settings = settings.set_password(&password.0);
        }
        info = info.set_redis_settings(settings);
        let client = Client::open(info).map_err(RedisStateError::Config)?;
        let secret_hash = config.password.as_ref().map_or(0, |p| {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            p.0.hash(&mut hasher);
            hasher.finish()
        });
        Ok(Self {
            client,
            identity: format!(
                "{}|{}|{secret_hash:x}",
                config.url,
                config.username.as_deref().unwrap_or("")
            ),
            prefix: format!("tollgate:{{{gateway}}}:"),
            timeout: Duration::from_millis(config.timeout_ms),
            touched: Mutex::default(),
        })
    }

    /// This thread's connection, made on first use (it reconnects by itself).
    fn connection(&self) -> Result<ConnectionManager, RedisStateError> {
        CONNECTIONS.with(|connections| {
            let mut connections = connections.borrow_mut();
            if let Some(connection) = connections.get(&self.identity) {
                return Ok(connection.clone());
            }
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(Some(self.timeout))
                // Fail fast: the budget's failureMode decides, not a retry loop.
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            let connection = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
                .map_err(RedisStateError::Config)?;
            connections.insert(self.identity.clone(), connection.clone());
            Ok(connection)
        })
    }

    fn key(&self, counter: &str) -> String {
        format!("{}{counter}", self.prefix)
    }

    fn bucket_key(&self, bucket: &str) -> String {
        format!("{}rate:{bucket}", self.prefix)
    }

    pub async fn reserve(
        &self,
        checks: &[Check],
        takes: &[Take],
        now_ms: i64,
    ) -> Result<Verdict, RedisStateError> {
        let mut invocation = RESERVE_SCRIPT.prepare_invoke();
        invocation.arg(now_ms).arg(checks.len());
        let mut slots = Vec::with_capacity(checks.len());
        for check in checks {
            let slot = check.span.slot(now_ms);
            slots.push(slot);
            let ttl = check.span.expires_ms(slot) - now_ms + TTL_GRACE_MS;
            invocation
                .key(self.key(&check.key))
                .arg(slot)
                .arg(check.span.oldest_live_slot(now_ms))
                .arg(check.amount)
                .arg(check.limit)
                .arg(u8::from(check.enforce))
                .arg(ttl.max(1));
        }
        for take in takes {
            // Forgotten once it would be full again anyway.
            let refill_ms = take.bucket.capacity / take.bucket.per_second * 1000.0;
            invocation
                .key(self.bucket_key(&take.key))
                .arg(take.bucket.per_second)
                .arg(take.bucket.capacity)
                .arg(take.amount)
                .arg(refill_ms.ceil() as i64 + TTL_GRACE_MS);
        }
        let mut connection = self.connection()?;
        let answer: Vec<i64> =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
                .await
                .map_err(|_| RedisStateError::Timeout(self.timeout.as_millis() as u64))??;
        let verdict = decode_reserve(checks, takes.len(), &slots, answer, now_ms)?;
        if matches!(verdict, Verdict::Admitted { .. }) {
            let mut touched = self.touched.lock().unwrap_or_else(PoisonError::into_inner);
            for check in checks {
                if !touched.contains_key(&check.key) {
                    touched.insert(check.key.clone(), check.span);
                }
            }
        }
        Ok(verdict)
    }

    /// The counters this process has charged, as Redis has them now (every
    /// replica's charges included); counters that emptied are forgotten.
    pub async fn usage(&self, now_ms: i64) -> Vec<(Arc<str>, u64)> {
        let keys: Vec<(Arc<str>, Span)> = {
            let touched = self.touched.lock().unwrap_or_else(PoisonError::into_inner);
            touched.iter().map(|(k, s)| (k.clone(), *s)).collect()
        };
        if keys.is_empty() {
            return Vec::new();
        }
        let mut pipeline = redis::pipe();
        for (key, _) in &keys {
            pipeline.cmd("HGETALL").arg(self.key(key));
        }
        let Ok(mut connection) = self.connection() else {
            return Vec::new();
        };
        /// Each counter's (slot, amount) pairs.
        type Hashes = Vec<Vec<(i64, u64)>>;
        let query = pipeline.query_async::<Hashes>(&mut connection);
        let Ok(Ok(hashes)) = tokio::time::timeout(self.timeout, query).await else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(keys.len());
        let mut empty = Vec::new();
        for ((key, span), slots) in keys.into_iter().zip(hashes) {
            let oldest = span.oldest_live_slot(now_ms);
            let used: u64 = slots
                .iter()
                .filter(|(s, _)| *s >= oldest)
                .map(|(_, v)| v)
                .sum();
            if used == 0 {
                empty.push(key);
            } else {
                out.push((key, used));
            }
        }
        let mut touched = self.touched.lock().unwrap_or_else(PoisonError::into_inner);
        for key in empty {
            touched.remove(&key);
        }
        out
    }

    /// Settles in the background: the answer is already on its way to the
    /// client, and a failure only leaves the (upper-bound) estimate charged.
    pub fn settle(
        &self,
        charges: Vec<Charge>,
        actual: Vec<u64>,
        token_takes: &[Take],
        tokens: u64,
    ) {
        let mut invocation = SETTLE_SCRIPT.prepare_invoke();
        let changed: Vec<(&Charge, i64)> = charges
            .iter()
            .zip(&actual)
            .filter_map(|(charge, actual)| {
                let delta = i128::from(*actual) - i128::from(charge.amount);
                (delta != 0).then(|| (charge, i64::try_from(delta).unwrap_or(i64::MAX)))
            })
            .collect();
        invocation.arg(changed.len());
        for (charge, delta) in &changed {
            invocation
                .key(self.key(&charge.key))
                .arg(charge.slot)
                .arg(*delta);
        }
        let mut any = !changed.is_empty();
        for take in token_takes {
            let give_back = take.amount - tokens as f64;
            if give_back == 0.0 {
                continue;
            }
            any = true;
            invocation
                .key(self.bucket_key(&take.key))
                .arg(take.bucket.per_second)
                .arg(take.bucket.capacity)
                .arg(give_back);
        }
        if !any {
            return;
        }
        let Ok(mut connection) = self.connection() else {
            return;
        };
        let timeout = self.timeout;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let settled =
                tokio::time::timeout(timeout, invocation.invoke_async::<i64>(&mut connection))
                    .await;
            if !matches!(settled, Ok(Ok(_))) {
                tracing::debug!("budget settle did not reach Redis; the estimate stays charged");
            }
        });
    }
}

fn decode_reserve(
    checks: &[Check],
    buckets: usize,
    slots: &[i64],
    answer: Vec<i64>,
    now_ms: i64,
) -> Result<Verdict, RedisStateError> {
    let as_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
    match answer.as_slice() {
        [1, used @ ..] if used.len() == checks.len() => {
            let used: Vec<u64> = used.iter().map(|&u| as_u64(u)).collect();
            let over = checks
                .iter()
                .zip(&used)
                .enumerate()
                .filter(|(_, (check, used))| **used > check.limit)
                .map(|(i, _)| i)
                .collect();
            let charges = checks
                .iter()
                .zip(slots)
                .map(|(check, &slot)| Charge {
                    key: check.key.clone(),
                    span: check.span,
                    slot,
                    amount: check.amount,
                })
                .collect();
            Ok(Verdict::Admitted {
                charges,
                over,
                used,
            })
        }
        [0, index, used, live @ ..] if (*index as usize) < checks.len() && live.len() % 2 == 0 => {
            let failing = *index as usize;
            let check = &checks[failing];
            let mut live: Vec<(i64, u64)> = live.chunks(2).map(|p| (p[0], as_u64(p[1]))).collect();
            live.sort_unstable_by_key(|(slot, _)| *slot);
            Ok(Verdict::Refused {
                failing,
                used: as_u64(*used),
                retry_after_ms: retry_after_ms(check.span, now_ms, live, check.amount, check.limit),
            })
        }
        [2, index, wait_ms] if (*index as usize) < buckets => Ok(Verdict::Throttled {
            bucket: *index as usize,
            retry_after_ms: *wait_ms,
        }),
        _ => Err(RedisStateError::Answer(answer)),
    }
}
