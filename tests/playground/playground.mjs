// playground.mjs: drives qlora serve's playground page (GET /) in headless
// Chromium through the DevTools protocol (puppeteer-core), as a person would:
// typing the prompt, ticking adapters, clicking Compare. tests/test_playground.sh
// sets everything up; tests/playground/screenshot.sh uses --screenshot.
//
//   node playground.mjs --url URL --chromium PATH --ref DIR --out DIR --train SCRIPT --third NAME
//   node playground.mjs --url URL --chromium PATH --out DIR --screenshot PNG --prompt TEXT --adapters A,B
//
// The test (first form) checks:
//  - the page and its files: status 200, their Content-Types, a Content-Security-
//    Policy that allows only this server; no request leaves the server's origin,
//    no CSP violation, no uncaught error on the page;
//  - the store panel lists pirate and support with rank, data file, losses and
//    their loss.svg shown;
//  - one greedy comparison (base, pirate, support) is ONE streamed request with
//    the `adapters` extension, and each column's text equals `qlora infer`'s
//    answer for it (REF/base.txt, pirate.txt, support.txt) byte for byte, with its
//    tokens/s;
//  - the history holds it, and its JSONL export (written to OUT/export.jsonl with
//    the column texts in OUT/columns.json, which the shell runs through
//    `qlora infer --requests`) has one request per column;
//  - an unknown adapter's column shows the server's error in words while the base's
//    column still answers; a prompt past the context says so in every column;
//  - a dropped connection (the request reset by the browser) shows in words and the
//    next comparison works;
//  - a chat comparison renders support's prompt in its own template and equals
//    `qlora infer --requests` for the same messages (REF/chat_support.txt);
//  - an adapter trained into the store (SCRIPT) while the page is open appears
//    without a reload.
// Prints "ok - ..." or "FAIL - ..." per check; exits 1 when any failed, 2 on bad arguments.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';

const PROMPT = 'Tell me about the sea';
const CHAT_PROMPT = 'Where is my order?';
const MAX_TOKENS = 12;
const T_STEP = 60000;  // ms for any one wait: generous, for the sanitizer tree on a loaded machine

const args = {};
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i];
  if (!k.startsWith('--') || i + 1 >= process.argv.length) {
    console.error(`playground.mjs: bad argument '${k}'`);
    process.exit(2);
  }
  args[k.slice(2)] = process.argv[i + 1];
}
if (!args.url || !args.chromium || !args.out || (!args.screenshot && (!args.ref || !args.train || !args.third))) {
  console.error('usage: node playground.mjs --url URL --chromium PATH --out DIR (--ref DIR --train SCRIPT --third NAME | --screenshot PNG)');
  process.exit(2);
}
const origin = new URL(args.url).origin;
mkdirSync(args.out, { recursive: true });

let fails = 0, checks = 0;
function check(name, cond, detail = '') {
  checks++;
  if (cond) console.log(`ok - ${name}`);
  else {
    fails++;
    console.log(`FAIL - ${name}${detail ? `: ${detail}` : ''}`);
  }
  return cond;
}
function show(x) {
  return JSON.stringify(x);
}
async function group(name, fn) {
  try {
    await fn();
  } catch (e) {
    check(`${name}: no exception`, false, `${e?.name}: ${e?.message}`);
  }
}

const browser = await puppeteer.launch({
  executablePath: args.chromium,
  headless: true,
  userDataDir: join(args.out, 'profile'),
  protocolTimeout: 180000,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check',
         '--disable-extensions', '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--disable-default-apps', '--mute-audio', '--lang=en-US'],
});
let code = 1;
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1440, height: 900 });
  page.setDefaultTimeout(T_STEP);

  // everything the page asks for, and what goes wrong on it
  const requests = [], pageErrors = [];
  page.on('request', (r) => requests.push({ url: r.url(), method: r.method(), body: r.postData() }));
  page.on('pageerror', (e) => pageErrors.push(String(e?.message || e)));
  await page.evaluateOnNewDocument(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  });

  if (args.screenshot) {
    await screenshot(page);
    code = 0;
  } else {
    await runTest(page, requests);
    await group('the page stayed sound', async () => {
      const outside = requests.filter((r) => !r.url.startsWith(`${origin}/`) && !r.url.startsWith('blob:') && !r.url.startsWith('data:'));
      check('no request left the server\'s origin', outside.length === 0, show(outside.map((r) => r.url)));
      const csp = await page.evaluate(() => window.__csp);
      check('no Content-Security-Policy violation', csp.length === 0, show(csp));
      check('no uncaught error on the page', pageErrors.length === 0, show(pageErrors));
    });
    console.log(`${checks - fails}/${checks} checks passed${fails ? `, ${fails} FAILED` : ''}`);
    code = fails ? 1 : 0;
  }
} catch (e) {
  console.log(`FAIL - unexpected: ${e?.stack || e}`);
  code = 1;
} finally {
  await browser.close().catch(() => {});
}
process.exit(code);

