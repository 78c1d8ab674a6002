// Type declarations for the Prism browser SDK (src/index.js). Hand-written: the SDK is plain
// JavaScript with no build step; keep this file in step with it.

export type ConnectionStateValue = 'connecting' | 'connected' | 'reconnecting' | 'disconnected';
export declare const ConnectionState: Readonly<{
  Connecting: 'connecting';
  Connected: 'connected';
  Reconnecting: 'reconnecting';
  Disconnected: 'disconnected';
}>;

export type TrackKindValue = 'audio' | 'video';
export declare const TrackKind: Readonly<{ Audio: 'audio'; Video: 'video' }>;

export type TrackSourceValue = 'unknown' | 'camera' | 'microphone' | 'screen_share' | 'screen_share_audio';
export declare const TrackSource: Readonly<{
  Unknown: 'unknown';
  Camera: 'camera';
  Microphone: 'microphone';
  ScreenShare: 'screen_share';
  ScreenShareAudio: 'screen_share_audio';
}>;

/** A subscriber's wish for a simulcast video: a layer, or 'auto' (from the rendered size). */
export type VideoQualityValue = 'auto' | 'low' | 'medium' | 'high';
export declare const VideoQuality: Readonly<{ Auto: 'auto'; Low: 'low'; Medium: 'medium'; High: 'high' }>;

/** Why the server forwards nothing of a subscribed video (StreamState.reason). */
export type PauseReasonValue = 'none' | 'requested' | 'no_layer' | 'bandwidth';
export declare const PauseReason: Readonly<{
  /** Not paused, or the server did not say. */
  None: 'none';
  /** We paused it (setPaused). */
  Requested: 'requested';
  /** The publisher sends no layer at the moment. */
  NoLayer: 'no_layer';
  /** Our downlink cannot carry it: audio and higher-priority video come first. */
  Bandwidth: 'bandwidth';
}>;

/** The grade of the server's connection-quality report on our downlink. */
export type ConnectionQualityValue = 'excellent' | 'good' | 'poor' | 'lost';
export declare const ConnectionQuality: Readonly<{
  /** Everything subscribed arrives at the layers wanted. */
  Excellent: 'excellent';
  /** Some video on a lower layer than wanted, or noticeable loss. */
  Good: 'good';
  /** Video paused for bandwidth, or heavy loss. */
  Poor: 'poor';
  /** The server has had no feedback from us for seconds. */
  Lost: 'lost';
}>;

/** The server's report on its link to us (ConnectionQualityUpdate), every 2 s and on a grade change. */
export interface ConnectionQualityReport {
  quality: ConnectionQualityValue;
  /** The server's send-side estimate of our downlink, bit/s (0: none yet). */
  estimateBps: number;
  /** What the server chose to send us within it, bit/s. */
  allocatedBps: number;
  /** What our subscriptions would need uncapped, bit/s. */
  wantedBps: number;
  /** Downlink loss as we reported it, fraction 0..1. */
  loss: number;
  /** Round-trip time, ms (0: unknown). */
  rttMs: number;
  /** Video tracks paused for bandwidth. */
  pausedTracks: number;
  /** When it arrived (Date.now()). */
  at: number;
}
/** A ConnectionQualityUpdate in protobuf JSON, as the SDK exposes it. */
export declare function connectionQualityFromProto(message: object): ConnectionQualityReport;

export type ConnectErrorReasonValue =
  | 'unauthorized'
  | 'forbidden'
  | 'room_full'
  | 'room_not_found'
  | 'unreachable'
  | 'timeout'
  | 'server_error'
  | 'cancelled';
export declare const ConnectErrorReason: Readonly<{
  Unauthorized: 'unauthorized';
  Forbidden: 'forbidden';
  RoomFull: 'room_full';
  RoomNotFound: 'room_not_found';
  Unreachable: 'unreachable';
  Timeout: 'timeout';
  ServerError: 'server_error';
  Cancelled: 'cancelled';
}>;

/** Why connecting (or reconnecting) failed. */
export declare class ConnectError extends Error {
  readonly name: 'ConnectError';
  readonly reason: ConnectErrorReasonValue;
  /** HTTP status of the refused signaling request, when the server answered one. */
  readonly status?: number;
  /** The server's error code (`room_full`, `unauthenticated`, `NOT_ALLOWED`, ...). */
  readonly code?: string;
}

