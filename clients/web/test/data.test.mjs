// The data-message codec against protobuf's binary encoding of DataPacket (field by field, as
// prost writes it), round trips, and malformed input.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { DataKind, DataPacketError, decodeDataPacket, encodeDataPacket } from '../src/data.js';

// DataPacket { sender_identity: "al", payload: [1, 2], topic: "t", kind: LOSSY,
// destination_identities: ["b"] } in protobuf binary.
const WIRE = Uint8Array.from([0x0a, 2, 0x61, 0x6c, 0x12, 2, 1, 2, 0x1a, 1, 0x74, 0x20, 1, 0x2a, 1, 0x62]);

test('encodes like protobuf', () => {
  const bytes = encodeDataPacket({ senderIdentity: 'al', payload: Uint8Array.from([1, 2]), topic: 't', kind: DataKind.Lossy, destinationIdentities: ['b'] });
  assert.deepEqual(bytes, WIRE);
  assert.deepEqual(encodeDataPacket({}), new Uint8Array(), 'defaults are left out');
});

test('decodes protobuf', () => {
  const p = decodeDataPacket(WIRE);
  assert.equal(p.senderIdentity, 'al');
  assert.deepEqual(p.payload, Uint8Array.from([1, 2]));
  assert.equal(p.topic, 't');
  assert.equal(p.kind, DataKind.Lossy);
  assert.deepEqual(p.destinationIdentities, ['b']);
});

test('round trips text, large payloads and unicode', () => {
  const payload = new Uint8Array(70_000).map((_, i) => i % 251);
  const p = decodeDataPacket(encodeDataPacket({ payload, topic: 'chat ✓', destinationIdentities: ['x', 'ÿ'] }));
  assert.deepEqual(p.payload, payload);
  assert.equal(p.topic, 'chat ✓');
  assert.deepEqual(p.destinationIdentities, ['x', 'ÿ']);
  assert.equal(new TextDecoder().decode(decodeDataPacket(encodeDataPacket({ payload: 'hello' })).payload), 'hello');
});

test('skips unknown fields and rejects malformed bytes', () => {
  // Unknown varint field 9 and unknown length-delimited field 10 around a topic.
  const p = decodeDataPacket(Uint8Array.from([0x48, 0x96, 0x01, 0x52, 1, 0x00, 0x1a, 1, 0x74]));
  assert.equal(p.topic, 't');
  for (const bad of [[0x12, 5, 1], [0x20], [0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], [0x0b]]) {
    assert.throws(() => decodeDataPacket(Uint8Array.from(bad)), DataPacketError, JSON.stringify(bad));
  }
});
