// Prism browser SDK. One ES module, no dependencies:
//
//   import { connect, RoomEvent } from '/sdk/index.js';
//   const room = await connect('https://prism.example.com', token);
//   room.on(RoomEvent.TrackSubscribed, (track, publication, participant) => { ... });
//   await room.localParticipant.publishCamera();
//   await room.localParticipant.publishMicrophone();
//
// See index.d.ts for the API and README.md for the protocol it speaks.

export { connect, Room, RoomEvent, ConnectionState } from './room.js';
export { ConnectError, ConnectErrorReason, SignalError } from './errors.js';
export {
  Participant,
  LocalParticipant,
  RemoteParticipant,
  TrackPublication,
  LocalTrackPublication,
  RemoteTrackPublication,
  TrackKind,
  TrackSource,
  VideoQuality,
  PauseReason,
  createCameraTrack,
  createMicrophoneTrack,
} from './participant.js';
export { ConnectionQuality, connectionQualityFromProto } from './quality.js';
export { Negotiator } from './negotiation.js';
export { DataKind, DataPacketError, decodeDataPacket, encodeDataPacket } from './data.js';
