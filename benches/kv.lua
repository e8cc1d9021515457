-- Copied from the peers harness (../shared/peers/lua/kv.lua) for benches/cluster.sh, so etcd and
-- twinkv are driven by the same script.
-- kv.lua: parameterised key-value workload for wrk 4.x (one script for every target).
--
--   wrk -t1 -c64 -d8s --latency -s lua/kv.lua http://127.0.0.1:PORT -- key=value ...
--
-- Arguments (all optional, key=value after "--"):
--   mode=get|write|mix|preload
--                            get: random existing key; write: random key, value of
--                            vsize bytes; mix: each request is a write with
--                            probability writepct/100, otherwise a GET, both on
--                            random keys; preload: keys 0..n-1 in order, the thread
--                            stops after n responses (but wrk itself still runs
--                            for -d: prefer kvload/ for preloading).    [get]
--   prefix=/kv/              path before the key                         [/kv/]
--   wprefix=PATH             mix only: path before the key for writes   [=prefix]
--                            (e.g. webdis: prefix=/GET/ wprefix=/SET/)
--   writepct=10              mix only: percentage of writes, 0..100      [10]
--   suffix=                  path after the key (e.g. ".txt")            []
--   method=GET|PUT|POST      [GET for mode=get, PUT otherwise; in mix mode
--                            the method of the writes, reads are always GET]
--   body=raw|form            raw: body is the value; form: FIELD=value as
--                            application/x-www-form-urlencoded           [raw]
--   field=value              form field name                             [value]
--   n=10000                  key space; key i = string.format(keyfmt, i), i in [0,n)
--   keyfmt=k%012d            key format (must match the preload)         [k%012d]
--   vsize=100                value size in bytes (value is "v" * vsize)  [100]
--   seed=NUMBER              RNG seed                                    [time+thread]
--   pipeline=K               send K requests back to back per write (HTTP/1.1
--                            pipelining; wrk counts K responses). Use it to get past
--                            one wrk thread's ~115k req/s ceiling.        [1]
--
-- Writes use random keys drawn from the SAME key space [0,n), i.e. they overwrite
-- preloaded keys and the store size stays n.
--
-- done() prints one tab-separated, machine-readable line (times in ms):
--   WRKRESULT requests duration_s rps p50 p90 p99 max connect read write status timeout
-- (status = responses with HTTP status > 399, as counted by wrk.)
-- In mix mode it also prints the requests the script generated, per kind:
--   WRKMIX gets writes
-- (generated, not completed: up to conns*pipeline more than wrk's count.)

local cfg = {
  mode = "get", prefix = "/kv/", suffix = "", method = nil, body = "raw",
  field = "value", n = "10000", keyfmt = "k%012d", vsize = "100", seed = nil,
  pipeline = "1", wprefix = nil, writepct = "10",
}

local keyfmt, pre, post, n
local wpre, wpost, wfrac      -- mix mode: the write request around the key
local mode, depth, one
local counter, responses = 0, 0
-- mix mode counters: globals so that done() can read them with thread:get()
mix_gets, mix_writes = 0, 0

-- One request per mode, chosen once in init() (keeps the get/write path as
-- short as before the mix mode existed).
local function one_random()
  return pre .. string.format(keyfmt, math.random(0, n - 1)) .. post
end

local function one_preload()
  local i = counter % n
  counter = counter + 1
  return pre .. string.format(keyfmt, i) .. post
end

local function one_mix()
  if math.random() < wfrac then
    mix_writes = mix_writes + 1
    return wpre .. string.format(keyfmt, math.random(0, n - 1)) .. wpost
  end
  mix_gets = mix_gets + 1
  return pre .. string.format(keyfmt, math.random(0, n - 1)) .. post
end

function init(args)
  -- wrk passes its URL as args[0] and the words after "--" as args[1..]
  for i, a in pairs(args) do
    if i > 0 then
      local k, v = a:match("^([%w_]+)=(.*)$")
      if not k or (cfg[k] == nil and k ~= "method" and k ~= "seed" and k ~= "wprefix") then
        error("kv.lua: bad argument '" .. a .. "'")
      end
      cfg[k] = v
    end
  end
  mode = cfg.mode
  n = tonumber(cfg.n)
  depth = tonumber(cfg.pipeline)
  local method = cfg.method or (mode == "get" and "GET" or "PUT")
  local seed = tonumber(cfg.seed) or (os.time() + (tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0) % 100000)
  math.randomseed(seed)

  -- Keys are formatted per request on purpose: a precomputed table of 1M key
  -- strings makes LuaJIT's GC stall wrk for ~150 ms now and then, which shows
  -- up as a bogus p99 of ~150 ms against every server.
  keyfmt = cfg.keyfmt

  local host = wrk.headers["Host"]
  local getpost = cfg.suffix .. " HTTP/1.1\r\nHost: " .. host .. "\r\n\r\n"
  local writepost
  if mode ~= "get" then
    local value = string.rep("v", tonumber(cfg.vsize))
    local body, ctype
    if cfg.body == "form" then
      body = cfg.field .. "=" .. value
      ctype = "application/x-www-form-urlencoded"
    elseif cfg.body == "raw" then
      body = value
      ctype = "application/octet-stream"
    else
      error("kv.lua: body must be raw or form")
    end
    writepost = cfg.suffix .. " HTTP/1.1\r\nHost: " .. host ..
                "\r\nContent-Type: " .. ctype ..
                "\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
  end
  if mode == "get" then
    pre, post, one = method .. " " .. cfg.prefix, getpost, one_random
  elseif mode == "write" then
    pre, post, one = method .. " " .. cfg.prefix, writepost, one_random
  elseif mode == "preload" then
    pre, post, one = method .. " " .. cfg.prefix, writepost, one_preload
    response = preload_response
  elseif mode == "mix" then
    if method == "GET" then error("kv.lua: mix mode needs a write method (PUT or POST)") end
    pre, post = "GET " .. cfg.prefix, getpost
    wpre, wpost = method .. " " .. (cfg.wprefix or cfg.prefix), writepost
    local wp = tonumber(cfg.writepct)
    if not wp or wp < 0 or wp > 100 then error("kv.lua: writepct must be in 0..100") end
    wfrac = wp / 100
    one = one_mix
  else
    error("kv.lua: mode must be get, write, mix or preload")
  end
end

function request()
  if depth == 1 then return one() end
  local t = {}
  for j = 1, depth do t[j] = one() end
  return table.concat(t)
end

-- response() is only installed for preload (defining it slows wrk down)
function preload_response(status, headers, body)
  responses = responses + 1
  if responses >= n then wrk.thread:stop() end
end

-- setup() and done() run in wrk's main Lua state; request() in each thread's.
local threads = {}
function setup(thread) table.insert(threads, thread) end

function done(summary, latency, requests)
  local d = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format("WRKRESULT\t%d\t%.3f\t%.1f\t%.3f\t%.3f\t%.3f\t%.3f\t%d\t%d\t%d\t%d\t%d\n",
    summary.requests, d, summary.requests / d,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    e.connect, e.read, e.write, e.status, e.timeout))
  local g, w = 0, 0
  for _, t in ipairs(threads) do
    g = g + (tonumber(t:get("mix_gets")) or 0)
    w = w + (tonumber(t:get("mix_writes")) or 0)
  end
  if g + w > 0 then io.write(string.format("WRKMIX\t%d\t%d\n", g, w)) end
end
