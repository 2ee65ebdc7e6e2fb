// app.js: the qlora playground (docs/playground.md). Plain JavaScript, no
// framework and nothing from the network: it talks only to the `qlora serve` that
// served it.
//  - the store (left): GET /v1/qlora/store every 2 s, so an adapter that
//    `qlora train` writes appears without a reload; each adapter's loss.svg;
//    load and unload through /v1/load_lora_adapter and /v1/unload_lora_adapter;
//  - compare (centre): one request with the `adapters` extension and stream: true
//    (one batch on the server), split into columns by choice index, each with its
//    tokens/s; an error shows in the column it belongs to, in words;
//  - history: localStorage, exported as `qlora infer --requests` lines.
'use strict';

const POLL_MS = 2000;            // the store, while the page is visible
const POLL_HIDDEN_MS = 10000;    // and while it is not
const HISTORY_KEY = 'qlora-playground-history';
const HISTORY_MAX = 50;
const KEY_KEY = 'qlora-playground-api-key';
const MAX_STOPS = 4;

// ---- small helpers ----

const $ = (sel) => document.querySelector(sel);

// An element with properties (class, dataset, text, or any property or attribute) and children.
function el(tag, props = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null) continue;
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k === 'text') e.textContent = v;
    else if (k in e) e[k] = v;
    else e.setAttribute(k, v);
  }
  for (const kid of kids) if (kid !== null && kid !== undefined && kid !== false) e.append(kid);
  return e;
}

const fmt = (x, digits = 3) => (typeof x === 'number' && Number.isFinite(x) ? String(Number(x.toFixed(digits))) : '–');
const scaleText = (s) => String(Number(Number(s).toFixed(4)));
const label = (c) => (c.adapter === 'base' ? 'base' : `${c.adapter}:${scaleText(c.scale)}`);

function apiKey() {
  return $('#api-key').value.trim();
}

// fetch on this server, with the API key when one is set.
function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  return fetch(path, Object.assign({}, opts, { headers }));
}

async function postJson(path, body, signal) {
  return api(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), signal });
}

// A failed response as {status, message, adapter, index, param, retryAfter}.
async function errorOf(res) {
  let e = null;
  try {
    const text = await res.text();
    try { e = JSON.parse(text).error; } catch { e = { message: text.slice(0, 300) }; }
  } catch { /* the body did not arrive */ }
  return {
    status: res.status,
    message: (e && typeof e.message === 'string' && e.message) || `HTTP ${res.status} ${res.statusText}`,
    adapter: e && typeof e.adapter === 'string' ? e.adapter : null,
    index: e && Number.isInteger(e.index) ? e.index : null,
    param: e && typeof e.param === 'string' ? e.param : null,
    retryAfter: res.headers.get('Retry-After'),
  };
}

// What went wrong, in words: a title for people and the server's own message.
function explain(err) {
  const who = !err.adapter ? null : err.adapter === 'base' ? 'the base' : `the adapter "${err.adapter}"`;
  let title;
  switch (err.status) {
    case 401: title = 'The server wants an API key: type it in the box at the top right.'; break;
    case 404: title = err.adapter ? `There is no adapter called "${err.adapter}" in the store.` : 'The server does not know this model.'; break;
    case 413: title = 'The request is larger than the server takes (its --max-body).'; break;
    case 503: title = `The server is busy: its queue is full or it is shutting down. Try again${err.retryAfter ? ` in ${err.retryAfter} s` : ' soon'}.`; break;
    case 400:
      if (/context/.test(err.message) && ['max_tokens', 'prompt', 'messages'].includes(err.param))
        title = `The prompt and max tokens do not fit the model's context${who ? ` in ${who}'s chat template` : ''}.`;
      else if (err.param === 'prompt' || err.param === 'messages') title = `The server cannot use this prompt${who ? ` for ${who}` : ''}.`;
      else if (err.param === 'adapters' && who) title = `The server cannot use ${who}.`;
      else title = 'The server refused the request.';
      break;
    default: title = err.status >= 500 ? 'The server failed on this request.' : `The server answered ${err.status}.`;
  }
  return { title, detail: err.message };
}

