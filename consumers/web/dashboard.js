// SPDX-License-Identifier: Apache-2.0
// The dashboard of fleetgate-control: plain browser JavaScript, no build
// step, nothing fetched from elsewhere. It asks for a bearer token (kept in
// sessionStorage, so it dies with the tab), shows every region from
// GET /v1/regions, follows GET /v1/stream (server-sent events read through
// fetch(), since EventSource cannot send Authorization) and runs the
// operator actions as a dry run first and for real only on Confirm.
// Every string from the API reaches the page through textContent.
'use strict';

(() => {
  const TOKEN_KEY = 'fleetgate.token';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const POLL_MS = 3000;          // without a stream: GET /v1/regions this often
  const STALL_MS = 45000;        // no byte (the server pings every 15 s): reconnect
  const BACKOFF_MAX_MS = 15000;
  const HISTORY_REFRESH_MS = 3000;
  const RENDER_MIN_MS = 200;
  const STATE_ORDER = { locked: 0, expired: 1, shadow: 2, suppressed: 3, unlocked: 4 };

  const $ = (id) => document.getElementById(id);

  const app = {
    token: null,
    gen: 0,               // bumped on sign-out: loops of an old session stop
    regions: new Map(),   // code -> region object as the API writes it
    skew: 0,              // server clock - this clock, ms
    sort: { key: 'region', dir: 1 },
    filter: '',
    selected: null,
    detail: null,         // the selected region's GET /v1/regions/{code} answer
    detailFetched: 0,
    lastEventId: null,
    lastHeard: 0,
    streamAbort: null,
    rows: new Map(),      // code -> <tr>
    flashUntil: new Map(), // code -> ms: rows built before then flash
    renderQueued: false,
    lastRender: 0,
  };

  // ---- small helpers ----

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const serverNow = () => Date.now() + app.skew;
  const pad = (n, w = 2) => String(n).padStart(w, '0');

  function fmtTime(ms) {
    if (ms === null || ms === undefined) return '—';
    const d = new Date(ms);
    const t = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    if (new Date().toDateString() === d.toDateString()) return t;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${t}`;
  }

  function fmtDuration(ms) {
    let s = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(s / 3600);
    s -= h * 3600;
    const m = Math.floor(s / 60);
    s -= m * 60;
    if (h) return `${h}h ${pad(m)}m ${pad(s)}s`;
    if (m) return `${m}m ${pad(s)}s`;
    return `${s}s`;
  }

  const fmtPct = (x) => (x === null || x === undefined ? '—' : `${(x * 100).toFixed(1)}%`);
  const fmtInt = (x) => (x === null || x === undefined ? '—' : Number(x).toLocaleString('en-US'));

  // The state a device sees now: a lock past its until has expired, as the
  // server computes it (ctl_region_state), between two updates.
  function liveState(r) {
    if (r.state === 'locked' && r.until !== null && r.until <= serverNow()) return 'expired';
    return r.state || 'unlocked';
  }

  function badge(stateName) {
    return el('span', `badge ${stateName}`, stateName);
  }

  // "403 forbidden: needs role operator; vic has viewer", from the API's
  // error object {error, field, detail, request_id}.
  function errorText(res) {
    const b = res.body && typeof res.body === 'object' ? res.body : {};
    let s = res.status ? `${res.status} ` : '';
    s += b.error || (res.status ? 'error' : 'network error');
    if (b.field) s += ` (${b.field})`;
    if (b.detail) s += `: ${b.detail}`;
    if (b.request_id) s += ` [${b.request_id}]`;
    return s;
  }

  // ---- the API ----

  // One API call with the token: {status, body} (status 0: no answer).
  // A 401 outside sign-in ends the session (the token was revoked).
  async function api(method, path, body, signingIn) {
    const headers = { Authorization: `Bearer ${app.token}`, Accept: 'application/json' };
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      return { status: 0, body: { error: 'network_error', detail: String(e && e.message ? e.message : e) } };
    }
    let data = null;
    try {
      data = await res.json();
    } catch (_) {
      data = null;
    }
    if (res.status === 401 && !signingIn) signOut('The token was refused (401 unauthorized): sign in again.');
    return { status: res.status, body: data };
  }

  // ---- sign-in ----

  function showLogin(message) {
    $('app').hidden = true;
    $('signout').hidden = true;
    $('unlock-all').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = message || '';
    $('token').value = '';
    $('token').focus();
  }

  function signOut(message) {
    app.gen++;
    app.token = null;
    if (app.streamAbort) app.streamAbort.abort();
    sessionStorage.removeItem(TOKEN_KEY);
    app.regions.clear();
    app.rows.clear();
    $('rows').textContent = '';
    app.selected = null;
    $('detail').hidden = true;
    const dlg = $('action');
    if (dlg.open) dlg.close();
    setConn('idle', 'not connected');
    showLogin(message);
  }

  async function signIn(token) {
    app.token = token;
    const res = await api('GET', '/v1/regions', undefined, true);
    if (res.status !== 200) {
      app.token = null;
      return res;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $('login').hidden = true;
    $('app').hidden = false;
    $('signout').hidden = false;
    $('unlock-all').hidden = false;
    setSnapshot(res.body.now, res.body.regions);
    const gen = ++app.gen;
    streamLoop(gen);
    return res;
  }

  // ---- the table ----

  function setSnapshot(now, regions) {
    if (typeof now === 'number') app.skew = now - Date.now();
    app.regions.clear();
    for (const r of regions || []) app.regions.set(r.region, r);
    app.lastHeard = Date.now();
    scheduleRender();
    refreshDetail(false);
  }

  function upsert(r, flash) {
    if (!r || typeof r.region !== 'string') return;
    const old = app.regions.get(r.region);
    app.regions.set(r.region, r);
    app.lastHeard = Date.now();
    // A state change flashes the row (when it is rebuilt below).
    if (flash && old && liveState(old) !== liveState(r)) app.flashUntil.set(r.region, Date.now() + 1000);
    scheduleRender();
    if (r.region === app.selected) refreshDetail(false);
  }

  // At most one render per RENDER_MIN_MS, however fast events come (a big
  // fleet sends many score events a second).
  function scheduleRender() {
    if (app.renderQueued) return;
    app.renderQueued = true;
    const wait = Math.max(0, app.lastRender + RENDER_MIN_MS - Date.now());
    setTimeout(() => requestAnimationFrame(() => {
      app.renderQueued = false;
      app.lastRender = Date.now();
      render();
    }), wait);
  }

  function sortValue(r, key) {
    switch (key) {
      case 'state': return STATE_ORDER[liveState(r)] ?? 9;
      case 'until': return liveState(r) === 'locked' ? r.until : null;
      default: return r[key] ?? null;
    }
  }

  function sorted() {
    const { key, dir } = app.sort;
    const f = app.filter;
    const list = [];
    for (const r of app.regions.values()) {
      if (f && !r.region.toLowerCase().includes(f) &&
          !(r.reason || '').toLowerCase().includes(f)) continue;
      list.push(r);
    }
    list.sort((a, b) => {
      const x = sortValue(a, key);
      const y = sortValue(b, key);
      if (x === null && y !== null) return 1; // unknowns last either way
      if (y === null && x !== null) return -1;
      if (x !== null && y !== null && x !== y) {
        if (typeof x === 'string') return dir * x.localeCompare(y);
        return dir * (x < y ? -1 : 1);
      }
      return a.region.localeCompare(b.region);
    });
    return list;
  }

  function shareCell(r) {
    const td = el('td', 'share-cell');
    const wrap = el('div', 'share');
    const bar = el('div', 'bar');
    const text = el('span', 'val');
    if (typeof r.share === 'number') {
      const lo = Math.max(0, Math.min(1, r.lo ?? r.share));
      const hi = Math.max(lo, Math.min(1, r.hi ?? r.share));
      const band = el('div', 'band');
      band.style.left = `${lo * 100}%`;
      band.style.width = `${Math.max(0.8, (hi - lo) * 100)}%`;
      const tick = el('div', 'tick');
      tick.style.left = `${Math.max(0, Math.min(1, r.share)) * 100}%`;
      bar.append(band, tick);
      text.append(el('b', null, fmtPct(r.share)), ' ', el('small', null, `${fmtPct(lo)}–${fmtPct(hi)}`));
      td.title = `grey share ${fmtPct(r.share)}, 95% Wilson interval ${fmtPct(lo)} to ${fmtPct(hi)}`;
    } else {
      text.textContent = 'no score yet';
      text.classList.add('muted');
    }
    wrap.append(bar, text);
    td.append(wrap);
    return td;
  }

  function countdownCell(r) {
    const td = el('td', 'countdown');
    if (r.state === 'locked' && r.until !== null) td.dataset.until = String(r.until);
    else if (r.pin_until !== null && r.pin_until !== undefined) td.dataset.pin = String(r.pin_until);
    updateCountdown(td);
    return td;
  }

  // Fills a countdown element from its data-until (lock) or data-pin.
  function updateCountdown(node) {
    const now = serverNow();
    if (node.dataset.until) {
      const left = Number(node.dataset.until) - now;
      node.textContent = left > 0 ? fmtDuration(left) : 'expired';
      node.classList.toggle('soon', left > 0 && left < 60000);
      node.title = `until ${fmtTime(Number(node.dataset.until))}`;
    } else if (node.dataset.pin) {
      const left = Number(node.dataset.pin) - now;
      node.textContent = left > 0 ? `pinned ${fmtDuration(left)}` : '—';
      node.classList.add('muted');
      node.title = left > 0 ? `no automatic lock until ${fmtTime(Number(node.dataset.pin))}` : '';
    } else {
      node.textContent = '—';
      node.classList.add('muted');
    }
  }

  function actionButtons(r) {
    const td = el('td', 'actions');
    const lock = el('button', 'small', 'Lock');
    lock.type = 'button';
    lock.dataset.action = 'lock';
    td.append(lock);
    if (liveState(r) !== 'unlocked') {
      const unlock = el('button', 'small', 'Unlock');
      unlock.type = 'button';
      unlock.dataset.action = 'unlock';
      td.append(unlock);
    }
    return td;
  }

  function buildRow(r) {
    const tr = el('tr');
    tr.dataset.region = r.region;
    tr.tabIndex = 0; // Enter opens the detail
    const st = liveState(r);
    tr.dataset.state = st;
    tr.append(el('td', 'code', r.region));
    tr.append(el('td', 'num', fmtInt(r.devices)));
    tr.append(el('td', 'num', fmtInt(r.grey)));
    tr.append(shareCell(r));
    const stTd = el('td', 'state');
    stTd.append(badge(st));
    tr.append(stTd);
    tr.append(el('td', r.scope ? '' : 'muted', r.scope || '—'));
    const reason = el('td', 'reason');
    if (r.reason) {
      reason.append(el('span', st === 'unlocked' ? 'muted' : '', r.reason));
      if (r.message) reason.append(el('small', null, r.message));
      reason.title = r.message ? `${r.reason}\n${r.message}` : r.reason;
    } else {
      reason.textContent = '—';
      reason.classList.add('muted');
    }
    tr.append(reason);
    tr.append(countdownCell(r));
    tr.append(el('td', r.mode ? '' : 'muted', r.mode || '—'));
    tr.append(actionButtons(r));
    if (r.region === app.selected) tr.classList.add('selected');
    if ((app.flashUntil.get(r.region) || 0) > Date.now()) tr.classList.add('flash');
    tr.addEventListener('animationend', () => tr.classList.remove('flash'));
    return tr;
  }

  function render() {
    const tbody = $('rows');
    const list = sorted();
    const seen = new Set();
    let i = 0;
    for (const r of list) {
      seen.add(r.region);
      // Rebuilt when anything shown changed; kept (with its animation) if not.
      const sig = JSON.stringify(r) + liveState(r);
      let tr = app.rows.get(r.region);
      if (!tr || tr.dataset.sig !== sig) {
        const fresh = buildRow(r);
        fresh.dataset.sig = sig;
        if (tr) tr.replaceWith(fresh);
        tr = fresh;
        app.rows.set(r.region, tr);
      }
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
      i++;
    }
    for (const [code, tr] of app.rows) {
      if (!seen.has(code)) {
        tr.remove();
        if (!app.regions.has(code)) app.rows.delete(code);
      }
    }
    $('empty').hidden = app.regions.size !== 0;
    for (const th of document.querySelectorAll('#regions th[data-key]')) {
      if (th.dataset.key === app.sort.key) th.setAttribute('aria-sort', app.sort.dir > 0 ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    }
    renderSummary();
  }

  function renderSummary() {
    const counts = { locked: 0, expired: 0, shadow: 0 };
    let devices = 0;
    let grey = 0;
    for (const r of app.regions.values()) {
      const st = liveState(r);
      if (st in counts) counts[st]++;
      devices += r.devices || 0;
      grey += r.grey || 0;
    }
    const cards = [
      ['regions', app.regions.size, ''],
      ['locked', counts.locked, counts.locked ? 'locked' : ''],
      ['expired', counts.expired, ''],
      ['shadow', counts.shadow, ''],
      ['devices', fmtInt(devices), ''],
      ['grey devices', fmtInt(grey), ''],
    ];
    const box = $('summary');
    box.textContent = '';
    for (const [label, value, cls] of cards) {
      const c = el('div', `card ${cls}`);
      c.dataset.card = label;
      c.append(el('b', null, value), el('span', null, label));
      box.append(c);
    }
  }

  // Once a second: countdowns, expiries (a lock past its until turns
  // "expired" without waiting for the server), and the freshness line.
  function tick() {
    let changed = false;
    for (const r of app.regions.values()) {
      const tr = app.rows.get(r.region);
      if (tr && tr.dataset.state !== liveState(r)) changed = true;
    }
    if (changed) scheduleRender();
    for (const node of document.querySelectorAll('[data-until], [data-pin]')) updateCountdown(node);
    if (app.lastHeard) {
      const ago = Math.round((Date.now() - app.lastHeard) / 1000);
      $('updated').textContent = `last update ${ago < 2 ? 'just now' : `${ago} s ago`} · server clock ${fmtTime(serverNow())}`;
    }
  }

  // ---- live updates ----

  function setConn(stateName, text) {
    const c = $('conn');
    c.dataset.state = stateName;
    $('conn-text').textContent = text;
  }

  // Feeds text chunks; calls onEvent(type, data, id) per complete event.
  // Lines end in \n, \r\n or \r; ":" starts a comment (the server's ping).
  function sseParser(onEvent) {
    let buf = '';
    let type = '';
    let data = [];
    let id = null;
    return (chunk) => {
      buf += chunk;
      for (;;) {
        const m = /\r\n|\r|\n/.exec(buf);
        if (!m) break;
        if (m[0] === '\r' && m.index === buf.length - 1) break; // \n may follow
        const line = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        if (line === '') {
          if (data.length) onEvent(type || 'message', data.join('\n'), id);
          type = '';
          data = [];
          continue;
        }
        if (line[0] === ':') continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? '' : line.slice(colon + 1);
        if (value[0] === ' ') value = value.slice(1);
        if (field === 'event') type = value;
        else if (field === 'data') data.push(value);
        else if (field === 'id' && !value.includes('\0')) id = value;
      }
    };
  }

  function onEvent(type, data, id) {
    let obj;
    try {
      obj = JSON.parse(data);
    } catch (_) {
      return; // not ours to show
    }
    if (id !== null) app.lastEventId = id;
    if (type === 'snapshot') setSnapshot(obj.now, obj.regions);
    else if (type === 'score' || type === 'lock') upsert(obj, type === 'lock');
  }

  async function streamLoop(gen) {
    let backoff = 1000;
    while (gen === app.gen) {
      setConn('connecting', 'connecting…');
      const ctl = new AbortController();
      app.streamAbort = ctl;
      let watchdog = null;
      let status = 0;
      try {
        const headers = { Authorization: `Bearer ${app.token}`, Accept: 'text/event-stream' };
        if (app.lastEventId !== null) headers['Last-Event-ID'] = app.lastEventId;
        const res = await fetch('/v1/stream', { headers, signal: ctl.signal, cache: 'no-store' });
        status = res.status;
        if (status === 401) {
          signOut('The token was refused (401 unauthorized): sign in again.');
          return;
        }
        if (status === 404 || status === 405) {
          // A server without the stream: fall back to polling the list.
          pollLoop(gen);
          return;
        }
        if (!res.ok || !res.body) throw new Error(`HTTP ${status}`);
        setConn('live', 'live');
        backoff = 1000;
        let last = Date.now();
        watchdog = setInterval(() => {
          if (Date.now() - last > STALL_MS) ctl.abort();
        }, 5000);
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        const feed = sseParser(onEvent);
        for (;;) {
          const { value, done } = await reader.read();
          if (done || gen !== app.gen) break;
          last = Date.now();
          feed(value);
        }
      } catch (_) {
        // aborted, refused or cut: retried below
      } finally {
        if (watchdog) clearInterval(watchdog);
      }
      if (gen !== app.gen) return;
      const wait = backoff;
      backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
      const secs = Math.round(wait / 1000);
      if (status === 0) setConn('offline', `disconnected: retrying in ${secs} s`);
      else if (status === 200) setConn('retrying', `stream ended: reconnecting in ${secs} s`);
      else setConn('retrying', `stream answered ${status}: retrying in ${secs} s`);
      await sleep(wait);
    }
  }

  async function pollLoop(gen) {
    while (gen === app.gen) {
      const res = await api('GET', '/v1/regions');
      if (gen !== app.gen) return;
      if (res.status === 200) {
        setConn('polling', `polling every ${POLL_MS / 1000} s (no stream)`);
        setSnapshot(res.body.now, res.body.regions);
      } else {
        setConn('offline', `offline: ${errorText(res)}`);
      }
      await sleep(POLL_MS);
    }
  }

  // ---- region detail ----

  function select(code) {
    app.selected = code;
    app.detail = null;
    for (const [c, tr] of app.rows) tr.classList.toggle('selected', c === code);
    refreshDetail(true);
  }

  // Redraws the detail from the table at once; fetches the history now
  // (force) or when the last fetch is older than HISTORY_REFRESH_MS.
  async function refreshDetail(force) {
    const code = app.selected;
    if (!code) return;
    renderDetail();
    if (!force && Date.now() - app.detailFetched < HISTORY_REFRESH_MS) return;
    app.detailFetched = Date.now();
    const res = await api('GET', `/v1/regions/${encodeURIComponent(code)}`);
    if (code !== app.selected) return;
    app.detail = res.status === 200 ? res.body : { error: errorText(res) };
    renderDetail();
  }

  function renderDetail() {
    const code = app.selected;
    const box = $('detail');
    if (!code) {
      box.hidden = true;
      return;
    }
    const r = app.regions.get(code) || (app.detail && app.detail.region === code ? app.detail : null);
    box.hidden = false;
    box.textContent = '';
    const h = el('h2', null, code);
    if (r) h.append(badge(liveState(r)));
    const close = el('button', 'small close', '×');
    close.type = 'button';
    close.title = 'Close';
    close.addEventListener('click', () => {
      app.selected = null;
      for (const tr of app.rows.values()) tr.classList.remove('selected');
      renderDetail();
    });
    h.append(close);
    box.append(h);
    if (!r) {
      box.append(el('p', 'muted', 'This region is not in the table.'));
      return;
    }
    const dl = el('dl');
    const row = (k, v, cls) => {
      const dd = el('dd', cls, v);
      dl.append(el('dt', null, k), dd);
      return dd;
    };
    row('devices', `${fmtInt(r.devices)} (${fmtInt(r.grey)} grey)`);
    row('grey share', typeof r.share === 'number' ? `${fmtPct(r.share)}, bounds ${fmtPct(r.lo)} – ${fmtPct(r.hi)}` : 'no score yet');
    row('scored at', fmtTime(r.score_ts));
    row('policy', r.mode || '—');
    row('state', liveState(r));
    if (r.lock_id) {
      row('scope', r.scope || '—');
      row('source', r.source || '—');
      row('actor', r.actor || '—');
      row('reason', r.reason || '—');
      row('message', r.message || '—');
      row('since', fmtTime(r.since));
      if (r.until !== null) {
        const dd = row('until', '');
        dd.append(`${fmtTime(r.until)} · `);
        const cd = el('span', 'countdown');
        if (r.state === 'locked') cd.dataset.until = String(r.until);
        dd.append(cd);
        updateCountdown(cd);
      }
      if (r.pin_until !== null) row('pinned until', fmtTime(r.pin_until));
      row('record', r.lock_id);
    }
    box.append(dl);
    const buttons = el('div', 'buttons');
    const lock = el('button', 'small', 'Lock');
    lock.type = 'button';
    lock.addEventListener('click', () => openAction('lock', code));
    const unlock = el('button', 'small', 'Unlock');
    unlock.type = 'button';
    unlock.addEventListener('click', () => openAction('unlock', code));
    buttons.append(lock, unlock);
    box.append(buttons);
    renderHistory(box);
  }

  function renderHistory(box) {
    box.append(el('h3', null, 'Recent history'));
    const d = app.detail;
    if (!d) {
      box.append(el('p', 'muted history-state', 'loading…'));
      return;
    }
    if (d.error) {
      box.append(el('p', 'error history-state', d.error));
      return;
    }
    const hist = d.history;
    const scores = hist && Array.isArray(hist.scores) ? hist.scores : [];
    const locks = hist && Array.isArray(hist.locks) ? hist.locks : [];
    if (!scores.length && !locks.length) {
      box.append(el('p', 'muted history-state', 'no history'));
      return;
    }
    if (scores.length) {
      box.append(sparkline(scores, locks));
      box.append(el('div', 'legend', `grey share (line) and its bounds (band), ${scores.length} scores; red: locked`));
    }
    if (locks.length) {
      const t = el('table', 'history');
      for (const lk of locks.slice(-8).reverse()) {
        const tr = el('tr');
        tr.append(el('td', null, fmtTime(lk.since)));
        const st = el('td');
        st.append(badge(lk.state || '?'));
        tr.append(st);
        tr.append(el('td', null, `${lk.actor || lk.source || ''}`));
        tr.append(el('td', null, lk.reason || ''));
        t.append(tr);
      }
      box.append(t);
    }
  }

  // share (line) with lo..hi (band) over time; locked periods shaded.
  function sparkline(scores, locks) {
    const W = 320;
    const H = 90;
    const top = 10;
    const bottom = 14;
    const pts = scores.filter((s) => typeof s.ts === 'number' && typeof s.share === 'number');
    const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'spark', role: 'img' });
    if (!pts.length) return s;
    const t0 = pts[0].ts;
    const t1 = pts.length > 1 ? pts[pts.length - 1].ts : t0 + 1;
    const ymax = Math.min(1, Math.max(0.05, ...pts.map((p) => p.hi ?? p.share)) * 1.1);
    const x = (t) => ((t - t0) / Math.max(1, t1 - t0)) * W;
    const y = (v) => top + (1 - Math.min(v, ymax) / ymax) * (H - top - bottom);
    for (let i = 0; i < locks.length; i++) {
      const lk = locks[i];
      if (lk.state !== 'locked') continue;
      let end = lk.until ?? t1;
      if (i + 1 < locks.length && typeof locks[i + 1].since === 'number') end = Math.min(end, locks[i + 1].since);
      const a = Math.max(t0, lk.since);
      const b = Math.min(t1, end);
      if (b > a) {
        const rect = svg('rect', { x: x(a), y: top, width: x(b) - x(a), height: H - top - bottom, fill: '#c62828', opacity: 0.12 });
        s.append(rect);
      }
    }
    s.append(svg('line', { x1: 0, y1: y(0), x2: W, y2: y(0), class: 'axis' }));
    const upper = pts.map((p) => `${x(p.ts).toFixed(1)},${y(p.hi ?? p.share).toFixed(1)}`);
    const lower = pts.map((p) => `${x(p.ts).toFixed(1)},${y(p.lo ?? p.share).toFixed(1)}`).reverse();
    s.append(svg('polygon', { points: upper.concat(lower).join(' '), class: 'band' }));
    if (pts.length > 1) {
      s.append(svg('polyline', { points: pts.map((p) => `${x(p.ts).toFixed(1)},${y(p.share).toFixed(1)}`).join(' '), class: 'line' }));
    } else {
      s.append(svg('circle', { cx: W / 2, cy: y(pts[0].share), r: 3, fill: '#92400e' }));
    }
    const label = (tx, tyy, text, anchor) => {
      const t = svg('text', { x: tx, y: tyy, 'text-anchor': anchor });
      t.textContent = text;
      s.append(t);
    };
    label(2, top - 2, fmtPct(ymax), 'start');
    label(2, H - 2, fmtTime(t0), 'start');
    label(W - 2, H - 2, fmtTime(t1), 'end');
    return s;
  }

  // ---- actions: a dry run first, then Confirm ----

  const ACTIONS = {
    lock: {
      title: (code) => `Lock ${code}`,
      path: (code) => `/v1/regions/${encodeURIComponent(code)}/lock`,
      fields: [
        { name: 'ttl_s', label: 'TTL (s)', type: 'number', value: '600', min: 1 },
        { name: 'scope', label: 'Scope', type: 'select', options: ['grey', 'all'] },
        { name: 'reason', label: 'Reason', type: 'text', required: true, placeholder: 'why, for the audit trail' },
        { name: 'message', label: 'Message', type: 'text', placeholder: 'shown to devices (default if empty)' },
      ],
      confirm: 'Confirm lock',
    },
    unlock: {
      title: (code) => `Unlock ${code}`,
      path: (code) => `/v1/regions/${encodeURIComponent(code)}/unlock`,
      fields: [
        { name: 'reason', label: 'Reason', type: 'text', required: true, placeholder: 'why, for the audit trail' },
        { name: 'pin_s', label: 'Pin (s)', type: 'number', value: '0', min: 0, placeholder: 'no automatic lock for this long' },
      ],
      confirm: 'Confirm unlock',
    },
    'unlock-all': {
      title: () => 'Unlock every locked region',
      path: () => '/v1/locks/unlock-all',
      fields: [
        { name: 'reason', label: 'Reason', type: 'text', required: true, placeholder: 'why, for the audit trail' },
        { name: 'pin_s', label: 'Pin (s)', type: 'number', value: '0', min: 0, placeholder: 'no automatic lock for this long' },
      ],
      confirm: 'Confirm unlock all',
    },
  };

  const dlgState = { kind: null, code: null, body: null };

  function openAction(kind, code) {
    const spec = ACTIONS[kind];
    dlgState.kind = kind;
    dlgState.code = code || null;
    dlgState.body = null;
    $('action-title').textContent = spec.title(code);
    const box = $('action-fields');
    box.textContent = '';
    for (const f of spec.fields) {
      const row = el('div', 'field');
      const id = `f-${f.name}`;
      const label = el('label', null, f.label);
      label.htmlFor = id;
      let input;
      if (f.type === 'select') {
        input = el('select');
        for (const o of f.options) input.append(new Option(o, o));
      } else {
        input = el('input');
        input.type = f.type;
        if (f.value !== undefined) input.value = f.value;
        if (f.min !== undefined) input.min = String(f.min);
        if (f.placeholder) input.placeholder = f.placeholder;
      }
      input.id = id;
      input.name = f.name;
      if (f.required) input.required = true;
      row.append(label, input);
      box.append(row);
    }
    $('action-preview').textContent = '';
    $('action-preview').className = 'preview';
    $('action-error').textContent = '';
    $('action-confirm').textContent = spec.confirm;
    $('action-confirm').disabled = true;
    $('action-dry').disabled = false;
    const dlg = $('action');
    if (!dlg.open) dlg.showModal();
    const first = box.querySelector('[required]') || box.querySelector('input, select');
    if (first) first.focus();
  }

  function formBody() {
    const body = {};
    for (const f of ACTIONS[dlgState.kind].fields) {
      const v = $(`f-${f.name}`).value.trim();
      if (v === '') continue;
      body[f.name] = f.type === 'number' ? Number(v) : v;
    }
    return body;
  }

  function previewBox(title, pairs, note, cls) {
    const box = $('action-preview');
    box.textContent = '';
    box.className = `preview ${cls || ''}`;
    box.append(el('h3', null, title));
    const dl = el('dl');
    for (const [k, v] of pairs) dl.append(el('dt', null, k), el('dd', null, v));
    box.append(dl);
    if (note) box.append(el('p', 'note', note));
  }

  async function dryRun() {
    const spec = ACTIONS[dlgState.kind];
    const body = formBody();
    $('action-error').textContent = '';
    $('action-confirm').disabled = true;
    dlgState.body = null;
    $('action-dry').disabled = true;
    const res = await api('POST', spec.path(dlgState.code), { ...body, dry_run: true });
    $('action-dry').disabled = false;
    if (res.status !== 200) {
      $('action-preview').textContent = '';
      $('action-error').textContent = errorText(res);
      return;
    }
    showDryRun(res.body, body);
    dlgState.body = body;
    $('action-confirm').disabled = false;
  }

  function showDryRun(b, body) {
    if (dlgState.kind === 'lock') {
      const est = b.estimated_devices === null || b.estimated_devices === undefined
        ? 'unknown (no score yet)' : fmtInt(b.estimated_devices);
      const w = b.would_write || {};
      previewBox('Dry run: nothing written', [
        ['regions affected', `1: ${b.region}`],
        ['estimated devices', est],
        ['scope', b.scope || body.scope || 'grey'],
        ['now', b.before ? `${b.before.state} (${b.before.reason || ''})` : 'no lock record'],
        ['would write', `${w.state || 'locked'} until ${fmtTime(w.until)}`],
        ['request', b.request_id || ''],
      ], b.needs_approval
        ? 'Over the two-person threshold: Confirm creates a request that another admin must approve.'
        : null);
    } else {
      // The server lists what the unlock would write a record for, each
      // with its state now and the devices its lock holds back (0 when no
      // lock is in force), and their sum: the devices let through again.
      const affected = (Array.isArray(b.regions) ? b.regions : []).filter((r) => r.state !== 'unlocked');
      const est = b.estimated_devices === null || b.estimated_devices === undefined
        ? 'unknown (no score yet)' : fmtInt(b.estimated_devices);
      const w = (Array.isArray(b.would_write) ? b.would_write[0] : b.would_write) || {};
      const pinned = typeof w.pin_until === 'number' && typeof w.since === 'number'
        ? `, pinned ${fmtDuration(w.pin_until - w.since)}` : '';
      const pairs = [
        ['regions affected', affected.length ? `${affected.length}: ${affected.map((r) => r.region).join(', ')}` : '0'],
        ['estimated devices', est],
      ];
      if (dlgState.kind === 'unlock') {
        pairs.push(['now', b.before ? `${b.before.state} (${b.before.reason || ''})` : 'no lock record']);
      }
      pairs.push(['would write', `unlocked${pinned}`], ['request', b.request_id || '']);
      previewBox('Dry run: nothing written', pairs);
    }
  }

  // The region object as it is after our own record (the stream confirms
  // it; until then the table does not lag behind the answer).
  function applyRecord(rec) {
    if (!rec || !rec.region) return;
    const r = { ...(app.regions.get(rec.region) || { region: rec.region }) };
    Object.assign(r, {
      state: rec.state, scope: rec.scope, source: rec.source, reason: rec.reason,
      message: rec.message, actor: rec.actor, lock_id: rec.id, since: rec.since,
      until: rec.until ?? null, pin_until: rec.pin_until ?? null,
    });
    upsert(r, true);
  }

  async function confirmAction() {
    if (!dlgState.body) return;
    const spec = ACTIONS[dlgState.kind];
    $('action-confirm').disabled = true;
    $('action-dry').disabled = true;
    $('action-error').textContent = '';
    const res = await api('POST', spec.path(dlgState.code), dlgState.body);
    $('action-dry').disabled = false;
    const b = res.body || {};
    if (res.status === 202) {
      previewBox('Waiting for a second admin', [
        ['request', b.request_id || ''],
        ['estimated devices', fmtInt(b.estimated_devices)],
        ['threshold', fmtInt(b.threshold)],
        ['expires', fmtTime(b.expires_at)],
      ], `Nothing is locked yet: another admin approves with POST /v1/requests/${b.request_id}/approve.`, 'pending');
      dlgState.body = null;
      return;
    }
    if (res.status !== 200) {
      $('action-error').textContent = errorText(res);
      $('action-confirm').disabled = false;
      return;
    }
    dlgState.body = null;
    if (Array.isArray(b.records)) b.records.forEach(applyRecord);
    else applyRecord(b.record);
    if (dlgState.kind === 'lock') {
      previewBox(`Locked ${b.region}`, [
        ['until', fmtTime(b.record && b.record.until)],
        ['estimated devices', b.estimated_devices === null ? 'unknown' : fmtInt(b.estimated_devices)],
        ['request', b.request_id || ''],
        ['audited', b.audited ? 'yes' : 'NO: check the service log'],
      ], null, 'done');
    } else if (dlgState.kind === 'unlock') {
      previewBox(`Unlocked ${b.region}`, [
        ['pinned until', b.record && b.record.pin_until ? fmtTime(b.record.pin_until) : '—'],
        ['request', b.request_id || ''],
        ['audited', b.audited ? 'yes' : 'NO: check the service log'],
      ], null, 'done');
    } else {
      previewBox('Unlocked all', [
        ['unlocked', (b.unlocked || []).join(', ') || 'none'],
        ['failed', (b.failed || []).join(', ') || 'none'],
        ['request', b.request_id || ''],
        ['audited', b.audited ? 'yes' : 'NO: check the service log'],
      ], null, 'done');
    }
  }

  // ---- wiring ----

  function wire() {
    $('login-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const token = $('token').value.trim();
      if (!token) return;
      $('login-error').textContent = '';
      const res = await signIn(token);
      if (res.status !== 200) $('login-error').textContent = errorText(res);
    });
    $('signout').addEventListener('click', () => signOut(''));
    $('unlock-all').addEventListener('click', () => openAction('unlock-all', null));
    $('filter').addEventListener('input', (ev) => {
      app.filter = ev.target.value.trim().toLowerCase();
      scheduleRender();
    });
    for (const th of document.querySelectorAll('#regions th[data-key]')) {
      th.tabIndex = 0;
      const go = () => {
        const key = th.dataset.key;
        if (app.sort.key === key) app.sort.dir = -app.sort.dir;
        else app.sort = { key, dir: ['devices', 'grey', 'share'].includes(key) ? -1 : 1 };
        scheduleRender();
      };
      th.addEventListener('click', go);
      th.addEventListener('keydown', (ev) => {
        if (ev.key === 'Enter' || ev.key === ' ') {
          ev.preventDefault();
          go();
        }
      });
    }
    $('rows').addEventListener('click', (ev) => {
      const tr = ev.target.closest('tr[data-region]');
      if (!tr) return;
      const button = ev.target.closest('button[data-action]');
      if (button) openAction(button.dataset.action, tr.dataset.region);
      else select(tr.dataset.region);
    });
    $('rows').addEventListener('keydown', (ev) => {
      const tr = ev.target;
      if (ev.key === 'Enter' && tr.matches && tr.matches('tr[data-region]')) select(tr.dataset.region);
    });
    $('action-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      dryRun();
    });
    // Any edit after a preview needs a new preview before Confirm.
    $('action-fields').addEventListener('input', () => {
      if (!dlgState.body) return;
      dlgState.body = null;
      $('action-confirm').disabled = true;
      $('action-preview').textContent = '';
    });
    $('action-confirm').addEventListener('click', confirmAction);
    $('action-cancel').addEventListener('click', () => $('action').close());
    setInterval(tick, 1000);
  }

  async function start() {
    wire();
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) {
      const res = await signIn(saved);
      if (res.status !== 200) {
        sessionStorage.removeItem(TOKEN_KEY);
        showLogin(res.status === 401 ? 'The saved token was refused: sign in again.' : errorText(res));
      }
      return;
    }
    showLogin('');
  }

  start();
})();
