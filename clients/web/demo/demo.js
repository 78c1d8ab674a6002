// The demo conference page: join a room under a name, see everyone's video in a grid, control
// camera, microphone and screen share, pick a quality per remote video, pin one (click it),
// watch live stats and the connection-quality indicator (the server's report on our downlink).
//
// Query parameters (all optional): room, name, autojoin=1 (join without the form), token (use
// this access token instead of asking the server's dev token endpoint), server (the Prism base
// URL to connect to; default this page's origin), camera=0 / microphone=0 (do not publish).

import {
  ConnectErrorReason,
  PauseReason,
  Room,
  RoomEvent,
  TrackKind,
  TrackSource,
  createCameraTrack,
  createMicrophoneTrack,
} from '/sdk/index.js';

const $ = (selector, root = document) => root.querySelector(selector);
const params = new URLSearchParams(location.search);

/** @type {import('/sdk/index.js').Room | null} */
let room = null;
/** Tiles by key: a participant sid, or "<sid>/screen" for a screen share. */
const tiles = new Map();
/** The key of the pinned tile (shown large; its video is pinned at the server), or null. */
let pinnedKey = null;
let statsTimer = null;

// ------------------------------------------------------------------ messages

function showMessage(text, kind = 'error') {
  const box = $('#message');
  box.textContent = text;
  box.className = kind;
  box.dataset.kind = kind;
  box.hidden = !text;
}

const CONNECT_MESSAGES = {
  [ConnectErrorReason.Unauthorized]: (e) => `Your access token was rejected, so you cannot join. (${e.message})`,
  [ConnectErrorReason.Forbidden]: (e) => `Your access token does not allow joining this room. (${e.message})`,
  [ConnectErrorReason.RoomFull]: () => 'This room is full: it has reached its maximum number of participants. Try again later or pick another room.',
  [ConnectErrorReason.RoomNotFound]: () => 'This room does not exist, and the server does not create rooms on join.',
  [ConnectErrorReason.Unreachable]: (e) => `Cannot reach the Prism server (${e.message}). Check that it is running and the address is right.`,
  [ConnectErrorReason.Timeout]: () => 'The server did not answer in time. Try again.',
};

function describe(error) {
  const message = CONNECT_MESSAGES[error?.reason];
  return message ? message(error) : `Could not join: ${error?.message ?? error}`;
}

const mbps = (bps) => `${(bps / 1e6).toFixed(bps < 10e6 ? 1 : 0)} Mbit/s`;

/** The header's indicator: bars for the grade, the server's estimate of our downlink. */
function showQuality(q) {
  const el = $('#quality');
  el.hidden = !q;
  if (!q) {
    delete el.dataset.quality;
    return;
  }
  el.dataset.quality = q.quality;
  $('.estimate', el).textContent = q.estimateBps ? mbps(q.estimateBps) : '–';
  const details = [
    `Connection ${q.quality}`,
    `downlink estimate ${q.estimateBps ? mbps(q.estimateBps) : 'not yet known'}`,
    `receiving ${mbps(q.allocatedBps)} of ${mbps(q.wantedBps)} wanted`,
    `loss ${(q.loss * 100).toFixed(1)}%`,
  ];
  if (q.rttMs) details.push(`rtt ${q.rttMs} ms`);
  if (q.pausedTracks) details.push(`${q.pausedTracks} video paused for bandwidth`);
  el.title = details.join(', ');
}

function setConnection(state) {
  const badge = $('#connection');
  badge.hidden = false;
  badge.textContent = state;
  badge.className = `badge ${state}`;
  document.body.dataset.connection = state;
}

// ------------------------------------------------------------------ joining

async function fetchToken(roomName, name) {
  // A fresh identity per page: two people may pick the same name.
  const identity = `${name.toLowerCase().replace(/[^a-z0-9]+/g, '-')}-${Math.random().toString(36).slice(2, 7)}`;
  let response;
  try {
    response = await fetch('/api/token', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ room: roomName, identity, name }),
    });
  } catch {
    throw Object.assign(new Error('cannot reach the server for a token'), { reason: ConnectErrorReason.Unreachable });
  }
  if (response.status === 404) {
    throw new Error('this server does not mint tokens (it runs with its own API keys): open the page with ?token=<an access token>');
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.message ?? `token request failed (HTTP ${response.status})`);
  return body.token;
}

