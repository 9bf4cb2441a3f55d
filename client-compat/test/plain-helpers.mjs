// What the plain-WebSocket tests share (docs/protocol.md §19): a client
// shaped like the browser's `WebSocket` (the `ws` package: `new
// WebSocket(url)`, one JSON object per text message) that keeps every
// message it got, and Socket.IO clients to put beside it.
import assert from "node:assert/strict";
import WebSocket from "ws";
import { io } from "socket.io-client";
import { token } from "./server.mjs";

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export async function until(cond, ms = 5000) {
  const by = Date.now() + ms;
  while (!(await cond()) && Date.now() < by) await sleep(20);
  return cond();
}

export const API_KEY = "plain-ws-test-api-key-0123456789";
export const ULID = /^[0-9A-Z]{26}$/;

const tokens = new Map();
/** A token for `sub` (name: `sub` upper-cased), minted once per user. */
export function tokenOf(sub) {
  if (!tokens.has(sub)) tokens.set(sub, token(sub));
  return tokens.get(sub);
}

/** The claims of a JWT (no check). */
export function claims(jwt) {
  return JSON.parse(Buffer.from(jwt.split(".")[1], "base64url").toString());
}

/** `ws://…/ws?k=v…` for the server at `url` (http://…). */
export function wsUrl(url, query = {}) {
  const u = new URL("/ws", url.replace(/^http/, "ws"));
  for (const [k, v] of Object.entries(query)) u.searchParams.set(k, v);
  return u.toString();
}

const plains = [];
const sios = [];

/** Ends every client the helpers opened (plain and Socket.IO). */
export function closeClients() {
  for (const c of plains.splice(0)) c.ws.terminate();
  for (const s of sios.splice(0)) s.close();
}

/**
 * A plain websocket to `/ws` with `query` (`{ token }`, `{ namespace }`…) and
 * `opts` for `ws` (`headers`, `autoPong`…). The returned client:
 *
 * * `msgs`: every message it got, parsed (a message that is not JSON is
 *   `{ type: "<not json>", raw }`); `binary`: how many came as binary;
 * * `send(obj)` / `sendRaw(data)`;
 * * `nextOf(type, pred, ms)`: the first message of `type` (or of one of
 *   several types, an array) matching `pred`
 *   not taken by an earlier `nextOf` (one that already came counts), or a
 *   rejection after `ms` or as soon as the socket closes;
 * * `request(msg, ms)`: sends `msg` with a fresh numeric `id`, resolves with
 *   the `ack` or `error` carrying that id;
 * * `none(type, pred, ms, from)`: resolves after `ms` if no such message came
 *   since index `from` (default: now), else rejects;
 * * `opened` (rejects if it closes first), `closed` ({ code, reason }),
 *   `closeInfo` once closed, `error` (the last `ws` error), `pings`.
 */