// ---- helpers on the page ----

async function setField(page, sel, value) {
  await page.$eval(sel, (e) => { e.value = ''; });
  await page.type(sel, String(value));
}

async function columns(page) {
  return page.$$eval('.column', (cs) => cs.map((c) => ({
    adapter: c.dataset.adapter, label: c.dataset.label, state: c.dataset.state,
    text: c.querySelector('.text').textContent, stats: c.querySelector('.stats').textContent,
    error: c.querySelector('.error').hidden ? '' : c.querySelector('.error').textContent,
  })));
}

// Clicks Compare and waits until no column is waiting or streaming.
async function compare(page, n) {
  await page.click('#compare');
  await page.waitForFunction((k) => {
    const cs = [...document.querySelectorAll('.column')];
    return !document.body.dataset.running && cs.length === k && cs.every((c) => c.dataset.state !== 'waiting' && c.dataset.state !== 'streaming');
  }, { timeout: T_STEP }, n);
  return columns(page);
}

async function pick(page, name, on) {
  const sel = name === 'base' ? '#pick-base' : `.adapter[data-name="${name}"] .pick-box`;
  const checked = await page.$eval(sel, (e) => e.checked);
  if (checked !== on) await page.click(sel);
}

function refBytes(name) {
  let b = readFileSync(join(args.ref, `${name}.txt`));
  if (b.length && b[b.length - 1] === 0x0a) b = b.subarray(0, b.length - 1);  // infer ends its answer with '\n'
  return b;
}
function same(text, ref) {
  return typeof text === 'string' && Buffer.from(text, 'utf8').equals(ref);
}

function waitFile(dir, pred, ms) {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const tick = () => {
      const f = existsSync(dir) ? readdirSync(dir).find(pred) : undefined;
      if (f && !f.endsWith('.crdownload')) return resolve(join(dir, f));
      if (Date.now() - t0 > ms) return reject(new Error(`no file in ${dir} after ${ms} ms`));
      setTimeout(tick, 100);
    };
    tick();
  });
}

// ---- the test ----

