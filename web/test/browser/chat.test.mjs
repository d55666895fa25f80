// End to end: the real confab server, headless Chromium, the demo page and the
// web SDK it serves. Two users (alice, bob) log in through the page with
// development tokens, talk in a room and in private, bob drops offline and
// comes back to every missed message exactly once, in order; and one test uses
// the SDK directly from a page against the server's real error codes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { startServer, serverBinary } from './server.mjs';

const STEP = { timeout: 30_000 };
const LAUNCH_ARGS = [
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-default-apps',
  '--disable-dev-shm-usage',
];

// Nothing may hang: the whole file gets two minutes at most.
const watchdog = setTimeout(() => {
  console.error('browser tests: overall timeout (120 s), giving up');
  process.exit(1);
}, 120_000);
watchdog.unref();

let server;
let browser;
const users = {};

before(async () => {
  serverBinary(); // a clear message when the binary is missing
  server = await startServer();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: LAUNCH_ARGS,
    timeout: 30_000,
  });
}, { timeout: 60_000 });

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
}, { timeout: 20_000 });

// ----- helpers -----------------------------------------------------------------

const tid = (id) => `[data-testid="${id}"]`;

async function openUser(name, viewport) {
  const context = await browser.newContext({ viewport });
  context.setDefaultTimeout(10_000);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(server.url + '/');
  await page.waitForSelector('body[data-ready="true"]');
  const user = { name, context, page, errors };
  users[name] = user;
  return user;
}

async function login(user, userID, userName) {
  const { page } = user;
  await page.fill(tid('login-user'), userID);
  await page.fill(tid('login-name'), userName);
  await page.click(tid('login-button'));
  await waitConnected(page);
}

async function waitConnected(page) {
  await page.waitForSelector(`${tid('conn-state')}[data-state="2"]`);
  assert.equal(await page.textContent(tid('conn-state')), 'connected');
}

async function enterRoom(page, roomID) {
  await page.fill(tid('room-id'), roomID);
  await page.click(tid('room-enter'));
  await page.waitForSelector(`${tid('room-item')}[data-room="${roomID}"]`);
  await page.click(`${tid('room-item')}[data-room="${roomID}"] .name`);
  await page.waitForFunction((r) => document.querySelector('[data-testid="pane-title"]')?.textContent?.includes(r), roomID);
}

async function openPeer(page, userID) {
  await page.fill(tid('peer-id'), userID);
  await page.click(tid('peer-open'));
  await page.waitForFunction((u) => document.querySelector('[data-testid="pane-title"]')?.textContent === `@ ${u}`, userID);
}

async function openConversation(page, selector) {
  await page.click(`${selector} .name`);
}

async function send(page, text) {
  await page.fill(tid('message-input'), text);
  await page.click(tid('send-button'));
  // Sent once the page shows it as our own.
  await page.waitForFunction(
    (t) => [...document.querySelectorAll('[data-testid="messages"] .msg.mine [data-testid="message-text"]')].some((n) => n.textContent === t),
    text,
  );
}

/** The open pane's messages as [from, text]. */
async function shown(page) {
  return page.$$eval('[data-testid="messages"] [data-testid="message"]', (nodes) =>
    nodes.map((n) => [n.dataset.from, n.querySelector('[data-testid="message-text"]').textContent]),
  );
}

async function waitShown(page, from, text) {
  await page.waitForFunction(
    ([f, t]) =>
      [...document.querySelectorAll('[data-testid="messages"] [data-testid="message"]')].some(
        (n) => n.dataset.from === f && n.querySelector('[data-testid="message-text"]').textContent === t,
      ),
    [from, text],
  );
}