function note(text, kind = '') {
  const n = $('#form-note');
  n.textContent = text;
  n.className = `note ${kind}`;
}

function conn(text, kind) {
  const c = $('#conn');
  c.textContent = text;
  c.className = `conn ${kind}`;
}

// ---- the store (left) ----

const store = {
  base: null,            // the listing's "base"
  items: new Map(),      // name -> {entry, sig, card, parts, curveKey, curveUrl}
  order: [],             // names in the listing's order
  polling: null,         // the timer
  listed: false,         // a listing has arrived: adapters new after it are highlighted
};

function facts(a) {
  const lines = [];
  if (a.error) return lines;
  lines.push(`rank ${a.rank} · alpha ${fmt(a.alpha)} · scaling ${fmt(a.scaling)}${a.use_rslora ? ' (rsLoRA)' : ''}`);
  if (Array.isArray(a.targets)) lines.push(`targets ${a.targets.join(', ')}`);
  if (a.data) lines.push(`data ${a.data}${a.format ? ` (${a.format}${Number.isFinite(a.samples) ? `, ${a.samples} samples` : ''})` : ''}`);
  if (Number.isFinite(a.steps))
    lines.push(`steps ${a.steps}${Number.isFinite(a.planned_steps) && a.planned_steps !== a.steps ? ` of ${a.planned_steps}` : ''}${a.early_stopped ? ' (stopped early)' : ''}`);
  if (Number.isFinite(a.train_loss) || Number.isFinite(a.val_loss))
    lines.push(`final loss: train ${fmt(a.train_loss)} · val ${fmt(a.val_loss)}`);
  if (Number.isFinite(a.best_val_loss) && a.best_step !== a.steps)
    lines.push(`best val ${fmt(a.best_val_loss)} at step ${a.best_step}; the folder holds step ${a.adapter_step}`);
  if (a.chat_template) lines.push(`chat template ${a.chat_template} (${a.template_from})`);
  if (!a.in_store) lines.push('loaded from outside the store');
  return lines;
}

function buildCard(name) {
  const box = el('input', { type: 'checkbox', class: 'pick-box', title: `a column for ${name}` });
  const badge = el('span', { class: 'badge' });
  const range = el('input', { type: 'range', min: '0', max: '2', step: '0.05', value: '1', class: 'scale-range', 'aria-label': `scale of ${name}` });
  const out = el('output', { class: 'scale-value', text: '1' });
  range.addEventListener('input', () => { out.textContent = scaleText(range.value); });
  const load = el('button', { type: 'button', class: 'load', text: 'Load' });
  const unload = el('button', { type: 'button', class: 'unload', text: 'Unload' });
  const msg = el('p', { class: 'card-msg', role: 'status' });
  const factList = el('ul', { class: 'facts' });
  const img = el('img', { class: 'curve', alt: `loss curve of ${name}`, hidden: true, width: 640, height: 360 });
  const card = el('li', { class: 'card adapter', dataset: { name } },
    el('div', { class: 'card-head' }, el('label', { class: 'pick' }, box, ' ', el('b', { text: name })), badge),
    factList, img,
    el('div', { class: 'scale' }, el('span', { text: 'scale' }), range, out),
    el('div', { class: 'card-actions' }, load, unload),
    msg);
  load.addEventListener('click', () => loadAdapter(name, true));
  unload.addEventListener('click', () => loadAdapter(name, false));
  return { card, parts: { box, badge, range, out, load, unload, msg, factList, img } };
}

