// Unit tests of the SDK's pure parts (no browser): negotiation bookkeeping and SDP reading.

import assert from 'node:assert/strict';
import { test } from 'node:test';

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
