// Unit tests of the SDK's pure parts (no browser): negotiation bookkeeping, SDP reading and
// simulcast layer bookkeeping.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { LayerActivity, SIMULCAST, streamStateFromProto } from '../src/participant.js';
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
    rid: 'h',
    quality: 'medium',
    width: 640,
    height: 360,
  });
  assert.deepEqual(streamStateFromProto({ trackSid: 'TR_1', state: 'PAUSED' }), {
    paused: true,
    rid: '',
    quality: null,
    width: 0,
    height: 0,
  });
});