/** Captures camera and microphone as asked; what fails is reported, not fatal. */
async function captureTracks({ camera, microphone }, failures) {
  const capture = (make, what) =>
    make().catch((e) => {
      failures.push(`${what}: ${e.message}`);
      return null;
    });
  const [cameraTrack, micTrack] = await Promise.all([
    camera ? capture(createCameraTrack, 'camera') : null,
    microphone ? capture(createMicrophoneTrack, 'microphone') : null,
  ]);
  return { cameraTrack, micTrack };
}

async function join({ roomName, name, camera, microphone }) {
  showMessage('');
  $('#join button').disabled = true;
  setConnection('connecting');
  const failures = [];
  let publishing = [];
  let candidate = null;
  try {
    const token = params.get('token') ?? (await fetchToken(roomName, name));
    candidate = new Room(params.get('server') ?? location.origin, token);
    // Published before connecting, the tracks go out in the first offer.
    const { cameraTrack, micTrack } = await captureTracks({ camera, microphone }, failures);
    const local = candidate.localParticipant;
    const publish = (track, source) =>
      local.publishTrack(track, { source, stopOnUnpublish: true }).catch((e) => {
        failures.push(`${source}: ${e.message}`);
      });
    publishing = [
      cameraTrack && publish(cameraTrack, TrackSource.Camera),
      micTrack && publish(micTrack, TrackSource.Microphone),
    ];
    await candidate.connect();
  } catch (e) {
    await Promise.allSettled(publishing);
    setConnection('disconnected');
    showMessage(describe(e));
    document.body.dataset.joinError = e.reason ?? 'error';
    $('#join button').disabled = false;
    return;
  }
  room = candidate;
  window.prismDemo.room = room;
  $('#join').hidden = true;
  $('#conference').hidden = false;
  $('#room-name').textContent = room.name;
  setConnection(room.connectionState);
  wireRoom(room);
  const own = tileFor(room.localParticipant, true);
  const cameraPublication = findLocal(TrackSource.Camera);
  if (cameraPublication) attachVideo(own, cameraPublication.track);
  for (const participant of room.participants.values()) addParticipant(participant);
  statsTimer = setInterval(updateStats, 1000);
  document.body.dataset.joined = 'true';
  await Promise.allSettled(publishing);
  if (failures.length) showMessage(`Joined, but could not publish ${failures.join('; ')}`, 'info');
  updateControls();
}

function wireRoom(room) {
  room.on(RoomEvent.ConnectionState, (state) => {
    setConnection(state);
    if (state === 'reconnecting') showMessage('Connection lost — reconnecting…', 'info');
    else if (state === 'connected' && $('#message').dataset.kind === 'info') showMessage('');
  });
  room.on(RoomEvent.ConnectionQuality, (q) => showQuality(q));
  room.on(RoomEvent.StreamStateChanged, (_, __, participant) => refreshTile(participant));
  room.on(RoomEvent.Disconnected, (reason, error) => {
    clearInterval(statsTimer);
    showQuality(null);
    for (const key of [...tiles.keys()]) removeTile(key);
    $('#conference').hidden = true;
    $('#join').hidden = false;
    $('#join button').disabled = false;
    document.body.dataset.joined = 'false';
    if (reason !== 'client_initiated') {
      showMessage(error ? describe(error) : `Disconnected by the server (${reason.replaceAll('_', ' ')}).`);
    }
  });
  room.on(RoomEvent.ParticipantJoined, (p) => addParticipant(p));
  room.on(RoomEvent.ParticipantLeft, (p) => {
    removeTile(p.sid);
    removeTile(`${p.sid}/screen`);
  });
  room.on(RoomEvent.ParticipantUpdated, (p) => refreshTile(p));
  room.on(RoomEvent.TrackPublished, (_, p) => refreshTile(p));
  room.on(RoomEvent.TrackUnpublished, (publication, p) => {
    if (publication.source === TrackSource.ScreenShare) removeTile(`${p.sid}/screen`);
    refreshTile(p);
  });
  room.on(RoomEvent.TrackMuted, (_, p) => refreshTile(p));
  room.on(RoomEvent.TrackSubscribed, (track, publication, participant) => attach(track, publication, participant));
  room.on(RoomEvent.TrackUnsubscribed, (track, publication, participant) => detach(track, publication, participant));
  room.on(RoomEvent.LocalTrackPublished, (publication) => {
    if (publication.source === TrackSource.ScreenShare) {
      attachVideo(tileFor(room.localParticipant, true, true), publication.track);
    } else if (publication.kind === TrackKind.Video) {
      attachVideo(tileFor(room.localParticipant, true), publication.track);
    }
    refreshTile(room.localParticipant);
    updateControls();
  });
  room.on(RoomEvent.LocalTrackUnpublished, (publication) => {
    if (publication.source === TrackSource.ScreenShare) removeTile(`${room.localParticipant.sid}/screen`);
    refreshTile(room.localParticipant);
    updateControls();
  });
  room.on(RoomEvent.Reconnected, () => {
    // Our sid changed with the rejoin: the local tile follows it.
    for (const [key, tile] of tiles) {
      if (tile.dataset.local === 'true') {
        removeTile(key);
      }
    }
    const local = tileFor(room.localParticipant, true);
    const camera = findLocal(TrackSource.Camera);
    if (camera) attachVideo(local, camera.track);
    refreshTile(room.localParticipant);
    showQuality(room.connectionQuality);
  });
  room.on(RoomEvent.ActiveSpeakers, (speakers) => {
    const active = new Set(speakers.map((p) => p.sid));
    for (const tile of tiles.values()) tile.classList.toggle('speaking', active.has(tile.dataset.sid));
  });
}

