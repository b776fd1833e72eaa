//! The Lua scripts: decide a batch of requests, give a charge back, lease a bucket's
//! budget. Times are integral µs since the epoch from Redis's own clock (`TIME`,
//! so instances with skewed clocks agree), below 2^53 and so exact in Lua's doubles; TATs
//! are written with `%.0f` because Lua's default formatting keeps 14 digits only. Every
//! written key expires when its bucket is full again (+1 ms): an expired key is an empty
//! bucket, so Redis holds only the keys active within one refill period.

/// Decide a batch of requests at once, in order, each one all-or-nothing: ARGV[1] is
/// the number of requests R, ARGV[1+q] the number of buckets of request q, then for
/// every bucket (in the order of KEYS) its period T and horizon burst*T in µs. A
/// request's buckets are charged only if all of them allow; later requests of the batch
/// see the charges of earlier ones. Returns one string: per request
/// "all_allowed,then per bucket allowed,remaining,reset_us,retry_after_us", requests
/// separated by ';' (the client parses one bulk string far faster than arrays of
/// integers). On a Cluster all its keys must share a slot.
pub const CHECK: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local r = tonumber(ARGV[1])
local tats = {}
local dirty = {}
local results = {}
local k = 1
local a = r + 2
for q = 1, r do
  local n = tonumber(ARGV[1 + q])
  local pending = {}
  local out = {1}
  for i = 0, n - 1 do
    local key = KEYS[k + i]
    local period = tonumber(ARGV[a + 2 * i])
    local horizon = now + tonumber(ARGV[a + 2 * i + 1])
    local tat = pending[key]
    if tat == nil then tat = tats[key] end
    if tat == nil then
      tat = tonumber(redis.call('GET', key) or '0') or 0
      tats[key] = tat
    end
    if tat < now then tat = now end
    local nt = tat + period
    if nt <= horizon then
      pending[key] = nt
      out[#out + 1] = 1
      out[#out + 1] = math.floor((horizon - nt) / period)
      out[#out + 1] = nt - now
      out[#out + 1] = 0
    else
      pending[key] = tat
      out[1] = 0
      out[#out + 1] = 0
      out[#out + 1] = 0
      out[#out + 1] = tat - now
      out[#out + 1] = nt - horizon
    end
  end
  if out[1] == 1 then
    for key, tat in pairs(pending) do
      tats[key] = tat
      dirty[key] = true
    end
  end
  for i = 1, #out do out[i] = string.format('%.0f', out[i]) end
  results[q] = table.concat(out, ',')
  k = k + n
  a = a + 2 * n
end
for key, _ in pairs(dirty) do
  local tat = tats[key]
  redis.call('SET', key, string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 1)
end
return table.concat(results, ';')
"#;

/// Give back one request's charge on KEYS[1] (period ARGV[1] µs): a decision across
/// Cluster slots charged it, and another of its buckets refused.
pub const REFUND: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local nt = tat - tonumber(ARGV[1])
if nt > now then
  redis.call('SET', KEYS[1], string.format('%.0f', nt), 'PX', math.floor((nt - now) / 1000) + 1)
else
  redis.call('DEL', KEYS[1])
end
return 1
"#;

/// Lease up to ARGV[3] requests' worth of KEYS[1] (period ARGV[1], horizon ARGV[2], µs)
/// for an instance to spend locally: charges as many as the bucket allows now, at
/// most the wish. Returns {granted, remaining, reset_us, retry_after_us}.
pub const LEASE: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local horizon = now + tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local room = math.floor((horizon - tat) / period)
if room < 1 then
  return {0, 0, tat - now, tat + period - horizon}
end
local k = math.min(room, want)
local nt = tat + k * period
redis.call('SET', KEYS[1], string.format('%.0f', nt), 'PX', math.floor((nt - now) / 1000) + 1)
return {k, math.floor((horizon - nt) / period), nt - now, 0}
"#;