function fillCard(item) {
  const a = item.entry, p = item.parts;
  p.badge.textContent = a.error ? 'unusable' : a.loaded ? (a.pinned ? 'loaded, pinned' : 'loaded') : 'on disk';
  p.badge.className = `badge ${a.error ? 'bad' : a.loaded ? 'on' : 'off'}`;
  p.factList.replaceChildren(...facts(a).map((t) => el('li', { text: t })));
  if (a.error) p.factList.append(el('li', { class: 'bad', text: a.error }));
  p.load.disabled = !a.in_store || !a.path || !!a.error;
  p.unload.disabled = !a.loaded;
  const key = a.curve ? `${a.name}@${a.modified}` : null;
  if (key !== item.curveKey) {
    item.curveKey = key;
    if (key) loadCurve(item);
    else {
      p.img.hidden = true;
      if (item.curveUrl) URL.revokeObjectURL(item.curveUrl), (item.curveUrl = null);
    }
  }
}

// loss.svg through fetch (so the API key goes with it), shown from a blob: URL.
async function loadCurve(item) {
  const key = item.curveKey, a = item.entry;
  try {
    const res = await api(`/v1/qlora/store/${encodeURIComponent(a.name)}/loss.svg?v=${encodeURIComponent(a.modified)}`);
    if (!res.ok) throw new Error(explain(await errorOf(res)).detail);
    const blob = await res.blob();
    if (item.curveKey !== key) return;  // a newer one is on its way
    if (item.curveUrl) URL.revokeObjectURL(item.curveUrl);
    item.curveUrl = URL.createObjectURL(new Blob([blob], { type: 'image/svg+xml' }));
    item.parts.img.src = item.curveUrl;
    item.parts.img.hidden = false;
  } catch (e) {
    if (item.curveKey === key) item.curveKey = null;  // try again at the next poll
    item.parts.img.hidden = true;
  }
}

function updateStore(data) {
  store.base = data.base;
  const b = data.base || {};
  $('#base-info').textContent = `base ${b.id} · context ${b.max_model_len} tokens · chat template ${b.chat_template} (${b.template_from})`;
  $('#base-facts').textContent = `${b.id}: the frozen base, no adapter`;
  $('#store-dir').textContent = data.adapter_dir ? data.adapter_dir : 'no --adapter-dir: only adapters loaded by path';
  const list = $('#adapters');
  const seen = new Set();
  const names = [];
  for (const a of data.adapters || []) {
    if (typeof a?.name !== 'string') continue;
    seen.add(a.name);
    names.push(a.name);
    const sig = JSON.stringify(a);
    let item = store.items.get(a.name);
    if (!item) {
      item = Object.assign({ entry: a, sig: null, curveKey: undefined, curveUrl: null }, buildCard(a.name));
      store.items.set(a.name, item);
      if (store.listed) {  // trained (or copied) into the store while the page is open
        item.card.classList.add('fresh');
        setTimeout(() => item.card.classList.remove('fresh'), 4000);
      }
    }
    if (item.sig !== sig) {
      item.entry = a;
      item.sig = sig;
      fillCard(item);
    }
  }
  for (const [name, item] of store.items) {
    if (seen.has(name)) continue;
    if (item.curveUrl) URL.revokeObjectURL(item.curveUrl);
    item.card.remove();
    store.items.delete(name);
  }
  // the listing's order (by name); nodes move only when it changed, so a slider being dragged is left alone
  if (names.join('\n') !== store.order.join('\n') || list.children.length !== names.length + 1) {
    for (const n of names) list.append(store.items.get(n).card);
    store.order = names;
  }
  $('#store-empty').hidden = names.length > 0;
  store.listed = true;
}

async function pollStore() {
  clearTimeout(store.polling);
  try {
    const res = await api('/v1/qlora/store', { cache: 'no-store' });
    if (res.ok) {
      updateStore(await res.json());
      conn('', 'ok');
    } else {
      const err = await errorOf(res);
      conn(`${explain(err).title} (${err.message})`, 'warn');
    }
  } catch (e) {
    conn('The server does not answer; trying again every few seconds.', 'bad');
  } finally {
    store.polling = setTimeout(pollStore, document.hidden ? POLL_HIDDEN_MS : POLL_MS);
  }
}

