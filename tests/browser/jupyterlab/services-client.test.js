// The isolated kernel through @jupyterlab/services, the client library
// JupyterLab's kernel picker and notebooks are built on, against a real
// jupyter_server (token auth). Run by tests/browser/test_services_client.py:
//   IK_SERVER_URL=http://127.0.0.1:PORT IK_TOKEN=... IK_KERNEL=python3-isolated \
//   IK_DISPLAY='Python 3 (isolated)' node --test services-client.test.js
// Each step prints one "ik-step NAME SECONDS" line (the driver reports them).
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const {
  ServerConnection,
  KernelManager,
  KernelSpecManager,
  SessionManager,
  KernelAPI,
  KernelSpecAPI,
  SessionAPI
} = require('@jupyterlab/services');

const env = name => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (see the header of this file)`);
  return v;
};
const base = env('IK_SERVER_URL');
const kernelName = env('IK_KERNEL');
const display = env('IK_DISPLAY');

const settings = ServerConnection.makeSettings({
  baseUrl: base + '/',
  wsUrl: base.replace(/^http/, 'ws') + '/',
  token: env('IK_TOKEN'),
  appendToken: true,
  WebSocket
});

// @lumino/polling 1.x (under @jupyterlab/services 6) does not clear its timer
// when a poll is disposed: harmless in a browser, but in Node the pending
// timer (61 s for the kernelspecs poll) keeps the process alive after the
// test. Long timers are only those polls, so let them not hold the process.
const realSetTimeout = global.setTimeout;
global.setTimeout = (fn, ms, ...args) => {
  const timer = realSetTimeout(fn, ms, ...args);
  if (ms >= 5000 && timer && timer.unref) timer.unref();
  return timer;
};

const sleep = ms => new Promise(r => setTimeout(r, ms));

async function waitFor(pred, what, ms = 60000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred()) return;
    await sleep(50);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

// Runs CODE; returns {reply, stdout, errors}. onStdin answers input requests.
async function run(kernel, code, { onStdin, onBusy } = {}) {
  const future = kernel.requestExecute({ code, allow_stdin: !!onStdin, stop_on_error: false });
  let stdout = '';
  const errors = [];
  future.onIOPub = msg => {
    const t = msg.header.msg_type;
    if (t === 'stream' && msg.content.name === 'stdout') stdout += msg.content.text;
    if (t === 'error') errors.push(msg.content.ename);
    if (t === 'status' && msg.content.execution_state === 'busy' && onBusy) onBusy();
  };
  if (onStdin) future.onStdin = msg => onStdin(msg, future);
  const reply = await future.done;
  return { reply: reply.content, stdout, errors };
}

function step(name, t0) {
  console.log(`ik-step ${name} ${((Date.now() - t0) / 1000).toFixed(3)}`);
}

test('the isolated kernel through @jupyterlab/services', async t => {
  const kernelManager = new KernelManager({ serverSettings: settings });
  const specManager = new KernelSpecManager({ serverSettings: settings });
  const sessions = new SessionManager({ kernelManager, serverSettings: settings });
  let session = null;
  t.after(async () => {
    if (session && !session.isDisposed) await session.shutdown().catch(() => {});
    sessions.dispose();
    specManager.dispose();
    kernelManager.dispose();
  });

  await t.test('lists the kernelspec', async () => {
    // The manager (what the picker reads; its first poll) and the REST call under it.
    // Not refreshSpecs(): @lumino/polling 1.x's refresh calls clearImmediate(-1),
    // which Node >= 20 rejects.
    await specManager.ready;
    const listed = await KernelSpecAPI.getSpecs(settings);
    assert.deepEqual(Object.keys(listed.kernelspecs).sort(), Object.keys(specManager.specs.kernelspecs).sort());
    const spec = specManager.specs.kernelspecs[kernelName];
    assert.ok(spec, `no ${kernelName} in ${Object.keys(specManager.specs.kernelspecs)}`);
    assert.equal(spec.display_name, display);
    assert.equal(spec.language, 'python');
    assert.ok(spec.resources['logo-64x64'], JSON.stringify(spec.resources));
  });

  let kernel = null;
  await t.test('starts a session with it', async () => {
    const t0 = Date.now();
    session = await sessions.startNew({
      path: 'client.ipynb',
      name: 'client.ipynb',
      type: 'notebook',
      kernel: { name: kernelName }
    });
    kernel = session.kernel;
    assert.equal(kernel.name, kernelName);
    const info = await kernel.info;
    assert.equal(info.language_info.name, 'python');
    assert.equal(info.status, 'ok');
    step('start', t0);
    const running = await KernelAPI.listRunning(settings);
    assert.deepEqual(running.filter(k => k.id === kernel.id).map(k => k.name), [kernelName]);
  });

  await t.test('executes with output', async () => {
    const t0 = Date.now();
    const r = await run(kernel, 'print(6 * 7)');
    step('execute', t0);
    assert.equal(r.reply.status, 'ok');
    assert.equal(r.stdout, '42\n');
  });

  await t.test('streams stdin (input())', async () => {
    const prompts = [];
    const r = await run(kernel, "name = input('your name? '); print('hello', name[::-1])", {
      onStdin: msg => {
        if (msg.header.msg_type !== 'input_request') return;
        prompts.push(msg.content.prompt);
        kernel.sendInputReply({ status: 'ok', value: 'latsyrc' }, msg.header);
      }
    });
    assert.deepEqual(prompts, ['your name? ']);
    assert.equal(r.reply.status, 'ok');
    assert.equal(r.stdout, 'hello crystal\n');
  });

  await t.test('interrupts a busy loop', async () => {
    let busy = false;
    const done = run(kernel, 'while True: pass', { onBusy: () => (busy = true) });
    await waitFor(() => busy, 'the kernel to be busy');
    await sleep(300);
    const t0 = Date.now();
    await kernel.interrupt();
    const r = await done;
    step('interrupt', t0);
    assert.equal(r.reply.status, 'error');
    assert.deepEqual(r.errors, ['KeyboardInterrupt']);
    const after = await run(kernel, "print('alive')");
    assert.equal(after.stdout, 'alive\n');
  });

  await t.test('is cut off from the network and HOME', async () => {
    const port = new URL(base).port;
    const code =
      'import os, socket, json, errno; a = socket.socket(); a.settimeout(3); ' +
      `print(json.dumps({'server': errno.errorcode.get(a.connect_ex(('127.0.0.1', ${port})), 'connected'), ` +
      "'home': sorted(os.listdir(os.path.expanduser('~')))}))";
    const r = await run(kernel, code);
    const out = JSON.parse(r.stdout);
    assert.equal(out.server, 'ECONNREFUSED');
    for (const name of out.home) assert.ok(['.ipython', '.local', '.cache', '.config'].includes(name), name);
  });

  await t.test('restarts', async () => {
    await run(kernel, "kept = 'before restart'");
    const t0 = Date.now();
    await kernel.restart();
    await waitFor(() => kernel.status === 'idle', 'the restarted kernel to be idle');
    step('restart', t0);
    const r = await run(kernel, "print('kept' in dir())");
    assert.equal(r.stdout, 'False\n');
  });

  await t.test('shuts down', async () => {
    const id = kernel.id;
    const t0 = Date.now();
    await session.shutdown();
    step('shutdown', t0);
    const running = await KernelAPI.listRunning(settings);
    assert.deepEqual(running.filter(k => k.id === id), []);
    assert.deepEqual(await SessionAPI.listRunning(settings), []);
  });
});
