// Per-track live statistics from WebRTC getStats: resolution, frame rate, bitrate, simulcast
// layer, round-trip time and packet loss. Rates are measured between two calls for the same
// publication, so call it periodically (the demo does once a second).

/** Previous counters per publication (and per layer), for rates. */
const previous = new WeakMap();

function rate(prev, now, key, bytes, timestamp) {
  const before = prev?.[key];
  now[key] = { bytes, timestamp };
  if (!before || timestamp <= before.timestamp) return null;
  return Math.max(0, ((bytes - before.bytes) * 8 * 1000) / (timestamp - before.timestamp));
}

function selectedPairRtt(report) {
  for (const s of report.values()) {
    if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded' && s.currentRoundTripTime != null) {
      return s.currentRoundTripTime * 1000;
    }
  }
  return null;
}

function codecOf(report, stat) {
  const codec = stat.codecId ? report.get(stat.codecId) : null;
  return codec?.mimeType ?? null;
}

/**
 * The simulcast layer a remote video is being sent: as the server says (its StreamStateUpdate;
 * 'paused' when it forwards nothing), else judged from the decoded width.
 */
function layerOf(publication, width) {
  const state = publication.streamState;
  if (state) return state.paused ? 'paused' : state.rid || null;
  if (!width || !publication.simulcast) return null;
  const layers = publication.layers.filter((l) => l.width > 0);
  if (layers.length) {
    // The layer whose declared width is closest.
    return layers.reduce((best, l) => (Math.abs(l.width - width) < Math.abs(best.width - width) ? l : best)).rid;
  }
  const full = publication.width || width;
  return width >= full * 0.75 ? 'f' : width >= full * 0.375 ? 'h' : 'q';
}

/**
 * Statistics of a publication's media, or null when it has none yet.
 * Remote: { direction: 'inbound', kind, codec, width, height, fps, bitrate, packetsReceived,
 *   packetsLost, lossPercent, rtt, framesDecoded, layer, totalSamplesReceived, audioLevel }.
 * Local: { direction: 'outbound', kind, codec, bitrate, rtt, lossPercent, layers: [{ rid, width,
 *   height, fps, bitrate, active }], qualityLimitation }.
 * Bitrates in bits per second, RTT in milliseconds, null where not known yet.
 */
export async function trackStats(publication, pc) {
  const remote = 'receiver' in publication;
  const endpoint = remote ? publication.receiver : publication.sender;
  if (!endpoint) return null;
  const report = await endpoint.getStats();
  const prev = previous.get(publication);
  const next = {};
  previous.set(publication, next);
  let rtt = selectedPairRtt(report);
  if (rtt == null && pc) rtt = selectedPairRtt(await pc.getStats());
  return remote ? inbound(publication, report, prev, next, rtt) : outbound(report, prev, next, rtt, publication);
}

function inbound(publication, report, prev, next, rtt) {
  for (const s of report.values()) {
    if (s.type !== 'inbound-rtp') continue;
    const lostDelta = prev?.lost != null ? s.packetsLost - prev.lost.lost : s.packetsLost;
    const receivedDelta = prev?.lost != null ? s.packetsReceived - prev.lost.received : s.packetsReceived;
    next.lost = { lost: s.packetsLost ?? 0, received: s.packetsReceived ?? 0 };
    const total = (lostDelta ?? 0) + (receivedDelta ?? 0);
    // framesPerSecond is missing in some browsers and right after a stall: count frames.
    const framesBefore = prev?.frames;
    next.frames = { count: s.framesDecoded ?? 0, timestamp: s.timestamp };
    const fps =
      s.framesPerSecond ??
      (framesBefore && s.timestamp > framesBefore.timestamp
        ? ((next.frames.count - framesBefore.count) * 1000) / (s.timestamp - framesBefore.timestamp)
        : null);
    return {
      direction: 'inbound',
      kind: s.kind,
      codec: codecOf(report, s),
      width: s.frameWidth ?? null,
      height: s.frameHeight ?? null,
      fps: s.kind === 'video' ? fps : null,
      bitrate: rate(prev, next, 'media', s.bytesReceived ?? 0, s.timestamp),
      packetsReceived: s.packetsReceived ?? 0,
      packetsLost: s.packetsLost ?? 0,
      lossPercent: total > 0 ? (100 * Math.max(0, lostDelta)) / total : 0,
      rtt,
      framesDecoded: s.framesDecoded ?? null,
      layer: s.kind === 'video' ? layerOf(publication, s.frameWidth) : null,
      totalSamplesReceived: s.totalSamplesReceived ?? null,
      audioLevel: s.audioLevel ?? null,
    };
  }
  return null;
}

function outbound(report, prev, next, rtt, publication) {
  const layers = [];
  let codec = null;
  let qualityLimitation = null;
  let totalBitrate = null;
  let remoteRtt = null;
  let lossPercent = null;
  for (const s of report.values()) {
    if (s.type === 'outbound-rtp') {
      const bitrate = rate(prev, next, `rid:${s.rid ?? ''}`, s.bytesSent ?? 0, s.timestamp);
      if (bitrate != null) totalBitrate = (totalBitrate ?? 0) + bitrate;
      codec ??= codecOf(report, s);
      if (s.qualityLimitationReason && s.qualityLimitationReason !== 'none') qualityLimitation = s.qualityLimitationReason;
      layers.push({
        rid: s.rid ?? null,
        width: s.frameWidth ?? null,
        height: s.frameHeight ?? null,
        fps: s.framesPerSecond ?? null,
        bitrate,
        active: s.active !== false,
      });
    } else if (s.type === 'remote-inbound-rtp') {
      if (s.roundTripTime != null) remoteRtt = s.roundTripTime * 1000;
      if (s.fractionLost != null) lossPercent = Math.max(lossPercent ?? 0, s.fractionLost * 100);
    }
  }
  if (!layers.length) return null;
  const order = { q: 0, h: 1, f: 2 };
  layers.sort((a, b) => (order[a.rid] ?? 0) - (order[b.rid] ?? 0));
  return {
    direction: 'outbound',
    kind: publication.kind,
    codec,
    bitrate: totalBitrate,
    rtt: rtt ?? remoteRtt,
    lossPercent,
    layers,
    qualityLimitation,
  };
}
