// The switchboard demo page: plain DOM and socket.io-client, nothing else
// (and, for the shared notes in editor.js, Yjs and its y-socket.io provider).
// The events are those of the README's "A tour of the events". Everything a
// user wrote is put on the page as text (textContent), never as markup.
import { io } from "socket.io-client";
import { openEditor } from "./editor.js";

const params = new URLSearchParams(location.search);
// The server: the origin that served this page (--static-dir), or ?server=.
const SERVER = params.get("server") || location.origin;
// Messages per history page; ?page=3 makes "load older" easy to try.
const PAGE = Math.min(Math.max(Number(params.get("page")) || 30, 1), 100);
// The Yjs document of the shared notes; ?doc= opens another one.
const DOC = params.get("doc") || "demo";
const ACK_TIMEOUT_MS = 5000;
// The server drops a typing:start after 6 s unless refreshed.
const TYPING_REFRESH_MS = 3000;
const TYPING_IDLE_MS = 4000;
const NOTICE_MS = 8000;

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};

// What survives a reload of this tab: the token and the rooms. Per tab
// (sessionStorage), so two tabs can be two users.
const STORE_KEY = "switchboard-demo";
const saved = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");

let socket = null;
let editor = null; // the shared notes, open while signed in
let me = null; // { token, userId, name, minted } (minted: signed in by name, can mint again)
let current = null; // the room on screen
const rooms = new Map(); // roomId -> { id, messages: Map(seq -> msg), more, members, typing: Map(userId -> name), unread }
const dms = new Map(); // message id -> private message

// ---- signing in -----------------------------------------------------------

$("signin-name").addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = $("name").value.trim();
  try {
    start({ token: await mintToken(name, name), minted: true });
  } catch (err) {
    signinError(err.message);
  }
});

$("signin-token").addEventListener("submit", (e) => {
  e.preventDefault();
  try {
    start({ token: $("token").value.trim(), minted: false });
  } catch (err) {
    signinError(err.message);
  }
});

$("sign-out").addEventListener("click", () => signOut());

async function mintToken(sub, name) {
  const res = await fetch(`${SERVER}/dev/token`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ sub, name }),
  });
  if (res.status === 404) throw new Error("This server is not in dev mode: paste a token instead.");
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(`${body.error || res.statusText} (${body.code || res.status})`);
  return body.token;
}

