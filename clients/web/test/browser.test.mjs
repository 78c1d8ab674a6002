// The browser path end to end: the `prism` binary serves the demo page, three headless Chromium
// pages join one room through it with the fake camera (simulcast) and microphone, and the
// acceptance criteria of issue 7 are checked one after another on that one room:
//   1. everyone decodes everyone else's video (>= 640 wide, frames rising) and receives their
//      audio within 10 s;
//   2. a muted camera shows as muted on the other pages; leaving removes the tile within 2 s;
//   3. a screenshot of the three-person page is saved with the results;
//   4. after the server restarts, the pages reconnect and media resumes within 10 s;
//   5. a bad token, a full room and an unreachable server each get a clear message;
//   6. (issue 9) the server's connection-quality reports arrive as events with a downlink
//      estimate and show in the header's indicator; a click on a tile pins that video.
//
// Run: node --test test/ (scripts/test.sh does, after building `prism`). PRISM_BIN names the
// binary, CHROMIUM_PATH the browser, PRISM_TEST_RESULTS where screenshots and logs go.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { PrismServer, freePort, launchBrowser, mediaDiagnostics, openPage, resultsDir, sleep, waitFor } from './harness.mjs';

const ROOM = 'acceptance';
const NAMES = ['alice', 'bob', 'carol'];

/** Inbound counters of a page, per remote identity prefix and kind. */
async function inbound(page) {
  return page.evaluate(() => window.prismDemo.inbound());
}

/**
 * What `page` gets from each of `others` between two samples `gapMs` apart: for each name,
 * null when its video is decoding (frames rising, at least `minWidth` wide) and its audio
 * arriving (packets rising), else what is wrong.
 */
async function mediaFrom(page, others, { minWidth, gapMs = 700 }) {
  const first = await inbound(page);
  await sleep(gapMs);
  const second = await inbound(page);
  const verdicts = new Map();
  for (const name of others) {
    const pick = (sample, kind) => sample.find((s) => s.identity.startsWith(`${name}-`) && s.kind === kind);
    const [v1, v2] = [pick(first, 'video'), pick(second, 'video')];
    const [a1, a2] = [pick(first, 'audio'), pick(second, 'audio')];
    const problems = [];
    if (!v1 || !v2 || v1.trackSid !== v2.trackSid) problems.push('no video yet');
    else if (v2.framesDecoded <= v1.framesDecoded) {
      problems.push(`video frames stuck at ${v2.framesDecoded} (packets ${v1.packetsReceived} -> ${v2.packetsReceived}, ${v2.frameWidth} wide)`);
    } else if (v2.frameWidth < minWidth) problems.push(`video only ${v2.frameWidth} wide`);
    if (!a1 || !a2 || a1.trackSid !== a2.trackSid) problems.push('no audio yet');
    else if (a2.packetsReceived <= a1.packetsReceived) problems.push('audio packets stuck');
    verdicts.set(name, problems.length ? problems.join(', ') : null);
  }
  return verdicts;
}

/**
 * Waits until each page has decoded each other page's video and received its audio (each pair
 * judged on its own, as it happens); returns how long that took.
 */
async function everyoneReceives(pages, { minWidth, timeoutMs }) {
  const start = Date.now();
  await Promise.all(
    pages.map(({ name, page }) => {
      const pending = new Map(pages.filter((p) => p.name !== name).map((p) => [p.name, 'nothing yet']));
      return withDiagnostics(pages, () =>
        waitFor(
          `${name} to decode the others' video and receive their audio`,
          async () => {
            const verdicts = await mediaFrom(page, [...pending.keys()], { minWidth });
            for (const [other, problem] of verdicts) {
              if (problem) pending.set(other, problem);
              else pending.delete(other);
            }
            if (pending.size) throw new Error([...pending].map(([n, p]) => `${n}: ${p}`).join('; '));
            return true;
          },
          { timeoutMs, intervalMs: 100 },
        ),
      );
    }),
  );
  return Date.now() - start;
}

