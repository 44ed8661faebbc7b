-- replay.lua, paced to a fixed total rate across all connections.
--
--   wrk -t2 -c64 -d60s --latency -s benchmarks/paced.lua \
--       http://127.0.0.1:8000/webhooks/whatsapp -- POOL_DIR SHARDS THREADS RATE
--
-- Each thread owns RATE/THREADS requests per second, as a fixed schedule of
-- send slots (slot k is due at start + k/rate). Whenever a connection is
-- free, delay() hands it the next slot and waits until that slot is due, so
-- the offered rate does not drift with the server's latency; slots that are
-- already overdue (the server fell behind) are sent at once.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "replay.lua")

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } paced_timespec;
int clock_gettime(int clock_id, paced_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local clock = ffi.new("paced_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1000000
end

local replay_init = init
local interval_ms = nil
local start_ms = nil
local slot = 0

function init(args)
  replay_init(args)
  local rate = tonumber(args[4])
  if rate == nil or rate <= 0 then
    error("usage: -- POOL_DIR SHARDS THREADS RATE")
  end
  interval_ms = 1000 * tonumber(args[3]) / rate
end

function delay()
  local now = now_ms()
  if start_ms == nil then
    start_ms = now
  end
  local due = start_ms + slot * interval_ms
  slot = slot + 1
  local wait = due - now
  if wait < 1 then
    return 0
  end
  return math.floor(wait)
end
