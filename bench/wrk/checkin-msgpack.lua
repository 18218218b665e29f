-- SPDX-License-Identifier: Apache-2.0
-- wrk -s: POST /v1/checkin with the check-in of checkin-json.lua as msgpack
-- (~100 bytes), cycling over 1024 device ids. Needs FG_WRK_DIR.
local fg = dofile((os.getenv("FG_WRK_DIR") or "bench/wrk") .. "/common.lua")

local bodies = {}
for i = 1, 1024 do
  bodies[i] = fg.mp_checkin(fg.checkin(i))
end
fg.cycle("/v1/checkin", "application/msgpack", bodies)
done = fg.done