async function members(page) {
  return page.$$eval('[data-testid="member-list"] [data-testid="member"]', (nodes) => nodes.map((n) => n.dataset.user));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ----- the story ---------------------------------------------------------------

test('alice and bob log in through the demo page with development tokens', STEP, async () => {
  const alice = await openUser('alice', { width: 1200, height: 800 });
  const bob = await openUser('bob', { width: 375, height: 740 });
  // The development app's note and AppID are shown.
  const note = await alice.page.textContent(tid('dev-note'));
  assert.match(note, /mints tokens\s+for its development app only; configured apps need a token from your own backend/);
  assert.match(await alice.page.textContent(tid('app-id')), /^\d+$/);
  assert.equal(await alice.page.textContent(tid('conn-state')), 'disconnected');
  // A bad userID is refused with its code and message.
  await bob.page.fill(tid('login-user'), 'not valid');
  await bob.page.click(tid('login-button'));
  const error = await bob.page.waitForSelector(`${tid('error')}[data-code="6000001"]`);
  assert.match(await error.textContent(), /6000001 .*userID/);
  await error.$eval('button', (b) => b.click());
  await login(alice, 'alice', 'Alice');
  await login(bob, 'bob', 'Bob');
  assert.match(await bob.page.textContent(tid('me')), /bob/);
});

test('both enter one room and exchange room messages both ways; bob sees alice among the members', STEP, async () => {
  const { alice, bob } = users;
  await enterRoom(alice.page, 'lobby');
  await enterRoom(bob.page, 'lobby');
  await bob.page.waitForFunction(() => document.querySelectorAll('[data-testid="member-list"] [data-testid="member"]').length === 2);
  assert.deepEqual(await members(bob.page), ['alice', 'bob']);
  await alice.page.waitForSelector(`${tid('member')}[data-user="bob"]`); // live roomMemberJoined
  await bob.page.waitForFunction(() => document.querySelector('[data-testid="online-count"]').textContent === '2 online');
  await send(alice.page, 'hello from alice');
  await waitShown(bob.page, 'alice', 'hello from alice');
  await send(bob.page, 'hi alice, bob here');
  await waitShown(alice.page, 'bob', 'hi alice, bob here');
  assert.deepEqual(await shown(bob.page), [
    ['alice', 'hello from alice'],
    ['bob', 'hi alice, bob here'],
  ]);
});

test('peer messages both ways', STEP, async () => {
  const { alice, bob } = users;
  await openPeer(alice.page, 'bob');
  await send(alice.page, 'psst bob');
  const convo = `${tid('conversation-item')}[data-peer="alice"]`;
  await bob.page.waitForSelector(`${convo} ${tid('unread')}`);
  await openConversation(bob.page, convo);
  await waitShown(bob.page, 'alice', 'psst bob');
  await send(bob.page, 'psst alice');
  await waitShown(alice.page, 'bob', 'psst alice');
});

test('bob goes offline; alice sends; bob comes back to every missed message once, in order', STEP, async () => {
  const { alice, bob } = users;
  await bob.context.setOffline(true);
  await bob.page.waitForSelector(`${tid('conn-state')}[data-state="3"]`);
  assert.equal(await bob.page.textContent(tid('conn-state')), 'reconnecting');
  // Alice: three to bob in private (her open pane), three in the room.
  for (const text of ['p1', 'p2', 'p3']) await send(alice.page, text);
  await alice.page.click(`${tid('room-item')}[data-room="lobby"] .name`);
  for (const text of ['r1', 'r2', 'r3']) await send(alice.page, text);
  await sleep(300);
  assert.equal(await bob.page.textContent(tid('conn-state')), 'reconnecting', 'still offline');
  await bob.context.setOffline(false);
  await waitConnected(bob.page);
  // Bob's private pane with alice is open: p1..p3 once each, in order.
  await waitShown(bob.page, 'alice', 'p3');
  assert.deepEqual(await shown(bob.page), [
    ['alice', 'psst bob'],
    ['bob', 'psst alice'],
    ['alice', 'p1'],
    ['alice', 'p2'],
    ['alice', 'p3'],
  ]);
  await openConversation(bob.page, `${tid('room-item')}[data-room="lobby"]`);
  await waitShown(bob.page, 'alice', 'r3');
  await sleep(300); // anything duplicated would have arrived by now
  assert.deepEqual(await shown(bob.page), [
    ['alice', 'hello from alice'],
    ['bob', 'hi alice, bob here'],
    ['alice', 'r1'],
    ['alice', 'r2'],
    ['alice', 'r3'],
  ]);
  // And the room works both ways again.
  await send(bob.page, 'back again');
  await waitShown(alice.page, 'bob', 'back again');
});

test('bob closes his page; alice sends; bob opens a new page, logs in and gets the missed peer messages once', STEP, async () => {
  const { alice, bob } = users;
  await sleep(1500); // the SDK acknowledges delivered peer messages every second
  await bob.page.close();
  await alice.page.click(`${tid('conversation-item')}[data-peer="bob"] .name`);
  for (const text of ['while you were away 1', 'while you were away 2']) await send(alice.page, text);
  const page = await bob.context.newPage();
  page.on('pageerror', (e) => bob.errors.push(String(e)));
  await page.goto(server.url + '/');
  await page.waitForSelector('body[data-ready="true"]');
  bob.page = page;
  await login(bob, 'bob', 'Bob');
  const convo = `${tid('conversation-item')}[data-peer="alice"]`;
  await page.waitForSelector(convo);
  await openConversation(page, convo);
  await waitShown(page, 'alice', 'while you were away 2');
  await sleep(300);
  assert.deepEqual(await shown(page), [
    ['alice', 'while you were away 1'],
    ['alice', 'while you were away 2'],
  ]);
  // The server kept bob's room membership across the reload.
  await page.waitForSelector(`${tid('room-item')}[data-room="lobby"]`);
});

test('bob sees alice leave the room', STEP, async () => {
  const { alice, bob } = users;
  await openConversation(bob.page, `${tid('room-item')}[data-room="lobby"]`);
  await bob.page.waitForSelector(`${tid('member')}[data-user="alice"]`);
  await alice.page.click(`${tid('room-item')}[data-room="lobby"] ${tid('room-leave')}`);
  await alice.page.waitForSelector(`${tid('room-item')}[data-room="lobby"]`, { state: 'detached' });
  await bob.page.waitForSelector(`${tid('member')}[data-user="alice"]`, { state: 'detached' });
  assert.deepEqual(await members(bob.page), ['bob']);
  await bob.page.waitForFunction(() => document.querySelector('[data-testid="online-count"]').textContent === '1 online');
});

test('the page fits a phone: no horizontal scroll at 375 px', STEP, async () => {
  const { bob } = users;
  const { scrollWidth, innerWidth } = await bob.page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
  }));
  assert.equal(innerWidth, 375);
  assert.ok(scrollWidth <= innerWidth, `scrollWidth ${scrollWidth} > ${innerWidth}`);
  for (const user of Object.values(users)) {
    assert.deepEqual(user.errors, [], `${user.name}'s page threw`);
  }
});

