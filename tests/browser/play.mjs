#!/usr/bin/env node
// Plays a Ferrocast watch page in headless Chromium and judges the playback.
//
//   node tests/browser/play.mjs --url http://127.0.0.1:PORT/watch/demo --seconds 20
//
// Prints exactly one JSON line on stdout and exits 0 when playback started, frames were decoded
// and kept increasing, hls.js ran in low-latency mode on a playlist with parts, there was no
// fatal error and no stall longer than 1 s; otherwise exits 1 (reasons in the JSON and on
// stderr). Every wait is bounded and the whole run has a hard deadline.
//
// Options:
//   --url URL             watch page to open (required)
//   --seconds N           how long to watch once playback started (default 20)
//   --start-timeout N     seconds to wait for playback to start (default 20)
//   --max-stall-ms N      longest acceptable stall (default 1000)
//   --max-latency S       also fail when the median latency exceeds S seconds (default: no limit)
//   --no-require-ll       don't require low-latency mode with parts (plain HLS smoke tests only)
//   --screenshot FILE     save a PNG of the page at the end
//   --trace FILE          write every request's timeline (start, head, end ms; status; path),
//                         the page's console to FILE.console, playlists to FILE.playlists
//   --chromium PATH       browser binary (default $CHROMIUM or /usr/bin/chromium)
//   --verbose             progress on stderr

import { parseArgs } from 'node:util';
import { writeFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

const USAGE = 'usage: node play.mjs --url URL [--seconds N] [--start-timeout N] [--max-stall-ms N] ' +
  '[--max-latency S] [--no-require-ll] [--screenshot FILE] [--trace FILE] [--chromium PATH] [--verbose]';

function parseCli() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        url: { type: 'string' },
        seconds: { type: 'string', default: '20' },
        'start-timeout': { type: 'string', default: '20' },
        'max-stall-ms': { type: 'string', default: '1000' },
        'max-latency': { type: 'string' },
        'no-require-ll': { type: 'boolean', default: false },
        screenshot: { type: 'string' },
        trace: { type: 'string' },
        chromium: { type: 'string', default: process.env.CHROMIUM || '/usr/bin/chromium' },
        verbose: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    }));
  } catch (err) {
    console.error(`play.mjs: ${err.message}\n${USAGE}`);
    process.exit(2);
  }
  if (values.help) { console.log(USAGE); process.exit(0); }
  const num = (name, min) => {
    const v = Number(values[name]);
    if (!Number.isFinite(v) || v < min) {
      console.error(`play.mjs: --${name} must be a number >= ${min}\n${USAGE}`);
      process.exit(2);
    }
    return v;
  };
  if (!values.url) { console.error(`play.mjs: --url is required\n${USAGE}`); process.exit(2); }
  return {
    url: values.url,
    seconds: num('seconds', 1),
    startTimeoutMs: num('start-timeout', 1) * 1000,
    maxStallMs: num('max-stall-ms', 0),
    maxLatency: values['max-latency'] === undefined ? null : num('max-latency', 0),
    requireLl: !values['no-require-ll'],
    screenshot: values.screenshot ?? null,
    trace: values.trace ?? null,
    chromium: values.chromium,
    verbose: values.verbose,
  };
}