export function plainClient(url, query = {}, opts = {}) {
  const ws = new WebSocket(wsUrl(url, query), opts);
  const c = { ws, msgs: [], binary: 0, pings: 0, taken: new Set(), waiters: new Set(), nextId: 1, closeInfo: null, error: null };
  plains.push(c);
  const wake = () => [...c.waiters].forEach((w) => w());
  ws.on("message", (data, isBinary) => {
    if (isBinary) c.binary++;
    let m;
    try {
      m = JSON.parse(data.toString());
    } catch {
      m = { type: "<not json>", raw: data.toString() };
    }
    c.msgs.push(m);
    wake();
  });
  ws.on("ping", () => c.pings++);
  ws.on("error", (e) => (c.error = e));
  c.opened = new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("close", (code, reason) => reject(new Error(`closed before it opened: ${code} ${reason} ${c.error?.message ?? ""}`)));
  });
  c.opened.catch(() => {});
  c.closed = new Promise((resolve) =>
    ws.once("close", (code, reason) => {
      c.closeInfo = { code, reason: reason.toString() };
      resolve(c.closeInfo);
      wake();
    }),
  );
  c.send = (obj) => ws.send(JSON.stringify(obj));
  c.sendRaw = (data, options) => ws.send(data, options);
  c.summary = () => JSON.stringify(c.msgs).slice(-1500);
  c.nextOf = (type, pred = () => true, ms = 5000) =>
    new Promise((resolve, reject) => {
      const types = [type].flat();
      const check = () => {
        const i = c.msgs.findIndex((m, i) => !c.taken.has(i) && types.includes(m.type) && pred(m));
        if (i >= 0) {
          c.taken.add(i);
          done();
          resolve(c.msgs[i]);
        } else if (c.closeInfo) {
          done();
          reject(new Error(`closed (${c.closeInfo.code} ${c.closeInfo.reason}) before a ${type} came; it got ${c.summary()}`));
        }
      };
      const done = () => {
        clearTimeout(timer);
        c.waiters.delete(check);
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no ${type} within ${ms} ms; it got ${c.summary()}`));
      }, ms);
      c.waiters.add(check);
      check();
    });
  c.request = (msg, ms = 5000) => {
    const id = c.nextId++;
    c.send({ ...msg, id });
    return c.nextOf(["ack", "error"], (m) => m.id === id, ms);
  };
  c.mark = () => c.msgs.length;
  c.none = async (type, pred = () => true, ms = 300, from = c.msgs.length) => {
    await sleep(ms);
    const m = c.msgs.slice(from).find((m) => m.type === type && pred(m));
    if (m) throw new Error(`unexpected ${type}: ${JSON.stringify(m)}`);
    return true;
  };
  c.isOpen = () => ws.readyState === WebSocket.OPEN;
  return c;
}

/** Resolves with how `c` closed, or `{ code: "still open" }` after `ms` (its timer cleared either way). */
export function closedWithin(c, ms) {
  let timer;
  const open = new Promise((r) => (timer = setTimeout(() => r({ code: "still open" }), ms)));
  return Promise.race([c.closed, open]).finally(() => clearTimeout(timer));
}

/**
 * A plain client as `sub` (`?token=` unless `query` has other ideas), once
 * it got `connected`; checks that `connected` came first and names `sub`.
 */
export async function plain(url, sub, query = {}, opts = {}) {
  const c = plainClient(url, { token: tokenOf(sub), ...query }, opts);
  const hello = await c.nextOf("connected");
  assert.equal(c.msgs[0].type, "connected", `the first message: ${c.summary()}`);
  assert.equal(hello.userId, sub);
  c.sub = sub;
  return c;
}

/** Joins `roomId` with a `join_room` request; returns its ack. */
export async function joinPlain(c, roomId) {
  const a = await c.request({ type: "join_room", roomId });
  assert.equal(a.type, "ack", JSON.stringify(a));
  assert.equal(a.success, true, JSON.stringify(a));
  assert.equal(a.roomId, roomId);
  return a;
}

/** A socket.io-client 4.8 socket as `sub` (websocket only, no reconnection), once connected. */
export async function sio(url, sub, opts = {}) {
  const s = io(url, { auth: { token: tokenOf(sub) }, transports: ["websocket"], reconnection: false, forceNew: true, ...opts });
  sios.push(s);
  await new Promise((resolve, reject) => {
    s.once("connect", resolve);
    s.once("connect_error", reject);
  });
  return s;
}

/** Joins `roomId` over Socket.IO; returns the ack. */
export async function joinSio(s, roomId) {
  const a = await s.timeout(5000).emitWithAck("room:join", roomId);
  assert.equal(a.success, true, JSON.stringify(a));
  return a;
}

/** The next `event` on Socket.IO socket `s` whose payload matches `pred`, or a rejection after `ms`. */
export function nextWhere(s, event, pred = () => true, ms = 5000) {
  return new Promise((resolve, reject) => {
    const on = (data) => {
      if (!pred(data)) return;
      clearTimeout(timer);
      s.off(event, on);
      resolve(data);
    };
    const timer = setTimeout(() => {
      s.off(event, on);
      reject(new Error(`no matching ${event} within ${ms} ms`));
    }, ms);
    s.on(event, on);
  });
}

/** Every `event` a Socket.IO socket gets from now on. */
export function collect(s, event) {
  const got = [];
  s.on(event, (data) => got.push(data));
  return got;
}

/** POST to the backend API of the server at `url`. */
export async function api(url, path, body) {
  const r = await fetch(`${url}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: r.status, body: await r.json().catch(() => null) };
}

/** The room_msg fields of a Socket.IO message object, for comparing. */
export const fromSio = (m) => ({ roomId: m.roomId, id: m.id, seq: m.seq, from: m.senderId, fromName: m.senderName, content: m.content, time: m.timestamp });
/** The same fields of a plain room_msg (or history entry). */
export const fromPlain = (m) => ({ roomId: m.roomId, id: m.id, seq: m.seq, from: m.from, fromName: m.fromName, content: m.content, time: m.time });