/** An `error` message from the server about one of our requests; the session goes on. */
export declare class SignalError extends Error {
  readonly name: 'SignalError';
  /** The protocol's ErrorCode name, e.g. 'NOT_FOUND'. */
  readonly code: string;
  /** The request that failed, e.g. 'addTrack'. */
  readonly request: string;
}

export interface VideoLayer {
  rid: string;
  width: number;
  height: number;
  bitrate: number;
}

/** A minimal event emitter: on/once return a function that removes the listener. */
declare class Emitter {
  on(event: string, listener: (...args: any[]) => void): () => void;
  once(event: string, listener: (...args: any[]) => void): () => void;
  off(event: string, listener: (...args: any[]) => void): void;
}

export declare class TrackPublication extends Emitter {
  /** Server-assigned id; empty until the server published the track. */
  sid: string;
  kind: TrackKindValue;
  source: TrackSourceValue;
  name: string;
  mimeType: string;
  muted: boolean;
  simulcast: boolean;
  width: number;
  height: number;
  layers: VideoLayer[];
}

export interface TrackSettings {
  quality: VideoQualityValue;
  width: number;
  height: number;
  paused: boolean;
  /** Shown large: allocated before our other video when the downlink is short. */
  pinned: boolean;
}

/** What the server forwards of a subscribed video track (its StreamStateUpdate). */
export interface StreamState {
  /** Nothing is forwarded: paused in the settings, no layer arriving, or no room on our downlink. */
  paused: boolean;
  /** Why it is paused ('none' while active). */
  reason: PauseReasonValue;
  /** The simulcast layer forwarded ('q' | 'h' | 'f'; '' for a track without simulcast). */
  rid: string;
  /** That layer's rank, null when the server gave none. */
  quality: 'low' | 'medium' | 'high' | null;
  /** Its size as the publisher declared it (0 when unknown). */
  width: number;
  height: number;
}

/** A simulcast layer of a local track and whether it is sent. */
export interface LayerState {
  rid: string;
  /** Ours: false after setLayerActive(rid, false). */
  enabled: boolean;
  /** The server's (dynacast): false when no subscriber needs the layer. */
  wanted: boolean;
  /** Sent: enabled and wanted (the sender's encoding is active). */
  active: boolean;
}

/** A track another participant publishes. */
export declare class RemoteTrackPublication extends TrackPublication {
  readonly participant: RemoteParticipant;
  /** The media, once subscribed and arriving. */
  track: MediaStreamTrack | null;
  receiver: RTCRtpReceiver | null;
  /** Whether the subscription is negotiated. */
  subscribed: boolean;
  /** What we asked for. */
  wantSubscribed: boolean;
  /** The display settings last sent to the server. */
  settings: TrackSettings;
  /** A MediaStream holding the track, for an element's srcObject. */
  readonly mediaStream: MediaStream | null;
  setSubscribed(subscribed: boolean): void;
  /**
   * What the server forwards now, from its latest StreamStateUpdate (null until it sent one,
   * and again once the subscription ends). Changes emit 'streamStateChanged' on the
   * publication and RoomEvent.StreamStateChanged on the room.
   */
  streamState: StreamState | null;
  /**
   * Asks for a simulcast layer: 'low' (q), 'medium' (h), 'high' (f), or 'auto' to let the
   * rendered size decide. Sent as `trackSettings`; the server switches on the layer's next
   * keyframe and then announces the new stream state.
   */
  setQuality(quality: VideoQualityValue): void;
  /** The size the video is shown at, in device pixels: with quality 'auto', the server picks the smallest layer at least that large. */
  setRenderedSize(width: number, height: number): void;
  /** Not shown at all: the server forwards no video until resumed. */
  setPaused(paused: boolean): void;
  /**
   * Pins (shown large) or unpins the video: when our downlink is short, the server gives it its
   * layers before our other video. Sent as `trackSettings` with the other settings kept.
   */
  setPinned(pinned: boolean): void;
  on(event: 'streamStateChanged', listener: (state: StreamState | null) => void): () => void;
  on(event: string, listener: (...args: any[]) => void): () => void;
}

