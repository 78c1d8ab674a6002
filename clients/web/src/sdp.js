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

