// A connection to one Prism room: the signaling socket, the one peer connection, negotiation,
// participants and their tracks, and reconnection. One `Session` per join; a reconnect builds
// a new one and carries the room's participants and our publications over.

import { Emitter } from './emitter.js';
import { ConnectError, ConnectErrorReason, SignalError } from './errors.js';
import { Negotiator } from './negotiation.js';
import {
  LocalParticipant,
  LocalTrackPublication,
  QUALITY_TO_PROTO,
  RemoteParticipant,
  RemoteTrackPublication,
  SIMULCAST,
  TrackKind,
  TrackSource,
  sourceToProto,
  streamStateFromProto,
} from './participant.js';
import { connectionQualityFromProto } from './quality.js';
import { DataKind, decodeDataPacket, encodeDataPacket } from './data.js';
import { msidsByMid, simulcastCodecs } from './sdp.js';
import { SignalClient } from './signaling.js';
import { trackStats } from './stats.js';

export const RoomEvent = Object.freeze({
  ParticipantJoined: 'participantJoined',
  ParticipantLeft: 'participantLeft',
  ParticipantUpdated: 'participantUpdated',
  TrackPublished: 'trackPublished',
  TrackUnpublished: 'trackUnpublished',
  TrackMuted: 'trackMuted',
  TrackSubscribed: 'trackSubscribed',
  TrackUnsubscribed: 'trackUnsubscribed',
  TrackSubscriptionFailed: 'trackSubscriptionFailed',
  LocalTrackPublished: 'localTrackPublished',
  LocalTrackUnpublished: 'localTrackUnpublished',
  ActiveSpeakers: 'activeSpeakers',
  StreamStateChanged: 'streamStateChanged',
  SubscribedLayersChanged: 'subscribedLayersChanged',
  /** The server's report on our downlink: `{ quality, estimateBps, allocatedBps, ... }` (also `room.connectionQuality`). */
  ConnectionQuality: 'connectionQuality',
  /** A data message: `{ payload: Uint8Array, topic, kind, senderIdentity, participant }`. */
  DataReceived: 'dataReceived',
  ConnectionState: 'connectionState',
  Reconnecting: 'reconnecting',
  Reconnected: 'reconnected',
  Disconnected: 'disconnected',
  SignalError: 'signalError',
});

export const ConnectionState = Object.freeze({
  Connecting: 'connecting',
  Connected: 'connected',
  Reconnecting: 'reconnecting',
  Disconnected: 'disconnected',
});

const DEFAULTS = {
  autoSubscribe: true,
  joinTimeoutMs: 10_000,
  publishTimeoutMs: 10_000,
  /** Give up reconnecting after this long. */
  reconnectTimeoutMs: 60_000,
  /** A connection disconnected this long gets an ICE restart... */
  iceDisconnectedGraceMs: 2_000,
  /** ...and a full rejoin if that has not brought it back after this long. */
  iceRestartTimeoutMs: 5_000,
  /** Reconnect automatically (ICE restart, then full rejoin). */
  reconnect: true,
  /** Preferred video codec for published video, e.g. 'video/VP8' (null: the browser's). */
  videoCodec: 'video/VP8',
  rtcConfig: {},
};

const SCREEN_BITRATE = 2_500_000;
const RECONNECT_BACKOFF_MS = [0, 300, 1000, 2000, 3000];

/** Join failures that no retry can fix. */
const FATAL = new Set([ConnectErrorReason.Unauthorized, ConnectErrorReason.Forbidden, ConnectErrorReason.RoomNotFound]);

/**
 * Connects to a room. Resolves once the server accepted the join and the first offer is on
 * its way; rejects with a {@link ConnectError} saying why it could not.
 */
export async function connect(url, token, options = {}) {
  const room = new Room(url, token, options);
  await room.connect();
  return room;
}

/** One join: its socket, its peer connection and the negotiation on them. */
class Session {
  /** @type {Promise<void>} SDP operations, one at a time */
  queue = Promise.resolve();
  negotiator = new Negotiator();
  /** Our ICE candidates wait until the server has our first offer. */
  pendingCandidates = [];
  offered = false;
  iceRestart = false;
  timers = new Set();
  closed = false;