/** A track this participant publishes. */
export declare class LocalTrackPublication extends TrackPublication {
  readonly track: MediaStreamTrack;
  /** The browser's id of the track: the msid track id and the addTrack cid. */
  readonly cid: string;
  readonly stream: MediaStream;
  transceiver: RTCRtpTransceiver | null;
  readonly sender: RTCRtpSender | null;
  stopOnUnpublish: boolean;
  /** Stops sending (the track is disabled) and tells everyone. */
  mute(): Promise<void>;
  unmute(): Promise<void>;
  /** The simulcast layers (q, h, f) and whether each is sent; empty without simulcast. */
  readonly layerStates: LayerState[];
  isLayerActive(rid: string): boolean;
  /**
   * Starts or stops sending one simulcast layer (the sender's encoding `active`); the
   * server's dynacast wishes apply on top. Throws for a track without simulcast or an unknown
   * rid; resolves once the encodings are updated.
   */
  setLayerActive(rid: string, active: boolean): Promise<void>;
  /** 'subscribedLayersChanged': the server's dynacast update was applied. */
  on(event: 'subscribedLayersChanged', listener: (layers: LayerState[]) => void): () => void;
  on(event: string, listener: (...args: any[]) => void): () => void;
}

export type ParticipantState = 'joining' | 'joined' | 'active' | 'disconnected';

export declare class Participant {
  sid: string;
  identity: string;
  name: string;
  metadata: string;
  state: ParticipantState;
  /** Speaking now, per the server's active speaker detection. */
  isSpeaking: boolean;
  /** Smoothed linear audio level, 0..1, while speaking. */
  audioLevel: number;
  /** Publications by track sid. */
  tracks: Map<string, TrackPublication>;
  getTrack(source: TrackSourceValue): TrackPublication | undefined;
}

export declare class RemoteParticipant extends Participant {
  tracks: Map<string, RemoteTrackPublication>;
  getTrack(source: TrackSourceValue): RemoteTrackPublication | undefined;
}

export interface PublishOptions {
  /** Default: camera for video, microphone for audio. */
  source?: TrackSourceValue;
  name?: string;
  /** Video only. Default: true except for screen share (q/h/f at 1/4, 1/2 and full size). */
  simulcast?: boolean;
  /** Stop the MediaStreamTrack when it is unpublished or the room disconnects. Default false. */
  stopOnUnpublish?: boolean;
}

export declare class LocalParticipant extends Participant {
  tracks: Map<string, LocalTrackPublication>;
  /** Our publication of a source, including one still waiting for its sid. */
  getTrack(source: TrackSourceValue): LocalTrackPublication | undefined;
  /** Sends a data message; see Room.publishData. */
  publishData(payload: Uint8Array | string, options?: DataOptions): Promise<void>;
  /**
   * Publishes a track; resolves once the server named it. Called before Room.connect(), the
   * track goes out in the first offer (recommended).
   */
  publishTrack(track: MediaStreamTrack, options?: PublishOptions): Promise<LocalTrackPublication>;
  unpublishTrack(publication: LocalTrackPublication): Promise<void>;
  publishCamera(options?: { simulcast?: boolean; constraints?: MediaTrackConstraints }): Promise<LocalTrackPublication>;
  publishMicrophone(options?: { constraints?: MediaTrackConstraints }): Promise<LocalTrackPublication>;
  /** One publication per captured track (video, and audio when asked for and shared). */
  publishScreen(options?: { audio?: boolean }): Promise<LocalTrackPublication[]>;
}

/** Live statistics of a publication; see Room.getStats. Rates in bit/s, times in ms. */
export interface InboundTrackStats {
  direction: 'inbound';
  kind: TrackKindValue;
  codec: string | null;
  width: number | null;
  height: number | null;
  fps: number | null;
  bitrate: number | null;
  packetsReceived: number;
  packetsLost: number;
  /** Loss since the previous call, percent. */
  lossPercent: number;
  rtt: number | null;
  framesDecoded: number | null;
  /**
   * Simulcast layer being received ('q' | 'h' | 'f', or 'paused'): the server's stream state,
   * or judged from the decoded width before the server sent one.
   */
  layer: string | null;
  totalSamplesReceived: number | null;
  audioLevel: number | null;
}

export interface OutboundLayerStats {
  rid: string | null;
  width: number | null;
  height: number | null;
  fps: number | null;
  bitrate: number | null;
  active: boolean;
}

export interface OutboundTrackStats {
  direction: 'outbound';
  kind: TrackKindValue;
  codec: string | null;
  bitrate: number | null;
  rtt: number | null;
  lossPercent: number | null;
  layers: OutboundLayerStats[];
  /** Why the browser sends less than asked ('bandwidth', 'cpu'), if it does. */
  qualityLimitation: string | null;
}

