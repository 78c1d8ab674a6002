// Prism live dashboard: polls /api/dashboard each second with an admin token, turns byte
// counters into bitrates and draws the last minute of each as a small canvas chart.

const POLL_MS = 1000;
const HISTORY = 60;
const TOKEN_KEY = 'prism.dashboard.token';

const $ = (id) => document.getElementById(id);
/** Per series: the last counter sample and the bitrates computed so far. */
const series = new Map();
let token = takeToken();

/** The token from `#token=...` (then removed from the address bar) or local storage. */
function takeToken() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get('token');
  if (fromHash) {
    localStorage.setItem(TOKEN_KEY, fromHash);
    history.replaceState(null, '', location.pathname);
  }
  return localStorage.getItem(TOKEN_KEY);
}

// A link with `#token=...` opened on this page already (a hash change does not reload).
window.addEventListener('hashchange', () => {
  const had = token;
  token = takeToken();
  if (token !== had) {
    $('login').hidden = true;
    if (!had) poll();
  }
});

$('login').addEventListener('submit', (e) => {
  e.preventDefault();
  token = $('token').value.trim();
  localStorage.setItem(TOKEN_KEY, token);
  $('login').hidden = true;
  /** For tests and the console: the longest history kept, in samples. */
window.prismDashboard = {
  historyLength: () => Math.max(0, ...[...series.values()].map((s) => s.values.length)),
};

poll();
});

function askToken(message) {
  token = null;
  $('login').hidden = false;
  $('login-error').textContent = message ?? '';
  $('status').textContent = 'not signed in';
}

/** Records a counter sample; returns bits per second since the previous one. */
function rate(key, bytes, atMs) {
  let s = series.get(key);
  if (!s) {
    s = { bytes, atMs, values: [], seen: true };
    series.set(key, s);
    return null;
  }
  const seconds = (atMs - s.atMs) / 1000;
  let bps = null;
  if (seconds > 0 && bytes >= s.bytes) bps = ((bytes - s.bytes) * 8) / seconds;
  s.bytes = bytes;
  s.atMs = atMs;
  s.seen = true;
  if (bps !== null) push(s, bps);
  return bps;
}

/** Records a value as it is (estimates, allocations). */
function gauge(key, value) {
  let s = series.get(key);
  if (!s) series.set(key, (s = { values: [] }));
  s.seen = true;
  if (value !== null && value !== undefined) push(s, value);
  return value;
}

function push(s, v) {
  s.values.push(v);
  if (s.values.length > HISTORY) s.values.shift();
}

