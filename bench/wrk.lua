-- One wrk script for every scenario, chosen by BENCH_MODE:
--   admin    POST /v2/users/{id}/password  {"newPassword": ...}                  (1 hash)
--   current  POST /v2/users/{id}/password  {"newPassword": ..., "currentPassword"} (2 hashes)
--   get      GET  /v2/users/{id}                                                  (no hash)
--   healthz  GET  /healthz                                                        (no hash)
--   connect  POST /zitadel.user.v2.UserService/SetPassword  {"userId", "newPassword"}
--            (Connect unary JSON, as ZITADEL's Python SDK sends it; 1 hash)
--   code     POST /v2/users/{id}/password  {"newPassword", "verificationCode"} (1 hash);
--            BENCH_USERS_FILE lines are "<user id> <code>", each used once
-- BENCH_USERS_FILE holds one user ID a line; BENCH_TOKEN is a PAT with user.write.
-- Each wrk thread takes its own slice of the users and walks it round-robin, so a user is
-- never changed by two requests at once (the pool is much larger than the connections).
-- Every user starts with password A; each change flips it between A and B, so the
-- current-password branch always sends the right current password.
-- done() prints one machine-readable line: BENCH {...}.

local mode = os.getenv("BENCH_MODE") or "healthz"
local token = os.getenv("BENCH_TOKEN") or ""
local users_file = os.getenv("BENCH_USERS_FILE") or ""
local label = os.getenv("BENCH_LABEL") or mode
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

function init(args)
   local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
   if mode ~= "healthz" then
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

function request()
   if mode == "healthz" then
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

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH {"name":"%s","requests":%d,"duration_s":%.3f,"rps":%.1f,' ..
      '"p50_ms":%.2f,"p90_ms":%.2f,"p99_ms":%.2f,"max_ms":%.2f,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
      label, summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
      latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
      latency.max / 1000, e.connect, e.read, e.write, e.status, e.timeout))
end
