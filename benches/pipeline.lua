-- wrk script for benches/http.sh: one workload, optionally pipelined.
--
--   wrk -t1 -c16 -d5s --latency -s benches/pipeline.lua http://127.0.0.1:PORT -- MODE KEYS DEPTH [SEED]
--
-- MODE   get     GET /kv/KEY of random keys
--        put     PUT /kv/KEY of random keys, a 98-character text body (100 bytes as JSON)
--        mix     90 % get, 10 % put, chosen at random per request
--        health  GET /health: the framework's ceiling (no store work at all)
-- KEYS   keys are key00000000 .. key{KEYS-1}, the set http.sh preloads, so every GET finds one
-- DEPTH  requests sent per round trip: 1 is plain keep-alive, 16 is pipelining as in wrk's
--        scripts/pipeline.lua (the requests are concatenated into one write)
-- SEED   math.randomseed of the first thread (each further thread adds its number), so two
--        runs send the same keys in the same order
--
-- Every mode builds its requests the same way (one `one()` call per request, concatenated), so
-- the client spends about the same per request whatever the workload. No `response` callback:
-- it would make wrk hand every response to Lua and slow the client.

local mode, nkeys, depth, put_share
local host = "127.0.0.1"
local body = string.rep("v", 98)

local threads = 0
function setup(thread)
   thread:set("id", threads)
   threads = threads + 1
end

local function get(i)
   return string.format("GET /kv/key%08d HTTP/1.1\r\nHost: %s\r\n\r\n", i, host)
end

local function put(i)
   return string.format(
      "PUT /kv/key%08d HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s",
      i, host, #body, body)
end

local health = "GET /health HTTP/1.1\r\nHost: " .. host .. "\r\n\r\n"

local function one()
   if mode == "health" then
      return health
   end
   local i = math.random(0, nkeys - 1)
   if mode == "get" then
      return get(i)
   elseif mode == "put" then
      return put(i)
   elseif math.random() < put_share then
      return put(i)
   else
      return get(i)
   end
end

function init(args)
   mode = args[1] or "get"
   nkeys = tonumber(args[2] or "10000")
   depth = tonumber(args[3] or "1")
   put_share = 0.1
   local seed = tonumber(args[4] or "20260101")
   math.randomseed(seed + (id or 0))
   if mode ~= "get" and mode ~= "put" and mode ~= "mix" and mode ~= "health" then
      error("unknown mode " .. mode .. " (get, put, mix or health)")
   end
end

function request()
   if depth == 1 then
      return one()
   end
   local r = {}
   for n = 1, depth do
      r[n] = one()
   end
   return table.concat(r)
end

-- One machine-readable line for http.sh. With pipelining wrk records one latency per round
-- trip: the time until the last of the DEPTH replies.
--
-- wrk 4.1 sometimes holds fewer latencies in its histogram than its count says (seen when
-- pipelining at a high rate), and then its percentiles come out too low, and its 99th as 0
-- once the rank passes what the histogram holds. `latency:percentile(q)` is non-zero exactly
-- while q / 100 * count fits in the histogram, so a bisection finds the share it holds, and
-- each percentile is asked at its rank within that share.
function done(summary, latency, requests)
   if latency.max == 0 then
      -- No round trip completed within the run: there is no latency to report.
      io.write("twinkv-latency none\n")
      return
   end
   local held = 100
   if latency:percentile(100) == 0 then
      local lo, hi = 0, 100
      for _ = 1, 40 do
         local mid = (lo + hi) / 2
         if latency:percentile(mid) > 0 then lo = mid else hi = mid end
      end
      held = lo
   end
   local function pct(p)
      return latency:percentile(p * held / 100)
   end
   io.write(string.format(
      "twinkv-latency p50_us=%d p90_us=%d p99_us=%d max_us=%d held_pct=%.2f\n",
      pct(50), pct(90), pct(99), latency.max, held))
end