function bitrate(bps) {
  if (bps === null || bps === undefined) return '–';
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(2)} Mbps`;
  if (bps >= 1e3) return `${(bps / 1e3).toFixed(0)} kbps`;
  return `${Math.round(bps)} bps`;
}

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** A chart of the named series (key:color pairs), drawn after the markup is in place. */
const chart = (...lines) => `<canvas width="340" height="72" data-series="${esc(lines.join(' '))}"></canvas>`;

function draw(canvas) {
  const ctx = canvas.getContext('2d');
  const { width: w, height: h } = canvas;
  ctx.clearRect(0, 0, w, h);
  const lines = canvas.dataset.series.split(' ').map((l) => {
    const at = l.lastIndexOf('|');
    return { values: series.get(l.slice(0, at))?.values ?? [], color: l.slice(at + 1) };
  });
  const max = Math.max(1, ...lines.flatMap((l) => l.values));
  ctx.lineWidth = 2;
  for (const { values, color } of lines) {
    ctx.strokeStyle = color;
    ctx.beginPath();
    values.forEach((v, i) => {
      const x = w - (values.length - 1 - i) * (w / (HISTORY - 1));
      const y = h - 4 - (v / max) * (h - 8);
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
  ctx.fillStyle = '#8796a5';
  ctx.font = '20px system-ui';
  ctx.fillText(bitrate(max), 6, 22);
}

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

function renderParticipant(p, at) {
  const sentKeys = [];
  let sent = 0;
  const published = p.published.map((t) => {
    const layers = t.layers.map((l) => {
      const key = `pub:${t.sid}:${l.ssrc}`;
      sentKeys.push(key);
      const bps = rate(key, l.bytes, at) ?? 0;
      sent += bps;
      const size = l.width ? ` ${l.width}×${l.height}` : '';
      return `<span class="${l.arriving ? '' : 'off'}">${esc(l.rid || 'single')}${size} ${bitrate(bps)}</span>`;
    });
    const total = t.layers.reduce((sum, l) => sum + (series.get(`pub:${t.sid}:${l.ssrc}`)?.values.at(-1) ?? 0), 0);
    gauge(`pubtotal:${t.sid}`, total);
    return `<div class="row"><div class="label"><span class="tag">${t.kind}</span> ${esc(t.name || t.sid)}
        <span class="dim">${esc(t.mime_type)} → ${t.subscribers}</span>
        <div class="layers">${layers.join(' · ')}</div></div>${chart(`pubtotal:${t.sid}|${css('--sent')}`)}</div>`;
  });
  let received = 0;
  const subscribed = p.subscribed.map((d) => {
    const key = `sub:${p.sid}:${d.track_sid}`;
    const bps = rate(key, d.bytes, at) ?? 0;
    received += bps;
    const loss = d.loss === null || d.loss === undefined ? '–' : `${(d.loss * 100).toFixed(1)}%`;
    const layer = d.paused ? 'paused' : d.layer === null ? 'waiting' : d.layer || 'single';
    return `<div class="row"><div class="label"><span class="tag">${d.kind}</span> ${esc(d.publisher)} ${esc(d.name)}
        <div class="layers">layer ${esc(layer)} · ${bitrate(bps)} · loss ${loss} · rtt ${d.rtt_ms ?? '–'} ms</div></div>
        ${chart(`${key}|${css('--recv')}`)}</div>`;
  });
  gauge(`est:${p.sid}`, p.estimate_bps);
  gauge(`alloc:${p.sid}`, p.allocated_bps);
  const downlink = p.estimate_bps === null && p.allocated_bps === null ? ''
    : `<div class="row"><div class="label">downlink
        <div class="layers legend"><i style="background:${css('--est')}"></i>estimate ${bitrate(p.estimate_bps)}</div>
        <div class="layers legend"><i style="background:${css('--alloc')}"></i>allocated ${bitrate(p.allocated_bps)}</div></div>
        ${chart(`est:${p.sid}|${css('--est')}`, `alloc:${p.sid}|${css('--alloc')}`)}</div>`;
  return `<div class="participant" data-identity="${esc(p.identity)}" data-sent-bps="${Math.round(sent)}" data-received-bps="${Math.round(received)}">
      <div class="who"><b>${esc(p.name || p.identity)}</b><span class="dim">${esc(p.sid)}</span>
        <span class="tag ${p.state}">${p.state}</span><span class="dim">rtt ${p.rtt_ms ?? '–'} ms</span></div>
      ${downlink}
      <div class="section">sends ${bitrate(sent)}</div>${published.join('') || '<div class="dim">nothing</div>'}
      <div class="section">receives ${bitrate(received)}</div>${subscribed.join('') || '<div class="dim">nothing</div>'}
    </div>`;
}

function render(snap) {
  for (const s of series.values()) s.seen = false;
  const rooms = snap.rooms.map((r) => `<section class="room" data-room="${esc(r.name)}">
      <h2>${esc(r.name)}<span class="meta">${esc(r.sid)} · worker ${r.worker} · ${r.participants.length} participants</span></h2>
      <div class="participants">${r.participants.map((p) => renderParticipant(p, snap.at_ms)).join('')}</div></section>`);
  const workers = snap.workers.map((w) => {
    const pps = (rate(`fwd:${w.index}`, w.rtp_forwarded, snap.at_ms) ?? 0) / 8;
    return `<span>worker ${w.index}: ${w.connections} connections, ${Math.round(pps)} packets/s forwarded, ${w.queued_commands} queued${w.answered ? '' : ' <b class="error">stalled</b>'}</span>`;
  });
  // Forget what is gone, so memory follows the rooms on the node.
  for (const [key, s] of series) if (!s.seen) series.delete(key);
  $('rooms').innerHTML = rooms.join('') || '<p class="dim">No rooms.</p>';
  $('workers').innerHTML = workers.join('');
  const participants = snap.rooms.reduce((n, r) => n + r.participants.length, 0);
  $('summary').innerHTML = `<span><b>${snap.rooms.length}</b> rooms</span><span><b id="participant-count">${participants}</b> participants</span>`
    + (snap.draining ? '<span class="error">draining</span>' : '');
  document.querySelectorAll('canvas[data-series]').forEach(draw);
}

async function poll() {
  if (!token) return askToken();
  try {
    const response = await fetch('/api/dashboard', { headers: { Authorization: `Bearer ${token}` } });
    if (response.status === 401 || response.status === 403) {
      const body = await response.json().catch(() => ({}));
      return askToken(body.message ?? `HTTP ${response.status}`);
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
    $('status').className = 'status';
    $('status').textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    $('status').className = 'status error';
    $('status').textContent = `cannot reach the server: ${e.message}`;
  }
  setTimeout(poll, POLL_MS);
}

/** For tests and the console: the longest history kept, in samples. */
window.prismDashboard = {
  historyLength: () => Math.max(0, ...[...series.values()].map((s) => s.values.length)),
};

poll();