/** Runs `check`; if it fails, adds what every page's WebRTC stats say to the error. */
async function withDiagnostics(pages, check) {
  try {
    return await check();
  } catch (e) {
    for (const { name, page } of pages) {
      e.message += `\n  ${name}'s streams: ${await mediaDiagnostics(page).catch((d) => d.message)}`;
    }
    throw e;
  }
}

const tileSelector = (name) => `.tile[data-identity^="${name}-"][data-screen="false"]`;

async function joinedPage(browser, server, name, query = '') {
  const page = await openPage(browser, name);
  await page.goto(`${server.url}/?room=${ROOM}&name=${name}&autojoin=1${query}`);
  return page;
}

async function messageOf(page) {
  return waitFor('the page to show a message', async () => {
    const box = page.locator('#message');
    return (await box.isVisible()) && (await box.textContent());
  });
}

describe('demo page in headless Chromium', { timeout: 240_000 }, () => {
  /** @type {PrismServer} */
  let server;
  let browser;
  /** @type {{name: string, page: import('playwright-core').Page}[]} */
  let pages = [];

  before(async () => {
    server = new PrismServer({ PRISM_ROOM__MAX_PARTICIPANTS: '3' });
    await server.start();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  test('1. three participants decode each other\'s video (>= 640 wide) and receive audio within 10 s', async () => {
    pages = await Promise.all(NAMES.map(async (name) => ({ name, page: await joinedPage(browser, server, name) })));
    for (const { name, page } of pages) {
      await waitFor(`${name} to join`, async () => {
        const error = await page.locator('#message').textContent();
        if (error) throw new Error(error);
        return page.evaluate(() => document.body.dataset.joined === 'true');
      });
    }
    const took = await everyoneReceives(pages, { minWidth: 640, timeoutMs: 10_000 });
    console.log(`# all media flowing ${took} ms after the last join`);
    // Each page shows three tiles: itself and the two others.
    for (const { page } of pages) {
      assert.equal(await page.locator('.tile[data-screen="false"]').count(), 3);
    }
  });

  test('3. a screenshot of the three-person page is saved', async () => {
    const [{ page }] = pages;
    // Let the stats overlays fill in (they update once a second).
    await waitFor('stats on every tile', async () => {
      const texts = await page.locator('.tile .stats').allTextContents();
      return texts.length === 3 && texts.every((t) => /kbps/.test(t) && !/ – kbps/.test(t));
    });
    const file = path.join(resultsDir, 'three-participants.png');
    await page.screenshot({ path: file });
    console.log(`# screenshot: ${file}`);
  });

  test('6. connection-quality events carry an estimate; a click pins a tile', async () => {
    const [{ page }] = pages;
    // Media has flowed for seconds: the next report (every 2 s) carries an estimate.
    const report = await page.evaluate(
      () =>
        new Promise((resolve, reject) => {
          const room = window.prismDemo.room;
          const timer = setTimeout(() => reject(new Error(`no connectionQuality event within 5 s (last: ${JSON.stringify(room.connectionQuality)})`)), 5_000);
          room.once('connectionQuality', (q) => {
            clearTimeout(timer);
            resolve(q);
          });
        }),
    );
    console.log(`# alice's connection quality: ${JSON.stringify(report)}`);
    assert.ok(report.estimateBps > 0, `no estimate: ${JSON.stringify(report)}`);
    assert.ok(report.allocatedBps > 0 && report.wantedBps > 0, JSON.stringify(report));
    assert.notEqual(report.quality, 'lost', JSON.stringify(report));
    const indicator = page.locator('#quality');
    assert.equal(await indicator.isVisible(), true, 'the header shows the indicator');
    assert.match(await indicator.getAttribute('data-quality'), /^(excellent|good|poor)$/);
    assert.match(await indicator.locator('.estimate').textContent(), /^\d+(\.\d)? Mbit\/s$/);

    // Alice pins bob: his tile goes first and large, the setting goes to the server with pinned
    // set, and his video keeps decoding.
    const bobTile = page.locator(tileSelector('bob'));
    await bobTile.locator('video').click();
    await waitFor("bob's tile to be pinned", () => page.locator(`${tileSelector('bob')}.pinned`).count(), { timeoutMs: 2_000, intervalMs: 50 });
    const pinnedSetting = () =>
      page.evaluate(() => {
        const bob = [...window.prismDemo.room.participants.values()].find((p) => p.identity.startsWith('bob-'));
        return bob.getTrack('camera').settings.pinned;
      });
    assert.equal(await pinnedSetting(), true);
    const [bobBox, carolBox] = [await bobTile.boundingBox(), await page.locator(tileSelector('carol')).boundingBox()];
    assert.ok(bobBox.width > carolBox.width * 1.5, `pinned ${bobBox.width} wide, other ${carolBox.width}`);
    const ownBox = await page.locator('.tile[data-local="true"]').boundingBox();
    for (const other of [carolBox, ownBox]) {
      assert.ok(bobBox.x <= other.x && bobBox.y <= other.y, `the pinned tile comes first: ${JSON.stringify({ bobBox, other })}`);
    }
    assert.equal((await mediaFrom(page, ['bob'], { minWidth: 320 })).get('bob'), null, "bob's video keeps decoding");
    await page.screenshot({ path: path.join(resultsDir, 'pinned.png') });
    await bobTile.locator('video').click();
    await waitFor("bob's tile to be unpinned", async () => (await page.locator(`${tileSelector('bob')}.pinned`).count()) === 0, { timeoutMs: 2_000, intervalMs: 50 });
    assert.equal(await pinnedSetting(), false);
  });

  test('5a. a fourth participant is told the room is full', async () => {
    const page = await joinedPage(browser, server, 'dave', '&camera=0&microphone=0');
    const message = await messageOf(page);
    assert.match(message, /room is full/i);
    await page.context().close();
  });

  test('2a. a muted camera shows as muted on the other pages within 2 s', async () => {
    const bob = pages[1].page;
    await bob.click('#toggle-camera');
    for (const { name, page } of [pages[0], pages[2]]) {
      await waitFor(`${name} to show bob's camera muted`, () => page.locator(`${tileSelector('bob')}.cam-muted`).count(), { timeoutMs: 2_000, intervalMs: 50 });
    }
    await bob.click('#toggle-camera');
    for (const { name, page } of [pages[0], pages[2]]) {
      await waitFor(`${name} to show bob's camera on again`, async () => (await page.locator(`${tileSelector('bob')}.cam-muted`).count()) === 0, { timeoutMs: 2_000, intervalMs: 50 });
    }
  });

  test('4. after the server restarts, every page reconnects and media resumes within 10 s', async () => {
    await server.stop('SIGKILL');
    const restarted = Date.now();
    await server.start();
    const took = await everyoneReceives(pages, { minWidth: 1, timeoutMs: 10_000 - (Date.now() - restarted) });
    console.log(`# media resumed ${Date.now() - restarted} ms after the restart (${took} ms after it was back up)`);
    for (const { page } of pages) {
      assert.equal(await page.evaluate(() => document.body.dataset.connection), 'connected');
    }
  });

  test('2b. leaving removes the tile on the other pages within 2 s', async () => {
    const carol = pages[2].page;
    await carol.click('#leave');
    for (const { name, page } of pages.slice(0, 2)) {
      await waitFor(`${name} to drop carol's tile`, async () => (await page.locator(tileSelector('carol')).count()) === 0, { timeoutMs: 2_000, intervalMs: 50 });
    }
    assert.equal(await carol.locator('#join').isVisible(), true, 'carol is back at the join form');
  });

  test('5b. a bad token gets a clear message', async () => {
    const page = await openPage(browser, 'bad-token');
    await page.goto(`${server.url}/?room=${ROOM}&name=mallory&autojoin=1&token=not-a-valid-token`);
    assert.match(await messageOf(page), /access token was rejected/i);
    await page.context().close();
  });

  test('5c. an unreachable server gets a clear message', async () => {
    const page = await openPage(browser, 'unreachable');
    const nobody = await freePort();
    await page.goto(`${server.url}/?room=${ROOM}&name=erin&autojoin=1&server=http://127.0.0.1:${nobody}`);
    assert.match(await messageOf(page), /cannot reach the prism server/i);
    await page.context().close();
  });
});