  constructor(signal, pc, dataChannel, lossyChannel) {
    this.signal = signal;
    this.pc = pc;
    this.dataChannel = dataChannel;
    this.lossyChannel = lossyChannel;
  }

  timer(fn, ms) {
    const id = setTimeout(() => {
      this.timers.delete(id);
      fn();
    }, ms);
    this.timers.add(id);
    return id;
  }

  close({ leave = false } = {}) {
    this.closed = true;
    for (const id of this.timers) clearTimeout(id);
    this.timers.clear();
    this.signal.close({ leave });
    this.pc.onconnectionstatechange = this.pc.ontrack = this.pc.onicecandidate = null;
    this.pc.close();
  }
}

export class Room extends Emitter {
  /** Room name and sid, from the join. */
  name = '';
  sid = '';
  /** @type {Map<string, RemoteParticipant>} by participant sid */
  participants = new Map();
  connectionState = ConnectionState.Disconnected;
  /** @type {import('./participant.js').Participant[]} loudest first */
  activeSpeakers = [];
  /**
   * The server's latest report on our downlink (grade, estimate, allocation; see quality.js),
   * null until one arrived on this connection. Changes emit RoomEvent.ConnectionQuality.
   */
  connectionQuality = null;
  /** @type {Session | null} */
  #session = null;
  /** Our publications by cid (the MediaStreamTrack id), across reconnects. */
  #published = new Map();
  /** publishTrack() calls waiting for their trackPublished, by cid. */
  #waitingPublished = new Map();
  #reconnecting = false;
  #closed = false;

  constructor(url, token, options = {}) {
    super();
    this.url = url;
    this.token = token;
    this.options = { ...DEFAULTS, ...options };
    this.localParticipant = new LocalParticipant(this);
  }