async function runTest(page, requests) {
  const ref = { base: refBytes('base'), pirate: refBytes('pirate'), support: refBytes('support') };
  check('references differ (an adapter changes the answer)', !ref.base.equals(ref.pirate) || !ref.base.equals(ref.support));

  await group('the page', async () => {
    const res = await page.goto(`${args.url}/`, { waitUntil: 'load' });
    check('GET / is 200', res.status() === 200, String(res.status()));
    const h = res.headers();
    check('GET / is text/html', /^text\/html/.test(h['content-type'] || ''), h['content-type']);
    const csp = h['content-security-policy'] || '';
    check('a Content-Security-Policy that allows only this server',
          /default-src 'none'/.test(csp) && /script-src 'self'/.test(csp) && /connect-src 'self'/.test(csp) && !/https?:|\*/.test(csp), csp);
    for (const [path, type] of [['/playground/app.js', /^text\/javascript/], ['/playground/style.css', /^text\/css/]]) {
      const r = requests.find((x) => x.url === `${origin}${path}`);
      check(`the page loaded ${path}`, !!r);
      const t = await page.evaluate(async (p) => (await fetch(p)).headers.get('content-type'), path);
      check(`${path} is served as ${type}`, type.test(t || ''), t);
    }
    await page.waitForFunction(() => document.body.dataset.ready === '1');
    await page.evaluate(() => { window.__marker = 'the same page'; });
  });

  await group('the store', async () => {
    for (const name of ['pirate', 'support']) {
      const sel = `.adapter[data-name="${name}"]`;
      await page.waitForSelector(sel);
      const facts = await page.$eval(`${sel} .facts`, (e) => e.textContent);
      check(`${name}: rank, data file, losses and steps shown`,
            /rank 4/.test(facts) && facts.includes(`data ${name}.jsonl`) && /final loss: train [0-9.]+ · val [0-9.]+/.test(facts) && /steps 8/.test(facts),
            facts);
      const w = await page.waitForFunction((s) => {
        const img = document.querySelector(`${s} img.curve`);
        return img && !img.hidden && img.complete && img.naturalWidth > 0 ? img.naturalWidth : 0;
      }, { timeout: T_STEP }, sel);
      check(`${name}: its loss curve (loss.svg) is shown`, (await w.jsonValue()) > 0);
    }
  });

  let first = null;
  await group('a greedy comparison of base, pirate and support', async () => {
    await pick(page, 'base', true);
    await pick(page, 'pirate', true);
    await pick(page, 'support', true);
    check('greedy by default (temperature 0)', (await page.$eval('#temperature', (e) => e.value)) === '0');
    await page.type('#prompt', PROMPT);
    await setField(page, '#max_tokens', MAX_TOKENS);
    const before = requests.length;
    const cols = await compare(page, 3);
    const posts = requests.slice(before).filter((r) => r.method === 'POST' && /\/v1\/(chat\/)?completions$/.test(r.url));
    check('one request for the whole comparison', posts.length === 1, show(posts.map((r) => r.url)));
    const body = JSON.parse(posts[0]?.body || '{}');
    check('the request uses the adapters extension, streamed, greedy',
          show(body.adapters) === show(['base', 'pirate:1', 'support:1']) && body.stream === true && body.temperature === 0 &&
          body.max_tokens === MAX_TOKENS && body.prompt === PROMPT, show(body));
    check('three columns: base, pirate, support', show(cols.map((c) => c.adapter)) === show(['base', 'pirate', 'support']), show(cols));
    for (const c of cols) {
      check(`${c.adapter}: finished`, c.state === 'done', show(c));
      check(`${c.adapter}: text equals qlora infer's, byte for byte`, same(c.text, ref[c.adapter]),
            `got ${show(c.text)}, want ${show(ref[c.adapter]?.toString('utf8'))}`);
      const m = /^(\d+) tokens · [0-9.]+ s · ([0-9.]+) tok\/s/.exec(c.stats);
      check(`${c.adapter}: tokens/s shown`, m && Number(m[1]) >= 1 && Number(m[1]) <= MAX_TOKENS && Number(m[2]) > 0, c.stats);
    }
    first = cols;
  });

  await group('history and its JSONL export', async () => {
    const n = await page.$$eval('#history .entry', (es) => es.length);
    check('the comparison is in the history', n === 1, String(n));
    const stored = await page.evaluate(() => JSON.parse(localStorage.getItem('qlora-playground-history') || '[]'));
    check('the history is in localStorage', stored.length === 1 && stored[0].columns.length === 3, show(stored).slice(0, 300));
    const dl = join(args.out, 'downloads');
    mkdirSync(dl, { recursive: true });
    const cdp = await page.createCDPSession();
    await cdp.send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: dl });
    await page.click('#history .entry .export');
    const f = await waitFile(dl, (x) => x.endsWith('.jsonl'), T_STEP);
    const text = readFileSync(f, 'utf8');
    const lines = text.split('\n').filter((l) => l);
    check('the export has one line per column', lines.length === 3, text);
    const reqs = lines.map((l) => JSON.parse(l));
    check('each line is a qlora infer --requests request',
          reqs.every((r) => r.prompt === PROMPT && r.max_tokens === MAX_TOKENS && r.temperature === 0 && r.top_k === 0 &&
                            r.top_p === 1 && r.seed === 0 && (r.id ?? '') !== '') &&
          reqs[0].adapter === undefined && reqs[1].adapter === 'pirate:1' && reqs[2].adapter === 'support:1', text);
    renameSync(f, join(args.out, 'export.jsonl'));
    writeFileSync(join(args.out, 'columns.json'), JSON.stringify((first || []).map((c) => c.text)));
  });

  await group('an unknown adapter', async () => {
    await pick(page, 'pirate', false);
    await pick(page, 'support', false);
    await page.type('#custom-column', 'nope');
    await page.click('#add-column');
    await page.waitForSelector('#custom-list .chip[data-column="nope:1"]');
    const cols = await compare(page, 2);
    const nope = cols.find((c) => c.adapter === 'nope'), base = cols.find((c) => c.adapter === 'base');
    check('its column shows the error', nope?.state === 'error', show(nope));
    check('in words', /There is no adapter called "nope" in the store\./.test(nope?.error || '') &&
          /no adapter called 'nope'/.test(nope?.error || ''), nope?.error);
    check('the base\'s column still answers, unchanged', base?.state === 'done' && same(base?.text, ref.base), show(base));
    await page.click('#custom-list .chip[data-column="nope:1"] .chip-x');
  });

  await group('a prompt past the context', async () => {
    await pick(page, 'pirate', true);
    await setField(page, '#max_tokens', 100000);
    const cols = await compare(page, 2);
    await setField(page, '#max_tokens', MAX_TOKENS);
    await pick(page, 'pirate', false);
    check('every column says so in words', cols.every((c) => c.state === 'error' &&
          /do not fit the model's context/.test(c.error) && /this model's context is \d+ tokens/.test(c.error)), show(cols));
  });

  await group('a dropped connection', async () => {
    const cut = (r) => {
      if (r.method() === 'POST' && r.url().endsWith('/v1/completions')) r.abort('connectionreset');
      else r.continue();
    };
    await page.setRequestInterception(true);
    page.on('request', cut);
    let cols = await compare(page, 1);
    page.off('request', cut);
    await page.setRequestInterception(false);
    check('the column says so in words', cols[0]?.state === 'error' && /could not be reached/.test(cols[0]?.error || ''), show(cols[0]));
    cols = await compare(page, 1);
    check('the next comparison works', cols[0]?.state === 'done' && same(cols[0]?.text, ref.base), show(cols[0]));
  });

  await group('a chat comparison', async () => {
    const chatRef = readFileSync(join(args.ref, 'chat_support.txt'));
    await pick(page, 'base', false);
    await pick(page, 'support', true);
    await page.click('input[name="mode"][value="chat"]');
    await setField(page, '#prompt', CHAT_PROMPT);
    const before = requests.length;
    const cols = await compare(page, 1);
    const posts = requests.slice(before).filter((r) => r.method === 'POST' && /\/v1\/chat\/completions$/.test(r.url));
    const body = JSON.parse(posts[0]?.body || '{}');
    check('one request to /v1/chat/completions with the prompt as messages', posts.length === 1 &&
          show(body.messages) === show([{ role: 'user', content: CHAT_PROMPT }]) && show(body.adapters) === show(['support:1']), show(body));
    check('support in its own template equals qlora infer --requests', cols[0]?.state === 'done' && same(cols[0]?.text, chatRef),
          `got ${show(cols[0]?.text)}, want ${show(chatRef.toString('utf8'))}`);
    await page.click('input[name="mode"][value="completion"]');
    await pick(page, 'base', true);
    await pick(page, 'support', false);
  });

  await group('an adapter trained while the page is open', async () => {
    const present = await page.$(`.adapter[data-name="${args.third}"]`);
    check(`${args.third} is not there before`, present === null);
    const t0 = Date.now();
    await new Promise((resolve, reject) => execFile('bash', [args.train], { timeout: 240000 }, (e, so, se) =>
      (e ? reject(new Error(`${args.train}: ${e.message} ${se}`)) : resolve())));
    await page.waitForSelector(`.adapter[data-name="${args.third}"]`, { timeout: T_STEP });
    console.log(`# trained and shown in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const facts = await page.$eval(`.adapter[data-name="${args.third}"] .facts`, (e) => e.textContent);
    check(`${args.third} appears with its facts`, facts.includes(`data ${args.third}.jsonl`), facts);
    check('without a reload', (await page.evaluate(() => window.__marker)) === 'the same page');
  });
}

// ---- the screenshot (docs/playground.png) ----

async function screenshot(page) {
  await page.goto(`${args.url}/`, { waitUntil: 'load' });
  await page.waitForFunction(() => document.body.dataset.ready === '1');
  const names = (args.adapters || '').split(',').filter((x) => x);
  for (const n of names) {
    await page.waitForSelector(`.adapter[data-name="${n}"] img.curve:not([hidden])`);
    await pick(page, n, true);
  }
  if (args.mode === 'chat') await page.click('input[name="mode"][value="chat"]');
  await page.type('#prompt', args.prompt || PROMPT);
  await setField(page, '#max_tokens', args['max-tokens'] || 48);
  const cols = await compare(page, names.length + 1);
  for (const c of cols) console.log(`# ${c.adapter}: ${c.state} ${show(c.text)} (${c.stats})`);
  if (!cols.every((c) => c.state === 'done')) throw new Error(`a column did not finish: ${show(cols)}`);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: args.screenshot, type: 'png' });
  console.log(`wrote ${args.screenshot}`);
}
