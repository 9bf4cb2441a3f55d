// doc-client.mjs: the client side of switchboard's collaborative documents
// (docs/protocol.md, "15. Collaborative documents"), written once so that no
// frontend has to re-derive the rules. Dependency-free ES module: works in
// browsers and in Node, on top of a socket.io-client 4.x socket you create.
//
//   import { io } from "socket.io-client";
//   import { DocClient } from "./doc-client.mjs";
//   const socket = io(url, { auth: { token } });
//   const doc = new DocClient(socket, "notes", {
//     onChange(text, change) { textarea.value = text; },  // remote edits, resets
//     onCursor({ userId, position }) { ... },
//     onError(err) { console.warn(err.code, err.message); },
//   });
//   const { content, version } = await doc.join();
//   doc.insert(0, "Hello");      // applied to doc.text at once, sent in the background
//   doc.delete(0, 1);
//   doc.update("a new value");   // or give the whole new text (a textarea's input event)
//   await doc.flushed();         // everything acked by the server
//   await doc.leave();
//
// Positions and lengths count Unicode scalar values (code points), like the
// server (src/documents/ot.rs): "😀" is one character, "e\u0301" two. A JavaScript
// string index counts UTF-16 units; `scalarLength` and `scalarIndex` convert.
//
// The transform functions are an exact port of src/documents/ot.rs; change both or
// neither.

/** Ops held while an earlier version is missing, before the client re-reads the document instead. */
const MAX_EARLY = 10000;

/** `tie` for {@link transform}: the op being transformed goes after the other (the other was accepted first). */
export const AFTER = "after";
/** `tie` for {@link transform}: the op being transformed goes before the other. */
export const BEFORE = "before";

/**
 * An edit, as on the wire (without `docId`, `version`, `opId`).
 * @typedef {{ type: "insert", position: number, content: string }
 *         | { type: "delete", position: number, length: number }} Op
 */

// True for a UTF-16 high (leading) or low (trailing) surrogate unit.
const isHigh = (c) => c >= 0xd800 && c <= 0xdbff;
const isLow = (c) => c >= 0xdc00 && c <= 0xdfff;
const HAS_SURROGATE = /[\uD800-\uDFFF]/;

/**
 * The number of Unicode scalar values (code points) in `s`. A surrogate pair
 * counts as one; a lone surrogate (not valid Unicode, and refused by
 * {@link DocClient#insert}) counts as one too.
 * @param {string} s
 * @returns {number}
 */
export function scalarLength(s) {
  if (!HAS_SURROGATE.test(s)) return s.length;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    if (isHigh(s.charCodeAt(i)) && i + 1 < s.length && isLow(s.charCodeAt(i + 1))) i++;
    n++;
  }
  return n;
}

/**
 * The UTF-16 index in `s` of scalar value number `pos` (`s.length` when `pos`
 * is the scalar length), or -1 when `pos` is beyond the end.
 * @param {string} s
 * @param {number} pos
 * @returns {number}
 */
export function scalarIndex(s, pos) {
  if (!HAS_SURROGATE.test(s)) return pos <= s.length ? pos : -1;
  let i = 0;
  for (let n = 0; n < pos; n++) {
    if (i >= s.length) return -1;
    if (isHigh(s.charCodeAt(i)) && i + 1 < s.length && isLow(s.charCodeAt(i + 1))) i += 2;
    else i += 1;
  }
  return i;
}

/**
 * Whether `s` is well-formed Unicode (no lone surrogates), so that it can be
 * sent: the server's JSON decoder refuses lone surrogates.
 * @param {string} s
 */
export function isWellFormed(s) {
  if (!HAS_SURROGATE.test(s)) return true;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (isHigh(c)) {
      if (i + 1 < s.length && isLow(s.charCodeAt(i + 1))) i++;
      else return false;
    } else if (isLow(c)) return false;
  }
  return true;
}

