// Participants and their track publications, as the room keeps them. Plain objects with a
// little behaviour; the room owns the signaling and the peer connection they act through.

import { Emitter } from './emitter.js';

export const TrackKind = Object.freeze({ Audio: 'audio', Video: 'video' });

export const TrackSource = Object.freeze({
  Unknown: 'unknown',
  Camera: 'camera',
  Microphone: 'microphone',
  ScreenShare: 'screen_share',
  ScreenShareAudio: 'screen_share_audio',
});

/** Why the server forwards nothing of a subscribed video (streamState.reason). */
export const PauseReason = Object.freeze({
  /** Not paused, or the server did not say. */
  None: 'none',
  /** We paused it (setPaused). */
  Requested: 'requested',
  /** The publisher sends no layer at the moment. */
  NoLayer: 'no_layer',
  /** Our downlink cannot carry it: audio and higher-priority video (pinned, screen share, speaker) come first. */
  Bandwidth: 'bandwidth',
});

/** Video quality a subscriber asks for (simulcast layer q/h/f), or 'auto' (from the size). */
export const VideoQuality = Object.freeze({ Auto: 'auto', Low: 'low', Medium: 'medium', High: 'high' });

const SOURCE_FROM_PROTO = {
  CAMERA: TrackSource.Camera,
  MICROPHONE: TrackSource.Microphone,
  SCREEN_SHARE: TrackSource.ScreenShare,
  SCREEN_SHARE_AUDIO: TrackSource.ScreenShareAudio,
};
const SOURCE_TO_PROTO = {
  [TrackSource.Camera]: 'CAMERA',
  [TrackSource.Microphone]: 'MICROPHONE',
  [TrackSource.ScreenShare]: 'SCREEN_SHARE',
  [TrackSource.ScreenShareAudio]: 'SCREEN_SHARE_AUDIO',
};
export const sourceToProto = (source) => SOURCE_TO_PROTO[source] ?? 'SOURCE_UNKNOWN';
export const QUALITY_TO_PROTO = { auto: 'QUALITY_UNSPECIFIED', low: 'LOW', medium: 'MEDIUM', high: 'HIGH' };

/** Captures the camera (1280x720 at 30 fps unless `constraints` say otherwise). */
export async function createCameraTrack(constraints) {
  const stream = await navigator.mediaDevices.getUserMedia({
    video: constraints ?? { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
  });
  return stream.getVideoTracks()[0];
}

/** Captures the microphone (echo cancellation, noise suppression, gain control on). */
export async function createMicrophoneTrack(constraints) {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: constraints ?? { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  });
  return stream.getAudioTracks()[0];
}

// ------------------------------------------------------------------ simulcast bookkeeping
// The layers we publish, which of them are sent (our own choice and the server's dynacast
// wish), and what the server forwards to us. No WebRTC API here (unit-tested in node).

/** Simulcast encodings, lowest first: rid, downscale, bitrate cap. */
export const SIMULCAST = Object.freeze([
  Object.freeze({ rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 }),
  Object.freeze({ rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 }),
  Object.freeze({ rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_700_000 }),
]);

const QUALITY_FROM_PROTO = { LOW: 'low', MEDIUM: 'medium', HIGH: 'high' };
const REASON_FROM_PROTO = {
  NONE: PauseReason.None,
  REQUESTED: PauseReason.Requested,
  NO_LAYER: PauseReason.NoLayer,
  BANDWIDTH: PauseReason.Bandwidth,
};

/**
 * Which layers of a local track are sent: a layer is sent when the application has not
 * stopped it (setLayerActive) and the server has not said no subscriber needs it (dynacast).
 */
export class LayerActivity {
  #enabled = new Map();
  #wanted = new Map();

  constructor(rids) {
    this.rids = [...rids];
  }

  /** The application's choice; false stops the layer whatever the server wants. */
  setEnabled(rid, enabled) {
    if (!this.rids.includes(rid)) throw new RangeError(`no simulcast layer '${rid}'`);
    this.#enabled.set(rid, Boolean(enabled));
  }