/** A local publication by source, even while it waits for its sid after a reconnect. */
function findLocal(source) {
  return room?.localParticipant.getTrack(source);
}

function localPublications() {
  return room?.localPublications ?? [];
}

// ------------------------------------------------------------------ tiles

function tileFor(participant, local = false, screen = false) {
  const key = screen ? `${participant.sid}/screen` : participant.sid;
  let tile = tiles.get(key);
  if (tile) return tile;
  tile = $('#tile-template').content.firstElementChild.cloneNode(true);
  tile.dataset.sid = participant.sid;
  tile.dataset.identity = participant.identity;
  tile.dataset.local = String(local);
  tile.dataset.screen = String(screen);
  tile.classList.add('no-video');
  const video = $('video', tile);
  video.addEventListener('resize', () => tile.classList.toggle('no-video', !video.videoWidth));
  if (!local) {
    const quality = $('.quality', tile);
    quality.hidden = false;
    quality.addEventListener('change', () => {
      const publication = videoPublication(participant, screen);
      publication?.setQuality(quality.value);
    });
    // The rendered size, so the server can pick the smallest layer that covers it.
    new ResizeObserver(() => {
      const publication = videoPublication(participant, screen);
      const dpr = window.devicePixelRatio || 1;
      publication?.setRenderedSize(video.clientWidth * dpr, video.clientHeight * dpr);
    }).observe(video);
    // A click on the video pins it (again: unpins); the quality menu is not part of that.
    tile.addEventListener('click', (event) => {
      if (event.target.closest('select, button')) return;
      togglePin(key);
    });
  }
  tiles.set(key, tile);
  tile.participant = participant;
  $('#grid').append(tile);
  refreshTile(participant);
  return tile;
}

function videoPublication(participant, screen) {
  return participant.getTrack(screen ? TrackSource.ScreenShare : TrackSource.Camera);
}

/** Pins the tile `key` (unpinning the one pinned before), or unpins it if it is pinned. */
function togglePin(key) {
  pinnedKey = pinnedKey === key ? null : key;
  for (const tile of tiles.values()) refreshTile(tile.participant);
}

function removeTile(key) {
  const tile = tiles.get(key);
  if (!tile) return;
  tiles.delete(key);
  if (pinnedKey === key) pinnedKey = null;
  for (const media of tile.querySelectorAll('video, audio')) media.srcObject = null;
  tile.remove();
}

function addParticipant(participant) {
  tileFor(participant);
  for (const publication of participant.tracks.values()) {
    if (publication.track) attach(publication.track, publication, participant);
  }
}

