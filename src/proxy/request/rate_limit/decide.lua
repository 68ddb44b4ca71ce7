-- Tidegate: one rate-limit decision covering every Global limit of one request, atomic, on
-- Redis's own clock (TIME): replicas whose clocks disagree still share one exact limit, since
-- no replica's time is ever read.
--
-- KEYS[i]: limit i's bucket. ARGV[4i-3], ARGV[4i-2], ARGV[4i-1], ARGV[4i]: its algorithm
-- (1 token bucket, 2 sliding window), rate, per (microseconds) and burst (token bucket).
-- Returns four integers per limit: allowed (1 or 0), remaining, retry-after and reset (both in
-- milliseconds). Nothing is counted unless every limit allows. Every key gets a TTL that ends
-- when its state no longer matters.
--
-- The rules are those of the local store (proxy/upstream/rate_limit/algorithm.rs).

local t = redis.call('TIME')
-- Microseconds since 2023-11-14, small enough for a double to keep steps far below one.
local now = (tonumber(t[1]) - 1700000000) * 1000000 + tonumber(t[2])
local out, writes, all = {}, {}, true

for i = 1, #KEYS do
  local alg = tonumber(ARGV[4 * i - 3])
  local rate = tonumber(ARGV[4 * i - 2])
  local per = tonumber(ARGV[4 * i - 1])
  local allowed, remaining, retry, reset
  if alg == 1 then
    -- GCRA: the key holds the theoretical arrival time (TAT) of the next request.
    local burst = tonumber(ARGV[4 * i])
    local interval = per / rate
    local tolerance = interval * burst
    local tat = tonumber(redis.call('GET', KEYS[i])) or now
    if tat < now then tat = now end
    local ahead = tat + interval - now
    if ahead > tolerance then
      allowed, remaining, retry, reset = 0, 0, ahead - tolerance, tat - now
    else
      allowed, remaining, retry, reset = 1, math.floor((tolerance - ahead) / interval), 0, ahead
      writes[i] = {1, tat + interval, ahead}
    end
  else
    -- Two fixed windows; the previous one weighs as much as the sliding window still covers.
    local window = math.floor(now / per)
    local elapsed = now - window * per
    local left = per - elapsed
    local h = redis.call('HMGET', KEYS[i], 'w', 'p', 'c')
    local w, p, c = tonumber(h[1]), tonumber(h[2]) or 0, tonumber(h[3]) or 0
    if w == window then
      -- the current window
    elseif w == window - 1 then
      p, c = c, 0
    else
      p, c = 0, 0
    end
    local used = p * left / per + c
    reset = left
    if used + 1 > rate then
      allowed, remaining = 0, 0
      if c < rate and p > 0 then
        local d = (p * left + (c + 1) * per - rate * per) / p
        if d < left then retry = d end
      end
      if retry == nil then
        local x = 0
        if c > 0 then x = math.max(0, (c * per + per - rate * per) / c) end
        retry = left + math.min(x, per)
      end
    else
      allowed, remaining, retry = 1, math.floor(rate - used - 1), 0
      writes[i] = {2, window, p, c + 1, left + per}
    end
  end
  if allowed == 0 then all = false end
  out[#out + 1] = allowed
  out[#out + 1] = remaining
  out[#out + 1] = math.ceil(retry / 1000)
  out[#out + 1] = math.ceil(reset / 1000)
end

if all then
  for i, wr in pairs(writes) do
    if wr[1] == 1 then
      redis.call('SET', KEYS[i], string.format('%.3f', wr[2]), 'PX', math.ceil(wr[3] / 1000) + 1)
    else
      redis.call('HSET', KEYS[i], 'w', string.format('%d', wr[2]), 'p', wr[3], 'c', wr[4])
      redis.call('PEXPIRE', KEYS[i], math.ceil(wr[5] / 1000) + 1)
    end
  end
end
return out
