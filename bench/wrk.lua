-- One wrk script for every scenario, chosen by BENCH_MODE:
--   admin    POST /v2/users/{id}/password  {"newPassword": ...}                  (1 hash)
--   current  POST /v2/users/{id}/password  {"newPassword": ..., "currentPassword"} (2 hashes)
--   get      GET  /v2/users/{id}                                                  (no hash)
--   healthz  GET  /healthz                                                        (no hash)
--   readyz   GET  /readyz (Postgres and Redis pinged)                              (no hash)
--   connect  POST /zitadel.user.v2.UserService/SetPassword  {"userId", "newPassword"}
--            (Connect unary JSON, as ZITADEL's Python SDK sends it; 1 hash)
--   code     POST /v2/users/{id}/password  {"newPassword", "verificationCode"} (1 hash);
--            BENCH_USERS_FILE lines are "<user id> <code>", each used once: a thread that
--            has used all the codes of its slice stops (a second use would be an error, not
--            a measure) and done() reports it, since req/s is then too low
-- BENCH_DELAY_MS (optional): each connection waits this long between requests, for a light
-- probe (e.g. /healthz beside a saturating load) rather than a closed loop at full speed.
-- BENCH_USERS_FILE holds one user ID a line; BENCH_TOKEN is a PAT with user.write.
-- Each wrk thread takes its own slice of the users and walks it round-robin, so a user is
-- never changed by two requests at once (the pool is much larger than the connections).
-- Every user starts with password A; each change flips it between A and B, so the
-- current-password branch always sends the right current password.
-- done() prints one machine-readable line: BENCH {...}, with the count of each non-2xx
-- status of the password and user modes (a 503 overload reads differently from a 400).

local mode = os.getenv("BENCH_MODE") or "healthz"
local token = os.getenv("BENCH_TOKEN") or ""
local users_file = os.getenv("BENCH_USERS_FILE") or ""
local label = os.getenv("BENCH_LABEL") or mode
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local PASSWORDS = { os.getenv("BENCH_PASSWORD_A") or "Bench-Passw0rd-A!",
                    os.getenv("BENCH_PASSWORD_B") or "Bench-Passw0rd-B!" }

local threads = {}
local counter = 0

function setup(thread)
   thread:set("tid", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

local users, state, codes, cursor = {}, {}, {}, 0
exhausted = 0 -- a global, so that done() can read it with thread:get

function init(args)
   local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
   if mode ~= "healthz" and mode ~= "readyz" then
      local i = 0
      for line in io.lines(users_file) do
         if line ~= "" then
            if i % nthreads == tid then
               local id, code = line:match("^(%S+)%s*(%S*)$")
               table.insert(users, id)
               codes[#users] = code
               state[#users] = 1 -- index into PASSWORDS of the current password
            end
            i = i + 1
         end
      end
      assert(#users > 0, "no users for thread " .. tid)
   end
end

local function headers(with_body)
   local h = { ["Authorization"] = "Bearer " .. token }
   if with_body then h["Content-Type"] = "application/json" end
   return h
end

if delay_ms > 0 then
   function delay()
      return delay_ms
   end
end

function request()
   if mode == "healthz" or mode == "readyz" then
      return wrk.format("GET", "/" .. mode)
   end
   if mode == "code" and (exhausted == 1 or cursor == #users) then
      -- Every code of this slice is used. Stop the thread: its loop ends after this round
      -- of events, so the harmless request returned here is written but never counted.
      if exhausted == 0 then
         exhausted = 1
         wrk.thread:stop()
      end
      return wrk.format("GET", "/healthz")
   end
   cursor = cursor % #users + 1
   local id = users[cursor]
   if mode == "get" then
      return wrk.format("GET", "/v2/users/" .. id, headers(false))
   end
   local cur = state[cursor]
   local nxt = 3 - cur
   state[cursor] = nxt
   local body
   if mode == "code" then
      body = '{"newPassword":{"password":"' .. PASSWORDS[nxt] .. '"},"verificationCode":"'
         .. codes[cursor] .. '"}'
      return wrk.format("POST", "/v2/users/" .. id .. "/password", headers(true), body)
   elseif mode == "connect" then
      body = '{"userId":"' .. id .. '","newPassword":{"password":"' .. PASSWORDS[nxt] .. '"}}'
      return wrk.format("POST", "/zitadel.user.v2.UserService/SetPassword", headers(true), body)
   elseif mode == "admin" then
      body = '{"newPassword":{"password":"' .. PASSWORDS[nxt] .. '"}}'
   else -- current
      body = '{"newPassword":{"password":"' .. PASSWORDS[nxt] .. '"},"currentPassword":"'
         .. PASSWORDS[cur] .. '"}'
   end
   return wrk.format("POST", "/v2/users/" .. id .. "/password", headers(true), body)
end

statuses = {} -- non-2xx status -> count, in this thread (a global, for thread:get)
if mode ~= "healthz" and mode ~= "readyz" then
   -- Only where the rate is a few thousand a second at most: wrk calls into Lua for every
   -- answer once response() exists.
   local shown = false
   function response(status, headers, body)
      if status < 200 or status > 299 then
         statuses[status] = (statuses[status] or 0) + 1
         if not shown then -- the first one of each thread, to tell what the errors were
            shown = true
            io.stderr:write(string.format("wrk %s: first non-2xx answer: %d %s\n",
                                          mode, status, (body or ""):sub(1, 300)))
         end
      end
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   local stopped, counts = 0, {}
   for _, t in ipairs(threads) do
      stopped = stopped + (tonumber(t:get("exhausted")) or 0)
      for status, n in pairs(t:get("statuses") or {}) do
         counts[status] = (counts[status] or 0) + n
      end
   end
   local parts = {}
   for status, n in pairs(counts) do
      table.insert(parts, string.format('"%d":%d', status, n))
   end
   io.write(string.format(
      'BENCH {"name":"%s","requests":%d,"duration_s":%.3f,"rps":%.1f,' ..
      '"p50_ms":%.2f,"p90_ms":%.2f,"p99_ms":%.2f,"max_ms":%.2f,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"codes_exhausted_threads":%d,"statuses":{%s}}\n',
      label, summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
      latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
      latency.max / 1000, e.connect, e.read, e.write, e.status, e.timeout, stopped,
      table.concat(parts, ",")))
end
