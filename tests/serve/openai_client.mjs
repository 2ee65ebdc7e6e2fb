// openai_client.mjs PORT BASE_ID REFDIR: drives a running `qlora serve` with the
// official openai npm package (a client we did not write) and checks what it gets
// against references that `qlora infer` wrote (tests/test_serve_openai.sh sets it
// all up). REFDIR holds:
//   base.txt, pirate.txt, support.txt  stdout of `qlora infer --prompt PROMPT
//                                      --max-tokens 10 --temperature 0` with no
//                                      adapter / --adapter pirate / support
//   chat_support.jsonl                 `qlora infer --requests` result for MESSAGES
//                                      with adapter support, greedy, max_tokens 10
// Prints one line per check ("ok - ..." or "FAIL - ...") and exits 1 when any
// failed (2 on bad arguments).
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';

const PROMPT = 'Tell me about the sea';
const MESSAGES = [{ role: 'user', content: 'Where is my order?' }];
const MAX_TOKENS = 10;

const [port, baseId, refDir] = process.argv.slice(2);
if (!/^[0-9]+$/.test(port ?? '') || !baseId || !refDir) {
    console.error('usage: node openai_client.mjs PORT BASE_ID REFDIR');
    process.exit(2);
}

let fails = 0, checks = 0;
function check(name, cond, detail = '') {
    checks++;
    if (cond) console.log(`ok - ${name}`);
    else {
        fails++;
        console.log(`FAIL - ${name}${detail ? ': ' + detail : ''}`);
    }
    return cond;
}
const show = (x) => JSON.stringify(x);
// Runs one group of checks; an exception (a transport error, an unexpected API
// error, a malformed response) fails the group instead of ending the run.
async function group(name, fn) {
    try {
        await fn();
    } catch (e) {
        check(`${name}: no exception`, false, `${e?.constructor?.name}: ${e?.message}`);
    }
}

// ---- the references (bytes as qlora infer wrote them) ----
function plainRef(name) {
    let b = readFileSync(`${refDir}/${name}.txt`);
    if (b.length && b[b.length - 1] === 0x0a) b = b.subarray(0, b.length - 1); // infer ends its answer with '\n'
    return b;
}
const ref = { base: plainRef('base'), pirate: plainRef('pirate'), support: plainRef('support') };
const chatLine = JSON.parse(readFileSync(`${refDir}/chat_support.jsonl`, 'utf8').trim());
const chatRef = Buffer.from(chatLine.text ?? '', 'utf8');
// equal byte for byte (the client decodes the JSON string; encode it back as UTF-8)
const same = (text, refBytes) => typeof text === 'string' && Buffer.from(text, 'utf8').equals(refBytes);
const vs = (text, refBytes) => `got ${show(text)}, want ${show(refBytes.toString('utf8'))}`;

// The references must be worth comparing against: non-empty, and an adapter must change the answer.
check('references: non-empty', ref.base.length > 0 && ref.pirate.length > 0 && ref.support.length > 0 && chatRef.length > 0,
      `base ${ref.base.length} B, pirate ${ref.pirate.length} B, support ${ref.support.length} B, chat ${chatRef.length} B`);
check('references: the pirate adapter changes the base answer', !ref.pirate.equals(ref.base));
check('references: the chat reference ran adapter support to its length', chatLine.adapter === 'support' &&
      chatLine.finish_reason === 'length' && chatLine.tokens === MAX_TOKENS, show(chatLine));

const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'sk-qlora-test', maxRetries: 0, timeout: 20000 });
const models = { base: baseId, pirate: 'pirate', support: 'support' };
const greedy = { max_tokens: MAX_TOKENS, temperature: 0 };

function checkUsage(name, u) {
    return check(`${name}: usage`, u != null && Number.isInteger(u.prompt_tokens) && u.prompt_tokens > 0 &&
                 Number.isInteger(u.completion_tokens) && u.total_tokens === u.prompt_tokens + u.completion_tokens,
                 show(u));
}

// 1. models.list()
await group('models.list', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    for (const id of [baseId, 'pirate', 'support'])
        check(`models.list: has ${id}`, ids.includes(id), `ids ${show(ids)}`);
    const m = await client.models.retrieve('pirate');
    check('models.retrieve(pirate): its parent is the base', m.id === 'pirate' && m.parent === baseId, show(m));
});

// 2. completions, not streamed: base, pirate, support
for (const [key, model] of Object.entries(models)) {
    const name = `completions.create ${model}`;
    await group(name, async () => {
        const r = await client.completions.create({ model, prompt: PROMPT, ...greedy });
        check(`${name}: object and model`, r.object === 'text_completion' && r.model === model, `${r.object} ${r.model}`);
        check(`${name}: one choice`, r.choices?.length === 1, show(r.choices));
        const c = r.choices[0];
        check(`${name}: text equals qlora infer`, same(c?.text, ref[key]), vs(c?.text, ref[key]));
        check(`${name}: finish_reason length`, c?.finish_reason === 'length', show(c?.finish_reason));
        if (checkUsage(name, r.usage))
            check(`${name}: completion_tokens ${MAX_TOKENS}`, r.usage.completion_tokens === MAX_TOKENS, show(r.usage));
    });
}

