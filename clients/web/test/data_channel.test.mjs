// Data messages between two browsers through the server (issue 7): page A sends on the
// reliable and the lossy channel, to everyone and to one identity; page B receives each with
// its topic, kind and sender. Both pages use the SDK served at /sdk/ (no media published).
//
// Run: node --test test/data_channel.test.mjs (scripts/test.sh does).

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

/** A page joined to room `data` as `identity`, keeping what it receives in window.received. */
async function joined(identity) {
  const page = await openPage(browser, `data-${identity}`);
  await page.goto(`${server.url}/healthz`);
  await page.evaluate(async (identity) => {
    const { Room, RoomEvent } = await import('/sdk/index.js');
    const response = await fetch('/api/token', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ room: 'data', identity }),
    });
    const { token } = await response.json();
    const room = new Room(location.origin, token);
    window.received = [];
    room.on(RoomEvent.DataReceived, (m) =>
      window.received.push({
        text: new TextDecoder().decode(m.payload),
        topic: m.topic,
        kind: m.kind,
        sender: m.senderIdentity,
        participant: m.participant?.identity ?? null,
      }),
    );
    await room.connect();
    window.room = room;
  }, identity);
  return page;
}

test('data messages reach the other browser on both channels, to all or to one', { timeout: 60_000 }, async () => {
  const alice = await joined('alice');
  const bob = await joined('bob');
  // Alice sees bob, and bob's data channels are open at the server: lossy messages sent until
  // one arrives show it (a message to a channel not yet open is dropped, as for any client).
  await waitFor('alice to see bob', () => alice.evaluate(() => window.room.participants.size === 1));
  await waitFor(
    'a lossy message to reach bob',
    async () => {
      await alice.evaluate(() => window.room.publishData('cursor', { reliable: false, topic: 'cursor' }));
      return bob.evaluate(() => window.received.some((m) => m.kind === 'lossy'));
    },
    { timeoutMs: 10_000, intervalMs: 100 },
  );
  await alice.evaluate(async () => {
    await window.room.publishData('hello everyone', { topic: 'chat' });
    await window.room.localParticipant.publishData(new TextEncoder().encode('to bob only'), {
      topic: 'direct',
      destinationIdentities: ['bob'],
    });
    await window.room.publishData('to nobody here', { destinationIdentities: ['carol'] });
  });
  const received = await waitFor('bob to receive the reliable messages', async () => {
    const got = await bob.evaluate(() => window.received);
    return got.filter((m) => m.kind === 'reliable').length >= 2 && got;
  });
  const reliable = received.filter((m) => m.kind === 'reliable');
  assert.deepEqual(reliable, [
    { text: 'hello everyone', topic: 'chat', kind: 'reliable', sender: 'alice', participant: 'alice' },
    { text: 'to bob only', topic: 'direct', kind: 'reliable', sender: 'alice', participant: 'alice' },
  ]);
  const lossy = received.find((m) => m.kind === 'lossy');
  assert.deepEqual(lossy, { text: 'cursor', topic: 'cursor', kind: 'lossy', sender: 'alice', participant: 'alice' });
  // Nobody gets their own messages back.
  assert.deepEqual(await alice.evaluate(() => window.received), []);
});
