// Data messages: the DataPacket of proto/proto/prism/signal.proto in protobuf *binary*, the
// form the data channels carry (signaling uses JSON; data channels do not). Hand-written
// because the message is five fields and the SDK has no dependencies; the field numbers and
// wire types below must follow the .proto.

/** Which data channel a packet travels on. */
export const DataKind = Object.freeze({ Reliable: 0, Lossy: 1 });

const SENDER_IDENTITY = 1; // string
const PAYLOAD = 2; // bytes
const TOPIC = 3; // string
const KIND = 4; // enum (varint)
const DESTINATION_IDENTITIES = 5; // repeated string

const VARINT = 0;
const LENGTH_DELIMITED = 2;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Thrown for bytes that are not a DataPacket. */
export class DataPacketError extends Error {
  constructor(message) {
    super(`malformed data packet: ${message}`);
    this.name = 'DataPacketError';
  }
}

function pushVarint(out, value) {
  let v = value;
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

function pushBytes(out, field, bytes) {
  pushVarint(out, (field << 3) | LENGTH_DELIMITED);
  pushVarint(out, bytes.length);
  for (const b of bytes) out.push(b);
}

/**
 * Encodes `{ payload, topic, kind, destinationIdentities, senderIdentity }` (all optional;
 * payload a Uint8Array or string) to protobuf binary. Default values are left out, as
 * protobuf does.
 */
export function encodeDataPacket({ payload = new Uint8Array(), topic = '', kind = DataKind.Reliable, destinationIdentities = [], senderIdentity = '' } = {}) {
  const out = [];
  if (senderIdentity) pushBytes(out, SENDER_IDENTITY, encoder.encode(senderIdentity));
  const body = typeof payload === 'string' ? encoder.encode(payload) : payload;
  if (body.length) pushBytes(out, PAYLOAD, body);
  if (topic) pushBytes(out, TOPIC, encoder.encode(topic));
  if (kind) {
    pushVarint(out, (KIND << 3) | VARINT);
    pushVarint(out, kind);
  }
  for (const identity of destinationIdentities) pushBytes(out, DESTINATION_IDENTITIES, encoder.encode(identity));
  return Uint8Array.from(out);
}

/** Decodes protobuf binary into `{ senderIdentity, payload, topic, kind, destinationIdentities }`. */
export function decodeDataPacket(bytes) {
  const data = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const packet = { senderIdentity: '', payload: new Uint8Array(), topic: '', kind: DataKind.Reliable, destinationIdentities: [] };
  let i = 0;
  const varint = () => {
    let value = 0;
    let scale = 1;
    for (let n = 0; n < 10; n++) {
      if (i >= data.length) throw new DataPacketError('truncated varint');
      const b = data[i++];
      value += (b & 0x7f) * scale;
      if (!(b & 0x80)) return value;
      scale *= 128;
    }
    throw new DataPacketError('varint too long');
  };
  while (i < data.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (wire === VARINT) {
      const value = varint();
      if (field === KIND) packet.kind = value;
    } else if (wire === LENGTH_DELIMITED) {
      const len = varint();
      if (i + len > data.length) throw new DataPacketError('field runs past the end');
      const slice = data.subarray(i, i + len);
      i += len;
      if (field === SENDER_IDENTITY) packet.senderIdentity = decoder.decode(slice);
      else if (field === PAYLOAD) packet.payload = slice.slice();
      else if (field === TOPIC) packet.topic = decoder.decode(slice);
      else if (field === DESTINATION_IDENTITIES) packet.destinationIdentities.push(decoder.decode(slice));
    } else if (wire === 5) {
      i += 4; // fixed32 of a field we do not know
    } else if (wire === 1) {
      i += 8; // fixed64
    } else {
      throw new DataPacketError(`wire type ${wire}`);
    }
    if (i > data.length) throw new DataPacketError('field runs past the end');
  }
  return packet;
}