/**
 * Whether applying `op` changes nothing (an empty insert, a zero-length delete).
 * @param {Op} op
 */
export function isNoop(op) {
  return op.type === "insert" ? op.content === "" : op.length === 0;
}

/**
 * `text` with `op` applied. Throws a RangeError when `op` does not fit.
 * @param {string} text
 * @param {Op} op
 * @returns {string}
 */
export function applyOp(text, op) {
  if (op.type === "insert") {
    const at = scalarIndex(text, op.position);
    if (at < 0) throw new RangeError(`position ${op.position} is beyond the end of the text (${scalarLength(text)} characters)`);
    return text.slice(0, at) + op.content + text.slice(at);
  }
  const from = scalarIndex(text, op.position);
  const to = from < 0 ? -1 : from + (scalarIndex(text.slice(from), op.length));
  if (from < 0 || to < from) {
    throw new RangeError(`delete of ${op.length} at ${op.position} runs beyond the end of the text (${scalarLength(text)} characters)`);
  }
  return text.slice(0, from) + text.slice(to);
}

/**
 * `op` as it must be applied after `other`, when both were made on the same
 * text (src/documents/ot.rs `transform`). `tie` ({@link AFTER} or {@link BEFORE}) says
 * which of two inserts at one position goes first. An insert strictly inside
 * a run `other` deletes becomes a no-op; a delete grows over an insert
 * strictly inside it; overlapping deletes delete the union once.
 * @param {Op} op
 * @param {Op} other
 * @param {"after"|"before"} tie
 * @returns {Op}
 */
export function transform(op, other, tie) {
  if (op.type === "insert") {
    const p = op.position;
    if (other.type === "insert") {
      const q = other.position;
      const shift = q < p || (q === p && tie === AFTER);
      return { type: "insert", position: shift ? p + scalarLength(other.content) : p, content: op.content };
    }
    const q = other.position;
    const l = other.length;
    if (p <= q) return { type: "insert", position: p, content: op.content };
    if (p >= q + l) return { type: "insert", position: p - l, content: op.content };
    // Strictly inside the deleted run: it goes with the run.
    return { type: "insert", position: q, content: "" };
  }
  const p = op.position;
  const l = op.length;
  if (other.type === "insert") {
    const q = other.position;
    const n = scalarLength(other.content);
    if (q <= p) return { type: "delete", position: p + n, length: l };
    if (q >= p + l) return { type: "delete", position: p, length: l };
    // The insert is strictly inside this run: delete it too.
    return { type: "delete", position: p, length: l + n };
  }
  const q = other.position;
  const m = other.length;
  const overlap = Math.max(0, Math.min(p + l, q + m) - Math.max(p, q));
  const position = q < p ? p - Math.min(m, p - q) : p;
  return { type: "delete", position, length: l - overlap };
}

/**
 * The server's step: `op`, made on an older version, rebased past `prior`
 * (accepted by the server after that version).
 * @param {Op} op
 * @param {Op} prior
 */
export function rebase(op, prior) {
  return transform(op, prior, AFTER);
}

/**
 * The client's step when an op from the server (`incoming`) meets one of its
 * own not yet accepted (`local`, made on the same text): `[local rebased past
 * incoming, incoming as it applies on top of local]`. The server wins ties.
 * @param {Op} local
 * @param {Op} incoming
 * @returns {[Op, Op]}
 */
export function transformPair(local, incoming) {
  return [transform(local, incoming, AFTER), transform(incoming, local, BEFORE)];
}

/**
 * Where a caret or selection edge at `position` goes when `op` is applied
 * (for keeping the local caret in place across remote edits). An insert at
 * the caret itself leaves the caret before the inserted text.
 * @param {number} position
 * @param {Op} op
 */
export function transformPosition(position, op) {
  if (op.type === "insert") return op.position < position ? position + scalarLength(op.content) : position;
  return op.position < position ? position - Math.min(op.length, position - op.position) : position;
}

