-- SPDX-License-Identifier: Apache-2.0
-- Shared by the bench/wrk scripts (loaded with dofile): a small msgpack
-- encoder for check-ins, and a done() that prints one machine-readable line
-- "FGWRK {json}" with the counts and latency percentiles bench/run records.
local M = {}

local char, floor = string.char, math.floor

local function be(n, bytes)            -- unsigned big-endian, n < 2^53
  local t = {}
  for i = bytes, 1, -1 do
    t[i] = char(n % 256)
    n = floor(n / 256)
  end
  return table.concat(t)
end

local function mp_str(s)
  local n = #s
  if n < 32 then return char(0xa0 + n) .. s end
  if n < 256 then return char(0xd9, n) .. s end
  return char(0xda) .. be(n, 2) .. s
end

local function mp_uint(n)              -- shortest encoding, as msgpack-c
  if n < 128 then return char(n) end
  if n < 256 then return char(0xcc, n) end
  if n < 65536 then return char(0xcd) .. be(n, 2) end
  if n < 4294967296 then return char(0xce) .. be(n, 4) end
  return char(0xcf) .. be(n, 8)
end

-- The fields of one check-in, in a fixed order (Lua tables have none).
local FIELDS = { "device_id", "sku_region", "region", "model", "fw", "seq", "ts" }

-- A check-in as a msgpack map. c holds the FIELDS above (strings, or
-- non-negative integers for seq and ts); absent fields are left out.
function M.mp_checkin(c)
  local parts, n = {}, 0
  for _, k in ipairs(FIELDS) do
    local v = c[k]
    if v ~= nil then
      n = n + 1
      parts[#parts + 1] = mp_str(k)
      parts[#parts + 1] = type(v) == "number" and mp_uint(v) or mp_str(v)
    end
  end
  return char(0x80 + n) .. table.concat(parts)
end

-- A msgpack array of already-encoded items.
function M.mp_array(items)
  local n = #items
  local hdr = n < 16 and char(0x90 + n) or (n < 65536 and char(0xdc) .. be(n, 2)
              or char(0xdd) .. be(n, 4))
  return hdr .. table.concat(items)
end

-- The same check-in as JSON (string values need no escaping here).
function M.json_checkin(c)
  local parts = {}
  for _, k in ipairs(FIELDS) do
    local v = c[k]
    if v ~= nil then
      parts[#parts + 1] = type(v) == "number" and string.format('"%s":%d', k, v)
                          or string.format('"%s":"%s"', k, v)
    end
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- The check-in number i of the benchmark (a distinct device per i).
function M.checkin(i)
  return { device_id = string.format("dev-%08d", i), sku_region = "DE",
           region = "DE", model = "Pixel 8", fw = "1.4.2-rc1", seq = 1,
           ts = 1764000000000 }
end

-- Installs an init() that formats one request per body (in init, once wrk
-- has set the Host header) and a request() that cycles through them: the
-- Lua cost per request is one table index, and the Kafka keys (device ids)
-- spread over the topic's partitions.
function M.cycle(path, content_type, bodies)
  wrk.method = "POST"
  wrk.path = path
  wrk.headers["Content-Type"] = content_type
  wrk.body = bodies[1]
  local reqs, n, i = {}, #bodies, 0
  init = function(args)
    for k = 1, n do
      reqs[k] = wrk.format("POST", path, nil, bodies[k])
    end
  end
  request = function()
    i = i % n + 1
    return reqs[i]
  end
end

-- wrk's done(): one line of JSON after wrk's own report. Latencies in us.
function M.done(summary, latency, requests)
  local e = summary.errors
  local p = {}
  for _, q in ipairs({ 50, 90, 99, 99.9 }) do
    p[#p + 1] = string.format('"%s":%d', tostring(q), latency:percentile(q))
  end
  io.write(string.format(
    'FGWRK {"duration_us":%d,"requests":%d,"bytes":%d,"errors":{"connect":%d,' ..
    '"read":%d,"write":%d,"status":%d,"timeout":%d},"latency_us":{"mean":%.1f,' ..
    '"max":%d,"p":{%s}}}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read,
    e.write, e.status, e.timeout, latency.mean, latency.max, table.concat(p, ",")))
end

return M