async function loadAdapter(name, load) {
  const item = store.items.get(name);
  if (!item) return;
  const msg = item.parts.msg;
  msg.textContent = load ? 'loading…' : 'unloading…';
  msg.className = 'card-msg';
  try {
    const body = load ? { lora_name: name, lora_path: item.entry.path } : { lora_name: name };
    const res = await postJson(load ? '/v1/load_lora_adapter' : '/v1/unload_lora_adapter', body);
    if (res.ok) msg.textContent = load ? 'loaded: it stays in memory until unloaded' : 'unloaded';
    else {
      const w = explain(await errorOf(res));
      msg.textContent = `${w.title} ${w.detail}`;
      msg.className = 'card-msg bad';
    }
  } catch (e) {
    msg.textContent = `The server does not answer: ${e.message}`;
    msg.className = 'card-msg bad';
  }
  pollStore();
}

// ---- columns ----

const custom = [];  // other columns: {adapter, scale}

// One folder of the store: infer/store.h's rule.
function nameProblem(name) {
  const bytes = new TextEncoder().encode(name).length;
  if (bytes < 1 || bytes > 127) return 'a name has 1 to 127 bytes';
  if (name.startsWith('.')) return 'a name does not start with "."';
  if (/[/\\,:\u0000-\u001f\u007f]/.test(name)) return 'a name has no "/", "\\", ",", ":" or control characters';
  return null;
}

function parseColumn(text) {
  const t = text.trim();
  let name = t, scale = 1;
  const i = t.lastIndexOf(':');
  if (i >= 0) {
    name = t.slice(0, i);
    const s = t.slice(i + 1);
    scale = Number(s);
    if (!s || !Number.isFinite(scale) || scale < 0 || scale > 100) return { error: `"${t}": the scale after ":" is a number in [0, 100]` };
  }
  const bad = nameProblem(name);
  if (bad) return { error: `"${t}": ${bad}` };
  return { adapter: name === 'base' ? 'base' : name, scale };
}

function renderCustom() {
  $('#custom-list').replaceChildren(...custom.map((c, i) => {
    const x = el('button', { type: 'button', class: 'chip-x', text: '×', title: `remove the column ${label(c)}` });
    x.addEventListener('click', () => { custom.splice(i, 1); renderCustom(); });
    return el('li', { class: 'chip', dataset: { column: label(c) } }, el('span', { text: label(c) }), x);
  }));
}

function addCustom() {
  const input = $('#custom-column');
  if (!input.value.trim()) return note('Type an adapter name (or NAME:SCALE) to add a column.', 'warn');
  const c = parseColumn(input.value);
  if (c.error) return note(c.error, 'warn');
  custom.push(c);
  input.value = '';
  note('');
  renderCustom();
}

// The columns a comparison runs: the base, the adapters picked in the store (at
// their slider's scale), then the other columns.
function chosenColumns() {
  const cols = [];
  if ($('#pick-base').checked) cols.push({ adapter: 'base', scale: 0 });
  for (const n of store.order) {
    const p = store.items.get(n)?.parts;
    if (p && p.box.checked) cols.push({ adapter: n, scale: Number(p.range.value) });
  }
  for (const c of custom) cols.push({ adapter: c.adapter, scale: c.scale });
  return cols;
}

function columnView(c) {
  const tmpl = c.adapter === 'base' ? store.base?.chat_template : store.items.get(c.adapter)?.entry?.chat_template;
  c.pre = el('pre', { class: 'text' });
  c.stats = el('p', { class: 'stats', text: 'waiting' });
  c.errEl = el('div', { class: 'error', role: 'alert', hidden: true });
  c.el = el('article', { class: 'column', dataset: { adapter: c.adapter, label: label(c), state: 'waiting' } },
    el('header', {},
      el('h3', { text: c.adapter === 'base' ? 'base' : c.adapter }),
      c.adapter === 'base' ? null : el('span', { class: 'tag', text: `scale ${scaleText(c.scale)}` }),
      tmpl && c.mode === 'chat' ? el('span', { class: 'tag', text: tmpl }) : null),
    c.stats, c.pre, c.errEl);
  return c.el;
}

