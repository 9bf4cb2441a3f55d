// Seed four, runnable: the toy chat server on the `ws` package that the
// seeds start from, written out for the benchmarks (docs/performance.md,
// "Plain WebSocket clients"). Token in the URL, rooms as a Map of Sets,
// `broadcast` to every open client in the room, the sender included (its
// own copy is what the load generator takes for an ack). Nothing is stored,
// nothing is checked beyond the token. Not a product.
//
//   NODE_PATH=benches/node-reference/node_modules PORT=3200 JWT_SECRET=... node benches/seed-ws/server.js
const http = require("http");
const WebSocket = require("ws");
const jwt = require("jsonwebtoken");

const PORT = Number(process.env.PORT || 3200);
const SECRET = process.env.JWT_SECRET || "bench-secret-bench-secret-bench-secret";

const server = http.createServer();
const wss = new WebSocket.Server({ server });
const rooms = new Map(); // room -> Set of sockets

wss.on("connection", (ws, req) => {
  const token = new URL(req.url, "http://localhost").searchParams.get("token");
  try {
    ws.user = jwt.verify(token, SECRET, { algorithms: ["HS256"] });
  } catch (err) {
    ws.close(4001, "Unauthorized");
    return;
  }
  ws.rooms = new Set();

  ws.on("message", (data) => {
    const msg = JSON.parse(data);
    switch (msg.type) {
      case "join": {
        if (!rooms.has(msg.room)) rooms.set(msg.room, new Set());
        rooms.get(msg.room).add(ws);
        ws.rooms.add(msg.room);
        break;
      }
      case "leave": {
        rooms.get(msg.room)?.delete(ws);
        ws.rooms.delete(msg.room);
        break;
      }
      case "broadcast": {
        const members = rooms.get(msg.room);
        if (!members) return;
        const out = JSON.stringify({ type: "message", room: msg.room, payload: msg.payload });
        for (const client of members) {
          if (client.readyState === WebSocket.OPEN) client.send(out);
        }
        break;
      }
    }
  });

  ws.on("close", () => {
    for (const room of ws.rooms) {
      const members = rooms.get(room);
      members.delete(ws);
      if (members.size === 0) rooms.delete(room);
    }
  });
});

server.listen(PORT, "127.0.0.1", () => console.log(`seed listening on http://127.0.0.1:${PORT}`));
