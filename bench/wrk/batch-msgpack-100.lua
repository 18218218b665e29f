-- SPDX-License-Identifier: Apache-2.0
-- wrk -s: POST /v1/checkins with a msgpack array of 100 distinct check-ins
-- (~10 KB), cycling over 64 such batches (6,400 device ids). Needs FG_WRK_DIR.
local fg = dofile((os.getenv("FG_WRK_DIR") or "bench/wrk") .. "/common.lua")

local bodies = {}
for b = 1, 64 do
  local items = {}
  for j = 1, 100 do
    items[j] = fg.mp_checkin(fg.checkin((b - 1) * 100 + j))
  end
  bodies[b] = fg.mp_array(items)
end
fg.cycle("/v1/checkins", "application/msgpack", bodies)
done = fg.done