  /** Joins; see {@link connect}. */
  async connect() {
    if (this.#closed) throw new ConnectError(ConnectErrorReason.Cancelled, 'this room was disconnected');
    this.#setState(ConnectionState.Connecting);
    try {
      await this.#join();
    } catch (e) {
      this.#end('join_failed', { leave: false, error: e, notify: false });
      throw e;
    }
  }

  /** Leaves the room and releases everything. Calling it again does nothing. */
  async disconnect() {
    this.#end('client_initiated', { leave: true });
  }

  /** Signaling round-trip time (ms) from the last ping. */
  get signalRtt() {
    return this.#session?.signal.rtt ?? null;
  }

  /** Everything we publish, including tracks still waiting for the server's sid. */
  get localPublications() {
    return [...this.#published.values()];
  }

  /** The peer connection of the current session (for getStats and debugging). */
  get peerConnection() {
    return this.#session?.pc ?? null;
  }

  /**
   * Sends a data message to everyone else in the room, or to `destinationIdentities`.
   * `reliable` (default) is ordered and retransmitted; lossy is neither, for state that is
   * soon stale. Needs the can_publish_data grant (the server answers a signalError otherwise).
   * @param {Uint8Array|string} payload
   * @param {{reliable?: boolean, topic?: string, destinationIdentities?: string[]}} [options]
   */
  async publishData(payload, { reliable = true, topic = '', destinationIdentities = [] } = {}) {
    const session = this.#session;
    if (!session) throw new Error('not connected');
    const channel = reliable ? session.dataChannel : session.lossyChannel;
    if (channel.readyState === 'connecting') {
      await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('the data channel did not open')), 10_000);
        channel.addEventListener('open', () => resolve(clearTimeout(timer)), { once: true });
      });
    }
    if (channel.readyState !== 'open') throw new Error(`the data channel is ${channel.readyState}`);
    const kind = reliable ? DataKind.Reliable : DataKind.Lossy;
    channel.send(encodeDataPacket({ payload, topic, kind, destinationIdentities }));
  }

  #onData(data) {
    let packet;
    try {
      packet = decodeDataPacket(new Uint8Array(data));
    } catch (e) {
      console.warn('prism: dropped a malformed data message', e);
      return;
    }
    const participant = [...this.participants.values()].find((p) => p.identity === packet.senderIdentity);
    this.emit(RoomEvent.DataReceived, {
      payload: packet.payload,
      topic: packet.topic,
      kind: packet.kind === DataKind.Lossy ? 'lossy' : 'reliable',
      senderIdentity: packet.senderIdentity,
      participant,
    });
  }

  /** Subscribes to (or unsubscribes from) tracks by sid. */
  setSubscribed(trackSids, subscribed) {
    this._send({ subscription: { trackSids, subscribe: subscribed } });
  }

  /**
   * Pins (or unpins) a remote track by sid; see RemoteTrackPublication.setPinned. Returns
   * false when no remote track has that sid.
   */
  setPinned(trackSid, pinned) {
    const publication = this.#remotePublication(trackSid);
    publication?.setPinned(pinned);
    return Boolean(publication);
  }

  /**
   * Live statistics of a publication (local or remote): resolution, frame rate, bitrate, layer,
   * round-trip time, packet loss. See stats.js.
   */
  getStats(publication) {
    return trackStats(publication, this.#session?.pc ?? null);
  }

  // ------------------------------------------------------------------ joining

  async #join() {
    const { client, join } = await SignalClient.connect(this.url, this.token, {
      autoSubscribe: this.options.autoSubscribe,
      timeoutMs: this.options.joinTimeoutMs,
    });
    if (this.#closed) {
      client.close({ leave: true });
      throw new ConnectError(ConnectErrorReason.Cancelled, 'disconnected while joining');
    }
    const pc = new RTCPeerConnection({
      bundlePolicy: 'max-bundle',
      rtcpMuxPolicy: 'require',
      ...this.options.rtcConfig,
      iceServers: (join.iceServers ?? []).map((s) => ({
        urls: s.urls,
        username: s.username,
        credential: s.credential,
      })),
    });
    // The first offer always has an m-line, even with nothing published: the data channels,
    // which carry data messages (protobuf binary DataPackets, see data.js).
    const dataChannel = pc.createDataChannel('_reliable');
    const lossyChannel = pc.createDataChannel('_lossy', { ordered: false, maxRetransmits: 0 });
    const session = new Session(client, pc, dataChannel, lossyChannel);
    this.#session = session;
    this.#wire(session);
    this.#applyJoin(join);
    client.startPings(join.pingIntervalMs || 5000);
    // Our tracks: published anew on this connection (after a reconnect, or published while
    // connecting).
    for (const publication of this.#published.values()) this.#announce(session, publication);
    this.#negotiate(session);
  }

  #wire(session) {
    const { signal, pc } = session;
    for (const channel of [session.dataChannel, session.lossyChannel]) {
      channel.binaryType = 'arraybuffer';
      channel.onmessage = ({ data }) => {
        if (session === this.#session) this.#onData(data);
      };
    }
    signal.on('message', (m) => {
      if (session === this.#session) this.#onSignal(session, m);
    });
    signal.on('close', ({ reason }) => {
      if (session === this.#session) this.#lost(`signaling: ${reason}`);
    });
    pc.onicecandidate = ({ candidate }) => {
      if (!candidate || !candidate.candidate) return;
      const trickle = {
        candidate: candidate.candidate,
        sdpMid: candidate.sdpMid ?? '',
        sdpMlineIndex: candidate.sdpMLineIndex ?? 0,
      };
      if (session.offered) signal.send({ trickle });
      else session.pendingCandidates.push(trickle);
    };
    pc.ontrack = (event) => this.#onTrack(session, event);
    pc.onconnectionstatechange = () => this.#onPcState(session);
  }

  #applyJoin(join) {
    this.name = join.room?.name ?? '';
    this.sid = join.room?.sid ?? '';
    const local = this.localParticipant;
    local.updateInfo(join.participant ?? {});
    local.tracks.clear();
    for (const p of this.#published.values()) p.sid = '';
    // Participants who were here before a reconnect and still are keep their objects; every
    // subscribed track is gone with the old peer connection.
    const fresh = new Map((join.otherParticipants ?? []).map((info) => [info.sid, info]));
    for (const [sid, participant] of [...this.participants]) {
      if (!fresh.has(sid)) {
        this.#removeParticipant(participant, 'reconnected');
        continue;
      }
      for (const publication of participant.tracks.values()) this.#dropRemoteTrack(publication);
      this.#syncParticipant(participant, fresh.get(sid));
      fresh.delete(sid);
    }
    for (const info of fresh.values()) this.#addParticipant(info);
    this.#setSpeakers([]);
    // Reports were about the old connection; the new one gets its own.
    this.connectionQuality = null;
  }

  // ------------------------------------------------------------------ signaling in

  #onSignal(session, m) {
    if (m.answer) this.#enqueue(session, () => this.#onAnswer(session, m.answer));
    else if (m.offer) this.#enqueue(session, () => this.#onOffer(session, m.offer));
    else if (m.trickle) this.#onRemoteCandidate(session, m.trickle);
    else if (m.participantJoined) this.#upsertParticipant(m.participantJoined.participant);
    else if (m.participantUpdated) this.#upsertParticipant(m.participantUpdated.participant);
    else if (m.participantLeft) {
      const p = this.participants.get(m.participantLeft.participantSid);
      if (p) this.#removeParticipant(p, (m.participantLeft.reason ?? 'UNKNOWN_REASON').toLowerCase());
    } else if (m.trackPublished) this.#onTrackPublished(m.trackPublished);
    else if (m.trackUnpublished) this.#onTrackUnpublished(m.trackUnpublished);
    else if (m.trackMuted) this.#onTrackMuted(m.trackMuted);
    else if (m.subscription) this.#onSubscriptionUpdate(m.subscription);
    else if (m.speakersChanged) this.#onSpeakers(m.speakersChanged.speakers ?? []);
    else if (m.streamState) this.#onStreamState(m.streamState);
    else if (m.subscribedLayers) this.#onSubscribedLayers(m.subscribedLayers);
    else if (m.connectionQuality) this._onConnectionQuality(m.connectionQuality);
    else if (m.leave) {
      const reason = (m.leave.reason ?? 'UNKNOWN_REASON').toLowerCase();
      this.#end(reason, { leave: false });
    } else if (m.error) {
      const e = m.error;
      this.emit(RoomEvent.SignalError, new SignalError(e.code ?? 'ERROR_UNSPECIFIED', e.message ?? '', e.request ?? ''));
    }
  }

  #upsertParticipant(info) {
    if (!info || info.sid === this.localParticipant.sid) return;
    const existing = this.participants.get(info.sid);
    if (!existing) {
      this.#addParticipant(info);
      return;
    }
    this.#syncParticipant(existing, info);
    this.emit(RoomEvent.ParticipantUpdated, existing);
  }

  #addParticipant(info) {
    const participant = new RemoteParticipant(info);
    this.participants.set(participant.sid, participant);
    this.emit(RoomEvent.ParticipantJoined, participant);
    for (const track of info.tracks ?? []) this.#addRemotePublication(participant, track);
  }

  /** Brings a known participant's info and publications in line with the server's. */
  #syncParticipant(participant, info) {
    participant.updateInfo(info);
    const tracks = new Map((info.tracks ?? []).map((t) => [t.sid, t]));
    for (const [sid, publication] of [...participant.tracks]) {
      const track = tracks.get(sid);
      if (!track) {
        this.#removeRemotePublication(participant, publication);
      } else {
        publication.updateInfo(track);
        tracks.delete(sid);
      }
    }
    for (const track of tracks.values()) this.#addRemotePublication(participant, track);
  }

  #removeParticipant(participant, reason) {
    for (const publication of [...participant.tracks.values()]) {
      this.#removeRemotePublication(participant, publication);
    }
    this.participants.delete(participant.sid);
    participant.state = 'disconnected';
    this.emit(RoomEvent.ParticipantLeft, participant, reason);
    if (participant.isSpeaking) {
      participant.isSpeaking = false;
      this.#setSpeakers(this.activeSpeakers.filter((p) => p !== participant));
    }
  }

  #addRemotePublication(participant, info) {
    const publication = new RemoteTrackPublication(this, participant, info, this.options.autoSubscribe);
    participant.tracks.set(publication.sid, publication);
    this.emit(RoomEvent.TrackPublished, publication, participant);
    return publication;
  }

  #removeRemotePublication(participant, publication) {
    this.#dropRemoteTrack(publication);
    participant.tracks.delete(publication.sid);
    this.emit(RoomEvent.TrackUnpublished, publication, participant);
  }

  /** The publication's media is gone (unsubscribed, unpublished, or the connection replaced). */
  #dropRemoteTrack(publication) {
    const track = publication.track;
    publication.subscribed = false;
    if (publication.streamState) publication._setStreamState(null);
    if (!track) return;
    publication.track = null;
    publication.receiver = null;
    this.emit(RoomEvent.TrackUnsubscribed, track, publication, publication.participant);
  }

  #onTrackPublished({ participantSid, track }) {
    if (!track) return;
    if (participantSid === this.localParticipant.sid) {
      const publication = this.#published.get(track.cid);
      if (!publication) return; // unpublished meanwhile
      publication.sid = track.sid;
      publication.mimeType = track.mimeType ?? publication.mimeType;
      this.localParticipant.tracks.set(track.sid, publication);
      const waiting = this.#waitingPublished.get(track.cid);
      this.#waitingPublished.delete(track.cid);
      waiting?.resolve(publication);
      this.emit(RoomEvent.LocalTrackPublished, publication);
      return;
    }
    const participant = this.participants.get(participantSid);
    if (!participant) return;
    const existing = participant.tracks.get(track.sid);
    if (existing) existing.updateInfo(track);
    else this.#addRemotePublication(participant, track);
  }

  #onTrackUnpublished({ participantSid, trackSid }) {
    const participant = this.participants.get(participantSid);
    const publication = participant?.tracks.get(trackSid);
    if (publication) this.#removeRemotePublication(participant, publication);
  }

  #onTrackMuted({ participantSid, trackSid, muted = false }) {
    const participant =
      participantSid === this.localParticipant.sid ? this.localParticipant : this.participants.get(participantSid);
    const publication = participant?.tracks.get(trackSid);
    if (!publication || publication.muted === muted) return;
    publication.muted = muted;
    if (publication instanceof LocalTrackPublication) {
      // Muted by the server (an admin): stop sending, as our own mute would.
      publication.track.enabled = !muted;
    }
    this.emit(RoomEvent.TrackMuted, publication, participant, muted);
  }

  #onSubscriptionUpdate({ trackSid, state = 'UNSUBSCRIBED', error }) {
    const publication = this.#remotePublication(trackSid);
    if (!publication) return;
    if (state === 'SUBSCRIBED') {
      publication.subscribed = true;
      // Settings chosen before the subscription existed go out now.
      const s = publication.settings;
      if (s.quality !== 'auto' || s.width || s.paused || s.pinned) this._sendTrackSettings(publication);
    } else {
      this.#dropRemoteTrack(publication);
      if (state === 'FAILED') {
        this.emit(RoomEvent.TrackSubscriptionFailed, publication, publication.participant, error ?? '');
      }
    }
  }

  #onStreamState(update) {
    const publication = this.#remotePublication(update.trackSid);
    if (!publication) return;
    const state = streamStateFromProto(update);
    publication._setStreamState(state);
    this.emit(RoomEvent.StreamStateChanged, publication, state, publication.participant);
  }

  /** The server's ConnectionQualityUpdate on our downlink. */
  _onConnectionQuality(update) {
    this.connectionQuality = connectionQualityFromProto(update);
    this.emit(RoomEvent.ConnectionQuality, this.connectionQuality);
  }

  /** Dynacast: pause (or resume) encoding the layers of our track that nobody needs. */
  #onSubscribedLayers({ trackSid, layers = [] }) {
    const publication = this.localParticipant.tracks.get(trackSid);
    if (!(publication instanceof LocalTrackPublication)) return;
    publication._setWanted(layers).catch((e) => console.warn('prism: simulcast layers not updated', e));
    this.emit(RoomEvent.SubscribedLayersChanged, publication, publication.layerStates);
  }

  #onSpeakers(updates) {
    for (const u of updates) {
      const participant =
        u.participantSid === this.localParticipant.sid ? this.localParticipant : this.participants.get(u.participantSid);
      if (!participant) continue;
      participant.isSpeaking = Boolean(u.active);
      participant.audioLevel = u.active ? (u.level ?? 0) : 0;
    }
    const all = [this.localParticipant, ...this.participants.values()];
    this.#setSpeakers(all.filter((p) => p.isSpeaking).sort((a, b) => b.audioLevel - a.audioLevel));
  }

  #setSpeakers(speakers) {
    const same =
      speakers.length === this.activeSpeakers.length && speakers.every((p, i) => p === this.activeSpeakers[i]);
    this.activeSpeakers = speakers;
    if (!same) this.emit(RoomEvent.ActiveSpeakers, speakers);
  }

  #remotePublication(trackSid) {
    for (const participant of this.participants.values()) {
      const publication = participant.tracks.get(trackSid);
      if (publication) return publication;
    }
    return undefined;
  }

  // ------------------------------------------------------------------ media in

  #onTrack(session, event) {
    if (session !== this.#session) return;
    // A subscribed track's msid is "<publisher sid> <track sid>"; read it from the SDP by mid.
    const mid = event.transceiver?.mid;
    const remote = session.pc.remoteDescription?.sdp ?? '';
    const msid = mid != null ? msidsByMid(remote).get(mid) : undefined;
    const participantSid = msid?.streamId ?? event.streams[0]?.id;
    const trackSid = msid?.trackId ?? event.track.id;
    const participant = this.participants.get(participantSid);
    const publication = participant?.tracks.get(trackSid);
    if (!publication) {
      console.warn(`prism: media for unknown track ${participantSid} ${trackSid}`);
      return;
    }
    if (publication.track && publication.track !== event.track) this.#dropRemoteTrack(publication);
    publication.track = event.track;
    publication.receiver = event.receiver;
    publication.subscribed = true;
    this.emit(RoomEvent.TrackSubscribed, event.track, publication, participant);
  }

  // ------------------------------------------------------------------ publishing

  /** See LocalParticipant.publishTrack. */
  async _publish(track, { source, name = '', simulcast, stopOnUnpublish = false } = {}) {
    if (this.#closed) throw new Error('the room is disconnected');
    if (this.#published.has(track.id)) throw new Error('this track is already published');
    const video = track.kind === 'video';
    const publication = new LocalTrackPublication(this, track, {
      source: source ?? (video ? TrackSource.Camera : TrackSource.Microphone),
      name,
      simulcast: video && (simulcast ?? source !== TrackSource.ScreenShare),
      stopOnUnpublish,
    });
    this.#published.set(publication.cid, publication);
    const published = new Promise((resolve, reject) => {
      this.#waitingPublished.set(publication.cid, { resolve, reject });
    });
    const session = this.#session;
    if (session && !session.closed) {
      this.#announce(session, publication);
      this.#negotiate(session);
    }
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new Error('the server did not publish the track in time')),
        this.options.publishTimeoutMs,
      );
    });
    try {
      return await Promise.race([published, timeout]);
    } catch (e) {
      this.#waitingPublished.delete(publication.cid);
      await this._unpublish(publication).catch(() => {});
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Tells the server about a track (addTrack), then adds it to the connection. */
  #announce(session, publication) {
    const track = publication.track;
    const settings = track.getSettings?.() ?? {};
    const width = settings.width ?? 0;
    const height = settings.height ?? 0;
    const video = publication.kind === TrackKind.Video;
    const layers =
      video && publication.simulcast
        ? SIMULCAST.map((e) => ({
            rid: e.rid,
            width: Math.round(width / e.scaleResolutionDownBy),
            height: Math.round(height / e.scaleResolutionDownBy),
            bitrate: e.maxBitrate,
          }))
        : [];
    // Before the offer that carries it, so the server can match the msid to this metadata.
    session.signal.send({
      addTrack: {
        cid: publication.cid,
        name: publication.name,
        kind: video ? 'VIDEO' : 'AUDIO',
        source: sourceToProto(publication.source),
        width,
        height,
        muted: publication.muted,
        layers,
      },
    });
    const init = { direction: 'sendonly', streams: [publication.stream] };
    if (video) {
      publication._resetWanted();
      init.sendEncodings = publication.simulcast
        ? publication._sendEncodings()
        : [{ maxBitrate: publication.source === TrackSource.ScreenShare ? SCREEN_BITRATE : 1_700_000 }];
    }
    const transceiver = session.pc.addTransceiver(track, init);
    if (video) this.#preferCodecs(transceiver, publication.simulcast);
    publication.transceiver = transceiver;
  }

  /** The preferred codec first; for simulcast, no RTX (see simulcastCodecs). */
  #preferCodecs(transceiver, simulcast) {
    const codecs = RTCRtpReceiver.getCapabilities?.('video')?.codecs;
    if (!codecs || !transceiver.setCodecPreferences) return;
    const preferred = this.options.videoCodec;
    const ordered = simulcast
      ? simulcastCodecs(codecs, preferred)
      : simulcastCodecs(codecs, preferred).concat(codecs.filter((c) => c.mimeType.toLowerCase() === 'video/rtx'));
    try {
      transceiver.setCodecPreferences(ordered);
    } catch (e) {
      console.warn('prism: codec preferences not applied', e);
    }
  }

  /** See LocalParticipant.unpublishTrack. */
  async _unpublish(publication) {
    if (!this.#published.has(publication.cid)) return;
    this.#published.delete(publication.cid);
    this.#waitingPublished.get(publication.cid)?.reject(new Error('unpublished'));
    this.#waitingPublished.delete(publication.cid);
    if (publication.sid) {
      this._send({ unpublish: { trackSid: publication.sid } });
      this.localParticipant.tracks.delete(publication.sid);
    }
    const session = this.#session;
    if (session && !session.closed && publication.transceiver) {
      try {
        session.pc.removeTrack(publication.transceiver.sender);
      } catch {
        // the connection is already closed
      }
      this.#negotiate(session);
    }
    publication.transceiver = null;
    if (publication.stopOnUnpublish) publication.track.stop();
    this.emit(RoomEvent.LocalTrackUnpublished, publication);
  }

  async _setLocalMuted(publication, muted) {
    publication.muted = muted;
    // A disabled track sends silence / black frames at a trickle: the connection stays warm
    // and unmuting is instant.
    publication.track.enabled = !muted;
    if (publication.sid) this._send({ mute: { trackSid: publication.sid, muted } });
    this.emit(RoomEvent.TrackMuted, publication, this.localParticipant, muted);
  }

  _sendTrackSettings(publication) {
    const s = publication.settings;
    this._send({
      trackSettings: {
        trackSid: publication.sid,
        quality: QUALITY_TO_PROTO[s.quality],
        width: s.width,
        height: s.height,
        paused: s.paused,
        pinned: s.pinned,
      },
    });
  }

  /** Sends a SignalRequest on the current session; dropped while reconnecting. */
  _send(request) {
    return this.#session?.signal.send(request) ?? false;
  }

  // ------------------------------------------------------------------ negotiation

  /**
   * Runs SDP work one step at a time per session. A failed step leaves offer/answer out of step
   * with the server (which waits for an answer, or never got our offer): the session is beyond
   * repair, so rejoin.
   */
  #enqueue(session, step) {
    session.queue = session.queue
      .then(() => (session.closed ? undefined : step()))
      .catch((e) => {
        if (session.closed) return;
        console.error('prism: negotiation failed; rejoining', e);
        if (session === this.#session) this.#lost(`negotiation failed: ${e.message}`);
      });
    return session.queue;
  }

  /** Asks for an offer; sent now, or after the outstanding one is answered. */
  #negotiate(session, { iceRestart = false } = {}) {
    if (iceRestart) session.iceRestart = true;
    const id = session.negotiator.requestOffer();
    if (id !== null) this.#enqueue(session, () => this.#sendOffer(session, id));
  }

  async #sendOffer(session, id) {
    const { pc, signal } = session;
    const offer = await pc.createOffer({ iceRestart: session.iceRestart });
    session.iceRestart = false;
    await pc.setLocalDescription(offer);
    if (!signal.send({ offer: { type: 'offer', sdp: pc.localDescription.sdp, id } })) {
      session.negotiator.offerFailed();
      return;
    }
    if (!session.offered) {
      session.offered = true;
      for (const trickle of session.pendingCandidates) signal.send({ trickle });
      session.pendingCandidates = [];
    }
  }

  async #onAnswer(session, { sdp, id = 0 }) {
    if (!session.negotiator.acceptsAnswer(id)) return; // stale: an offer we rolled back
    await session.pc.setRemoteDescription({ type: 'answer', sdp });
    const next = session.negotiator.onAnswer(id);
    if (next !== null) await this.#sendOffer(session, next);
  }

  async #onOffer(session, { sdp, id = 0 }) {
    const { pc, signal, negotiator } = session;
    if (negotiator.onRemoteOffer() === 'rollback' && pc.signalingState === 'have-local-offer') {
      await pc.setLocalDescription({ type: 'rollback' });
    }
    await pc.setRemoteDescription({ type: 'offer', sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    signal.send({ answer: { type: 'answer', sdp: pc.localDescription.sdp, id } });
    const next = negotiator.afterRemoteOffer();
    if (next !== null) await this.#sendOffer(session, next);
  }

  #onRemoteCandidate(session, { candidate, sdpMid, sdpMlineIndex }) {
    if (!candidate) return;
    session.pc
      .addIceCandidate({ candidate, sdpMid: sdpMid || undefined, sdpMLineIndex: sdpMlineIndex ?? 0 })
      .catch((e) => console.warn('prism: remote candidate refused', e));
  }

  // ------------------------------------------------------------------ connection state

  #onPcState(session) {
    if (session !== this.#session || this.#reconnecting) return;
    const state = session.pc.connectionState;
    if (state === 'connected') {
      for (const id of session.timers) clearTimeout(id);
      session.timers.clear();
      this.#setState(ConnectionState.Connected);
    } else if (state === 'disconnected') {
      // Often recovers by itself within a second or two (a blip); if not, restart ICE.
      session.timer(() => {
        if (session.pc.connectionState !== 'connected') this.#restartIce(session);
      }, this.options.iceDisconnectedGraceMs);
    } else if (state === 'failed') {
      this.#restartIce(session);
    }
  }

  /** First remedy: new ICE credentials over the same signaling; a full rejoin if that fails. */
  #restartIce(session) {
    if (!this.options.reconnect || session !== this.#session) return;
    if (!session.signal.isOpen) {
      this.#lost('connection lost');
      return;
    }
    this.#setState(ConnectionState.Reconnecting);
    this.#negotiate(session, { iceRestart: true });
    session.timer(() => {
      if (session === this.#session && session.pc.connectionState !== 'connected') {
        this.#lost('ICE restart did not reconnect');
      }
    }, this.options.iceRestartTimeoutMs);
  }

  /** The session is beyond repair: rejoin with the same token, republishing our tracks. */
  async #lost(why) {
    if (this.#closed || this.#reconnecting) return;
    if (!this.options.reconnect) {
      this.#end('connection_lost', { leave: false });
      return;
    }
    this.#reconnecting = true;
    this.#session?.close();
    this.#session = null;
    this.#setState(ConnectionState.Reconnecting);
    this.emit(RoomEvent.Reconnecting, why);
    const deadline = Date.now() + this.options.reconnectTimeoutMs;
    let lastError = null;
    for (let attempt = 0; !this.#closed && Date.now() < deadline; attempt++) {
      const wait = RECONNECT_BACKOFF_MS[Math.min(attempt, RECONNECT_BACKOFF_MS.length - 1)];
      if (wait) await new Promise((r) => setTimeout(r, wait));
      if (this.#closed) return;
      try {
        await this.#join();
        this.#reconnecting = false;
        this.emit(RoomEvent.Reconnected);
        // The new connection reports 'connected' by itself; it may already have.
        this.#onPcState(this.#session);
        return;
      } catch (e) {
        lastError = e;
        this.#session?.close();
        this.#session = null;
        if (FATAL.has(e.reason)) break;
      }
    }
    this.#reconnecting = false;
    if (!this.#closed) {
      this.#end('reconnect_failed', { leave: false, error: lastError });
    }
  }

  #end(reason, { leave, error = null, notify = true }) {
    if (this.#closed) return;
    this.#closed = true;
    this.#session?.close({ leave });
    this.#session = null;
    for (const { reject } of this.#waitingPublished.values()) reject(new Error('disconnected'));
    this.#waitingPublished.clear();
    for (const publication of this.#published.values()) {
      if (publication.stopOnUnpublish) publication.track.stop();
    }
    for (const participant of [...this.participants.values()]) this.#removeParticipant(participant, reason);
    this.#setState(ConnectionState.Disconnected);
    if (notify) this.emit(RoomEvent.Disconnected, reason, error);
  }

  #setState(state) {
    if (this.connectionState === state) return;
    this.connectionState = state;
    this.emit(RoomEvent.ConnectionState, state);
  }
}
