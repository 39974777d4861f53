-- enrolment_redeem: may a user register their first keys? Uses an issued code up when it is presented.
--
-- KEYS[1]  the user's open code: SHA-256 hex of the code, expiring with it
-- KEYS[2]  the user's reset marker: set when an operator reset their keys, cleared on enrolment
-- ARGV[1]  SHA-256 hex of the presented code ("" when none was presented)
-- ARGV[2]  "1" when a code is required from everyone (gateways reachable beyond loopback), else "0"
-- ARGV[3]  "1" when the presented code is the one fixed for the user in config, else "0"
-- Returns 1 accepted (an issued code, now used up, or the config's code), 0 refused,
--   2 no code needed (nothing required, no open code, no reset since the last enrolment).

local stored = redis.call('GET', KEYS[1])
if ARGV[1] ~= '' and stored == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[2])
  return 1
end
if stored or ARGV[2] == '1' or redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
return 2