// Only to show who you are and which messages are yours: the server checks
// the token, the page just reads it.
function claims(token) {
  const part = token.split(".")[1];
  if (!part) throw new Error("That is not a JWT (header.payload.signature).");
  const bytes = Uint8Array.from(atob(part.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

function start(session, roomIds = [], room = null) {
  const c = claims(session.token);
  me = { token: session.token, minted: session.minted, userId: c.sub, name: c.name || c.sub };
  for (const id of roomIds) rooms.set(id, newRoom(id));
  current = room ?? roomIds[0] ?? null;
  persist();
  $("signin").hidden = true;
  $("signin-error").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  $("whoami").hidden = false;
  $("conn-state").hidden = false;
  $("whoami").textContent = me.name === me.userId ? me.name : `${me.name} (${me.userId})`;
  render();
  connect();
  editor?.close();
  editor = openEditor({ server: SERVER, doc: DOC, token: () => me.token, name: me.name });
  $("editor-doc").textContent = DOC;
}

function signOut(error) {
  stopTyping();
  if (socket) {
    socket.io.off();
    socket.off();
    socket.disconnect();
    socket = null;
  }
  editor?.close();
  editor = null;
  me = null;
  current = null;
  rooms.clear();
  dms.clear();
  sessionStorage.removeItem(STORE_KEY);
  setState("disconnected");
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("whoami").hidden = true;
  $("conn-state").hidden = true; // nothing to connect before signing in
  $("signin").hidden = false;
  if (error) signinError(error);
}

function signinError(text) {
  $("signin-error").textContent = text;
  $("signin-error").hidden = false;
}

function persist() {
  const value = { token: me.token, minted: me.minted, rooms: [...rooms.keys()], current };
  sessionStorage.setItem(STORE_KEY, JSON.stringify(value));
}

// ---- the connection -------------------------------------------------------

let remintedAfterRefusal = false;

function connect() {
  setState("connecting");
  // auth as a function: a reconnect sends the token as refreshed since.
  socket = io(SERVER, { auth: (cb) => cb({ token: me.token }) });

  socket.on("connect", async () => {
    setState("connected");
    remintedAfterRefusal = false;
    // The server forgets a socket's rooms when it goes: join them again and
    // fetch what was said meanwhile.
    for (const id of [...rooms.keys()]) await enter(id);
    render();
  });
  socket.on("disconnect", () => setState(socket?.active ? "reconnecting" : "disconnected"));
  socket.io.on("reconnect_attempt", () => setState("reconnecting"));
  socket.on("connect_error", async (err) => {
    if (socket.active) return setState("reconnecting"); // the client retries by itself
    // Refused: a bad or expired token, or one from before a restart (dev mode
    // makes up a new secret each time). A name sign-in just mints again, once.
    if (me.minted && !remintedAfterRefusal) {
      remintedAfterRefusal = true;
      try {
        const token = await mintToken(me.userId, me.name);
        if (!socket) return; // signed out meanwhile
        me.token = token;
        persist();
        editor?.tokenChanged();
        return socket.connect();
      } catch {
        // fall through to signing out
      }
    }
    signOut(`The server refused the token: ${err.message}`);
  });
  socket.on("server:closing", ({ reason }) => notice(`The server is closing this connection: ${reason}`));
  socket.on("auth:expiring", refreshToken);

  socket.on("chat:message", (m) => {
    const room = rooms.get(m.roomId);
    if (!room) return;
    room.messages.set(m.seq, m);
    room.typing.delete(m.senderId);
    if (m.roomId !== current) room.unread++;
    render();
  });
  socket.on("private:message", (m) => {
    dms.set(m.id, m);
    renderDms();
  });
  socket.on("typing:user", ({ userId, username, roomId }) => {
    rooms.get(roomId)?.typing.set(userId, username);
    renderTyping();
  });
  socket.on("typing:stopped", ({ userId, roomId }) => {
    rooms.get(roomId)?.typing.delete(userId);
    renderTyping();
  });
  socket.on("room:user-joined", ({ roomId }) => refreshMembers(roomId));
  socket.on("room:user-left", ({ userId, roomId }) => {
    rooms.get(roomId)?.typing.delete(userId);
    refreshMembers(roomId);
  });
}

function setState(state) {
  const labels = { connecting: "connecting…", connected: "connected", reconnecting: "reconnecting…", disconnected: "disconnected" };
  $("conn-state").textContent = labels[state];
  $("conn-state").className = `state ${state}`;
}

// An event with an ack: the ack, or null after telling the user what failed
// (an error ack's text and code, or no answer in time).
async function ask(event, payload, what) {
  try {
    const ack = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, payload);
    if (ack?.success === false) {
      notice(`${what}: ${ack.error} (${ack.code})`);
      return null;
    }
    return ack;
  } catch {
    notice(`${what}: no answer from the server`);
    return null;
  }
}

async function refreshToken() {
  if (!me?.minted) return notice("Your token expires soon: sign in again with a fresh one.");
  try {
    const token = await mintToken(me.userId, me.name);
    if (await ask("auth:refresh", { token }, "Token refresh")) {
      me.token = token;
      persist();
      editor?.tokenChanged();
    }
  } catch (err) {
    notice(`Token refresh: ${err.message}`);
  }
}

// An id per send: a retry with the same id would be stored once.
const clientMsgId = () => `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;

// ---- rooms ----------------------------------------------------------------

function newRoom(id) {
  return { id, messages: new Map(), more: false, members: [], typing: new Map(), unread: 0 };
}

// Joins `id` and loads its latest history, walking back until it meets what
// the page already has (after a reconnect) or one page for a fresh room.
async function enter(id) {
  const joined = await ask("room:join", id, `Joining ${id}`);
  if (!joined || !socket) return false;
  const room = rooms.get(id) ?? newRoom(id);
  rooms.set(id, room);
  room.members = joined.members;
  const fresh = room.messages.size === 0;
  let before;
  for (;;) {
    const h = await ask("chat:history", { roomId: id, limit: PAGE, ...(before && { before }) }, `History of ${id}`);
    if (!h) break;
    const known = h.messages.some((m) => room.messages.has(m.seq));
    for (const m of h.messages) room.messages.set(m.seq, m);
    if (fresh) room.more = h.messages.length === PAGE;
    if (fresh || known || h.messages.length < PAGE) break;
    before = h.messages[0].seq;
  }
  return true;
}

$("join-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const id = $("room-input").value.trim();
  if (rooms.has(id) || (await enter(id))) {
    $("room-input").value = "";
    select(id);
  }
});

async function leaveRoom(id) {
  const ack = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck("room:leave", id).catch(() => null);
  // not_in_room: the server has already forgotten it; the page does too.
  if (ack?.success === false && ack.code !== "not_in_room") return notice(`Leaving ${id}: ${ack.error} (${ack.code})`);
  if (!ack) return notice(`Leaving ${id}: no answer from the server`);
  rooms.delete(id);
  if (current === id) current = rooms.keys().next().value ?? null;
  persist();
  render();
}

function select(id) {
  if (current !== id) stopTyping();
  current = id;
  rooms.get(id).unread = 0;
  persist();
  render();
  $("message-input").focus();
}

async function refreshMembers(id) {
  const ack = await ask("room:members", id, `Members of ${id}`);
  if (ack && rooms.has(id)) {
    rooms.get(id).members = ack.members;
    renderMembers();
  }
}

$("load-older").addEventListener("click", async () => {
  const room = rooms.get(current);
  if (!room || room.messages.size === 0) return;
  const before = Math.min(...room.messages.keys());
  const h = await ask("chat:history", { roomId: room.id, before, limit: PAGE }, "Older messages");
  if (!h) return;
  for (const m of h.messages) room.messages.set(m.seq, m);
  room.more = h.messages.length === PAGE;
  renderRoom({ keepPosition: true });
});

// ---- sending --------------------------------------------------------------

// The server, not the page, decides what is too long or empty: its error ack
// is shown, and the text stays in the box to be fixed.
$("send-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("message-input");
  const content = input.value;
  typingRoom = null; // the server ends the indicator when the message lands
  clearTimeout(typingIdle);
  const ack = await ask("chat:send", { roomId: current, content, clientMsgId: clientMsgId() }, "Message not sent");
  if (ack && input.value === content) input.value = "";
});

$("dm-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const toUserId = $("dm-to").value.trim();
  const content = $("dm-input").value;
  const ack = await ask("private:send", { toUserId, content, clientMsgId: clientMsgId() }, "Private message not sent");
  if (!ack) return;
  // The server sends private:message to the recipient and to the sender's
  // other tabs, not back to this one: show it from the ack.
  dms.set(ack.messageId, { id: ack.messageId, senderId: me.userId, senderName: me.name, toUserId, content, timestamp: Date.now() });
  $("dm-input").value = "";
  renderDms();
});

// Typing: start once, refresh while typing goes on, stop when idle.
let typingRoom = null;
let typingSentAt = 0;
let typingIdle;

$("message-input").addEventListener("input", () => {
  if (!current || !socket?.connected) return;
  if ($("message-input").value === "") return stopTyping();
  if (typingRoom !== current || Date.now() - typingSentAt > TYPING_REFRESH_MS) {
    socket.emit("typing:start", current);
    typingRoom = current;
    typingSentAt = Date.now();
  }
  clearTimeout(typingIdle);
  typingIdle = setTimeout(stopTyping, TYPING_IDLE_MS);
});

function stopTyping() {
  clearTimeout(typingIdle);
  if (typingRoom && socket?.connected) socket.emit("typing:stop", typingRoom);
  typingRoom = null;
}

// ---- showing --------------------------------------------------------------

let noticeTimer;
function notice(text) {
  $("notice").textContent = text;
  $("notice").hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => ($("notice").hidden = true), NOTICE_MS);
}
$("notice").addEventListener("click", () => ($("notice").hidden = true));

function render() {
  renderRooms();
  renderRoom();
  renderMembers();
  renderDms();
}

function renderRooms() {
  $("rooms").replaceChildren(
    ...[...rooms.values()].map((r) => {
      const open = el("button", { type: "button", className: "room", onclick: () => select(r.id) }, `# ${r.id}`);
      if (r.unread) open.append(el("span", { className: "badge", title: "unread" }, String(r.unread)));
      const leave = el("button", { type: "button", className: "leave", title: `Leave ${r.id}`, onclick: () => leaveRoom(r.id) }, "Leave");
      return el("li", { className: r.id === current ? "current" : "" }, open, leave);
    }),
  );
}

