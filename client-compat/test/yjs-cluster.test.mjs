// Yjs on two nodes sharing PostgreSQL and Redis, through both providers:
// edits and cursors cross nodes, a late joiner loads everything, a node
// whose relay dropped messages catches up from the store.
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";
import WebSocket from "ws";
import { io, Manager } from "socket.io-client";
import { startServer, token, tempDb, freePort, metric, freshPgDatabase } from "./server.mjs";
import { PG, REDIS, CI, YJS, sleep, until, closeAll, editor, wsEditor, rawWs, wsUrl, varuint, awarenessBytes, raws, wsProviders, twoNodes } from "./yjs-helpers.mjs";

after(closeAll);

describe("yjs on two nodes (PostgreSQL + Redis)", { skip: PG && REDIS ? false : CI ? false : "set SWITCHBOARD_TEST_POSTGRES_URL and SWITCHBOARD_TEST_REDIS (scripts/services.sh does)" }, () => {
  it("an edit on one node reaches a client on the other, and a client joining later loads it all", async () => {
    const nodes = await twoNodes("yjs_cluster");
    try {
      const a = await editor(nodes[0].url, "shared", "alice");
      const b = await editor(nodes[1].url, "shared", "bob");
      // y-websocket on both nodes too: they hear the others only through the relay.
      const aw = await wsEditor(nodes[0].url, "shared", "amy");
      const bw = await wsEditor(nodes[1].url, "shared", "ben");
      const all = [a, b, aw, bw];
      const agree = (want) => until(() => all.every((e) => e.text.toString() === want));
      const texts = () => all.map((e) => JSON.stringify(e.text.toString())).join(" | ");
      a.text.insert(0, "from A ");
      assert.ok(await agree("from A "), texts());
      b.text.insert(b.text.length, "and B");
      assert.ok(await agree("from A and B"), texts());
      bw.text.insert(0, "[ws B] ");
      assert.ok(await agree("[ws B] from A and B"), texts());
      // Cursors cross nodes and providers.
      bw.p.awareness.setLocalStateField("user", "ben");
      assert.ok(await until(() => [...a.p.awareness.getStates().values()].some((st) => st.user === "ben")), "ben's cursor reaches alice on the other node");
      // Node B already holds the document: a newcomer there gets A's later edits too.
      aw.text.insert(0, ">> ");
      const c = await editor(nodes[1].url, "shared", "carol");
      const d = await wsEditor(nodes[1].url, "shared", "dave");
      const want = ">> [ws B] from A and B";
      assert.ok(await until(() => c.text.toString() === want && d.text.toString() === want), `C has ${JSON.stringify(c.text.toString())}, D ${JSON.stringify(d.text.toString())}`);
    } finally {
      await nodes.stop();
    }
  });

  it("a node that missed relayed updates (a full queue to Redis) reads the store's tail and sends it to its clients", async () => {
    // Node A's queue to Redis holds one message: a burst loses most.
    const nodes = await twoNodes("yjs_gaps", [], ["--max-redis-queue-bytes", "1", "--events-per-sec", "1000", "--event-burst", "1000"]);
    try {
      const a = await editor(nodes[0].url, "gaps", "alice");
      const b = await editor(nodes[1].url, "gaps", "bob");
      const bw = await wsEditor(nodes[1].url, "gaps", "ben");
      for (let i = 0; i < 200; i++) a.text.insert(a.text.length, String(i % 10));
      assert.ok(await until(async () => (await metric(nodes[0].url, 'switchboard_redis_dropped_total{path="yjs",reason="queue_full"}')) > 0, 5000), "some relayed updates were dropped");
      await sleep(500);
      // One more, alone: it goes, and its seq shows node B the gap.
      a.text.insert(a.text.length, "!");
      const want = a.text.toString();
      assert.ok(await until(() => b.text.toString() === want && bw.text.toString() === want, 10000), `B's clients have ${b.text.length} and ${bw.text.length} of ${want.length} characters`);
    } finally {
      await nodes.stop();
    }
  });
});
