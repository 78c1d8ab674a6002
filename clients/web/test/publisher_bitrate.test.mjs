// Issue 3, acceptance 5: the server's transport-wide congestion control feedback lets a browser
// publisher's own bandwidth estimate ramp up. One headless Chromium page publishes the fake
// 1280x720 camera without simulcast through the SDK; within 10 s its outgoing bitrate, read
// from its own getStats, reaches 1.5 Mbit/s: the rate the sender decided on (outbound-rtp
// targetBitrate), which follows its estimate (availableOutgoingBitrate, printed too). The
// server's SDP suggests a 1.5 Mbit/s start (x-google-start-bitrate), but Chrome's first probe
// results may set it lower (760 kbit/s in one run here) and only feedback brings it back up. The payload rate is printed too: the
// fake camera's picture compresses to about 1.1 Mbit/s at 720p whatever the target, so bytes
// sent cannot show 1.5 Mbit/s with this source.
//
// Run: node --test test/publisher_bitrate.test.mjs (scripts/test.sh does).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { PrismServer, launchBrowser, openPage, sleep } from './harness.mjs';

const TARGET_BPS = 1_500_000;

let server;
let browser;

before(async () => {
  server = new PrismServer();
  await server.start();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.close();
});

test('a browser publisher reaches 1.5 Mbit/s within 10 s', { timeout: 60_000 }, async () => {
  const page = await openPage(browser, 'publisher-bitrate');
  // Any page of the server's origin will do: the SDK is served at /sdk/.
  await page.goto(`${server.url}/healthz`);
  const joinedAt = await page.evaluate(async () => {
    const { Room, createCameraTrack, TrackSource } = await import('/sdk/index.js');
    const response = await fetch('/api/token', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ room: 'bitrate', identity: 'publisher' }),
    });
    const { token } = await response.json();
    const room = new Room(location.origin, token);
    const camera = await createCameraTrack();
    // Published before connecting, the track goes out in the first offer.
    const published = room.localParticipant.publishTrack(camera, { source: TrackSource.Camera, simulcast: false });
    await room.connect();
    await published;
    window.room = room;
    return Date.now();
  });

  // Every 500 ms: the sender's bandwidth estimate (availableOutgoingBitrate, what the
  // server's transport-cc feedback drives), the encoder's target bitrate, and the video payload
  // rate actually sent.
  const sample = () =>
    page.evaluate(async () => {
      const out = { bytes: 0, target: 0, estimate: 0, width: 0, at: performance.now() };
      (await window.room.peerConnection.getStats()).forEach((s) => {
        if (s.type === 'outbound-rtp' && s.kind === 'video') {
          out.bytes += s.bytesSent;
          out.target += s.targetBitrate ?? 0;
          out.width = s.frameWidth ?? 0;
        }
        if (s.type === 'candidate-pair' && s.nominated) out.estimate = s.availableOutgoingBitrate ?? 0;
      });
      return out;
    });
  let previous = await sample();
  let reached = null;
  const trace = [];
  while (Date.now() - joinedAt < 10_000) {
    await sleep(500); // a measurement window, not a wait for a condition
    const now = await sample();
    const payload = ((now.bytes - previous.bytes) * 8 * 1000) / (now.at - previous.at);
    previous = now;
    const kbps = (bps) => Math.round(bps / 1000);
    trace.push(`${kbps(now.estimate)}/${kbps(now.target)}/${kbps(payload)}@${now.width}`);
    if (now.target >= TARGET_BPS) {
      reached = Date.now() - joinedAt;
      break;
    }
  }
  console.log(`# estimate/target/payload kbit/s @ width, every 500 ms since join: ${trace.join(' ')}`);
  assert.ok(reached !== null, 'the encoder target reaches 1.5 Mbit/s within 10 s');
  console.log(`# reached ${reached} ms after joining`);
});
