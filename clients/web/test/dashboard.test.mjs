// The live dashboard in headless Chromium: three pages join one room through the demo page
// (fake cameras, simulcast), a fourth opens /dashboard with an admin token, and the dashboard
// must list the three participants, each sending and receiving at a nonzero bitrate, with
// charts drawn. The screenshot goes to docs/dashboard.png (and the test results).
//
// Run: node --test test/dashboard.test.mjs (scripts/test.sh does, after building `prism`).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { PrismServer, launchBrowser, openPage, repoRoot, resultsDir, waitFor } from './harness.mjs';

const ROOM = 'dashboard';
const NAMES = ['alice', 'bob', 'carol'];

describe('dashboard in headless Chromium', { timeout: 180_000 }, () => {
  let server;
  let browser;

  before(async () => {
    server = new PrismServer({}, { logName: 'prism-dashboard.log' });
    await server.start();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  test('shows a live three-person call: 3 participants, nonzero bitrates, charts', async () => {
    const pages = await Promise.all(NAMES.map(async (name) => {
      const page = await openPage(browser, name);
      await page.goto(`${server.url}/?room=${ROOM}&name=${name}&autojoin=1`);
      return page;
    }));
    for (const [i, page] of pages.entries()) {
      await waitFor(`${NAMES[i]} to join`, () => page.evaluate(() => document.body.dataset.joined === 'true'), { timeoutMs: 20_000 });
    }

    // Without a token the data is refused and the page asks for one.
    const dashboard = await openPage(browser, 'dashboard');
    await dashboard.setViewportSize({ width: 1400, height: 900 });
    await dashboard.goto(`${server.url}/dashboard`);
    await waitFor('the token form', () => dashboard.locator('#login').isVisible());
    const refused = await fetch(`${server.url}/api/dashboard`);
    assert.equal(refused.status, 401);

    // The admin token a operator would mint (dev keys: the server runs on them).
    const token = execFileSync(server.bin, ['token', 'create', '--identity', 'ops', '--admin'], { encoding: 'utf8' }).trim();
    await dashboard.goto(`${server.url}/dashboard#token=${token}`);
    const rows = await waitFor('three participants sending and receiving on the dashboard', async () => {
      const found = await dashboard.$$eval(`section[data-room="${ROOM}"] .participant`, (els) =>
        els.map((el) => ({
          identity: el.dataset.identity,
          sent: Number(el.dataset.sentBps),
          received: Number(el.dataset.receivedBps),
        })));
      if (found.length !== 3 || found.some((p) => !(p.sent > 0 && p.received > 0))) {
        throw new Error(JSON.stringify(found));
      }
      return found;
    }, { timeoutMs: 30_000, intervalMs: 500 });
    console.log(`# dashboard rows: ${JSON.stringify(rows)}`);
    assert.deepEqual(rows.map((r) => r.identity.replace(/-.*/, '')).sort(), NAMES);
    assert.equal(await dashboard.locator('#participant-count').textContent(), '3');
    // The token left the address bar once stored.
    assert.equal(new URL(dashboard.url()).hash, '');

    // Let the charts gather a few seconds of history, then check one has a line on it.
    await waitFor('charts with history', () => dashboard.evaluate(() => {
      const canvases = [...document.querySelectorAll('.participant canvas')];
      return canvases.length >= 9 && canvases.some((c) => {
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let lit = 0;
        for (let i = 0; i < data.length; i += 4) if (data[i + 1] > 150) lit++;
        return lit > 50;
      });
    }), { timeoutMs: 15_000, intervalMs: 500 });
    await waitFor('ten seconds of history', () => dashboard.evaluate(() => window.prismDashboard.historyLength() >= 10), { timeoutMs: 20_000, intervalMs: 500 });
    const file = path.join(resultsDir, 'dashboard.png');
    await dashboard.screenshot({ path: file, fullPage: true });
    copyFileSync(file, path.join(repoRoot, 'docs', 'dashboard.png'));
  });
});
