// examples/embed.rs: an application's own route uses the Hub to reach sockets.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { io } from "socket.io-client";
import { BIN, freePort, next } from "./server.mjs";

const EMBED = path.join(path.dirname(BIN), "examples", "embed");

describe("examples/embed", () => {
  let child, url, tok;
  const sockets = [];
  before(async () => {
    const port = await freePort();
    child = spawn(EMBED, ["--port", String(port)], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    tok = await new Promise((resolve, reject) => {
      child.stdout.on("data", (d) => {
        out += d;
        const m = out.match(/token for alice: (\S+)/);
        if (m) resolve(m[1]);
      });
      child.once("exit", (c) => reject(new Error(`embed exited ${c}`)));
    });
    url = `http://127.0.0.1:${port}`;
  });
  after(() => {
    sockets.forEach((s) => s.close());
    child.kill("SIGTERM");
  });

  it("POST /orders notifies the buyer (with ack) and the orders room", async () => {
    const alice = io(url, { auth: { token: tok }, transports: ["websocket"] });
    sockets.push(alice);
    await next(alice, "connect");
    await alice.emitWithAck("room:join", "orders");
    alice.on("order:created", (order, ack) => ack({ seen: order.orderId }));
    const roomEvent = next(alice, "order:new");
    const chat = next(alice, "chat:message");
    const res = await fetch(`${url}/orders`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ buyerId: "alice", item: "book", quantity: 2 }),
    });
    assert.equal(res.status, 201);
    const body = await res.json();
    assert.equal(body.buyerConfirmed, true);
    assert.deepEqual(body.acks, [{ seen: body.orderId }]);
    assert.equal((await roomEvent).orderId, body.orderId);
    const m = await chat;
    assert.equal(m.senderName, "The Shop");
    assert.equal(m.content, "alice ordered 2 × book");
    // Switchboard's own routes are mounted too.
    assert.equal((await fetch(`${url}/healthz`)).status, 200);
  });
});