function renderRoom({ keepPosition = false } = {}) {
  const room = rooms.get(current);
  $("room-title").textContent = room ? `# ${room.id}` : "No room yet: join one";
  $("load-older").hidden = !room?.more;
  for (const c of $("send-form").elements) c.disabled = !room;
  const list = $("messages");
  const switched = list.dataset.room !== (current ?? "");
  list.dataset.room = current ?? "";
  const fromBottom = list.scrollHeight - list.scrollTop;
  const messages = room ? [...room.messages.values()].sort((a, b) => a.seq - b.seq) : [];
  list.replaceChildren(...messages.map(messageItem));
  if (room && messages.length === 0) list.append(el("li", { className: "empty" }, "No messages yet. Say hi!"));
  // Older messages go on top without moving what the reader is looking at;
  // new ones scroll into view if the reader was at the bottom.
  if (keepPosition) list.scrollTop = list.scrollHeight - fromBottom;
  else if (atBottom || switched) list.scrollTop = list.scrollHeight;
  renderTyping();
}

// Whether the reader is at the newest message, as of their last scroll: the
// list also gets shorter without scrolling (a notice above it), and the
// reader who was at the bottom still is.
let atBottom = true;
$("messages").addEventListener("scroll", () => {
  const list = $("messages");
  atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
});

