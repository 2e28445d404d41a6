-- wrk script: POST /v1/classify with varied texts read from the file in env TEXTS (one per line),
-- BATCH texts per request (default 1). Each thread walks the file from its own offset.
local texts, counter = {}, 0
local batch = tonumber(os.getenv("BATCH") or "1")

local function escape(s)
  return (s:gsub('\\', '\\\\'):gsub('"', '\\"'):gsub('[%c]', ' '))
end

function init(args)
  for line in io.lines(os.getenv("TEXTS")) do
    if #line > 0 then texts[#texts + 1] = escape(line) end
  end
  counter = math.random(#texts)
end

function request()
  local items = {}
  for i = 1, batch do
    counter = counter % #texts + 1
    items[i] = '"' .. texts[counter] .. '"'
  end
  return wrk.format("POST", "/v1/classify", {["Content-Type"] = "application/json"},
    '{"texts": [' .. table.concat(items, ",") .. ']}')
end

function done(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("JSON {\"requests\": %d, \"duration_s\": %.3f, \"non2xx\": %d, \"socket_errors\": %d, " ..
    "\"p50_ms\": %.2f, \"p90_ms\": %.2f, \"p99_ms\": %.2f}\n",
    summary.requests, summary.duration / 1e6, non2xx,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000))
end
