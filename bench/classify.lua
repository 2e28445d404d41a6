-- wrk script: POST /v1/classify with varied texts read from the file in env TEXTS (one per line),
-- BATCH texts per request (default 1). Each thread walks the file from its own offset.
-- PROTOCOL (bench/interop.py) sends the same texts on an interop route of model MODEL instead:
-- hf (POST /models/MODEL), v2 (JSON tensors) or v2bin (binary tensors, as tritonclient sends).
local texts, raw, counter = {}, {}, 0
local batch = tonumber(os.getenv("BATCH") or "1")
local protocol = os.getenv("PROTOCOL") or "v1"
local model = os.getenv("MODEL") or "text-classifier"

local function escape(s)
  return (s:gsub('\\', '\\\\'):gsub('"', '\\"'):gsub('[%c]', ' '))
end

function init(args)
  for line in io.lines(os.getenv("TEXTS")) do
    if #line > 0 then texts[#texts + 1] = escape(line); raw[#raw + 1] = line end
  end
  counter = math.random(#texts)
end

local function le32(n)
  return string.char(n % 256, math.floor(n / 256) % 256, math.floor(n / 65536) % 256, math.floor(n / 16777216))
end

function request()
  local items, plain = {}, {}
  for i = 1, batch do
    counter = counter % #texts + 1
    items[i] = '"' .. texts[counter] .. '"'
    plain[i] = raw[counter]
  end
  local list = table.concat(items, ",")
  if protocol == "hf" then
    local inputs = batch == 1 and items[1] or "[" .. list .. "]"
    return wrk.format("POST", "/models/" .. model, {["Content-Type"] = "application/json"},
      '{"inputs": ' .. inputs .. ', "parameters": {}}')
  elseif protocol == "v2" then
    return wrk.format("POST", "/v2/models/" .. model .. "/infer", {["Content-Type"] = "application/json"},
      '{"inputs": [{"name": "text", "shape": [' .. batch .. '], "datatype": "BYTES", "data": [' .. list .. ']}]}')
  elseif protocol == "v2bin" then
    local tensor = {}
    for i = 1, batch do tensor[i] = le32(#plain[i]) .. plain[i] end
    tensor = table.concat(tensor)
    local head = '{"inputs": [{"name": "text", "shape": [' .. batch .. '], "datatype": "BYTES", ' ..
      '"parameters": {"binary_data_size": ' .. #tensor .. '}}], "parameters": {"binary_data_output": true}}'
    return wrk.format("POST", "/v2/models/" .. model .. "/infer", {["Inference-Header-Content-Length"] = tostring(#head)},
      head .. tensor)
  end
  return wrk.format("POST", "/v1/classify", {["Content-Type"] = "application/json"},
    '{"texts": [' .. list .. ']}')
end

function done(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("JSON {\"requests\": %d, \"duration_s\": %.3f, \"non2xx\": %d, \"socket_errors\": %d, " ..
    "\"p50_ms\": %.2f, \"p90_ms\": %.2f, \"p99_ms\": %.2f}\n",
    summary.requests, summary.duration / 1e6, non2xx,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000))
end