function messageItem(m) {
  const when = new Date(m.timestamp);
  return el(
    "li",
    { className: m.senderId === me?.userId ? "mine" : "" },
    el("span", { className: "who", title: m.senderId }, m.senderName),
    el("time", { dateTime: when.toISOString(), title: when.toLocaleString() }, clock(when)),
    el("p", { className: "text" }, m.content),
  );
}

const clock = (d) => d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

function renderTyping() {
  const names = [...(rooms.get(current)?.typing.values() ?? [])];
  $("typing").textContent =
    names.length === 0 ? "" :
    names.length === 1 ? `${names[0]} is typing…` :
    names.length === 2 ? `${names[0]} and ${names[1]} are typing…` :
    `${names.length} people are typing…`;
}

function renderMembers() {
  const members = rooms.get(current)?.members ?? [];
  $("members").replaceChildren(
    ...members.map((m) => {
      const you = m.userId === me?.userId;
      const li = el("li", { title: "click to write privately", onclick: () => ($("dm-to").value = m.userId) }, el("span", { className: "dot" }), m.username);
      // The id matters for private messages: shown when it is not the name.
      const notes = [m.userId !== m.username && m.userId, you && "you", m.connections > 1 && `${m.connections} tabs`];
      const note = notes.filter(Boolean).join(" · ");
      if (note) li.append(el("small", {}, ` ${note}`));
      return li;
    }),
  );
}

function renderDms() {
  const list = [...dms.values()].sort((a, b) => a.timestamp - b.timestamp);
  $("dms").replaceChildren(
    ...list.map((m) => {
      const mine = m.senderId === me?.userId;
      const head = mine ? `to ${m.toUserId}` : `from ${m.senderName}`;
      // Clicking a message from someone fills in the reply's recipient.
      const onclick = () => ($("dm-to").value = mine ? m.toUserId : m.senderId);
      return el(
        "li",
        { className: mine ? "mine" : "", onclick },
        el("span", { className: "who" }, head),
        el("time", { dateTime: new Date(m.timestamp).toISOString() }, clock(new Date(m.timestamp))),
        el("p", { className: "text" }, m.content),
      );
    }),
  );
}

// ---- back after a reload --------------------------------------------------

if (saved) {
  try {
    start(saved, saved.rooms, saved.current);
  } catch {
    signOut();
  }
}
