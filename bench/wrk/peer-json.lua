-- SPDX-License-Identifier: Apache-2.0
-- wrk -s: the peer's own script (/work/shared/peers/wrk-post-json.lua, path
-- in FG_PEER_SCRIPT) unchanged, plus the FGWRK done() line bench/run reads.
-- The path (/checkin/sync, /async, /nokafka) is given in wrk's URL.
local fg = dofile((os.getenv("FG_WRK_DIR") or "bench/wrk") .. "/common.lua")
dofile(os.getenv("FG_PEER_SCRIPT") or "/work/shared/peers/wrk-post-json.lua")
done = fg.done
