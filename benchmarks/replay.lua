-- Replays a pool of pre-signed webhook requests written by bodies.py.
--
--   wrk -t2 -c64 -d10s --latency -s benchmarks/replay.lua \
--       http://127.0.0.1:8000/webhooks/whatsapp -- POOL_DIR SHARDS THREADS
--
-- Thread i reads shards i, i+THREADS, i+2*THREADS, ..., a record from each in
-- turn. Body j of a pool is in shard j % SHARDS, so each thread sends its
-- bodies in the pool's order, the threads side by side, and the times in the
-- bodies move forward as webhooks' do (a thread reading one shard after
-- another would go back in time at every new shard, and make the server
-- replay what it had settled); threads use disjoint slices of the pool and no
-- request is sent twice in a run. Requests are streamed from disk, so memory
-- stays small whatever the pool size. When a thread runs out of requests it
-- records it and stops; the run is then reported as exhausted (invalid) by
-- done().
--
-- done() prints one line starting with "WRKJSON " and holding the summary,
-- error counts, latency distribution (microseconds) and per-thread counts.

local counter = 0
local threads = {}

function setup(thread)
  thread:set("thread_index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local pool_dir, shard_count, thread_count
local files = {}  -- this thread's shards still open, read in turn
local turn = 1
local prefix = nil
local fallback = nil

consumed = 0
exhausted = false

local function open_shard(shard)
  local path = string.format("%s/shard-%03d.req", pool_dir, shard)
  local handle, err = io.open(path, "rb")
  if handle == nil then
    error("cannot open " .. path .. ": " .. tostring(err))
  end
  handle:setvbuf("full", 262144)
  return { handle = handle, shard = shard }
end

local function next_record()
  while #files > 0 do
    if turn > #files then
      turn = 1
    end
    local file = files[turn]
    local line = file.handle:read("*l")
    if line ~= nil then
      local size = tonumber(line)
      local record = file.handle:read(size)
      if record == nil or #record ~= size then
        error("truncated record in shard " .. tostring(file.shard))
      end
      turn = turn + 1
      return record
    end
    file.handle:close()
    table.remove(files, turn)  -- the next shard takes its turn
  end
  return nil
end

function init(args)
  -- wrk passes the URL as args[0] and the words after "--" from args[1].
  pool_dir = args[1]
  shard_count = tonumber(args[2])
  thread_count = tonumber(args[3])
  if pool_dir == nil or shard_count == nil or thread_count == nil then
    error("usage: -- POOL_DIR SHARDS THREADS")
  end
  if thread_count > shard_count then
    error("more threads than shards in the pool")
  end
  if thread_index >= thread_count then
    error("THREADS must equal wrk's --threads, or threads would share shards")
  end
  for shard = thread_index, shard_count - 1, thread_count do
    table.insert(files, open_shard(shard))
  end
  local host = wrk.host
  if wrk.port then
    host = host .. ":" .. wrk.port
  end
  prefix = "POST " .. wrk.path .. " HTTP/1.1\r\nHost: " .. host
    .. "\r\nContent-Type: application/json\r\n"
  fallback = "GET /readyz HTTP/1.1\r\nHost: " .. host .. "\r\n\r\n"
end

function request()
  local record = next_record()
  if record == nil then
    if not exhausted then
      exhausted = true
      wrk.thread:stop()
    end
    return fallback
  end
  consumed = consumed + 1
  return prefix .. record
end

local function json_number(value)
  return string.format("%.0f", value)
end

function done(summary, latency, requests)
  local parts = {}
  local function add(key, value)
    table.insert(parts, string.format('"%s":%s', key, value))
  end
  add("duration_us", json_number(summary.duration))
  add("requests", json_number(summary.requests))
  add("bytes", json_number(summary.bytes))
  local e = summary.errors
  add("errors", string.format(
    '{"connect":%s,"read":%s,"write":%s,"status":%s,"timeout":%s}',
    json_number(e.connect), json_number(e.read), json_number(e.write),
    json_number(e.status), json_number(e.timeout)))
  local percentiles = {}
  for _, p in ipairs({ 50, 75, 90, 99, 99.9, 99.99 }) do
    table.insert(percentiles, string.format('"%s":%s', tostring(p), json_number(latency:percentile(p))))
  end
  add("latency_us", string.format(
    '{"min":%s,"max":%s,"mean":%.1f,"stdev":%.1f,"percentiles":{%s}}',
    json_number(latency.min), json_number(latency.max), latency.mean, latency.stdev,
    table.concat(percentiles, ",")))
  local per_thread = {}
  for _, thread in ipairs(threads) do
    table.insert(per_thread, string.format(
      '{"consumed":%s,"exhausted":%s}',
      json_number(thread:get("consumed") or 0), tostring(thread:get("exhausted") == true)))
  end
  add("threads", "[" .. table.concat(per_thread, ",") .. "]")
  io.write("WRKJSON {" .. table.concat(parts, ",") .. "}\n")
end