export interface RoomOptions {
  /** Subscribe to every track automatically. Default true. */
  autoSubscribe?: boolean;
  /** How long to wait for the server's join. Default 10 000 ms. */
  joinTimeoutMs?: number;
  /** How long publishTrack waits for the server to name the track. Default 10 000 ms. */
  publishTimeoutMs?: number;
  /** Reconnect automatically: ICE restart, then a full rejoin. Default true. */
  reconnect?: boolean;
  /** Give up reconnecting after this long. Default 60 000 ms. */
  reconnectTimeoutMs?: number;
  /** A connection disconnected this long gets an ICE restart. Default 2 000 ms. */
  iceDisconnectedGraceMs?: number;
  /** ...and a full rejoin if the ICE restart has not reconnected after this long. Default 5 000 ms. */
  iceRestartTimeoutMs?: number;
  /** Preferred codec for published video. Default 'video/VP8'; null for the browser's choice. */
  videoCodec?: string | null;
  /** Merged into the RTCPeerConnection configuration (ICE servers come from the server). */
  rtcConfig?: RTCConfiguration;
}

export interface RoomEvents {
  participantJoined: (participant: RemoteParticipant) => void;
  dataReceived: (message: DataMessage) => void;
  /** `reason` is the protocol's DisconnectReason in lower case, e.g. 'client_initiated'. */
  participantLeft: (participant: RemoteParticipant, reason: string) => void;
  participantUpdated: (participant: RemoteParticipant) => void;
  trackPublished: (publication: RemoteTrackPublication, participant: RemoteParticipant) => void;
  trackUnpublished: (publication: RemoteTrackPublication, participant: RemoteParticipant) => void;
  trackMuted: (publication: TrackPublication, participant: Participant, muted: boolean) => void;
  trackSubscribed: (track: MediaStreamTrack, publication: RemoteTrackPublication, participant: RemoteParticipant) => void;
  trackUnsubscribed: (track: MediaStreamTrack, publication: RemoteTrackPublication, participant: RemoteParticipant) => void;
  trackSubscriptionFailed: (publication: RemoteTrackPublication, participant: RemoteParticipant, error: string) => void;
  localTrackPublished: (publication: LocalTrackPublication) => void;
  localTrackUnpublished: (publication: LocalTrackPublication) => void;
  /** Everyone speaking now (ourselves included), loudest first. */
  activeSpeakers: (speakers: Participant[]) => void;
  /** The server forwards another layer of a subscribed video (or paused/resumed it). */
  streamStateChanged: (publication: RemoteTrackPublication, state: StreamState, participant: RemoteParticipant) => void;
  /** Dynacast: the server said which layers of our track subscribers need (layer states updated; the encodings follow). */
  subscribedLayersChanged: (publication: LocalTrackPublication, layers: LayerState[]) => void;
  /** The server's report on our downlink (also Room.connectionQuality). */
  connectionQuality: (report: ConnectionQualityReport) => void;
  connectionState: (state: ConnectionStateValue) => void;
  reconnecting: (why: string) => void;
  reconnected: () => void;
  /**
   * The session is over: 'client_initiated' (disconnect()), a DisconnectReason from the server
   * in lower case ('duplicate_identity', 'participant_removed', ...), 'reconnect_failed' (with
   * the last ConnectError) or 'connection_lost' (reconnect: false).
   */
  disconnected: (reason: string, error: ConnectError | null) => void;
  signalError: (error: SignalError) => void;
}

export declare const RoomEvent: Readonly<{
  ParticipantJoined: 'participantJoined';
  ParticipantLeft: 'participantLeft';
  ParticipantUpdated: 'participantUpdated';
  TrackPublished: 'trackPublished';
  TrackUnpublished: 'trackUnpublished';
  TrackMuted: 'trackMuted';
  TrackSubscribed: 'trackSubscribed';
  TrackUnsubscribed: 'trackUnsubscribed';
  TrackSubscriptionFailed: 'trackSubscriptionFailed';
  LocalTrackPublished: 'localTrackPublished';
  LocalTrackUnpublished: 'localTrackUnpublished';
  ActiveSpeakers: 'activeSpeakers';
  StreamStateChanged: 'streamStateChanged';
  SubscribedLayersChanged: 'subscribedLayersChanged';
  ConnectionQuality: 'connectionQuality';
  DataReceived: 'dataReceived';
  ConnectionState: 'connectionState';
  Reconnecting: 'reconnecting';
  Reconnected: 'reconnected';
  Disconnected: 'disconnected';
  SignalError: 'signalError';
}>;

