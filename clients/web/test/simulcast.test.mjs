// Simulcast in the browser, end to end (issue 4): one page publishes Chromium's fake 1280x720
// camera with three layers (q 320, h 640, f 1280 wide), another subscribes through the demo
// page and the SDK, and the test checks:
//   1. asking for low, then high, then medium: the decoded width follows (320, 1280, 640)
//      within 3 s of each request, frames keep being decoded and no freeze is counted;
//   2. the publisher stopping its top layer (encoding f inactive) moves the subscriber to 640
//      within 1 s, and re-enabling it brings 1280 back within 5 s;
//   3. dynacast: when the subscriber asks for low, the publisher's outbound-rtp for f reports
//      `active: false` within 2 s.
// Chromium's send bandwidth estimate starts low and ramps up for a few seconds, so the timed
// steps start once the publisher encodes f at 1280 wide (the viewer asks for high first: the
// demo page alone would ask for the layer that fits its tile, and dynacast would keep f off).
//
// Run after `cargo build --bin prism`: node --test test/simulcast.test.mjs (PRISM_BIN,
// CHROMIUM_PATH and PRISM_TEST_RESULTS as for browser.test.mjs).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { PrismServer, launchBrowser, mediaDiagnostics, openPage, waitFor } from './harness.mjs';

const ROOM = 'simulcast';

/** The publisher's outbound video layers: [{rid, width, active, fps}]. */
function outboundLayers(page) {
  return page.evaluate(async () => {
    const publication = window.prismDemo.room?.localParticipant.getTrack('camera');
    if (!publication?.sender) return [];
    const out = [];
    (await publication.sender.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp') {
        out.push({ rid: s.rid, width: s.frameWidth ?? 0, active: s.active, fps: s.framesPerSecond ?? 0 });
      }
    });
    return out;
  });
}

/** The publisher's send bandwidth estimate, kbit/s. */
function sendEstimate(page) {
  return page.evaluate(async () => {
    let estimate = null;
    (await window.prismDemo.room.peerConnection.getStats()).forEach((s) => {
      if (s.type === 'candidate-pair' && s.nominated && s.availableOutgoingBitrate != null) {
        estimate = Math.round(s.availableOutgoingBitrate / 1000);
      }
    });
    return estimate;
  });
}

/** Waits (up to `timeoutMs`) until the publisher sends f at 1280 wide; returns how long. */
/** The send estimate a publisher should have before the timed steps, kbit/s. */
const ESTIMATE_KBPS = 2_500;

async function fullSizeSent(page, timeoutMs, minEstimateKbps = 0) {
  const since = Date.now();
  await waitFor(
    'the publisher to send f at 1280 wide',
    async () => {
      const f = (await outboundLayers(page)).find((l) => l.rid === 'f');
      const estimate = await sendEstimate(page);
      // Full size, and (before the timed steps) an estimate with room for all three layers
      // (~2.2 Mbit/s): a publisher that only just fit f dropped it again at the first keyframe
      // burst in one CI run, which is Chromium's congestion control at work, not what the
      // timed steps measure.
      if (f?.width !== 1280 || !(f.fps > 0) || !(estimate >= minEstimateKbps)) {
        throw new Error(`f: ${JSON.stringify(f)}, estimate ${estimate} kbit/s`);
      }
      return true;
    },
    { timeoutMs, intervalMs: 100 },
  );
  return Date.now() - since;
}

/** The subscriber's inbound video: {frameWidth, framesDecoded, freezeCount}, or null. */
async function inboundVideo(page) {
  const all = await page.evaluate(() => window.prismDemo.inbound());
  return all.find((s) => s.kind === 'video' && s.identity.startsWith('publisher-')) ?? null;
}

/**
 * Calls a method of the viewer's publication of the publisher's camera (or reads a property
 * when `member` is not a function); returns the result.
 */
function onRemoteCamera(page, member, ...args) {
  return page.evaluate(
    ([member, args]) => {
      const participant = [...window.prismDemo.room.participants.values()].find((p) => p.identity.startsWith('publisher-'));
      const publication = participant.getTrack('camera');
      const value = publication[member];
      return typeof value === 'function' ? value.apply(publication, args) : value;
    },
    [member, args],
  );
}

function setLayerActive(page, rid, active) {
  return page.evaluate(
    ([rid, active]) => window.prismDemo.room.localParticipant.getTrack('camera').setLayerActive(rid, active),
    [rid, active],
  );
}