function setState(c, s) {
  c.state = s;
  if (c.el) c.el.dataset.state = s;
}

function showStats(c) {
  const secs = ((c.tEnd ?? performance.now()) - c.t0) / 1000;
  if (c.state === 'done') {
    const tps = c.tokens > 0 && secs > 0 ? c.tokens / secs : 0;
    c.tps = tps;
    c.seconds = secs;
    c.stats.textContent = `${c.tokens} tokens · ${secs.toFixed(2)} s · ${tps.toFixed(1)} tok/s` +
      (c.tFirst ? ` · first token ${((c.tFirst - c.t0) / 1000).toFixed(2)} s` : '') + ` · ${c.finish === 'length' ? 'max tokens reached' : 'stopped'}`;
  } else if (c.state === 'streaming') c.stats.textContent = `streaming · ${secs.toFixed(1)} s`;
}

function append(c, t) {
  if (!c.tFirst) c.tFirst = performance.now();
  c.text += t;
  c.pieces++;
  c.pre.append(t);
  if (c.state !== 'streaming') setState(c, 'streaming');
  showStats(c);
}

function finish(c, reason, tokens) {
  c.tEnd = performance.now();
  c.finish = reason;
  c.tokens = Number.isInteger(tokens) ? tokens : c.pieces;
  setState(c, 'done');
  showStats(c);
}

// An error in words in column c (what it had streamed stays above it).
function fail(c, words, state = 'error') {
  c.tEnd = performance.now();
  c.error = `${words.title}${words.detail ? ` ${words.detail}` : ''}`;
  setState(c, state);
  c.errEl.replaceChildren(el('strong', { text: words.title }), words.detail ? el('span', { text: ` ${words.detail}` }) : null);
  c.errEl.hidden = false;
  c.stats.textContent = state === 'stopped' ? 'stopped' : 'error';
}

const unfinished = (c) => c.state === 'waiting' || c.state === 'streaming';

// The column a server error belongs to: its "index" within this batch, else its
// "adapter"; null when it concerns the whole request.
function columnOf(err, cols) {
  if (err.index !== null && cols[err.index]) return cols[err.index];
  if (err.adapter) return cols.find((c) => unfinished(c) && c.adapter === err.adapter) || null;
  return null;
}

// ---- compare ----

let running = null;  // {controller}

function readForm() {
  const mode = document.querySelector('input[name="mode"]:checked').value;
  const prompt = $('#prompt').value;
  const system = $('#system').value;
  if (!prompt.trim()) return { error: 'Type a prompt first.' };
  const num = (id) => Number($(`#${id}`).value);
  const s = { temperature: num('temperature'), top_p: num('top_p'), top_k: num('top_k'), max_tokens: num('max_tokens') };
  const seedText = $('#seed').value.trim();
  s.seed = seedText === '' ? null : Number(seedText);
  s.stop = $('#stop').value.split('\n').filter((x) => x.length > 0);
  if (!(s.temperature >= 0 && s.temperature <= 2)) return { error: 'temperature is a number in [0, 2] (0: greedy).' };
  if (!(s.top_p > 0 && s.top_p <= 1)) return { error: 'top-p is a number in (0, 1].' };
  if (!(Number.isInteger(s.top_k) && s.top_k >= 0)) return { error: 'top-k is a whole number, 0 or more (0: off).' };
  if (!(Number.isInteger(s.max_tokens) && s.max_tokens >= 1)) return { error: 'max tokens is a whole number, 1 or more.' };
  if (s.seed !== null && !(Number.isInteger(s.seed) && s.seed >= 0)) return { error: 'seed is a whole number, 0 or more (or empty).' };
  if (s.stop.length > MAX_STOPS) return { error: `at most ${MAX_STOPS} stop strings.` };
  return { mode, prompt, system: mode === 'chat' ? system : '', sampling: s };
}

function messagesOf(run) {
  const m = [];
  if (run.system && run.system.trim()) m.push({ role: 'system', content: run.system });
  m.push({ role: 'user', content: run.prompt });
  return m;
}