test('the SDK used directly from a page rejects with the server codes as {code, message}', STEP, async () => {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.goto(server.url + '/healthz');
    const result = await page.evaluate(async () => {
      const { ZIM, ZIMErrorCode, ZIMConnectionState } = await import('/sdk/zim.js');
      const { appID } = await (await fetch('/dev/app')).json();
      const tokenFor = async (userID) => {
        const r = await fetch('/dev/token', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ userID, effectiveTimeInSeconds: 600 }),
        });
        return (await r.json()).token;
      };
      const grab = async (promise) => {
        try {
          await promise;
          return null;
        } catch (e) {
          return { keys: Object.keys(e).sort(), code: e.code, message: e.message };
        }
      };
      const zim = ZIM.create({ appID }); // the server is the page's origin
      const states = [];
      zim.on('connectionStateChanged', (_z, d) => states.push(d.state));
      const out = {};
      out.beforeLogin = await grab(zim.sendPeerMessage({ type: 1, message: 'x' }, 'dave'));
      out.wrongToken = await grab(zim.login({ userID: 'carol', userName: 'Carol' }, await tokenFor('dave')));
      await zim.login({ userID: 'carol', userName: 'Carol' }, await tokenFor('carol'));
      out.connected = zim.getConnectionState() === ZIMConnectionState.Connected;
      out.noRoom = await grab(zim.sendRoomMessage({ type: 1, message: 'x' }, 'no-such-room'));
      out.joinMissing = await grab(zim.joinRoom('no-such-room'));
      out.badUser = await grab(zim.sendPeerMessage({ type: 1, message: 'x' }, 'not a valid id'));
      await zim.createRoom({ roomID: 'carols', roomName: 'Carol' }, { roomDestroyDelayTime: 60 });
      await zim.leaveRoom('carols');
      out.notInRoom = await grab(zim.sendRoomMessage({ type: 1, message: 'x' }, 'carols'));
      out.exists = await grab(zim.createRoom({ roomID: 'carols' }));
      const sent = await zim.sendPeerMessage({ type: 1, message: 'hello dave' }, 'dave');
      out.sent = { type: sent.message.type, text: sent.message.message, seq: sent.message.conversationSeq, id: typeof sent.message.messageID };
      await zim.logout();
      out.afterLogout = await grab(zim.queryRoomOnlineMemberCount('carols'));
      zim.destroy();
      out.afterDestroy = await grab(zim.login({ userID: 'carol' }, 'x'));
      out.states = states;
      out.codes = { NotInRoom: ZIMErrorCode.NotInRoom };
      return out;
    });
    const keys = ['code', 'message'];
    assert.deepEqual(result.beforeLogin, { keys, code: 6000121, message: 'sendPeerMessage needs a login: call login first' });
    assert.equal(result.wrongToken.code, 6000101);
    assert.deepEqual(result.wrongToken.keys, keys);
    assert.equal(result.connected, true);
    assert.equal(result.noRoom.code, 6000301);
    assert.equal(result.joinMissing.code, 6000304);
    assert.equal(result.badUser.code, 6000001);
    assert.match(result.badUser.message, /toUserID/);
    assert.equal(result.notInRoom.code, result.codes.NotInRoom);
    assert.equal(result.notInRoom.code, 6000205);
    assert.equal(result.exists.code, 6000311);
    for (const e of [result.noRoom, result.joinMissing, result.notInRoom, result.exists]) {
      assert.deepEqual(e.keys, keys);
      assert.ok(e.message.length > 0);
    }
    assert.deepEqual(result.sent, { type: 1, text: 'hello dave', seq: 1, id: 'number' });
    assert.equal(result.afterLogout.code, 6000121);
    assert.equal(result.afterDestroy.code, 6000002);
    // Connecting, Disconnected (refused), Connecting, Connected, Disconnected (logout).
    assert.deepEqual(result.states, [1, 0, 1, 2, 0]);
  } finally {
    await context.close();
  }
});

