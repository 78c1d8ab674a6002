// WHIP and WHEP from a browser with no Prism SDK (issue 6, acceptance 2): one headless
// Chromium page publishes its 1280x720 fake camera as three-layer RID simulcast with a plain
// RTCPeerConnection and one POST /whip/{room}; another page plays the room with a plain
// RTCPeerConnection and one POST /whep/{room}, and decodes frames. Both sessions end with
// DELETE on their Location.
//
// Run: node --test test/whip.test.mjs (scripts/test.sh does).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { PrismServer, launchBrowser, openPage, waitFor } from './harness.mjs';

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

/** Runs in the page: a dev token, then offer -> POST -> answer; returns the session URL. */
const EXCHANGE = `
  window.exchange = async (kind, identity, pc) => {
    const tokenResponse = await fetch('/api/token', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ room: 'broadcast', identity }),
    });
    const { token } = await tokenResponse.json();
    await pc.setLocalDescription(await pc.createOffer());
    const response = await fetch('/' + kind + '/broadcast', {
      method: 'POST',
      headers: { 'content-type': 'application/sdp', authorization: 'Bearer ' + token },
      body: pc.localDescription.sdp,
    });
    if (response.status !== 201) throw new Error(kind + ' POST: ' + response.status + ' ' + (await response.text()));
    await pc.setRemoteDescription({ type: 'answer', sdp: await response.text() });
    return new URL(response.headers.get('location'), location.origin).href;
  };
`;

test('a browser publishes simulcast over WHIP and another plays it over WHEP', { timeout: 90_000 }, async () => {
  const publisher = await openPage(browser, 'whip-publisher');
  await publisher.goto(`${server.url}/healthz`);
  await publisher.addScriptTag({ content: EXCHANGE });
  const whipSession = await publisher.evaluate(async () => {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720 }, audio: true });
    const pc = new RTCPeerConnection();
    pc.addTransceiver(stream.getVideoTracks()[0], {
      direction: 'sendonly',
      sendEncodings: [
        { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
        { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
        { rid: 'f', maxBitrate: 1_500_000 },
      ],
    });
    pc.addTransceiver(stream.getAudioTracks()[0], { direction: 'sendonly' });
    window.pc = pc;
    return window.exchange('whip', 'broadcaster', pc);
  });
  assert.match(whipSession, /\/whip\/broadcast\//);

  // The three layers leave the publisher.
  const rids = await waitFor('the publisher to send three layers', async () => {
    const sending = await publisher.evaluate(async () => {
      const out = [];
      (await window.pc.getStats()).forEach((s) => {
        if (s.type === 'outbound-rtp' && s.kind === 'video' && s.packetsSent > 0) out.push(s.rid);
      });
      return out.sort();
    });
    return sending.length === 3 && sending;
  }, { timeoutMs: 20_000 });
  assert.deepEqual(rids, ['f', 'h', 'q']);

  const viewer = await openPage(browser, 'whep-viewer');
  await viewer.goto(`${server.url}/healthz`);
  await viewer.addScriptTag({ content: EXCHANGE });
  const whepSession = await viewer.evaluate(async () => {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    window.pc = pc;
    return window.exchange('whep', 'viewer', pc);
  });
  assert.match(whepSession, /\/whep\/broadcast\//);

  // Frames decode and keep coming, and audio arrives.
  const sample = () =>
    viewer.evaluate(async () => {
      const got = { frames: 0, width: 0, audio: 0 };
      (await window.pc.getStats()).forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        if (s.kind === 'video') {
          got.frames = s.framesDecoded ?? 0;
          got.width = s.frameWidth ?? 0;
        } else {
          got.audio = s.packetsReceived ?? 0;
        }
      });
      return got;
    });
  const first = await waitFor('the viewer to decode video', async () => {
    const s = await sample();
    return s.frames > 10 && s;
  }, { timeoutMs: 20_000 });
  const later = await waitFor('more frames and audio', async () => {
    const s = await sample();
    return s.frames > first.frames + 10 && s.audio > 0 && s;
  }, { timeoutMs: 10_000 });
  console.log(`# WHEP viewer: ${later.frames} frames decoded, ${later.width} wide, ${later.audio} audio packets`);
  assert.ok(later.width >= 320, `decoded ${later.width} wide`);

  // Both sessions end with DELETE.
  for (const [page, url] of [[viewer, whepSession], [publisher, whipSession]]) {
    const status = await page.evaluate(async (url) => (await fetch(url, { method: 'DELETE' })).status, url);
    assert.ok(status === 200 || status === 204, `DELETE ${url}: ${status}`);
  }
  // The sessions are gone: deleting again is 404.
  for (const url of [whepSession, whipSession]) {
    assert.equal((await fetch(url, { method: 'DELETE' })).status, 404, url);
  }
});