function requestBody(run, cols) {
  const s = run.sampling;
  const body = { model: store.base?.id ?? 'base', adapters: cols.map((c) => label(c)), stream: true,
                 max_tokens: s.max_tokens, temperature: s.temperature, top_p: s.top_p, top_k: s.top_k };
  if (s.seed !== null) body.seed = s.seed;
  if (s.stop.length) body.stop = s.stop;
  if (run.mode === 'chat') body.messages = messagesOf(run);
  else body.prompt = run.prompt;
  return body;
}

// Handles one server-sent event; true at data: [DONE].
function onEvent(ev, cols) {
  let done = false;
  for (const line of ev.split('\n')) {
    if (!line.startsWith('data:')) continue;
    const data = line.slice(5).trimStart();
    if (data === '[DONE]') { done = true; continue; }
    let obj;
    try { obj = JSON.parse(data); } catch {
      for (const c of cols.filter(unfinished)) fail(c, { title: 'The server sent something that is not JSON.', detail: data.slice(0, 200) });
      continue;
    }
    if (obj.error) {
      const err = { status: 500, message: obj.error.message || 'an error', adapter: obj.error.adapter ?? null,
                    index: Number.isInteger(obj.error.index) ? obj.error.index : null };
      const c = columnOf(err, cols);
      const words = { title: 'The server stopped this answer.', detail: err.message };
      for (const x of c ? [c] : cols.filter(unfinished)) fail(x, words);
      continue;
    }
    for (const ch of obj.choices || []) {
      const c = cols[ch.index];
      if (!c || !unfinished(c)) continue;
      const t = typeof ch.text === 'string' ? ch.text : typeof ch.delta?.content === 'string' ? ch.delta.content : '';
      if (t) append(c, t);
      if (ch.finish_reason) finish(c, ch.finish_reason, ch.completion_tokens);
    }
  }
  return done;
}

async function readStream(res, cols, signal) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '', done = false, dropped = null;
  try {
    for (;;) {
      const { value, done: end } = await reader.read();
      if (end) break;
      buf += dec.decode(value, { stream: true }).replace(/\r\n/g, '\n');
      for (let k; (k = buf.indexOf('\n\n')) >= 0;) {
        const ev = buf.slice(0, k);
        buf = buf.slice(k + 2);
        done = onEvent(ev, cols) || done;
      }
    }
  } catch (e) {
    dropped = e;
  }
  for (const c of cols.filter(unfinished)) {
    if (signal.aborted) fail(c, { title: 'Stopped.', detail: '' }, 'stopped');
    else if (dropped || !done)
      fail(c, { title: 'The connection to the server dropped before this answer finished.', detail: dropped ? dropped.message : 'the stream ended early' });
    else fail(c, { title: 'The server ended the stream without finishing this column.', detail: '' });
  }
}

// One request for cols; returns the column to leave out and try again without
// when the server refused the request because of that one column, else null.
async function runBatch(run, cols, signal) {
  const t0 = performance.now();
  for (const c of cols) c.t0 = t0;
  let res;
  try {
    res = await postJson(run.mode === 'chat' ? '/v1/chat/completions' : '/v1/completions', requestBody(run, cols), signal);
  } catch (e) {
    for (const c of cols) {
      if (signal.aborted) fail(c, { title: 'Stopped.', detail: '' }, 'stopped');
      else fail(c, { title: 'The server could not be reached (is qlora serve still running?).', detail: e.message });
    }
    return null;
  }
  if (!res.ok) {
    const err = await errorOf(res);
    const words = explain(err);
    const c = columnOf(err, cols);
    if (c) {
      fail(c, words);
      return cols.length > 1 ? c : null;
    }
    for (const x of cols) fail(x, words);
    return null;
  }
  await readStream(res, cols, signal);
  return null;
}

