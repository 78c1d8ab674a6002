// The server's connection-quality reports (ConnectionQualityUpdate in signal.proto): how well
// its link to us carries what we subscribed to, as a grade for an indicator and the numbers
// behind it. Sent every 2 s and at once when the grade changes.

export const ConnectionQuality = Object.freeze({
  Excellent: 'excellent',
  Good: 'good',
  Poor: 'poor',
  Lost: 'lost',
});

// Protobuf JSON names enums by name (EXCELLENT = 0 is omitted as the default); a number is
// accepted too.
const GRADES = ['EXCELLENT', 'GOOD', 'POOR', 'LOST'];
const GRADE_FROM_PROTO = {
  EXCELLENT: ConnectionQuality.Excellent,
  GOOD: ConnectionQuality.Good,
  POOR: ConnectionQuality.Poor,
  LOST: ConnectionQuality.Lost,
};

/** A number from protobuf JSON (64-bit integers arrive as strings), 0 when absent or bad. */
function num(v) {
  const n = Number(v ?? 0);
  return Number.isFinite(n) ? n : 0;
}

/**
 * A ConnectionQualityUpdate (protobuf JSON, absent fields defaulted) as the SDK exposes it:
 * {quality: 'excellent' | 'good' | 'poor' | 'lost', estimateBps, allocatedBps, wantedBps,
 * loss (fraction 0..1), rttMs, pausedTracks, at (Date.now() when it arrived)}. A grade this SDK
 * does not know reads as 'good' (something is off, nothing is lost).
 */
export function connectionQualityFromProto(m) {
  const grade = typeof m.quality === 'number' ? GRADES[m.quality] : (m.quality ?? 'EXCELLENT');
  return {
    quality: GRADE_FROM_PROTO[grade] ?? ConnectionQuality.Good,
    estimateBps: num(m.estimateBps),
    allocatedBps: num(m.allocatedBps),
    wantedBps: num(m.wantedBps),
    loss: num(m.loss),
    rttMs: num(m.rttMs),
    pausedTracks: num(m.pausedTracks),
    at: Date.now(),
  };
}
