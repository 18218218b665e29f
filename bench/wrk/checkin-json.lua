-- SPDX-License-Identifier: Apache-2.0
-- wrk -s: POST /v1/checkin with one ~120-byte JSON check-in, cycling over
-- 1024 device ids. Needs FG_WRK_DIR (this directory) in the environment.
local fg = dofile((os.getenv("FG_WRK_DIR") or "bench/wrk") .. "/common.lua")

local bodies = {}
for i = 1, 1024 do
  bodies[i] = fg.json_checkin(fg.checkin(i))
end
fg.cycle("/v1/checkin", "application/json", bodies)
done = fg.done
