-- wrk script: print the latency percentiles the harness reads (microseconds), and, when
-- UNIQUE_PATHS is set, send every request to a path of its own (/api/items/<n>), as traffic
-- with ids in its paths does.

local unique = os.getenv("UNIQUE_PATHS")
local counter = 0
local thread_id = 0

function setup(thread)
   thread:set("thread_id", thread_id)
   thread_id = thread_id + 1
end

function request()
   if unique then
      counter = counter + 1
      return wrk.format("GET", "/api/items/" .. thread_id .. "-" .. counter)
   end
   return wrk.format()
end

-- With RATE_DELAY_MS set, each connection waits that long between requests, for a fixed
-- request rate of connections * 1000 / RATE_DELAY_MS per second.
local rate_delay = tonumber(os.getenv("RATE_DELAY_MS") or "")
if rate_delay then
   function delay()
      return rate_delay
   end
end

function done(summary, latency, requests)
   io.write(string.format("HARNESS requests=%d errors=%d non2xx=%d p50=%d p99=%d p999=%d\n",
      summary.requests,
      summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
      summary.errors.status,
      latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
