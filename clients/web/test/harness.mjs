// Test harness for the browser tests: the `prism` binary on loopback (ephemeral ports, dev
// keys), Debian's Chromium driven by playwright-core with a fake camera and microphone, and
// polling helpers. Nothing here leaves loopback, unless a test runs the server or a browser
// inside network namespaces it made itself (`command` / `executablePath` below).

import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '../../..');

/** Where screenshots and logs go (PRISM_TEST_RESULTS, default target/test-results/browser). */
export const resultsDir = process.env.PRISM_TEST_RESULTS ?? path.join(repoRoot, 'target', 'test-results', 'browser');
mkdirSync(resultsDir, { recursive: true });

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A TCP port nothing listens on right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * Polls `probe` until it returns a truthy value (returned) or `timeoutMs` passes (throws with
 * the last value or error, and `what`).
 */
export async function waitFor(what, probe, { timeoutMs = 10_000, intervalMs = 250 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${detail})`);
    }
    await sleep(intervalMs);
  }
}

/** The path of the `prism` binary the tests run (PRISM_BIN, else the debug build). */
export function prismBinary() {
  const bin =
    process.env.PRISM_BIN ??
    path.join(process.env.CARGO_TARGET_DIR ?? path.join(repoRoot, 'target'), 'debug', 'prism');
  if (!existsSync(bin)) {
    throw new Error(`no prism binary at ${bin}: run \`cargo build --bin prism\` or set PRISM_BIN`);
  }
  return bin;
}

/** The `prism` binary with the embedded dev config, on loopback, on a fixed HTTP port. */
export class PrismServer {
  #child = null;
  #log;

  /**
   * `logName`: the server's log file in the results directory (one per test file). For a
   * server that is not on the host's loopback: `command` runs before the binary (e.g.
   * `['ip', 'netns', 'exec', ns]`), `host` and `port` give its URL, and `healthz` (async,
   * true once it answers) replaces the fetch of /healthz from this process.
   */
  constructor(env = {}, { logName = 'prism.log', command = [], host = '127.0.0.1', port, healthz } = {}) {
    this.env = env;
    this.bin = prismBinary();
    this.logName = logName;
    this.command = command;
    this.host = host;
    this.port = port;
    this.healthz = healthz ?? (async () => (await fetch(`${this.url}/healthz`).catch(() => null))?.ok);
    this.#log = createWriteStream(path.join(resultsDir, logName), { flags: 'w' });
  }

  get url() {
    return `http://${this.host}:${this.port}`;
  }

  /** The process id of the running server (for cleanup on a hard exit), or null. */
  get pid() {
    return this.#child?.exitCode === null ? this.#child.pid : null;
  }

  async start() {
    // The HTTP port stays the same across restarts so pages reconnect to it; media ports are
    // the OS's pick each time (clients learn them from the candidates).
    this.port ??= await freePort();
    this.#log.write(`---- start on port ${this.port}\n`);
    const [program, ...args] = [...this.command, this.bin];
    const child = spawn(program, args, {
      env: {
        ...process.env,
        PRISM_BIND: '127.0.0.1',
        PRISM_PORT: String(this.port),
        PRISM_RTC__UDP_PORT: '0',
        PRISM_LOG__LEVEL: process.env.PRISM_TEST_LOG ?? 'info',
        ...this.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.pipe(this.#log, { end: false });
    child.stderr.pipe(this.#log, { end: false });
    this.#child = child;
    await waitFor('the server to answer /healthz', async () => {
      if (child.exitCode !== null) throw new Error(`prism exited with ${child.exitCode}; see ${resultsDir}/${this.logName}`);
      return this.healthz();
    }, { timeoutMs: 15_000, intervalMs: 100 });
  }

  /** Stops the server: SIGINT (graceful) by default, SIGKILL to simulate a crash. */
  async stop(signal = 'SIGINT') {
    const child = this.#child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill(signal);
    const killed = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(killed);
    this.#child = null;
  }

  async close() {
    await this.stop();
    this.#log.end();
  }
}

/** Debian's chromium (CHROMIUM_PATH to override). */
export const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/**
 * Headless Chromium with a fake 1280x720 camera and a fake microphone, loopback only.
 * `executablePath`: another launcher, e.g. a script that runs Chromium in a network namespace
 * (Playwright talks to the browser over a pipe, which the launcher passes on); `args`: more
 * command-line flags.
 */
export function launchBrowser({ executablePath = chromiumPath, args = [] } = {}) {
  // Playwright gives every launch a fresh temporary profile (--user-data-dir).
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--use-fake-device-for-media-stream=fps=30',
      '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection',
      '--disable-features=WebRtcHideLocalIpsWithMdns',
      '--autoplay-policy=no-user-gesture-required',
      ...args,
    ],
  });
}

/** A page in its own context (its own participant), its console kept for the results. */
export async function openPage(browser, name) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const log = createWriteStream(path.join(resultsDir, `console-${name}.log`), { flags: 'w' });
  page.on('console', (m) => log.write(`${new Date().toISOString()} ${m.type()} ${m.text()}\n`));
  page.on('pageerror', (e) => log.write(`${new Date().toISOString()} pageerror ${e.stack ?? e}\n`));
  page.on('close', () => log.end());
  return page;
}

/**
 * One line per video stream of a page's connection, for failure messages: what it sends per
 * simulcast layer (size, fps, keyframe requests received, why it is limited) and what it
 * receives (size, frames decoded, packets, keyframe requests sent).
 */
export function mediaDiagnostics(page) {
  return page.evaluate(async () => {
    const pc = window.prismDemo.room?.peerConnection;
    if (!pc) return 'no connection';
    const out = [];
    (await pc.getStats()).forEach((s) => {
      if (s.kind !== 'video') return;
      if (s.type === 'outbound-rtp') {
        out.push(`out ${s.rid}: ${s.frameWidth ?? '-'}@${Math.round(s.framesPerSecond ?? 0)}fps pli=${s.pliCount} keyframes=${s.keyFramesEncoded} limited=${s.qualityLimitationReason}`);
      } else if (s.type === 'inbound-rtp') {
        out.push(`in ${s.trackIdentifier.slice(0, 8)}: ${s.frameWidth ?? '-'} wide decoded=${s.framesDecoded} packets=${s.packetsReceived} lost=${s.packetsLost} pli=${s.pliCount} dropped=${s.framesDropped}`);
      }
    });
    return out.join(' | ');
  });
}