// 3. completions, streamed with a usage chunk
for (const [key, model] of Object.entries(models)) {
    const name = `completions.create stream ${model}`;
    await group(name, async () => {
        const stream = await client.completions.create({ model, prompt: PROMPT, ...greedy, stream: true,
                                                         stream_options: { include_usage: true } });
        let text = '', finish = null, usage = null, chunks = 0, afterUsage = 0;
        for await (const ch of stream) {
            chunks++;
            if (usage) afterUsage++;
            for (const c of ch.choices ?? []) {
                text += c.text ?? '';
                if (c.finish_reason) finish = c.finish_reason;
            }
            if (ch.usage) usage = ch.usage;
        }
        check(`${name}: several chunks`, chunks > 2, `${chunks} chunks`);
        check(`${name}: text equals qlora infer`, same(text, ref[key]), vs(text, ref[key]));
        check(`${name}: finish_reason length`, finish === 'length', show(finish));
        check(`${name}: a usage chunk, last`, usage != null && afterUsage === 0, `usage ${show(usage)}, ${afterUsage} chunks after it`);
        if (usage) checkUsage(name, usage);
    });
}

// 4. chat completions for support, not streamed and streamed
await group('chat.completions.create support', async () => {
    const name = 'chat.completions.create support';
    const r = await client.chat.completions.create({ model: 'support', messages: MESSAGES, ...greedy });
    check(`${name}: object and model`, r.object === 'chat.completion' && r.model === 'support', `${r.object} ${r.model}`);
    const c = r.choices?.[0];
    check(`${name}: one assistant message`, r.choices?.length === 1 && c.message?.role === 'assistant', show(r.choices));
    check(`${name}: content equals qlora infer --requests`, same(c?.message?.content, chatRef), vs(c?.message?.content, chatRef));
    check(`${name}: finish_reason length`, c?.finish_reason === 'length', show(c?.finish_reason));
    if (checkUsage(name, r.usage))
        check(`${name}: prompt_tokens as qlora infer --requests`, r.usage.prompt_tokens === chatLine.prompt_tokens,
              `${r.usage.prompt_tokens} vs ${chatLine.prompt_tokens}`);
});
await group('chat.completions.create stream support', async () => {
    const name = 'chat.completions.create stream support';
    const stream = await client.chat.completions.create({ model: 'support', messages: MESSAGES, ...greedy, stream: true,
                                                          stream_options: { include_usage: true } });
    let text = '', finish = null, usage = null, role = null;
    for await (const ch of stream) {
        for (const c of ch.choices ?? []) {
            text += c.delta?.content ?? '';
            if (c.delta?.role) role = c.delta.role;
            if (c.finish_reason) finish = c.finish_reason;
        }
        if (ch.usage) usage = ch.usage;
    }
    check(`${name}: role assistant`, role === 'assistant', show(role));
    check(`${name}: content equals qlora infer --requests`, same(text, chatRef), vs(text, chatRef));
    check(`${name}: finish_reason length`, finish === 'length', show(finish));
    check(`${name}: a usage chunk`, usage != null, 'none');
    if (usage) checkUsage(name, usage);
});

// 5. errors as the package's error classes
async function expectError(name, cls, status, param, fn) {
    let err = null;
    try {
        const r = await fn();
        check(`${name}: rejected`, false, `answered ${show(r).slice(0, 200)}`);
        return;
    } catch (e) {
        err = e;
    }
    check(`${name}: ${cls.name} (${status})`, err instanceof cls && err.status === status,
          `${err?.constructor?.name} status ${err?.status}: ${err?.message}`);
    check(`${name}: OpenAI error object`, typeof err?.error?.message === 'string' && err.error.message.length > 0 &&
          typeof err?.type === 'string' && (param === undefined || err.param === param),
          `error ${show(err?.error)}`);
}
await group('errors', async () => {
    await expectError('unknown model', OpenAI.NotFoundError, 404, 'model',
                      () => client.completions.create({ model: 'no-such-adapter', prompt: PROMPT, ...greedy }));
    await expectError('temperature "hot"', OpenAI.BadRequestError, 400, 'temperature',
                      () => client.completions.create({ model: baseId, prompt: PROMPT, max_tokens: MAX_TOKENS,
                                                        temperature: /** @type {any} */ ('hot') }));
    await expectError('chat, unknown model', OpenAI.NotFoundError, 404, 'model',
                      () => client.chat.completions.create({ model: 'no-such-adapter', messages: MESSAGES, ...greedy }));
});

// 6. the "adapters" extension: one prompt fanned out, one labelled choice per adapter
await group('adapters extension', async () => {
    const name = 'completions.create adapters [base, pirate, support]';
    const r = await client.completions.create({ model: baseId, prompt: PROMPT, ...greedy,
                                                adapters: ['base', 'pirate', 'support'] });
    check(`${name}: 3 choices`, r.choices?.length === 3, show(r.choices));
    // each choice is labelled with the name it was asked for ("base" for the base)
    const want = [['base', 'base'], ['pirate', 'pirate'], ['support', 'support']];
    want.forEach(([key, label], i) => {
        const c = r.choices?.find((x) => x.index === i);
        check(`${name}: choice ${i} labelled ${label}`, c?.adapter === label, show(c));
        check(`${name}: choice ${i} text equals qlora infer (${key})`, same(c?.text, ref[key]), vs(c?.text, ref[key]));
        check(`${name}: choice ${i} finish_reason length`, c?.finish_reason === 'length', show(c?.finish_reason));
    });
    if (checkUsage(name, r.usage))
        check(`${name}: completion_tokens 3 x ${MAX_TOKENS}`, r.usage.completion_tokens === 3 * MAX_TOKENS, show(r.usage));
});

console.log(`${checks - fails}/${checks} checks passed${fails ? `, ${fails} FAILED` : ''}`);
process.exit(fails ? 1 : 0);