/**
 * Tries to merge `next` (made after `prev`) into one op with the same effect,
 * for consecutive typing and backspacing; undefined when it cannot.
 * @param {Op} prev
 * @param {Op} next
 * @returns {Op | null | undefined} the merged op, null when the two cancel out, undefined when they do not merge
 */
function compose(prev, next) {
  if (prev.type === "insert" && next.type === "insert") {
    const n = scalarLength(prev.content);
    if (next.position < prev.position || next.position > prev.position + n) return undefined;
    const at = scalarIndex(prev.content, next.position - prev.position);
    return { type: "insert", position: prev.position, content: prev.content.slice(0, at) + next.content + prev.content.slice(at) };
  }
  if (prev.type === "delete" && next.type === "delete") {
    // next's run touches or covers the place where prev's run was.
    if (next.position > prev.position || next.position + next.length < prev.position) return undefined;
    return { type: "delete", position: next.position, length: prev.length + next.length };
  }
  if (prev.type === "insert" && next.type === "delete") {
    // A delete inside text just inserted (typing, then backspace).
    const n = scalarLength(prev.content);
    if (next.position < prev.position || next.position + next.length > prev.position + n) return undefined;
    const from = scalarIndex(prev.content, next.position - prev.position);
    const to = scalarIndex(prev.content, next.position - prev.position + next.length);
    const content = prev.content.slice(0, from) + prev.content.slice(to);
    return content === "" ? null : { type: "insert", position: prev.position, content };
  }
  return undefined;
}