export interface DataOptions {
  /** Ordered and retransmitted (default), or neither. */
  reliable?: boolean;
  topic?: string;
  /** Empty: everyone else in the room. */
  destinationIdentities?: string[];
}

/** A data message that arrived. */
export interface DataMessage {
  payload: Uint8Array;
  topic: string;
  kind: 'reliable' | 'lossy';
  /** Empty when the server sent it (the control plane's SendData). */
  senderIdentity: string;
  participant: RemoteParticipant | undefined;
}

export declare const DataKind: Readonly<{ Reliable: 0; Lossy: 1 }>;
export declare class DataPacketError extends Error {}
export interface DataPacket {
  senderIdentity: string;
  payload: Uint8Array;
  topic: string;
  kind: number;
  destinationIdentities: string[];
}
/** DataPacket (signal.proto) to and from protobuf binary, as the data channels carry it. */
export declare function encodeDataPacket(packet: Partial<Omit<DataPacket, 'payload'>> & { payload?: Uint8Array | string }): Uint8Array;
export declare function decodeDataPacket(bytes: Uint8Array | ArrayBuffer): DataPacket;

export declare class Room {
  constructor(url: string, token: string, options?: RoomOptions);
  readonly url: string;
  readonly options: Required<RoomOptions>;
  /** Room name and sid, from the join. */
  name: string;
  sid: string;
  readonly localParticipant: LocalParticipant;
  /** The other participants, by sid. */
  participants: Map<string, RemoteParticipant>;
  connectionState: ConnectionStateValue;
  activeSpeakers: Participant[];
  /** The server's latest report on our downlink; null until one arrived on this connection. */
  connectionQuality: ConnectionQualityReport | null;
  /** Everything we publish, including tracks still waiting for the server's sid. */
  readonly localPublications: LocalTrackPublication[];
  readonly peerConnection: RTCPeerConnection | null;
  /** Signaling round-trip time from the last ping, ms. */
  readonly signalRtt: number | null;

  /** Joins; rejects with a ConnectError. */
  connect(): Promise<void>;
  /** Leaves and releases everything; harmless to call again. */
  disconnect(): Promise<void>;
  setSubscribed(trackSids: string[], subscribed: boolean): void;
  /** Pins or unpins a remote track by sid (RemoteTrackPublication.setPinned); false if unknown. */
  setPinned(trackSid: string, pinned: boolean): boolean;
  /**
   * Sends a data message to everyone else in the room, or to `destinationIdentities`; reliable
   * (ordered, retransmitted) by default. Needs the can_publish_data grant.
   */
  publishData(payload: Uint8Array | string, options?: DataOptions): Promise<void>;
  getStats(publication: TrackPublication): Promise<InboundTrackStats | OutboundTrackStats | null>;

  on<E extends keyof RoomEvents>(event: E, listener: RoomEvents[E]): () => void;
  once<E extends keyof RoomEvents>(event: E, listener: RoomEvents[E]): () => void;
  off<E extends keyof RoomEvents>(event: E, listener: RoomEvents[E]): void;
}

/** Creates a Room and joins it; rejects with a ConnectError saying why it could not. */
export declare function connect(url: string, token: string, options?: RoomOptions): Promise<Room>;

/** Captures the camera (1280x720 at 30 fps by default). */
export declare function createCameraTrack(constraints?: MediaTrackConstraints): Promise<MediaStreamTrack>;
/** Captures the microphone (echo cancellation, noise suppression, auto gain on by default). */
export declare function createMicrophoneTrack(constraints?: MediaTrackConstraints): Promise<MediaStreamTrack>;

/** Offer/answer bookkeeping (exported for tests and custom integrations). */
export declare class Negotiator {
  requestOffer(): number | null;
  acceptsAnswer(id: number): boolean;
  onAnswer(id: number): number | null;
  onRemoteOffer(): 'answer' | 'rollback';
  afterRemoteOffer(): number | null;
  offerFailed(): void;
  readonly hasOutstanding: boolean;
}