const opts = parseCli();
const log = (...a) => { if (opts.verbose) console.error('[play]', ...a); };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Rejects after `ms` unless `promise` settles first. */
function withTimeout(promise, ms, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

const SAMPLE_MS = 1000;
const STEP_TIMEOUT_MS = 5000; // any single browser round trip
const LAUNCH_TIMEOUT_MS = 20000;
const CLOSE_TIMEOUT_MS = 10000;
// Launch + start + watch + 25 s for page load, screenshot and close: 85 s with the defaults, so
// the driver reports before a 90 s outer timeout (tests/tests/browser.rs) would kill it.
const DEADLINE_MS = LAUNCH_TIMEOUT_MS + opts.startTimeoutMs + opts.seconds * 1000 + 25000;

const result = {
  ok: false,
  reasons: [],
  url: opts.url,
  started: false,
  startupMs: null,
  framesDecoded: 0,
  droppedFrames: 0,
  latencySeconds: [],
  medianLatency: null,
  targetLatency: null,
  stalls: 0,
  maxStallMs: 0,
  lowLatencyMode: null,
  hasParts: false,
  partTarget: null,
  engine: null,
  source: null,
  errors: [],
  warnings: {},
  consoleErrors: [],
  httpErrors: [],
  // The slowest requests (ms from the page's start to the end of the response), so that a
  // stall can be told apart: a request the server held, or one the browser never sent.
  slowRequests: [],
};

// Every request's timeline: [path, started ms, first byte ms, finished ms, status].
const T0 = Date.now();
const timeline = new Map();
const consoleLog = [];
const playlistLog = [];
function noteRequest(req, field, status) {
  let e = timeline.get(req);
  if (!e) {
    let path = req.url();
    try { const u = new URL(path); path = u.pathname + u.search; } catch { /* keep */ }
    e = { path, start: null, head: null, end: null, status: null };
    timeline.set(req, e);
  }
  e[field] = Date.now() - T0;
  if (status !== undefined) e.status = status;
}
function timelineReport() {
  const all = [...timeline.values()].sort((a, b) => a.start - b.start);
  const dur = (e) => (e.end ?? (Date.now() - T0)) - e.start;
  result.slowRequests = [...all].sort((a, b) => dur(b) - dur(a)).slice(0, 8)
    .map((e) => `${e.path} at ${e.start} ms: ${dur(e)} ms${e.end === null ? ' (unfinished)' : ''} -> ${e.status}`);
  if (opts.trace) {
    const lines = all.map((e) => `${e.start}\t${e.head ?? '-'}\t${e.end ?? '-'}\t${e.status ?? '-'}\t${e.path}`);
    writeFileSync(opts.trace, lines.join('\n') + '\n');
    writeFileSync(`${opts.trace}.console`, consoleLog.join('\n') + '\n');
    writeFileSync(`${opts.trace}.playlists`, playlistLog.join('\n') + '\n');
  }
}

let printed = false;
function finish(code) {
  if (!printed) {
    printed = true;
    result.ok = code === 0;
    try { timelineReport(); } catch (err) { console.error(`play.mjs: timeline: ${err.message}`); }
    process.stdout.write(JSON.stringify(result) + '\n');
    if (code !== 0) console.error(`play.mjs: FAIL: ${result.reasons.join('; ') || 'unknown'}`);
  }
  return code;
}

// The hard deadline: whatever hangs (browser, page, network), report and leave.
const deadline = setTimeout(() => {
  result.reasons.push(`hard deadline of ${DEADLINE_MS} ms reached`);
  finish(1);
  process.exit(1); // playwright kills the browser it launched on exit
}, DEADLINE_MS);

function median(xs) {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
const round3 = (x) => (x == null ? null : Math.round(x * 1000) / 1000);

/** One snapshot of window.ferrocastPlayer, taken in the page. */
function snapshot(page) {
  return withTimeout(page.evaluate(() => {
    const p = window.ferrocastPlayer;
    if (!p) return null;
    const s = p.stats, v = p.video, hls = p.hls;
    const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
    const latency = hls && Number.isFinite(hls.latency) && hls.latency > 0 ? hls.latency : s.latency;
    return {
      started: s.started,
      startupMs: s.startupMs,
      frames: v.webkitDecodedFrameCount ?? (q ? q.totalVideoFrames : 0),
      dropped: q ? q.droppedVideoFrames : 0,
      currentTime: v.currentTime,
      paused: v.paused,
      latency: Number.isFinite(latency) ? latency : null,
      targetLatency: hls && Number.isFinite(hls.targetLatency) ? hls.targetLatency : null,
      stalls: s.stalls,
      maxStallMs: s.maxStallMs,
      ongoingStallMs: s.stalledSince === null ? 0 : performance.now() - s.stalledSince,
      lowLatencyMode: hls ? !!hls.config.lowLatencyMode : s.lowLatencyMode,
      hasParts: s.hasParts,
      partTarget: s.partTarget,
      errors: s.errorLog.slice(),
      warnings: Object.assign({}, s.warnings || {}),
      engine: s.engine,
      source: s.source,
      videoError: v.error ? `${v.error.code} ${v.error.message || ''}`.trim() : null,
    };
  }), STEP_TIMEOUT_MS, 'page.evaluate');
}

async function run() {
  let browser;
  try {
    log('launching', opts.chromium);
    browser = await withTimeout(chromium.launch({
      executablePath: opts.chromium,
      headless: true,
      args: [
        '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--autoplay-policy=no-user-gesture-required',
      ],
      timeout: LAUNCH_TIMEOUT_MS,
    }), LAUNCH_TIMEOUT_MS + 5000, 'browser launch');

    const context = await withTimeout(browser.newContext({ viewport: { width: 1280, height: 800 } }),
      STEP_TIMEOUT_MS, 'new context');
    const page = await withTimeout(context.newPage(), STEP_TIMEOUT_MS, 'new page');
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    page.on('console', (msg) => {
      if (opts.trace && consoleLog.length < 20000) consoleLog.push(`${Date.now() - T0}\t${msg.type()}\t${msg.text()}`);
      if (msg.type() === 'error' && result.consoleErrors.length < 50) result.consoleErrors.push(msg.text());
    });
    page.on('pageerror', (err) => {
      if (result.consoleErrors.length < 50) result.consoleErrors.push(`pageerror: ${err.message}`);
    });
    page.on('request', (req) => noteRequest(req, 'start'));
    page.on('requestfinished', (req) => noteRequest(req, 'end'));
    page.on('response', (res) => {
      noteRequest(res.request(), 'head', res.status());
      if (opts.trace && res.url().includes('.m3u8') && playlistLog.length < 2000) {
        const at = Date.now() - T0;
        res.text().then((t) => playlistLog.push(`=== ${at} ms ${res.url()}\n${t}`)).catch(() => {});
      }
      if (res.status() >= 400 && result.httpErrors.length < 50) result.httpErrors.push(`${res.status()} ${res.url()}`);
    });
    page.on('requestfailed', (req) => {
      noteRequest(req, 'end', `failed ${req.failure()?.errorText}`);
      if (result.httpErrors.length < 50) result.httpErrors.push(`failed ${req.url()}: ${req.failure()?.errorText}`);
    });

    log('opening', opts.url);
    const resp = await page.goto(opts.url, { waitUntil: 'domcontentloaded', timeout: 15000 });
    if (!resp || !resp.ok()) {
      result.reasons.push(`page load: HTTP ${resp ? resp.status() : 'no response'}`);
      return 1;
    }

    // Wait (bounded) for the first 'playing'.
    const startBy = Date.now() + opts.startTimeoutMs;
    let snap = null;
    while (Date.now() < startBy) {
      snap = await snapshot(page);
      if (snap && snap.started && snap.frames > 0) break;
      await sleep(250);
    }
    if (!snap) {
      result.reasons.push('page never exposed window.ferrocastPlayer');
      return 1;
    }
    Object.assign(result, { engine: snap.engine, source: snap.source, errors: snap.errors });
    if (!snap.started) {
      result.reasons.push(`playback did not start within ${opts.startTimeoutMs} ms` +
        (snap.videoError ? ` (video error ${snap.videoError})` : ''));
      result.lowLatencyMode = snap.lowLatencyMode;
      result.hasParts = snap.hasParts;
      result.framesDecoded = snap.frames;
      return 1;
    }
    result.started = true;
    result.startupMs = snap.startupMs;
    log(`started after ${snap.startupMs} ms via ${snap.engine} ${snap.source}`);

    // Watch for the requested time, one sample a second.
    const frameSamples = [snap.frames];
    const watchUntil = Date.now() + opts.seconds * 1000;
    let maxOngoingStall = 0;
    while (Date.now() < watchUntil) {
      await sleep(Math.min(SAMPLE_MS, Math.max(0, watchUntil - Date.now())));
      snap = await snapshot(page);
      frameSamples.push(snap.frames);
      if (snap.latency !== null) result.latencySeconds.push(round3(snap.latency));
      maxOngoingStall = Math.max(maxOngoingStall, snap.ongoingStallMs);
      log(`t=${frameSamples.length - 1}s frames=${snap.frames} latency=${round3(snap.latency)} ` +
        `stalls=${snap.stalls} currentTime=${snap.currentTime.toFixed(2)}`);
    }

    if (opts.screenshot) {
      await withTimeout(page.screenshot({ path: opts.screenshot }), 15000, 'screenshot');
      log('screenshot saved to', opts.screenshot);
    }

    // Judge.
    Object.assign(result, {
      framesDecoded: snap.frames,
      droppedFrames: snap.dropped,
      medianLatency: round3(median(result.latencySeconds)),
      targetLatency: round3(snap.targetLatency),
      stalls: snap.stalls,
      maxStallMs: Math.round(Math.max(snap.maxStallMs, maxOngoingStall, snap.ongoingStallMs)),
      lowLatencyMode: snap.lowLatencyMode,
      hasParts: snap.hasParts,
      partTarget: snap.partTarget,
      errors: snap.errors,
      warnings: snap.warnings,
      engine: snap.engine,
      source: snap.source,
    });
    const r = result.reasons;
    if (!(snap.frames > 0)) r.push('no frames decoded');
    // "Kept increasing": more frames at the end than at the start, and never two sample
    // intervals in a row (~2 s) without a new frame.
    if (frameSamples[frameSamples.length - 1] <= frameSamples[0]) r.push('decoded frame count did not increase');
    for (let i = 2; i < frameSamples.length; i++) {
      if (frameSamples[i] <= frameSamples[i - 2]) {
        r.push(`decoded frames stopped increasing around t=${i - 2}..${i}s (${frameSamples[i]})`);
        break;
      }
    }
    if (opts.requireLl) {
      if (result.lowLatencyMode !== true) r.push('hls.js lowLatencyMode was not active');
      if (!result.hasParts) r.push('media playlist had no parts (EXT-X-PART / CAN-BLOCK-RELOAD)');
    }
    if (result.errors.length > 0) r.push(`fatal player errors: ${result.errors.join(', ')}`);
    if (result.maxStallMs > opts.maxStallMs) r.push(`stall of ${result.maxStallMs} ms (limit ${opts.maxStallMs} ms)`);
    if (opts.maxLatency !== null) {
      if (result.medianLatency === null) r.push('no latency samples');
      else if (result.medianLatency > opts.maxLatency) r.push(`median latency ${result.medianLatency} s > ${opts.maxLatency} s`);
    }
    return r.length === 0 ? 0 : 1;
  } catch (err) {
    result.reasons.push(`error: ${err && err.message ? err.message.split('\n')[0] : String(err)}`);
    return 1;
  } finally {
    if (browser) {
      await withTimeout(browser.close(), CLOSE_TIMEOUT_MS, 'browser close').catch((err) => {
        console.error(`play.mjs: ${err.message}`);
      });
    }
  }
}

const code = finish(await run());
clearTimeout(deadline);
process.exit(code);