async function compare(ev) {
  ev?.preventDefault();
  if (running) return;
  const form = readForm();
  if (form.error) return note(form.error, 'warn');
  const chosen = chosenColumns();
  if (!chosen.length) return note('Choose at least one column: the base, an adapter of the store, or another column.', 'warn');
  note('');
  const run = Object.assign({ id: `c${Date.now().toString(36)}`, time: new Date().toISOString() }, form);
  run.columns = chosen.map((c) => ({ adapter: c.adapter, scale: c.scale, mode: run.mode, text: '', pieces: 0, state: 'waiting',
                                     tokens: null, error: null, finish: null }));
  $('#columns').replaceChildren(...run.columns.map(columnView));
  const controller = new AbortController();
  running = { controller };
  $('#compare').disabled = true;
  $('#stop-run').disabled = false;
  document.body.dataset.running = '1';
  try {
    let pending = run.columns.slice();
    while (pending.length) {
      const drop = await runBatch(run, pending, controller.signal);
      if (!drop) break;
      pending = pending.filter((c) => c !== drop);
    }
  } catch (e) {
    for (const c of run.columns.filter(unfinished)) fail(c, { title: 'The page failed on this answer.', detail: String(e?.message || e) });
  } finally {
    running = null;
    $('#compare').disabled = false;
    $('#stop-run').disabled = true;
    delete document.body.dataset.running;
    saveRun(run);
  }
}

// ---- history ----

function loadHistory() {
  try {
    const h = JSON.parse(localStorage.getItem(HISTORY_KEY) || '[]');
    return Array.isArray(h) ? h.filter((x) => x && Array.isArray(x.columns)) : [];
  } catch {
    return [];
  }
}

function storeHistory(h) {
  for (;;) {
    try {
      localStorage.setItem(HISTORY_KEY, JSON.stringify(h));
      return;
    } catch {
      if (!h.length) return;  // no storage at all: the history lives only in this page
      h.pop();                // full: the oldest go first
    }
  }
}

function saveRun(run) {
  const entry = {
    id: run.id, time: run.time, mode: run.mode, prompt: run.prompt, system: run.system, sampling: run.sampling,
    columns: run.columns.map((c) => ({ adapter: c.adapter, scale: c.scale, text: c.text, tokens: c.tokens, seconds: c.seconds ?? null,
                                       tps: c.tps ?? null, finish: c.finish, error: c.error, state: c.state })),
  };
  const h = loadHistory();
  h.unshift(entry);
  storeHistory(h.slice(0, HISTORY_MAX));
  renderHistory();
}

// The entry as `qlora infer --requests` lines: one request per column.
function jsonlOf(entry) {
  const s = entry.sampling || {};
  return entry.columns.map((c, i) => {
    const o = { id: `${entry.id}-${i + 1}` };
    if (entry.mode === 'chat') o.messages = messagesOf(entry);
    else o.prompt = entry.prompt;
    if (c.adapter !== 'base') o.adapter = label(c);
    o.max_tokens = s.max_tokens;
    o.temperature = s.temperature;
    o.top_p = s.top_p;
    o.top_k = s.top_k;
    if (s.seed !== null && s.seed !== undefined) o.seed = s.seed;
    if (s.stop && s.stop.length) o.stop = s.stop;
    return `${JSON.stringify(o)}\n`;
  }).join('');
}

