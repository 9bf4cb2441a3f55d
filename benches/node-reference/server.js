// The reference: the official Node.js Socket.IO 4.8 server speaking the same
// protocol as switchboard (docs/protocol.md) with the same JWT auth,
// rooms, acks and an in-memory history. Benchmarks only; not a product.
//
//   PORT=3100 JWT_SECRET=... node server.js
import { createServer } from "node:http";
import { Server } from "socket.io";
import jwt from "jsonwebtoken";

const PORT = Number(process.env.PORT || 3100);
const SECRET = process.env.JWT_SECRET || "bench-secret-bench-secret-bench-secret";
const ROOM_ID = /^[A-Za-z0-9_.:@-]{1,128}$/;

const http = createServer();
// RECOVERY=1: connection state recovery (in memory, 2 minutes), with the
// auth middleware run again as switchboard does (the `recovery` scenario).
const recovery = process.env.RECOVERY === "1" ? { connectionStateRecovery: { maxDisconnectionDuration: 2 * 60 * 1000, skipMiddlewares: false } } : {};
const io = new Server(http, { maxHttpBufferSize: 1e6, pingInterval: 25000, pingTimeout: 20000, ...recovery });

io.use((socket, next) => {
  const token = socket.handshake.auth?.token;
  if (typeof token !== "string") return next(new Error("Authentication failed: missing token"));
  try {
    const claims = jwt.verify(token, SECRET, { algorithms: ["HS256"] });
    socket.data.user = { id: claims.sub, name: claims.name || claims.sub };
    next();
  } catch (e) {
    next(new Error(`Authentication failed: ${e.message}`));
  }
});

const history = new Map(); // room -> messages
const presence = new Map(); // room -> Map(user -> count)

function members(room) {
  return [...(presence.get(room) || new Map()).entries()].map(([userId, connections]) => ({ userId, username: userId, connections }));
}

io.on("connection", (socket) => {
  const user = socket.data.user;
  socket.join(`user:${user.id}`);
  const fail = (ack, code, error) => typeof ack === "function" && ack({ success: false, error, code });

  socket.on("room:join", (arg, ack) => {
    const roomId = typeof arg === "string" ? arg : arg?.roomId;
    if (typeof roomId !== "string" || !ROOM_ID.test(roomId)) return fail(ack, "invalid_payload", "bad roomId");
    socket.join(`room:${roomId}`);
    const p = presence.get(roomId) || new Map();
    const n = (p.get(user.id) || 0) + 1;
    p.set(user.id, n);
    presence.set(roomId, p);
    if (n === 1) socket.to(`room:${roomId}`).emit("room:user-joined", { userId: user.id, username: user.name, roomId });
    if (typeof ack === "function") ack({ success: true, roomId, members: members(roomId) });
  });

  socket.on("chat:send", (msg, ack) => {
    const roomId = msg?.roomId;
    if (typeof roomId !== "string" || typeof msg.content !== "string" || !msg.content) return fail(ack, "invalid_payload", "bad payload");
    if (!socket.rooms.has(`room:${roomId}`)) return fail(ack, "not_in_room", "join first");
    const list = history.get(roomId) || [];
    const m = { id: `${Date.now()}-${list.length}`, roomId, senderId: user.id, senderName: user.name, content: msg.content, type: "text", timestamp: Date.now(), seq: list.length + 1 };
    list.push(m);
    history.set(roomId, list);
    io.to(`room:${roomId}`).emit("chat:message", m);
    if (typeof ack === "function") ack({ success: true, messageId: m.id, seq: m.seq });
  });

  socket.on("typing:start", (roomId) => socket.to(`room:${roomId}`).volatile.emit("typing:user", { userId: user.id, username: user.name, roomId }));
  socket.on("typing:stop", (roomId) => socket.to(`room:${roomId}`).volatile.emit("typing:stopped", { userId: user.id, roomId }));
  socket.on("ping", (arg) => socket.emit("pong", { ts: arg?.ts ?? null, serverTs: Date.now() }));

  socket.on("disconnecting", () => {
    for (const r of socket.rooms) {
      if (!r.startsWith("room:")) continue;
      const roomId = r.slice(5);
      const p = presence.get(roomId);
      const n = (p?.get(user.id) || 1) - 1;
      if (n > 0) p.set(user.id, n);
      else {
        p?.delete(user.id);
        socket.to(r).emit("room:user-left", { userId: user.id, roomId });
      }
    }
  });
});

http.listen(PORT, "127.0.0.1", () => console.log(`node reference listening on http://127.0.0.1:${PORT}`));
