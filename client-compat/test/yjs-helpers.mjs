// What the Yjs tests share: real providers of both kinds (y-socket.io's
// SocketIOProvider, y-websocket's WebsocketProvider over `ws`), raw
// websockets, hand-made messages, and one clean-up for all of them.
import assert from "node:assert/strict";
import * as Y from "yjs";
import { SocketIOProvider } from "y-socket.io";
import { WebsocketProvider } from "y-websocket";
import WebSocket from "ws";
import * as bc from "lib0/broadcastchannel";
import { token, startServer, freshPgDatabase } from "./server.mjs";

export const PG = process.env.SWITCHBOARD_TEST_POSTGRES_URL;
export const REDIS = process.env.SWITCHBOARD_TEST_REDIS;
export const CI = process.env.CI === "true";
export const YJS = [];
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export async function until(cond, ms = 10000) {
  const by = Date.now() + ms;
  while (!(await cond()) && Date.now() < by) await sleep(25);
  return cond();
}

export const providers = [];
export const wsProviders = [];
export const raws = [];
/** Ends every provider and raw socket (a provider's destroy() leaves a
 * socket that is reconnecting to a stopped server running for good). */
export function closeAll() {
  for (const p of providers.splice(0)) {
    p.destroy();
    p.socket.io.reconnection(false);
    p.socket.disconnect();
    // destroy() publishes a goodbye on lib0's BroadcastChannel even with
    // disableBc, which opens a channel that keeps Node running: closed by
    // its last unsubscribe.
    const none = () => {};
    bc.subscribe(p.broadcastChannel, none);
    bc.unsubscribe(p.broadcastChannel, none);
  }
  for (const p of wsProviders.splice(0)) {
    p.destroy();
    p.awareness.destroy();
  }
  raws.splice(0).forEach((s) => s.close());
}

/** A provider for `doc` as `sub`; resolves once synced. */
export async function editor(url, doc, sub, tok = token(sub)) {
  const ydoc = new Y.Doc();
  const p = new SocketIOProvider(url, doc, ydoc, { auth: { token: tok }, disableBc: true });
  providers.push(p);
  assert.ok(await until(() => p.synced, 10000), `${sub} synced to ${doc}`);
  return { p, ydoc, text: ydoc.getText("t") };
}

/** lib0's varuint. */
export function varuint(n) {
  const out = [];
  while (n >= 0x80) {
    out.push((n % 128) + 0x80); // not bitwise: ids go past 32 bits
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

/** An awareness update by hand: [[clientId, clock, state-or-JSON-text], ...]. */
export function awarenessBytes(entries) {
  const out = [...varuint(entries.length)];
  for (const [id, clock, state] of entries) {
    const json = new TextEncoder().encode(typeof state === "string" ? state : JSON.stringify(state));
    out.push(...varuint(id), ...varuint(clock), ...varuint(json.length), ...json);
  }
  return Uint8Array.from(out);
}

export const wsUrl = (url) => `${url.replace(/^http/, "ws")}/yjs`;

/** A y-websocket provider for `doc` as `sub`; resolves once synced. */
export async function wsEditor(url, doc, sub, tok = token(sub)) {
  const ydoc = new Y.Doc();
  const p = new WebsocketProvider(wsUrl(url), doc, ydoc, { params: { token: tok }, WebSocketPolyfill: WebSocket, disableBc: true });
  wsProviders.push(p);
  assert.ok(await until(() => p.synced, 10000), `${sub} synced to ${doc} over y-websocket`);
  return { p, ydoc, text: ydoc.getText("t") };
}

/** A raw websocket to `/yjs/<doc>`: its messages, and how it closed. */
export function rawWs(url, doc, query = "") {
  const ws = new WebSocket(`${wsUrl(url)}/${encodeURIComponent(doc)}${query}`);
  ws.binaryType = "nodebuffer";
  raws.push(ws);
  const got = [];
  ws.on("message", (m) => got.push(new Uint8Array(m)));
  ws.on("error", () => {});
  const closed = new Promise((r) => ws.on("close", (code, reason) => r({ code, reason: reason.toString() })));
  const open = new Promise((r) => ws.on("open", r));
  return { ws, got, closed, open };
}

/** Two nodes sharing a fresh PostgreSQL database and Redis (a prefix of
 * their own); `extra` for both, `extraA` for the first only. `stop()` ends
 * them and drops the database. */
export async function twoNodes(name, extra = [], extraA = []) {
  assert.ok(PG && REDIS, "CI=true, but SWITCHBOARD_TEST_POSTGRES_URL or SWITCHBOARD_TEST_REDIS is not set");
  const db = freshPgDatabase(PG, name);
  const redisUrl = /^rediss?:\/\//.test(REDIS) ? REDIS : `redis://${REDIS}`;
  const args = [...YJS, "--redis-url", redisUrl, "--redis-prefix", `${name}-${process.pid}-${Date.now()}`, ...extra];
  const nodes = [await startServer(undefined, db.url, [...args, ...extraA]), await startServer(undefined, db.url, args)];
  nodes.stop = async () => {
    closeAll();
    await Promise.all(nodes.map((n) => n.stop()));
    try {
      db.drop();
    } catch {}
  };
  return nodes;
}
