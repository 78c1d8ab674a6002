// Unit tests of the SDK's pure parts (no browser): negotiation bookkeeping, SDP reading,
// simulcast layer bookkeeping, decoding the server's stream states and connection-quality
// reports, and the track settings pinning sends.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  LayerActivity,
  PauseReason,
  RemoteParticipant,
  RemoteTrackPublication,
  SIMULCAST,
  streamStateFromProto,
} from '../src/participant.js';
import { ConnectionQuality, connectionQualityFromProto } from '../src/quality.js';
import { Room, RoomEvent } from '../src/room.js';
import { Negotiator } from '../src/negotiation.js';
import { msidsByMid, simulcastCodecs } from '../src/sdp.js';

test('offers are serialized and coalesced', () => {
  const n = new Negotiator();
  assert.equal(n.requestOffer(), 1);
  // Two more changes while 1 is unanswered: one follow-up offer, not two.
  assert.equal(n.requestOffer(), null);
  assert.equal(n.requestOffer(), null);
  assert.equal(n.acceptsAnswer(7), false);
  assert.equal(n.onAnswer(7), null, 'stale answer ignored');
  assert.equal(n.acceptsAnswer(1), true);
  assert.equal(n.onAnswer(1), 2);
  assert.equal(n.onAnswer(2), null);
  assert.equal(n.hasOutstanding, false);
});

test('glare: roll back, answer, offer again', () => {
  const n = new Negotiator();
  assert.equal(n.requestOffer(), 1);
  assert.equal(n.onRemoteOffer(), 'rollback');
  assert.equal(n.acceptsAnswer(1), false, 'the answer to the rolled-back offer is stale');
  assert.equal(n.afterRemoteOffer(), 2);
  assert.equal(n.onRemoteOffer(), 'rollback');
  assert.equal(n.afterRemoteOffer(), 3);
  assert.equal(n.onAnswer(3), null);
  assert.equal(n.onRemoteOffer(), 'answer');
  assert.equal(n.afterRemoteOffer(), null);
});

test('a failed offer is offered again after the next negotiation', () => {
  const n = new Negotiator();
  assert.equal(n.requestOffer(), 1);
  n.offerFailed();
  assert.equal(n.onRemoteOffer(), 'answer');
  assert.equal(n.afterRemoteOffer(), 2);
});

const SERVER_OFFER = [
  'v=0',
  'a=group:BUNDLE 0 1 2',
  'm=application 9 UDP/DTLS/SCTP webrtc-datachannel',
  'a=mid:0',
  'm=video 9 UDP/TLS/RTP/SAVPF 96',
  'a=mid:1',
  'a=msid:PA_pub TR_video',
  'a=sendonly',
  'm=audio 9 UDP/TLS/RTP/SAVPF 111',
  'a=mid:2',
  'a=msid:PA_pub TR_audio',
  '',
].join('\r\n');

test('msids are read per mid', () => {
  const byMid = msidsByMid(SERVER_OFFER);
  assert.deepEqual(byMid.get('1'), { streamId: 'PA_pub', trackId: 'TR_video' });
  assert.deepEqual(byMid.get('2'), { streamId: 'PA_pub', trackId: 'TR_audio' });
  assert.equal(byMid.has('0'), false);
});

test('simulcast codecs leave RTX out and put the preferred codec first', () => {
  const codecs = ['video/VP9', 'video/rtx', 'video/VP8', 'video/rtx', 'video/H264'].map((mimeType) => ({ mimeType }));
  assert.deepEqual(
    simulcastCodecs(codecs, 'video/VP8').map((c) => c.mimeType),
    ['video/VP8', 'video/VP9', 'video/H264'],
  );
});

test('a layer is sent when the application and the server both want it', () => {
  const layers = new LayerActivity(SIMULCAST.map((e) => e.rid));
  assert.deepEqual(layers.rids, ['q', 'h', 'f']);
  assert.equal(layers.isActive('f'), true, 'everything is sent until someone says otherwise');
  // Dynacast: only q is needed. Unknown rids are ignored.
  assert.equal(layers.setWanted([{ rid: 'q', active: true }, { rid: 'h' }, { rid: 'f', active: false }, { rid: 'x', active: true }]), true);
  assert.equal(layers.setWanted([{ rid: 'f', active: false }]), false, 'no change');
  const encodings = [{ rid: 'q', active: true }, { rid: 'h', active: true }, { rid: 'f', active: true }];
  assert.equal(layers.applyTo(encodings), true);
  assert.deepEqual(encodings.map((e) => e.active), [true, false, false]);
  assert.equal(layers.applyTo(encodings), false, 'already applied');
  // The application stops q; the server wants f again.
  layers.setEnabled('q', false);
  layers.setWanted([{ rid: 'f', active: true }]);
  layers.applyTo(encodings);
  assert.deepEqual(encodings.map((e) => e.active), [false, false, true]);
  assert.deepEqual(layers.states()[0], { rid: 'q', enabled: false, wanted: true, active: false });
  assert.throws(() => layers.setEnabled('x', true), RangeError);
  // A new session forgets the server's wishes, not the application's.
  layers.resetWanted();
  assert.deepEqual(layers.states().map((s) => s.active), [false, true, true]);
});