function newOpId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  if (c && typeof c.getRandomValues === "function") {
    return Array.from(c.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
  }
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}-${Math.random().toString(36).slice(2)}`;
}

const RETRYABLE = new Set(["rate_limited", "unavailable"]);

/** The op part of a relayed `doc:operation`, or null when it is malformed. */
function opOf(m) {
  if (!m || !Number.isInteger(m.position) || m.position < 0) return null;
  if (m.type === "insert" && typeof m.content === "string") return { type: "insert", position: m.position, content: m.content };
  if (m.type === "delete" && Number.isInteger(m.length) && m.length >= 0) return { type: "delete", position: m.position, length: m.length };
  return null;
}

/**
 * @typedef {object} DocError
 * @property {string} code the server's error code (docs/protocol.md §11, §15),
 *   or `resync` (local edits were dropped because the client re-read the
 *   document), or `desync` (the client found its state inconsistent and re-reads
 *   the document)
 * @property {string} message
 * @property {Op} [op] the refused op, when one was refused
 * @property {number} [dropped] how many local edits were dropped
 */

/**
 * @typedef {object} DocChange
 * @property {"insert"|"delete"|"reset"} type
 * @property {number} version the document version after the change
 * @property {number} [position] scalar position in the local text (insert, delete)
 * @property {string} [content] (insert)
 * @property {number} [length] (delete)
 * @property {string} [userId] who made it (insert, delete)
 */

/**
 * @typedef {object} DocHandlers
 * @property {(text: string, change: DocChange) => void} [onChange] called when
 *   the local text changes for a reason other than this client's own
 *   insert()/delete(): a remote op (already transformed past local edits, in
 *   local positions), or a reset (type "reset") when the client had to take the
 *   server's text as it is
 * @property {(cursor: { userId: string, position: number }) => void} [onCursor]
 *   another user's cursor (positions in their text, which may be a few ops
 *   ahead of or behind yours)
 * @property {(err: DocError) => void} [onError] a refused op, a failed rejoin,
 *   or dropped local edits
 * @property {(ack: { op: Op, opId: string, version: number }) => void} [onAck]
 *   one of this client's ops is stored (for a "saved" indicator): `op` as the
 *   server applied it (transformed), at `version`
 */

/**
 * One document of one socket, following the client discipline of
 * docs/protocol.md §15: local edits apply at once and are sent one at a
 * time (the next after the ack, with the last version applied), later edits
 * wait in a buffer (consecutive typing or backspacing merges into one op),
 * received ops are applied in version order and transformed past the
 * unacknowledged local ones with {@link transformPair}, and each sent op
 * carries a random `opId` so that resending it is safe.
 *
 * Reconnects are handled: on the socket's `connect` after a disconnect the
 * client joins again with `since` = its version, replays the returned ops
 * (the one with the in-flight `opId` is its ack), resends the in-flight op if
 * it is not among them, and carries on with the buffered edits. When the
 * server no longer has the ops since that version, the client takes the
 * server's text (onChange type "reset") and drops its unsent edits (onError
 * code "resync").
 *
 * Errors: `stale_version` and `not_in_room` make the client join again (as
 * above); `rate_limited` and `unavailable` resend the same op after a pause;
 * any other refusal (e.g. `too_large`, `forbidden_room`, `invalid_payload`)
 * is reported through onError, and since the local text then holds an edit
 * the server never applied, the client re-reads the document (a join without
 * `since`, taking the server's text as it is): the refused op and any edits
 * made after it are dropped and reported (code "resync").
 *
 * The client never emits while the socket is disconnected (socket.io-client
 * would otherwise send buffered events before the rejoin).
 */
export class DocClient {
  /**
   * @param {import("socket.io-client").Socket} socket a socket.io-client socket
   *   (connected or not yet); the client adds its own listeners to it
   * @param {string} docId the document id (room id rules: 1–128 of `A-Z a-z 0-9 _ . : @ -`)
   * @param {DocHandlers & { retryDelayMs?: number, gapTimeoutMs?: number }} [handlers]
   */
  constructor(socket, docId, handlers = {}) {
    this.socket = socket;
    this.docId = docId;
    /** The local text: the server's text at {@link DocClient#version} plus the local edits not yet acked. */
    this.text = "";
    /** The version of the last op applied (received or acked). */
    this.version = 0;
    this._h = handlers;
    this._retryDelayMs = handlers.retryDelayMs ?? 250;
    /** @type {{ op: Op, opId: string, attempts: number } | null} the op sent and not yet acked */
    this._inflight = null;
    /** @type {Op[]} local edits made after the in-flight one, not sent yet */
    this._buffer = [];
    /** @type {Map<number, object>} received ops not applied yet, by version */
    this._early = new Map();
    /** @type {{ version: number, opId: string } | null} an ack that came before the ops it follows */
    this._earlyAck = null;
    this._state = "new"; // new | joined | left
    this._everJoined = false; // this client holds a text and a version
    this._live = false; // this connection has joined the document's room
    this._fullResync = false; // the next join takes the server's text as it is
    this._joinSeq = 0; // only the latest join's ack counts
    this._epoch = 0; // bumped on every disconnect: acks from an older connection are ignored
    this._opTimer = null; // resends a rate-limited op
    this._joinTimer = null; // retries a refused rejoin
    this._gapTimer = null; // rejoins when a version stays missing (a relay lost between nodes)
    this._gapTimeoutMs = handlers.gapTimeoutMs ?? 2000;
    this._waiters = [];
    this._joinWaiter = null;

    this._onOperation = (m) => this._received(m);
    this._onCursor = (m) => {
      if (m && m.docId === this.docId && this._state === "joined") this._h.onCursor?.({ userId: m.userId, position: m.position });
    };
    this._onConnect = () => {
      if (this._state !== "left" && (this._state === "joined" || this._joinWaiter)) this._join();
    };
    this._onDisconnect = () => {
      this._epoch++;
      this._live = false;
      this._clearTimers();
    };
    socket.on("doc:operation", this._onOperation);
    socket.on("doc:cursor", this._onCursor);
    socket.on("connect", this._onConnect);
    socket.on("disconnect", this._onDisconnect);
  }

  /**
   * Joins the document. Resolves with its text and version once the server
   * answers (waiting for the socket to connect if it has not yet); rejects
   * with an Error carrying `code` if the server refuses (e.g. `forbidden_room`).
   * @returns {Promise<{ content: string, version: number }>}
   */
  join() {
    if (this._state === "left") return Promise.reject(new Error("this DocClient has left; make a new one"));
    if (this._state === "joined") return Promise.resolve({ content: this.text, version: this.version });
    if (!this._joinWaiter) {
      let resolve, reject;
      const promise = new Promise((res, rej) => ((resolve = res), (reject = rej)));
      this._joinWaiter = { promise, resolve, reject };
      this._join();
    }
    return this._joinWaiter.promise;
  }

  /**
   * Inserts `content` before scalar value `position` of the local text.
   * @param {number} position 0 ≤ position ≤ scalarLength(doc.text)
   * @param {string} content well-formed Unicode; "" does nothing
   */
  insert(position, content) {
    this._checkEditable();
    if (typeof content !== "string") throw new TypeError("content must be a string");
    if (!isWellFormed(content)) throw new TypeError("content has a lone surrogate (not valid Unicode)");
    const len = scalarLength(this.text);
    if (!Number.isInteger(position) || position < 0 || position > len) {
      throw new RangeError(`position ${position} is outside the text (${len} characters)`);
    }
    if (content === "") return;
    this._local({ type: "insert", position, content });
  }

  /**
   * Deletes `length` scalar values from `position` of the local text.
   * @param {number} position
   * @param {number} length position + length ≤ scalarLength(doc.text); 0 does nothing
   */
  delete(position, length) {
    this._checkEditable();
    const len = scalarLength(this.text);
    if (!Number.isInteger(position) || !Number.isInteger(length) || position < 0 || length < 0 || position + length > len) {
      throw new RangeError(`delete of ${length} at ${position} is outside the text (${len} characters)`);
    }
    if (length === 0) return;
    this._local({ type: "delete", position, length });
  }

  /**
   * Makes the local text `next` with at most one delete and one insert (the
   * changed run between the common prefix and suffix): for editors that give
   * the whole new value, e.g. a textarea's `input` event.
   * @param {string} next well-formed Unicode
   */
  update(next) {
    this._checkEditable();
    if (typeof next !== "string") throw new TypeError("the text must be a string");
    if (!isWellFormed(next)) throw new TypeError("the text has a lone surrogate (not valid Unicode)");
    const prev = this.text;
    if (prev === next) return;
    const max = Math.min(prev.length, next.length);
    let a = 0; // common prefix, in UTF-16 units
    while (a < max && prev.charCodeAt(a) === next.charCodeAt(a)) a++;
    if (a > 0 && isHigh(prev.charCodeAt(a - 1))) a--; // do not split a surrogate pair
    let b = 0; // common suffix, not overlapping the prefix
    while (b < max - a && prev.charCodeAt(prev.length - 1 - b) === next.charCodeAt(next.length - 1 - b)) b++;
    if (b > 0 && isLow(prev.charCodeAt(prev.length - b))) b--;
    const position = scalarLength(prev.slice(0, a));
    const removed = scalarLength(prev.slice(a, prev.length - b));
    if (removed) this.delete(position, removed);
    this.insert(position, next.slice(a, next.length - b));
  }

  /**
   * Shows this user's cursor to the others (volatile: dropped when the
   * socket is not connected; throttle it yourself if you send it per key).
   * @param {number} position a scalar position in the local text
   */
  cursor(position) {
    if (this._state !== "joined" || !this._live || !this.socket.connected) return;
    this.socket.volatile.emit("doc:cursor", { docId: this.docId, position });
  }

  /** Whether local edits are waiting for the server (sent or not). */
  get pending() {
    return this._inflight !== null || this._buffer.some((op) => !isNoop(op));
  }

  /**
   * Resolves when every local edit made so far has been acked (or dropped,
   * see onError), i.e. nothing is in flight or buffered.
   * @returns {Promise<void>}
   */
  flushed() {
    if (!this.pending || this._state === "left") return Promise.resolve();
    return new Promise((resolve) => this._waiters.push(resolve));
  }

  /**
   * Leaves the document and removes this client's listeners from the socket.
   * Unsent edits are dropped: `await doc.flushed()` first to keep them.
   * @returns {Promise<object | undefined>} the server's ack (undefined when not connected)
   */
  leave() {
    const wasJoined = this._state === "joined" && this.socket.connected;
    this._state = "left";
    this._live = false;
    this._clearTimers();
    this.socket.off("doc:operation", this._onOperation);
    this.socket.off("doc:cursor", this._onCursor);
    this.socket.off("connect", this._onConnect);
    this.socket.off("disconnect", this._onDisconnect);
    this._inflight = null;
    this._buffer = [];
    this._early.clear();
    this._checkFlushed();
    this._joinWaiter?.reject(new Error("left before the join completed"));
    this._joinWaiter = null;
    if (!wasJoined) return Promise.resolve(undefined);
    return new Promise((resolve) => this.socket.emit("doc:leave", { docId: this.docId }, resolve));
  }

  // ---- internals ----

  _checkEditable() {
    if (this._state !== "joined") throw new Error(this._state === "left" ? "this DocClient has left" : "join() first");
  }

  _clearTimers() {
    clearTimeout(this._opTimer);
    clearTimeout(this._joinTimer);
    clearTimeout(this._gapTimer);
    this._opTimer = this._joinTimer = this._gapTimer = null;
  }

  _error(err) {
    this._h.onError?.(err);
  }

  _local(op) {
    this.text = applyOp(this.text, op);
    const last = this._buffer.length - 1;
    const merged = last >= 0 ? compose(this._buffer[last], op) : undefined;
    if (merged === null) this._buffer.pop();
    else if (merged) this._buffer[last] = merged;
    else this._buffer.push(op);
    this._sendNext();
    this._checkFlushed();
  }

  /** Emits doc:join: with `since` to catch up, without it to take the server's text. */
  _join() {
    if (this._state === "left" || !this.socket.connected) return; // the connect listener calls again
    const seq = ++this._joinSeq;
    this._live = false;
    const full = this._fullResync || !this._everJoined;
    const payload = full ? { docId: this.docId } : { docId: this.docId, since: this.version };
    this.socket.emit("doc:join", payload, (res) => {
      if (seq !== this._joinSeq || this._state === "left") return;
      this._joined(res, full);
    });
  }

  _joined(res, full) {
    if (!res || res.success !== true || typeof res.content !== "string" || !Number.isInteger(res.version)) {
      const code = res?.code ?? "invalid_response";
      const message = res?.error ?? `doc:join answered ${JSON.stringify(res)}`;
      if (this._joinWaiter) {
        const waiter = this._joinWaiter;
        this._joinWaiter = null;
        waiter.reject(Object.assign(new Error(message), { code }));
        return;
      }
      this._error({ code, message });
      // Transient refusals: try again. A refused `since` (a server that lost
      // ops, say): read the document afresh. Anything else (forbidden_room,
      // too_large) leaves the client detached until the next reconnect, with
      // its local text kept.
      if (code === "invalid_payload" && !full) {
        this._resync();
      } else if (RETRYABLE.has(code)) {
        clearTimeout(this._joinTimer);
        this._joinTimer = setTimeout(() => {
          this._joinTimer = null;
          this._join();
        }, this._retryDelayMs);
      }
      return;
    }
    this._clearTimers();
    const unacked = this._inflight;
    if (full || !Array.isArray(res.ops)) {
      this._reset(res.content, res.version);
    } else {
      for (const m of res.ops) if (m && Number.isInteger(m.version) && m.version > this.version) this._early.set(m.version, m);
    }
    this._fullResync = false;
    this._live = true;
    this._state = "joined";
    this._drain();
    if (this.version < res.version && !this._fullResync) {
      // The replayed ops do not reach the version the server reported.
      this._error({ code: "desync", message: `rejoin: ops end at ${this.version}, document at ${res.version}; re-reading the document` });
      this._resync();
      return;
    }
    // The in-flight op was sent on an earlier connection, or refused with
    // stale_version / not_in_room: send it again (same opId) unless the ops
    // just replayed, or an ack already received, say it was applied.
    if (unacked && this._inflight === unacked && !(this._earlyAck && this._earlyAck.opId === unacked.opId)) this._emitInflight();
    this._sendNext();
    if (this._joinWaiter) {
      const waiter = this._joinWaiter;
      this._joinWaiter = null;
      waiter.resolve({ content: this.text, version: this.version });
    }
  }

  /** Takes the server's text as it is, dropping local edits not yet acked. */
  _reset(content, version) {
    const dropped = (this._inflight ? 1 : 0) + this._buffer.filter((op) => !isNoop(op)).length;
    const first = !this._everJoined;
    this.text = content;
    this.version = version;
    this._inflight = null;
    this._buffer = [];
    this._earlyAck = null;
    for (const v of [...this._early.keys()]) if (v <= version) this._early.delete(v);
    this._everJoined = true;
    if (first) return;
    this._h.onChange?.(this.text, { type: "reset", version });
    if (dropped) this._error({ code: "resync", message: `took the server's text; ${dropped} local edit(s) dropped`, dropped });
    this._checkFlushed();
  }

  /** Re-reads the document from the server (a join without `since`). */
  _resync() {
    this._fullResync = true;
    this._live = false;
    this._clearTimers();
    this._join();
  }

  _received(m) {
    // Kept even before the first join's ack: the reset then drops those the text already has.
    if (!m || m.docId !== this.docId || this._state === "left" || (!this._everJoined && !this._joinWaiter)) return;
    if (!Number.isInteger(m.version)) return;
    if (!this._fullResync && m.version <= this.version) return; // already applied
    this._early.set(m.version, m);
    this._drain();
  }

  /** Applies received ops and acks in version order, as far as there is no gap. */
  _drain() {
    if (this._fullResync || !this._everJoined || this._state === "left") return;
    for (;;) {
      const next = this.version + 1;
      const m = this._early.get(next);
      if (m) {
        this._early.delete(next);
        if (this._inflight && m.opId != null && m.opId === this._inflight.opId) this._acked(next);
        else if (!this._applyRemote(m)) return;
        continue;
      }
      if (this._earlyAck && this._earlyAck.version === next) {
        if (this._inflight && this._inflight.opId === this._earlyAck.opId) this._acked(next);
        this._earlyAck = null;
        continue;
      }
      break;
    }
    if (this._earlyAck && this._earlyAck.version <= this.version) this._earlyAck = null;
    this._watchGap();
    this._sendNext();
    this._checkFlushed();
  }

  /**
   * Ops (or an ack) beyond a missing version: normally the missing one is on
   * its way (relays from other nodes can arrive out of order), but a relay
   * can also be lost (Redis pub/sub does not promise delivery; a node that
   * cannot reach Redis relays to its own sockets only). If the gap is still
   * there after `gapTimeoutMs`, rejoin with `since`: the ack carries the ops.
   */
  _watchGap() {
    const gap = this._early.size > 0 || this._earlyAck !== null;
    if (!gap) {
      clearTimeout(this._gapTimer);
      this._gapTimer = null;
      return;
    }
    if (this._early.size > MAX_EARLY) {
      // Far behind: reading the text afresh is cheaper than holding on.
      this._early.clear();
      this._resync();
      return;
    }
    if (this._gapTimer) return;
    const at = this.version;
    this._gapTimer = setTimeout(() => {
      this._gapTimer = null;
      if (this._state === "joined" && this._live && this.version === at && (this._early.size > 0 || this._earlyAck)) this._join();
    }, this._gapTimeoutMs);
  }

  _acked(version) {
    const { op, opId } = this._inflight;
    this.version = version;
    this._inflight = null;
    this._h.onAck?.({ op, opId, version });
    clearTimeout(this._opTimer);
    this._opTimer = null;
  }

  /** Applies one received op on top of the local edits; false (and a resync) if it does not fit. */
  _applyRemote(m) {
    let incoming = opOf(m);
    if (!incoming) {
      this._error({ code: "desync", message: `malformed doc:operation ${JSON.stringify(m)}; re-reading the document` });
      this._resync();
      return false;
    }
    if (this._inflight) {
      const [local, inc] = transformPair(this._inflight.op, incoming);
      this._inflight.op = local;
      incoming = inc;
    }
    for (let i = 0; i < this._buffer.length; i++) {
      const [local, inc] = transformPair(this._buffer[i], incoming);
      this._buffer[i] = local;
      incoming = inc;
    }
    try {
      this.text = applyOp(this.text, incoming);
    } catch (e) {
      this._error({ code: "desync", message: `${e.message}; re-reading the document` });
      this._resync();
      return false;
    }
    this.version = m.version;
    if (!isNoop(incoming)) this._h.onChange?.(this.text, { ...incoming, version: m.version, userId: m.userId });
    return true;
  }

  _sendNext() {
    if (this._inflight || !this._live || this._state !== "joined") return;
    while (this._buffer.length && isNoop(this._buffer[0])) this._buffer.shift();
    if (!this._buffer.length) return;
    this._inflight = { op: this._buffer.shift(), opId: newOpId(), attempts: 0 };
    this._emitInflight();
  }

  _emitInflight() {
    const f = this._inflight;
    if (!f || !this._live || !this.socket.connected || this._state !== "joined") return;
    if (isNoop(f.op)) {
      // A resend of an op that a concurrent delete has swallowed since it was
      // first sent (an insert inside the deleted run): the server never
      // applied it (or the replay would have had it), and it no longer
      // changes anything, so it is not sent (the server refuses empty ops).
      this._inflight = null;
      this._sendNext();
      this._checkFlushed();
      return;
    }
    const epoch = this._epoch;
    const { opId } = f;
    this.socket.emit("doc:operation", { docId: this.docId, version: this.version, ...f.op, opId }, (res) => {
      if (epoch !== this._epoch || this._state === "left" || !this._inflight || this._inflight.opId !== opId) return;
      if (res && res.success === true && Number.isInteger(res.version)) {
        if (res.version <= this.version) {
          this._error({ code: "desync", message: `ack version ${res.version} is not after ${this.version}; re-reading the document` });
          this._resync();
          return;
        }
        this._earlyAck = { version: res.version, opId };
        this._drain();
        return;
      }
      this._refused(f, res);
    });
  }

  _refused(f, res) {
    const code = res?.code ?? "invalid_response";
    if (code === "stale_version" || code === "not_in_room") {
      this._join(); // with since; the join's ack resends the op
      return;
    }
    if (RETRYABLE.has(code)) {
      f.attempts++;
      const delay = Math.min(5000, this._retryDelayMs * 2 ** Math.min(f.attempts - 1, 5));
      clearTimeout(this._opTimer);
      this._opTimer = setTimeout(() => {
        this._opTimer = null;
        this._emitInflight();
      }, delay);
      return;
    }
    this._error({ code, message: res?.error ?? `doc:operation answered ${JSON.stringify(res)}`, op: f.op });
    this._inflight = null; // reported just now; the resync reports the edits after it
    this._resync();
  }

  _checkFlushed() {
    if (this.pending && this._state !== "left") return;
    const waiters = this._waiters;
    this._waiters = [];
    for (const w of waiters) w();
  }
}