function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: 'application/x-ndjson' }));
  const a = el('a', { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

function showEntry(entry) {
  const cols = entry.columns.map((c) => Object.assign({}, c, { mode: entry.mode }));
  $('#columns').replaceChildren(...cols.map(columnView));
  for (const c of cols) {
    c.pre.textContent = c.text || '';
    setState(c, c.state || (c.error ? 'error' : 'done'));
    if (c.error) {
      c.errEl.textContent = c.error;
      c.errEl.hidden = false;
      c.stats.textContent = c.state === 'stopped' ? 'stopped' : 'error';
    } else c.stats.textContent = `${c.tokens ?? '–'} tokens · ${fmt(c.seconds, 2)} s · ${fmt(c.tps, 1)} tok/s (from the history)`;
  }
}

function reuseEntry(entry) {
  document.querySelector(`input[name="mode"][value="${entry.mode === 'chat' ? 'chat' : 'completion'}"]`).checked = true;
  syncMode();
  $('#prompt').value = entry.prompt || '';
  $('#system').value = entry.system || '';
  const s = entry.sampling || {};
  for (const k of ['temperature', 'top_p', 'top_k', 'max_tokens']) if (s[k] !== undefined) $(`#${k}`).value = s[k];
  $('#seed').value = s.seed ?? '';
  $('#stop').value = (s.stop || []).join('\n');
  $('#pick-base').checked = entry.columns.some((c) => c.adapter === 'base');
  for (const item of store.items.values()) item.parts.box.checked = false;
  custom.length = 0;
  for (const c of entry.columns) {
    if (c.adapter === 'base') continue;
    const item = store.items.get(c.adapter);
    if (item && !item.parts.box.checked) {
      item.parts.box.checked = true;
      item.parts.range.value = c.scale;
      item.parts.out.textContent = scaleText(c.scale);
    } else custom.push({ adapter: c.adapter, scale: c.scale });
  }
  renderCustom();
  note('The form holds that comparison again: Compare reruns it.');
}

function renderHistory() {
  const h = loadHistory();
  $('#history').replaceChildren(...h.map((entry) => {
    const btn = (cls, text, fn) => {
      const b = el('button', { type: 'button', class: cls, text });
      b.addEventListener('click', fn);
      return b;
    };
    const when = new Date(entry.time);
    return el('li', { class: 'entry', dataset: { id: entry.id } },
      el('div', { class: 'entry-head' },
        el('time', { dateTime: entry.time, text: Number.isNaN(when.getTime()) ? entry.time : when.toLocaleString() }),
        el('span', { class: 'tag', text: entry.mode }),
        el('span', { class: 'entry-cols', text: entry.columns.map((c) => label(c)).join(' · ') })),
      el('p', { class: 'entry-prompt', text: (entry.prompt || '').slice(0, 200) }),
      el('div', { class: 'entry-actions' },
        btn('show', 'Show', () => showEntry(entry)),
        btn('reuse', 'Use again', () => reuseEntry(entry)),
        btn('export', 'Export JSONL', () => download(`qlora-compare-${entry.id}.jsonl`, jsonlOf(entry))),
        btn('delete', 'Delete', () => { storeHistory(loadHistory().filter((x) => x.id !== entry.id)); renderHistory(); })));
  }));
}

// ---- start ----

function syncMode() {
  const chat = document.querySelector('input[name="mode"]:checked').value === 'chat';
  $('#system').hidden = !chat;
}

function start() {
  try { $('#api-key').value = sessionStorage.getItem(KEY_KEY) || ''; } catch { /* no storage */ }
  $('#api-key').addEventListener('change', () => {
    try { sessionStorage.setItem(KEY_KEY, apiKey()); } catch { /* no storage */ }
    pollStore();
  });
  $('#compare-form').addEventListener('submit', compare);
  $('#stop-run').addEventListener('click', () => running?.controller.abort());
  $('#add-column').addEventListener('click', addCustom);
  $('#custom-column').addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); addCustom(); } });
  for (const r of document.querySelectorAll('input[name="mode"]')) r.addEventListener('change', syncMode);
  $('#export-all').addEventListener('click', () => {
    const h = loadHistory();
    if (!h.length) return note('The history is empty.', 'warn');
    download('qlora-compare-history.jsonl', h.slice().reverse().map(jsonlOf).join(''));
  });
  $('#clear-history').addEventListener('click', () => { storeHistory([]); renderHistory(); });
  document.addEventListener('visibilitychange', () => { if (!document.hidden) pollStore(); });
  // whatever escapes a handler is said, and the page goes on
  window.addEventListener('error', (e) => note(`The page hit an error: ${e.message}`, 'bad'));
  window.addEventListener('unhandledrejection', (e) => note(`The page hit an error: ${e.reason?.message || e.reason}`, 'bad'));
  syncMode();
  renderHistory();
  pollStore();
  document.body.dataset.ready = '1';
}

start();
