// The little SDP reading the SDK needs. Everything else goes through the WebRTC API.

/**
 * The msid of each m-section, by mid. A subscribed track arrives with msid
 * "<publisher participant sid> <track sid>", which is how a remote MediaStreamTrack is matched to
 * the track the server announced (browsers do not promise track.id equals the msid's).
 * @param {string} sdp
 * @returns {Map<string, {streamId: string, trackId: string}>}
 */
export function msidsByMid(sdp) {
  const out = new Map();
  let mid = null;
  let msid = null;
  const flush = () => {
    if (mid !== null && msid !== null) out.set(mid, msid);
    mid = null;
    msid = null;
  };
  for (const raw of sdp.split(/\r?\n/)) {
    const line = raw.trim();
    if (line.startsWith('m=')) {
      flush();
    } else if (line.startsWith('a=mid:')) {
      mid = line.slice(6);
    } else if (line.startsWith('a=msid:')) {
      const [streamId, trackId] = line.slice(7).split(' ');
      if (streamId && trackId) msid = { streamId, trackId };
    }
  }
  flush();
  return out;
}

/**
 * Codec capabilities for a simulcast video sender: the browser's, without retransmission
 * (video/rtx). The server cannot yet pair RID-based simulcast layers with their RTX streams
 * (repaired-rid), so retransmissions of simulcast layers would be lost; without RTX the browser
 * retransmits on the media SSRC instead. `preferred` (e.g. "video/VP8") goes first.
 * @param {RTCRtpCodec[]} codecs
 * @param {string} [preferred]
 */
export function simulcastCodecs(codecs, preferred) {
  const kept = codecs.filter((c) => c.mimeType.toLowerCase() !== 'video/rtx');
  if (!preferred) return kept;
  const want = preferred.toLowerCase();
  return [
    ...kept.filter((c) => c.mimeType.toLowerCase() === want),
    ...kept.filter((c) => c.mimeType.toLowerCase() !== want),
  ];
}

/**
 * Gives the m-sections our offer introduces mids of our own ("c1", "c2", ...), never reused,
 * so they cannot collide with the mids the server picks for the transceivers it adds. Why: when
 * offers cross (glare) we roll ours back, but Chrome remembers the header extension ids of the
 * rolled-back mids and then refuses a server offer that reuses such a mid with other ids
 * ("RTP extension ID reassignment not supported").
 * @param {string} sdp our offer
 * @param {Set<string>} known mids already negotiated (ours or the server's): kept
 * @param {() => string} nextMid a fresh mid
 */
export function renameNewMids(sdp, known, nextMid) {
  const renamed = new Map();
  const lines = sdp.split('\r\n').map((line) => {
    if (!line.startsWith('a=mid:')) return line;
    const mid = line.slice(6);
    if (known.has(mid)) return line;
    const fresh = nextMid();
    renamed.set(mid, fresh);
    return `a=mid:${fresh}`;
  });
  if (!renamed.size) return sdp;
  return lines
    .map((line) =>
      line.startsWith('a=group:BUNDLE ')
        ? `a=group:BUNDLE ${line
            .slice(15)
            .split(' ')
            .map((m) => renamed.get(m) ?? m)
            .join(' ')}`
        : line,
    )
    .join('\r\n');
}

/** Every mid in an SDP. */
export function mids(sdp) {
  const out = new Set();
  for (const line of (sdp ?? '').split(/\r?\n/)) if (line.startsWith('a=mid:')) out.add(line.slice(6).trim());
  return out;
}