describe('simulcast in headless Chromium', { timeout: 180_000 }, () => {
  /** @type {PrismServer} */
  let server;
  let browser;
  let publisher;
  let viewer;
  /** The viewer's inbound video when the timed steps began. */
  let baseline;

  /** Waits for the viewer to decode frames `width` wide; returns how long it took. */
  async function viewerAt(width, timeoutMs, since = Date.now()) {
    await waitFor(
      `the viewer to decode ${width} wide`,
      async () => {
        const v = await inboundVideo(viewer);
        if (v?.frameWidth !== width) throw new Error(`decoding ${v?.frameWidth ?? 'nothing'} wide`);
        return true;
      },
      { timeoutMs: Math.max(0, timeoutMs - (Date.now() - since)), intervalMs: 50 },
    ).catch(async (e) => {
      e.message += `\n  publisher: ${await mediaDiagnostics(publisher)}, estimate ${await sendEstimate(publisher)} kbit/s`;
      e.message += `\n  viewer: ${await mediaDiagnostics(viewer)}`;
      throw e;
    });
    return Date.now() - since;
  }

  /** Asks for a quality and waits for its width; returns when it asked. */
  async function switchTo(quality, width) {
    const framesBefore = (await inboundVideo(viewer)).framesDecoded;
    const since = Date.now();
    await onRemoteCamera(viewer, 'setQuality', quality);
    const took = await viewerAt(width, 3_000, since);
    const after = await inboundVideo(viewer);
    assert.ok(after.framesDecoded > framesBefore, `frames decoded while switching to ${quality}`);
    console.log(`# ${quality}: decoding ${width} wide after ${took} ms`);
    return since;
  }

  /**
   * Waits for a stream state naming `rid` announced after `since` (signaling and media race,
   * so it may come a little after the frames); returns how long after `since` it came.
   */
  async function announced(rid, since) {
    const state = await waitFor(
      `a stream state naming ${rid}`,
      () => viewer.evaluate(([rid, since]) => window.streamStates.find((s) => s.at >= since && s.rid === rid && !s.paused), [rid, since]),
      { timeoutMs: 3_000, intervalMs: 20 },
    );
    return state.at - since;
  }

  before(async () => {
    server = new PrismServer({}, { logName: 'prism-simulcast.log' });
    await server.start();
    browser = await launchBrowser();
    publisher = await openPage(browser, 'simulcast-publisher');
    const joined = Date.now();
    await publisher.goto(`${server.url}/?room=${ROOM}&name=publisher&autojoin=1&microphone=0`);
    viewer = await openPage(browser, 'simulcast-viewer');
    await viewer.goto(`${server.url}/?room=${ROOM}&name=viewer&autojoin=1&camera=0&microphone=0`);
    // The demo asks for the layer that fits the tile; ask for the top one, which dynacast
    // then keeps on at the publisher.
    await waitFor('the viewer to see the camera', () =>
      viewer.evaluate(() =>
        [...(window.prismDemo.room?.participants.values() ?? [])].some((p) => p.getTrack('camera')?.subscribed),
      ),
    );
    await onRemoteCamera(viewer, 'setQuality', 'high');
    // Chromium's estimate ramps up; the top layer is sent at full size once it has. Sometimes
    // it starts low and climbs by a few tens of kbit/s a second: wait long.
    await fullSizeSent(publisher, 60_000, ESTIMATE_KBPS);
    console.log(
      `# publisher sends f at 1280 wide ${Date.now() - joined} ms after opening the page (estimate ${await sendEstimate(publisher)} kbit/s)`,
    );
    await viewerAt(1280, 10_000);
    // The viewer's stream states, as the SDK announces them.
    await viewer.evaluate(() => {
      window.streamStates = [];
      const participant = [...window.prismDemo.room.participants.values()].find((p) => p.identity.startsWith('publisher-'));
      participant.getTrack('camera').on('streamStateChanged', (s) => window.streamStates.push({ at: Date.now(), ...s }));
    });
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  test('1. low, high, medium: the decoded width follows within 3 s, without freezes', async () => {
    baseline = await inboundVideo(viewer);
    // Back to back, as a user clicking through the qualities would.
    const steps = [];
    for (const [quality, width, rid] of [
      ['low', 320, 'q'],
      ['high', 1280, 'f'],
      ['medium', 640, 'h'],
    ]) {
      steps.push([rid, await switchTo(quality, width)]);
    }
    const now = await inboundVideo(viewer);
    assert.equal(now.freezeCount, baseline.freezeCount, 'no freeze while switching');
    for (const [rid, since] of steps) {
      console.log(`# stream state ${rid} announced ${await announced(rid, since)} ms after the request`);
    }
  });

  test('2. the publisher stopping f moves the viewer to 640 within 1 s, and back within 5 s', async () => {
    // Not timed: after medium, dynacast has turned f off and Chromium has to bring it back.
    await onRemoteCamera(viewer, 'setQuality', 'high');
    await fullSizeSent(publisher, 30_000);
    await viewerAt(1280, 10_000);
    const stopped = Date.now();
    await setLayerActive(publisher, 'f', false);
    const down = await viewerAt(640, 1_000, stopped);
    console.log(`# f stopped: decoding 640 wide after ${down} ms`);
    const resumed = Date.now();
    await setLayerActive(publisher, 'f', true);
    const up = await viewerAt(1280, 5_000, resumed);
    console.log(`# f resumed: decoding 1280 wide after ${up} ms`);
  });

  test('3. dynacast: when the viewer asks for low, the publisher stops encoding f within 2 s', async () => {
    await viewerAt(1280, 10_000);
    const since = Date.now();
    await onRemoteCamera(viewer, 'setQuality', 'low');
    await waitFor(
      "the publisher's f to be inactive",
      async () => {
        const f = (await outboundLayers(publisher)).find((l) => l.rid === 'f');
        if (f?.active !== false) throw new Error(`f active: ${f?.active}`);
        return true;
      },
      { timeoutMs: 2_000, intervalMs: 50 },
    );
    console.log(`# dynacast: publisher's f inactive ${Date.now() - since} ms after the viewer asked for low`);
    const layers = await publisher.evaluate(() => window.prismDemo.room.localParticipant.getTrack('camera').layerStates);
    assert.deepEqual(
      layers.map((l) => [l.rid, l.wanted]),
      [
        ['q', true],
        ['h', false],
        ['f', false],
      ],
    );
    await viewerAt(320, 3_000);
  });
});