  /** The server's SubscribedLayersUpdate; returns whether any layer changed. */
  setWanted(layers) {
    let changed = false;
    for (const { rid = '', active = false } of layers) {
      if (!this.rids.includes(rid) || this.#wanted.get(rid) === active) continue;
      this.#wanted.set(rid, active);
      changed = true;
    }
    return changed;
  }

  /** A new session: the server will say again what it needs; until then, send everything. */
  resetWanted() {
    this.#wanted.clear();
  }

  isActive(rid) {
    return this.#enabled.get(rid) !== false && this.#wanted.get(rid) !== false;
  }

  /** [{rid, enabled, wanted, active}] in layer order. */
  states() {
    return this.rids.map((rid) => ({
      rid,
      enabled: this.#enabled.get(rid) !== false,
      wanted: this.#wanted.get(rid) !== false,
      active: this.isActive(rid),
    }));
  }

  /**
   * Sets `active` on the encodings (from RTCRtpSender.getParameters) to match; returns whether
   * anything changed, i.e. whether setParameters is needed.
   */
  applyTo(encodings) {
    let changed = false;
    for (const encoding of encodings ?? []) {
      if (!encoding.rid || !this.rids.includes(encoding.rid)) continue;
      const active = this.isActive(encoding.rid);
      if (encoding.active !== active) {
        encoding.active = active;
        changed = true;
      }
    }
    return changed;
  }
}

/**
 * A StreamStateUpdate (protobuf JSON, absent fields defaulted) as the SDK exposes it:
 * {paused, reason: PauseReason ('none' while active), rid, quality: 'low' | 'medium' | 'high'
 * | null, width, height}.
 */
export function streamStateFromProto(m) {
  return {
    paused: m.state === 'PAUSED',
    reason: REASON_FROM_PROTO[m.reason ?? 'NONE'] ?? PauseReason.None,
    rid: m.rid ?? '',
    quality: QUALITY_FROM_PROTO[m.quality] ?? null,
    width: m.width ?? 0,
    height: m.height ?? 0,
  };
}

// ------------------------------------------------------------------ publications

/** What every publication has, from the server's TrackInfo. */
export class TrackPublication extends Emitter {
  sid = '';
  kind = TrackKind.Video;
  source = TrackSource.Unknown;
  name = '';
  mimeType = '';
  muted = false;
  simulcast = false;
  width = 0;
  height = 0;
  /** @type {{rid: string, width: number, height: number, bitrate: number}[]} */
  layers = [];

  /** Applies a TrackInfo (proto3 JSON: absent fields are defaults). */
  updateInfo(info) {
    this.sid = info.sid ?? this.sid;
    this.kind = info.kind === 'AUDIO' ? TrackKind.Audio : TrackKind.Video;
    this.source = SOURCE_FROM_PROTO[info.source] ?? TrackSource.Unknown;
    this.name = info.name ?? '';
    this.mimeType = info.mimeType ?? '';
    this.muted = Boolean(info.muted);
    this.simulcast = Boolean(info.simulcast);
    this.width = info.width ?? 0;
    this.height = info.height ?? 0;
    this.layers = (info.layers ?? []).map((l) => ({
      rid: l.rid ?? '',
      width: l.width ?? 0,
      height: l.height ?? 0,
      bitrate: l.bitrate ?? 0,
    }));
  }
}

/** A track another participant publishes. */
export class RemoteTrackPublication extends TrackPublication {
  /** @type {MediaStreamTrack | null} the media, once subscribed and arriving */
  track = null;
  /** @type {RTCRtpReceiver | null} */
  receiver = null;
  /** Whether the server reports the subscription as negotiated. */
  subscribed = false;
  /** What we asked for: subscribe or not (auto-subscribe starts it true). */
  wantSubscribed;
  /** Latest display settings sent to the server. */
  settings = { quality: VideoQuality.Auto, width: 0, height: 0, paused: false, pinned: false };
  /**
   * What the server forwards (from its latest StreamStateUpdate), null until it said:
   * {paused, reason, rid, quality, width, height}. Changes emit 'streamStateChanged' here and
   * RoomEvent.StreamStateChanged on the room.
   */
  streamState = null;
  #room;

  constructor(room, participant, info, autoSubscribe) {
    super();
    this.#room = room;
    this.participant = participant;
    this.wantSubscribed = autoSubscribe;
    this.updateInfo(info);
  }