test('token lifecycle against the server: tokenWillExpire, renewToken, an expired token refused', STEP, async () => {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.goto(server.url + '/healthz');
    const result = await page.evaluate(async () => {
      const { ZIM } = await import('/sdk/zim.js');
      const { appID } = await (await fetch('/dev/app')).json();
      const tokenFor = async (userID, seconds) => {
        const r = await fetch('/dev/token', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ userID, effectiveTimeInSeconds: seconds }),
        });
        return (await r.json()).token;
      };
      const out = {};
      const zim = ZIM.create({ appID });
      // 1 s of validity: expired by the time it is used.
      const stale = await tokenFor('erin', 1);
      await new Promise((r) => setTimeout(r, 1500));
      try {
        await zim.login({ userID: 'erin' }, stale);
      } catch (e) {
        out.expired = { code: e.code, message: e.message };
      }
      // 32 s: the server warns 30 s before expiry, so at once.
      const warned = new Promise((resolve) => zim.on('tokenWillExpire', (_z, data) => resolve(data)));
      await zim.login({ userID: 'erin' }, await tokenFor('erin', 32));
      out.warning = await Promise.race([warned, new Promise((r) => setTimeout(() => r('no warning within 8 s'), 8000))]);
      const fresh = await tokenFor('erin', 600);
      const renewed = await zim.renewToken(fresh);
      out.renewed = renewed.token === fresh && renewed.tokenExpire > Date.now() / 1000 + 500;
      out.count = await zim.queryRoomOnlineMemberCount('none').catch((e) => e.code);
      await zim.logout();
      zim.destroy();
      return out;
    });
    assert.equal(result.expired.code, 6000106);
    assert.equal(typeof result.warning, 'object', String(result.warning));
    assert.ok(result.warning.second > 0 && result.warning.second <= 32, JSON.stringify(result.warning));
    assert.equal(result.renewed, true);
    assert.equal(result.count, 6000301, 'the session still answers after the renewal');
  } finally {
    await context.close();
  }
});