/** Name, mute state and placeholder of a participant's tiles. */
function refreshTile(participant) {
  for (const [key, tile] of tiles) {
    if (tile.dataset.sid !== participant.sid && !(tile.participant === participant)) continue;
    const screen = key.endsWith('/screen');
    const label = participant.name || participant.identity || 'Someone';
    $('.name', tile).textContent = screen ? `${label} (screen)` : `${label}${tile.dataset.local === 'true' ? ' (you)' : ''}`;
    $('.placeholder', tile).textContent = label.slice(0, 1).toUpperCase();
    const camera = videoPublication(participant, screen) ?? (tile.dataset.local === 'true' && !screen ? findLocal(TrackSource.Camera) : undefined);
    const mic = participant.getTrack(TrackSource.Microphone) ?? (tile.dataset.local === 'true' ? findLocal(TrackSource.Microphone) : undefined);
    tile.classList.toggle('cam-muted', !camera || camera.muted);
    tile.classList.toggle('mic-muted', !mic || mic.muted);
    $('.cam-state', tile).hidden = screen;
    $('.mic-state', tile).hidden = screen;
    const pinned = key === pinnedKey;
    tile.classList.toggle('pinned', pinned);
    $('.pin-state', tile).hidden = !pinned;
    if (tile.dataset.local === 'true') continue;
    // The pin follows the tile to the video published later (camera turned on, rejoin).
    if (camera && camera.settings.pinned !== pinned) camera.setPinned(pinned);
    const state = camera?.streamState;
    const notice = $('.notice', tile);
    notice.hidden = !(state?.paused && !camera.muted && state.reason !== PauseReason.Requested);
    notice.textContent =
      state?.reason === PauseReason.Bandwidth
        ? 'Video paused: your connection cannot carry it'
        : state?.reason === PauseReason.NoLayer
          ? 'Video paused: nothing arriving from the sender'
          : 'Video paused';
  }
}

function attachVideo(tile, track) {
  const video = $('video', tile);
  video.srcObject = new MediaStream([track]);
  video.play().catch(() => {});
}

function attach(track, publication, participant) {
  if (publication.kind === TrackKind.Video) {
    const screen = publication.source === TrackSource.ScreenShare;
    attachVideo(tileFor(participant, false, screen), track);
    return;
  }
  const tile = tileFor(participant);
  const audio = document.createElement('audio');
  audio.autoplay = true;
  audio.dataset.trackSid = publication.sid;
  audio.srcObject = new MediaStream([track]);
  tile.append(audio);
  audio.play().catch(() => {});
}

function detach(track, publication, participant) {
  if (publication.kind === TrackKind.Audio) {
    for (const audio of document.querySelectorAll(`audio[data-track-sid="${publication.sid}"]`)) {
      audio.srcObject = null;
      audio.remove();
    }
    return;
  }
  const key = publication.source === TrackSource.ScreenShare ? `${participant.sid}/screen` : participant.sid;
  const tile = tiles.get(key);
  if (tile) $('video', tile).srcObject = null;
}

// ------------------------------------------------------------------ controls

function updateControls() {
  const camera = findLocal(TrackSource.Camera);
  const mic = findLocal(TrackSource.Microphone);
  const screen = findLocal(TrackSource.ScreenShare);
  const cameraButton = $('#toggle-camera');
  cameraButton.textContent = !camera ? 'Start camera' : camera.muted ? 'Camera on' : 'Camera off';
  cameraButton.classList.toggle('off', !camera || camera.muted);
  const micButton = $('#toggle-microphone');
  micButton.textContent = !mic ? 'Start microphone' : mic.muted ? 'Unmute' : 'Mute';
  micButton.classList.toggle('off', !mic || mic.muted);
  $('#toggle-screen').textContent = screen ? 'Stop sharing' : 'Share screen';
}

async function toggle(source, start) {
  const publication = findLocal(source);
  try {
    if (!publication) await start();
    else if (publication.muted) await publication.unmute();
    else await publication.mute();
  } catch (e) {
    showMessage(`${source}: ${e.message}`, 'info');
  }
  refreshTile(room.localParticipant);
  updateControls();
}