  /** A MediaStream holding the track, for a <video>/<audio> element's srcObject. */
  get mediaStream() {
    return this.track ? new MediaStream([this.track]) : null;
  }

  /** Subscribes or unsubscribes. */
  setSubscribed(subscribed) {
    this.wantSubscribed = subscribed;
    this.#room._send({ subscription: { trackSids: [this.sid], subscribe: subscribed } });
  }

  /** Asks for a simulcast quality ('low', 'medium', 'high', or 'auto' to follow the size). */
  setQuality(quality) {
    if (!(quality in QUALITY_TO_PROTO)) throw new TypeError(`unknown quality ${quality}`);
    this.#updateSettings({ quality });
  }

  /** Tells the server how large the video is shown (device pixels), so it can pick the layer. */
  setRenderedSize(width, height) {
    this.#updateSettings({ width: Math.round(width), height: Math.round(height) });
  }

  /** Pauses (not shown at all) or resumes the video without unsubscribing. */
  setPaused(paused) {
    this.#updateSettings({ paused: Boolean(paused) });
  }

  /**
   * Pins (shown large, spotlight) or unpins the video: when our downlink is short, the server
   * gives a pinned track its layers before our other video. The other settings stay.
   */
  setPinned(pinned) {
    this.#updateSettings({ pinned: Boolean(pinned) });
  }

  /** The server's StreamStateUpdate (or null when the subscription ended). */
  _setStreamState(state) {
    this.streamState = state;
    this.emit('streamStateChanged', state);
  }

  #updateSettings(change) {
    const next = { ...this.settings, ...change };
    const same = Object.keys(next).every((k) => next[k] === this.settings[k]);
    this.settings = next;
    if (!same && this.subscribed) this.#room._sendTrackSettings(this);
  }
}

/**
 * A track this participant publishes. Tracks published before `Room.connect()` go out in the
 * first offer: one negotiation instead of several, and no offer of ours can cross one of the
 * server's while we join.
 */
export class LocalTrackPublication extends TrackPublication {
  /** @type {RTCRtpTransceiver | null} */
  transceiver = null;
  /** Stop the MediaStreamTrack when it is unpublished (true for tracks the SDK captured). */
  stopOnUnpublish;
  #room;
  /** Which simulcast layers are sent (null without simulcast). */
  #layers = null;
  /** setParameters calls, one at a time (concurrent ones fail). */
  #encodingsQueue = Promise.resolve();

  constructor(room, track, { source, name, simulcast, stopOnUnpublish }) {
    super();
    this.#room = room;
    /** @type {MediaStreamTrack} */
    this.track = track;
    this.kind = track.kind === 'audio' ? TrackKind.Audio : TrackKind.Video;
    this.source = source;
    this.name = name ?? '';
    this.simulcast = Boolean(simulcast);
    this.stopOnUnpublish = Boolean(stopOnUnpublish);
    /** The browser's id for the track, sent as addTrack.cid and carried in the msid. */
    this.cid = track.id;
    if (this.simulcast) this.#layers = new LayerActivity(SIMULCAST.map((e) => e.rid));
    // One stream per track: its id is the msid stream id of this sender.
    this.stream = new MediaStream([track]);
  }

  get sender() {
    return this.transceiver?.sender ?? null;
  }

  mute() {
    return this.#room._setLocalMuted(this, true);
  }

  /**
   * The simulcast layers and whether each is sent: [{rid, enabled, wanted, active}], where
   * `enabled` is ours (setLayerActive) and `wanted` the server's (dynacast). Empty without
   * simulcast.
   */
  get layerStates() {
    return this.#layers?.states() ?? [];
  }

  /** Whether a simulcast layer is sent now. */
  isLayerActive(rid) {
    return this.#layers?.isActive(rid) ?? false;
  }