test('stream state from the protobuf JSON', () => {
  assert.deepEqual(streamStateFromProto({ trackSid: 'TR_1', rid: 'h', quality: 'MEDIUM', width: 640, height: 360 }), {
    paused: false,
    reason: PauseReason.None,
    rid: 'h',
    quality: 'medium',
    width: 640,
    height: 360,
  });
  assert.deepEqual(streamStateFromProto({ trackSid: 'TR_1', state: 'PAUSED' }), {
    paused: true,
    reason: PauseReason.None,
    rid: '',
    quality: null,
    width: 0,
    height: 0,
  });
  const reason = (r) => streamStateFromProto({ state: 'PAUSED', reason: r }).reason;
  assert.equal(reason('BANDWIDTH'), 'bandwidth');
  assert.equal(reason('REQUESTED'), 'requested');
  assert.equal(reason('NO_LAYER'), 'no_layer');
  assert.equal(reason('SOMETHING_NEW'), 'none');
});

test('connection quality from the protobuf JSON', () => {
  // As the server writes it: 64-bit integers as strings, defaults (EXCELLENT, 0) left out.
  const poor = connectionQualityFromProto({
    quality: 'POOR',
    estimateBps: '480000',
    allocatedBps: '450000',
    wantedBps: '2400000',
    loss: 0.04,
    rttMs: 35,
    pausedTracks: 1,
  });
  assert.equal(typeof poor.at, 'number');
  delete poor.at;
  assert.deepEqual(poor, {
    quality: ConnectionQuality.Poor,
    estimateBps: 480_000,
    allocatedBps: 450_000,
    wantedBps: 2_400_000,
    loss: 0.04,
    rttMs: 35,
    pausedTracks: 1,
  });
  const empty = connectionQualityFromProto({});
  assert.equal(empty.quality, 'excellent');
  assert.equal(empty.estimateBps, 0);
  assert.equal(connectionQualityFromProto({ quality: 3 }).quality, 'lost');
  assert.equal(connectionQualityFromProto({ quality: 'BETTER_THAN_EVER' }).quality, 'good');
  assert.equal(connectionQualityFromProto({ estimateBps: 'junk' }).estimateBps, 0);
});

test('pinning sends the track settings with pinned set and the others kept', () => {
  const room = new Room('http://127.0.0.1:1', 'token');
  const sent = [];
  room._send = (request) => sent.push(request);
  const participant = new RemoteParticipant({ sid: 'PA_1', identity: 'alice' });
  const publication = new RemoteTrackPublication(room, participant, { sid: 'TR_v', kind: 'VIDEO' }, true);
  participant.tracks.set(publication.sid, publication);
  room.participants.set(participant.sid, participant);

  // Before the subscription exists nothing goes out; the settings wait.
  publication.setQuality('medium');
  assert.equal(room.setPinned('TR_v', true), true);
  assert.equal(sent.length, 0);
  publication.subscribed = true;
  publication.setRenderedSize(640, 360);
  assert.deepEqual(sent.pop(), {
    trackSettings: { trackSid: 'TR_v', quality: 'MEDIUM', width: 640, height: 360, paused: false, pinned: true },
  });
  room.setPinned('TR_v', true);
  assert.equal(sent.length, 0, 'no change, nothing sent');
  publication.setPinned(false);
  assert.deepEqual(sent.pop().trackSettings, {
    trackSid: 'TR_v',
    quality: 'MEDIUM',
    width: 640,
    height: 360,
    paused: false,
    pinned: false,
  });
  assert.equal(room.setPinned('TR_unknown', true), false);
});

test('a connection-quality report updates the room and emits an event', () => {
  const room = new Room('http://127.0.0.1:1', 'token');
  const seen = [];
  room.on(RoomEvent.ConnectionQuality, (q) => seen.push(q));
  assert.equal(RoomEvent.ConnectionQuality, 'connectionQuality');
  assert.equal(room.connectionQuality, null);
  room._onConnectionQuality({ quality: 'GOOD', estimateBps: '1200000', allocatedBps: '900000' });
  assert.equal(seen.length, 1);
  assert.equal(room.connectionQuality, seen[0]);
  assert.equal(seen[0].quality, 'good');
  assert.equal(seen[0].estimateBps, 1_200_000);
});