$('#toggle-camera').addEventListener('click', () => toggle(TrackSource.Camera, () => room.localParticipant.publishCamera()));
$('#toggle-microphone').addEventListener('click', () => toggle(TrackSource.Microphone, () => room.localParticipant.publishMicrophone()));
$('#toggle-screen').addEventListener('click', async () => {
  const screen = findLocal(TrackSource.ScreenShare);
  try {
    if (screen) await room.localParticipant.unpublishTrack(screen);
    else await room.localParticipant.publishScreen();
  } catch (e) {
    showMessage(`Screen share: ${e.message}`, 'info');
  }
  updateControls();
});
$('#leave').addEventListener('click', () => room?.disconnect());

// ------------------------------------------------------------------ stats

const kbps = (bps) => (bps == null ? '–' : `${Math.round(bps / 1000)} kbps`);
const ms = (v) => (v == null ? '–' : `${Math.round(v)} ms`);
const pct = (v) => (v == null ? '–' : `${v.toFixed(1)}%`);
const size = (w, h) => (w ? `${w}x${h}` : '–');
const fps = (v) => (v == null ? '–' : `${Math.round(v)} fps`);

function formatStats(publication, s) {
  if (!s) return '';
  if (s.direction === 'outbound') {
    const head = `${publication.source} ${kbps(s.bitrate)} rtt ${ms(s.rtt)} loss ${pct(s.lossPercent)}`;
    if (publication.kind !== TrackKind.Video) return head;
    const layers = s.layers.map(
      (l) => `  ${l.rid ?? '·'} ${l.active ? `${size(l.width, l.height)} ${fps(l.fps)} ${kbps(l.bitrate)}` : 'off'}`,
    );
    return [head + (s.qualityLimitation ? ` (limited: ${s.qualityLimitation})` : ''), ...layers].join('\n');
  }
  if (s.kind === 'video') {
    const reason = publication.streamState?.reason;
    const layer = s.layer === 'paused' && reason && reason !== PauseReason.None ? `paused (${reason})` : (s.layer ?? '–');
    return `video ${size(s.width, s.height)} ${fps(s.fps)} ${kbps(s.bitrate)} layer ${layer}\n  rtt ${ms(s.rtt)} loss ${pct(s.lossPercent)}`;
  }
  return `audio ${kbps(s.bitrate)} loss ${pct(s.lossPercent)}`;
}

async function updateStats() {
  if (!room) return;
  for (const [key, tile] of tiles) {
    const participant = tile.participant;
    const screen = key.endsWith('/screen');
    const publications =
      tile.dataset.local === 'true'
        ? localPublications().filter((p) => (p.source === TrackSource.ScreenShare) === screen)
        : [...participant.tracks.values()].filter((p) => p.track && (p.source === TrackSource.ScreenShare) === screen);
    const lines = [];
    for (const publication of publications) {
      const s = await room.getStats(publication).catch(() => null);
      const text = formatStats(publication, s);
      if (text) lines.push(text);
    }
    $('.stats', tile).textContent = lines.join('\n');
  }
}

// ------------------------------------------------------------------ test hooks and start

/**
 * What the browser tests read: the room, and raw inbound counters per remote track (taken
 * straight from each receiver so they do not disturb the page's own rate computations).
 */
window.prismDemo = {
  room: null,
  async inbound() {
    const out = [];
    for (const participant of room?.participants.values() ?? []) {
      for (const publication of participant.tracks.values()) {
        if (!publication.receiver) continue;
        const report = await publication.receiver.getStats();
        for (const s of report.values()) {
          if (s.type !== 'inbound-rtp') continue;
          out.push({
            identity: participant.identity,
            sid: participant.sid,
            kind: s.kind,
            trackSid: publication.sid,
            framesDecoded: s.framesDecoded ?? 0,
            frameWidth: s.frameWidth ?? 0,
            freezeCount: s.freezeCount ?? 0,
            packetsReceived: s.packetsReceived ?? 0,
            totalSamplesReceived: s.totalSamplesReceived ?? 0,
          });
        }
      }
    }
    return out;
  },
};

function start() {
  const form = $('#join');
  if (params.get('room')) form.room.value = params.get('room');
  if (params.get('name')) form.name.value = params.get('name');
  if (params.get('camera') === '0') form.camera.checked = false;
  if (params.get('microphone') === '0') form.microphone.checked = false;
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    join({
      roomName: form.room.value.trim(),
      name: form.name.value.trim(),
      camera: form.camera.checked,
      microphone: form.microphone.checked,
    });
  });
  if (params.get('autojoin') === '1') form.requestSubmit();
}

start();