  /**
   * Starts or stops sending one simulcast layer ('q', 'h' or 'f'); the server's dynacast
   * wishes still apply on top. Resolves once the sender's encodings are updated.
   */
  setLayerActive(rid, active) {
    if (!this.#layers) throw new Error('this track is not published with simulcast');
    this.#layers.setEnabled(rid, active);
    return this._syncEncodings();
  }

  /** Dynacast: the server's SubscribedLayersUpdate. Emits 'subscribedLayersChanged'. */
  _setWanted(layers) {
    if (!this.#layers) return Promise.resolve();
    this.#layers.setWanted(layers);
    this.emit('subscribedLayersChanged', this.layerStates);
    return this._syncEncodings();
  }

  /** A new connection: the server will say again what it needs. */
  _resetWanted() {
    this.#layers?.resetWanted();
  }

  /** The encodings a new transceiver starts with. */
  _sendEncodings() {
    return SIMULCAST.map((e) => ({ ...e, active: this.isLayerActive(e.rid) }));
  }

  /** Brings the sender's encodings' `active` in line with the layer states. */
  _syncEncodings() {
    const run = async () => {
      const sender = this.sender;
      if (!sender || !this.#layers) return;
      const params = sender.getParameters();
      if (this.#layers.applyTo(params.encodings)) await sender.setParameters(params);
    };
    this.#encodingsQueue = this.#encodingsQueue.then(run, run);
    return this.#encodingsQueue;
  }

  unmute() {
    return this.#room._setLocalMuted(this, false);
  }
}

/** What local and remote participants share. */
export class Participant {
  sid = '';
  identity = '';
  name = '';
  metadata = '';
  /** 'joining' | 'joined' | 'active' | 'disconnected' */
  state = 'joining';
  /** Speaking now, per the server's active speaker detection. */
  isSpeaking = false;
  /** Smoothed linear audio level 0..1 while speaking. */
  audioLevel = 0;
  /** @type {Map<string, TrackPublication>} by track sid */
  tracks = new Map();

  updateInfo(info) {
    this.sid = info.sid ?? this.sid;
    this.identity = info.identity ?? '';
    this.name = info.name ?? '';
    this.metadata = info.metadata ?? '';
    this.state = (info.state ?? 'JOINING').toLowerCase();
  }

  /** The publication of a source (camera, microphone, screen_share...), if any. */
  getTrack(source) {
    for (const p of this.tracks.values()) if (p.source === source) return p;
    return undefined;
  }
}

export class RemoteParticipant extends Participant {
  constructor(info) {
    super();
    this.updateInfo(info);
  }
}

export class LocalParticipant extends Participant {
  #room;
  constructor(room) {
    super();
    this.#room = room;
  }

  /** Our publication of a source, including one still waiting for its sid. */
  getTrack(source) {
    return this.#room.localPublications.find((p) => p.source === source);
  }

  /** Sends a data message; see Room.publishData. */
  publishData(payload, options) {
    return this.#room.publishData(payload, options);
  }

  /** Publishes a MediaStreamTrack; resolves with its publication once the server named it. */
  publishTrack(track, options) {
    return this.#room._publish(track, options);
  }

  unpublishTrack(publication) {
    return this.#room._unpublish(publication);
  }

  /**
   * Captures and publishes the camera (1280x720, simulcast q/h/f unless `simulcast: false`).
   * @param {{simulcast?: boolean, constraints?: MediaTrackConstraints}} [options]
   */
  async publishCamera({ simulcast = true, constraints } = {}) {
    const track = await createCameraTrack(constraints);
    return this.publishTrack(track, { source: TrackSource.Camera, simulcast, stopOnUnpublish: true });
  }

  /** Captures and publishes the microphone. */
  async publishMicrophone({ constraints } = {}) {
    const track = await createMicrophoneTrack(constraints);
    return this.publishTrack(track, { source: TrackSource.Microphone, stopOnUnpublish: true });
  }

  /**
   * Shares the screen (one layer, no simulcast); stopping the share from the browser's UI
   * unpublishes it.
   */
  async publishScreen({ audio = false } = {}) {
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: 15 }, audio });
    const published = [];
    for (const track of stream.getTracks()) {
      const source = track.kind === 'video' ? TrackSource.ScreenShare : TrackSource.ScreenShareAudio;
      const publication = await this.publishTrack(track, { source, simulcast: false, stopOnUnpublish: true });
      track.addEventListener('ended', () => this.unpublishTrack(publication).catch(() => {}));
      published.push(publication);
    }
    return published;
  }
}
